//! Interoperability with Debian's wireguard-go (configured with `wg`), both ways, and cryptokey
//! routing on our gateway against a real peer that sends from an address it may not use.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::time::Duration;

use netns_tests::lab::{wait_until, Lab, Topology};
use netns_tests::scenario::*;

fn interop_bytes() -> u64 {
    stream_bytes().min(50_000_000)
}

fn ping(lab: &Lab, ns: &netns_tests::lab::Ns, args: &[&str]) -> bool {
    let mut full = vec!["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2"];
    full.extend_from_slice(args);
    lab.exec_unchecked(ns, &full)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn our_client_against_a_wireguard_go_gateway() {
    let mut lab = Lab::new("interop-gw").unwrap();
    let topo = Topology::build(&mut lab, 1).unwrap();
    let client_key = keypair(&lab, "client").unwrap();
    let gw_key = keypair(&lab, "dc1").unwrap();
    let ifname = wg_ifname(&lab, "g");
    let allowed = format!("{STABLE_V4}/32,{STABLE_V6}/128");
    let _wg = start_wireguard_go(
        &lab,
        &topo.dcs[0],
        &ifname,
        &gw_key,
        &[
            "listen-port",
            "51820",
            "peer",
            &client_key.public,
            "allowed-ips",
            &allowed,
        ],
        &["100.96.0.1/16", "fd00:96::1/64"],
        &[],
    )
    .unwrap();
    server_route_via(&lab, &topo, 1).unwrap();
    // a plain WireGuard server: probed with ICMP echo to a host behind it
    let dc = DcEntry {
        probe: "icmp",
        probe_address: "198.19.0.100".into(),
        ..DcEntry::failoverd(1, &gw_key.public)
    };
    let client = start_client(&lab, &topo.client, &client_key, &[dc]).unwrap();
    assert!(
        ping(&lab, &topo.client, &["198.19.0.100"]),
        "ping over IPv4 through wireguard-go"
    );
    assert!(
        ping(&lab, &topo.client, &["fd00:19::100"]),
        "ping over IPv6 through wireguard-go"
    );
    let _server = start_stream_server(&lab, &topo).unwrap();
    let bytes = interop_bytes();
    let report = run_stream(&lab, &topo.client, Topology::SERVER_IP4.into(), bytes, 7).unwrap();
    eprintln!("our client -> wireguard-go: {}", describe(&report));
    assert!(report.ok, "{}", describe(&report));
    assert_eq!(report.up.verified_by_server, bytes);
    assert_eq!(report.down.verified, bytes);
    eprintln!("client status: {}", client.status().unwrap());
}

/// A pre-shared key on both sides: wireguard-go refuses any handshake whose pre-shared key
/// differs, so a tunnel that carries a verified stream proves ours went into the handshake.
#[test]
fn our_client_with_a_preshared_key_against_a_wireguard_go_gateway() {
    let mut lab = Lab::new("interop-psk").unwrap();
    let topo = Topology::build(&mut lab, 1).unwrap();
    let client_key = keypair(&lab, "client").unwrap();
    let gw_key = keypair(&lab, "dc1").unwrap();
    let psk = preshared_key(&lab, "dc1").unwrap();
    let psk_arg = psk.display().to_string();
    let ifname = wg_ifname(&lab, "p");
    let allowed = format!("{STABLE_V4}/32,{STABLE_V6}/128");
    let _wg = start_wireguard_go(
        &lab,
        &topo.dcs[0],
        &ifname,
        &gw_key,
        &[
            "listen-port",
            "51820",
            "peer",
            &client_key.public,
            "preshared-key",
            &psk_arg,
            "allowed-ips",
            &allowed,
        ],
        &["100.96.0.1/16", "fd00:96::1/64"],
        &[],
    )
    .unwrap();
    server_route_via(&lab, &topo, 1).unwrap();
    let dc = DcEntry {
        probe: "icmp",
        probe_address: "198.19.0.100".into(),
        preshared_key_file: Some(psk),
        ..DcEntry::failoverd(1, &gw_key.public)
    };
    let client = start_client(&lab, &topo.client, &client_key, &[dc]).unwrap();
    assert!(
        ping(&lab, &topo.client, &["198.19.0.100"]),
        "ping through wireguard-go with a pre-shared key"
    );
    let _server = start_stream_server(&lab, &topo).unwrap();
    let bytes = interop_bytes() / 4;
    let report = run_stream(&lab, &topo.client, Topology::SERVER_IP4.into(), bytes, 9).unwrap();
    eprintln!(
        "our client -> wireguard-go, with a PSK: {}",
        describe(&report)
    );
    assert!(report.ok, "{}", describe(&report));
    assert_eq!(report.down.verified, bytes);
    let status = client.status().unwrap().to_string();
    assert!(
        !status.contains(
            &std::fs::read_to_string(lab.dir().join("dc1.psk"))
                .unwrap()
                .trim()
                .to_owned()
        ),
        "the pre-shared key never appears in the status"
    );
}

fn wireguard_go_client_setup(
    lab: &mut Lab,
    extra_address: Option<&str>,
) -> (Topology, Running, netns_tests::lab::Daemon) {
    let topo = Topology::build(lab, 1).unwrap();
    let client_key = keypair(lab, "client").unwrap();
    let gw_key = keypair(lab, "dc1").unwrap();
    let gw = start_gateway(
        lab,
        &topo.dcs[0],
        "dc1",
        &gw_key,
        &client_key.public,
        "100.96.0.1",
        "fd00:96::1",
        ReturnPath::Static,
    )
    .unwrap();
    server_onlink_routes(lab, &topo).unwrap();
    let ifname = wg_ifname(lab, "c");
    let endpoint = format!("198.18.0.11:{WG_PORT}");
    let mut addresses = vec!["100.96.0.2/32", "fd00:96::2/128"];
    addresses.extend(extra_address);
    wait_claimed(&gw).unwrap();
    let wg = start_wireguard_go(
        lab,
        &topo.client,
        &ifname,
        &client_key,
        &[
            "peer",
            &gw_key.public,
            "endpoint",
            &endpoint,
            "allowed-ips",
            "0.0.0.0/0,::/0",
            "persistent-keepalive",
            "25",
        ],
        &addresses,
        &["198.19.0.0/16", "fd00:19::/64"],
    )
    .unwrap();
    (topo, gw, wg)
}

#[test]
fn a_wireguard_go_client_against_our_gateway() {
    let mut lab = Lab::new("interop-cl").unwrap();
    let (topo, gw, _wg) = wireguard_go_client_setup(&mut lab, None);
    assert!(
        ping(&lab, &topo.client, &["198.19.0.100"]),
        "ping over IPv4 through our gateway"
    );
    assert!(
        ping(&lab, &topo.client, &["fd00:19::100"]),
        "ping over IPv6 through our gateway"
    );
    let _server = start_stream_server(&lab, &topo).unwrap();
    let bytes = interop_bytes();
    let report = run_stream(&lab, &topo.client, Topology::SERVER_IP6.into(), bytes, 8).unwrap();
    eprintln!("wireguard-go client -> our gateway: {}", describe(&report));
    assert!(report.ok, "{}", describe(&report));
    assert_eq!(report.up.verified_by_server, bytes);
    assert_eq!(report.down.verified, bytes);
    let s = gw.status().unwrap();
    eprintln!("gateway status: {s}");
    assert_eq!(s["clients"][0]["established"], true);
}

/// The other way round: a wireguard-go client with a pre-shared key against our gateway, which
/// has the same key for it.
#[test]
fn a_wireguard_go_client_with_a_preshared_key_against_our_gateway() {
    let mut lab = Lab::new("interop-pskc").unwrap();
    let topo = Topology::build(&mut lab, 1).unwrap();
    let client_key = keypair(&lab, "client").unwrap();
    let gw_key = keypair(&lab, "dc1").unwrap();
    let psk = preshared_key(&lab, "laptop").unwrap();
    let gw = start_gateway_with(
        &lab,
        &topo.dcs[0],
        "dc1",
        &gw_key,
        &client_key.public,
        ("100.96.0.1", "fd00:96::1"),
        ReturnPath::Static,
        DEFAULT_MTU,
        &GatewayOptions {
            client: format!("preshared_key_file = \"{}\"\n", psk.display()),
            ..GatewayOptions::default()
        },
    )
    .unwrap();
    server_onlink_routes(&lab, &topo).unwrap();
    wait_claimed(&gw).unwrap();
    let ifname = wg_ifname(&lab, "q");
    let endpoint = format!("198.18.0.11:{WG_PORT}");
    let psk_arg = psk.display().to_string();
    let _wg = start_wireguard_go(
        &lab,
        &topo.client,
        &ifname,
        &client_key,
        &[
            "peer",
            &gw_key.public,
            "preshared-key",
            &psk_arg,
            "endpoint",
            &endpoint,
            "allowed-ips",
            "0.0.0.0/0,::/0",
            "persistent-keepalive",
            "25",
        ],
        &["100.96.0.2/32", "fd00:96::2/128"],
        &["198.19.0.0/16", "fd00:19::/64"],
    )
    .unwrap();
    assert!(
        ping(&lab, &topo.client, &["198.19.0.100"]),
        "ping through our gateway with a pre-shared key"
    );
    let _server = start_stream_server(&lab, &topo).unwrap();
    let bytes = interop_bytes() / 4;
    let report = run_stream(&lab, &topo.client, Topology::SERVER_IP4.into(), bytes, 10).unwrap();
    eprintln!(
        "wireguard-go client with a PSK -> our gateway: {}",
        describe(&report)
    );
    assert!(report.ok, "{}", describe(&report));
    assert_eq!(report.up.verified_by_server, bytes);
    let s = gw.status().unwrap();
    assert_eq!(s["clients"][0]["established"], true);
}

#[test]
fn gateway_drops_inner_sources_outside_the_peers_allowed_ips() {
    let mut lab = Lab::new("cryptokey").unwrap();
    // the wireguard-go client also owns 100.96.0.9, which the gateway does not allow for it
    let (topo, gw, _wg) = wireguard_go_client_setup(&mut lab, Some("100.96.0.9/32"));
    assert!(
        ping(&lab, &topo.client, &["198.19.0.100"]),
        "the allowed source works"
    );
    let before = drop_count(
        &gw.status().unwrap()["clients"][0]["drops"],
        "inner_source_not_allowed",
    );
    assert!(
        !ping(&lab, &topo.client, &["-I", "100.96.0.9", "198.19.0.100"]),
        "a packet from a source outside the allowed IPs must not get through"
    );
    wait_until(
        Duration::from_secs(5),
        "inner_source_not_allowed to count the pings",
        || {
            gw.status()
                .map(|s| {
                    drop_count(&s["clients"][0]["drops"], "inner_source_not_allowed") >= before + 3
                })
                .unwrap_or(false)
        },
    )
    .unwrap();
    let s = gw.status().unwrap();
    eprintln!("gateway status: {s}");
    assert!(gw.daemon.is_running());
}
