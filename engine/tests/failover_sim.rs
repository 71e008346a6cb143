//! Failover on a virtual clock: one client engine, three gateway engines, a simulated underlay
//! with per-datacenter seeded loss, delay and blackholes in each direction. Every scenario
//! asserts how many switches happened, where to, and how long detection took.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use engine::gateway::{Gateway, GatewayClient, GatewayConfig, GatewayEvent, ReturnPath};
use engine::testkit::{Net, Simulation};
use engine::{DatacenterConfig, DcId, Engine, EngineConfig, Event};
use probe::{Policy, ProbeConfig, SwitchReason};
use sessionkeeper::StableAddresses;
use tunnel::{AllowedIps, Outcome, PeerConfig, PrivateKey};

const CLIENT: &str = "198.18.0.1:40000";
const GW_INNER: [u8; 4] = [100, 96, 0, 1];

struct Sim {
    /// the datacenters, their links, what is in flight, the virtual clock
    net: Net,
    client: Engine,
    switches: Vec<(Duration, DcId, DcId, SwitchReason, Option<Duration>)>,
    out: Vec<u8>,
    batch: engine::Batch,
    /// what a reload needs to rebuild the client's configuration
    client_key: PrivateKey,
    dc_keys: Vec<(SocketAddr, tunnel::PublicKey)>,
    seed: u64,
    /// the engine's other events, in order
    events: Vec<Event>,
}

impl Sim {
    fn new(n: usize, seed: u64, policy: Policy) -> Self {
        Self::with_recovery(n, seed, policy, true)
    }

    fn with_recovery(n: usize, seed: u64, policy: Policy, recovery: bool) -> Self {
        #[allow(clippy::disallowed_methods)] // the base of the virtual clock
        let t0 = Instant::now();
        let client_key = PrivateKey::generate();
        let mut gateways = Vec::new();
        let mut dcs = Vec::new();
        for i in 0..n {
            let key = PrivateKey::generate();
            let addr: SocketAddr = format!("198.18.0.{}:51820", 11 + i).parse().unwrap();
            dcs.push(DatacenterConfig {
                name: format!("dc{}", i + 1),
                endpoint: engine::Endpoint::Addr(addr),
                public_key: key.public_key(),
                allowed_ips: AllowedIps::new(vec!["0.0.0.0/0".parse().unwrap()]),
                persistent_keepalive: None,
                preshared_key: None,
                probe: engine::Probe::Gateway(IpAddr::from(GW_INNER)),
            });
            let gw = Gateway::new(GatewayConfig {
                private_key: key,
                handshake_rate_limit: 100,
                inner_addresses: vec![IpAddr::from(GW_INNER)],
                claim_timeout: Duration::from_secs(2),
                clients: vec![GatewayClient {
                    peer: PeerConfig {
                        public_key: client_key.public_key(),
                        allowed_ips: AllowedIps::new(vec!["100.96.0.2/32".parse().unwrap()]),
                        persistent_keepalive: None,
                        preshared_key: None,
                    },
                    return_path: ReturnPath::Claim,
                }],
            })
            .unwrap();
            gateways.push((addr, gw));
        }
        let client = Engine::new(
            EngineConfig {
                private_key: client_key.clone(),
                stable: StableAddresses {
                    v4: Some([100, 96, 0, 2].into()),
                    v6: None,
                },
                local: StableAddresses::default(),
                datacenters: dcs,
                probe: ProbeConfig::default(),
                policy,
                mtu: 1420,
                max_flows: 65_536,
                switch_recovery: recovery,
                routes: Vec::new(),
                seed,
                unix_time: Duration::from_secs(1_800_000_000),
            },
            t0,
        )
        .unwrap();
        let dc_keys = gateways
            .iter()
            .map(|(a, g)| (*a, *g.responder().public_key()))
            .collect();
        Self {
            net: Net::new(
                t0,
                gateways,
                CLIENT.parse().unwrap(),
                Duration::from_millis(1),
                seed,
            ),
            client,
            switches: Vec::new(),
            out: vec![0; 70_000],
            batch: engine::Batch::for_datagrams(4),
            dc_keys,
            client_key,
            seed,
            events: Vec::new(),
        }
    }

    fn random(&mut self) -> f64 {
        self.net.random()
    }

    fn elapsed(&self) -> Duration {
        self.net.elapsed()
    }

    fn collect_events(&mut self) {
        while let Some(e) = self.client.poll_event() {
            if let Event::Switched {
                from,
                to,
                reason,
                detection,
            } = e
            {
                self.switches
                    .push((self.elapsed(), from, to, reason, detection));
            }
            self.events.push(e);
        }
        self.net.collect();
    }

    /// Sends everything the client's `poll_transmit` hands out, batch after batch.
    fn client_transmits(&mut self) {
        loop {
            self.client.poll_transmit(self.net.now, &mut self.batch);
            if self.batch.is_empty() {
                return;
            }
            self.net.send_batch_up(&mut self.batch);
        }
    }

    /// A datagram for the client.
    fn deliver(&mut self, from: SocketAddr, bytes: &[u8]) {
        let now = self.net.now;
        if let Outcome::Transmit(t) = self.client.handle_datagram(now, from, bytes, &mut self.out) {
            let reply = t.datagram.to_vec();
            self.net.send_up(from, reply);
        }
        self.client_transmits();
        self.collect_events();
    }

    fn switches_after(
        &self,
        t: Duration,
    ) -> Vec<(Duration, usize, usize, SwitchReason, Option<Duration>)> {
        self.switches
            .iter()
            .filter(|s| s.0 >= t)
            .map(|s| (s.0, s.1.index(), s.2.index(), s.3, s.4))
            .collect()
    }
}

impl Simulation for Sim {
    fn net(&mut self) -> &mut Net {
        &mut self.net
    }
    fn client_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }
    fn client_timers(&mut self) {
        self.client.handle_timeout(self.net.now);
        self.client_transmits();
    }
    fn client_receive(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.deliver(from, bytes);
    }
    fn collect(&mut self) {
        self.collect_events();
    }
}

