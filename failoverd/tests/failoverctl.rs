//! `failoverctl` end to end: the real binary against a fake daemon on a unix socket (canned
//! answers per command), and `import-wg` whose output `failoverd check` must accept. Runs
//! without root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_proto::{
    Answer, Client, ClientList, ClientStatus, Counts, Datacenter, EventList, FailMode, Flow,
    FlowList, GatewayStatus, Health, KeeperStatus, LocalDrops, Metrics, ProbesRefused,
    RoamingStatus, Status, Steered, SwitchEvent, TunnelList,
};
use serde_json::{json, Value};

mod common;
use common::Dir;

fn scratch(name: &str) -> Dir {
    common::scratch("failoverctl", name)
}

/// How the fake daemon treats a request line.
type Behaviour = Box<dyn Fn(&str) -> Option<String> + Send>;

/// A fake daemon: a listener thread answering each connection's line with `behaviour`.
struct Daemon {
    _dir: Dir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
}

fn daemon(name: &str, behaviour: Behaviour) -> Daemon {
    let dir = scratch(name);
    let socket = dir.0.join("failover0.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            if let Ok(v) = serde_json::from_str(&line) {
                seen.lock().unwrap().push(v);
            }
            match behaviour(&line) {
                Some(answer) => {
                    let _ = stream.write_all(answer.as_bytes());
                }
                // a stuck daemon: hold the connection open past the client's timeout
                None => std::thread::sleep(Duration::from_secs(5)),
            }
        }
    });
    Daemon {
        _dir: dir,
        socket,
        requests,
    }
}

fn datacenter(name: &str, active: bool, health: Health) -> Datacenter {
    Datacenter {
        name: name.into(),
        endpoint: Some(format!("198.18.0.1{}:51820", &name[2..]).parse().unwrap()),
        active,
        drained: false,
        suppressed: false,
        established: true,
        health,
        rtt_ms: None,
        loss: None,
        last_handshake_ms_ago: None,
        tx_bytes: 0,
        rx_bytes: 0,
        handshakes: 1,
        probes_sent: 10,
        probe_replies: 10,
        probe_replies_refused: 0,
        flaps: 0,
        drops: Counts::new(),
    }
}

/// The typed answer as the daemon writes it.
fn line(answer: Answer) -> String {
    answer.to_line()
}

fn client_status() -> Status {
    let mut dc1 = datacenter("dc1", true, Health::Up);
    (dc1.rtt_ms, dc1.loss, dc1.last_handshake_ms_ago) = (Some(1.2), Some(0.0), Some(12_000));
    (dc1.tx_bytes, dc1.rx_bytes) = (2048, 4096);
    let mut dc2 = datacenter("dc2", false, Health::Suspect);
    (dc2.rtt_ms, dc2.loss, dc2.last_handshake_ms_ago) = (Some(80.5), Some(0.1), Some(100_000));
    dc2.probe_replies = 9;
    Status::Client(ClientStatus {
        active: "dc1".into(),
        stable_address: vec!["100.96.0.2".parse().unwrap()],
        datacenters: vec![dc1, dc2],
        fail_mode: FailMode::Closed,
        local_drops: LocalDrops {
            source_not_local: 0,
            malformed: Counts::new(),
        },
        inbound_not_for_us: 0,
        sessionkeeper: KeeperStatus {
            flows: 3,
            flow_table_size: 65536,
            flow_memory_bytes: 0,
            flows_created: 3,
            flows_expired: 0,
            flows_evicted_probation: 0,
            flows_evicted_protected: 0,
            mss_clamped: 0,
            quoted_rewritten: 0,
            udp6_zero_checksum: 0,
            recoveries: 0,
            recovery_segments: 0,
            recovery_acks: 0,
            recovery_over_budget: 0,
        },
        underlay_drops: Counts::new(),
        probe_replies_malformed: 0,
        switches: vec![SwitchEvent {
            unix_ms: 1_735_787_045_678,
            from: "dc2".into(),
            to: "dc1".into(),
            reason: "failback".into(),
            detection_ms: None,
            stall_ms: None,
        }],
        send_errors: 0,
        roaming: RoamingStatus {
            names: Vec::new(),
            resumes: 0,
            network_changes: 0,
        },
    })
}

