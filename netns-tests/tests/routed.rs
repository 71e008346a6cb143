//! Routed datacenters: the return path moves by BGP. Each gateway claims with the `route`
//! backend (a kernel route of protocol 209, metric from the client's switch generation); BIRD
//! beside it (the configuration shipped in `dist/bird/`) announces it over eBGP with BFD to the
//! backbone in front of the server, which prefers the newest claim (lowest MED).
//!
//! Every test runs a verified TCP stream both ways across the fault, asserts every byte and a
//! stall under 2 s, and prints detection, return-path convergence (the client's switch → the
//! backbone's FIB changed, from `ip -ts monitor route` there) and the stall per direction.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::net::IpAddr;
use std::time::Duration;

use netns_tests::lab::Topology;
use netns_tests::routed::{monitor_routes, routed_to_at, Routed};
use netns_tests::scenario::*;

fn stable() -> IpAddr {
    STABLE_V4.parse().unwrap()
}

/// A failover from dc `from` to `to` in the routed lab: the stream verified, the backbone
/// routing the client to `to`, the convergence printed. Returns (detection ms, convergence
/// ms, stall ms).
fn routed_across(
    fl: &FailoverLab,
    routed: &Routed,
    what: &str,
    (from, to): (usize, usize),
    seed: u64,
    fault: impl FnOnce(),
) -> (u64, u64, f64) {
    let mon = monitor_routes(&fl.lab, &fl.topo.core, &format!("monitor{seed}")).unwrap();
    assert_eq!(routed.backbone_via(&fl.lab, stable()), Some(from));
    let a = across_to(
        fl,
        what,
        &format!("dc{to}"),
        seed,
        Topology::SERVER_IP4.into(),
        fault,
    )
    .unwrap();
    routed
        .wait_backbone_via(&fl.lab, stable(), to, Duration::from_secs(2))
        .unwrap();
    let at = routed_to_at(&mon, to, a.switch.unix_ms.saturating_sub(50))
        .unwrap_or_else(|| panic!("{what}: no route change seen: {}", mon.read_stdout()));
    let convergence = at.saturating_sub(a.switch.unix_ms);
    eprintln!(
        "{what}: detection {} ms, return path converged {convergence} ms after the switch, stall {:.0} ms",
        a.detect_ms, a.stall_ms
    );
    assert!(a.stall_ms < 2000.0, "{what}: stall {:.0} ms", a.stall_ms);
    let _ = mon.kill();
    (a.detect_ms, convergence, a.stall_ms)
}