fn priority() -> Policy {
    Policy::Priority { failback: true }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A warm start: every tunnel up, dc1 active and claimed, nothing switched.
fn warm(n: usize, seed: u64, policy: Policy) -> Sim {
    let mut sim = Sim::new(n, seed, policy);
    sim.run_until(Duration::from_secs(2));
    assert!(
        sim.switches.is_empty(),
        "no switch while everything is healthy: {:?}",
        sim.switches
    );
    assert_eq!(sim.client.active(), DcId::new(0));
    assert!(sim
        .client
        .status()
        .iter()
        .all(|d| d.health == probe::PathHealth::Up));
    assert!(
        sim.net.gateways[0].1.claimed(tunnel::PeerId(0)),
        "dc1 claims the stable address"
    );
    assert!(!sim.net.gateways[1].1.claimed(tunnel::PeerId(0)));
    sim
}

#[test]
fn blackhole_of_the_active_datacenter_switches_within_100ms() {
    let mut detections = Vec::new();
    for seed in 1..=24u64 {
        let mut sim = warm(3, seed, priority());
        let phase = Duration::from_micros((sim.random() * 40_000.0) as u64);
        let fail_at = Duration::from_secs(2) + phase;
        sim.run_until(fail_at);
        sim.net.links[0].black_up = true;
        sim.net.links[0].black_down = true;
        sim.run_until(fail_at + Duration::from_secs(3));
        let s = sim.switches_after(Duration::ZERO);
        assert_eq!(s.len(), 1, "exactly one switch: {s:?}");
        let (at, from, to, reason, detection) = s[0];
        assert_eq!((from, to, reason), (0, 1, SwitchReason::ProbeTimeout));
        assert!(detection.is_some());
        let took = at - fail_at;
        assert!(
            took <= Duration::from_millis(100),
            "seed {seed}: detection {took:?}"
        );
        detections.push(took);
        // the new gateway claimed at once; the old one (unreachable) released on its timeout
        let claim = sim
            .net
            .claims
            .iter()
            .find(|c| c.1 == 1 && matches!(c.2, GatewayEvent::Claim(_)))
            .unwrap();
        assert!(
            claim.0 - at <= Duration::from_millis(20),
            "new gateway claimed {:?} after the switch",
            claim.0 - at
        );
        assert!(sim
            .net
            .claims
            .iter()
            .any(|c| c.1 == 0 && matches!(c.2, GatewayEvent::Release(_))));
    }
    detections.sort();
    eprintln!(
        "blackhole detection over {} phases: p50 {:?} p99 {:?} max {:?}",
        detections.len(),
        percentile(&detections, 0.5),
        percentile(&detections, 0.99),
        detections.last().unwrap()
    );
}

#[test]
fn one_way_loss_in_either_direction_is_a_failure() {
    for up in [true, false] {
        let mut sim = warm(3, 7, priority());
        if up {
            sim.net.links[0].black_up = true;
        } else {
            sim.net.links[0].black_down = true;
        }
        sim.run_until(Duration::from_secs(4));
        let s = sim.switches_after(Duration::ZERO);
        assert_eq!(
            s.len(),
            1,
            "one switch for one-way loss (client→dc: {up}): {s:?}"
        );
        assert_eq!((s[0].1, s[0].2), (0, 1));
        assert!(
            s[0].0 - Duration::from_secs(2) <= Duration::from_millis(100),
            "{s:?}"
        );
        if !up {
            // the gateway still hears the client: the Standby intent reaches it and it releases
            // at once rather than after the claim timeout
            let release = sim
                .net
                .claims
                .iter()
                .find(|c| c.1 == 0 && matches!(c.2, GatewayEvent::Release(_)))
                .unwrap();
            assert!(release.0 - s[0].0 <= Duration::from_millis(20));
        }
    }
}

/// A server→client segment of a download: [`tcp_segment`] with source and destination (address
/// and port) swapped, which leaves every checksum valid.
fn download_segment(seq: u32) -> Vec<u8> {
    let mut p = tcp_segment(seq, 1, &[7; 1000]);
    let (src, dst) = (p[12..16].to_vec(), p[16..20].to_vec());
    p[12..16].copy_from_slice(&dst);
    p[16..20].copy_from_slice(&src);
    let (sport, dport) = (p[20..22].to_vec(), p[22..24].to_vec());
    p[20..22].copy_from_slice(&dport);
    p[22..24].copy_from_slice(&sport);
    p
}

#[test]
fn a_download_still_arriving_does_not_hide_a_failure_towards_the_datacenter() {
    // The client's packets to dc1 stop getting through while the server's data keeps coming
    // down dc1's tunnel for the whole second after (a sender that does not need the client's
    // ACKs soon, or one draining a large window): authenticated inbound data, but no replies.
    let mut sim = warm(2, 23, priority());
    sim.net.links[0].black_up = true;
    let mut out = vec![0u8; 70_000];
    for ms in 0..1_000u32 {
        sim.run_until(Duration::from_secs(2) + Duration::from_millis(u64::from(ms)));
        let seg = download_segment(ms * 1_000);
        let t = sim.net.gateways[0]
            .1
            .handle_inside_packet(&seg, &mut out)
            .expect("the gateway encrypts the download");
        let d = t.datagram.to_vec();
        sim.net.send(true, 0, d);
    }
    sim.run_until(Duration::from_secs(3));
    let s = sim.switches_after(Duration::ZERO);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].1, s[0].2), (0, 1));
    let after = s[0].0 - Duration::from_secs(2);
    assert!(
        after <= Duration::from_millis(100),
        "switched {after:?} after the fault"
    );
}

#[test]
fn five_percent_random_loss_for_ten_minutes_causes_no_switch() {
    let mut sim = warm(3, 11, priority());
    sim.net.links[0].loss_up = 0.05;
    sim.net.links[0].loss_down = 0.05;
    sim.run_until(Duration::from_secs(602));
    assert!(
        sim.switches.is_empty(),
        "false switches: {:?}",
        sim.switches
    );
    let status = sim.client.status();
    eprintln!(
        "after 10 min at 5 % loss each way: dc1 loss {:?}, probes {:?}",
        status[0].loss, status[0].probes
    );
}

#[test]
fn thirty_percent_loss_switches() {
    let mut sim = warm(3, 13, priority());
    sim.net.links[0].loss_up = 0.3;
    sim.net.links[0].loss_down = 0.3;
    sim.run_until(Duration::from_secs(10));
    let s = sim.switches_after(Duration::ZERO);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].1, s[0].2), (0, 1));
    eprintln!(
        "30 % loss: switched after {:?} ({:?})",
        s[0].0 - Duration::from_secs(2),
        s[0].3
    );
    // it stays away while the loss lasts
    sim.run_until(Duration::from_secs(30));
    assert_eq!(sim.switches.len(), 1);
}

#[test]
fn a_flapping_datacenter_is_damped() {
    let mut sim = warm(2, 17, priority());
    let mut t = Duration::from_secs(2);
    for _ in 0..10 {
        sim.net.links[0].black_up = true;
        sim.net.links[0].black_down = true;
        t += Duration::from_millis(300);
        sim.run_until(t);
        sim.net.links[0].black_up = false;
        sim.net.links[0].black_down = false;
        t += Duration::from_secs(2);
        sim.run_until(t);
    }
    let n = sim.switches.len();
    eprintln!(
        "10 flaps of dc1 (300 ms down, 2 s up): {n} switches: {:?}",
        sim.switches
    );
    // undamped, every cycle would switch away and back: 20
    assert!(n <= 6, "damping must stop the back-and-forth: {n}");
    assert_eq!(
        sim.client.active(),
        DcId::new(1),
        "the flapper is suppressed at the end"
    );
    assert!(sim.client.status()[0].suppressed);
}

