//! A hostile VMM against each of `vmm-shim`'s front ends. No namespaces and no root are
//! needed.
//!
//! For each front end (QEMU stream framing, vhost-user-net) the test:
//! - starts `vmm-shim` with a throwaway configuration: one datacenter at 127.0.0.1:9, which
//!   never answers, and the guest 10.200.0.2/24 behind gateway 10.200.0.1;
//! - runs `hostile-guest` against it (the corpus is documented in
//!   `src/bin/hostile-guest.rs`);
//! - requires that the shim is still running and that its status counted the hostile input
//!   (each `expect` entry of the report is a minimum for a counter under `guest`);
//! - requires that a clean connection was answered afterwards (exit status 0).
//!
//! `HOSTILE_GUEST_SKIP=case,case` passes `--skip` to `hostile-guest`, for triage.
//!
//! Needs `cargo build --release -p netns-tests --bins -p vmm-shim -p failoverd` first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use netns_tests::lab::{bin_path, wait_until};
use netns_tests::scenario::status;

/// How long `hostile-guest` may run. A healthy shim needs a few seconds; a wedged one makes
/// the tool run into its own timeouts, about 40 s.
const HOSTILE_TIMEOUT: Duration = Duration::from_secs(240);

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A running `vmm-shim` in a directory of its own. Dropping it kills the shim by its PID and
/// removes the directory.
struct Shim {
    child: Child,
    dir: PathBuf,
    control: PathBuf,
    socket: PathBuf,
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Shim {
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("shim.stderr")).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn failoverd(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new(bin_path("failoverd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "failoverd {args:?} failed");
    out.stdout
}

/// Writes a configuration into a new directory and starts `vmm-shim <mode> <flag> <socket>`.
fn start_shim(test: &str, mode: &str, flag: &str) -> Shim {
    let dir = std::env::temp_dir().join(format!(
        "hostile-guest-{test}-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("client.key");
    std::fs::write(&key, failoverd(&["genkey"], None)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dc_private = failoverd(&["genkey"], None);
    let dc_public = String::from_utf8(failoverd(&["pubkey"], Some(&dc_private))).unwrap();
    let control = dir.join("control.sock");
    let socket = dir.join("guest.sock");
    let config = dir.join("shim.toml");
    std::fs::write(
        &config,
        format!(
            "[client]\n\
             private_key_file = \"{key}\"\n\
             stable_address = [\"100.96.0.2\"]\n\
             control_socket = \"{control}\"\n\
             \n\
             [guest]\n\
             address = \"10.200.0.2/24\"\n\
             gateway = \"10.200.0.1\"\n\
             \n\
             [[datacenter]]\n\
             name = \"dc1\"\n\
             endpoint = \"127.0.0.1:9\"\n\
             public_key = \"{public}\"\n\
             probe_address = \"100.96.0.1\"\n",
            key = key.display(),
            control = control.display(),
            public = dc_public.trim(),
        ),
    )
    .unwrap();
    let child = Command::new(bin_path("vmm-shim"))
        .arg(mode)
        .arg(flag)
        .arg(&socket)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("shim.stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("shim.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut shim = Shim {
        child,
        dir,
        control,
        socket,
    };
    let ready = wait_until(Duration::from_secs(10), "the shim's sockets", || {
        shim.socket.exists() && status(&shim.control).is_ok()
    });
    if let Err(e) = ready {
        let running = shim.is_running();
        panic!("{e}; shim running: {running}; stderr:\n{}", shim.stderr());
    }
    shim
}

/// Runs `hostile-guest <mode>` against the shim; returns its exit code and its report.
fn run_hostile_guest(mode: &str, shim: &Shim) -> (Option<i32>, serde_json::Value) {
    let mut cmd = Command::new(bin_path("hostile-guest"));
    cmd.arg(mode)
        .arg("--socket")
        .arg(&shim.socket)
        .args(["--seed", "1", "--pid"])
        .arg(shim.child.id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Ok(skip) = std::env::var("HOSTILE_GUEST_SKIP") {
        cmd.args(["--skip", &skip]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // read on a thread: the report comes at the end, and the wait below needs a deadline
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let finished = wait_until(HOSTILE_TIMEOUT, "hostile-guest", || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if finished.is_err() {
        let _ = child.kill();
    }
    let code = child.wait().unwrap().code();
    let out = reader.join().unwrap();
    let report = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!(
            "hostile-guest printed no report ({e}; exit {code:?}; timed out: {}):\n{out}",
            finished.is_err()
        )
    });
    (code, report)
}

/// The value at `path` (dot-separated) under `v`, 0 when absent.
fn counter(v: &serde_json::Value, path: &str) -> u64 {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// Runs `hostile-guest <test>` against a fresh `vmm-shim <mode> <flag> PATH`; `extra` checks
/// the status. Panics with everything that went wrong.
fn hostile_vmm(
    test: &str,
    mode: &str,
    flag: &str,
    extra: impl Fn(&serde_json::Value) -> Vec<String>,
) {
    let mut shim = start_shim(test, mode, flag);
    let (code, report) = run_hostile_guest(test, &shim);
    eprintln!("{test}: hostile-guest exited {code:?}; report:\n{report:#}");
    let mut failures = Vec::new();
    let running = shim.is_running();
    if !running {
        failures.push(format!(
            "the shim is not running any more: {:?}",
            shim.child.try_wait()
        ));
    }
    let stderr = shim.stderr();
    if stderr.contains("panicked") {
        failures.push("the shim panicked".into());
    }
    match status(&shim.control) {
        Ok(st) => {
            let guest = &st["guest"];
            eprintln!("{test}: shim status, guest: {guest:#}");
            let expect = report["expect"].as_object().cloned().unwrap_or_default();
            assert!(!expect.is_empty(), "the report expects nothing: {report}");
            for (path, min) in expect {
                let min = min.as_u64().unwrap_or(0);
                let got = counter(guest, &path);
                if got < min {
                    failures.push(format!("guest.{path} is {got}, expected at least {min}"));
                }
            }
            failures.extend(extra(guest));
        }
        Err(e) => failures.push(format!("no status from the shim: {e}")),
    }
    if report["served_after"] != serde_json::Value::Bool(true) || code != Some(0) {
        failures.push(format!(
            "a clean connection was not served after the hostile input (exit {code:?}); notes: {}",
            report["notes"]
        ));
    }
    let pid = shim.child.id();
    drop(shim); // kills the shim (by its PID)
    assert!(
        failures.is_empty(),
        "{test}: {} failure(s):\n  {}\nshim (pid {pid}) stderr, last lines:\n{}",
        failures.len(),
        failures.join("\n  "),
        tail(&stderr, 40)
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn at_least(guest: &serde_json::Value, path: &str, min: u64) -> Option<String> {
    let got = counter(guest, path);
    (got < min).then(|| format!("guest.{path} is {got}, expected at least {min}"))
}

#[test]
fn stream_front_end_survives_a_hostile_vmm() {
    hostile_vmm("stream", "stream", "--listen", |guest| {
        let drops: u64 = guest["drops"]
            .as_object()
            .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
            .unwrap_or(0);
        let mut f: Vec<String> = [
            at_least(guest, "link.receive.desyncs", 1),
            at_least(guest, "link.receive.oversize_frames", 1),
            at_least(guest, "link.receive.empty_frames", 1),
        ]
        .into_iter()
        .flatten()
        .collect();
        if drops == 0 {
            f.push("no guest drops counted".into());
        }
        f
    });
}

#[test]
fn vhost_user_front_end_survives_a_hostile_vmm() {
    hostile_vmm("vhost", "vhost-user", "--socket", |guest| {
        [
            "tx_short",
            "tx_too_long",
            "tx_offload",
            "tx_bad_chain",
            "tx_wrong_direction",
            "rx_bad_chain",
            "rx_no_room",
            "bad_head",
            "queue_broken",
        ]
        .into_iter()
        .filter_map(|c| at_least(guest, &format!("link.receive.{c}"), 1))
        .collect()
    });
}
