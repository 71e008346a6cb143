//! The session keeper with the real binaries, the kernel as the judge.
//!
//! - Rewriting: the client's TUN carries a *local* address (10.200.0.2, fd00:200::2) and the
//!   session keeper maps it to the stable one both ways. Traffic of every awkward kind crosses
//!   it — TCP both ways, UDP with checksum 0 both ways, fragments both ways, ICMP errors from
//!   the server side (port unreachable, TTL exceeded, fragmentation needed, IPv6 packet too big)
//!   — and the kernels at both ends must (a) act on it (a connected socket sees ECONNREFUSED,
//!   ping sees the TTL error, the route cache learns the smaller MTU) and (b) count no checksum
//!   error anywhere (`InCsumErrors` in /proc/net/snmp, snmp6 and netstat unchanged).
//! - MSS clamping: dc1 at MTU 1420, dc2 at 1280; a verified stream survives the switch.
//! - Flow-table exhaustion: a million distinct 5-tuples from the host side while a verified
//!   stream runs; the table stays within its cap and the stream survives.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use netns_tests::lab::{Lab, Ns, Topology};
use netns_tests::scenario::*;

const LOCAL_V4: &str = "10.200.0.2";
const LOCAL_V6: &str = "fd00:200::2";

/// Every counter of /proc/net/snmp, /proc/net/netstat and /proc/net/snmp6 in `ns`, as
/// "Group.Field".
fn kernel_counters(lab: &Lab, ns: &Ns) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = String::from_utf8(lab.exec(ns, &["cat", file]).unwrap().stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let (group, names) = names.split_once(':').unwrap();
            let (_, values) = values.split_once(':').unwrap();
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if let Ok(v) = v.parse::<u64>() {
                    out.insert(format!("{group}.{n}"), v);
                }
            }
        }
    }
    let text =
        String::from_utf8(lab.exec(ns, &["cat", "/proc/net/snmp6"]).unwrap().stdout).unwrap();
    for line in text.lines() {
        if let Some((n, v)) = line.split_once(char::is_whitespace) {
            if let Ok(v) = v.trim().parse::<u64>() {
                out.insert(n.to_owned(), v);
            }
        }
    }
    out
}