#[test]
fn a_latency_spike_shorter_than_the_budget_causes_no_switch() {
    let mut sim = warm(3, 19, priority());
    sim.net.links[0].delay = Duration::from_millis(55);
    sim.run_until(Duration::from_millis(2060));
    sim.net.links[0].delay = Duration::from_millis(1);
    sim.run_until(Duration::from_secs(5));
    assert!(sim.switches.is_empty(), "{:?}", sim.switches);
}

#[test]
fn all_down_then_one_back() {
    let mut sim = warm(3, 23, priority());
    // at start nothing has answered yet: AllDown, then AnyUp with the first answer
    assert_eq!(
        sim.events
            .iter()
            .filter(|e| matches!(e, Event::AllDown | Event::AnyUp))
            .collect::<Vec<_>>(),
        [&Event::AllDown, &Event::AnyUp]
    );
    sim.events.clear();
    for l in &mut sim.net.links {
        l.black_up = true;
        l.black_down = true;
    }
    sim.run_until(Duration::from_secs(5));
    assert!(sim
        .client
        .status()
        .iter()
        .all(|d| d.health == probe::PathHealth::Down));
    // the front end's fail mode hangs on these two events: exactly one AllDown so far
    let count = |sim: &Sim, e: Event| sim.events.iter().filter(|x| **x == e).count();
    assert_eq!(count(&sim, Event::AllDown), 1, "{:?}", sim.events);
    assert_eq!(count(&sim, Event::AnyUp), 0);
    assert!(sim.client.all_down());
    let back = Duration::from_secs(5);
    sim.net.links[2].black_up = false;
    sim.net.links[2].black_down = false;
    sim.run_until(Duration::from_secs(7));
    let s = sim.switches_after(back);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].2, 2, "onto the one that came back");
    let took = s[0].0 - back;
    assert!(
        took <= Duration::from_millis(40),
        "recovery took {took:?}: one interval plus one RTT"
    );
    assert!(sim.net.gateways[2].1.claimed(tunnel::PeerId(0)));
    assert_eq!(count(&sim, Event::AnyUp), 1, "{:?}", sim.events);
    assert_eq!(count(&sim, Event::AllDown), 1);
    let up = sim.events.iter().position(|e| *e == Event::AnyUp).unwrap();
    let down = sim
        .events
        .iter()
        .position(|e| *e == Event::AllDown)
        .unwrap();
    assert!(down < up);
}

#[test]
fn failback_waits_for_the_hold_down() {
    let mut sim = warm(3, 29, priority());
    sim.net.links[0].black_up = true;
    sim.net.links[0].black_down = true;
    sim.run_until(Duration::from_secs(4));
    assert_eq!(sim.client.active(), DcId::new(1));
    let restored = Duration::from_secs(4);
    sim.net.links[0].black_up = false;
    sim.net.links[0].black_down = false;
    sim.run_until(Duration::from_secs(8));
    let s = sim.switches_after(restored);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].1, s[0].2, s[0].3), (1, 0, SwitchReason::Failback));
    let took = s[0].0 - restored;
    assert!(
        took >= Duration::from_secs(1) && took <= Duration::from_millis(1100),
        "failback after {took:?}"
    );
    assert!(
        sim.net.gateways[0].1.claimed(tunnel::PeerId(0))
            && !sim.net.gateways[1].1.claimed(tunnel::PeerId(0))
    );
}

#[test]
fn without_failback_traffic_stays() {
    let mut sim = warm(2, 31, Policy::Priority { failback: false });
    sim.net.links[0].black_up = true;
    sim.net.links[0].black_down = true;
    sim.run_until(Duration::from_secs(3));
    sim.net.links[0].black_up = false;
    sim.net.links[0].black_down = false;
    sim.run_until(Duration::from_secs(10));
    assert_eq!(sim.switches.len(), 1);
    assert_eq!(sim.client.active(), DcId::new(1));
}

#[test]
fn foreign_sources_never_enter_a_tunnel() {
    let mut sim = warm(2, 37, priority());
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[198, 19, 0, 100]);
    p[24..26].copy_from_slice(&8u16.to_be_bytes());
    let mut out = vec![0u8; 70_000];
    let now = sim.net.now;
    assert_eq!(
        sim.client.handle_local(now, &mut p, &mut out).unwrap_err(),
        engine::LocalDrop::SourceNotLocal
    );
    assert_eq!(
        sim.client
            .handle_local(now, &mut [0x70; 3], &mut out)
            .unwrap_err(),
        engine::LocalDrop::Malformed(sessionkeeper::parse::Malformed::NotIp)
    );
    let stats = sim.client.keeper_stats();
    assert_eq!((stats.source_not_local, stats.malformed[0]), (1, 1));
    p[12..16].copy_from_slice(&[100, 96, 0, 2]);
    let t = sim
        .client
        .handle_local(now, &mut p, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(
        t.to, sim.net.gateways[0].0,
        "traffic goes to the active datacenter"
    );
}

#[test]
fn a_far_datacenter_stays_up() {
    // 150 ms round trip: replies arrive after the silence budget's capped RTO, yet no probe may
    // be judged lost before its reply can arrive
    let mut sim = Sim::new(2, 43, priority());
    for l in &mut sim.net.links {
        l.delay = Duration::from_millis(75);
    }
    sim.run_until(Duration::from_secs(60));
    assert!(sim.switches.is_empty(), "{:?}", sim.switches);
    let s = sim.client.status();
    assert_eq!(s[0].health, probe::PathHealth::Up);
    assert!(s[0].loss.is_some_and(|l| l < 0.01), "loss {:?}", s[0].loss);
    assert!(s[0].srtt.is_some_and(|r| r >= Duration::from_millis(140)));
}

#[test]
fn five_percent_loss_right_after_failovers_causes_no_switch() {
    // The lab soak found this: after failovers a tunnel's loss window starts afresh, and a
    // verdict on few samples is noise. Fail dc1 and fail back, then 10 minutes at 5 % each way.
    let mut sim = warm(2, 47, priority());
    sim.net.links[0].black_up = true;
    sim.net.links[0].black_down = true;
    sim.run_until(Duration::from_secs(3));
    sim.net.links[0].black_up = false;
    sim.net.links[0].black_down = false;
    sim.run_until(Duration::from_secs(6));
    assert_eq!(sim.client.active(), DcId::new(0), "failed back");
    let before = sim.switches.len();
    sim.net.links[0].loss_up = 0.05;
    sim.net.links[0].loss_down = 0.05;
    sim.run_until(Duration::from_secs(606));
    assert_eq!(
        sim.switches.len(),
        before,
        "false switches: {:?}",
        &sim.switches[before..]
    );
}

