//! `wg show` reads a running client through the read-only WireGuard configuration socket:
//! Debian's `wg`, the real daemon, two datacenters; no secret in the answer; `wg set` refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use netns_tests::scenario::*;

#[test]
fn wg_show_lists_one_peer_per_datacenter_without_secrets() {
    // the socket directory is not per namespace: a name no other test uses
    let ifname = format!("fows{}", std::process::id() % 100_000);
    let fl = FailoverLab::new("wg-show", 2, &format!("interface = \"{ifname}\"\n")).unwrap();
    let config = std::fs::read_to_string(&fl.client.config).unwrap();
    let gateway_keys: Vec<&str> = config
        .lines()
        .filter_map(|l| l.strip_prefix("public_key = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert_eq!(gateway_keys.len(), 2, "{config}");

    // wg show IF dump: the device line, then one line per peer, tab-separated
    let out = fl
        .lab
        .exec(&fl.topo.client, &["wg", "show", &ifname, "dump"])
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("wg show {ifname} dump:\n{dump}");
    let lines: Vec<Vec<&str>> = dump.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 3, "a device and two peers: {dump}");
    let device = &lines[0];
    assert_eq!(device[0], "(none)", "no private key leaves the daemon");
    assert_eq!(
        device[1], "(none)",
        "nor a public key made up from a zero one"
    );
    assert_ne!(device[2], "0", "the underlay socket's port");
    for (i, (peer, key)) in lines[1..].iter().zip(&gateway_keys).enumerate() {
        assert_eq!(peer[0], *key, "peer {i}: the gateway's public key");
        assert_eq!(peer[1], "(none)", "peer {i}: no pre-shared key shown");
        assert_eq!(
            peer[2],
            format!("198.18.0.{}:51820", 11 + i),
            "peer {i}: endpoint"
        );
        assert_eq!(peer[3], "0.0.0.0/0,::/0", "peer {i}: allowed IPs");
        let handshake: u64 = peer[4].parse().unwrap();
        #[allow(clippy::disallowed_methods)] // wall time, to judge wg show's
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            handshake > 0 && now.abs_diff(handshake) < 120,
            "peer {i}: a recent handshake, got {handshake} at {now}"
        );
        let (rx, tx): (u64, u64) = (peer[5].parse().unwrap(), peer[6].parse().unwrap());
        assert!(rx > 0 && tx > 0, "peer {i}: probes went both ways");
        assert_eq!(peer[7], "25", "peer {i}: keepalive");
    }

    // showconf: nothing secret either
    let out = fl
        .lab
        .exec(&fl.topo.client, &["wg", "showconf", &ifname])
        .unwrap();
    let conf = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!conf.contains("PrivateKey"), "{conf}");
    assert!(!conf.contains("PresharedKey"), "{conf}");
    assert_eq!(conf.matches("[Peer]").count(), 2, "{conf}");

    // wg set is refused, and changes nothing
    let out = fl
        .lab
        .exec_unchecked(&fl.topo.client, &["wg", "set", &ifname, "listen-port", "1"])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "wg set must fail");
    assert!(err.contains("Operation not permitted"), "{err}");
    let again = fl
        .lab
        .exec(&fl.topo.client, &["wg", "show", &ifname, "listen-port"])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        device[2],
        "the port is what it was"
    );
}
