//! Laptop life end to end, with the real binaries: the daemon stopped past the sessions'
//! lifetime (suspend), the uplink moving under a running stream (Wi-Fi to Ethernet behind a
//! NAT), NAT mappings flushed, endpoints given as names with a real resolver that goes away,
//! comes back and lies, every datacenter down (fail closed and fail open), and a crash.
//!
//! Each test asserts what the user would see (the connection alive or not, bytes verified,
//! what leaves through the uplink, how long it took) and prints the figures it measured.
//! Scenarios are RELIABILITY.md's L1-L10 and F5.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use netns_tests::lab::{wait_until, Lab, Ns, Topology};
use netns_tests::roaming_lab::*;
use netns_tests::scenario::*;
use serde_json::Value;

/// How long the suspend test keeps the daemon stopped: past REJECT_AFTER_TIME (180 s), so
/// every session has expired when it runs again.
const STOPPED: Duration = Duration::from_secs(190);
/// The client's probe interval (the default).
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// The client's hold-down before a recovered datacenter is used (the default).
const HOLD_DOWN: Duration = Duration::from_secs(1);
/// The UDP echo port on the server.
const ECHO_PORT: u16 = 7007;
/// Where the lab's resolver listens (an address of `brwan`, on the client's uplink).
const RESOLVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 53);

/// The test's clock (measuring what the daemons do is IO code).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

fn echo() -> SocketAddr {
    SocketAddr::new(Topology::SERVER_IP4.into(), ECHO_PORT)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `12.3 ms`, or `never` for a wait that timed out.
fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".to_owned(), |d| format!("{:.1} ms", ms(d)))
}

fn list_ms(ds: &[Option<Duration>]) -> String {
    ds.iter().map(|d| opt_ms(*d)).collect::<Vec<_>>().join(", ")
}