#[test]
fn a_recovering_active_tunnel_is_probed_fast_when_overdue() {
    // The second lab soak found this: after many failovers the active tunnel was Recovering
    // (suppressed by damping) and was probed at the normal rate, so four lost probes in a row
    // failed it. Make dc1 a suppressed flapper, kill dc2 so that dc1 must carry traffic while
    // Recovering, then put 15 % loss each way on it (which also keeps it from becoming Up): at
    // the normal rate four losses in a row come every ~170 probes; probed fast once overdue,
    // it must not go down once in two minutes.
    let mut sim = warm(2, 53, priority());
    let mut t = Duration::from_secs(2);
    for _ in 0..5 {
        sim.net.links[0].black_up = true;
        sim.net.links[0].black_down = true;
        t += Duration::from_millis(300);
        sim.run_until(t);
        sim.net.links[0].black_up = false;
        sim.net.links[0].black_down = false;
        t += Duration::from_millis(300);
        sim.run_until(t);
    }
    assert!(sim.client.status()[0].suppressed);
    sim.net.links[1].black_up = true;
    sim.net.links[1].black_down = true;
    t += Duration::from_secs(1);
    sim.run_until(t);
    assert_eq!(
        sim.client.active(),
        DcId::new(0),
        "the only alive tunnel carries traffic"
    );
    assert_eq!(sim.client.status()[0].health, probe::PathHealth::Recovering);
    let flaps = sim.client.status()[0].probes.flaps;
    sim.net.links[0].loss_up = 0.15;
    sim.net.links[0].loss_down = 0.15;
    sim.run_until(t + Duration::from_secs(120));
    assert_eq!(sim.client.status()[0].health, probe::PathHealth::Recovering);
    assert_eq!(
        sim.client.status()[0].probes.flaps,
        flaps,
        "no flap while recovering under loss"
    );
}

