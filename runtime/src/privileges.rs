//! Running with as little as possible: after setup the daemon becomes its configured user and
//! keeps only the capabilities its work needs at run time.
//!
//! - Always (also as root, also under systemd): the process is made non-dumpable, so no core
//!   file and no `ptrace` by another user can read the keys in its memory.
//! - With `user` configured and started as root: supplementary groups dropped, gid and uid set
//!   (real, effective, saved), and the permitted, effective and bounding capability sets cut
//!   to what is passed in (the client: `CAP_NET_ADMIN`; the gateway, which writes routes,
//!   neighbour entries and sysctls while claiming: `CAP_NET_ADMIN`), no-new-privileges set.
//!   Under systemd the unit does the same with `User=` and `CapabilityBoundingSet=`, and no
//!   `user` is configured.
//!
//! Everything is checked after the fact: a drop that did not take is an error, never a warning.

use anyhow::{bail, Context as _};
use caps::{CapSet, Capability, CapsHashSet};

/// Marks the process non-dumpable (no core files, no ptrace attach by non-root).
#[allow(unsafe_code)]
pub fn set_non_dumpable() -> anyhow::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integer arguments only and changes a flag of the
    // calling process; it touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_DUMPABLE, 0)");
    }
    Ok(())
}

/// `(name, uid, gid)` of user `name`, from `/etc/passwd`.
pub fn lookup_user(name: &str) -> Option<(String, u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((name.to_owned(), uid, gid))
    })
}

/// The name of user `uid`, from `/etc/passwd`.
pub fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// Becomes `uid`/`gid` keeping exactly `keep` (permitted and effective; the bounding set is cut
/// to it too), and sets no-new-privileges. Must run as root.
#[allow(unsafe_code)]
pub fn drop_to(uid: u32, gid: u32, keep: &[Capability]) -> anyhow::Result<()> {
    if crate::keyfile::effective_uid() != 0 {
        bail!("`user` is set but the daemon was not started as root: start it as root, or remove `user`");
    }
    let keep_set: CapsHashSet = keep.iter().copied().collect();
    // The bounding set first, while CAP_SETPCAP is still ours.
    for cap in caps::all() {
        if !keep_set.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    // SAFETY: prctl, setgroups, setresgid and setresuid take integers (and a null pointer with
    // a zero count for setgroups); they change credentials of the calling process only.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_KEEPCAPS)");
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(std::io::Error::last_os_error()).context("setgroups([])");
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setresgid({gid})"));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setresuid({uid})"));
        }
    }
    caps::set(None, CapSet::Permitted, &keep_set).context("setting the permitted capabilities")?;
    caps::set(None, CapSet::Effective, &keep_set).context("setting the effective capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing the inheritable capabilities")?;
    let _ = caps::clear(None, CapSet::Ambient);
    // SAFETY: integer arguments; flags of the calling process.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_KEEPCAPS, 0)");
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_NO_NEW_PRIVS)");
        }
    }
    // setuid resets the dumpable flag to the system default: set it again
    set_non_dumpable()?;
    // check what we got
    let effective = caps::read(None, CapSet::Effective).context("reading capabilities")?;
    if effective != keep_set || crate::keyfile::effective_uid() != uid {
        bail!(
            "dropping privileges did not take: uid {} capabilities {effective:?}",
            crate::keyfile::effective_uid()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_passwd() {
        assert_eq!(lookup_user("root"), Some(("root".into(), 0, 0)));
        assert_eq!(lookup_user("no-such-user-here"), None);
    }
}
