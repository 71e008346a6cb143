//! The engine against two gateways (`tunnel::Responder`) over an in-memory underlay, on a
//! virtual clock: every tunnel comes up from the first timeout, traffic uses the first
//! datacenter, and local packets with a foreign source never enter a tunnel.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use engine::{DatacenterConfig, DcId, Engine, EngineConfig, Event, LocalDrop};
use sessionkeeper::StableAddresses;
use tunnel::inner::ones_complement_sum;
use tunnel::{
    AllowedIps, EndpointPolicy, Outcome, PeerConfig, PrivateKey, Responder, TunnelConfig,
};

const CLIENT: &str = "198.18.0.1:40000";

fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = !ones_complement_sum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

struct World {
    engine: Engine,
    gateways: Vec<(SocketAddr, Responder)>,
    now: Instant,
    delivered_at_gw: Vec<(usize, Vec<u8>)>,
}

impl World {
    fn new(n: usize) -> Self {
        let client_key = PrivateKey::generate();
        let mut gateways = Vec::new();
        let mut dcs = Vec::new();
        for i in 0..n {
            let key = PrivateKey::generate();
            let addr: SocketAddr = format!("198.18.0.{}:51820", 11 + i).parse().unwrap();
            dcs.push(DatacenterConfig {
                name: format!("dc{}", i + 1),
                tunnel: TunnelConfig {
                    private_key: client_key.clone(),
                    peer_public_key: key.public_key(),
                    persistent_keepalive: Some(25),
                    index: i as u32,
                    allowed_ips: AllowedIps::new(vec!["0.0.0.0/0".parse().unwrap()]),
                    endpoint: EndpointPolicy::Fixed(addr),
                    keep_established: true,
                },
            });
            let responder = Responder::new(
                key,
                vec![PeerConfig {
                    public_key: client_key.public_key(),
                    allowed_ips: AllowedIps::new(vec!["100.96.0.2/32".parse().unwrap()]),
                    persistent_keepalive: None,
                }],
                100,
            )
            .unwrap();
            gateways.push((addr, responder));
        }
        let engine = Engine::new(EngineConfig {
            stable: StableAddresses {
                v4: Some([100, 96, 0, 2].into()),
                v6: None,
            },
            datacenters: dcs,
        })
        .unwrap();
        #[allow(clippy::disallowed_methods)] // base of the virtual clock
        let now = Instant::now();
        Self {
            engine,
            gateways,
            now,
            delivered_at_gw: Vec::new(),
        }
    }

    /// Runs the clock forward in 10 ms steps, exchanging every datagram instantly.
    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        let mut out = vec![0u8; 70_000];
        let mut out2 = vec![0u8; 70_000];
        while self.now < end {
            let mut to_gw: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
            self.engine.handle_timeout(self.now, &mut out, |t| {
                to_gw.push((t.to, t.datagram.to_vec()))
            });
            while let Some((to, d)) = to_gw.pop() {
                let gi = self.gateways.iter().position(|(a, _)| *a == to).unwrap();
                let gw = &mut self.gateways[gi].1;
                let (peer, o) = gw.handle_datagram(self.now, CLIENT.parse().unwrap(), &d, &mut out);
                let mut back = Vec::new();
                match o {
                    Outcome::Transmit(t) => back.push(t.datagram.to_vec()),
                    Outcome::Deliver(p) => self.delivered_at_gw.push((gi, p.to_vec())),
                    _ => {}
                }
                if let Some(peer) = peer {
                    while let Some(t) = gw.peer_mut(peer).unwrap().poll_transmit(&mut out) {
                        back.push(t.datagram.to_vec());
                    }
                }
                for b in back {
                    let o = self.engine.handle_datagram(self.now, to, &b, &mut out2);
                    if let Outcome::Transmit(t) = o {
                        to_gw.push((t.to, t.datagram.to_vec()));
                    }
                    while let Some(t) = self.engine.poll_transmit(&mut out2) {
                        to_gw.push((t.to, t.datagram.to_vec()));
                    }
                }
            }
            self.now += Duration::from_millis(10);
        }
    }
}

#[test]
fn every_tunnel_comes_up_and_traffic_uses_the_first() {
    let mut w = World::new(3);
    w.run(Duration::from_millis(100));
    let mut established = Vec::new();
    while let Some(e) = w.engine.poll_event() {
        if let Event::Established(dc) = e {
            established.push(dc.0);
        }
    }
    established.sort();
    assert_eq!(
        established,
        vec![0, 1, 2],
        "all three tunnels warm from the start"
    );
    assert_eq!(w.engine.active(), DcId(0));

    let mut out = vec![0u8; 70_000];
    let p = packet([100, 96, 0, 2], [198, 19, 0, 100]);
    let t = w.engine.handle_local_packet(&p, &mut out).unwrap().unwrap();
    assert_eq!(t.to, w.gateways[0].0);
    let d = t.datagram.to_vec();
    let (_, o) = w.gateways[0]
        .1
        .handle_datagram(w.now, CLIENT.parse().unwrap(), &d, &mut out);
    assert_eq!(o, Outcome::Deliver(&p[..]));
}

#[test]
fn foreign_sources_never_enter_a_tunnel() {
    let mut w = World::new(1);
    w.run(Duration::from_millis(50));
    let mut out = vec![0u8; 70_000];
    let p = packet([10, 0, 0, 1], [198, 19, 0, 100]);
    assert_eq!(
        w.engine.handle_local_packet(&p, &mut out).unwrap_err(),
        LocalDrop::SourceNotStable
    );
    assert_eq!(
        w.engine
            .handle_local_packet(&[0x70; 3], &mut out)
            .unwrap_err(),
        LocalDrop::NotIp
    );
    assert_eq!(w.engine.local_drops(), (1, 1));
}

#[test]
fn tunnels_stay_established_across_a_minute_of_ticks() {
    // boringtun reads its own clock for session age, so virtual time does not age its sessions;
    // this checks that 6000 ticks of the engine keep every tunnel established.
    let mut w = World::new(2);
    w.run(Duration::from_secs(60));
    assert!(w.engine.status().iter().all(|d| d.established));
}
