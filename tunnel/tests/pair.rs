//! A client `Tunnel` and a gateway `Responder` talking over an in-memory network on a virtual
//! clock: handshake, data both ways, cryptokey routing, and the endpoint rules.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tunnel::{
    AllowedIps, DropReason, EndpointPolicy, Outcome, PeerConfig, PrivateKey, Responder, Tunnel,
    TunnelConfig,
};

const CLIENT: &str = "198.18.0.1:40000";
const GATEWAY: &str = "198.18.0.11:51820";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ipv4_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = wire::checksum::finish(wire::checksum::sum(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(payload);
    p
}

struct Pair {
    client: Tunnel,
    gateway: Responder,
    now: Instant,
    buf: Vec<u8>,
    buf2: Vec<u8>,
}

impl Pair {
    fn new(client_allowed: &str) -> Self {
        let client_key = PrivateKey::generate();
        let gw_key = PrivateKey::generate();
        let client = Tunnel::new(TunnelConfig {
            private_key: client_key.clone(),
            peer_public_key: gw_key.public_key(),
            persistent_keepalive: None,
            preshared_key: None,
            index: 0,
            allowed_ips: AllowedIps::new(vec!["0.0.0.0/0".parse().unwrap()]),
            endpoint: EndpointPolicy::Fixed(addr(GATEWAY)),
            keep_established: true,
        })
        .unwrap();
        let gateway = Responder::new(
            gw_key,
            vec![PeerConfig {
                public_key: client_key.public_key(),
                allowed_ips: AllowedIps::new(vec![client_allowed.parse().unwrap()]),
                persistent_keepalive: None,
                preshared_key: None,
            }],
            100,
        )
        .unwrap();
        #[allow(clippy::disallowed_methods)]
        // the test's base instant; time then advances virtually
        let now = Instant::now();
        Self {
            client,
            gateway,
            now,
            buf: vec![0; 70_000],
            buf2: vec![0; 70_000],
        }
    }

    /// Sends client→gateway `datagram`, returns what the gateway produced for the client and any
    /// packet it delivered.
    fn deliver_to_gateway(&mut self, datagram: &[u8]) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        let mut replies = Vec::new();
        let mut delivered = None;
        let (peer, out) =
            self.gateway
                .handle_datagram(self.now, addr(CLIENT), datagram, &mut self.buf);
        match out {
            Outcome::Transmit(t) => {
                assert_eq!(t.to, addr(CLIENT));
                replies.push(t.datagram.to_vec());
            }
            Outcome::Deliver(p) => delivered = Some(p.to_vec()),
            _ => {}
        }
        if let Some(peer) = peer {
            while let Some(t) = self
                .gateway
                .peer_mut(peer)
                .unwrap()
                .poll_transmit(&mut self.buf)
            {
                replies.push(t.datagram.to_vec());
            }
        }
        (replies, delivered)
    }

    fn handshake(&mut self) {
        let init = match self.client.handle_timeout(self.now, &mut self.buf2) {
            Outcome::Transmit(t) => t.datagram.to_vec(),
            other => panic!("expected an initiation, got {other:?}"),
        };
        let (replies, _) = self.deliver_to_gateway(&init);
        assert_eq!(replies.len(), 1, "one handshake response");
        let out = self
            .client
            .decapsulate(self.now, addr(GATEWAY), &replies[0], &mut self.buf2);
        let keepalive = match out {
            Outcome::Transmit(t) => t.datagram.to_vec(),
            other => panic!("expected a keepalive, got {other:?}"),
        };
        let (_, delivered) = self.deliver_to_gateway(&keepalive);
        assert!(delivered.is_none());
        assert!(self.client.is_established());
    }
}

#[test]
fn handshake_then_data_both_ways() {
    let mut pair = Pair::new("100.96.0.2/32");
    pair.handshake();
    let up = ipv4_packet([100, 96, 0, 2], [198, 19, 0, 100], b"hello");
    let datagram = match pair.client.encapsulate(&up, &mut pair.buf2) {
        Outcome::Transmit(t) => t.datagram.to_vec(),
        other => panic!("{other:?}"),
    };
    let (_, delivered) = pair.deliver_to_gateway(&datagram);
    assert_eq!(delivered.as_deref(), Some(&up[..]));

    // back: route by destination to the client
    let down = ipv4_packet([198, 19, 0, 100], [100, 96, 0, 2], b"world");
    let peer = pair.gateway.route(IpAddr::from([100, 96, 0, 2])).unwrap();
    assert!(pair.gateway.route(IpAddr::from([100, 96, 0, 3])).is_none());
    let tunnel = pair.gateway.peer_mut(peer).unwrap();
    assert_eq!(
        tunnel.endpoint(),
        Some(addr(CLIENT)),
        "learnt from authenticated packets"
    );
    let datagram = match tunnel.encapsulate(&down, &mut pair.buf) {
        Outcome::Transmit(t) => t.datagram.to_vec(),
        other => panic!("{other:?}"),
    };
    match pair
        .client
        .decapsulate(pair.now, addr(GATEWAY), &datagram, &mut pair.buf2)
    {
        Outcome::Deliver(p) => assert_eq!(p, &down[..]),
        other => panic!("{other:?}"),
    }
    // the same datagram again is a replay
    let again = pair
        .client
        .decapsulate(pair.now, addr(GATEWAY), &datagram, &mut pair.buf2);
    assert_eq!(again, Outcome::Dropped(DropReason::Replay));
}

