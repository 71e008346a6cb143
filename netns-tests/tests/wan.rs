//! Failover at wide-area distances: the lab's impairment relay (`fo-relay`) between the client
//! and the datacenters puts each profile's delay, jitter and loss on every datagram.
//!
//! ```text
//!  client [failoverd] ─ relay [fo-relay: a pipe per dc and direction] ─ wan ─ dc1..dc3 ─ core ─ server
//! ```
//! Profiles (`netns_tests::impair::Profile`): `seed` (15, 15, 35 ms RTT, the original
//! testbed), `wifi` (10 ms, heavy-tailed jitter, 1 % bursty loss), `intercontinental` (40, 90,
//! 150 ms). Every failover here verifies every byte of a TCP stream both ways and bounds the
//! longest stall generously (1 s plus two round trips of the new datacenter), so a regression
//! to TCP-backoff behaviour fails instead of printing a bigger number.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use netns_tests::lab::{Lab, Topology};
use netns_tests::scenario::*;

/// Average RTT in ms of `count` pings from the client to `addr`, and the share lost.
fn ping(lab: &Lab, topo: &Topology, addr: &str, count: u32) -> (f64, f64) {
    let out = lab
        .exec_unchecked(
            &topo.client,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.02",
                "-W",
                "1",
                addr,
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let loss = text
        .split(" packet loss")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no loss in {text:?}"))
        / 100.0;
    // rtt min/avg/max/mdev = 15.1/15.4/16.0/0.2 ms
    let avg = text
        .split(" = ")
        .nth(1)
        .and_then(|s| s.split('/').nth(1))
        .and_then(|a| a.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    (avg, loss)
}

#[test]
fn the_relay_puts_each_profile_rtt_on_its_datacenter_and_changes_while_running() {
    let mut lab = Lab::new("fo-wan-relay").unwrap();
    let topo = Topology::build_with(&mut lab, 3, Profile::Seed).unwrap();
    let relay = topo.relay().unwrap().clone();
    for i in 1..=3 {
        let want = Profile::Seed.rtt(i).as_secs_f64() * 1e3;
        let (avg, loss) = ping(&lab, &topo, &Topology::dc_underlay_ip(i).to_string(), 30);
        eprintln!("dc{i}: ping avg {avg:.2} ms (profile {want} ms), loss {loss}");
        assert!(
            avg >= want && avg < want + 4.0,
            "dc{i}: {avg} ms, want {want}"
        );
        assert_eq!(loss, 0.0);
    }
    // a route change that raises dc1's RTT, applied while running, to one direction
    relay.set(1, Some("up"), "delay=57.5ms").unwrap();
    let (avg, _) = ping(&lab, &topo, &Topology::dc_underlay_ip(1).to_string(), 20);
    assert!(
        (65.0..70.0).contains(&avg),
        "dc1 after the change: {avg} ms"
    );
    // loss on both directions of dc2: 1 − 0.5² of the pings lost
    relay.set(2, None, "loss=50%").unwrap();
    let (_, loss) = ping(&lab, &topo, &Topology::dc_underlay_ip(2).to_string(), 200);
    assert!((0.6..0.9).contains(&loss), "dc2 loss {loss}");
    relay.restore(1).unwrap();
    relay.restore(2).unwrap();
    let (avg, loss) = ping(&lab, &topo, &Topology::dc_underlay_ip(1).to_string(), 10);
    assert!(
        avg < 19.0 && loss == 0.0,
        "dc1 restored: {avg} ms, loss {loss}"
    );
    // a bad command is refused with the reason, and the pipe is unchanged
    let err = relay.set(1, None, "delay=fast").unwrap_err().to_string();
    assert!(err.contains("delay=fast"), "{err}");
    let stats = relay.stats().unwrap();
    let up = &stats["pipes"]["dc2:up"];
    assert!(up["lost_random"].as_u64().unwrap() > 50, "{stats}");
    assert!(
        stats["pipes"]["dc1:down"]["passed"].as_u64().unwrap() >= 60,
        "{stats}"
    );
    assert_eq!(stats["relay"]["kernel_drops"].as_u64(), Some(0), "{stats}");
}

/// A failover to `next` under `profile` with every byte verified; the stall bounded by 1 s plus
/// two round trips of the new datacenter.
fn failover_under(profile: Profile, test: &str, fault: Direction, seed: u64) {
    let fl = FailoverLab::with_profile(test, 2, "", profile).unwrap();
    let dc1 = fl.dc(1).unwrap().clone();
    let what = format!("{} {fault:?} of dc1", profile.label());
    let a = across_to(&fl, &what, "dc2", seed, Topology::SERVER_IP4.into(), || {
        blackhole(&fl.lab, &dc1, fault).unwrap()
    })
    .unwrap();
    let bound = 1000.0 + 2.0 * Profile::rtt(profile, 2).as_secs_f64() * 1e3;
    assert!(
        a.stall_ms < bound,
        "{what}: stall {:.0} ms, bound {bound:.0} ms",
        a.stall_ms
    );
    let switches = fl.switches().unwrap();
    assert_eq!(switches.len(), 1, "no further switch: {switches:?}");
}

#[test]
fn seed_blackhole() {
    failover_under(Profile::Seed, "fo-wan-seed-bh", Direction::Both, 101);
}

#[test]
fn seed_one_way_loss_towards_the_datacenter() {
    failover_under(
        Profile::Seed,
        "fo-wan-seed-up",
        Direction::ToDatacenter,
        102,
    );
}

#[test]
fn seed_one_way_loss_towards_the_client() {
    failover_under(Profile::Seed, "fo-wan-seed-down", Direction::ToClient, 103);
}

#[test]
fn intercontinental_blackhole() {
    failover_under(
        Profile::Intercontinental,
        "fo-wan-ic-bh",
        Direction::Both,
        104,
    );
}

#[test]
fn intercontinental_one_way_loss_towards_the_datacenter() {
    failover_under(
        Profile::Intercontinental,
        "fo-wan-ic-up",
        Direction::ToDatacenter,
        105,
    );
}

#[test]
fn intercontinental_one_way_loss_towards_the_client() {
    failover_under(
        Profile::Intercontinental,
        "fo-wan-ic-down",
        Direction::ToClient,
        106,
    );
}