/// An IPv4 TCP segment from the stable address to a server, checksums computed from scratch.
fn tcp_segment(seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    use wire::checksum;
    let len = 40 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[100, 96, 0, 2]);
    p[16..20].copy_from_slice(&[198, 19, 0, 100]);
    p[20..22].copy_from_slice(&40_000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5_201u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x18; // PSH, ACK
    p[34..36].copy_from_slice(&1_000u16.to_be_bytes());
    p[40..].copy_from_slice(payload);
    let c = checksum::finish(checksum::sum(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let acc = checksum::pseudo_header(&p[12..16], &p[16..20], 6, len - 20);
    let c = checksum::finish(checksum::fold(checksum::add(acc, &p[20..])));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// The newest segment lost with dc1 reaches the inside network again through dc2, after dc2
/// has claimed the stable address (so the server's answer comes back), followed by an ACK.
fn recovery_run(recovery: bool) -> (Sim, Vec<u8>, Duration) {
    let mut sim = Sim::with_recovery(2, 61, priority(), recovery);
    sim.run_until(Duration::from_secs(2));
    let mut out = vec![0u8; 70_000];
    let mut first = tcp_segment(1_000, 9_000, &[1; 500]);
    let t = sim
        .client
        .handle_local(sim.net.now, &mut first, &mut out)
        .unwrap()
        .unwrap();
    let d = t.datagram.to_vec();
    sim.net.send(false, 0, d);
    sim.run_until(Duration::from_millis(2_010));
    assert!(sim
        .net
        .inside
        .iter()
        .any(|(_, dc, p)| *dc == 0 && *p == first));
    // dc1 fails; the next segment is lost with it
    sim.net.links[0].black_up = true;
    sim.net.links[0].black_down = true;
    let mut lost = tcp_segment(1_500, 9_000, &[2; 500]);
    let t = sim
        .client
        .handle_local(sim.net.now, &mut lost, &mut out)
        .unwrap()
        .unwrap();
    let d = t.datagram.to_vec();
    sim.net.send(false, 0, d);
    sim.run_until(Duration::from_millis(2_400));
    let switched = sim.switches_after(Duration::ZERO)[0].0;
    (sim, lost, switched)
}

#[test]
fn switch_over_recovery_resends_through_the_new_gateway_after_its_claim() {
    let (sim, lost, switched) = recovery_run(true);
    let claimed = sim
        .net
        .claims
        .iter()
        .find(|(_, dc, e)| *dc == 1 && matches!(e, GatewayEvent::Claim(_)))
        .map(|c| c.0)
        .expect("dc2 claims");
    let resent: Vec<_> = sim
        .net
        .inside
        .iter()
        .filter(|(_, dc, _)| *dc == 1)
        .collect();
    assert!(
        resent.iter().any(|(_, _, p)| *p == lost),
        "the lost segment, verbatim, through dc2"
    );
    let (at, _, _) = resent.iter().find(|(_, _, p)| *p == lost).unwrap();
    assert!(
        *at >= claimed && *at >= switched,
        "resent at {at:?}, after the switch ({switched:?}) and dc2's claim ({claimed:?})"
    );
    assert!(
        *at <= switched + Duration::from_millis(10),
        "one round trip after the switch, not later: {at:?} vs {switched:?}"
    );
    let ack = resent
        .iter()
        .find(|(_, _, p)| p.len() == 40)
        .expect("a pure ACK follows");
    assert_eq!(
        &ack.2[24..28],
        &2_000u32.to_be_bytes(),
        "past the lost payload"
    );
    let k = sim.client.keeper_stats();
    assert_eq!((k.recovery_segments, k.recovery_acks), (1, 1));
}

#[test]
fn without_recovery_nothing_is_resent() {
    let (sim, _, _) = recovery_run(false);
    assert!(sim.net.inside.iter().all(|(_, dc, _)| *dc == 0));
    assert_eq!(sim.client.keeper_stats().recovery_segments, 0);
}

/// The engine configuration the sim started with, for `names` (a subset or reordering of
/// dc1..dcN, by index into the sim's gateways).
fn config_for(sim: &Sim, dcs: &[usize], policy: Policy) -> EngineConfig {
    EngineConfig {
        stable: StableAddresses {
            v4: Some([100, 96, 0, 2].into()),
            v6: None,
        },
        datacenters: dcs
            .iter()
            .map(|&i| DatacenterConfig {
                name: format!("dc{}", i + 1),
                endpoint: engine::Endpoint::Addr(sim.dc_keys[i].0),
                public_key: sim.dc_keys[i].1,
                allowed_ips: AllowedIps::new(vec!["0.0.0.0/0".parse().unwrap()]),
                persistent_keepalive: None,
                preshared_key: None,
                probe: engine::Probe::Gateway(IpAddr::from(GW_INNER)),
            })
            .collect(),
        private_key: sim.client_key.clone(),
        local: StableAddresses::default(),
        probe: ProbeConfig::default(),
        policy,
        mtu: 1420,
        max_flows: 65_536,
        switch_recovery: true,
        routes: Vec::new(),
        seed: sim.seed,
        unix_time: Duration::from_secs(1_800_000_000),
    }
}

fn handshakes(sim: &Sim) -> Vec<u64> {
    sim.client
        .status()
        .iter()
        .map(|d| d.stats.handshakes)
        .collect()
}

#[test]
fn drain_moves_traffic_off_and_keeps_it_off_until_undrained() {
    let mut sim = warm(3, 41, priority());
    let t = sim.elapsed();
    let now = sim.net.now;
    sim.client.set_drained(now, DcId::new(0), true).unwrap();
    sim.collect_events();
    assert_eq!(
        sim.switches_after(t)
            .iter()
            .map(|s| (s.1, s.2, s.3))
            .collect::<Vec<_>>(),
        vec![(0, 1, SwitchReason::Drain)]
    );
    // drained, dc1 stays healthy but is never chosen again, also when dc2 fails
    sim.net.links[1].black_up = true;
    sim.net.links[1].black_down = true;
    sim.run_until(t + Duration::from_secs(3));
    assert_eq!(sim.client.active(), DcId::new(2), "{:?}", sim.switches);
    assert!(sim.client.is_drained(DcId::new(0)));
    // refused: switching to a drained datacenter, or to one that is down
    let now = sim.net.now;
    assert_eq!(
        sim.client.switch_to(now, DcId::new(0)),
        Err(engine::OperatorError::Drained)
    );
    assert_eq!(
        sim.client.switch_to(now, DcId::new(1)),
        Err(engine::OperatorError::Down)
    );
    assert_eq!(
        sim.client.switch_to(now, DcId::new(9)),
        Err(engine::OperatorError::Unknown)
    );
    // undrained, failback takes traffic home
    sim.client.set_drained(now, DcId::new(0), false).unwrap();
    sim.collect_events();
    assert_eq!(sim.client.active(), DcId::new(0));
    assert_eq!(sim.switches.last().unwrap().3, SwitchReason::Failback);
}

#[test]
fn a_manual_switch_holds_against_failback_until_its_datacenter_fails() {
    let mut sim = warm(3, 42, priority());
    let now = sim.net.now;
    sim.client.switch_to(now, DcId::new(2)).unwrap();
    let t = sim.elapsed();
    sim.run_until(t + Duration::from_secs(5));
    assert_eq!(
        sim.client.active(),
        DcId::new(2),
        "failback must not undo the operator"
    );
    sim.net.links[2].black_up = true;
    sim.net.links[2].black_down = true;
    sim.run_until(t + Duration::from_secs(6));
    assert_eq!(sim.client.active(), DcId::new(0), "{:?}", sim.switches);
}

#[test]
fn a_reload_keeps_unchanged_tunnels_and_the_active_one() {
    let mut sim = warm(3, 43, priority());
    let before = handshakes(&sim);
    let now = sim.net.now;
    // dc3 dropped, dc1 and dc2 kept, probe interval changed
    let mut cfg = config_for(&sim, &[0, 1], priority());
    cfg.probe.interval = Duration::from_millis(30);
    let report = sim.client.reconfigure(cfg, now).unwrap();
    assert_eq!(report.removed, vec!["dc3".to_owned()]);
    assert_eq!(report.unchanged, vec!["dc1".to_owned(), "dc2".to_owned()]);
    assert!(report.added.is_empty() && report.changed.is_empty());
    assert_eq!(
        sim.client.name(sim.client.active()),
        "dc1",
        "dc1 stays active"
    );
    let t = sim.elapsed();
    sim.run_until(t + Duration::from_secs(2));
    // no new handshake on the kept tunnels, no switch
    assert_eq!(handshakes(&sim), vec![before[0], before[1]]);
    assert!(sim.switches_after(t).is_empty(), "{:?}", sim.switches);
    // dc3 back, with a changed keepalive: built new, and it comes up
    let mut cfg = config_for(&sim, &[0, 1, 2], priority());
    cfg.datacenters[1].persistent_keepalive = Some(25);
    let now = sim.net.now;
    let report = sim.client.reconfigure(cfg, now).unwrap();
    assert_eq!(report.added, vec!["dc3".to_owned()]);
    assert_eq!(report.changed, vec!["dc2".to_owned()]);
    sim.run_until(t + Duration::from_secs(4));
    let status = sim.client.status();
    assert!(status.iter().all(|d| d.established), "{status:?}");
    assert_eq!(sim.client.name(sim.client.active()), "dc1");
    // a new order is a new priority: traffic follows it (dc2, rebuilt again for its keepalive,
    // once it is up and past its hold-down)
    let now = sim.net.now;
    sim.client
        .reconfigure(config_for(&sim, &[1, 0, 2], priority()), now)
        .unwrap();
    sim.run_until(t + Duration::from_secs(7));
    assert_eq!(sim.client.name(sim.client.active()), "dc2");
    assert_eq!(sim.switches.last().unwrap().3, SwitchReason::Failback);
    // a changed stable address is refused and nothing changes
    let mut cfg = config_for(&sim, &[0], priority());
    cfg.stable.v4 = Some([100, 96, 0, 3].into());
    let now = sim.net.now;
    assert!(matches!(
        sim.client.reconfigure(cfg, now),
        Err(engine::EngineError::StableChanged)
    ));
    assert_eq!(sim.client.status().len(), 3);
    // so are a new MTU (the local side was set up with the old one) and a new flow table size
    let mut cfg = config_for(&sim, &[0], priority());
    cfg.mtu = 1380;
    assert!(matches!(
        sim.client.reconfigure(cfg, now),
        Err(engine::EngineError::RestartNeeded { what }) if what.contains("mtu")
    ));
    let mut cfg = config_for(&sim, &[0], priority());
    cfg.max_flows /= 2;
    assert!(matches!(
        sim.client.reconfigure(cfg, now),
        Err(engine::EngineError::RestartNeeded {
            what: "client.flow_table_size"
        })
    ));
    assert_eq!(sim.client.status().len(), 3);
    assert_eq!(sim.client.mtu(), 1420);
}

/// The laptop sleeps 300 s (boot time jumps; nothing ran meanwhile, so nothing was received
/// and everything in flight is gone). The engine is called next 300 s past its own deadline:
/// it notices the stall itself and blames no datacenter for it.
fn sleep_300s() -> (Sim, Duration) {
    let mut sim = warm(3, 44, priority());
    let gap = Duration::from_secs(300);
    sim.net.queue.clear();
    sim.net.now += gap;
    let t = sim.elapsed();
    sim.run_until(t + Duration::from_secs(2));
    (sim, t)
}

#[test]
fn a_stall_is_noticed_and_blames_no_datacenter() {
    let (sim, t) = sleep_300s();
    let resumed: Vec<Duration> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Resumed { gap } => Some(*gap),
            _ => None,
        })
        .collect();
    assert_eq!(resumed.len(), 1, "{:?}", sim.events);
    assert!(
        resumed[0] > Duration::from_secs(299) && resumed[0] <= Duration::from_secs(300),
        "the gap is counted from the deadline the engine had: {resumed:?}"
    );
    assert_eq!(sim.client.resumes(), 1);
    assert!(sim.switches_after(t).is_empty(), "{:?}", sim.switches);
    let downs: Vec<_> = sim
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Health {
                    to: probe::PathHealth::Down,
                    ..
                }
            )
        })
        .collect();
    assert!(downs.is_empty(), "{downs:?}");
    assert_eq!(sim.client.active(), DcId::new(0));
    // dc1's gateway released the silent client meanwhile and claims it again at once
    let reclaimed = sim
        .net
        .claims
        .iter()
        .any(|(at, dc, e)| *at >= t && *dc == 0 && matches!(e, GatewayEvent::Claim(_)));
    assert!(reclaimed, "{:?}", sim.net.claims);
    assert!(sim
        .client
        .status()
        .iter()
        .all(|d| d.health == probe::PathHealth::Up));
}

