//! Running the daemons: the control socket under abuse and its access rules, operator steering
//! (switch, drain, undrain), reload, Prometheus metrics, systemd's notifications and watchdog
//! (also when nobody reads them), keeping the private key to itself, dropping privileges, and
//! the shipped systemd units.
//!
//! Every test prints the figures it measured. Users and groups a test creates get unique
//! names and are deleted when the test ends, also when it fails ([`Accounts`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::Shutdown;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netns_tests::lab::{bin_path, wait_until, Ns};
use netns_tests::scenario::*;
use serde_json::{json, Value};

/// The test's clock (measuring what the daemons do is IO code).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

fn cmd(c: &str) -> Value {
    json!({"v": 1, "cmd": c})
}

fn cmd_dc(c: &str, dc: &str) -> Value {
    json!({"v": 1, "cmd": c, "datacenter": dc})
}

fn is_ok(answer: &Value) -> bool {
    answer["ok"] == Value::Bool(true)
}

fn error_text(answer: &Value) -> String {
    answer["error"].as_str().unwrap_or_default().to_owned()
}

fn assert_alive(running: &Running, what: &str) {
    assert!(
        running.daemon.is_running(),
        "{what} died: {}",
        running.daemon.read_stderr()
    );
    assert!(
        !running.daemon.read_stderr().contains("panicked"),
        "{what} panicked: {}",
        running.daemon.read_stderr()
    );
}

fn dc_entry<'a>(answer: &'a Value, list: &str, name: &str) -> &'a Value {
    answer[list]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {list}: {answer}"))
}