#[test]
fn routed_blackhole_of_the_active_datacenter() {
    let (fl, routed) = FailoverLab::routed("fo-rt-bh", 3, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    routed_across(&fl, &routed, "routed blackhole dc1", (1, 2), 601, || {
        blackhole(&fl.lab, &dc1, Direction::Both).unwrap()
    });
    // dc1 is alive but cut off from the client: it still announces until its claim times out,
    // and the backbone prefers dc2's newer claim meanwhile
    let bb = routed
        .backbone
        .birdc(
            &fl.lab,
            &["show", "route", &format!("{STABLE_V4}/32"), "all"],
        )
        .unwrap();
    eprintln!("backbone after the switch:\n{bb}");
    wait_released(&fl.gateways[0], Duration::from_secs(5)).unwrap();
}

#[test]
fn routed_one_way_loss_towards_the_datacenter() {
    let (fl, routed) = FailoverLab::routed("fo-rt-up", 2, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    routed_across(
        &fl,
        &routed,
        "routed one-way loss client->dc1",
        (1, 2),
        602,
        || blackhole(&fl.lab, &dc1, Direction::ToDatacenter).unwrap(),
    );
}

#[test]
fn routed_one_way_loss_towards_the_client() {
    let (fl, routed) = FailoverLab::routed("fo-rt-down", 2, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    routed_across(
        &fl,
        &routed,
        "routed one-way loss dc1->client",
        (1, 2),
        603,
        || blackhole(&fl.lab, &dc1, Direction::ToClient).unwrap(),
    );
    // dc1 still hears the client's Standby probes: it withdraws at once
    wait_released(&fl.gateways[0], Duration::from_secs(1)).unwrap();
}

#[test]
fn routed_gateway_sigkill_withdraws_its_routes() {
    let (fl, routed) = FailoverLab::routed("fo-rt-kill", 2, "").unwrap();
    routed_across(
        &fl,
        &routed,
        "routed SIGKILL of dc1's gateway",
        (1, 2),
        604,
        || {
            fl.gateways[0].daemon.kill().unwrap();
        },
    );
    // its TUN went with it, and with the TUN its routes: BIRD in dc1 announces nothing
    let learned = routed.dc_birds[0]
        .birdc(&fl.lab, &["show", "route", "protocol", "kernel4"])
        .unwrap();
    assert!(!learned.contains(STABLE_V4), "{learned}");
}

#[test]
fn routed_whole_datacenter_lost() {
    // dc1 loses its uplink and its link to the backbone at once: BFD withdraws what its BIRD
    // announced, and the client moves to dc2
    let (fl, routed) = FailoverLab::routed("fo-rt-dcloss", 2, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    routed_across(
        &fl,
        &routed,
        "routed loss of all of dc1",
        (1, 2),
        605,
        || {
            blackhole(&fl.lab, &dc1, Direction::Both).unwrap();
            fl.lab.down(&dc1, "in0").unwrap();
        },
    );
    // the backbone's session to dc1 is down by BFD, well under the BGP hold time
    netns_tests::lab::wait_until(Duration::from_secs(2), "dc1's sessions down", || {
        routed
            .backbone
            .birdc(&fl.lab, &["show", "protocols"])
            .map(|t| {
                t.lines()
                    .filter(|l| l.starts_with("dc1v"))
                    .all(|l| !l.contains("Established"))
            })
            .unwrap_or(false)
    })
    .unwrap();
}

#[test]
fn routed_bird_killed_with_the_gateway() {
    let (fl, routed) = FailoverLab::routed("fo-rt-birdkill", 2, "").unwrap();
    routed_across(
        &fl,
        &routed,
        "routed SIGKILL of dc1's gateway and BIRD",
        (1, 2),
        606,
        || {
            fl.gateways[0].daemon.kill().unwrap();
            routed.dc_birds[0].daemon.kill().unwrap();
        },
    );
}

#[test]
fn routed_failback_and_a_chain_through_three_datacenters() {
    let (fl, routed) = FailoverLab::routed("fo-rt-chain", 3, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    let dc2 = fl.dc(2).unwrap().clone();
    routed_across(&fl, &routed, "routed blackhole dc1", (1, 2), 607, || {
        blackhole(&fl.lab, &dc1, Direction::Both).unwrap()
    });
    routed_across(&fl, &routed, "routed blackhole dc2", (2, 3), 608, || {
        blackhole(&fl.lab, &dc2, Direction::Both).unwrap()
    });
    // dc1 healed: traffic and the return path come back after the hold-down; dc1's claim is the
    // newest, so the backbone prefers it even before dc3 withdraws
    routed_across(&fl, &routed, "routed failback to dc1", (3, 1), 609, || {
        heal(&fl.lab, &dc1).unwrap()
    });
    let sw = fl.switches().unwrap();
    assert_eq!(sw.last().unwrap().reason, "failback");
    assert_eq!(sw.len(), 3, "{sw:?}");
}

#[test]
fn a_gateway_restarted_after_sigkill_cleans_up_before_it_claims() {
    // the shared-segment lab: a SIGKILLed gateway leaves its proxy ARP/NDP entries behind
    // (the route went with its TUN). The restarted one removes them itself.
    let fl = FailoverLab::new("fo-rt-cleanup", 2, "").unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    fl.gateways[0].daemon.kill().unwrap();
    fl.wait_active("dc2", Duration::from_secs(5)).unwrap();
    let proxies = |ns| {
        String::from_utf8_lossy(
            &fl.lab
                .exec(ns, &["ip", "neigh", "show", "proxy", "dev", "in0"])
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    assert!(
        proxies(&dc1).contains(STABLE_V4),
        "a SIGKILLed gateway leaves its proxy entry: {}",
        proxies(&dc1)
    );
    // and a stale route of ours that did not go with the TUN (another device)
    fl.lab
        .exec(
            &dc1,
            &[
                "ip",
                "route",
                "add",
                "100.96.9.9/32",
                "dev",
                "in0",
                "proto",
                "209",
            ],
        )
        .unwrap();
    let restarted = restart_gateway(&fl.lab, &dc1, &fl.gateways[0], "dc1-restarted").unwrap();
    netns_tests::lab::wait_until(
        Duration::from_secs(5),
        "the stale proxy entry removed",
        || !proxies(&dc1).contains(STABLE_V4),
    )
    .unwrap();
    let routes = String::from_utf8_lossy(
        &fl.lab
            .exec(&dc1, &["ip", "route", "show", "proto", "209"])
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        routes.trim().is_empty(),
        "stale routes of ours left: {routes}"
    );
    assert!(
        restarted.daemon.read_stderr().contains("left behind"),
        "the cleanup is logged: {}",
        restarted.daemon.read_stderr()
    );
    // dc2 keeps the client: the restarted gateway claims nothing
    assert_eq!(fl.active().unwrap(), "dc2");
}

#[test]
fn a_dead_or_broken_bird_is_shown_and_the_gateway_keeps_serving() {
    let (fl, routed) = FailoverLab::routed("fo-rt-nobird", 2, "").unwrap();
    let gw2 = &fl.gateways[1];
    let routing = |r: &Running| r.status().unwrap()["routing_daemon"].clone();
    netns_tests::lab::wait_until(Duration::from_secs(5), "dc2's BIRD seen up", || {
        let r = routing(gw2);
        r["reachable"] == true && r["bgp_established"] == 2
    })
    .unwrap();
    // dc2's BIRD dies: the gateway says so, keeps its tunnel and answers probes
    routed.dc_birds[1].daemon.kill().unwrap();
    netns_tests::lab::wait_until(Duration::from_secs(5), "dc2's BIRD seen down", || {
        let r = routing(gw2);
        r["reachable"] == false && r["failures"].as_u64().unwrap_or(0) >= 1
    })
    .unwrap();
    eprintln!("dc2 after its BIRD died: {}", routing(gw2));
    // a broken configuration: that BIRD exits at once and stays down
    let broken = netns_tests::routed::start_bird(
        &fl.lab,
        fl.dc(2).unwrap(),
        "bird-dc2-broken",
        "protocol bgp {\n",
    );
    assert!(
        broken.is_err(),
        "a broken BIRD configuration is refused by BIRD"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(routing(gw2)["reachable"], false);
    assert_eq!(
        dc_health(&fl.client, "dc2"),
        "up",
        "the tunnel to dc2 is unaffected"
    );
    // every byte still flows through dc1
    let n = 20_000_000;
    let report = run_stream(
        &fl.lab,
        &fl.topo.client,
        Topology::SERVER_IP4.into(),
        n,
        610,
    )
    .unwrap();
    check_stream("while dc2's BIRD is down", &report, n);
    // BIRD back with the shipped configuration: seen up again
    let _bird = netns_tests::routed::start_bird(
        &fl.lab,
        fl.dc(2).unwrap(),
        "bird-dc2-again",
        &netns_tests::routed::gateway_conf(2),
    )
    .unwrap();
    // the gateway watches the first socket path; the new BIRD has its own: point it back
    let _ = std::fs::remove_file(&routed.dc_birds[1].socket);
    std::os::unix::fs::symlink(
        fl.lab.dir().join("bird-dc2-again.ctl"),
        &routed.dc_birds[1].socket,
    )
    .unwrap();
    netns_tests::lab::wait_until(Duration::from_secs(20), "dc2's BIRD seen up again", || {
        let r = routing(gw2);
        r["reachable"] == true && r["bgp_established"] == 2
    })
    .unwrap();
    let metrics = gw2
        .ask(&serde_json::json!({"v": 1, "cmd": "metrics"}))
        .unwrap();
    let text = metrics["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("failoverd_gateway_routing_daemon_check_failures_total"),
        "{text}"
    );
}
