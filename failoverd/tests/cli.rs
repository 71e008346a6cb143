//! The daemon's command line as scripts and systemd see it: exit codes, messages that name the
//! bad argument, `--version` with the git revision. Runs without root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::process::{Command, Output};

fn failoverd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_carries_the_git_revision() {
    let out = failoverd(&["--version"]);
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let expected = format!(
        "failoverd {} (rev {})",
        env!("CARGO_PKG_VERSION"),
        env!("FAILOVER_GIT_REVISION")
    );
    assert_eq!(line, expected);
}

#[test]
fn usage_errors_exit_2_and_name_the_argument() {
    for (args, names) in [
        (&["--bogus"][..], "--bogus"),
        (&[][..], "--config"),
        (&["gateway"][..], "--config"),
        (&["check", "--config"][..], "--config"),
        (&["genkey", "extra"][..], "extra"),
    ] {
        let out = failoverd(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
}

#[test]
fn config_without_a_subcommand_runs_the_client() {
    // what dist/systemd/failoverd.service runs; a missing file fails as the daemon, not usage
    for flag in ["--config", "-c"] {
        let out = failoverd(&[flag, "/nonexistent/client.toml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("/nonexistent/client.toml"), "{stderr}");
    }
}

#[test]
fn help_lists_every_mode() {
    let out = failoverd(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for mode in [
        "client",
        "gateway",
        "check",
        "check-gateway",
        "genkey",
        "pubkey",
    ] {
        assert!(help.contains(mode), "{mode}: {help}");
    }
}