fn dc<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["datacenters"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn dc_u64(status: &Value, name: &str, key: &str) -> u64 {
    dc(status, name)[key].as_u64().unwrap_or(0)
}

fn health(status: &Value, name: &str) -> String {
    dc(status, name)["health"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn sum(status: &Value, key: &str) -> u64 {
    status["datacenters"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d[key].as_u64()).sum())
        .unwrap_or(0)
}

/// `(datacenter, address, failures)` of every named endpoint.
fn names(status: &Value) -> Vec<(String, Option<String>, u64)> {
    status["roaming"]["names"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["datacenter"].as_str().unwrap_or_default().to_owned(),
                        n["address"].as_str().map(str::to_owned),
                        n["failures"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn failures(status: &Value, name: &str) -> u64 {
    names(status)
        .into_iter()
        .find(|(d, _, _)| d == name)
        .map_or(0, |(_, _, f)| f)
}

fn address(status: &Value, name: &str) -> Option<String> {
    names(status)
        .into_iter()
        .find(|(d, _, _)| d == name)
        .and_then(|(_, a, _)| a)
}

/// A short verified stream through the tunnel: the connection works.
fn short_stream(lab: &Lab, ns: &Ns, what: &str, seed: u64) {
    let n = 20_000_000;
    let report = run_stream(lab, ns, Topology::SERVER_IP4.into(), n, seed).unwrap();
    check_stream(what, &report, n);
}

/// Bytes per direction for the streams that cross a fault.
fn bytes() -> u64 {
    stream_bytes().min(100_000_000)
}

/// Polls `f` about every millisecond until it is true; how long that took, or `None` after
/// `timeout`. (The lab's `wait_until` polls every 10 ms: too coarse for these figures.)
fn time_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
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

// ------------------------------------------------------------------------------------------
// L1/L2: suspend, modelled by SIGSTOP past the sessions' lifetime

#[test]
fn a_stopped_daemon_resumes_within_a_second_after_its_sessions_expired() {
    let fl = FailoverLab::new("fo-laptop-stop", 2, "").unwrap();
    let _echo = UdpEcho::start(&fl.lab, &fl.topo.server, ECHO_PORT).unwrap();
    let mut ping = UdpPinger::new(&fl.lab, &fl.topo.client).unwrap();
    let warm = ping
        .until_answered(echo(), Duration::from_millis(10), Duration::from_secs(5))
        .unwrap()
        .expect("an echo through the tunnel before the stop");
    let before = fl.client.status().unwrap();
    let switches_before = fl.switches().unwrap();

    fl.client.daemon.signal(libc::SIGSTOP).unwrap();
    std::thread::sleep(STOPPED);
    let cont = now();
    fl.client.daemon.signal(libc::SIGCONT).unwrap();
    // The first request leaves 50 ms after the continue (the user's first packet comes a
    // moment after the lid opens): the daemon wakes to its overdue timers alone, whatever
    // order it would handle them and a packet in. Then a request every 10 ms until one is
    // answered; the time counts from the continue.
    std::thread::sleep(Duration::from_millis(50));
    let back = ping
        .until_answered(echo(), Duration::from_millis(10), Duration::from_secs(30))
        .unwrap()
        .map(|_| cont.elapsed());
    // every session re-established (both tunnels: the standby is kept warm too)
    let rehandshaken = time_until(Duration::from_secs(10), || {
        fl.client.status().is_ok_and(|s| {
            ["dc1", "dc2"].iter().all(|d| {
                dc_u64(&s, d, "handshakes") > dc_u64(&before, d, "handshakes")
                    && dc(&s, d)["established"] == true
            })
        })
    })
    .map(|_| cont.elapsed());
    // if something went down meanwhile it is back within a hold-down; give it that long
    std::thread::sleep(HOLD_DOWN + Duration::from_millis(500));
    let after = fl.client.status().unwrap();
    let switches_after = fl.switches().unwrap();
    eprintln!(
        "stopped {} s: first echo {} after SIGCONT (before the stop: {:.1} ms); both \
         sessions re-established {} after SIGCONT; handshakes dc1 {} -> {}, dc2 {} -> {}; \
         resumes {}; flaps dc1 {} -> {}, dc2 {} -> {}; health dc1 {}, dc2 {}; switches {} -> {}",
        STOPPED.as_secs(),
        opt_ms(back),
        ms(warm),
        opt_ms(rehandshaken),
        dc_u64(&before, "dc1", "handshakes"),
        dc_u64(&after, "dc1", "handshakes"),
        dc_u64(&before, "dc2", "handshakes"),
        dc_u64(&after, "dc2", "handshakes"),
        after["roaming"]["resumes"],
        dc_u64(&before, "dc1", "flaps"),
        dc_u64(&after, "dc1", "flaps"),
        dc_u64(&before, "dc2", "flaps"),
        dc_u64(&after, "dc2", "flaps"),
        health(&after, "dc1"),
        health(&after, "dc2"),
        switches_before.len(),
        switches_after.len(),
    );
    assert_alive(&fl.client, "the client");
    let back = back.expect("traffic flows again after SIGCONT");
    assert!(
        back < Duration::from_secs(1),
        "traffic flows again {:.0} ms after SIGCONT (want < 1 s)",
        ms(back)
    );
    assert!(
        after["roaming"]["resumes"].as_u64().unwrap_or(0) >= 1,
        "the daemon noticed it had not run: {}",
        after["roaming"]
    );
    assert!(
        rehandshaken.is_some(),
        "both sessions re-established: {after}"
    );
    short_stream(&fl.lab, &fl.topo.client, "stream after SIGCONT", 12);
    assert_eq!(
        switches_after, switches_before,
        "no switch for the time slept"
    );
    for d in ["dc1", "dc2"] {
        assert_eq!(
            dc_u64(&after, d, "flaps"),
            dc_u64(&before, d, "flaps"),
            "{d} was declared down for the time the daemon was stopped: {}; the client's \
             log:\n{}",
            dc(&after, d),
            daemon_events(&fl.client.daemon).join("\n")
        );
        // alive: up, or suspect for a moment while the stream above queues its probes (it
        // was never declared down: its flaps are unchanged)
        assert!(
            matches!(health(&after, d).as_str(), "up" | "suspect"),
            "{d}: {}",
            dc(&after, d)
        );
    }
    assert_eq!(after["active"], "dc1");
}

// ------------------------------------------------------------------------------------------
// L3/L4, D10: the uplink moves (Wi-Fi to Ethernet) behind a NAT

#[test]
fn the_uplink_moves_under_a_running_stream() {
    let nl = NatLab::new("fo-laptop-uplink", 2, "").unwrap();
    let first = [nl.endpoint_at(1), nl.endpoint_at(2)];
    for ep in &first {
        assert!(
            ep.as_deref()
                .is_some_and(|e| e.starts_with(&format!("{PUBLIC_A}:"))),
            "the gateways see the client at the NAT's address for uplink a: {first:?}"
        );
    }
    let before = nl.client.status().unwrap();
    let switches_before = nl.client.switches().unwrap();

    let n = bytes();
    let stream = spawn_stream(&nl.lab, &nl.topo.client, "stream-uplink", n, 21).unwrap();
    nl.client.wait_flowing(20_000_000).unwrap();
    let moved = now();
    nl.move_to_uplink_b().unwrap();
    let move_took = moved.elapsed();
    let mut followed = [None, None];
    let all = time_until(Duration::from_secs(10), || {
        for (i, f) in followed.iter_mut().enumerate() {
            if f.is_none()
                && nl
                    .endpoint_at(i + 1)
                    .is_some_and(|e| e.starts_with(&format!("{PUBLIC_B}:")))
            {
                *f = Some(moved.elapsed());
            }
        }
        followed.iter().all(Option::is_some)
    });
    let report = stream.finish().unwrap();
    let after = nl.client.status().unwrap();
    let switches_after = nl.client.switches().unwrap();
    let stall = check_stream("stream across the uplink move", &report, n);
    eprintln!(
        "uplink a -> b (route + link down took {:.1} ms): dc1's gateway followed after {}, \
         dc2's after {} ({:?} -> {:?}, {:?}); longest stall {stall:.1} ms; \
         network changes {}; flaps {} -> {}; switches {} -> {}",
        ms(move_took),
        opt_ms(followed[0]),
        opt_ms(followed[1]),
        first[0],
        nl.endpoint_at(1),
        nl.endpoint_at(2),
        after["roaming"]["network_changes"],
        sum(&before, "flaps"),
        sum(&after, "flaps"),
        switches_before.len(),
        switches_after.len(),
    );
    assert!(
        all.is_some(),
        "every gateway follows the client to the NAT address of uplink b: {followed:?}"
    );
    assert!(
        after["roaming"]["network_changes"].as_u64().unwrap_or(0) >= 1,
        "the daemon saw the change: {}",
        after["roaming"]
    );
    assert_eq!(
        after["stable_address"], before["stable_address"],
        "the stable inner address does not change"
    );
    assert_eq!(switches_after, switches_before, "no switch");
    assert_eq!(
        sum(&after, "flaps"),
        sum(&before, "flaps"),
        "no datacenter declared down because the uplink moved (probes sent during the \
         {:.1} s stream: {}); the client's log:\n{}",
        report.elapsed_ms / 1e3,
        sum(&after, "probes_sent") - sum(&before, "probes_sent"),
        daemon_events(&nl.client.daemon).join("\n")
    );
    for d in ["dc1", "dc2"] {
        assert_eq!(health(&after, d), "up", "{d}: {}", dc(&after, d));
    }
    assert_alive(&nl.client, "the client");
}

// ------------------------------------------------------------------------------------------
// L7: NAT rebinding

/// Flushes the NAT's mappings and times until each gateway has the client's new source port.
/// Returns (the flush command's duration, per gateway the time from the start of the flush).
fn flush_and_follow(nl: &NatLab) -> (Duration, Vec<Option<Duration>>) {
    let old: Vec<Option<String>> = (1..=nl.gateways.len()).map(|i| nl.endpoint_at(i)).collect();
    let start = now();
    let command = nl.flush_nat().unwrap();
    let mut followed: Vec<Option<Duration>> = vec![None; old.len()];
    time_until(Duration::from_secs(5), || {
        for (i, f) in followed.iter_mut().enumerate() {
            if f.is_none() {
                let current = nl.endpoint_at(i + 1);
                if current.is_some() && current != old[i] {
                    *f = Some(start.elapsed());
                }
            }
        }
        followed.iter().all(Option::is_some)
    });
    (command, followed)
}

#[test]
fn nat_mappings_flushed_idle_and_streaming() {
    let nl = NatLab::new("fo-laptop-nat", 2, "").unwrap();
    let _echo = UdpEcho::start(&nl.lab, &nl.topo.server, ECHO_PORT).unwrap();
    let mut ping = UdpPinger::new(&nl.lab, &nl.topo.client).unwrap();
    ping.until_answered(echo(), Duration::from_millis(10), Duration::from_secs(5))
        .unwrap()
        .expect("echo before the flush");
    let before = nl.client.status().unwrap();
    let switches_before = nl.client.switches().unwrap();

    // idle: only the probes (every 20 ms) carry the new mapping to the gateways
    let (idle_cmd, idle) = flush_and_follow(&nl);
    let idle_echo = ping
        .until_answered(echo(), Duration::from_millis(10), Duration::from_secs(5))
        .unwrap();

    // streaming
    let n = bytes();
    let stream = spawn_stream(&nl.lab, &nl.topo.client, "stream-nat", n, 31).unwrap();
    nl.client.wait_flowing(20_000_000).unwrap();
    let (busy_cmd, busy) = flush_and_follow(&nl);
    let report = stream.finish().unwrap();
    let stall = check_stream("stream across a NAT flush", &report, n);
    let after = nl.client.status().unwrap();
    let switches_after = nl.client.switches().unwrap();
    eprintln!(
        "NAT flushed while idle (conntrack -F took {:.1} ms): gateways followed after [{}]; \
         echo {} later; while streaming (conntrack -F took {:.1} ms): followed after [{}], \
         longest stall {stall:.1} ms; endpoints now {:?} / {:?}; flaps {} -> {}; switches \
         {} -> {}",
        ms(idle_cmd),
        list_ms(&idle),
        opt_ms(idle_echo),
        ms(busy_cmd),
        list_ms(&busy),
        nl.endpoint_at(1),
        nl.endpoint_at(2),
        sum(&before, "flaps"),
        sum(&after, "flaps"),
        switches_before.len(),
        switches_after.len(),
    );
    // The flush happens somewhere inside the command; allow its duration, one probe interval,
    // and 50 ms for the measurement (control-socket round trips on a loaded 2-core machine).
    for (what, cmd, followed) in [("idle", idle_cmd, &idle), ("streaming", busy_cmd, &busy)] {
        let bound = cmd + PROBE_INTERVAL + Duration::from_millis(50);
        for (i, f) in followed.iter().enumerate() {
            let f =
                f.unwrap_or_else(|| panic!("{what}: dc{}'s gateway never saw the new port", i + 1));
            assert!(
                f <= bound,
                "{what}: dc{}'s gateway followed after {:.1} ms (want <= {:.1} ms: the flush \
                 command, one probe interval, 50 ms measurement)",
                i + 1,
                ms(f),
                ms(bound)
            );
        }
    }
    assert!(idle_echo.is_some(), "traffic flows after the idle flush");
    assert!(
        stall < 1000.0,
        "the stream stalled {stall:.0} ms across the flush"
    );
    assert_eq!(switches_after, switches_before, "no switch");
    assert_eq!(
        sum(&after, "flaps"),
        sum(&before, "flaps"),
        "nothing declared down (probes sent during the {:.1} s stream: ~{}); the client's \
         log:\n{}",
        report.elapsed_ms / 1e3,
        sum(&after, "probes_sent") - sum(&before, "probes_sent"),
        daemon_events(&nl.client.daemon).join("\n")
    );
    assert_alive(&nl.client, "the client");
}

// ------------------------------------------------------------------------------------------
// L8-L10: endpoint names and a real resolver

#[test]
fn endpoint_names_resolve_late_and_follow_the_resolver() {
    let mut lab = Lab::new("fo-laptop-dns").unwrap();
    let topo = Topology::build(&mut lab, 2).unwrap();
    lab.addr(&topo.wan, "brwan", &format!("{RESOLVER}/24"))
        .unwrap();
    let dcs = start_datacenters(&lab, &topo, &[]).unwrap();
    let _etc = NetnsEtc::resolv_conf(&topo.client, RESOLVER).unwrap();
    let dc1_ip = Topology::dc_underlay_ip(1);
    let dc2_ip = Topology::dc_underlay_ip(2);
    let dc2_new = Ipv4Addr::new(198, 18, 0, 112);
    let mut dns = Dnsmasq::new(
        &lab,
        &topo.wan,
        RESOLVER,
        &[("dc1.lab", dc1_ip), ("dc2.lab", dc2_ip)],
    )
    .unwrap();
    let entries: Vec<DcEntry> = dcs
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| DcEntry {
            endpoint: format!("dc{}.lab:{WG_PORT}", i + 1),
            ..e.clone()
        })
        .collect();

    // L8: the resolver is down when the daemon starts
    let started = now();
    let client = start_client_named(
        &lab,
        &topo.client,
        "client-dns",
        &dcs.client_key,
        &entries,
        "",
        false,
    )
    .unwrap();
    let socket_after = started.elapsed();
    wait_until(
        Duration::from_secs(15),
        "three failed lookups of each name",
        || {
            client
                .status()
                .is_ok_and(|s| ["dc1", "dc2"].iter().all(|d| failures(&s, d) >= 3))
        },
    )
    .unwrap();
    let s = client.status().unwrap();
    assert_alive(&client, "the client without DNS");
    for d in ["dc1", "dc2"] {
        assert_eq!(
            dc(&s, d)["established"],
            false,
            "{d} without an address: {s}"
        );
        assert!(dc(&s, d)["endpoint"].is_null(), "{d}: {}", dc(&s, d));
        assert_eq!(address(&s, d), None);
    }
    let failed = ["dc1", "dc2"].map(|d| failures(&s, d));
    let waited = started.elapsed();
    let dns_start = now();
    dns.start(&lab).unwrap();
    let listening = dns_start.elapsed();
    let resolved_in = time_until(Duration::from_secs(90), || {
        client.status().is_ok_and(|s| {
            ["dc1", "dc2"]
                .iter()
                .all(|d| dc(&s, d)["established"] == true)
        })
    })
    .map(|_| dns_start.elapsed());
    let resolved_at = now();
    // the next retry of a name that failed k times comes at most 1.5 * 2^(k-1) s after that
    // failure; one more failure may have happened while dnsmasq started
    let backoff = Duration::from_secs(1 << failed.iter().copied().max().unwrap_or(1).min(6))
        .mul_f64(1.5)
        .min(Duration::from_secs(90));
    let s = client.status().unwrap();
    eprintln!(
        "DNS down at start: control socket after {:.0} ms, {:?} failures per name after {:.1} s; \
         resolver started (listening after {:.0} ms): tunnels established {} after its start \
         (backoff bound {:.1} s); names {:?}",
        ms(socket_after),
        failed,
        waited.as_secs_f64(),
        ms(listening),
        opt_ms(resolved_in),
        backoff.as_secs_f64(),
        names(&s),
    );
    let resolved_in = resolved_in.expect("the tunnels come up once the resolver answers");
    assert!(
        resolved_in <= backoff + Duration::from_secs(1),
        "up {:.1} s after the resolver came back (backoff bound {:.1} s)",
        resolved_in.as_secs_f64(),
        backoff.as_secs_f64()
    );
    assert_eq!(address(&s, "dc1"), Some(format!("{dc1_ip}:{WG_PORT}")));
    assert_eq!(address(&s, "dc2"), Some(format!("{dc2_ip}:{WG_PORT}")));
    wait_claimed(&dcs.gateways[0]).unwrap();
    let _echo = UdpEcho::start(&lab, &topo.server, ECHO_PORT).unwrap();
    let mut ping = UdpPinger::new(&lab, &topo.client).unwrap();
    assert!(
        ping.until_answered(echo(), Duration::from_millis(10), Duration::from_secs(5))
            .unwrap()
            .is_some(),
        "traffic flows through tunnels to resolved endpoints"
    );

    // L9: dc2 is renumbered; the old address stops answering. A datacenter that goes down
    // has its name asked again, at most every 5 s: let 5 s pass since the last lookup.
    std::thread::sleep((resolved_at + Duration::from_secs(6)).saturating_duration_since(now()));
    let dc2_ns = topo.dc(2).unwrap();
    lab.sysctl(dc2_ns, "net.ipv4.conf.all.promote_secondaries", "1")
        .unwrap();
    lab.addr(dc2_ns, "wan0", &format!("{dc2_new}/24")).unwrap();
    dns.set_records(&[("dc1.lab", dc1_ip), ("dc2.lab", dc2_new)])
        .unwrap();
    let switches_before = client.switches().unwrap();
    let renumbered = now();
    lab.exec(
        dc2_ns,
        &["ip", "addr", "del", &format!("{dc2_ip}/24"), "dev", "wan0"],
    )
    .unwrap();
    let new_endpoint = format!("{dc2_new}:{WG_PORT}");
    let moved_in = time_until(Duration::from_secs(70), || {
        client
            .status()
            .is_ok_and(|s| dc(&s, "dc2")["endpoint"] == new_endpoint.as_str())
    });
    let up_in = time_until(Duration::from_secs(20), || {
        client.status().is_ok_and(|s| health(&s, "dc2") == "up")
    })
    .map(|_| renumbered.elapsed());
    let s = client.status().unwrap();
    eprintln!(
        "dc2 renumbered {dc2_ip} -> {dc2_new}: endpoint followed after {}, dc2 up again \
         after {}; active {}; dc2 flaps {}",
        opt_ms(moved_in),
        opt_ms(up_in),
        s["active"],
        dc_u64(&s, "dc2", "flaps"),
    );
    assert!(
        moved_in.is_some_and(|d| d <= Duration::from_secs(10)),
        "the renumbered datacenter's name is asked again when it goes down: {}",
        dc(&s, "dc2")
    );
    assert!(
        up_in.is_some(),
        "dc2 works at its new address: {}",
        dc(&s, "dc2")
    );
    assert_eq!(s["active"], "dc1");
    assert_eq!(client.switches().unwrap(), switches_before, "no switch");

    // L10: the resolver lies: loopback and the client's own stable address are refused, the
    // last good addresses stay. A network change makes the daemon ask again at once.
    dns.set_records(&[
        ("dc1.lab", Ipv4Addr::LOCALHOST),
        ("dc2.lab", STABLE_V4.parse().unwrap()),
    ])
    .unwrap();
    let before = client.status().unwrap();
    lab.exec(
        &topo.client,
        &["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"],
    )
    .unwrap();
    let refused_in = time_until(Duration::from_secs(10), || {
        client.status().is_ok_and(|s| {
            ["dc1", "dc2"]
                .iter()
                .all(|d| failures(&s, d) > failures(&before, d))
        })
    });
    let tx_before = sum(&before, "tx_bytes");
    let echo_lies = ping
        .until_answered(echo(), Duration::from_millis(10), Duration::from_secs(5))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let s = client.status().unwrap();
    eprintln!(
        "resolver answers 127.0.0.1 / {STABLE_V4}: refused {} after a network change; \
         names {:?}; echo {}; tx bytes +{} in 2 s; dnsmasq log: {} lines",
        opt_ms(refused_in),
        names(&s),
        opt_ms(echo_lies),
        sum(&s, "tx_bytes").saturating_sub(tx_before),
        dns.log().lines().count(),
    );
    assert!(
        refused_in.is_some(),
        "the lies were asked for and refused (failures grow): {}",
        s["roaming"]
    );
    let log = dns.log();
    assert!(
        log.contains("dc1.lab is 127.0.0.1") && log.contains(&format!("dc2.lab is {STABLE_V4}")),
        "the resolver served the lies: {log}"
    );
    assert_eq!(address(&s, "dc1"), Some(format!("{dc1_ip}:{WG_PORT}")));
    assert_eq!(address(&s, "dc2"), Some(new_endpoint.clone()));
    assert_eq!(
        dc(&s, "dc1")["endpoint"],
        format!("{dc1_ip}:{WG_PORT}").as_str()
    );
    assert_eq!(dc(&s, "dc2")["endpoint"], new_endpoint.as_str());
    assert!(
        echo_lies.is_some(),
        "traffic flows on the last good addresses"
    );
    assert!(
        sum(&s, "tx_bytes").saturating_sub(tx_before) < 10_000_000,
        "no routing loop: the tunnels' bytes stay bounded"
    );

    // the resolver goes away: the tunnels keep their last good addresses
    dns.stop().unwrap();
    let before = client.status().unwrap();
    lab.exec(
        &topo.client,
        &["ip", "addr", "del", "192.0.2.1/32", "dev", "lo"],
    )
    .unwrap();
    let failed_again = time_until(Duration::from_secs(70), || {
        client.status().is_ok_and(|s| {
            ["dc1", "dc2"]
                .iter()
                .all(|d| failures(&s, d) > failures(&before, d))
        })
    });
    let echo_down = ping
        .until_answered(echo(), Duration::from_millis(10), Duration::from_secs(5))
        .unwrap();
    let s = client.status().unwrap();
    eprintln!(
        "resolver stopped: lookups failed again after {}; names {:?}; echo {}",
        opt_ms(failed_again),
        names(&s),
        opt_ms(echo_down),
    );
    assert!(failed_again.is_some(), "lookups fail: {}", s["roaming"]);
    assert_eq!(address(&s, "dc1"), Some(format!("{dc1_ip}:{WG_PORT}")));
    assert_eq!(address(&s, "dc2"), Some(new_endpoint));
    for d in ["dc1", "dc2"] {
        assert_eq!(dc(&s, d)["established"], true, "{d}: {}", dc(&s, d));
    }
    assert!(echo_down.is_some(), "traffic flows without a resolver");
    short_stream(&lab, &topo.client, "stream with the resolver gone", 41);
    assert_eq!(client.switches().unwrap(), switches_before, "no switch");
    assert_alive(&client, "the client");
}

// ------------------------------------------------------------------------------------------
// F5: every datacenter down

#[test]
fn all_datacenters_down_fail_closed_then_recover() {
    let fl = with_default_route("fo-laptop-alldown", 2, "").unwrap();
    let _echo = UdpEcho::start(&fl.lab, &fl.topo.server, ECHO_PORT).unwrap();
    let s = fl.client.status().unwrap();
    assert_eq!(s["fail_mode"], "closed", "fail closed is the default");
    let blackholes = blackhole_routes(&fl.lab, &fl.topo.client).unwrap();
    assert!(
        blackholes
            .iter()
            .any(|r| r.starts_with("blackhole 198.19.0.0/16")),
        "fail-closed routes in place: {blackholes:?}"
    );
    let rtt_ms = dc(&s, "dc2")["rtt_ms"].as_f64().unwrap_or(0.0);
    let leak = NftCounter::leaks(&fl.lab, &fl.topo.client, "up0", "198.19.0.0/16").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    let dc2 = fl.dc(2).unwrap().clone();
    let initiations =
        [&dc1, &dc2].map(|ns| NftCounter::handshake_initiations(&fl.lab, ns).unwrap());
    let initiated = |lab: &Lab| initiations.each_ref().map(|c| c.packets(lab).unwrap());
    let initiated_before = initiated(&fl.lab);

    let down_at = unix_millis();
    let t_down = now();
    blackhole(&fl.lab, &dc1, Direction::Both).unwrap();
    blackhole(&fl.lab, &dc2, Direction::Both).unwrap();
    let detected = time_until(Duration::from_secs(10), || {
        fl.client
            .status()
            .is_ok_and(|s| health(&s, "dc1") == "down" && health(&s, "dc2") == "down")
    });
    // the daemon's CPU while it waits for any datacenter, over 20 s
    let pid = fl.client.daemon.pid();
    let (cpu0, s0, t0) = (
        cpu_seconds(pid).unwrap(),
        fl.client.status().unwrap(),
        now(),
    );
    let sent = send_udp(
        &fl.lab,
        &fl.topo.client,
        SocketAddr::new(Topology::SERVER_IP4.into(), 9999),
        20,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(20));
    let (cpu1, s1, elapsed) = (
        cpu_seconds(pid).unwrap(),
        fl.client.status().unwrap(),
        t0.elapsed(),
    );
    let cpu_share = (cpu1 - cpu0) / elapsed.as_secs_f64();
    let probes_per_s = sum(&s1, "probes_sent").saturating_sub(sum(&s0, "probes_sent")) as f64
        / elapsed.as_secs_f64();
    std::thread::sleep((t_down + Duration::from_secs(30)).saturating_duration_since(now()));
    let leaked = leak.packets(&fl.lab).unwrap();
    let initiated_down = initiated(&fl.lab);
    let switches_down: Vec<_> = fl
        .switches()
        .unwrap()
        .into_iter()
        .filter(|s| s.unix_ms >= down_at)
        .collect();
    let active_down = fl.active().unwrap();

    // dc2 comes back
    let healed = now();
    heal(&fl.lab, &dc2).unwrap();
    let recovered = time_until(Duration::from_secs(30), || {
        fl.client
            .status()
            .is_ok_and(|s| s["active"] == "dc2" && health(&s, "dc2") == "up")
    });
    let mut ping = UdpPinger::new(&fl.lab, &fl.topo.client).unwrap();
    let echo_after = ping
        .until_answered(echo(), Duration::from_millis(10), Duration::from_secs(5))
        .unwrap()
        .map(|_| healed.elapsed());
    let bound = HOLD_DOWN + PROBE_INTERVAL + Duration::from_secs_f64(rtt_ms / 1e3);
    eprintln!(
        "all down: detected after {}; over {:.1} s the daemon used {:.2} % CPU and sent \
         {probes_per_s:.0} probes/s; {} switches while all were down ({:?}), active {active_down}; \
         {sent} datagrams sent to 198.19.0.100, {leaked} left through up0; dc2 healed: \
         active and up after {} (hold-down + probe interval + RTT = {:.1} ms), \
         echo after {}; handshake initiations reaching dc1/dc2 in the 30 s: {:?}",
        opt_ms(detected),
        elapsed.as_secs_f64(),
        cpu_share * 100.0,
        switches_down.len(),
        switches_down,
        opt_ms(recovered),
        ms(bound),
        opt_ms(echo_after),
        [0, 1].map(|i| initiated_down[i] - initiated_before[i]),
    );
    assert!(detected.is_some(), "both datacenters declared down");
    for (i, (a, b)) in initiated_before.iter().zip(initiated_down).enumerate() {
        // REKEY_TIMEOUT is 5 s: a handshake retried no faster than that, 6 in 30 s, + 2
        assert!(
            b - a <= 8,
            "dc{}: {} handshake initiations in 30 s of silence: no backoff",
            i + 1,
            b - a
        );
    }
    assert!(
        switches_down.len() <= 1,
        "no switch storm while everything is down: {switches_down:?}"
    );
    assert!(
        cpu_share < 0.05,
        "CPU while all datacenters are down: {:.2} % (want < 5 %)",
        cpu_share * 100.0
    );
    assert_eq!(
        leaked, 0,
        "nothing meant for the tunnel leaves through the uplink"
    );
    let recovered = recovered.expect("the client recovers onto dc2");
    // 30 ms for the measurement (status polls on a loaded 2-core machine)
    assert!(
        recovered <= bound + Duration::from_millis(30),
        "recovery onto dc2 took {:.0} ms (want <= hold-down + one probe interval + one RTT = \
         {:.1} ms, + 30 ms measurement)",
        ms(recovered),
        ms(bound)
    );
    assert!(echo_after.is_some(), "traffic flows through dc2");
    short_stream(
        &fl.lab,
        &fl.topo.client,
        "stream after recovery onto dc2",
        51,
    );
    assert_alive(&fl.client, "the client");
}

#[test]
fn fail_open_withdraws_the_tunnel_routes_while_everything_is_down() {
    let fl = with_default_route("fo-laptop-open", 2, "fail_mode = \"open\"\n").unwrap();
    let s = fl.client.status().unwrap();
    assert_eq!(s["fail_mode"], "open");
    let blackholes = blackhole_routes(&fl.lab, &fl.topo.client).unwrap();
    assert!(
        blackholes.is_empty(),
        "no fail-closed routes: {blackholes:?}"
    );
    let via = || route_get(&fl.lab, &fl.topo.client, "198.19.0.100").unwrap();
    let first = via();
    assert!(
        first.as_deref().is_ok_and(|r| r.contains("dev failover0")),
        "the tunnel carries 198.19.0.100 at first: {first:?}"
    );
    let leak = NftCounter::leaks(&fl.lab, &fl.topo.client, "up0", "198.19.0.0/16").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    let dc2 = fl.dc(2).unwrap().clone();

    blackhole(&fl.lab, &dc1, Direction::Both).unwrap();
    blackhole(&fl.lab, &dc2, Direction::Both).unwrap();
    let withdrawn = time_until(Duration::from_secs(10), || {
        via().is_ok_and(|r| r.contains("dev up0"))
    });
    let down_route = via();
    let sent = send_udp(
        &fl.lab,
        &fl.topo.client,
        SocketAddr::new(Topology::SERVER_IP4.into(), 9999),
        5,
    )
    .unwrap();
    let out_uplink = leak.packets(&fl.lab).unwrap();
    let s = fl.client.status().unwrap();

    heal(&fl.lab, &dc1).unwrap();
    let restored = time_until(Duration::from_secs(10), || {
        via().is_ok_and(|r| r.contains("dev failover0"))
    });
    let _echo = UdpEcho::start(&fl.lab, &fl.topo.server, ECHO_PORT).unwrap();
    let mut ping = UdpPinger::new(&fl.lab, &fl.topo.client).unwrap();
    let echo_after = ping
        .until_answered(echo(), Duration::from_millis(10), Duration::from_secs(5))
        .unwrap();
    eprintln!(
        "fail open: routes withdrawn {} after both were blackholed ({down_route:?}); \
         health dc1 {} dc2 {}; {sent} datagrams sent, {out_uplink} went out up0; dc1 healed: \
         routes back after {} ({:?}); echo {}",
        opt_ms(withdrawn),
        health(&s, "dc1"),
        health(&s, "dc2"),
        opt_ms(restored),
        via(),
        opt_ms(echo_after),
    );
    assert!(
        withdrawn.is_some(),
        "while every datacenter is down 198.19.0.100 takes the uplink: {down_route:?}"
    );
    assert!(out_uplink > 0, "fail open: the traffic takes the uplink");
    assert!(
        restored.is_some(),
        "the tunnel's routes are back once dc1 returns: {:?}",
        via()
    );
    assert!(
        echo_after.is_some(),
        "traffic flows through the tunnel again"
    );
    assert_alive(&fl.client, "the client");
}

#[test]
fn a_crash_fails_closed() {
    let fl = with_default_route("fo-laptop-crash", 2, "").unwrap();
    let leak = NftCounter::leaks(&fl.lab, &fl.topo.client, "up0", "198.19.0.0/16").unwrap();
    let route = |lab: &Lab| route_get(lab, &fl.topo.client, "198.19.0.100").unwrap();
    assert!(route(&fl.lab).is_ok_and(|r| r.contains("dev failover0")));

    fl.client.daemon.kill().unwrap();
    let gone = time_until(Duration::from_secs(10), || {
        fl.lab
            .exec_unchecked(&fl.topo.client, &["ip", "link", "show", "failover0"])
            .is_ok_and(|o| !o.status.success())
    });
    let after_crash = route(&fl.lab);
    let blackholes = blackhole_routes(&fl.lab, &fl.topo.client).unwrap();
    let sent = send_udp(
        &fl.lab,
        &fl.topo.client,
        SocketAddr::new(Topology::SERVER_IP4.into(), 9999),
        20,
    )
    .unwrap();
    let leaked = leak.packets(&fl.lab).unwrap();
    eprintln!(
        "SIGKILL: TUN gone after {}; ip route get 198.19.0.100: {after_crash:?}; \
         blackhole routes {blackholes:?}; {sent} of 20 sends accepted, {leaked} packets out up0",
        opt_ms(gone)
    );
    assert!(gone.is_some(), "the TUN goes with the process");
    assert!(
        after_crash
            .as_ref()
            .is_err_and(|e| e.contains("Invalid argument")),
        "198.19.0.100 hits the blackhole, not the uplink: {after_crash:?}"
    );
    assert!(
        blackholes
            .iter()
            .any(|r| r.starts_with("blackhole 198.19.0.0/16")),
        "{blackholes:?}"
    );
    assert_eq!(leaked, 0, "nothing leaks through the uplink after a crash");

    // started again, then stopped cleanly: the user gets the uplink back
    let restarted =
        restart_client(&fl.lab, &fl.topo.client, "failoverd-client-2", &fl.client).unwrap();
    let running = route(&fl.lab);
    restarted.daemon.signal(libc::SIGTERM).unwrap();
    let exit = restarted.daemon.wait_exit(Duration::from_secs(10));
    let blackholes = blackhole_routes(&fl.lab, &fl.topo.client).unwrap();
    let after_stop = route(&fl.lab);
    eprintln!(
        "restarted: {running:?}; SIGTERM: exit {exit:?}; blackhole routes {blackholes:?}; \
         ip route get 198.19.0.100: {after_stop:?}"
    );
    assert!(
        running.as_ref().is_ok_and(|r| r.contains("dev failover0")),
        "the restarted client carries the traffic: {running:?}"
    );
    assert!(exit.is_some_and(|e| e.success()), "a clean stop: {exit:?}");
    assert!(
        blackholes.is_empty(),
        "a clean stop removes the blackholes: {blackholes:?}"
    );
    assert!(
        after_stop
            .as_ref()
            .is_ok_and(|r| r.contains(&format!("via {INTERNET_ROUTER} dev up0"))),
        "after a clean stop the uplink carries it: {after_stop:?}"
    );
}
