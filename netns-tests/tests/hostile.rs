//! Hostile traffic at the gateway's UDP port while a verified stream runs through it.
//!
//! - Garbage: random bytes, truncated handshakes, wrong message types, 0- and 65 507-byte
//!   datagrams. The stream must complete, the daemons must not panic, drop counters must move.
//! - A handshake flood from many source addresses: MAC1-valid initiations from unknown keys far
//!   above the port's rate limit. The existing client keeps flowing; the gateway answers with
//!   cookies (`under_load`) instead of doing a Diffie-Hellman per packet.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use netns_tests::lab::bin_path;
use netns_tests::scenario::*;

fn total_drops(drops: &serde_json::Value) -> u64 {
    drops
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0)
}

/// Runs `fo-lab ARGS` in the client's namespace and returns its stdout.
fn fo_lab(fl: &FailoverLab, args: &[String]) -> String {
    let mut full = vec![bin_path("fo-lab").display().to_string()];
    full.extend_from_slice(args);
    let out = fl.lab.exec(&fl.topo.client, &full).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn finish(fl: &FailoverLab, stream: &BackgroundStream, what: &str) {
    let report = stream.finish().unwrap();
    eprintln!("stream under {what}: {}", describe(&report));
    assert!(report.ok, "{}", describe(&report));
    assert_eq!(report.up.verified_by_server, stream.bytes);
    assert_eq!(report.down.verified, stream.bytes);
    let gw = &fl.gateways[0];
    assert!(
        gw.daemon.is_running(),
        "gateway died: {}",
        gw.daemon.read_stderr()
    );
    assert!(
        fl.client.daemon.is_running(),
        "client died: {}",
        fl.client.daemon.read_stderr()
    );
    assert!(!gw.daemon.read_stderr().contains("panicked"));
}

#[test]
fn garbage_at_the_port_while_a_stream_runs() {
    let fl = FailoverLab::new("hostile", 1, "").unwrap();
    let stream = spawn_stream(
        &fl.lab,
        &fl.topo.client,
        "stream",
        stream_bytes().min(100_000_000),
        1,
    )
    .unwrap();
    // Garbage from the underlay (the client's namespace, another source port) during the stream.
    let target = format!("198.18.0.11:{WG_PORT}");
    for seed in 1..=3u64 {
        let seed = seed.to_string();
        let out = fo_lab(
            &fl,
            &args(&[
                "garbage", "--target", &target, "--count", "3000", "--seed", &seed,
            ]),
        );
        eprintln!("garbage: {out}");
    }
    finish(&fl, &stream, "garbage");
    let s = fl.gateways[0].status().unwrap();
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
}

#[test]
fn handshake_flood_from_many_sources_while_a_stream_runs() {
    let fl = FailoverLab::new("flood", 1, "").unwrap();
    let mut sources = Vec::new();
    for i in 100..132 {
        fl.lab
            .addr(&fl.topo.client, "up0", &format!("198.18.0.{i}/24"))
            .unwrap();
        sources.push(format!("198.18.0.{i}"));
    }
    let gw_key = fl.gateways[0].status().unwrap()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let stream = spawn_stream(
        &fl.lab,
        &fl.topo.client,
        "stream",
        stream_bytes().min(100_000_000),
        2,
    )
    .unwrap();
    let target = format!("198.18.0.11:{WG_PORT}");
    let sources = sources.join(",");
    let out = fo_lab(
        &fl,
        &args(&[
            "flood",
            "--target",
            &target,
            "--public-key",
            &gw_key,
            "--count",
            "5000",
            "--sources",
            &sources,
        ]),
    );
    eprintln!("flood: {out}");
    finish(&fl, &stream, "a handshake flood");
    let s = fl.gateways[0].status().unwrap();
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
}
