//! An unmodified Linux guest behind `vmm-shim` survives a datacenter failure, over both front
//! ends (QEMU `-netdev stream` and vhost-user-net). The guest takes its address by DHCP (or
//! keeps a static one of its own), pings the server behind the datacenters, then runs a
//! verified TCP stream both ways to it; mid-stream the active datacenter is blackholed. The
//! stream must complete with every byte verified at both ends, and the guest is never told
//! anything.
//!
//! QEMU runs under TCG (see `shared/VMM-GUEST.md`), so the guest's throughput is a few MB/s:
//! the streams are sized for that.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netns_tests::guest::{Frontend, ShimLab};
use netns_tests::lab::{require_root, Topology};
use netns_tests::scenario::{blackhole, describe, Direction, STREAM_PORT};

/// Bytes each way through the guest: enough for the failover to land mid-stream.
fn guest_stream_bytes() -> u64 {
    std::env::var("FAILOVER_GUEST_STREAM_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000_000)
}

const DHCP_GUEST: &str =
    "address = \"10.200.0.2/24\"\ngateway = \"10.200.0.1\"\nmac = \"52:54:00:12:34:56\"";

/// The guest's scenario: wait for a global IPv6 address when the server is IPv6 (SLAAC from
/// the shim's router advertisement), ping the server, run the verified stream.
fn stream_script(server: IpAddr, bytes: u64) -> String {
    let wait_v6 = if server.is_ipv6() {
        "i=0\n\
         until ip -6 addr show dev eth0 scope global | grep inet6 | grep -qv tentative; do\n\
         i=$((i + 1)); [ $i -le 100 ] || { echo FO-NO-IPV6; exit 11; }; sleep 0.1\n\
         done\n\
         echo \"FO-IPV6 $(ip -6 addr show dev eth0 scope global | grep inet6)\"\n"
    } else {
        ""
    };
    let target = SocketAddr::new(server, STREAM_PORT);
    format!(
        "{wait_v6}\
         ping -c 2 -W 5 {server} >/dev/null || {{ echo FO-PING-FAILED; exit 10; }}\n\
         echo FO-PING-OK\n\
         fo-lab stream-send --connect {target} --up {bytes} --down {bytes} \
         --seed 11 --timeout-secs 240 >/tmp/report.json\n\
         rc=$?\n\
         echo \"FO-STREAM $(cat /tmp/report.json)\"\n\
         exit $rc\n"
    )
}

/// Boots a guest, blackholes dc1 once the stream flows, and checks that every byte arrived.
fn survives_a_failover(test: &str, frontend: Frontend, guest: &str, net: &str, server: IpAddr) {
    require_root();
    let bytes = guest_stream_bytes();
    let mut sl = ShimLab::new(test, 2, frontend, guest, "failback = false\n").unwrap();
    let qemu = sl.boot(net, &stream_script(server, bytes)).unwrap();
    // the stream is flowing through the shim: a quarter of it has come down the tunnel
    sl.shim.wait_flowing(bytes / 4).unwrap_or_else(|e| {
        panic!(
            "{e}; console so far:\n{}",
            netns_tests::guest::clean_console(
                &std::fs::read_to_string(qemu.stdout_path()).unwrap_or_default()
            )
        )
    });
    blackhole(&sl.lab, sl.dc(1).unwrap(), Direction::Both).unwrap();
    sl.shim.wait_active("dc2", Duration::from_secs(5)).unwrap();
    let run = sl.wait_result(&qemu, Duration::from_secs(300)).unwrap();
    let report = run.stream_report().unwrap();
    let switches = sl.shim.switches().unwrap();
    let status = sl.shim.status().unwrap();
    eprintln!(
        "{} guest ({net}): {}; switches {:?}; guest link {}",
        frontend.label(),
        describe(&report),
        switches
            .iter()
            .map(|s| format!("{}->{} {} {:?} ms", s.from, s.to, s.reason, s.detection_ms))
            .collect::<Vec<_>>(),
        status["guest"]
    );
    assert_eq!(run.rc, 0, "console:\n{}", run.console);
    assert!(run.console.contains("FO-PING-OK"), "{}", run.console);
    assert!(report.ok, "{}", describe(&report));
    assert_eq!(report.down.verified, bytes);
    assert_eq!(report.up.verified_by_server, bytes);
    assert_eq!(switches.len(), 1, "{switches:?}");
    assert_eq!(switches[0].to, "dc2");
    // the guest was never reconfigured: one DHCP exchange (offer, ack) at boot at most
    assert!(
        status["guest"]["dhcp_replies"].as_u64().unwrap() <= 2,
        "{status}"
    );
    assert_eq!(
        status["guest"]["addresses"][0].as_str(),
        guest
            .lines()
            .find_map(|l| l.strip_prefix("address = \""))
            .and_then(|a| a.split('/').next())
    );
    if server.is_ipv6() {
        // the address the shim learned is the one the guest configured
        let learned = status["guest"]["addresses"][1].as_str().unwrap_or("none");
        let line = run
            .console
            .lines()
            .find(|l| l.starts_with("FO-IPV6"))
            .unwrap();
        assert!(
            line.contains(&format!(" {learned}/")),
            "{learned} vs {line}"
        );
    }
}

#[test]
fn a_dhcp_guest_over_a_stream_socket_survives_a_datacenter_failure() {
    survives_a_failover(
        "gstrm",
        Frontend::StreamFd,
        DHCP_GUEST,
        "fo.net=dhcp",
        Topology::SERVER_IP4.into(),
    );
}

#[test]
fn a_dhcp_guest_over_vhost_user_survives_a_datacenter_failure() {
    survives_a_failover(
        "gvhost",
        Frontend::VhostUser,
        DHCP_GUEST,
        "fo.net=dhcp",
        Topology::SERVER_IP4.into(),
    );
}

#[test]
fn a_guest_with_its_own_static_address_survives_a_datacenter_failure() {
    // an address unrelated to the VPN's, and a router address of the guest's own choosing
    let guest = "address = \"192.168.77.5/24\"\ngateway = \"192.168.77.254\"";
    survives_a_failover(
        "gstatic",
        Frontend::StreamListen,
        guest,
        "fo.net=static fo.addr=192.168.77.5/24 fo.gw=192.168.77.254",
        Topology::SERVER_IP4.into(),
    );
}

#[test]
fn an_ipv6_guest_on_slaac_survives_a_datacenter_failure() {
    // the shim's router advertisement gives the prefix; the guest's own duplicate address
    // detection tells the shim which address the guest chose
    let guest = format!("{DHCP_GUEST}\nprefix6 = \"fd00:200::/64\"");
    survives_a_failover(
        "gipv6",
        Frontend::VhostUser,
        &guest,
        "fo.net=dhcp",
        Topology::SERVER_IP6.into(),
    );
}
