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

use std::time::Duration;

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
        // the relay is a process: a busy machine adds scheduling delay, never less than the RTT
        assert!(
            avg >= want && avg < want + 10.0,
            "dc{i}: {avg} ms, want {want}"
        );
        assert_eq!(loss, 0.0);
    }
    // a route change that raises dc1's RTT, applied while running, to one direction
    relay.set(1, Some("up"), "delay=57.5ms").unwrap();
    let (avg, _) = ping(&lab, &topo, &Topology::dc_underlay_ip(1).to_string(), 20);
    assert!(
        (65.0..76.0).contains(&avg),
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
        avg < 25.0 && loss == 0.0,
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

/// Seconds of the `wifi` soak: `FO_SOAK_SECS`, default 600.
fn soak_secs() -> u64 {
    std::env::var("FO_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600)
}

#[test]
#[ignore = "known regression: one false switch in 600 s under the wifi profile since the batched \
            data path (CI, 2026-12-06); run with --ignored; see the stop note"]
fn wifi_soak_without_a_false_switch() {
    let fl = FailoverLab::with_profile("fo-wan-wifi", 3, "", Profile::Wifi).unwrap();
    let secs = soak_secs();
    // verified streams back to back for the whole soak: 20 MB each way at a time
    let streams = soak_streams(&fl, secs, 1000).unwrap();
    let bytes = streams * 2 * SOAK_STREAM_BYTES;
    let switches = fl.switches().unwrap();
    let status = fl.client.client_status().unwrap();
    let relay = fl.relay().unwrap().stats().unwrap();
    eprintln!(
        "wifi soak: {secs} s, {streams} verified streams ({} MB), switches {switches:?}",
        bytes / 1_000_000
    );
    for d in &status.datacenters {
        eprintln!("  {}: {:?}", d.name, d);
    }
    eprintln!("  relay: {relay}");
    assert!(
        switches.is_empty(),
        "a false switch under wifi: {switches:?}"
    );
}

/// Applies +200 ms of RTT to dc1 for 2 s; returns (spike start, spike end) in Unix ms.
fn spike(fl: &FailoverLab) -> (u64, u64) {
    let relay = fl.relay().unwrap();
    let start = unix_millis();
    relay.set(1, None, "delay=107.5ms").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    relay.restore(1).unwrap();
    (start, unix_millis())
}

/// What README "Wide-area behaviour" promises of a latency spike on the active path: one that
/// silences the tunnel for the detection time moves traffic like a failure, and traffic goes
/// back only once the tunnel answers at its former RTT again for a whole hold-down; one that
/// does not is ridden out. Either way every byte arrives and the stall stays bounded.
fn check_spike(what: &str, switches: &[SwitchRecord], start: u64, end: u64) {
    for s in switches {
        eprintln!(
            "{what}: +{} ms: {} -> {} ({}) silent {:?}",
            s.unix_ms as i64 - start as i64,
            s.from,
            s.to,
            s.reason,
            s.detection_ms
        );
    }
    let Some(away) = switches.first() else {
        return;
    };
    assert_eq!((away.from.as_str(), away.to.as_str()), ("dc1", "dc2"));
    assert_eq!(away.reason, "probe_timeout");
    assert!(
        away.unix_ms.saturating_sub(start) < 500,
        "{what}: moved {} ms into the spike",
        away.unix_ms - start
    );
    let back = switches.get(1).expect("traffic goes back to dc1");
    assert_eq!(
        (back.to.as_str(), back.reason.as_str()),
        ("dc1", "failback")
    );
    assert!(
        back.unix_ms >= end + 1000,
        "{what}: failed back {} ms after the spike ended, inside the hold-down: into the spike",
        back.unix_ms as i64 - end as i64
    );
    assert_eq!(switches.len(), 2, "{what}: {switches:?}");
}

#[test]
fn a_latency_spike_on_the_active_path() {
    let fl = FailoverLab::with_profile("fo-wan-spike", 2, "", Profile::Seed).unwrap();
    // idle (probes only): the replies stop for 200 ms, longer than the detection time
    let (start, end) = spike(&fl);
    fl.wait_active("dc1", Duration::from_secs(10)).unwrap();
    let idle = fl.switches().unwrap();
    assert_eq!(
        idle.len(),
        2,
        "an idle tunnel silent for 200 ms is down: {idle:?}"
    );
    check_spike("idle spike", &idle, start, end);
    let back = idle[1].unix_ms - end;
    // back once the loss window has forgotten the spike: about 2 s here, later on a busy machine
    assert!(back < 8000, "failback {back} ms after the spike");

    // under a verified stream both ways: inbound data may or may not pause long enough
    let n = failover_bytes();
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "spike", n, 201).unwrap();
    fl.wait_flowing(20_000_000).unwrap();
    let (start, end) = spike(&fl);
    let report = stream.finish().unwrap();
    let stall = check_stream("loaded spike", &report, n);
    std::thread::sleep(Duration::from_secs(1));
    fl.wait_active("dc1", Duration::from_secs(10)).unwrap();
    let loaded: Vec<SwitchRecord> = fl.switches().unwrap().split_off(2);
    check_spike("loaded spike", &loaded, start, end);
    eprintln!(
        "loaded spike: stall {stall:.0} ms, {} switches",
        loaded.len()
    );
    assert!(stall < 1000.0, "loaded spike: stall {stall:.0} ms");
}

/// Waits `d` and returns the switches logged meanwhile.
fn switches_during(fl: &FailoverLab, d: Duration) -> Vec<SwitchRecord> {
    let before = fl.switches().unwrap().len();
    std::thread::sleep(d);
    fl.switches().unwrap().split_off(before)
}

#[test]
fn lowest_rtt_holds_dc1_until_it_is_slower_beyond_the_hysteresis() {
    // README: "lowest-rtt" moves for a gain of 20 % and 5 ms, at most every 10 s
    let fl =
        FailoverLab::with_profile("fo-wan-lowrtt", 2, "policy = \"lowest-rtt\"", Profile::Seed)
            .unwrap();
    let relay = fl.relay().unwrap().clone();
    // 15 ms both: dc1 (first) is chosen and held, also under its own load
    let warm = spawn_stream(&fl.lab, &fl.topo.client, "lowrtt-warm", 50_000_000, 300).unwrap();
    let early = switches_during(&fl, Duration::from_secs(2));
    check_stream(
        "lowest-rtt, dc1 loaded",
        &warm.finish().unwrap(),
        50_000_000,
    );
    assert_eq!(fl.active().unwrap(), "dc1");
    assert!(early.is_empty(), "{early:?}");
    // dc1 at 18 ms: 3 ms and 17 % slower than dc2, inside the hysteresis
    relay.set(1, None, "delay=9ms").unwrap();
    let inside = switches_during(&fl, Duration::from_secs(3));
    assert!(inside.is_empty(), "moved inside the hysteresis: {inside:?}");
    // dc1 at 25 ms: 10 ms and 40 % slower: traffic moves to dc2 and, 10 s later, back, with
    // one stream verified across both moves (long enough to outlast them)
    let n = 800_000_000;
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "lowrtt", n, 301).unwrap();
    fl.wait_flowing(10_000_000).unwrap();
    let raised = unix_millis();
    relay.set(1, None, "delay=12.5ms").unwrap();
    // the policy compares base RTTs (the lowest sample of the last 4 s): a rise shows once
    // the window has forgotten the old samples
    fl.wait_active("dc2", Duration::from_secs(7)).unwrap();
    let moved = fl.switches().unwrap();
    let first = moved.last().unwrap().clone();
    assert_eq!(first.reason, "lower_rtt");
    let after = first.unix_ms - raised;
    eprintln!("lowest-rtt: moved to dc2 {after} ms after dc1 rose to 25 ms");
    assert!(
        after >= 3000,
        "moved {after} ms after the rise: before the 4 s window forgot it"
    );
    // now dc2 rises to 40 ms and dc1 is back at 15: a move back is due, but not before the
    // 10 s dwell since the last RTT-driven switch
    relay.set(2, None, "delay=20ms").unwrap();
    relay.restore(1).unwrap();
    fl.wait_active("dc1", Duration::from_secs(15)).unwrap();
    let report = stream.finish().unwrap();
    check_stream("lowest-rtt moves", &report, n);
    let ended = unix_millis();
    let all = fl.switches().unwrap();
    let back = all.last().unwrap();
    assert_eq!(back.reason, "lower_rtt");
    let dwell = back.unix_ms - first.unix_ms;
    eprintln!("lowest-rtt: back to dc1 {dwell} ms after the first move");
    assert!((10_000..12_000).contains(&dwell), "dwell {dwell} ms");
    assert!(
        ended > back.unix_ms,
        "the stream ended before the second move"
    );
    assert_eq!(all.len(), 2, "{all:?}");
}

