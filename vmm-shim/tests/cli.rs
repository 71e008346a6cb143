//! The shim's command line as a VMM's launcher sees it: `--version` with the git revision, and
//! usage errors that exit 2 naming the argument. Runs without root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::process::{Command, Output};

fn shim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm-shim"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_carries_the_git_revision() {
    let out = shim(&["--version"]);
    assert!(out.status.success());
    let expected = format!(
        "vmm-shim {} (rev {})",
        env!("CARGO_PKG_VERSION"),
        env!("FAILOVER_GIT_REVISION")
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
}

#[test]
fn usage_errors_exit_2_and_name_the_argument() {
    for (args, names) in [
        (&[][..], "Usage"),
        (&["stream", "--config", "vm.toml", "--fd", "1"][..], "--fd"),
        (
            &["vhost-user", "--config", "vm.toml", "--bogus"][..],
            "--bogus",
        ),
    ] {
        let out = shim(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
}
