//! Bad configurations: the daemon exits non-zero, before touching the system, with a message
//! that names the file, the key and the fix. Runs without root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const GATEWAY_PUB: &str = "hq7aij0ZmmD1zIWdCs0XTzIw1HvUAn9wTcXD53zON0c=";

mod common;
use common::Dir;

fn scratch(name: &str) -> Dir {
    common::scratch("failoverd-cfg", name)
}

fn write_key(dir: &Path, mode: u32) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .arg("genkey")
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = dir.join("client.key");
    std::fs::write(&path, &out.stdout).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn client_config(key: &Path, datacenters: &str, extra_client_line: &str) -> String {
    format!(
        "[client]\nprivate_key_file = \"{}\"\nstable_address = [\"100.96.0.2\"]\n{extra_client_line}\n{datacenters}",
        key.display()
    )
}

fn dc(name: &str, endpoint: &str, key: &str) -> String {
    format!(
        "[[datacenter]]\nname = \"{name}\"\nendpoint = \"{endpoint}\"\npublic_key = \"{key}\"\nprobe_address = \"100.96.0.1\"\n\n"
    )
}

/// Runs `failoverd check --config`, expects failure, returns stderr.
fn refused(dir: &Path, config: &str) -> (PathBuf, String) {
    let file = dir.join("client.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a refusal, got success for:\n{config}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("fix:"), "says how to fix it: {stderr}");
    eprintln!("{stderr}");
    (file, stderr)
}

#[test]
fn a_good_config_passes_the_check() {
    let dir = scratch("good");
    let key = write_key(&dir.0, 0o600);
    let file = dir.0.join("client.toml");
    std::fs::write(
        &file,
        client_config(&key, &dc("dc1", "198.18.0.11:51820", GATEWAY_PUB), ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_key_file() {
    let dir = scratch("missing");
    let key = dir.0.join("nope.key");
    let (_, err) = refused(
        &dir.0,
        &client_config(&key, &dc("dc1", "198.18.0.11:51820", GATEWAY_PUB), ""),
    );
    assert!(err.contains("client.private_key_file"), "{err}");
    assert!(err.contains("failoverd genkey"), "{err}");
}

#[test]
fn world_readable_key_file() {
    let dir = scratch("perm");
    let key = write_key(&dir.0, 0o644);
    let (_, err) = refused(
        &dir.0,
        &client_config(&key, &dc("dc1", "198.18.0.11:51820", GATEWAY_PUB), ""),
    );
    assert!(err.contains("client.private_key_file"), "{err}");
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
}

#[test]
fn symlinked_key_file() {
    let dir = scratch("link");
    let key = write_key(&dir.0, 0o600);
    let link = dir.0.join("link.key");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let (_, err) = refused(
        &dir.0,
        &client_config(&link, &dc("dc1", "198.18.0.11:51820", GATEWAY_PUB), ""),
    );
    assert!(err.contains("symbolic link"), "{err}");
}

#[test]
fn bad_base64_public_key() {
    let dir = scratch("b64");
    let key = write_key(&dir.0, 0o600);
    let (_, err) = refused(
        &dir.0,
        &client_config(&key, &dc("dc1", "198.18.0.11:51820", "not*base64"), ""),
    );
    assert!(err.contains("datacenter[0].public_key"), "{err}");
    assert!(err.contains("base64"), "{err}");
}

#[test]
fn unknown_key() {
    let dir = scratch("unknown");
    let key = write_key(&dir.0, 0o600);
    let (_, err) = refused(
        &dir.0,
        &client_config(
            &key,
            &dc("dc1", "198.18.0.11:51820", GATEWAY_PUB),
            "interfase = \"fo0\"",
        ),
    );
    assert!(err.contains("interfase"), "{err}");
    assert!(err.contains("spelling"), "{err}");
}

#[test]
fn duplicate_datacenter_names() {
    let dir = scratch("dup");
    let key = write_key(&dir.0, 0o600);
    let dcs =
        dc("dc1", "198.18.0.11:51820", GATEWAY_PUB) + &dc("dc1", "198.18.0.12:51820", GATEWAY_PUB);
    let (_, err) = refused(&dir.0, &client_config(&key, &dcs, ""));
    assert!(err.contains("datacenter[1].name"), "{err}");
    assert!(err.contains("twice"), "{err}");
}

#[test]
fn endpoint_without_port() {
    let dir = scratch("port");
    let key = write_key(&dir.0, 0o600);
    let (_, err) = refused(
        &dir.0,
        &client_config(&key, &dc("dc1", "198.18.0.11", GATEWAY_PUB), ""),
    );
    assert!(err.contains("datacenter[0].endpoint"), "{err}");
    assert!(
        err.contains("198.18.0.11:51820"),
        "the fix shows the corrected form: {err}"
    );
}

#[test]
fn low_order_public_key_is_refused() {
    let dir = scratch("loworder");
    let key = write_key(&dir.0, 0o600);
    let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (_, err) = refused(
        &dir.0,
        &client_config(&key, &dc("dc1", "198.18.0.11:51820", zero), ""),
    );
    assert!(err.contains("low-order"), "{err}");
}

#[test]
fn genkey_and_pubkey_match_wg() {
    // The vector in tunnel's unit tests came from `wg genkey | wg pubkey`; here the CLI path.
    let mut child = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"EC9vEwFgAbTRrp7n/XCvZEd5fklWPF2ETdgEaIGLnlY=\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), GATEWAY_PUB);
}

#[test]
fn probe_address_of_a_family_without_a_stable_address() {
    let dir = scratch("probefamily");
    let key = write_key(&dir.0, 0o600);
    let dc = dc("dc1", "198.18.0.11:51820", GATEWAY_PUB).replace("100.96.0.1", "fd00:96::1");
    let (_, err) = refused(&dir.0, &client_config(&key, &dc, ""));
    assert!(err.contains("datacenter[0].probe_address"), "{err}");
    assert!(err.contains("same family"), "{err}");
}

#[test]
fn missing_probe_address() {
    let dir = scratch("noprobe");
    let key = write_key(&dir.0, 0o600);
    let dc =
        dc("dc1", "198.18.0.11:51820", GATEWAY_PUB).replace("probe_address = \"100.96.0.1\"\n", "");
    let (_, err) = refused(&dir.0, &client_config(&key, &dc, ""));
    assert!(err.contains("probe_address"), "{err}");
}

#[test]
fn gateway_without_an_inside_interface() {
    let dir = scratch("gwinside");
    let key = write_key(&dir.0, 0o600);
    let file = dir.0.join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[gateway]\nprivate_key_file = \"{}\"\naddress = [\"100.96.0.1/32\"]\n\n[[client]]\nname = \"laptop\"\npublic_key = \"{GATEWAY_PUB}\"\nallowed_ips = [\"100.96.0.2/32\"]\n",
            key.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .args(["check-gateway", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&file.display().to_string()) && err.contains("inside_interface"),
        "{err}"
    );
    assert!(err.contains("fix:"), "{err}");
}

#[test]
fn gateway_claim_backends_are_checked() {
    let dir = scratch("gwclaim");
    let key = write_key(&dir.0, 0o600);
    let file = dir.0.join("gateway.toml");
    let check = |claim: &str| {
        std::fs::write(
            &file,
            format!(
                "[gateway]\nprivate_key_file = \"{}\"\naddress = [\"100.96.0.1/32\"]\ninside_interface = \"eth1\"\n{claim}\n\n[[client]]\nname = \"laptop\"\npublic_key = \"{GATEWAY_PUB}\"\nallowed_ips = [\"100.96.0.2/32\"]\n",
                key.display()
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_failoverd"))
            .args(["check-gateway", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    };
    for good in [
        "",
        "claim = [\"route\"]",
        "claim = [\"neighbour\", \"route\"]",
    ] {
        let out = check(good);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{good}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (bad, says) in [
        ("claim = []", "is empty"),
        ("claim = [\"bgp\"]", "'bgp' is not a claim backend"),
        ("claim = [\"route\", \"route\"]", "twice"),
    ] {
        let out = check(bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {err}");
        assert!(
            err.contains("gateway.claim") && err.contains(says) && err.contains("fix:"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn preshared_key_files_follow_the_private_key_rules() {
    let dir = scratch("psk");
    let key = write_key(&dir.0, 0o600);
    let out = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .arg("genpsk")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout.len(),
        45,
        "44 characters of base64 and a newline"
    );
    let psk = dir.0.join("dc1.psk");
    std::fs::write(&psk, &out.stdout).unwrap();
    let with_psk = |path: &Path| {
        format!(
            "{}\npreshared_key_file = \"{}\"\n",
            dc("dc1", "198.18.0.11:51820", GATEWAY_PUB).trim_end(),
            path.display()
        )
    };
    // readable by others: refused, naming the datacenter's setting and the fix
    std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, err) = refused(&dir.0, &client_config(&key, &with_psk(&psk), ""));
    assert!(err.contains("datacenter[0].preshared_key_file"), "{err}");
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
    // not a key: the fix names genpsk, not genkey
    std::fs::write(&psk, "c2hvcnQ=\n").unwrap();
    std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, err) = refused(&dir.0, &client_config(&key, &with_psk(&psk), ""));
    assert!(err.contains("pre-shared key"), "{err}");
    assert!(err.contains("failoverd genpsk"), "{err}");
    // a good one passes the check
    std::fs::write(&psk, &out.stdout).unwrap();
    let file = dir.0.join("client.toml");
    std::fs::write(&file, client_config(&key, &with_psk(&psk), "")).unwrap();
    let ok = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&ok.stdout).contains(String::from_utf8_lossy(&out.stdout).trim()),
        "the key is never printed"
    );
}