fn tunnels() -> Vec<Datacenter> {
    let mut dc1 = datacenter("dc1", true, Health::Up);
    (dc1.rtt_ms, dc1.loss, dc1.last_handshake_ms_ago) = (Some(61.2), Some(0.0), Some(12_000));
    (dc1.tx_bytes, dc1.rx_bytes) = (1, 2);
    let mut dc2 = datacenter("dc2", false, Health::Down);
    (dc2.established, dc2.handshakes, dc2.probe_replies) = (false, 0, 0);
    let mut dc3 = datacenter("dc3", false, Health::Up);
    (dc3.rtt_ms, dc3.loss, dc3.last_handshake_ms_ago) = (Some(20.0), Some(0.0), Some(3_000));
    dc3.drained = true;
    vec![dc1, dc2, dc3]
}

/// A client daemon: typed answers, as failoverd writes them.
fn client_daemon(name: &str) -> Daemon {
    daemon(
        name,
        Box::new(|request| {
            let request: Value = serde_json::from_str(request).unwrap_or(Value::Null);
            let dc = request["datacenter"].as_str().unwrap_or("");
            let answer = match request["cmd"].as_str().unwrap_or("") {
                "status" => Answer::from(client_status()),
                "tunnels" => Answer::Tunnels(TunnelList { tunnels: tunnels() }),
                "flows" => Answer::Flows(FlowList {
                    total: 123,
                    flows: vec![Flow {
                        protocol: "tcp".into(),
                        remote: "198.19.0.100".parse().unwrap(),
                        remote_port: 5201,
                        local_port: 40000,
                        tunnel: "dc1".into(),
                        age_ms: 3500,
                        idle_ms: 10,
                        packets_out: 10,
                        packets_in: 12,
                        state: "established".into(),
                    }],
                }),
                "events" => Answer::Events(EventList {
                    events: vec![SwitchEvent {
                        unix_ms: 1_735_787_045_678,
                        from: "dc1".into(),
                        to: "dc2".into(),
                        reason: "probe_timeout".into(),
                        detection_ms: Some(82.0),
                        stall_ms: Some(95.0),
                    }],
                }),
                "switch" | "drain" | "undrain" if dc == "dc1" || dc == "dc2" => {
                    Answer::Steered(Steered {
                        active: "dc2".into(),
                    })
                }
                "switch" | "drain" | "undrain" => Answer::error(format!(
                    "no datacenter '{dc}'; configured: dc1, dc2, dc3"
                )),
                "reload" => Answer::error(
                    "/etc/failoverd/client.toml: datacenter[1].endpoint: '198.18.0.12' has no port\n  fix: write it as host:port",
                ),
                "metrics" => Answer::Metrics(Metrics {
                    text: "# TYPE failoverd_flows gauge\nfailoverd_flows 3\n".into(),
                }),
                _ => Answer::error(
                    "unknown command; known: status, tunnels, flows, events, switch, drain, undrain, reload",
                ),
            };
            Some(line(answer))
        }),
    )
}

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .args(args)
        .env_remove("FAILOVERCTL_SOCKET")
        .output()
        .unwrap()
}