#[test]
fn a_wakeup_late_by_less_than_the_stall_bound_is_no_stall() {
    let mut sim = warm(3, 45, priority());
    // the loop was busy (or the machine loaded) for 200 ms: a real silence the probes judge
    sim.net.now += Duration::from_millis(200);
    let t = sim.elapsed();
    sim.run_until(t + Duration::from_secs(1));
    assert!(
        !sim.events
            .iter()
            .any(|e| matches!(e, Event::Resumed { .. })),
        "{:?}",
        sim.events
    );
    assert_eq!(sim.client.resumes(), 0);
}

#[test]
fn the_switch_record_carries_detection_and_the_stall_it_caused() {
    let mut sim = warm(2, 31, priority());
    sim.net.links[0].black_up = true;
    sim.net.links[0].black_down = true;
    sim.run_until(Duration::from_millis(2_500));
    let records: Vec<engine::SwitchRecord> = sim.client.switches().cloned().collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(
        (r.from.as_str(), r.to.as_str()),
        (sim.client.name(DcId::new(0)), sim.client.name(DcId::new(1)))
    );
    assert_eq!(r.reason, SwitchReason::ProbeTimeout);
    assert!(
        r.detection.is_some_and(|d| d <= Duration::from_millis(100)),
        "{r:?}"
    );
    assert_eq!(r.stall, None, "no data through dc2 yet");
    assert_eq!(sim.client.switch_count(SwitchReason::ProbeTimeout), 1);
    assert_eq!(sim.client.switch_count(SwitchReason::Failback), 0);
    // the first data packet through dc2, 600 ms after dc1 went silent, closes the record
    let mut out = vec![0u8; 70_000];
    let t = sim.net.gateways[1]
        .1
        .handle_inside_packet(&download_segment(1), &mut out)
        .expect("dc2 encrypts the download");
    let d = t.datagram.to_vec();
    sim.run_until(Duration::from_millis(2_600));
    sim.net.send(true, 1, d);
    sim.run_until(Duration::from_millis(2_700));
    let r = sim.client.switches().last().cloned().unwrap();
    let stall = r.stall.expect("the stall is known once data arrives");
    assert!(
        stall >= Duration::from_millis(580) && stall <= Duration::from_millis(640),
        "from dc1's last datagram (~2.0 s) to the data through dc2 (~2.6 s): {stall:?}"
    );
    assert!(sim.events.iter().any(
        |e| matches!(e, Event::Recovered { dc, stall: s } if *dc == DcId::new(1) && *s == stall)
    ));
}

/// The lookups the engine hands out now.
fn lookups(sim: &mut Sim) -> Vec<engine::Lookup> {
    std::iter::from_fn(|| sim.client.poll_lookup()).collect()
}

#[test]
fn endpoint_names_are_asked_for_answers_judged_and_asked_again() {
    let mut sim = warm(2, 51, priority());
    // dc1's endpoint becomes a name (a reload): no endpoint until it resolves
    let mut cfg = config_for(&sim, &[0, 1], priority());
    cfg.routes = vec!["198.19.0.0/16".parse().unwrap()];
    cfg.datacenters[0].endpoint = engine::Endpoint::Name {
        host: "dc1.example".into(),
        port: 51820,
    };
    let now = sim.net.now;
    sim.client.reconfigure(cfg, now).unwrap();
    sim.client.handle_timeout(now);
    let asked = lookups(&mut sim);
    assert_eq!(
        asked,
        [engine::Lookup {
            dc: "dc1".into(),
            host: "dc1.example".into(),
            port: 51820
        }]
    );
    assert!(
        lookups(&mut sim).is_empty(),
        "one lookup in flight per name"
    );
    assert_eq!(sim.client.status()[0].endpoint, None);
    // answers that would loop are refused: loopback, and anything routed into the tunnels
    let dc1 = sim.dc_keys[0].0;
    sim.events.clear();
    sim.client.handle_resolved(
        now,
        "dc1",
        Ok(vec![
            "127.0.0.1:51820".parse().unwrap(),
            "198.19.0.5:51820".parse().unwrap(),
        ]),
        0.0,
    );
    sim.collect_events();
    assert!(
        sim.events
            .iter()
            .any(|e| matches!(e, Event::ResolveFailed { dc, .. } if *dc == DcId::new(0))),
        "{:?}",
        sim.events
    );
    assert_eq!(sim.client.status()[0].endpoint, None);
    // retried after the backoff (1 s, up to 1.5 s with jitter), not before
    let t = sim.elapsed();
    sim.run_until(t + Duration::from_millis(900));
    assert!(lookups(&mut sim).is_empty());
    sim.run_until(t + Duration::from_millis(1_100));
    assert_eq!(lookups(&mut sim).len(), 1);
    // a good answer becomes the endpoint, and the tunnel comes up
    let now = sim.net.now;
    sim.client.handle_resolved(now, "dc1", Ok(vec![dc1]), 0.0);
    sim.collect_events();
    assert!(sim.events.contains(&Event::EndpointResolved {
        dc: DcId::new(0),
        endpoint: dc1
    }));
    let t = sim.elapsed();
    sim.run_until(t + Duration::from_secs(2));
    assert_eq!(sim.client.status()[0].endpoint, Some(dc1));
    assert_eq!(sim.client.status()[0].health, probe::PathHealth::Up);
    assert!(
        lookups(&mut sim).is_empty(),
        "a good answer is kept for a minute"
    );
    // dc1 going down has its name asked again (at most every 5 s): it may point elsewhere
    sim.net.links[0].black_up = true;
    sim.net.links[0].black_down = true;
    let t = sim.elapsed();
    sim.run_until(t + Duration::from_secs(6));
    assert_eq!(sim.client.status()[0].health, probe::PathHealth::Down);
    assert_eq!(lookups(&mut sim).len(), 1, "asked again after going down");
    // a failed lookup keeps the last good address
    let now = sim.net.now;
    sim.client
        .handle_resolved(now, "dc1", Err("SERVFAIL".into()), 0.5);
    assert_eq!(sim.client.status()[0].endpoint, Some(dc1));
    // a network change asks every name again at once
    let now = sim.net.now + Duration::from_millis(1);
    sim.client.network_changed(now);
    sim.client.handle_timeout(now);
    assert_eq!(lookups(&mut sim).len(), 1);
}