#[test]
fn source_outside_allowed_ips_is_dropped_and_counted() {
    let mut pair = Pair::new("100.96.0.2/32");
    pair.handshake();
    let spoofed = ipv4_packet([100, 96, 0, 9], [198, 19, 0, 100], b"spoof");
    let datagram = match pair.client.encapsulate(&spoofed, &mut pair.buf2) {
        Outcome::Transmit(t) => t.datagram.to_vec(),
        other => panic!("{other:?}"),
    };
    let (_, out) = pair
        .gateway
        .handle_datagram(pair.now, addr(CLIENT), &datagram, &mut pair.buf);
    assert_eq!(out, Outcome::Dropped(DropReason::InnerSourceNotAllowed));
    let peer = pair.gateway.route(IpAddr::from([100, 96, 0, 2])).unwrap();
    let stats = pair.gateway.peer(peer).unwrap().stats();
    assert_eq!(stats.drops.get(DropReason::InnerSourceNotAllowed), 1);
}

#[test]
fn client_ignores_datagrams_from_other_sources() {
    let mut pair = Pair::new("100.96.0.2/32");
    pair.handshake();
    let down = ipv4_packet([198, 19, 0, 100], [100, 96, 0, 2], b"x");
    let peer = pair.gateway.route(IpAddr::from([100, 96, 0, 2])).unwrap();
    let datagram = match pair
        .gateway
        .peer_mut(peer)
        .unwrap()
        .encapsulate(&down, &mut pair.buf)
    {
        Outcome::Transmit(t) => t.datagram.to_vec(),
        other => panic!("{other:?}"),
    };
    let out = pair.client.decapsulate(
        pair.now,
        addr("198.18.0.66:51820"),
        &datagram,
        &mut pair.buf2,
    );
    assert_eq!(out, Outcome::Dropped(DropReason::UnexpectedSource));
}

#[test]
fn gateway_never_learns_endpoint_from_garbage() {
    let mut pair = Pair::new("100.96.0.2/32");
    pair.handshake();
    let peer = pair.gateway.route(IpAddr::from([100, 96, 0, 2])).unwrap();
    // a forged data message for the client's session index, from another address
    let mut forged = vec![4u8, 0, 0, 0];
    forged.extend_from_slice(&[1, 0, 0, 0]); // some index of peer 0
    forged.extend_from_slice(&[0u8; 8 + 48]);
    for idx in 0..=255u8 {
        forged[4] = idx;
        let (_, out) =
            pair.gateway
                .handle_datagram(pair.now, addr("203.0.113.9:1"), &forged, &mut pair.buf);
        assert!(matches!(out, Outcome::Dropped(_)), "{out:?}");
    }
    assert_eq!(
        pair.gateway.peer(peer).unwrap().endpoint(),
        Some(addr(CLIENT))
    );
}

#[test]
fn hostile_datagrams_never_panic() {
    let mut pair = Pair::new("100.96.0.2/32");
    pair.handshake();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let len = match next() % 6 {
            0 => (next() % 5) as usize,
            1 => 148,
            2 => 92,
            3 => 64,
            4 => 32 + (next() % 1500) as usize,
            _ => (next() % 65_507) as usize,
        };
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(b) = d.first_mut() {
            *b = (next() % 6) as u8;
        }
        for b in d.iter_mut().skip(1).take(3) {
            *b = 0;
        }
        let _ = pair
            .gateway
            .handle_datagram(pair.now, addr(CLIENT), &d, &mut pair.buf);
        let _ = pair
            .client
            .decapsulate(pair.now, addr(GATEWAY), &d, &mut pair.buf2);
    }
    // small buffers are refused, not a panic
    let mut tiny = [0u8; 16];
    assert_eq!(
        pair.client.encapsulate(&[0x45; 100], &mut tiny),
        Outcome::Dropped(DropReason::BufferTooSmall)
    );
    pair.now += Duration::from_secs(1);
    // and the session still works
    let up = ipv4_packet([100, 96, 0, 2], [198, 19, 0, 100], b"still");
    let datagram = match pair.client.encapsulate(&up, &mut pair.buf2) {
        Outcome::Transmit(t) => t.datagram.to_vec(),
        other => panic!("{other:?}"),
    };
    let (_, delivered) = pair.deliver_to_gateway(&datagram);
    assert_eq!(delivered.as_deref(), Some(&up[..]));
}
