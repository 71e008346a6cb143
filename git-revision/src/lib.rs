//! `git-revision`: the build-script half of every binary's `--version`.
//!
//! A crate's `build.rs` calls [`emit`]; its binaries then read the revision at compile time
//! with `env!("FAILOVER_GIT_REVISION")` and print it as `failoverd 0.1.0 (rev abcdef123456)`.
//! One copy of the logic for every crate that has binaries, instead of one build script each.
//!
//! It must never fail a build: without git, outside a checkout (a crates tarball) or on any
//! other error the revision is `unknown`. A revision set in the environment
//! (`FAILOVER_GIT_REVISION=...`, e.g. by a packager building from a tarball) wins over git.
//!
//! Cargo reruns the build script only when the checked-out commit can have changed: when
//! `HEAD`, its reflog, the branch it points at or `packed-refs` changes (paths asked of git, so
//! a linked worktree works too), or the override variable does.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable the binaries read with `env!`, and the override a packager may set.
pub const ENV: &str = "FAILOVER_GIT_REVISION";

/// What a build gets when there is no git or no checkout.
pub const UNKNOWN: &str = "unknown";

/// Prints the cargo directives of a build script: `rustc-env` with the revision, and the
/// `rerun-if-changed` lines that keep it from rerunning on every build. Call it from
/// `build.rs`'s `main` (cargo runs build scripts in the crate's directory).
pub fn emit() {
    println!("cargo:rerun-if-env-changed={ENV}");
    println!("cargo:rerun-if-changed=build.rs");
    let revision = match std::env::var(ENV) {
        Ok(given) if !given.trim().is_empty() => given.trim().to_owned(),
        _ => {
            let here = Path::new(".");
            for path in watched_paths(here) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            revision(here)
        }
    };
    println!("cargo:rustc-env={ENV}={revision}");
}

/// The abbreviated commit checked out at `dir`, or [`UNKNOWN`].
pub fn revision(dir: &Path) -> String {
    git(dir, &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| UNKNOWN.to_owned())
}

/// The files whose change means another commit is checked out at `dir`, where they exist.
/// Cargo reruns a build script on every build when a watched path is missing, so missing ones
/// are left out.
pub fn watched_paths(dir: &Path) -> Vec<PathBuf> {
    // logs/HEAD (this worktree's reflog) moves with every commit and checkout, also when the
    // branch's ref is packed and its loose file does not exist yet
    let mut paths = vec![
        git(dir, &["rev-parse", "--git-path", "HEAD"]),
        git(dir, &["rev-parse", "--git-path", "logs/HEAD"]),
        git(dir, &["rev-parse", "--git-path", "packed-refs"]),
    ];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        paths.push(git(dir, &["rev-parse", "--git-path", &branch]));
    }
    paths
        .into_iter()
        .flatten()
        .filter_map(|p| dir.join(p).canonicalize().ok())
        .collect()
}

/// `git ARGS`'s first line of output in `dir`, or `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_checkout_the_revision_is_unknown_and_nothing_is_watched() {
        // the filesystem root is no checkout (GIT_CEILING_DIRECTORIES is not needed: git looks
        // upwards, and there is nothing above /)
        let root = Path::new("/");
        if git(root, &["rev-parse", "--git-dir"]).is_some() {
            return; // a checkout at / (unusual container): nothing to learn here
        }
        assert_eq!(revision(root), UNKNOWN);
        assert!(watched_paths(root).is_empty());
    }

    #[test]
    fn in_this_checkout_the_revision_is_twelve_hex_digits() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rev = revision(here);
        if rev == UNKNOWN {
            return; // built from a tarball, or without git
        }
        assert_eq!(rev.len(), 12, "{rev}");
        assert!(rev.chars().all(|c| c.is_ascii_hexdigit()), "{rev}");
        let watched = watched_paths(here);
        assert!(watched.iter().any(|p| p.ends_with("HEAD")), "{watched:?}");
        assert!(watched.iter().all(|p| p.exists()), "{watched:?}");
    }
}