fn gateway_events(sim: &Sim, dc: usize, of: fn(&GatewayEvent) -> bool) -> Vec<Duration> {
    sim.net
        .claims
        .iter()
        .filter(|(_, d, e)| *d == dc && of(e))
        .map(|(at, _, _)| *at)
        .collect()
}

#[test]
fn the_answer_to_a_claiming_probe_waits_for_the_claim() {
    let mut sim = Sim::new(2, 71, priority());
    sim.net.claim_result = None;
    sim.run_until(Duration::from_millis(500));
    let claims = gateway_events(&sim, 0, |e| matches!(e, GatewayEvent::Claim(_)));
    assert_eq!(claims.len(), 1, "{:?}", sim.net.claims);
    // the answer is held while the claim is being carried out …
    let mut batch = engine::Batch::for_datagrams(4);
    sim.net.gateways[0].1.poll_transmit(&mut batch);
    assert!(batch.is_empty());
    // … and goes out as soon as the front end says it landed
    let now = sim.net.now;
    sim.net.gateways[0]
        .1
        .claim_done(now, tunnel::PeerId(0), true);
    sim.net.gateways[0].1.poll_transmit(&mut batch);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.iter().next().unwrap().to, CLIENT.parse().unwrap());
    assert!(sim.net.gateways[0].1.claimed(tunnel::PeerId(0)));
}

#[test]
fn a_failed_claim_is_tried_again_with_the_next_active_probe() {
    let mut sim = Sim::new(2, 72, priority());
    sim.net.claim_result = Some(false);
    sim.run_until(Duration::from_millis(1_500));
    let claims = gateway_events(&sim, 0, |e| matches!(e, GatewayEvent::Claim(_)));
    assert!(claims.len() >= 3, "retried: {claims:?}");
    assert!(!sim.net.gateways[0].1.claimed(tunnel::PeerId(0)));
    assert!(
        gateway_events(&sim, 0, |e| matches!(e, GatewayEvent::Announce(_))).is_empty(),
        "nothing to announce for a claim that failed"
    );
    // once claims work again, the next Active probe claims, and once only
    sim.net.claim_result = Some(true);
    let before = claims.len();
    sim.run_until(Duration::from_millis(1_600));
    let claims = gateway_events(&sim, 0, |e| matches!(e, GatewayEvent::Claim(_)));
    assert_eq!(claims.len(), before + 1, "{claims:?}");
    assert!(sim.net.gateways[0].1.claimed(tunnel::PeerId(0)));
}

#[test]
fn a_claim_is_announced_again_only_while_its_client_probes_here() {
    let mut sim = warm(2, 73, priority());
    sim.run_until(Duration::from_secs(4));
    let claimed = gateway_events(&sim, 0, |e| matches!(e, GatewayEvent::Claim(_)));
    let announced = gateway_events(&sim, 0, |e| matches!(e, GatewayEvent::Announce(_)));
    assert_eq!(claimed.len(), 1);
    let after: Vec<Duration> = announced.iter().map(|a| *a - claimed[0]).collect();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after[0] >= Duration::from_secs(1) && after[0] < Duration::from_millis(1_050));
    assert!(after[1] >= Duration::from_secs(3) && after[1] < Duration::from_millis(3_050));
    // dc2 claims after dc1 fails; then dc2's path breaks too, before its first
    // re-announcement: the client's probes no longer reach it, so it announces nothing more
    // (it must not pull the return path back from wherever the client goes next)
    sim.net.links[0].black_up = true;
    sim.net.links[0].black_down = true;
    sim.run_until(Duration::from_millis(4_200));
    let dc2_claims = gateway_events(&sim, 1, |e| matches!(e, GatewayEvent::Claim(_)));
    assert_eq!(dc2_claims.len(), 1, "{:?}", sim.net.claims);
    sim.net.links[1].black_up = true;
    sim.net.links[1].black_down = true;
    sim.run_until(Duration::from_secs(9));
    let dc2_announced = gateway_events(&sim, 1, |e| matches!(e, GatewayEvent::Announce(_)));
    assert!(
        dc2_announced.is_empty(),
        "dc2 lost its client before announcing again: {dc2_announced:?}"
    );
}

// ---- wide area: jitter, distance, spikes (the lab's profiles, on the virtual clock) ----------

/// The lowest-rtt policy of the daemon's defaults: 20 % and 5 ms better, at most every 10 s.
fn lowest_rtt() -> Policy {
    Policy::LowestRtt {
        ratio: 0.2,
        min_gain: Duration::from_millis(5),
        min_dwell: Duration::from_secs(10),
    }
}

/// Sets datacenter `dc`'s links to `one_way` ± up to `jitter` (uniform, reordering).
fn distance(sim: &mut Sim, dc: usize, one_way_ms: f64, jitter_ms: f64) {
    sim.net.links[dc].delay = Duration::from_secs_f64(one_way_ms / 1e3);
    sim.net.links[dc].jitter = Duration::from_secs_f64(jitter_ms / 1e3);
}

