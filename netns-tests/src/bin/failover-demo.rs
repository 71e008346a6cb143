//! The live demo: builds the namespace lab, starts a real gateway and client, pushes a verified
//! TCP stream through the tunnel in both directions, prints what happened, and cleans up.
//!
//! Run as root: `scripts/demo` (which builds everything first).

// Indexing here is into serde_json::Value, whose Index yields Null for a missing key or element
// and never panics.
#![allow(clippy::indexing_slicing)]

use std::net::IpAddr;
use std::process::ExitCode;

use netns_tests::lab::{Lab, Topology};
use netns_tests::scenario::*;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> std::io::Result<bool> {
    let bytes = stream_bytes();
    let mut lab = Lab::new("demo")?;
    println!(
        "== building the lab: client, wan, dc1, core, server (namespaces {})",
        lab.id()
    );
    let topo = Topology::build(&mut lab, 1)?;
    let client_key = keypair(&lab, "client")?;
    let gw_key = keypair(&lab, "dc1")?;
    println!("== starting failoverd gateway in dc1 (198.18.0.11:{WG_PORT}, inner 100.96.0.1)");
    let gw = start_gateway(
        &lab,
        topo.dc(1)
            .ok_or_else(|| std::io::Error::other("the lab has no dc1"))?,
        "dc1",
        &gw_key,
        &client_key.public,
        "100.96.0.1",
        "fd00:96::1",
    )?;
    server_return_route(&lab, &topo, 1)?;
    println!("== starting failoverd client (stable address {STABLE_V4}, {STABLE_V6})");
    let client = start_client(
        &lab,
        &topo.client,
        &client_key,
        &[DcEntry {
            name: "dc1".into(),
            endpoint: format!("198.18.0.11:{WG_PORT}"),
            public: gw_key.public.clone(),
        }],
    )?;
    let status = client.status()?;
    println!(
        "   tunnel to dc1 established: {}",
        status["datacenters"][0]["established"]
    );
    let _server = start_stream_server(&lab, &topo)?;
    let mut all_ok = true;
    for (seed, server) in [
        (1u64, IpAddr::from(Topology::SERVER_IP4)),
        (2, IpAddr::from(Topology::SERVER_IP6)),
    ] {
        println!(
            "== verified stream {bytes} B each way: client -> tunnel -> dc1 -> server {server}"
        );
        let report = run_stream(&lab, &topo.client, server, bytes, seed)?;
        println!("   {}", describe(&report));
        all_ok &= report.ok;
    }
    let c = client.status()?;
    let g = gw.status()?;
    let dc = &c["datacenters"][0];
    println!(
        "== client: active {} tx {} B rx {} B handshakes {} drops {}",
        c["active"], dc["tx_bytes"], dc["rx_bytes"], dc["handshakes"], dc["drops"]
    );
    let cl = &g["clients"][0];
    println!(
        "== gateway: client endpoint {} rx {} B tx {} B drops {} port drops {}",
        cl["endpoint"], cl["rx_bytes"], cl["tx_bytes"], cl["drops"], g["port_drops"]
    );
    println!(
        "== {}; cleaning up the lab",
        if all_ok {
            "every byte verified"
        } else {
            "FAILED"
        }
    );
    Ok(all_ok)
}