fn ctl_at(d: &Daemon, args: &[&str]) -> Output {
    let mut all = vec!["--socket", d.socket.to_str().unwrap()];
    all.extend_from_slice(args);
    ctl(&all)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn fails(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout when failing");
    text(&out.stderr)
}

#[test]
fn status_for_people_and_programs() {
    let d = client_daemon("status");
    let out = ok(&ctl_at(&d, &["status"]));
    assert!(out.starts_with("mode:            client\nactive:          dc1\nstable address:  100.96.0.2\nlast switch:     dc2 -> dc1 (failback), 2025-01-02 03:04:05 UTC ("), "{out}");
    assert!(out.contains("flows:           3 (table 65536)\n"), "{out}");
    assert!(
        out.contains(
            "\n   NAME  HEALTH   ENDPOINT               RTT   LOSS  HANDSHAKE       RX       TX  PROBES\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "\n*  dc1   up       198.18.0.11:51820   1.2 ms   0.0%    12s ago  4.0 KiB  2.0 KiB   10/10\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "\n   dc2   suspect  198.18.0.12:51820  80.5 ms  10.0%  1m40s ago      0 B      0 B    9/10\n"
        ),
        "{out}"
    );
    let json: Value = serde_json::from_str(&ok(&ctl_at(&d, &["status", "--json"]))).unwrap();
    let mut expected = Answer::from(client_status()).to_value();
    expected.as_object_mut().unwrap().remove("v");
    expected.as_object_mut().unwrap().remove("ok");
    assert_eq!(json, expected);
    // what --json prints is the typed answer
    assert_eq!(
        serde_json::from_value::<Status>(json).unwrap(),
        client_status()
    );
    let json: Value = serde_json::from_str(&ok(&ctl_at(
        &d,
        &[
            "--json",
            "--where",
            "loss > 0",
            "--fields",
            "name,health",
            "status",
        ],
    )))
    .unwrap();
    assert_eq!(
        json["datacenters"],
        json!([{"name": "dc2", "health": "suspect"}])
    );
    assert_eq!(
        d.requests.lock().unwrap()[0],
        json!({"v": 1, "cmd": "status"})
    );
}

#[test]
fn tunnels_where_and_fields() {
    let d = client_daemon("tunnels");
    let out = ok(&ctl_at(&d, &["tunnels"]));
    assert_eq!(
        out,
        "   NAME  HEALTH        ENDPOINT               RTT  LOSS  HANDSHAKE   RX   TX  PROBES\n\
         *  dc1   up            198.18.0.11:51820  61.2 ms  0.0%    12s ago  2 B  1 B   10/10\n   \
            dc2   down          198.18.0.12:51820        -     -      never  0 B  0 B    0/10\n   \
            dc3   up (drained)  198.18.0.13:51820  20.0 ms  0.0%     3s ago  0 B  0 B   10/10\n"
    );
    let json: Value = serde_json::from_str(&ok(&ctl_at(&d, &["tunnels", "--json"]))).unwrap();
    assert_eq!(json, serde_json::to_value(tunnels()).unwrap());
    let filter = "rtt_ms > 50 && health == \"up\"";
    let out = ok(&ctl_at(
        &d,
        &["tunnels", "--where", filter, "--fields", "name,rtt_ms"],
    ));
    assert_eq!(out, "NAME      RTT\ndc1   61.2 ms\n");
    let out = ok(&ctl_at(
        &d,
        &[
            "tunnels",
            "--json",
            "--where",
            filter,
            "--fields",
            "name,rtt_ms",
        ],
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!([{"name": "dc1", "rtt_ms": 61.2}])
    );
    let out = ok(&ctl_at(
        &d,
        &[
            "tunnels",
            "--where=!drained && (health == \"down\" || rtt_ms < 30)",
            "--fields=name",
        ],
    ));
    assert_eq!(out, "NAME\ndc2\n");
    // a typo in a field is warned about, not silently empty
    let o = ctl_at(&d, &["tunnels", "--where", "rtt > 5"]);
    assert_eq!(ok(&o), "no tunnels match --where\n");
    assert!(text(&o.stderr).contains("warning: no item in \"tunnels\" has a field 'rtt'"));
}

#[test]
fn flows_events_switch_drain() {
    let d = client_daemon("flows");
    let out = ok(&ctl_at(&d, &["flows"]));
    assert!(
        out.starts_with("PROTO  LOCAL  REMOTE             TUNNEL  STATE"),
        "{out}"
    );
    assert!(
        out.ends_with("1 of 123 flows shown; --limit N shows more (up to 10000)\n"),
        "{out}"
    );
    ok(&ctl_at(&d, &["flows", "--limit", "5"]));
    let out = ok(&ctl_at(&d, &["events"]));
    assert_eq!(
        out,
        "TIME                     FROM  TO   REASON         DETECTION    STALL\n\
         2025-01-02 03:04:05 UTC  dc1   dc2  probe_timeout    82.0 ms  95.0 ms\n"
    );
    assert_eq!(ok(&ctl_at(&d, &["switch", "dc2"])), "active: dc2\n");
    assert_eq!(
        ok(&ctl_at(&d, &["drain", "dc1"])),
        "drained dc1; active: dc2\n"
    );
    assert_eq!(
        ok(&ctl_at(&d, &["undrain", "dc1"])),
        "undrained dc1; active: dc2\n"
    );
    let json: Value = serde_json::from_str(&ok(&ctl_at(&d, &["switch", "dc2", "--json"]))).unwrap();
    assert_eq!(json, json!({"active": "dc2"}));
    let requests = d.requests.lock().unwrap().clone();
    assert_eq!(requests[0], json!({"v": 1, "cmd": "flows", "limit": 1000}));
    assert_eq!(requests[1], json!({"v": 1, "cmd": "flows", "limit": 5}));
    assert_eq!(
        requests[3],
        json!({"v": 1, "cmd": "switch", "datacenter": "dc2"})
    );
    assert_eq!(
        requests[4],
        json!({"v": 1, "cmd": "drain", "datacenter": "dc1"})
    );
    assert_eq!(
        requests[5],
        json!({"v": 1, "cmd": "undrain", "datacenter": "dc1"})
    );
}

#[test]
fn refusals_exit_1_with_the_daemons_error() {
    let d = client_daemon("refused");
    let err = fails(&ctl_at(&d, &["switch", "dc9"]), 1);
    assert_eq!(
        err,
        "failoverctl: the daemon refused switch: no datacenter 'dc9'; configured: dc1, dc2, dc3\n"
    );
    let err = fails(&ctl_at(&d, &["reload"]), 1);
    assert!(
        err.contains(
            "datacenter[1].endpoint: '198.18.0.12' has no port\n  fix: write it as host:port"
        ),
        "{err}"
    );
    // a client daemon asked for a gateway's clients
    let err = fails(&ctl_at(&d, &["clients"]), 1);
    assert!(
        err.contains("the daemon refused clients: unknown command; known: status"),
        "{err}"
    );
    assert!(err.contains("an older failoverd?"), "{err}");
}

#[test]
fn gateway_clients() {
    let d = daemon(
        "gateway",
        Box::new(|line| {
            let client = Client {
                name: "laptop".into(),
                endpoint: Some("203.0.113.5:40000".parse().unwrap()),
                established: true,
                claimed: false,
                claim_generation: None,
                last_probe_ms_ago: Some(2500),
                tx_bytes: 10,
                rx_bytes: 20,
                handshakes: 3,
                allowed_ips: vec!["100.96.0.2/32".into()],
                drops: Counts::new(),
            };
            Some(if line.contains("\"clients\"") {
                Answer::Clients(ClientList {
                    clients: vec![client],
                })
                .to_line()
            } else {
                Answer::from(Status::Gateway(GatewayStatus {
                    public_key: "PUB=".into(),
                    clients: vec![client],
                    port_drops: Counts::new(),
                    tun_drops: Counts::new(),
                    probes_answered: 1,
                    probes_refused: ProbesRefused {
                        malformed: 0,
                        not_request: 0,
                    },
                    probes_stale: 0,
                    claims: 0,
                    releases: 0,
                    claim_errors: 0,
                    datagrams_received: 4,
                    send_errors: 0,
                    claim_backends: vec!["neighbour".into()],
                    stale_claims_removed: 0,
                    routing_daemon: None,
                }))
                .to_line()
            })
        }),
    );
    let out = ok(&ctl_at(&d, &["clients"]));
    assert_eq!(
        out,
        "NAME    ENDPOINT           SESSION  CLAIMED  GENERATION  LAST PROBE  HANDSHAKES    RX    TX  ALLOWED IPS\n\
         laptop  203.0.113.5:40000  up       no                -    2.5s ago           3  20 B  10 B  100.96.0.2/32\n"
    );
    let out = ok(&ctl_at(&d, &["status"]));
    assert!(
        out.starts_with(
            "mode:             gateway\npublic key:       PUB=\nclients:          1 (0 claimed)\n"
        ),
        "{out}"
    );
    assert!(out.contains("\nlaptop  203.0.113.5:40000"), "{out}");
}

#[test]
fn metrics_as_text_and_json() {
    let d = client_daemon("metrics");
    assert_eq!(
        ok(&ctl_at(&d, &["metrics"])),
        "# TYPE failoverd_flows gauge\nfailoverd_flows 3\n"
    );
    let json: Value = serde_json::from_str(&ok(&ctl_at(&d, &["metrics", "--json"]))).unwrap();
    assert_eq!(
        json,
        json!({"text": "# TYPE failoverd_flows gauge\nfailoverd_flows 3\n"})
    );
    assert_eq!(
        d.requests.lock().unwrap()[0],
        json!({"v": 1, "cmd": "metrics"})
    );
}

#[test]
fn an_answer_of_another_version_is_refused_not_guessed() {
    // the names before control-proto: tunnels said state and last_handshake_s
    let d = daemon(
        "old",
        Box::new(|_| {
            Some(
                "{\"v\":1,\"ok\":true,\"tunnels\":[{\"name\":\"dc1\",\"state\":\"up\",\"rtt_ms\":1.0,\"last_handshake_s\":3}]}\n"
                    .into(),
            )
        }),
    );
    let err = fails(&ctl_at(&d, &["tunnels"]), 1);
    assert!(
        err.contains("does not match this failoverctl's protocol")
            && err.contains("another version"),
        "{err}"
    );
    let d = daemon(
        "v2",
        Box::new(|_| Some("{\"v\":2,\"ok\":true,\"active\":\"dc1\"}\n".into())),
    );
    let err = fails(&ctl_at(&d, &["switch", "dc1"]), 1);
    assert!(err.contains("control protocol v2"), "{err}");
}

#[test]
fn unreachable_daemons_say_what_to_do() {
    let dir = scratch("missing");
    let missing = dir.0.join("nothing.sock");
    let err = fails(&ctl(&["--socket", missing.to_str().unwrap(), "status"]), 1);
    assert!(
        err.contains("no such socket; is failoverd running? pass --socket PATH"),
        "{err}"
    );
    // the environment names the socket too
    let out = Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .arg("status")
        .env("FAILOVERCTL_SOCKET", &missing)
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains(missing.to_str().unwrap()));
    assert_eq!(out.status.code(), Some(1));
    // a stale socket file nobody listens on
    let stale = dir.0.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let err = fails(&ctl(&["--socket", stale.to_str().unwrap(), "status"]), 1);
    assert!(err.contains("nobody is listening"), "{err}");
    // not a failoverd socket
    let d = daemon("garbage", Box::new(|_| Some("hello\n".into())));
    let err = fails(&ctl_at(&d, &["status"]), 1);
    assert!(err.contains("the answer is not JSON"), "{err}");
    // permission: the real socket is 0600, served to root and the daemon's user
    let closed = client_daemon("closed");
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    let socket = closed.socket.to_str().unwrap();
    let out = if me == 0 {
        // root opens any socket: ask as nobody instead (skipped without setpriv)
        std::fs::set_permissions(&closed.socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_failoverctl"))
            .args(["--socket", socket, "status"])
            .output()
            .ok()
    } else {
        std::fs::set_permissions(&closed.socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        Some(ctl(&["--socket", socket, "status"]))
    };
    if let Some(out) = out.filter(|o| !text(&o.stderr).contains("setpriv:")) {
        let err = fails(&out, 1);
        assert!(
            err.contains("permission denied; run as root or as a member of the control group"),
            "{err}"
        );
    }
}

#[test]
#[allow(clippy::disallowed_methods)] // measuring the client's timeout
fn a_stuck_daemon_times_out() {
    let d = daemon("stuck", Box::new(|_| None));
    let started = std::time::Instant::now();
    let err = fails(&ctl_at(&d, &["status"]), 1);
    assert!(err.contains("no answer within the timeout"), "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let d = client_daemon("usage");
    let cases: &[(&[&str], &str)] = &[
        (&[], "no command given"),
        (&["frobnicate"], "unknown command 'frobnicate'"),
        (&["switch"], "switch takes one datacenter name"),
        (&["drain", "dc1", "dc2"], "drain takes one datacenter name"),
        (&["status", "extra"], "status takes no argument"),
        (&["--bogus", "status"], "unknown option '--bogus'"),
        (&["status", "--socket"], "--socket needs a value"),
        (&["tunnels", "--limit", "5"], "--limit belongs to flows"),
        (
            &["flows", "--limit", "0"],
            "--limit takes a number of flows",
        ),
        (
            &["flows", "--limit", "many"],
            "--limit takes a number of flows",
        ),
        (
            &["switch", "dc2", "--where", "a"],
            "--where and --fields apply to",
        ),
        (
            &["tunnels", "--fields", "name,"],
            "--fields: '' is not a field name",
        ),
        (
            &["tunnels", "--where", "a", "--where", "b"],
            "--where is given twice",
        ),
        (
            &["status", "--key-file", "k"],
            "--key-file belongs to import-wg",
        ),
    ];
    for (args, expected) in cases {
        let err = fails(&ctl_at(&d, args), 2);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let cases: &[(&[&str], &str)] = &[
        (
            &["import-wg", "--json", "x.conf"],
            "--json does not apply to import-wg",
        ),
        (
            &["--socket", "s", "import-wg", "x.conf"],
            "--socket does not apply to import-wg",
        ),
        (&["import-wg"], "import-wg needs wg-quick files"),
    ];
    for (args, expected) in cases {
        let err = fails(&ctl(args), 2);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let err = fails(&ctl_at(&d, &["tunnels", "--where", "state == up"]), 2);
    assert!(
        err.contains("--where: at column 10: expected a literal after '=='")
            && err.contains("\n  state == up\n           ^\n"),
        "{err}"
    );
    let long = "a".repeat(5000);
    let err = fails(&ctl_at(&d, &["tunnels", "--where", &long]), 2);
    assert!(err.contains("at most 4096"), "{err}");
    assert!(
        d.requests.lock().unwrap().is_empty(),
        "usage errors never reach the daemon"
    );
    let help = ok(&ctl(&["--help"]));
    assert!(
        help.starts_with("usage:\n  failoverctl [--socket PATH] [--json]"),
        "{help}"
    );
    assert_eq!(ok(&ctl(&["help"])), help);
}

// ---------------------------------------------------------------------------------------------
// import-wg

fn genkey() -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .arg("genkey")
        .output()
        .unwrap();
    assert!(out.status.success());
    let private = text(&out.stdout).trim().to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let public = text(&child.wait_with_output().unwrap().stdout)
        .trim()
        .to_owned();
    (private, public)
}

fn wg_file(dir: &Path, name: &str, private: &str, server: &str, endpoint: &str) -> PathBuf {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(
        &path,
        format!(
            "[Interface]\nPrivateKey = {private}\nAddress = 10.66.0.2/24, fd00:66::2/64\nDNS = 10.66.0.1\n\
             PostUp = echo up\n\n[Peer]\nPublicKey = {server}\nEndpoint = {endpoint}\n\
             AllowedIPs = 10.66.0.0/24, 198.19.0.0/16, fd00:66::/64\nPersistentKeepalive = 25\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn import_wg_makes_a_configuration_failoverd_accepts() {
    let dir = scratch("import");
    let (private, public) = genkey();
    let dc1 = wg_file(&dir.0, "dc1", &private, &genkey().1, "198.18.0.11:51820");
    let dc2 = wg_file(&dir.0, "dc2", &private, &genkey().1, "[2001:db8::12]:51820");
    let key = dir.0.join("client.key");
    let out = ctl(&[
        "import-wg",
        "--key-file",
        key.to_str().unwrap(),
        dc1.to_str().unwrap(),
        dc2.to_str().unwrap(),
    ]);
    let config = ok(&out);
    let warnings = text(&out.stderr);
    assert!(
        warnings.contains("PostUp is not run by failoverd"),
        "{warnings}"
    );
    assert!(
        warnings.contains("probe address 10.66.0.1 guessed"),
        "{warnings}"
    );
    assert!(
        !config.contains(&private) && !warnings.contains(&private),
        "the key is never printed"
    );
    let meta = std::fs::symlink_metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim(), private);
    let file = dir.0.join("client.toml");
    std::fs::write(&file, &config).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .args(["check", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "failoverd check refused:\n{}\n{config}",
        text(&check.stderr)
    );
    // the public key a server needs is derivable from the key file, and matches
    let mut child = Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&key).unwrap())
        .unwrap();
    assert_eq!(
        text(&child.wait_with_output().unwrap().stdout).trim(),
        public
    );
    // never over an existing key
    let again = ctl(&[
        "import-wg",
        "--key-file",
        key.to_str().unwrap(),
        dc1.to_str().unwrap(),
    ]);
    let err = fails(&again, 1);
    assert!(
        err.contains("already exists; refusing to overwrite it"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim(), private);
}

#[test]
fn import_wg_refusals_exit_1_and_write_nothing() {
    let dir = scratch("import-refused");
    let (a, _) = genkey();
    let (b, _) = genkey();
    let dc1 = wg_file(&dir.0, "dc1", &a, &genkey().1, "198.18.0.11:51820");
    let dc2 = wg_file(&dir.0, "dc2", &b, &genkey().1, "198.18.0.12:51820");
    let key = dir.0.join("client.key");
    let out = ctl(&[
        "import-wg",
        "--key-file",
        key.to_str().unwrap(),
        dc1.to_str().unwrap(),
        dc2.to_str().unwrap(),
    ]);
    let err = fails(&out, 1);
    assert!(
        err.contains(&format!(
            "{}:2: its PrivateKey differs from {}'s",
            dc2.display(),
            dc1.display()
        )),
        "{err}"
    );
    assert!(!err.contains(&a) && !err.contains(&b));
    assert!(!key.exists(), "nothing is written when a file is refused");
    let missing = dir.0.join("nope.conf");
    let err = fails(
        &ctl(&[
            "import-wg",
            "--key-file",
            key.to_str().unwrap(),
            missing.to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("nope.conf: cannot read it"), "{err}");
    let err = fails(
        &ctl(&[
            "import-wg",
            "--stable-address",
            "banana",
            dc1.to_str().unwrap(),
        ]),
        2,
    );
    assert!(
        err.contains("--stable-address: 'banana' is not an IP address"),
        "{err}"
    );
}
