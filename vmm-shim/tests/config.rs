//! The shim's configuration at its command line: `vmm-shim check` accepts a good file and
//! refuses what the shim cannot honour, naming the file, the key and the fix. Runs without
//! root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Output};

use base64::Engine as _;

/// A scratch directory with a key file and a shim configuration carrying `extra` in
/// `[client]`; removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(name: &str, extra: &str) -> (Scratch, PathBuf, Output) {
    let dir = std::env::temp_dir().join(format!("vmm-shim-cfg-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("shim.key");
    let text = base64::engine::general_purpose::STANDARD.encode([0x41u8; 32]);
    std::fs::write(&key, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = dir.join("vm.toml");
    std::fs::write(
        &file,
        format!(
            "[client]\nprivate_key_file = \"{}\"\nstable_address = [\"100.96.0.2\"]\n{extra}\n\n\
             [[datacenter]]\nname = \"dc1\"\nendpoint = \"198.18.0.11:51820\"\n\
             public_key = \"hq7aij0ZmmD1zIWdCs0XTzIw1HvUAn9wTcXD53zON0c=\"\n\
             probe_address = \"100.96.0.1\"\n\n[guest]\naddress = \"10.200.0.2/24\"\n",
            key.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmm-shim"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    (Scratch(dir), file, out)
}

#[test]
fn fail_closed_is_accepted() {
    for extra in ["", "fail_mode = \"closed\""] {
        let (_dir, _file, out) = check("closed", extra);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn fail_open_is_refused_not_ignored() {
    let (_dir, file, out) = check("open", "fail_mode = \"open\"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("client.fail_mode"), "{stderr}");
    assert!(stderr.contains("fix:"), "{stderr}");
}
