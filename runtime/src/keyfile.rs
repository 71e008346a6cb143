//! Reading the private key file, strictly.
//!
//! The file must be a regular file (symlinks are not followed: `O_NOFOLLOW`), owned by the user
//! the daemon runs as, readable by nobody else (no group/other bits), and small. Its contents
//! are held in zeroizing buffers and never logged.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use tunnel::PrivateKey;
use zeroize::Zeroizing;

/// A key file longer than this is not a key file.
const MAX_KEY_FILE: u64 = 1024;

/// Why the key file was refused; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// cannot be opened
    #[error("cannot read {path}: {source}; fix: create it with `failoverd genkey > {path}` and `chmod 600 {path}`")]
    Open {
        /// the file
        path: String,
        /// why
        source: std::io::Error,
    },
    /// a symlink
    #[error("{path} is a symbolic link, which is not followed for a private key; fix: point private_key_file at the real file")]
    Symlink {
        /// the file
        path: String,
    },
    /// not a regular file
    #[error("{path} is not a regular file; fix: point private_key_file at the key file")]
    NotRegular {
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
    #[error("{path} is larger than {MAX_KEY_FILE} bytes, so it is not a key file; fix: write one key made by `failoverd genkey`")]
    TooLarge {
        /// the file
        path: String,
    },
    /// not a key
    #[error("{path} does not hold a WireGuard private key: it {reason}; fix: `failoverd genkey > {path}`")]
    BadKey {
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
    let shown = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                KeyFileError::Symlink {
                    path: shown.clone(),
                }
            } else {
                KeyFileError::Open {
                    path: shown.clone(),
                    source,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| KeyFileError::Open {
        path: shown.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyFileError::NotRegular { path: shown });
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
        return Err(KeyFileError::TooLarge { path: shown });
    }
    let mut text = Zeroizing::new(String::with_capacity(64));
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|source| KeyFileError::Open {
            path: shown.clone(),
            source,
        })?;
    PrivateKey::from_base64(&text).map_err(|reason| KeyFileError::BadKey {
        path: shown,
        reason,
    })
}
