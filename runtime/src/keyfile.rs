//! Reading key files (the private key, pre-shared keys), strictly.
//!
//! The file must be a regular file (symlinks are not followed: `O_NOFOLLOW`), owned by the user
//! the daemon runs as, readable by nobody else (no group/other bits), and small. Its contents
//! are held in zeroizing buffers and never logged.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use tunnel::{PresharedKey, PrivateKey};
use zeroize::Zeroizing;

/// Which key a file holds: it names the setting and the command that makes one in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `private_key_file`, made by `failoverd genkey`
    Private,
    /// `preshared_key_file`, made by `failoverd genpsk`
    Preshared,
}

impl KeyKind {
    /// The configuration setting that names such a file.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Private => "private_key_file",
            Self::Preshared => "preshared_key_file",
        }
    }

    /// The command that writes one.
    pub fn make(self) -> &'static str {
        match self {
            Self::Private => "failoverd genkey",
            Self::Preshared => "failoverd genpsk",
        }
    }

    /// What it is, in words.
    pub fn what(self) -> &'static str {
        match self {
            Self::Private => "private key",
            Self::Preshared => "pre-shared key",
        }
    }
}

/// A key file longer than this is not a key file.
const MAX_KEY_FILE: u64 = 1024;

/// Why the key file was refused; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// cannot be opened
    #[error("cannot read {path}: {source}; fix: create it with `{make} > {path}` and `chmod 600 {path}`", make = .kind.make())]
    Open {
        /// which key
        kind: KeyKind,
        /// the file
        path: String,
        /// why
        source: std::io::Error,
    },
    /// a symlink
    #[error("{path} is a symbolic link, which is not followed for a {what}; fix: point {setting} at the real file", what = .kind.what(), setting = .kind.setting())]
    Symlink {
        /// which key
        kind: KeyKind,
        /// the file
        path: String,
    },
    /// not a regular file
    #[error("{path} is not a regular file; fix: point {setting} at the key file", setting = .kind.setting())]
    NotRegular {
        /// which key
        kind: KeyKind,
        /// the file
        path: String,
    },
    /// readable by group or others
    #[error("{path} is readable by group or others (mode {mode:04o}); fix: `chmod 600 {path}`")]
    TooOpen {
        /// the file
        path: String,
        /// its permission bits
        mode: u32,
    },
    /// owned by another user
    #[error("{path} is owned by uid {owner}, not by uid {me} that failoverd runs as; fix: `chown {me} {path}`")]
    WrongOwner {
        /// the file
        path: String,
        /// its owner
        owner: u32,
        /// our euid
        me: u32,
    },
    /// too large
    #[error("{path} is larger than {MAX_KEY_FILE} bytes, so it is not a key file; fix: write one key made by `{make}`", make = .kind.make())]
    TooLarge {
        /// which key
        kind: KeyKind,
        /// the file
        path: String,
    },
    /// not a key
    #[error("{path} does not hold a WireGuard {what}: it {reason}; fix: `{make} > {path}`", what = .kind.what(), make = .kind.make())]
    BadKey {
        /// which key
        kind: KeyKind,
        /// the file
        path: String,
        /// why
        reason: tunnel::KeyError,
    },
}

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

/// Reads and checks the private key file at `path`, which must belong to `runs_as`: the uid
/// the daemon runs as (its configured `user`, or the current one).
pub fn read_private_key(path: &Path, runs_as: u32) -> Result<PrivateKey, KeyFileError> {
    let kind = KeyKind::Private;
    let text = read_key_text(path, runs_as, kind)?;
    PrivateKey::from_base64(&text).map_err(|reason| KeyFileError::BadKey {
        kind,
        path: path.display().to_string(),
        reason,
    })
}

/// Reads and checks a pre-shared key file at `path`, by the same rules as the private key.
pub fn read_preshared_key(path: &Path, runs_as: u32) -> Result<PresharedKey, KeyFileError> {
    let kind = KeyKind::Preshared;
    let text = read_key_text(path, runs_as, kind)?;
    PresharedKey::from_base64(&text).map_err(|reason| KeyFileError::BadKey {
        kind,
        path: path.display().to_string(),
        reason,
    })
}

/// The text of a key file, after every check of the file itself.
fn read_key_text(
    path: &Path,
    runs_as: u32,
    kind: KeyKind,
) -> Result<Zeroizing<String>, KeyFileError> {
    let shown = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                KeyFileError::Symlink {
                    kind,
                    path: shown.clone(),
                }
            } else {
                KeyFileError::Open {
                    kind,
                    path: shown.clone(),
                    source,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| KeyFileError::Open {
        kind,
        path: shown.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyFileError::NotRegular { kind, path: shown });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen { path: shown, mode });
    }
    if meta.uid() != runs_as {
        return Err(KeyFileError::WrongOwner {
            path: shown,
            owner: meta.uid(),
            me: runs_as,
        });
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge { kind, path: shown });
    }
    let mut text = Zeroizing::new(String::with_capacity(64));
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|source| KeyFileError::Open {
            kind,
            path: shown.clone(),
            source,
        })?;
    Ok(text)
}
