//! Failover end to end with the real binaries: a client with tunnels to several datacenters, a
//! failoverd gateway in each (claiming the client's stable address on the shared inside segment
//! while it is active), and a verified TCP stream in both directions across every failure.
//!
//! ```text
//!                      ┌─ dc1 [failoverd gateway] ─┐
//!  client [failoverd] ─wan─ dc2 [failoverd gateway] ─ core (shared segment) ─ server
//!                      └─ dc3 [failoverd gateway] ─┘
//! ```
//! Faults are injected inside the datacenter namespaces: nftables drops (both ways or one way),
//! SIGKILL and SIGSTOP of the gateway. Each test prints detection time and the longest stall.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::time::Duration;

use netns_tests::lab::Topology;

use netns_tests::scenario::*;

/// [`across_to`] towards the server's IPv4 address: (ms to the switch, longest stall ms).
fn across(fl: &FailoverLab, what: &str, next: &str, seed: u64, fault: impl FnOnce()) -> (u64, f64) {
    let a = across_to(fl, what, next, seed, Topology::SERVER_IP4.into(), fault).unwrap();
    (a.detect_ms, a.stall_ms)
}

#[test]
fn blackhole_of_the_active_datacenter() {
    let fl = FailoverLab::new("fo-blackhole", 2, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    across(&fl, "blackhole dc1", "dc2", 1, || {
        blackhole(&fl.lab, &dc1, Direction::Both).unwrap()
    });
    let switches = fl.switches().unwrap();
    assert_eq!(
        switches.len(),
        1,
        "{switches:?}\nclient: {}",
        fl.client.status().unwrap()
    );
    // dc2 claims the address now; dc1 (unreachable) releases on its claim timeout
    wait_claimed(&fl.gateways[1]).unwrap();
}

#[test]
fn one_way_loss_towards_the_datacenter() {
    let fl = FailoverLab::new("fo-oneway-up", 2, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    across(&fl, "one-way loss client->dc1", "dc2", 2, || {
        blackhole(&fl.lab, &dc1, Direction::ToDatacenter).unwrap()
    });
}

#[test]
fn one_way_loss_towards_the_client() {
    let fl = FailoverLab::new("fo-oneway-down", 2, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    across(&fl, "one-way loss dc1->client", "dc2", 3, || {
        blackhole(&fl.lab, &dc1, Direction::ToClient).unwrap()
    });
    // dc1 still hears the client's probes: it is told Standby and releases at once
    wait_released(&fl.gateways[0], Duration::from_secs(1)).unwrap();
}

#[test]
fn gateway_sigkill() {
    let fl = FailoverLab::new("fo-sigkill", 2, "").unwrap();
    across(&fl, "SIGKILL of dc1's gateway", "dc2", 4, || {
        fl.gateways[0].daemon.kill().unwrap();
    });
}

#[test]
fn gateway_sigstop() {
    let fl = FailoverLab::new("fo-sigstop", 2, "").unwrap();
    across(&fl, "SIGSTOP of dc1's gateway", "dc2", 5, || {
        fl.gateways[0].daemon.signal(libc::SIGSTOP).unwrap();
    });
    // Woken up, the old gateway hears the client's Standby probes and gives the address back.
    fl.gateways[0].daemon.signal(libc::SIGCONT).unwrap();
    wait_released(&fl.gateways[0], Duration::from_secs(5)).unwrap();
    assert_eq!(
        fl.active().unwrap(),
        "dc2",
        "no failback inside the damped hold-down... or at all yet"
    );
}

#[test]
fn failback_after_recovery() {
    let fl = FailoverLab::new("fo-failback", 2, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    across(&fl, "blackhole dc1", "dc2", 6, || {
        blackhole(&fl.lab, &dc1, Direction::Both).unwrap()
    });
    // heal dc1 during a second stream: traffic returns to dc1 after the hold-down (1 s)
    let healed = unix_millis();
    let (after, stall) = across(&fl, "failback to dc1", "dc1", 7, || {
        heal(&fl.lab, &dc1).unwrap()
    });
    let sw = fl.switches().unwrap();
    let last = sw.last().unwrap();
    assert_eq!(last.reason, "failback");
    let since_heal = last.unix_ms.saturating_sub(healed);
    eprintln!("failback {since_heal} ms after dc1 was healed ({after} ms after the heal was applied); stall {stall:.0} ms");
    assert!(
        since_heal >= 1000,
        "failback waited for the hold-down: {since_heal} ms"
    );
    wait_claimed(&fl.gateways[0]).unwrap();
}

#[test]
fn dc1_then_dc2_fail_ending_on_dc3() {
    let fl = FailoverLab::new("fo-chain", 3, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    let dc2 = fl.dc(2).unwrap().clone();
    let (d1, s1) = across(&fl, "blackhole dc1", "dc2", 8, || {
        blackhole(&fl.lab, &dc1, Direction::Both).unwrap()
    });
    let (d2, s2) = across(&fl, "blackhole dc2", "dc3", 9, || {
        blackhole(&fl.lab, &dc2, Direction::Both).unwrap()
    });
    eprintln!("dc1->dc2: detection {d1} ms stall {s1:.0} ms; dc2->dc3: detection {d2} ms stall {s2:.0} ms");
    assert_eq!(fl.active().unwrap(), "dc3");
    assert_eq!(fl.switches().unwrap().len(), 2);
    wait_claimed(&fl.gateways[2]).unwrap();
}

#[test]
fn blackhole_with_an_ipv6_stream() {
    // the same failover for IPv6 inner traffic: the new gateway's unsolicited neighbour
    // advertisement moves the server's entry for fd00:96::2
    let fl = FailoverLab::new("fo-v6", 2, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    across_to(
        &fl,
        "blackhole dc1 (IPv6 stream)",
        "dc2",
        10,
        Topology::SERVER_IP6.into(),
        || blackhole(&fl.lab, &dc1, Direction::Both).unwrap(),
    )
    .unwrap();
}