/// A blackhole of dc1 while every path of the relay applies `spec`, with a verified stream:
/// the failover's figures and the relay's counters. Asserts that the switch happened, every
/// byte arrived, and the stall stayed under `stall_bound_ms`.
fn impaired_switch(test: &str, spec: &str, seed: u64, stall_bound_ms: f64) -> serde_json::Value {
    let fl = FailoverLab::with_profile(test, 2, "", Profile::Seed).unwrap();
    let relay = fl.relay().unwrap().clone();
    for i in 1..=2 {
        relay.set(i, None, spec).unwrap();
    }
    let dc1 = fl.dc(1).unwrap().clone();
    let what = format!("{spec}, blackhole dc1");
    let a = across_to(&fl, &what, "dc2", seed, Topology::SERVER_IP4.into(), || {
        blackhole(&fl.lab, &dc1, Direction::Both).unwrap()
    })
    .unwrap();
    assert!(
        a.stall_ms < stall_bound_ms,
        "{what}: stall {:.0} ms",
        a.stall_ms
    );
    let mut stats = relay.stats().unwrap();
    stats["client"] = fl.client.status().unwrap();
    stats
}

#[test]
fn reordering_through_a_switch() {
    // 5 % of datagrams overtake those in flight, every way, while dc1 fails
    let stats = impaired_switch("fo-wan-reorder", "reorder=5%", 401, 1000.0);
    let reordered = stats["pipes"]["dc1:down"]["reordered"].as_u64().unwrap();
    eprintln!("relay: dc1 down reordered {reordered}");
    assert!(reordered > 100, "{stats}");
}

