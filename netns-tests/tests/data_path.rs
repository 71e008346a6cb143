//! End to end through the real binaries: client → dc1 gateway → server, 200 MB each way over
//! TCP, every byte verified, IPv4 and IPv6 inner.
//!
//! ```text
//!  client [failoverd] ─up0─ wan(brwan) ─wan0─ dc1 [failoverd gateway] ─in0─ core(brcore) ─ server
//!   100.96.0.2 / fd00:96::2        198.18.0.0/24            198.19.0.0/24, fd00:19::/64
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use netns_tests::lab::Topology;
use netns_tests::scenario::*;

#[test]
fn client_gateway_server_verified_stream_v4_and_v6() {
    let fl = FailoverLab::new("datapath", 1, "").unwrap();
    let bytes = stream_bytes();
    for (i, server) in [Topology::SERVER_IP4.into(), Topology::SERVER_IP6.into()]
        .into_iter()
        .enumerate()
    {
        let report = run_stream(&fl.lab, &fl.topo.client, server, bytes, 100 + i as u64).unwrap();
        eprintln!("stream to {server}: {}", describe(&report));
        assert!(
            report.ok,
            "stream to {server} failed: {}",
            describe(&report)
        );
        assert_eq!(report.up.verified_by_server, bytes);
        assert_eq!(report.down.verified, bytes);
        assert_eq!(report.up.corrupt_at, None);
        assert_eq!(report.down.corrupt_at, None);
    }
    let gs = fl.gateways[0].status().unwrap();
    let cs = fl.client.status().unwrap();
    eprintln!("gateway status: {gs}");
    eprintln!("client status: {cs}");
    let inner = &gs["clients"][0]["drops"];
    assert_eq!(drop_count(inner, "inner_malformed"), 0);
    assert_eq!(drop_count(inner, "inner_source_not_allowed"), 0);
    assert!(gs["clients"][0]["rx_bytes"].as_u64().unwrap() >= 2 * bytes);
    assert_eq!(cs["active"], "dc1");
}