#[test]
fn intercontinental_distances_with_jitter_for_ten_minutes_cause_no_switch() {
    // 40, 90, 150 ms RTT, each datagram up to 10 ms late (and so reordered), both policies
    for (policy, seed) in [(priority(), 61), (lowest_rtt(), 62)] {
        let mut sim = Sim::new(3, seed, policy);
        for (dc, ms) in [(0, 20.0), (1, 45.0), (2, 75.0)] {
            distance(&mut sim, dc, ms, 10.0);
        }
        sim.run_until(Duration::from_secs(602));
        assert!(
            sim.switches.is_empty(),
            "{policy:?}: false switches: {:?}",
            sim.switches
        );
        let s = sim.client.status();
        assert!(s.iter().all(|d| d.health == probe::PathHealth::Up), "{s:?}");
        assert!(
            s[2].srtt.is_some_and(|r| r >= Duration::from_millis(150)),
            "{:?}",
            s[2].srtt
        );
    }
}

#[test]
fn a_blackhole_at_intercontinental_distance_is_detected_within_the_rto_and_a_trip() {
    let mut detections = Vec::new();
    for seed in 1..=12u64 {
        let mut sim = Sim::new(2, 70 + seed, priority());
        // (the links lengthen after the first handshake at 1 ms: a spike at start-up, which
        // may move traffic and back; it settles long before the fault)
        distance(&mut sim, 0, 75.0, 2.0);
        distance(&mut sim, 1, 45.0, 2.0);
        sim.run_until(Duration::from_secs(10));
        assert_eq!(sim.client.active(), DcId::new(0));
        let phase = Duration::from_micros((sim.random() * 40_000.0) as u64);
        let fail_at = Duration::from_secs(10) + phase;
        sim.run_until(fail_at);
        sim.net.links[0].black_up = true;
        sim.net.links[0].black_down = true;
        sim.run_until(fail_at + Duration::from_secs(2));
        let s = sim.switches_after(fail_at);
        assert_eq!(s.len(), 1, "seed {seed}: {s:?}");
        detections.push(s[0].0 - fail_at);
    }
    detections.sort();
    let worst = *detections.last().unwrap();
    eprintln!(
        "150 ms RTT blackhole: detection p50 {:?}, worst {worst:?}",
        percentile(&detections, 0.5)
    );
    // the last reply can be a one-way trip after the fault; then 4 intervals and the RTO
    // (about the RTT): well under 400 ms
    assert!(worst <= Duration::from_millis(400), "{detections:?}");
}

#[test]
fn lowest_rtt_holds_among_equal_jittered_paths_and_moves_beyond_the_hysteresis() {
    // seed: 15, 15, 35 ms RTT, each datagram up to 4 ms late
    let mut sim = Sim::new(3, 81, lowest_rtt());
    for (dc, ms) in [(0, 7.5), (1, 7.5), (2, 17.5)] {
        distance(&mut sim, dc, ms, 4.0);
    }
    sim.run_until(Duration::from_secs(300));
    assert!(sim.switches.is_empty(), "{:?}", sim.switches);
    assert_eq!(sim.client.active(), DcId::new(0));
    // dc1 at 18 ms: inside the hysteresis (3 ms, 17 %)
    distance(&mut sim, 0, 9.0, 4.0);
    sim.run_until(Duration::from_secs(330));
    assert!(sim.switches.is_empty(), "{:?}", sim.switches);
    // dc1 at 25 ms: beyond it; the base RTT (lowest of 4 s) shows it within the window
    distance(&mut sim, 0, 12.5, 4.0);
    sim.run_until(Duration::from_secs(340));
    let s = sim.switches_after(Duration::from_secs(330));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].1, s[0].2), (0, 1));
    let after = s[0].0 - Duration::from_secs(330);
    assert!(
        after <= Duration::from_secs(5),
        "moved {after:?} after the rise"
    );
}

#[test]
fn a_spike_beyond_the_budget_moves_traffic_and_it_returns_only_after_the_spike() {
    // 15 ms RTT; +200 ms for 2 s: a failure while it silences the tunnel; the late replies
    // must not bring traffic back into the spike
    let mut sim = Sim::new(2, 91, priority());
    distance(&mut sim, 0, 7.5, 0.3);
    distance(&mut sim, 1, 7.5, 0.3);
    sim.run_until(Duration::from_secs(5));
    let start = Duration::from_secs(5);
    distance(&mut sim, 0, 107.5, 0.3);
    sim.run_until(start + Duration::from_secs(2));
    distance(&mut sim, 0, 7.5, 0.3);
    let end = start + Duration::from_secs(2);
    sim.run_until(start + Duration::from_secs(10));
    let s = sim.switches_after(start);
    assert_eq!(s.len(), 2, "away and back: {s:?}");
    assert_eq!((s[0].1, s[0].2), (0, 1));
    assert!(s[0].0 - start <= Duration::from_millis(150), "{s:?}");
    assert_eq!((s[1].1, s[1].2), (1, 0));
    // back after the spike, its trailing replies, and a whole hold-down (1 s)
    assert!(s[1].0 >= end + Duration::from_secs(1), "{s:?}");
    eprintln!(
        "spike: away {:?} in, back {:?} after it",
        s[0].0 - start,
        s[1].0 - end
    );
}

#[test]
fn every_switch_raises_the_generation_the_gateways_claim_with() {
    // what routed datacenters rely on: the newest claim carries the highest generation, also
    // where an old gateway never heard that the client left (it was cut off)
    let mut sim = warm(2, 31, priority());
    let peer = tunnel::PeerId(0);
    let first = sim.net.gateways[0].1.generation(peer);
    assert!(first > 0 && first == sim.client.generation(), "{first}");
    // 1_800_000_000 s Unix is 2027-01-15: (that − 2026-01-01) in tenths of a second
    assert!(first >= 327_744_000, "from the wall clock: {first}");
    sim.net.links[0].black_up = true;
    sim.net.links[0].black_down = true;
    sim.run_until(Duration::from_millis(2500));
    assert_eq!(sim.client.active(), DcId::new(1));
    let second = sim.net.gateways[1].1.generation(peer);
    assert!(second > first, "{second} after {first}");
    // dc1 was cut off: it still claims with the old generation until its claim times out
    assert!(sim.net.gateways[0].1.claimed(peer));
    assert_eq!(sim.net.gateways[0].1.generation(peer), first);
    sim.run_until(Duration::from_secs(4));
    sim.net.links[0].black_up = false;
    sim.net.links[0].black_down = false;
    sim.run_until(Duration::from_secs(8));
    assert_eq!(sim.client.active(), DcId::new(0), "failed back");
    let third = sim.net.gateways[0].1.generation(peer);
    assert!(third > second, "{third} after {second}");
    assert!(
        !sim.net.gateways[1].1.claimed(peer),
        "dc2 released on Standby"
    );
}