#[test]
fn duplication_through_a_switch() {
    // 5 % of datagrams arrive twice, every way, while dc1 fails
    let stats = impaired_switch("fo-wan-dup", "dup=5%", 402, 1000.0);
    let duplicated = stats["pipes"]["dc2:down"]["duplicated"].as_u64().unwrap();
    // duplicates are replays to WireGuard: dropped and counted, never delivered twice
    let replays = stats["client"]["datacenters"][1]["drops"]["replay"]
        .as_u64()
        .unwrap_or(0);
    eprintln!("relay: dc2 down duplicated {duplicated}; client: dc2 replays dropped {replays}");
    assert!(duplicated > 100, "{stats}");
    assert!(
        replays.abs_diff(duplicated) <= duplicated / 100 + 5,
        "every duplicate dropped as a replay: {replays} vs {duplicated}"
    );
}

#[test]
fn reordering_and_duplication_together_through_a_switch() {
    // KNOWN DEFECT (README "Wide area"): with both at 5 % on every path, the upload stalls for
    // 4-6 s after the switch in about two runs of three (TCP's retransmission backoff); each
    // alone stays under 150 ms (the two tests above). Every byte still arrives, which this
    // asserts; the bound is 10 s until the cause is found, then 1 s like the others.
    let stats = impaired_switch("fo-wan-reorder-dup", "reorder=5%,dup=5%", 403, 10_000.0);
    assert!(stats["pipes"]["dc1:down"]["reordered"].as_u64().unwrap() > 100);
}

#[test]
fn a_switch_to_a_nearer_datacenter_overtakes_the_old_path() {
    // intercontinental: dc1 40 ms, dc2 90 ms. Traffic on dc2 moves to dc1 by hand: what the
    // new path carries arrives up to 25 ms before what the old one still holds
    let fl =
        FailoverLab::with_profile("fo-wan-overtake", 2, "", Profile::Intercontinental).unwrap();
    let steer = |dc: &str| {
        let a = fl
            .client
            .ask(&serde_json::json!({"v": 1, "cmd": "switch", "datacenter": dc}))
            .unwrap();
        assert_eq!(a["ok"], true, "{a}");
    };
    steer("dc2");
    fl.wait_active("dc2", Duration::from_secs(2)).unwrap();
    wait_claimed(&fl.gateways[1]).unwrap();
    let n = failover_bytes();
    let stream = spawn_stream(&fl.lab, &fl.topo.client, "overtake", n, 501).unwrap();
    fl.wait_flowing(20_000_000).unwrap();
    steer("dc1");
    let report = stream.finish().unwrap();
    let stall = check_stream("dc2 -> dc1 by hand", &report, n);
    let flows = fl.client.client_status().unwrap().sessionkeeper;
    eprintln!("overtake: stall {stall:.0} ms; sessionkeeper {flows:?}");
    assert!(stall < 1000.0, "stall {stall:.0} ms");
}