fn csum_errors(c: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    c.iter()
        .filter(|(k, _)| k.contains("CsumErrors"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, key: &str) -> u64 {
    after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0)
}

/// Sends `n` UDP datagrams with checksum 0 (IPv4: "no checksum") from `ns` to `dst:port`,
/// through a raw socket so the kernel does not fill the checksum in.
fn send_udp_without_checksum(lab: &Lab, ns: &Ns, dst: Ipv4Addr, port: u16, n: usize) {
    lab.run_in(ns, || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).unwrap();
        let mut d = vec![0u8; 8 + 64];
        d[0..2].copy_from_slice(&40_000u16.to_be_bytes());
        d[2..4].copy_from_slice(&port.to_be_bytes());
        let len = d.len() as u16;
        d[4..6].copy_from_slice(&len.to_be_bytes());
        // d[6..8] stays 0: no checksum
        for i in 0..n {
            d[8] = i as u8;
            s.send_to(&d, &SocketAddr::new(dst.into(), 0).into())
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .unwrap();
}

/// A connected UDP socket in `ns` sends to a closed port of `dst` until the ICMP port
/// unreachable that comes back is delivered to it as ECONNREFUSED.
fn expect_refused(lab: &Lab, ns: &Ns, dst: IpAddr) {
    let ok = lab
        .run_in(ns, || {
            let bind: SocketAddr = if dst.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let s = UdpSocket::bind(bind).unwrap();
            s.connect(SocketAddr::new(dst, 9_999)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1_200))).unwrap();
            let mut buf = [0u8; 16];
            // ICMP errors are rate limited per destination: a few tries, a second apart
            (0..4).any(|_| {
                let _ = s.send(b"anyone there?");
                matches!(s.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
            })
        })
        .unwrap();
    assert!(
        ok,
        "no ECONNREFUSED from {dst}: the port unreachable's quoted packet did not match the socket"
    );
}

fn ping(lab: &Lab, ns: &Ns, args: &[&str]) -> String {
    let mut a = vec!["ping"];
    a.extend_from_slice(args);
    let out = lab.exec_unchecked(ns, &a).unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ping_ok(lab: &Lab, ns: &Ns, args: &[&str]) {
    let mut a = vec!["ping"];
    a.extend_from_slice(args);
    let out = lab.exec_unchecked(ns, &a).unwrap();
    assert!(
        out.status.success(),
        "ping {args:?} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn route_get(lab: &Lab, ns: &Ns, args: &[&str]) -> String {
    let mut a = vec!["ip"];
    a.extend_from_slice(args);
    String::from_utf8_lossy(&lab.exec(ns, &a).unwrap().stdout).into_owned()
}

fn keeper_status(fl: &FailoverLab) -> serde_json::Value {
    fl.client.status().unwrap()["sessionkeeper"].clone()
}

#[test]
fn rewritten_packets_pass_the_kernels_checksums() {
    let fl = FailoverLab::new(
        "skcsum",
        1,
        &format!("local_address = [\"{LOCAL_V4}\", \"{LOCAL_V6}\"]\n"),
    )
    .unwrap();
    let (lab, client, server) = (&fl.lab, &fl.topo.client, &fl.topo.server);
    let dc1 = fl.dc(1).unwrap();
    let server4: IpAddr = Topology::SERVER_IP4.into();
    let s4 = Topology::SERVER_IP4.to_string();
    let server6: IpAddr = Topology::SERVER_IP6.into();
    let s6 = Topology::SERVER_IP6.to_string();
    let (c0, s0) = (kernel_counters(lab, client), kernel_counters(lab, server));

    // ICMP errors from the server side, first (they are rate limited per destination)
    expect_refused(lab, client, server4);
    expect_refused(lab, client, server6);
    let ttl4 = ping(
        lab,
        client,
        &["-n", "-c", "1", "-W", "2", "-t", "1", s4.as_str()],
    );
    assert!(ttl4.contains("Time to live exceeded"), "{ttl4}");
    let ttl6 = ping(
        lab,
        client,
        &["-6", "-n", "-c", "1", "-W", "2", "-t", "1", s6.as_str()],
    );
    assert!(ttl6.contains("Time exceeded"), "{ttl6}");

    // TCP both ways, IPv4 and IPv6, every byte verified
    for (dst, seed) in [(server4, 1), (server6, 2)] {
        let report = run_stream(lab, client, dst, 20_000_000, seed).unwrap();
        eprintln!("stream to {dst}: {}", describe(&report));
        assert!(report.ok, "{}", describe(&report));
    }

    // fragments both ways
    ping_ok(
        lab,
        client,
        &["-n", "-c", "3", "-i", "0.2", "-s", "3000", s4.as_str()],
    );
    ping_ok(
        lab,
        client,
        &[
            "-6",
            "-n",
            "-c",
            "3",
            "-i",
            "0.2",
            "-s",
            "3000",
            s6.as_str(),
        ],
    );
    ping_ok(
        lab,
        server,
        &["-n", "-c", "3", "-i", "0.2", "-s", "3000", STABLE_V4],
    );
    ping_ok(
        lab,
        server,
        &["-6", "-n", "-c", "3", "-i", "0.2", "-s", "3000", STABLE_V6],
    );

    // UDP without checksum both ways, to closed ports
    send_udp_without_checksum(lab, client, Topology::SERVER_IP4, 7_001, 50);
    send_udp_without_checksum(lab, server, STABLE_V4.parse().unwrap(), 7_002, 50);

    // fragmentation needed and packet too big: a narrower link behind the gateway
    lab.exec(dc1, &["ip", "link", "set", "in0", "mtu", "1280"])
        .unwrap();
    ping(
        lab,
        client,
        &[
            "-n",
            "-c",
            "2",
            "-i",
            "0.3",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1300",
            s4.as_str(),
        ],
    );
    ping(
        lab,
        client,
        &[
            "-6",
            "-n",
            "-c",
            "2",
            "-i",
            "0.3",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1300",
            s6.as_str(),
        ],
    );
    let r4 = route_get(lab, client, &["route", "get", s4.as_str()]);
    let r6 = route_get(lab, client, &["-6", "route", "get", s6.as_str()]);
    lab.exec(dc1, &["ip", "link", "set", "in0", "mtu", "1500"])
        .unwrap();
    assert!(
        r4.contains("mtu 1280"),
        "the client did not learn the path MTU: {r4}"
    );
    assert!(
        r6.contains("mtu 1280"),
        "the client did not learn the IPv6 path MTU: {r6}"
    );

    let (c1, s1) = (kernel_counters(lab, client), kernel_counters(lab, server));
    assert!(
        delta(&s0, &s1, "Udp.NoPorts") >= 50,
        "the server did not get the checksum-less datagrams"
    );
    assert!(
        delta(&c0, &c1, "Udp.NoPorts") >= 50,
        "the client did not get the checksum-less datagrams"
    );
    assert_eq!(
        csum_errors(&c0),
        csum_errors(&c1),
        "checksum errors at the client"
    );
    assert_eq!(
        csum_errors(&s0),
        csum_errors(&s1),
        "checksum errors at the server"
    );
    let k = keeper_status(&fl);
    eprintln!("sessionkeeper: {k}");
    // port unreachable ×2, TTL ×2, frag needed, packet too big, and the ICMP errors the
    // checksum-less datagrams drew
    assert!(k["quoted_rewritten"].as_u64().unwrap() >= 6, "{k}");
    eprintln!(
        "kernel checksum error counters unchanged at both ends: {:?}",
        csum_errors(&c1).keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_stream_survives_a_switch_to_a_smaller_mtu() {
    let fl = FailoverLab::with_mtus("skmtu", 2, "failback = false\n", &[1420, 1280]).unwrap();
    let bytes = stream_bytes().min(60_000_000);
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "mtu", bytes, 3).unwrap();
    fl.wait_flowing(5_000_000).unwrap();
    blackhole(&fl.lab, fl.dc(1).unwrap(), Direction::Both).unwrap();
    fl.wait_active("dc2", Duration::from_secs(5)).unwrap();
    let report = stream.finish().unwrap();
    eprintln!("dc1 (1420) -> dc2 (1280): {}", describe(&report));
    assert!(report.ok, "{}", describe(&report));
    assert_eq!(report.down.verified, bytes);
    assert_eq!(report.up.verified_by_server, bytes);
    let k = keeper_status(&fl);
    // the server's SYN-ACK offered 1460; the keeper lowered it to fit 1280
    assert!(k["mss_clamped"].as_u64().unwrap() >= 1, "{k}");
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_million_tuples_stay_within_the_cap_and_a_stream_survives() {
    const CAP: u64 = 65_536;
    const TUPLES: u32 = 1_000_000;
    let fl = FailoverLab::new("skflows", 1, &format!("flow_table_size = {CAP}\n")).unwrap();
    let rss_before = rss_kib(fl.client.daemon.pid());
    let bytes = stream_bytes().min(200_000_000);
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "long", bytes, 4).unwrap();
    fl.wait_flowing(5_000_000).unwrap();
    // a million distinct (source port, destination port) pairs to the server, paced so the
    // TUN queue does not simply drop them before the daemon sees them
    fl.lab
        .run_in(&fl.topo.client, || {
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).unwrap();
            let to = SocketAddr::new(Topology::SERVER_IP4.into(), 0);
            let to = to.into();
            let mut d = [0u8; 8];
            d[4..6].copy_from_slice(&8u16.to_be_bytes());
            for i in 0..TUPLES {
                let sport = 1_024 + (i % 64_000) as u16;
                let dport = 20_000 + (i / 64_000) as u16;
                d[0..2].copy_from_slice(&sport.to_be_bytes());
                d[2..4].copy_from_slice(&dport.to_be_bytes());
                let _ = s.send_to(&d, &to);
                if i % 200 == 0 {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        })
        .unwrap();
    let k = keeper_status(&fl);
    let rss_after = rss_kib(fl.client.daemon.pid());
    let report = stream.finish().unwrap();
    eprintln!("during the scan: {}", describe(&report));
    eprintln!(
        "sessionkeeper after {TUPLES} tuples: {k}; client RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(report.ok, "{}", describe(&report));
    assert_eq!(report.down.verified, bytes);
    let flows = k["flows"].as_u64().unwrap();
    assert!(flows <= CAP, "{flows} flows over the cap of {CAP}");
    // The TUN queue drops what the daemon cannot read while it also carries the stream (on 2
    // cores a third to a half of the tuples get through): what counts is that the table
    // overflowed its cap many times over and kept only probation flows out.
    assert!(
        k["flows_created"].as_u64().unwrap() >= 4 * CAP,
        "the scan did not reach the flow table: {k}"
    );
    assert!(
        k["flows_evicted_probation"].as_u64().unwrap() >= 2 * CAP,
        "{k}"
    );
    assert_eq!(k["flows_evicted_protected"].as_u64().unwrap(), 0, "{k}");
    // the table's own estimate, and the process: well within 64 MiB at this cap
    assert!(k["flow_memory_bytes"].as_u64().unwrap() < 32 << 20, "{k}");
    assert!(rss_after < 64 * 1024, "client RSS {rss_after} KiB");
}
