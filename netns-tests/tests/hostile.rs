//! Garbage at the gateway's UDP port while a verified stream runs through it: random bytes,
//! truncated handshakes, wrong message types, 0- and 65 507-byte datagrams. The stream must
//! complete, the daemons must not panic, and the drop counters must move.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::time::Duration;

use netns_tests::lab::{bin_path, Lab, Topology};
use netns_tests::scenario::*;
use netns_tests::stream::SendReport;

fn total_drops(drops: &serde_json::Value) -> u64 {
    drops
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0)
}

#[test]
fn garbage_at_the_port_while_a_stream_runs() {
    let mut lab = Lab::new("hostile").unwrap();
    let topo = Topology::build(&mut lab, 1).unwrap();
    let client_key = keypair(&lab, "client").unwrap();
    let gw_key = keypair(&lab, "dc1").unwrap();
    let gw = start_gateway(
        &lab,
        &topo.dcs[0],
        "dc1",
        &gw_key,
        &client_key.public,
        "100.96.0.1",
        "fd00:96::1",
        ReturnPath::Claim,
    )
    .unwrap();
    server_onlink_routes(&lab, &topo).unwrap();
    let client = start_client(
        &lab,
        &topo.client,
        &client_key,
        &[DcEntry::failoverd(1, &gw_key.public)],
    )
    .unwrap();
    wait_claimed(&gw).unwrap();
    let _server = start_stream_server(&lab, &topo).unwrap();
    let bytes = stream_bytes().min(100_000_000);
    let stream = lab
        .spawn(
            &topo.client,
            "stream-send",
            &[
                bin_path("fo-lab").display().to_string(),
                "stream-send".into(),
                "--connect".into(),
                format!("198.19.0.100:{STREAM_PORT}"),
                "--up".into(),
                bytes.to_string(),
                "--down".into(),
                bytes.to_string(),
                "--timeout-secs".into(),
                "240".into(),
            ],
        )
        .unwrap();
    // Garbage from the underlay (the client's namespace, another source port) and from the
    // gateway's inside towards its own underlay address, both during the stream.
    for seed in 1..=3u64 {
        let out = lab
            .exec(
                &topo.client,
                &[
                    bin_path("fo-lab").display().to_string(),
                    "garbage".into(),
                    "--target".into(),
                    format!("198.18.0.11:{WG_PORT}"),
                    "--count".into(),
                    "3000".into(),
                    "--seed".into(),
                    seed.to_string(),
                ],
            )
            .unwrap();
        eprintln!("garbage: {}", String::from_utf8_lossy(&out.stdout).trim());
    }
    let status = stream
        .wait_exit(Duration::from_secs(300))
        .expect("stream finished");
    let report = SendReport::parse(&stream.read_stdout()).unwrap();
    eprintln!("stream under garbage: {}", describe(&report));
    assert!(status.success() && report.ok, "{}", describe(&report));
    assert_eq!(report.up.verified_by_server, bytes);
    assert_eq!(report.down.verified, bytes);

    assert!(
        gw.daemon.is_running(),
        "gateway died: {}",
        gw.daemon.read_stderr()
    );
    assert!(
        client.daemon.is_running(),
        "client died: {}",
        client.daemon.read_stderr()
    );
    let s = gw.status().unwrap();
    eprintln!("gateway status: {s}");
    let port = total_drops(&s["port_drops"]);
    let peer = total_drops(&s["clients"][0]["drops"]);
    assert!(
        drop_count(&s["port_drops"], "malformed") > 0,
        "malformed datagrams counted"
    );
    assert!(
        port + peer > 1000,
        "drops counted: port {port}, peer {peer}"
    );
    assert!(!gw.daemon.read_stderr().contains("panicked"));
}

/// A handshake flood from many source addresses (MAC1-valid initiations from unknown keys, far
/// above the port's rate limit) while a verified stream runs: the existing client keeps flowing,
/// the gateway answers with cookies (`under_load`) instead of doing a Diffie-Hellman per packet.
#[test]
fn handshake_flood_from_many_sources_while_a_stream_runs() {
    let mut lab = Lab::new("flood").unwrap();
    let topo = Topology::build(&mut lab, 1).unwrap();
    let client_key = keypair(&lab, "client").unwrap();
    let gw_key = keypair(&lab, "dc1").unwrap();
    let gw = start_gateway(
        &lab,
        &topo.dcs[0],
        "dc1",
        &gw_key,
        &client_key.public,
        "100.96.0.1",
        "fd00:96::1",
        ReturnPath::Claim,
    )
    .unwrap();
    server_onlink_routes(&lab, &topo).unwrap();
    let client = start_client(
        &lab,
        &topo.client,
        &client_key,
        &[DcEntry::failoverd(1, &gw_key.public)],
    )
    .unwrap();
    let mut sources = Vec::new();
    for i in 100..132 {
        lab.addr(&topo.client, "up0", &format!("198.18.0.{i}/24"))
            .unwrap();
        sources.push(format!("198.18.0.{i}"));
    }
    let _server = start_stream_server(&lab, &topo).unwrap();
    let bytes = stream_bytes().min(100_000_000);
    let stream = lab
        .spawn(
            &topo.client,
            "stream-send",
            &[
                bin_path("fo-lab").display().to_string(),
                "stream-send".into(),
                "--connect".into(),
                format!("198.19.0.100:{STREAM_PORT}"),
                "--up".into(),
                bytes.to_string(),
                "--down".into(),
                bytes.to_string(),
                "--timeout-secs".into(),
                "240".into(),
            ],
        )
        .unwrap();
    let out = lab
        .exec(
            &topo.client,
            &[
                bin_path("fo-lab").display().to_string(),
                "flood".into(),
                "--target".into(),
                format!("198.18.0.11:{WG_PORT}"),
                "--public-key".into(),
                gw_key.public.clone(),
                "--count".into(),
                "5000".into(),
                "--sources".into(),
                sources.join(","),
            ],
        )
        .unwrap();
    eprintln!("flood: {}", String::from_utf8_lossy(&out.stdout).trim());
    let status = stream
        .wait_exit(Duration::from_secs(300))
        .expect("stream finished");
    let report = SendReport::parse(&stream.read_stdout()).unwrap();
    eprintln!("stream under a handshake flood: {}", describe(&report));
    assert!(status.success() && report.ok, "{}", describe(&report));
    assert_eq!(report.down.verified, bytes);
    assert_eq!(report.up.verified_by_server, bytes);
    let s = gw.status().unwrap();
    eprintln!("gateway status: {s}");
    assert!(
        drop_count(&s["port_drops"], "under_load") > 0,
        "cookies were sent under load"
    );
    assert!(
        drop_count(&s["port_drops"], "unknown_peer") > 0,
        "unknown keys refused"
    );
    assert_eq!(s["clients"][0]["established"], true);
    assert!(gw.daemon.is_running() && client.daemon.is_running());
}