fn names(answer: &Value, list: &str) -> Vec<String> {
    answer[list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// users and groups

static ACCOUNT_SERIAL: AtomicU32 = AtomicU32::new(0);

/// Users and groups a test created; deleted on drop (users first), also when the test panics.
#[derive(Debug, Default)]
struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

fn run_tool(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn getent(db: &str, name: &str) -> Option<Vec<String>> {
    let out = run_tool(&["getent", db, name]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(':')
            .map(str::to_owned)
            .collect()
    })
}

impl Accounts {
    /// A name no other test (or run) uses: `fo<tag><pid><serial>`, at most 32 characters.
    fn unique(tag: &str) -> String {
        let n = ACCOUNT_SERIAL.fetch_add(1, Ordering::Relaxed);
        format!("fo{tag}{:x}x{n}", std::process::id())
    }

    /// Creates a system group; returns its gid.
    fn group(&mut self, tag: &str) -> (String, u32) {
        let name = Self::unique(tag);
        self.groups.push(name.clone());
        let out = run_tool(&["groupadd", "--system", &name]);
        assert!(out.status.success(), "groupadd {name}: {out:?}");
        let gid = getent("group", &name).unwrap()[2].parse().unwrap();
        (name, gid)
    }

    /// Creates a system user without a home, its primary group `primary` (or a new group of
    /// its own name) and supplementary groups `extra`; returns (name, uid, gid).
    fn user(&mut self, tag: &str, primary: Option<&str>, extra: &[&str]) -> (String, u32, u32) {
        let name = Self::unique(tag);
        self.users.push(name.clone());
        let mut args = vec![
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
        ];
        match primary {
            Some(g) => args.extend(["--gid", g]),
            None => {
                self.groups.push(name.clone());
                args.push("--user-group");
            }
        }
        let extra = extra.join(",");
        if !extra.is_empty() {
            args.extend(["--groups", &extra]);
        }
        args.push(&name);
        let out = run_tool(&args);
        assert!(out.status.success(), "useradd {name}: {out:?}");
        let entry = getent("passwd", &name).unwrap();
        (name, entry[2].parse().unwrap(), entry[3].parse().unwrap())
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in self.users.iter().rev() {
            if getent("passwd", u).is_some() {
                let out = run_tool(&["userdel", u]);
                if !out.status.success() || getent("passwd", u).is_some() {
                    eprintln!("could not delete user {u}: {out:?}");
                }
            }
        }
        for g in self.groups.iter().rev() {
            if getent("group", g).is_some() {
                let out = run_tool(&["groupdel", g]);
                if !out.status.success() || getent("group", g).is_some() {
                    eprintln!("could not delete group {g}: {out:?}");
                }
            }
        }
    }
}

/// A control-socket client in Python, so it can run as another user (under `setpriv`):
/// one connection per request in argv[2:], one JSON line per request on stdout.
const PY_CLIENT: &str = r#"
import errno, json, socket, sys
for request in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(sys.argv[1])
    except OSError as e:
        print(json.dumps({"connect_error": errno.errorcode.get(e.errno, str(e.errno))}), flush=True)
        continue
    try:
        s.sendall(request.encode() + b"\n")
    except OSError:
        pass  # a refusal may come before the request is read; the answer is still there
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    print(json.dumps({"answer": data.decode("utf-8", "replace")}), flush=True)
"#;

/// What one request sent as another user got: the daemon's answer, or the connect error
/// (e.g. `EACCES`).
#[derive(Debug)]
enum AsUser {
    Answer(Value),
    Closed,
    ConnectError(String),
}

/// Sends each of `requests` to `socket` from `ns` as `uid`/`gid` with exactly the
/// supplementary groups `groups` (`setpriv`; python3 from Debian, not a user's pyenv).
fn as_user(
    fl: &FailoverLab,
    ns: &Ns,
    (uid, gid, groups): (u32, u32, &[u32]),
    socket: &Path,
    requests: &[Value],
) -> Vec<AsUser> {
    let groups_arg = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let mut args = vec![
        "setpriv".to_owned(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        groups_arg,
        "/usr/bin/python3".into(),
        "-I".into(),
        "-c".into(),
        PY_CLIENT.into(),
        socket.display().to_string(),
    ];
    args.extend(requests.iter().map(Value::to_string));
    let out = fl.lab.exec_unchecked(ns, &args).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<AsUser> = stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            if let Some(e) = v["connect_error"].as_str() {
                AsUser::ConnectError(e.to_owned())
            } else {
                let answer = v["answer"].as_str().unwrap_or_default();
                if answer.trim().is_empty() {
                    AsUser::Closed
                } else {
                    AsUser::Answer(
                        serde_json::from_str(answer)
                            .unwrap_or_else(|e| panic!("answer {answer:?} is not JSON: {e}")),
                    )
                }
            }
        })
        .collect();
    assert_eq!(
        results.len(),
        requests.len(),
        "python client: {out:?} ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

// ------------------------------------------------------------------------------------------
// raw control-socket exchanges

/// How one raw exchange with the control socket ended.
#[derive(Debug)]
struct Exchange {
    /// the answer line, if one came
    answer: Option<String>,
    /// from connect to the answer or the close
    after: Duration,
    /// connect failed, or the socket was neither answered nor closed within 5 s
    error: Option<String>,
}

impl Exchange {
    /// Answered with ok:false, or closed without an answer.
    fn refused_or_closed(&self) -> bool {
        self.error.is_none()
            && self.answer.as_deref().is_none_or(|a| {
                serde_json::from_str::<Value>(a).is_ok_and(|v| v["ok"] == Value::Bool(false))
            })
    }

    fn describe(&self) -> String {
        let what = match (&self.error, &self.answer) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(a)) => format!("answered {}", a.trim()),
            (None, None) => "closed without an answer".to_owned(),
        };
        format!("{what} after {:.0} ms", self.after.as_secs_f64() * 1e3)
    }
}

/// Connects to `socket`, writes `payload` (all at once, or one byte per `pace`), optionally
/// half-closes, and reads one answer line or the close.
fn exchange(socket: &Path, payload: Vec<u8>, half_close: bool, pace: Option<Duration>) -> Exchange {
    let start = now();
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            return Exchange {
                answer: None,
                after: start.elapsed(),
                error: Some(format!("connect: {e}")),
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let write = std::thread::spawn(move || {
        match pace {
            None => {
                let _ = writer.write_all(&payload);
            }
            Some(pace) => {
                for b in payload {
                    if writer.write_all(&[b]).is_err() {
                        break;
                    }
                    std::thread::sleep(pace);
                }
            }
        }
        if half_close {
            let _ = writer.shutdown(Shutdown::Write);
        }
    });
    let mut line = Vec::new();
    let read = BufReader::new(&stream).read_until(b'\n', &mut line);
    let after = start.elapsed();
    let _ = stream.shutdown(Shutdown::Both); // unblocks a writer still writing
    let _ = write.join();
    let (answer, error) = match read {
        Ok(_) if line.is_empty() => (None, None),
        Ok(_) => (Some(String::from_utf8_lossy(&line).into_owned()), None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => (None, None),
        Err(e) => (None, Some(format!("read: {e}"))),
    };
    Exchange {
        answer,
        after,
        error,
    }
}

// ------------------------------------------------------------------------------------------
// 1

#[test]
fn control_socket_refuses_strangers_and_survives_abuse_during_a_stream() {
    use std::os::unix::fs::PermissionsExt as _;
    let fl = FailoverLab::new("ops-abuse", 1, "").unwrap();
    let socket = fl.client.control.clone();
    let bytes = 2_500_000_000; // 10-25 s here (batched, both ways): longer than the abuse
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "stream", bytes, 11).unwrap();
    fl.wait_flowing(5_000_000).unwrap();
    let abuse_start = now();

    // A stranger (nobody) from the client's namespace. The socket is 0600, so the kernel
    // refuses the connect; with the socket opened to everyone (a wrong mode set by hand), the
    // daemon's own SO_PEERCRED check must still refuse every command.
    let nobody = (65534, 65534, &[][..]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600, "control socket mode");
    let r = as_user(&fl, &fl.topo.client, nobody, &socket, &[cmd("status")]);
    assert!(
        matches!(&r[0], AsUser::ConnectError(e) if e == "EACCES"),
        "nobody connecting to a 0600 socket: {r:?}"
    );
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = as_user(
        &fl,
        &fl.topo.client,
        nobody,
        &socket,
        &[cmd("status"), cmd("tunnels"), cmd_dc("drain", "dc1")],
    );
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    for answer in &r {
        match answer {
            AsUser::Answer(a) => assert!(
                !is_ok(a) && error_text(a).contains("permission denied"),
                "nobody through a 0666 socket: {a}"
            ),
            other => panic!("nobody through a 0666 socket: {other:?}"),
        }
    }
    eprintln!("uid 65534: connect to the 0600 socket EACCES; through a 0666 socket: {r:?}");

    // Hostile requests, each on its own connection, all at once.
    let mut nested = "[".repeat(2000);
    nested.push_str(&"]".repeat(2000));
    nested.push('\n');
    let cases: Vec<(&str, Vec<u8>, bool, Option<Duration>)> = vec![
        (
            "malformed JSON",
            b"{\"v\":1,\"cmd\":\n".to_vec(),
            false,
            None,
        ),
        (
            "1 MB line",
            {
                let mut v = vec![b'a'; 1 << 20];
                v.push(b'\n');
                v
            },
            false,
            None,
        ),
        (
            "invalid UTF-8",
            b"{\"v\":1,\"cmd\":\"st\xff\xfeus\"}\n".to_vec(),
            false,
            None,
        ),
        (
            "unknown command",
            b"{\"v\":1,\"cmd\":\"rm -rf /\"}\n".to_vec(),
            false,
            None,
        ),
        (
            "extra fields",
            b"{\"v\":1,\"cmd\":\"status\",\"x\":1}\n".to_vec(),
            false,
            None,
        ),
        (
            "version 2",
            b"{\"v\":2,\"cmd\":\"status\"}\n".to_vec(),
            false,
            None,
        ),
        (
            "switch without datacenter",
            b"{\"v\":1,\"cmd\":\"switch\"}\n".to_vec(),
            false,
            None,
        ),
        (
            "negative limit",
            b"{\"v\":1,\"cmd\":\"flows\",\"limit\":-1}\n".to_vec(),
            false,
            None,
        ),
        ("NUL bytes", b"\0\0\0\0\n".to_vec(), false, None),
        ("2000-deep nesting", nested.into_bytes(), false, None),
        (
            "no newline, then EOF",
            b"{\"v\":1,\"cmd\":\"status\"}".to_vec(),
            true,
            None,
        ),
        (
            "slowloris (1 byte per 100 ms)",
            b"{\"v\":1,\"cmd\":\"status\"}\n".to_vec(),
            false,
            Some(Duration::from_millis(100)),
        ),
    ];
    let results: Vec<(&str, Exchange)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .into_iter()
            .map(|(what, payload, half_close, pace)| {
                let socket = &socket;
                (
                    what,
                    s.spawn(move || exchange(socket, payload, half_close, pace)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(what, h)| (what, h.join().unwrap()))
            .collect()
    });
    for (what, x) in &results {
        eprintln!("{what}: {}", x.describe());
    }
    for (what, x) in &results {
        assert!(
            x.refused_or_closed(),
            "{what}: not refused: {}",
            x.describe()
        );
        assert!(
            x.after < Duration::from_millis(2500),
            "{what}: took {:?}",
            x.after
        );
        if !what.starts_with("slowloris") {
            // a complete bad request is answered, not just dropped
            assert!(x.answer.is_some(), "{what}: no answer: {}", x.describe());
        }
    }
    assert_alive(&fl.client, "the client");

    // 200 connections at once, idle, then 200 status requests at once.
    for (what, payload) in [
        ("idle", Vec::new()),
        ("status", b"{\"v\":1,\"cmd\":\"status\"}\n".to_vec()),
    ] {
        let results: Vec<Exchange> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..200)
                .map(|_| {
                    let (socket, payload) = (&socket, payload.clone());
                    s.spawn(move || exchange(socket, payload, false, None))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let answered_ok = results
            .iter()
            .filter(|x| {
                x.answer
                    .as_deref()
                    .is_some_and(|a| serde_json::from_str::<Value>(a).is_ok_and(|v| is_ok(&v)))
            })
            .count();
        let closed = results
            .iter()
            .filter(|x| x.answer.is_none() && x.error.is_none())
            .count();
        let slowest = results.iter().map(|x| x.after).max().unwrap_or_default();
        let errors: Vec<String> = results.iter().filter_map(|x| x.error.clone()).collect();
        eprintln!(
            "200 concurrent {what} connections: {answered_ok} answered ok, {closed} closed, \
             {} errors, slowest {:.0} ms",
            errors.len(),
            slowest.as_secs_f64() * 1e3
        );
        assert!(errors.is_empty(), "{what}: {errors:?}");
        assert_eq!(
            answered_ok + closed,
            200,
            "{what}: every one answered or closed"
        );
        assert!(slowest < Duration::from_millis(2500), "{what}: {slowest:?}");
        if what == "idle" {
            assert_eq!(closed, 200);
        } else {
            assert!(answered_ok >= 1, "some status requests are served");
        }
        assert_alive(&fl.client, "the client");
    }
    let abuse = abuse_start.elapsed();
    let still_streaming = stream.daemon.is_running();

    let status = fl.client.status().unwrap();
    assert!(is_ok(&status), "final status: {status}");
    let report = stream.finish().unwrap();
    let stall = check_stream("stream during the abuse", &report, bytes);
    eprintln!(
        "abuse lasted {:.1} s (stream still running at its end: {still_streaming}); longest \
         stall {stall:.0} ms; final status ok, active {}",
        abuse.as_secs_f64(),
        status["active"]
    );
    assert!(
        still_streaming,
        "the stream ended before the abuse did: make it longer"
    );
    assert!(stall < 1000.0, "longest stall {stall:.0} ms");
    assert_alive(&fl.client, "the client");
}

// ------------------------------------------------------------------------------------------
// 2

#[test]
fn a_control_group_may_read_but_not_steer() {
    let mut accounts = Accounts::default();
    let (group, gid) = accounts.group("ro");
    let (reader, reader_uid, reader_gid) = accounts.user("rd", Some(&group), &[]);
    let (member, member_uid, member_gid) = accounts.user("mb", None, &[&group]);
    assert_eq!(reader_gid, gid);
    let fl = FailoverLab::new("ops-group", 2, &format!("control_group = \"{group}\"\n")).unwrap();
    let socket = fl.client.control.clone();
    let meta = std::fs::metadata(&socket).unwrap();
    eprintln!(
        "control socket {}: mode {:o}, uid {}, gid {} (group {group} = {gid})",
        socket.display(),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    );
    assert_eq!(meta.mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), gid);
    assert_eq!(meta.uid(), 0);

    let requests = [
        cmd("status"),
        cmd("tunnels"),
        cmd("events"),
        json!({"v": 1, "cmd": "flows", "limit": 5}),
        cmd_dc("drain", "dc1"),
        cmd_dc("switch", "dc2"),
        cmd("reload"),
    ];
    let r = as_user(
        &fl,
        &fl.topo.client,
        (reader_uid, gid, &[]),
        &socket,
        &requests,
    );
    for (req, answer) in requests.iter().zip(&r) {
        let AsUser::Answer(a) = answer else {
            panic!("{reader} {req}: {answer:?}")
        };
        let steers = ["drain", "switch", "reload"].contains(&req["cmd"].as_str().unwrap());
        eprintln!(
            "{reader} (primary group {group}) {}: ok={} {}",
            req["cmd"],
            a["ok"],
            error_text(a)
        );
        if steers {
            assert!(!is_ok(a), "{req} by a reader: {a}");
            assert!(error_text(a).contains("permission denied"), "{a}");
        } else {
            assert!(is_ok(a), "{req} by a reader: {a}");
        }
    }
    let AsUser::Answer(status) = &r[0] else {
        unreachable!()
    };
    assert_eq!(status["active"], "dc1");
    let AsUser::Answer(tunnels) = &r[1] else {
        unreachable!()
    };
    assert_eq!(names(tunnels, "tunnels"), ["dc1", "dc2"]);
    // refused steering changed nothing
    let s = fl.client.status().unwrap();
    assert_eq!(s["active"], "dc1");
    assert_eq!(dc_entry(&s, "datacenters", "dc1")["drained"], false);

    // A user who has the group only as a supplementary group: the kernel lets it connect
    // (group rw on the socket), SO_PEERCRED carries only the primary gid.
    let member_r = as_user(
        &fl,
        &fl.topo.client,
        (member_uid, member_gid, &[member_gid, gid]),
        &socket,
        &[cmd("status")],
    );
    eprintln!("{member} (group {group} only supplementary) status: {member_r:?}");
    let member_reads = matches!(&member_r[0], AsUser::Answer(a) if is_ok(a));

    // Anyone else is refused by the kernel already (0660).
    let r = as_user(
        &fl,
        &fl.topo.client,
        (65534, 65534, &[]),
        &socket,
        &[cmd("status")],
    );
    eprintln!("uid 65534: {r:?}");
    assert!(
        matches!(&r[0], AsUser::ConnectError(e) if e == "EACCES"),
        "{r:?}"
    );
    assert_alive(&fl.client, "the client");
    // The README: "that group may read". Membership of a group includes supplementary
    // membership (`usermod -aG`), and the kernel already let this user connect through the
    // socket's group bits.
    assert!(
        member_reads,
        "{member}, a member of {group} through its supplementary groups, may not read: \
         {member_r:?}"
    );
    drop(fl);
    drop(accounts);
}

// ------------------------------------------------------------------------------------------
// 3

#[test]
fn operators_switch_drain_and_undrain() {
    let fl = FailoverLab::new("ops-steer", 3, "").unwrap();
    let bytes = 2_500_000_000; // 10-25 s here (batched, both ways): longer than the steering
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "stream", bytes, 31).unwrap();
    fl.wait_flowing(5_000_000).unwrap();
    let c = &fl.client;

    // switch to dc3: traffic moves and stays, although dc1 is up and failback is on
    let t = now();
    let a = c.ask(&cmd_dc("switch", "dc3")).unwrap();
    assert!(is_ok(&a), "switch dc3: {a}");
    assert_eq!(a["active"], "dc3");
    wait_claimed(&fl.gateways[2]).unwrap();
    eprintln!(
        "switch dc3: answered {a}; dc3's gateway claimed the client {:.0} ms after the request",
        t.elapsed().as_secs_f64() * 1e3
    );
    let hold = now();
    let mut samples = 0;
    while hold.elapsed() < Duration::from_secs(3) {
        let s = c.status().unwrap();
        assert_eq!(
            s["active"],
            "dc3",
            "left dc3 after {:?}: {s}",
            hold.elapsed()
        );
        // alive all along (a probe answered late makes it suspect for a moment, which is no
        // failure: only down or recovering would be)
        let health = &dc_entry(&s, "datacenters", "dc1")["health"];
        assert!(health == "up" || health == "suspect", "dc1 {health}: {s}");
        samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("dc3 stayed active for 3 s ({samples} samples) with dc1 up and failback on");

    // unknown names and drained datacenters are refused
    let a = c.ask(&cmd_dc("switch", "dc9")).unwrap();
    eprintln!("switch dc9: {a}");
    assert!(!is_ok(&a) && error_text(&a).contains("dc9"), "{a}");

    // drain dc3: traffic leaves it
    let a = c.ask(&cmd_dc("drain", "dc3")).unwrap();
    eprintln!("drain dc3: {a}");
    assert!(is_ok(&a), "{a}");
    assert_ne!(a["active"], "dc3");
    let after_drain = a["active"].as_str().unwrap().to_owned();
    let a = c.ask(&cmd_dc("switch", "dc3")).unwrap();
    eprintln!("switch dc3 while drained: {a}");
    assert!(!is_ok(&a) && error_text(&a).contains("drained"), "{a}");
    let tunnels = c.ask(&cmd("tunnels")).unwrap();
    assert_eq!(dc_entry(&tunnels, "tunnels", "dc3")["drained"], true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.active().unwrap(), after_drain);

    // undrain: back in service; traffic stays where policy has it (dc1)
    let a = c.ask(&cmd_dc("undrain", "dc3")).unwrap();
    eprintln!("undrain dc3: {a}");
    assert!(is_ok(&a), "{a}");
    let tunnels = c.ask(&cmd("tunnels")).unwrap();
    assert_eq!(dc_entry(&tunnels, "tunnels", "dc3")["drained"], false);
    let a = c.ask(&cmd_dc("drain", "dc9")).unwrap();
    assert!(!is_ok(&a), "drain dc9: {a}");

    // the switch log: manual dc1 -> dc3, drain dc3 -> dc1, each with the stall it cost
    let mut events = Value::Null;
    let filled = wait_until(Duration::from_secs(5), "stall_ms in the events", || {
        events = c.ask(&cmd("events")).unwrap();
        events["events"]
            .as_array()
            .is_some_and(|e| e.len() >= 2 && e.iter().all(|e| e["stall_ms"].is_number()))
    });
    eprintln!("events: {events}");
    let list = events["events"].as_array().unwrap().clone();
    let manual = list
        .iter()
        .find(|e| e["reason"] == "manual" && e["to"] == "dc3")
        .unwrap_or_else(|| panic!("no manual switch to dc3: {events}"));
    assert_eq!(manual["from"], "dc1");
    let drain = list
        .iter()
        .find(|e| e["reason"] == "drain" && e["from"] == "dc3")
        .unwrap_or_else(|| panic!("no drain switch from dc3: {events}"));
    assert_eq!(drain["to"], after_drain.as_str());
    filled.unwrap();
    eprintln!(
        "stall of the manual switch {} ms, of the drain {} ms",
        manual["stall_ms"], drain["stall_ms"]
    );

    // the stream's flow, on the active tunnel
    let flows = c
        .ask(&json!({"v": 1, "cmd": "flows", "limit": 50}))
        .unwrap();
    assert!(is_ok(&flows), "{flows}");
    let flow = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["protocol"] == "tcp" && f["remote"] == "198.19.0.100" && f["remote_port"] == 5201
        })
        .unwrap_or_else(|| panic!("no flow to the stream server: {flows}"))
        .clone();
    eprintln!("flows: total {}; the stream's: {flow}", flows["total"]);
    assert_eq!(flow["state"], "established");
    assert_eq!(flow["tunnel"], c.active().unwrap().as_str());

    let still_streaming = stream.daemon.is_running();
    let report = stream.finish().unwrap();
    let stall = check_stream("stream across switch, drain and undrain", &report, bytes);
    eprintln!(
        "longest stall {stall:.0} ms (stream still running after the steering: {still_streaming})"
    );
    assert!(
        still_streaming,
        "the stream ended before the steering did: make it longer"
    );
    assert!(stall < 1000.0, "longest stall {stall:.0} ms");
}

// ------------------------------------------------------------------------------------------
// 4

fn handshakes(running: &Running) -> BTreeMap<String, u64> {
    let t = running.ask(&cmd("tunnels")).unwrap();
    t["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["handshakes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn reload_applies_good_files_and_keeps_the_old_on_bad_ones() {
    let fl = FailoverLab::with_options(
        "ops-reload",
        &LabOptions {
            datacenters: 3,
            client_datacenters: 2,
            ..LabOptions::default()
        },
    )
    .unwrap();
    let c = &fl.client;
    let original = std::fs::read_to_string(&c.config).unwrap();
    let dc3_public = fl.gateways[2].status().unwrap()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let with_dc3 = format!(
        "{original}{}",
        datacenter_sections(&[DcEntry::failoverd(3, &dc3_public)])
    );
    assert_eq!(names(&c.status().unwrap(), "datacenters"), ["dc1", "dc2"]);

    let bytes = 1_500_000_000; // 6-15 s here (batched, both ways): longer than the reloads
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "stream", bytes, 41).unwrap();
    fl.wait_flowing(5_000_000).unwrap();
    let before = handshakes(c);

    // add dc3
    std::fs::write(&c.config, &with_dc3).unwrap();
    let t = now();
    let a = c.ask(&cmd("reload")).unwrap();
    eprintln!(
        "reload adding dc3: {a} ({:.1} ms)",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(is_ok(&a), "{a}");
    assert_eq!(a["added"], json!(["dc3"]));
    assert_eq!(a["removed"], json!([]));
    assert_eq!(a["changed"], json!([]));
    assert_eq!(a["unchanged"], json!(["dc1", "dc2"]));
    wait_until(Duration::from_secs(10), "dc3 established", || {
        c.ask(&cmd("tunnels"))
            .is_ok_and(|t| dc_entry(&t, "tunnels", "dc3")["established"] == true)
    })
    .unwrap();
    eprintln!(
        "dc3 established {:.0} ms after the reload",
        t.elapsed().as_secs_f64() * 1e3
    );
    let after = handshakes(c);
    eprintln!("handshakes before {before:?}, after {after:?}");
    assert_eq!(after["dc1"], before["dc1"], "dc1 handshook again");
    assert_eq!(after["dc2"], before["dc2"], "dc2 handshook again");
    assert_eq!(c.active().unwrap(), "dc1");

    // a broken file: refused naming the file and the key; the running configuration stays
    let broken = with_dc3.replace(&dc3_public, "not!base64!at!all");
    std::fs::write(&c.config, broken).unwrap();
    let a = c.ask(&cmd("reload")).unwrap();
    eprintln!("reload of a bad key: {a}");
    assert!(!is_ok(&a), "{a}");
    let e = error_text(&a);
    assert!(
        e.contains(&c.config.display().to_string()),
        "names the file: {e}"
    );
    assert!(e.contains("datacenter[2].public_key"), "names the key: {e}");
    assert_alive(c, "the client");
    assert_eq!(
        names(&c.status().unwrap(), "datacenters"),
        ["dc1", "dc2", "dc3"]
    );

    // a stable address change needs a restart
    let moved = with_dc3.replace(&format!("\"{STABLE_V4}\""), "\"100.96.0.3\"");
    assert_ne!(moved, with_dc3);
    std::fs::write(&c.config, moved).unwrap();
    let a = c.ask(&cmd("reload")).unwrap();
    eprintln!("reload of a new stable address: {a}");
    assert!(!is_ok(&a), "{a}");
    assert!(error_text(&a).contains("restart"), "{a}");
    assert!(error_text(&a).contains("stable_address"), "{a}");
    assert_eq!(
        names(&c.status().unwrap(), "datacenters"),
        ["dc1", "dc2", "dc3"]
    );

    // SIGHUP with dc3 removed
    std::fs::write(&c.config, &original).unwrap();
    let t = now();
    c.daemon.signal(libc::SIGHUP).unwrap();
    wait_until(Duration::from_secs(5), "dc3 removed by SIGHUP", || {
        c.status()
            .is_ok_and(|s| names(&s, "datacenters") == ["dc1", "dc2"])
    })
    .unwrap();
    eprintln!(
        "SIGHUP removed dc3 within {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(c.active().unwrap(), "dc1");
    let last = handshakes(c);
    assert_eq!(last["dc1"], before["dc1"], "dc1 handshook again");

    let still_streaming = stream.daemon.is_running();
    let report = stream.finish().unwrap();
    let stall = check_stream("stream across four reloads", &report, bytes);
    eprintln!(
        "longest stall {stall:.0} ms (stream still running after the reloads: {still_streaming})"
    );
    assert!(
        still_streaming,
        "the stream ended before the reloads did: make it longer"
    );
    assert!(stall < 1000.0, "longest stall {stall:.0} ms");
    assert_alive(c, "the client");
    let log = c.daemon.read_stderr();
    assert!(log.contains("configuration reloaded"), "{log}");
}

// ------------------------------------------------------------------------------------------
// 5

/// One HTTP/1.1 request from inside `ns` to `addr`; (status code, headers, body).
fn http(fl: &FailoverLab, ns: &Ns, addr: &str, request: &str) -> (u16, String, String) {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let raw = fl
        .lab
        .run_in(ns, || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {raw:?}"));
    (code, head.to_owned(), body.to_owned())
}

fn get(fl: &FailoverLab, ns: &Ns, addr: &str, path: &str) -> (u16, String, String) {
    http(
        fl,
        ns,
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"),
    )
}

/// The samples of a text exposition, `name{labels}` → value, after checking that every sample
/// belongs to a family with a `# TYPE` line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(&name), "{name} has no # TYPE line");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

#[test]
fn metrics_are_scraped() {
    const CLIENT_METRICS: &str = "127.0.0.1:9581";
    const GATEWAY_METRICS: &str = "127.0.0.1:9582";
    let fl = FailoverLab::with_options(
        "ops-metrics",
        &LabOptions {
            datacenters: 2,
            client_config: format!("metrics_listen = \"{CLIENT_METRICS}\"\n"),
            gateway: GatewayOptions {
                config: format!("metrics_listen = \"{GATEWAY_METRICS}\"\n"),
                ..GatewayOptions::default()
            },
            ..LabOptions::default()
        },
    )
    .unwrap();
    let client_ns = fl.topo.client.clone();
    // the lab is ready once dc1 claims the client; dc2's first probe round trip may still be
    // under way on a busy machine
    wait_until(Duration::from_secs(10), "an RTT for every tunnel", || {
        let (_, _, body) = get(&fl, &client_ns, CLIENT_METRICS, "/metrics");
        ["dc1", "dc2"].iter().all(|dc| {
            body.contains(&format!(
                "failoverd_tunnel_rtt_seconds{{datacenter=\"{dc}\"}}"
            ))
        })
    })
    .unwrap();
    let t = now();
    let (code, head, body) = get(&fl, &client_ns, CLIENT_METRICS, "/metrics");
    let took = t.elapsed();
    assert_eq!(code, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let s = samples(&body);
    eprintln!(
        "client GET /metrics: {code}, {} bytes, {} samples, {:.1} ms",
        body.len(),
        s.len(),
        took.as_secs_f64() * 1e3
    );
    assert!(
        body.contains("# TYPE failoverd_tunnel_rtt_seconds gauge"),
        "{body}"
    );
    for dc in ["dc1", "dc2"] {
        let rtt = s[&format!("failoverd_tunnel_rtt_seconds{{datacenter=\"{dc}\"}}")];
        eprintln!("{dc}: rtt {:.3} ms", rtt * 1e3);
        assert!(rtt > 0.0 && rtt < 1.0, "{dc} rtt {rtt}");
        assert!(s[&format!("failoverd_tunnel_probes_sent_total{{datacenter=\"{dc}\"}}")] > 0.0);
        assert_eq!(
            s[&format!("failoverd_tunnel_established{{datacenter=\"{dc}\"}}")],
            1.0
        );
    }
    assert_eq!(s["failoverd_tunnel_active{datacenter=\"dc1\"}"], 1.0);
    assert_eq!(s["failoverd_tunnel_active{datacenter=\"dc2\"}"], 0.0);
    let switches_before: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("failoverd_switches_total"))
        .fold(0.0, |sum, (_, v)| sum + v);

    // the same numbers through the control socket
    let m = fl.client.ask(&cmd("metrics")).unwrap();
    assert!(is_ok(&m), "{m}");
    assert!(m["text"]
        .as_str()
        .unwrap()
        .contains("# TYPE failoverd_tunnel_rtt_seconds gauge"));

    // the gateways: dc1 claims the client, dc2 does not
    let claimed = |i: usize| {
        let (code, _, body) = get(&fl, fl.dc(i).unwrap(), GATEWAY_METRICS, "/metrics");
        assert_eq!(code, 200, "{body}");
        samples(&body)
            .get("failoverd_gateway_client_claimed{client=\"laptop\"}")
            .copied()
            .unwrap_or_else(|| panic!("dc{i}: no claimed gauge: {body}"))
    };
    assert_eq!((claimed(1), claimed(2)), (1.0, 0.0));

    // a blackhole of dc1: a switch is counted, dc2 claims
    blackhole(&fl.lab, fl.dc(1).unwrap(), Direction::Both).unwrap();
    fl.wait_active("dc2", Duration::from_secs(5)).unwrap();
    wait_claimed(&fl.gateways[1]).unwrap();
    let (_, _, body) = get(&fl, &client_ns, CLIENT_METRICS, "/metrics");
    let s = samples(&body);
    let switches: Vec<(&String, &f64)> = s
        .iter()
        .filter(|(k, _)| k.starts_with("failoverd_switches_total"))
        .collect();
    eprintln!("after the blackhole: {switches:?} (before: {switches_before} in all)");
    assert!(
        body.contains("# TYPE failoverd_switches_total counter"),
        "{body}"
    );
    assert_eq!(
        switches.iter().fold(0.0, |sum, (_, v)| sum + **v),
        switches_before + 1.0
    );
    assert_eq!(s["failoverd_tunnel_active{datacenter=\"dc2\"}"], 1.0);
    let dc2_claimed = claimed(2);
    eprintln!("dc2's gateway: failoverd_gateway_client_claimed{{client=\"laptop\"}} {dc2_claimed}");
    assert_eq!(dc2_claimed, 1.0);

    // anything else is not found
    let (code, _, body) = get(&fl, &client_ns, CLIENT_METRICS, "/other");
    eprintln!("GET /other: {code} {body:?}");
    assert_eq!(code, 404);
    let (code, _, _) = http(
        &fl,
        &client_ns,
        CLIENT_METRICS,
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    eprintln!("POST /metrics: {code}");
    assert_eq!(code, 405);
    // metrics listen on the namespace's loopback only
    let out = fl
        .lab
        .exec(&client_ns, &["ss", "-Htln", "sport", "= :9581"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    eprintln!("listening: {}", out.trim());
    assert_alive(&fl.client, "the client");
}

// ------------------------------------------------------------------------------------------
// 6

/// A notification socket like systemd's, read by a thread that timestamps every message.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    fn bind() -> Self {
        let path = std::env::temp_dir().join(format!(
            "fo-notify-{}-{}.sock",
            std::process::id(),
            ACCOUNT_SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let reader = {
            let (messages, stop, paused) = (messages.clone(), stop.clone(), paused.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if paused.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        messages.lock().unwrap().push((now(), text));
                    }
                }
            })
        };
        Self {
            path,
            messages,
            stop,
            paused,
            reader: Some(reader),
        }
    }

    /// Stops reading (the socket's queue fills up, as when systemd falls behind), or resumes.
    fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    fn since(&self, t: Instant) -> Vec<(Instant, String)> {
        self.all().into_iter().filter(|(at, _)| *at >= t).collect()
    }

    fn watchdogs_since(&self, t: Instant) -> Vec<Instant> {
        self.since(t)
            .into_iter()
            .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(at, _)| at)
            .collect()
    }

    fn wait_for(&self, since: Instant, what: &str, timeout: Duration) -> String {
        let mut found = None;
        wait_until(timeout, what, || {
            found = self
                .since(since)
                .into_iter()
                .map(|(_, m)| m)
                .find(|m| m.contains(what));
            found.is_some()
        })
        .unwrap_or_else(|e| panic!("{e}; received: {:?}", self.all()));
        found.unwrap()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn max_gap(times: &[Instant]) -> Duration {
    times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?')
}

#[test]
fn systemd_notifications_and_the_watchdog() {
    let notify = NotifySocket::bind();
    let start = now();
    let fl = FailoverLab::with_options(
        "ops-notify",
        &LabOptions {
            datacenters: 2,
            client_prefix: vec![
                "env".into(),
                format!("NOTIFY_SOCKET={}", notify.path.display()),
                "WATCHDOG_USEC=400000".into(),
            ],
            ..LabOptions::default()
        },
    )
    .unwrap();
    let pid = fl.client.daemon.pid();

    let ready = notify.wait_for(start, "READY=1", Duration::from_secs(2));
    eprintln!("first notification: {ready:?}");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=active dc1")),
        "{ready:?}"
    );
    assert!(
        ready.lines().any(|l| l == format!("MAINPID={pid}")),
        "{ready:?}"
    );
    let first = notify.all();
    assert!(
        first[0].1.contains("READY=1"),
        "READY=1 comes first: {first:?}"
    );

    // the watchdog: every 200 ms (half of WATCHDOG_USEC)
    let t = now();
    std::thread::sleep(Duration::from_millis(1500));
    let kicks = notify.watchdogs_since(t);
    eprintln!(
        "WATCHDOG=1 {} times in 1.5 s, longest gap {:.0} ms",
        kicks.len(),
        max_gap(&kicks).as_secs_f64() * 1e3
    );
    assert!(kicks.len() >= 4, "{kicks:?}");

    // a switch changes the status line
    let t = now();
    blackhole(&fl.lab, fl.dc(1).unwrap(), Direction::Both).unwrap();
    fl.wait_active("dc2", Duration::from_secs(5)).unwrap();
    let status = notify.wait_for(t, "STATUS=active dc2", Duration::from_secs(2));
    eprintln!(
        "after the blackhole: {status:?} ({:.0} ms after the fault)",
        t.elapsed().as_secs_f64() * 1e3
    );

    // SIGSTOP: a stopped loop sends no watchdog
    fl.client.daemon.signal(libc::SIGSTOP).unwrap();
    wait_until(Duration::from_secs(2), "the client stopped", || {
        process_state(pid) == 'T'
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(50)); // what it sent before stopping is read
    let stopped = now();
    let last_kick = notify.watchdogs_since(start).last().copied().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let while_stopped = notify.watchdogs_since(stopped);
    eprintln!(
        "stopped for {:.0} ms: {} WATCHDOG=1 (the last came {:.0} ms before the stop was seen)",
        stopped.elapsed().as_secs_f64() * 1e3,
        while_stopped.len(),
        stopped.saturating_duration_since(last_kick).as_secs_f64() * 1e3
    );
    assert!(while_stopped.is_empty(), "{while_stopped:?}");

    // SIGCONT: it resumes
    let t = now();
    fl.client.daemon.signal(libc::SIGCONT).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let resumed = notify.watchdogs_since(t);
    eprintln!(
        "after SIGCONT: {} WATCHDOG=1 in 1 s, the first {:.0} ms after it",
        resumed.len(),
        resumed
            .first()
            .map_or(f64::NAN, |f| f.duration_since(t).as_secs_f64() * 1e3)
    );
    assert!(resumed.len() >= 3, "{resumed:?}");
    assert!(fl.client.status().is_ok());

    // SIGTERM: STOPPING=1, then a clean exit
    let t = now();
    fl.client.daemon.signal(libc::SIGTERM).unwrap();
    let stopping = notify.wait_for(t, "STOPPING=1", Duration::from_secs(3));
    let exit = fl.client.daemon.wait_exit(Duration::from_secs(5));
    eprintln!(
        "SIGTERM: {stopping:?} after {:.0} ms; exit {exit:?}",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    let env = std::fs::read(format!("/proc/{pid}/environ"));
    assert!(env.is_err(), "the process is gone");
}

/// notify.rs promises "a notification is never a reason to stop forwarding". A datagram to a
/// unix socket whose queue is full (`net.unix.max_dgram_qlen`, 10 by default) blocks a
/// blocking sender; systemd's notification socket fills up when PID 1 is busy.
#[test]
fn a_notification_socket_nobody_reads_never_stalls_the_daemon() {
    let notify = NotifySocket::bind();
    let fl = FailoverLab::with_options(
        "ops-notify-full",
        &LabOptions {
            datacenters: 2,
            client_prefix: vec![
                "env".into(),
                format!("NOTIFY_SOCKET={}", notify.path.display()),
                "WATCHDOG_USEC=400000".into(),
            ],
            ..LabOptions::default()
        },
    )
    .unwrap();
    let bytes = 200_000_000;
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "stream", bytes, 61).unwrap();
    fl.wait_flowing(5_000_000).unwrap();
    notify.pause(true);
    let t = now();
    let (mut slow, mut failed, mut slowest, mut asked) = (0, 0, Duration::ZERO, 0);
    while t.elapsed() < Duration::from_secs(5) {
        let q = now();
        let answer = fl.client.status();
        let took = q.elapsed();
        asked += 1;
        slowest = slowest.max(took);
        if answer.is_err() {
            failed += 1;
        } else if took > Duration::from_secs(1) {
            slow += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let unread = notify.all().len();
    notify.pause(false);
    let report = stream.finish().unwrap();
    let stall = check_stream(
        "stream while nobody reads the notifications",
        &report,
        bytes,
    );
    eprintln!(
        "notifications unread for 5 s: {asked} status requests, {failed} failed, {slow} slower \
         than 1 s, slowest {:.0} ms; stream's longest stall {stall:.0} ms ({unread} messages \
         read before the pause)",
        slowest.as_secs_f64() * 1e3
    );
    assert_eq!(
        (failed, slow),
        (0, 0),
        "the daemon stalled on its notification socket"
    );
    assert!(stall < 1000.0, "longest stall {stall:.0} ms");
    assert_alive(&fl.client, "the client");
}

// ------------------------------------------------------------------------------------------
// 7

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// The forms a private key could leak in: base64 (without its padding), hex, raw bytes.
fn key_needles(file: &Path) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(file).unwrap();
    let b64 = text.trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(raw.len(), 32);
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
    vec![
        (
            "base64".into(),
            b64.trim_end_matches('=').as_bytes().to_vec(),
        ),
        ("base64url".into(), url.into_bytes()),
        ("hex".into(), hex(&raw, false).into_bytes()),
        ("HEX".into(), hex(&raw, true).into_bytes()),
        ("raw".into(), raw),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What a helper that is root but lacks CAP_SYS_PTRACE (bounding and inheritable sets cut by
/// `setpriv`) may do to process `pid`: open its memory, read its executable link, read the
/// link of its fd 0. Ok, or the error each gave.
fn ptrace_access_without_the_cap(pid: u32) -> Vec<(&'static str, Result<(), String>)> {
    let mem = format!("if=/proc/{pid}/mem");
    let exe = format!("/proc/{pid}/exe");
    let fd = format!("/proc/{pid}/fd/0");
    let checks: [(&'static str, Vec<&str>); 3] = [
        // opens and reads nothing: only the open's access check counts
        (
            "open mem",
            vec!["dd", &mem, "of=/dev/null", "bs=1", "count=0", "status=none"],
        ),
        ("readlink exe", vec!["readlink", "-v", &exe]),
        ("readlink fd/0", vec!["readlink", "-v", &fd]),
    ];
    checks
        .into_iter()
        .map(|(what, args)| {
            let out = Command::new("setpriv")
                .args(["--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"])
                .args(&args)
                .output()
                .unwrap();
            let r = if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
            };
            (what, r)
        })
        .collect()
}

fn cap_prm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("CapPrm:")).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn the_private_key_is_never_exposed() {
    // The daemons run as root with CAP_SYS_PTRACE cut from their bounding set (which they
    // never need), so the non-dumpable check below can compare like with like.
    let prefix: Vec<String> = [
        "env",
        "RUST_LOG=trace",
        "setpriv",
        "--bounding-set=-sys_ptrace",
        "--inh-caps=-sys_ptrace",
    ]
    .map(str::to_owned)
    .to_vec();
    let fl = FailoverLab::with_options(
        "ops-secret",
        &LabOptions {
            datacenters: 2,
            client_prefix: prefix.clone(),
            gateway: GatewayOptions {
                prefix,
                ..GatewayOptions::default()
            },
            ..LabOptions::default()
        },
    )
    .unwrap();
    let bytes = 40_000_000;
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "stream", bytes, 71).unwrap();
    fl.wait_flowing(5_000_000).unwrap();
    let a = fl.client.ask(&cmd_dc("switch", "dc2")).unwrap();
    assert!(is_ok(&a), "{a}");
    fl.wait_flowing(5_000_000).unwrap();
    blackhole(&fl.lab, fl.dc(2).unwrap(), Direction::Both).unwrap();
    fl.wait_active("dc1", Duration::from_secs(5)).unwrap();
    let report = stream.finish().unwrap();
    check_stream(
        "stream with a manual switch and a blackhole",
        &report,
        bytes,
    );

    let mut keys = vec![("client".to_owned(), fl.lab.dir().join("client.key"))];
    for i in 1..=2 {
        keys.push((format!("dc{i}"), fl.lab.dir().join(format!("dc{i}.key"))));
    }
    let needles: Vec<(String, String, Vec<u8>)> = keys
        .iter()
        .flat_map(|(who, file)| {
            key_needles(file)
                .into_iter()
                .map(move |(form, n)| (who.clone(), form, n))
        })
        .collect();

    // Everything an operator or another process could see.
    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(fl.lab.dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".stdout") || name.ends_with(".stderr") {
            haystacks.push((name, std::fs::read(&path).unwrap()));
        }
    }
    let log_bytes: usize = haystacks.iter().map(|(_, h)| h.len()).sum();
    let traces = haystacks
        .iter()
        .filter(|(n, _)| n.ends_with(".stderr"))
        .map(|(_, h)| String::from_utf8_lossy(h).matches("TRACE").count())
        .sum::<usize>();
    for c in ["status", "tunnels", "events", "flows", "metrics"] {
        let a = fl.client.ask(&cmd(c)).unwrap();
        assert!(is_ok(&a), "{c}: {a}");
        haystacks.push((format!("client {c}"), a.to_string().into_bytes()));
    }
    for (i, g) in fl.gateways.iter().enumerate() {
        for c in ["status", "clients", "metrics"] {
            let a = g.ask(&cmd(c)).unwrap();
            assert!(is_ok(&a), "dc{} {c}: {a}", i + 1);
            haystacks.push((format!("dc{} {c}", i + 1), a.to_string().into_bytes()));
        }
    }
    let daemons: Vec<(&str, u32)> = std::iter::once(("client", fl.client.daemon.pid()))
        .chain([
            ("dc1", fl.gateways[0].daemon.pid()),
            ("dc2", fl.gateways[1].daemon.pid()),
        ])
        .collect();
    for (who, pid) in &daemons {
        for f in ["cmdline", "environ"] {
            let data = std::fs::read(format!("/proc/{pid}/{f}")).unwrap();
            assert!(!data.is_empty(), "{who} {f}");
            haystacks.push((format!("{who} /proc/{pid}/{f}"), data));
        }
    }
    let mut found = Vec::new();
    for (place, hay) in &haystacks {
        for (who, form, needle) in &needles {
            if contains(hay, needle) {
                found.push(format!("{who}'s key ({form}) in {place}"));
            }
        }
    }
    eprintln!(
        "searched {} places ({log_bytes} bytes of logs, {traces} TRACE lines) for {} forms of {} \
         private keys: {} matches",
        haystacks.len(),
        needles.len() / keys.len(),
        keys.len(),
        found.len()
    );
    assert!(traces > 0, "RUST_LOG=trace took effect");
    assert!(found.is_empty(), "{found:?}");

    // Non-dumpable. The flag cannot be read from outside, and for a process running as root
    // its /proc files are root's either way, so it is checked by its effect: ptrace access
    // by a process with the same uid, gid and capabilities but without CAP_SYS_PTRACE. The
    // kernel grants that to a dumpable process (same credentials, its capabilities a subset of
    // the caller's) and refuses it to a non-dumpable one (__ptrace_may_access:
    // `get_dumpable(mm) != SUID_DUMP_USER && !ptrace_has_cap(...)` → EPERM). Checked with
    // what needs that access: opening /proc/<pid>/mem, reading the /proc/<pid>/exe and fd
    // links. (On this kernel /proc/<pid>/environ and auxv stay readable to such a caller even
    // for a non-dumpable process, so they prove nothing.) The control, a `sleep` started the
    // same way, shows the helper is granted all three on a dumpable process; no Yama LSM is
    // needed or assumed (with Yama's ptrace_scope 1 the mem open of the control would fail:
    // the check says so instead of passing).
    let control = fl
        .lab
        .spawn(
            &fl.topo.client,
            "dumpable-control",
            &[
                "setpriv",
                "--bounding-set=-sys_ptrace",
                "--inh-caps=-sys_ptrace",
                "sleep",
                "60",
            ],
        )
        .unwrap();
    wait_until(Duration::from_secs(2), "the control to exec sleep", || {
        std::fs::read(format!("/proc/{}/cmdline", control.pid()))
            .is_ok_and(|c| c.starts_with(b"sleep"))
    })
    .unwrap();
    let helper_caps = cap_prm(control.pid());
    let granted = ptrace_access_without_the_cap(control.pid());
    eprintln!("control (dumpable, CapPrm {helper_caps:016x}) without CAP_SYS_PTRACE: {granted:?}");
    assert!(
        granted.iter().all(|(_, r)| r.is_ok()),
        "the check is meaningless here: {granted:?}"
    );
    for (who, pid) in &daemons {
        let caps = cap_prm(*pid);
        assert_eq!(caps & !helper_caps, 0, "{who}: CapPrm {caps:016x}");
        assert_eq!(caps & (1 << 19), 0, "{who} has CAP_SYS_PTRACE");
        let refused = ptrace_access_without_the_cap(*pid);
        eprintln!("{who} (pid {pid}, CapPrm {caps:016x}) without CAP_SYS_PTRACE: {refused:?}");
        for (what, r) in &refused {
            let err = r
                .as_ref()
                .expect_err("a non-dumpable process refuses ptrace access");
            assert!(err.contains("Permission denied"), "{who} {what}: {err}");
        }
    }
    control.kill().unwrap();
    assert_alive(&fl.client, "the client");
}

// ------------------------------------------------------------------------------------------
// 8

fn proc_status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn dropping_to_a_user_keeps_only_cap_net_admin() {
    let mut accounts = Accounts::default();
    let (user, uid, gid) = accounts.user("d", None, &[]);
    let fl = FailoverLab::with_options(
        "ops-user",
        &LabOptions {
            datacenters: 2,
            client_config: format!("user = \"{user}\"\n"),
            client_key_owner: Some((uid, gid)),
            ..LabOptions::default()
        },
    )
    .unwrap_or_else(|e| {
        panic!("the client with user = \"{user}\" and its key owned by {user} did not start: {e}")
    });
    let pid = fl.client.daemon.pid();
    let st = proc_status(pid);
    for k in [
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    ] {
        eprintln!("{k}: {}", st.get(k).map_or("-", String::as_str));
    }
    let ids = |k: &str| -> Vec<u32> {
        st[k]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert_eq!(ids("Uid"), [uid; 4], "real, effective, saved, fs uid");
    assert_eq!(ids("Gid"), [gid; 4], "real, effective, saved, fs gid");
    assert_eq!(st["Groups"], "");
    assert_eq!(st["CapEff"], "0000000000001000", "CAP_NET_ADMIN only");
    assert_eq!(st["CapPrm"], "0000000000001000");
    assert_eq!(st["CapBnd"], "0000000000001000");
    assert_eq!(st["CapInh"], "0000000000000000");
    assert_eq!(st["CapAmb"], "0000000000000000");
    assert_eq!(st["NoNewPrivs"], "1");
    // Non-dumpable: the kernel gives a non-dumpable process's /proc/<pid> files to root
    // (task_dump_owner); a dumpable process running as `user` would own them.
    for f in ["environ", "mem", "status"] {
        let meta = std::fs::metadata(format!("/proc/{pid}/{f}")).unwrap();
        eprintln!("/proc/{pid}/{f}: owner {}:{}", meta.uid(), meta.gid());
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{f}: the process is dumpable"
        );
    }

    // still forwarding, still switching, still steerable by root
    let bytes = 60_000_000;
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "stream", bytes, 81).unwrap();
    fl.wait_flowing(5_000_000).unwrap();
    let t = now();
    blackhole(&fl.lab, fl.dc(1).unwrap(), Direction::Both).unwrap();
    fl.wait_active("dc2", Duration::from_secs(5)).unwrap();
    let detect = t.elapsed();
    let report = stream.finish().unwrap();
    let stall = check_stream(
        "stream as an unprivileged user across a blackhole",
        &report,
        bytes,
    );
    eprintln!(
        "switch to dc2 {:.0} ms after the blackhole, longest stall {stall:.0} ms",
        detect.as_secs_f64() * 1e3
    );
    let a = fl.client.ask(&cmd_dc("drain", "dc1")).unwrap();
    assert!(is_ok(&a), "root steers an unprivileged daemon: {a}");
    assert_alive(&fl.client, "the client");
    assert_eq!(proc_status(pid)["CapEff"], "0000000000001000");
    drop(fl);
    drop(accounts);
}

// ------------------------------------------------------------------------------------------
// 9

#[test]
fn systemd_units_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "systemd-analyze is missing: it is part of Debian's `systemd` package \
                 (apt-get install --no-install-recommends systemd)"
            )
        });
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd");
    let failoverd = bin_path("failoverd");
    let dir = std::env::temp_dir().join(format!(
        "fo-units-{}-{}",
        std::process::id(),
        ACCOUNT_SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveDir(dir.clone());
    for unit in ["failoverd.service", "failoverd-gateway.service"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        let mut replaced = 0;
        let text: String = text
            .lines()
            .map(
                |l| match l.strip_prefix("ExecStart=/usr/local/bin/failoverd") {
                    Some(rest) => {
                        replaced += 1;
                        format!("ExecStart={}{rest}\n", failoverd.display())
                    }
                    None => format!("{l}\n"),
                },
            )
            .collect();
        assert_eq!(
            replaced, 1,
            "{unit}: one ExecStart=/usr/local/bin/failoverd"
        );
        let path = dir.join(unit);
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let about: Vec<&str> = output
            .lines()
            .filter(|l| l.contains(unit) || l.contains(&dir.display().to_string()))
            .collect();
        eprintln!(
            "systemd-analyze verify {unit}: {} ({} lines of output, {} about the unit)",
            out.status,
            output.lines().count(),
            about.len()
        );
        assert!(out.status.success(), "{unit}: {output}");
        assert!(about.is_empty(), "{unit}: {about:?}");
    }
}

#[test]
fn the_gateway_reloads_its_clients_without_touching_the_others() {
    let fl = FailoverLab::new("ops-gwreload", 1, "").unwrap();
    let gw = &fl.gateways[0];
    let original = std::fs::read_to_string(&gw.config).unwrap();
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "stream", 200_000_000, 43).unwrap();
    fl.wait_flowing(5_000_000).unwrap();
    let handshakes_of = |s: &Value| dc_entry(s, "clients", "laptop")["handshakes"].as_u64();
    let before = handshakes_of(&gw.status().unwrap());

    // a second client appears
    let other = keypair(&fl.lab, "other").unwrap();
    let with_other = format!(
        "{original}\n[[client]]\nname = \"other\"\npublic_key = \"{}\"\nallowed_ips = [\"100.96.0.9/32\"]\n",
        other.public
    );
    std::fs::write(&gw.config, &with_other).unwrap();
    let a = gw.ask(&cmd("reload")).unwrap();
    eprintln!("gateway reload adding a client: {a}");
    assert!(is_ok(&a), "{a}");
    assert_eq!(a["added"], json!(["other"]));
    assert_eq!(a["unchanged"], json!(["laptop"]));
    let s = gw.status().unwrap();
    assert_eq!(names(&s, "clients"), ["laptop", "other"]);
    assert_eq!(dc_entry(&s, "clients", "laptop")["claimed"], true, "{s}");
    assert_eq!(handshakes_of(&s), before, "the kept client handshook again");

    // a broken file is refused and changes nothing
    std::fs::write(&gw.config, with_other.replace(&other.public, "not!base64")).unwrap();
    let a = gw.ask(&cmd("reload")).unwrap();
    eprintln!("gateway reload of a bad key: {a}");
    assert!(
        !is_ok(&a)
            && a["error"]
                .as_str()
                .unwrap()
                .contains("client[1].public_key"),
        "{a}"
    );
    assert_eq!(names(&gw.status().unwrap(), "clients"), ["laptop", "other"]);

    // SIGHUP with the second client gone
    std::fs::write(&gw.config, &original).unwrap();
    gw.daemon.signal(libc::SIGHUP).unwrap();
    wait_until(Duration::from_secs(5), "the other client gone", || {
        gw.status()
            .is_ok_and(|s| names(&s, "clients") == ["laptop"])
    })
    .unwrap();
    let report = stream.finish().unwrap();
    eprintln!("stream across the gateway's reloads: {}", describe(&report));
    assert!(report.ok, "{}", describe(&report));
    assert_eq!(handshakes_of(&gw.status().unwrap()), before);
    assert_eq!(fl.switches().unwrap().len(), 0);
}

// ------------------------------------------------------------------------------------------
// failoverctl against the real daemons

/// Runs the real `failoverctl` against `running`'s control socket; its stdout, or a panic with
/// its stderr.
fn failoverctl(running: &Running, args: &[&str]) -> String {
    let out = Command::new(bin_path("failoverctl"))
        .arg("--socket")
        .arg(&running.control)
        .args(args)
        .env_remove("FAILOVERCTL_SOCKET")
        .output()
        .unwrap_or_else(|e| panic!("cannot run failoverctl: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stderr.is_empty(),
        "failoverctl {args:?}: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// `failoverctl ARGS --json`, read into `T`.
fn failoverctl_json<T: serde::de::DeserializeOwned>(running: &Running, args: &[&str]) -> T {
    let mut all = args.to_vec();
    all.push("--json");
    let text = failoverctl(running, &all);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("failoverctl {all:?} --json is not its type ({e}):\n{text}"))
}

/// The socket's own answer to `request`, read into its `control-proto` type.
fn typed_answer<T: serde::de::DeserializeOwned>(running: &Running, request: &Value) -> T {
    let answer = running.ask(request).unwrap();
    control_proto::decode(answer.clone())
        .unwrap_or_else(|e| panic!("{request} answered {answer}: {e}"))
}

/// The table row of datacenter (or client) `name`: its cells, the active marker dropped.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| {
            l.trim_start_matches('*')
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
}

/// Whether the datacenter table `table` shows what `datacenters` says: the active marker on
/// the active one only, each one's health (with its drained flag).
fn table_agrees(table: &str, datacenters: &[control_proto::Datacenter]) -> Result<(), String> {
    for d in datacenters {
        let line = table
            .lines()
            .find(|l| l.trim_start_matches('*').split_whitespace().next() == Some(&d.name))
            .ok_or_else(|| format!("no row for {}", d.name))?;
        if line.starts_with('*') != d.active {
            return Err(format!(
                "{}: active {} but the row is {line:?}",
                d.name, d.active
            ));
        }
        let mut health = d.health.label().to_owned();
        if d.drained {
            health.push_str(" (drained)");
        }
        if d.suppressed {
            health.push_str(" (suppressed)");
        }
        let cells = row(table, &d.name);
        if cells.get(1) != Some(&health.as_str()) {
            return Err(format!(
                "{}: health {health} but the row is {cells:?}",
                d.name
            ));
        }
    }
    Ok(())
}

/// The datacenter table and the JSON agree. A probe answered late makes a tunnel suspect for a
/// moment between the two calls, so a few tries are allowed: what is checked is that they can
/// agree, which they could not if a name or a unit differed.
fn tables_agree(
    what: &str,
    mut table_and_json: impl FnMut() -> (String, Vec<control_proto::Datacenter>),
) {
    let mut last = String::new();
    for _ in 0..10 {
        let (table, datacenters) = table_and_json();
        match table_agrees(&table, &datacenters) {
            Ok(()) => return,
            Err(e) => last = format!("{e}\n{table}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: the table never agreed with the JSON: {last}");
}

#[test]
fn failoverctl_speaks_the_protocol_with_the_real_daemons() {
    use control_proto::{
        Client, ClientList, Datacenter, EventList, Flow, FlowList, Health, Metrics, Reload, Status,
        Steered, SwitchEvent, TunnelList,
    };
    let fl = FailoverLab::new("ops-ctl", 2, "").unwrap();
    let c = &fl.client;
    wait_until(Duration::from_secs(10), "an RTT for every tunnel", || {
        typed_answer::<TunnelList>(c, &cmd("tunnels"))
            .tunnels
            .iter()
            .all(|d| d.rtt_ms.is_some() && d.health == Health::Up)
    })
    .unwrap();
    // a flow for `flows`
    fl.lab
        .exec(
            &fl.topo.client,
            &["ping", "-c", "2", "-i", "0.2", "198.19.0.100"],
        )
        .unwrap();

    // status: the header's active datacenter and the table, against the typed answer
    let status: Status = failoverctl_json(c, &["status"]);
    let Status::Client(client) = &status else {
        panic!("a client's status: {status:?}")
    };
    assert_eq!(client.active, "dc1");
    assert_eq!(client.datacenters.len(), 2);
    assert_eq!(typed_answer::<Status>(c, &cmd("status")).mode(), "client");
    let text = failoverctl(c, &["status"]);
    eprintln!("failoverctl status:\n{text}");
    assert!(
        text.starts_with("mode:            client\nactive:          dc1\n"),
        "{text}"
    );
    assert!(text.contains("stable address:  100.96.0.2"), "{text}");
    tables_agree("status", || {
        let status: Status = failoverctl_json(c, &["status"]);
        let datacenters = status
            .client()
            .map(|s| s.datacenters.clone())
            .unwrap_or_default();
        (failoverctl(c, &["status"]), datacenters)
    });

    // tunnels: the same items, the same table
    let tunnels: Vec<Datacenter> = failoverctl_json(c, &["tunnels"]);
    assert_eq!(
        tunnels.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["dc1", "dc2"]
    );
    assert!(tunnels
        .iter()
        .all(|d| d.rtt_ms.is_some_and(|r| r > 0.0 && r < 1000.0)));
    assert!(tunnels.iter().all(|d| d.last_handshake_ms_ago.is_some()));
    typed_answer::<TunnelList>(c, &cmd("tunnels"));
    let text = failoverctl(c, &["tunnels"]);
    eprintln!("failoverctl tunnels:\n{text}");
    assert!(text.starts_with("   NAME  HEALTH"), "{text}");
    tables_agree("tunnels", || {
        (
            failoverctl(c, &["tunnels"]),
            failoverctl_json(c, &["tunnels"]),
        )
    });
    // --where and --fields name the protocol's fields
    let up: Vec<Value> = failoverctl_json(
        c,
        &[
            "tunnels",
            "--where",
            "health == \"up\" && active",
            "--fields",
            "name,health",
        ],
    );
    assert_eq!(up, [json!({"name": "dc1", "health": "up"})]);

    // flows: the ping's
    let flows: Vec<Flow> = failoverctl_json(c, &["flows"]);
    let ping = flows
        .iter()
        .find(|f| f.protocol == "icmp" && f.remote.to_string() == "198.19.0.100")
        .unwrap_or_else(|| panic!("no ping flow: {flows:?}"));
    assert_eq!(ping.tunnel, "dc1");
    assert!(ping.packets_out >= 2 && ping.age_ms >= 200, "{ping:?}");
    let answer: FlowList = typed_answer(c, &json!({"v": 1, "cmd": "flows", "limit": 10}));
    assert!(answer.total >= 1);
    let text = failoverctl(c, &["flows"]);
    eprintln!("failoverctl flows:\n{text}");
    assert!(text.starts_with("PROTO  LOCAL  REMOTE"), "{text}");
    let shown = row(&text, "icmp");
    assert!(
        shown.contains(&"198.19.0.100") && shown.contains(&"dc1"),
        "{shown:?}"
    );

    // events: none yet
    assert!(failoverctl_json::<Vec<SwitchEvent>>(c, &["events"]).is_empty());
    assert_eq!(failoverctl(c, &["events"]), "no events\n");

    // switch, drain, undrain: each answer typed, the text and the JSON agree
    assert_eq!(failoverctl(c, &["switch", "dc2"]), "active: dc2\n");
    let steered: Steered = failoverctl_json(c, &["switch", "dc2"]);
    assert_eq!(steered.active, "dc2");
    assert_eq!(
        typed_answer::<Steered>(c, &cmd_dc("switch", "dc2")).active,
        "dc2"
    );
    let text = failoverctl(c, &["status"]);
    assert!(text.contains("\nactive:          dc2\n"), "{text}");
    let events: Vec<SwitchEvent> = failoverctl_json(c, &["events"]);
    let last = events.last().unwrap_or_else(|| panic!("no switch event"));
    assert_eq!(
        (last.from.as_str(), last.to.as_str()),
        ("dc1", "dc2"),
        "{events:?}"
    );
    assert_eq!(last.reason, "manual");
    assert!(
        last.detection_ms.is_none(),
        "a manual switch detects nothing: {last:?}"
    );
    let text = failoverctl(c, &["events"]);
    eprintln!("failoverctl events:\n{text}");
    assert!(text.starts_with("TIME"), "{text}");
    let line = text.lines().last().unwrap_or_default();
    assert!(
        line.contains(" dc1 ") && line.contains(" dc2 ") && line.contains(" manual "),
        "{line}"
    );
    typed_answer::<EventList>(c, &cmd("events"));

    assert_eq!(
        failoverctl(c, &["drain", "dc2"]),
        "drained dc2; active: dc1\n"
    );
    let tunnels: Vec<Datacenter> = failoverctl_json(c, &["tunnels"]);
    assert!(tunnels
        .iter()
        .any(|d| d.name == "dc2" && d.drained && !d.active));
    let text = failoverctl(c, &["tunnels"]);
    assert!(
        row(&text, "dc2")
            .get(1)
            .is_some_and(|h| h.ends_with("(drained)")),
        "{text}"
    );
    let undrained: Steered = failoverctl_json(c, &["undrain", "dc2"]);
    assert_eq!(undrained.active, "dc1");
    assert_eq!(
        failoverctl(c, &["drain", "dc2"]),
        "drained dc2; active: dc1\n"
    );
    assert_eq!(
        failoverctl(c, &["undrain", "dc2"]),
        "undrained dc2; active: dc1\n"
    );

    // reload of the unchanged file: nothing added, removed or changed
    let text = failoverctl(c, &["reload"]);
    assert_eq!(
        text,
        "added:      -\nremoved:    -\nchanged:    -\nunchanged:  dc1, dc2\n"
    );
    let reload: Reload = failoverctl_json(c, &["reload"]);
    assert_eq!(reload.unchanged, ["dc1", "dc2"]);
    assert!(reload.added.is_empty() && reload.removed.is_empty() && reload.changed.is_empty());
    typed_answer::<Reload>(c, &cmd("reload"));

    // metrics: the exposition, as text and as {"text": ...}
    let text = failoverctl(c, &["metrics"]);
    assert!(
        text.contains("failoverd_tunnel_active{datacenter=\"dc1\"} 1"),
        "{text}"
    );
    let metrics: Metrics = failoverctl_json(c, &["metrics"]);
    assert!(metrics
        .text
        .contains("# TYPE failoverd_switches_total counter"));
    typed_answer::<Metrics>(c, &cmd("metrics"));

    // the gateway: status and clients
    let gw = &fl.gateways[0];
    wait_claimed(gw).unwrap();
    let status: Status = failoverctl_json(gw, &["status"]);
    let Status::Gateway(gateway) = &status else {
        panic!("a gateway's status: {status:?}")
    };
    assert_eq!(gateway.clients.len(), 1);
    assert!(gateway.probes_answered > 0);
    let text = failoverctl(gw, &["status"]);
    eprintln!("failoverctl status (gateway):\n{text}");
    assert!(text.starts_with("mode:             gateway\n"), "{text}");
    assert!(
        text.contains(&format!("public key:       {}\n", gateway.public_key)),
        "{text}"
    );
    let clients: Vec<Client> = failoverctl_json(gw, &["clients"]);
    let laptop = clients
        .iter()
        .find(|cl| cl.name == "laptop")
        .unwrap_or_else(|| panic!("no laptop: {clients:?}"));
    assert!(laptop.claimed && laptop.established, "{laptop:?}");
    assert!(
        laptop.last_probe_ms_ago.is_some_and(|ms| ms < 5_000),
        "{laptop:?}"
    );
    assert_eq!(
        typed_answer::<ClientList>(gw, &cmd("clients"))
            .clients
            .len(),
        1
    );
    let text = failoverctl(gw, &["clients"]);
    eprintln!("failoverctl clients:\n{text}");
    let cells = row(&text, "laptop");
    assert_eq!(
        cells.get(2..4),
        Some(&["up", "yes"][..]),
        "{cells:?}\n{text}"
    );
    // a client's command refused by the gateway: exit 1, the daemon's reason
    let out = Command::new(bin_path("failoverctl"))
        .arg("--socket")
        .arg(&gw.control)
        .arg("tunnels")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("this is a gateway"),
        "{out:?}"
    );
    assert_alive(c, "the client");
    assert_alive(gw, "the gateway");
}
