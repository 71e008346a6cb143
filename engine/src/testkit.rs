//! The datacenter side of a simulation, shared by every front end's simulation tests (the
//! engine's own, and `vmm-shim`'s below a guest): real [`Gateway`] engines behind links with
//! delay, random loss and blackholes, datagrams in flight on a virtual clock, and what a
//! gateway's front end would do (carry out claims at once, send what it hands out).
//!
//! The client side stays the test's: it takes each due datagram for the client from
//! [`Net::pop_due`] and hands its own datagrams to [`Net::send_up`]. Built only with the
//! `testkit` feature (the tests turn it on); nothing here reads a clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tunnel::Outcome;

use crate::gateway::{Gateway, GatewayEvent};
use crate::Batch;

/// One datacenter's link to the client, both ways.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    /// share of datagrams lost client → gateway
    pub loss_up: f64,
    /// share lost gateway → client
    pub loss_down: f64,
    /// one-way delay
    pub delay: Duration,
    /// extra delay per datagram, uniform in `[0, jitter]`; datagrams may overtake each other
    pub jitter: Duration,
    /// everything client → gateway lost
    pub black_up: bool,
    /// everything gateway → client lost
    pub black_down: bool,
}

/// A datagram on its way.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InFlight {
    /// when it arrives
    pub at: Instant,
    /// sending order, for datagrams arriving at the same instant
    pub order: u64,
    /// towards the client (else towards the gateway)
    pub to_client: bool,
    /// which datacenter's link
    pub dc: usize,
    /// the datagram
    pub bytes: Vec<u8>,
}

/// The datacenters, their links and what is in flight. See the module docs.
#[derive(Debug)]
pub struct Net {
    /// the start of the virtual clock
    pub t0: Instant,
    /// now, on the virtual clock
    pub now: Instant,
    /// each datacenter's gateway and the address it listens on
    pub gateways: Vec<(SocketAddr, Gateway)>,
    /// each datacenter's link
    pub links: Vec<Link>,
    /// datagrams in flight
    pub queue: BinaryHeap<Reverse<InFlight>>,
    /// claims, releases and announcements the gateways asked for: (time, datacenter, event)
    pub claims: Vec<(Duration, usize, GatewayEvent)>,
    /// how claims turn out: landed, failed, or left unanswered (`None`)
    pub claim_result: Option<bool>,
    /// packets the gateways delivered to their inside networks: (time, datacenter, packet)
    pub inside: Vec<(Duration, usize, Vec<u8>)>,
    client: SocketAddr,
    order: u64,
    rng: u64,
    out: Vec<u8>,
    batch: Batch,
}

impl Net {
    /// `gateways` behind links of `delay` each way, the client at `client`; `seed` drives
    /// the random loss.
    pub fn new(
        t0: Instant,
        gateways: Vec<(SocketAddr, Gateway)>,
        client: SocketAddr,
        delay: Duration,
        seed: u64,
    ) -> Self {
        let links = vec![
            Link {
                delay,
                ..Link::default()
            };
            gateways.len()
        ];
        Self {
            t0,
            now: t0,
            gateways,
            links,
            queue: BinaryHeap::new(),
            claims: Vec::new(),
            claim_result: Some(true),
            inside: Vec::new(),
            client,
            order: 0,
            // splitmix64 of the seed: small seeds must not give near-zero first draws
            rng: {
                let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) | 1
            },
            out: vec![0; tunnel::min_buffer_len(tunnel::MAX_DATAGRAM)],
            batch: Batch::for_datagrams(4),
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// A uniform draw in [0, 1) from the seeded generator (xorshift64).
    pub fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Puts a datagram on datacenter `dc`'s link, unless the link loses it.
    pub fn send(&mut self, to_client: bool, dc: usize, bytes: Vec<u8>) {
        let Some(link) = self.links.get(dc).copied() else {
            return;
        };
        let (black, loss) = if to_client {
            (link.black_down, link.loss_down)
        } else {
            (link.black_up, link.loss_up)
        };
        if black || (loss > 0.0 && self.random() < loss) {
            return;
        }
        self.order += 1;
        let jitter = if link.jitter.is_zero() {
            Duration::ZERO
        } else {
            link.jitter.mul_f64(self.random())
        };
        self.queue.push(Reverse(InFlight {
            at: self.now + link.delay + jitter,
            order: self.order,
            to_client,
            dc,
            bytes,
        }));
    }

    /// A datagram from the client to the gateway listening at `to`. A datagram to any other
    /// address is a test failure: nothing but the tunnels may leave the client.
    #[allow(clippy::panic)] // a test harness fails by panicking
    pub fn send_up(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        let Some(dc) = self.gateways.iter().position(|(a, _)| *a == to) else {
            panic!("a datagram to {to}, no gateway's address");
        };
        self.send(false, dc, bytes);
    }

    /// Sends up the links what a client's `poll_transmit` put in `batch`, and empties it.
    pub fn send_batch_up(&mut self, batch: &mut Batch) {
        let sends: Vec<(SocketAddr, Vec<u8>)> =
            batch.iter().map(|t| (t.to, t.datagram.to_vec())).collect();
        batch.clear();
        for (to, d) in sends {
            self.send_up(to, d);
        }
    }

    /// A packet from datacenter `dc`'s inside network to the client, through its gateway.
    #[allow(clippy::panic)] // a test harness fails by panicking
    pub fn inject(&mut self, dc: usize, packet: &[u8]) {
        let Some((_, gw)) = self.gateways.get_mut(dc) else {
            panic!("no datacenter {dc}");
        };
        let Some(t) = gw.handle_inside_packet(packet, &mut self.out) else {
            panic!("the gateway routes no client for this packet");
        };
        let d = t.datagram.to_vec();
        self.send(true, dc, d);
    }

    /// The earliest of: the next arrival, the next gateway timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue
            .peek()
            .map(|Reverse(f)| f.at)
            .into_iter()
            .chain(self.gateways.iter().filter_map(|(_, g)| g.poll_timeout()))
            .min()
    }

    /// The next datagram due now for the client, as (from, bytes); datagrams due for a
    /// gateway before it are delivered on the way.
    pub fn pop_due(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        while self.queue.peek().is_some_and(|Reverse(f)| f.at <= self.now) {
            let Reverse(f) = self.queue.pop()?;
            if f.to_client {
                let from = self.gateways.get(f.dc).map(|(a, _)| *a)?;
                return Some((from, f.bytes));
            }
            self.deliver_to_gateway(f);
        }
        None
    }

    fn deliver_to_gateway(&mut self, f: InFlight) {
        let (now, t0, client) = (self.now, self.t0, self.client);
        let Some((_, gw)) = self.gateways.get_mut(f.dc) else {
            return;
        };
        match gw.handle_datagram(now, client, &f.bytes, &mut self.out) {
            Outcome::Transmit(t) => {
                let reply = t.datagram.to_vec();
                self.send(true, f.dc, reply);
            }
            Outcome::Deliver(p) => self.inside.push((now - t0, f.dc, p.to_vec())),
            _ => {}
        }
        self.gateway_work(f.dc);
    }

    /// Runs the gateways' due timers.
    pub fn handle_timeouts(&mut self) {
        for i in 0..self.gateways.len() {
            let now = self.now;
            if let Some((_, g)) = self.gateways.get_mut(i) {
                if g.poll_timeout().is_some_and(|t| t <= now) {
                    g.handle_timeout(now);
                    self.gateway_work(i);
                }
            }
        }
    }

    /// What every gateway's front end does after each call (for events that come without a
    /// datagram, e.g. static claims at start).
    pub fn collect(&mut self) {
        for i in 0..self.gateways.len() {
            self.gateway_work(i);
        }
    }

    /// What gateway `i`'s front end does after each call: every claim turns out as
    /// `claim_result` says at once (the inside network is ideal), then what it has to send
    /// goes.
    fn gateway_work(&mut self, i: usize) {
        let now = self.now;
        loop {
            let Some((_, g)) = self.gateways.get_mut(i) else {
                return;
            };
            let Some(e) = g.poll_event() else {
                break;
            };
            if let (GatewayEvent::Claim(peer), Some(landed)) = (e, self.claim_result) {
                g.claim_done(now, peer, landed);
            }
            self.claims.push((now - self.t0, i, e));
        }
        loop {
            if let Some((_, g)) = self.gateways.get_mut(i) {
                g.poll_transmit(&mut self.batch);
            }
            if self.batch.is_empty() {
                return;
            }
            let sends: Vec<Vec<u8>> = self.batch.iter().map(|t| t.datagram.to_vec()).collect();
            self.batch.clear();
            for d in sends {
                self.send(true, i, d);
            }
        }
    }
}

/// A whole simulation: the datacenter side ([`Net`]) and a client side the test owns (the
/// engine, or a front end's layer over it). [`Simulation::run_until`] is the one event loop.
pub trait Simulation {
    /// The datacenter side.
    fn net(&mut self) -> &mut Net;
    /// When the client side's timers are due next.
    fn client_timeout(&self) -> Option<Instant>;
    /// Runs the client side's due timers at the net's `now` and sends what it has.
    fn client_timers(&mut self);
    /// A datagram for the client from the gateway at `from`.
    fn client_receive(&mut self, from: SocketAddr, bytes: &[u8]);
    /// After every step: the client side's events, and the gateways' front ends.
    fn collect(&mut self);

    /// Runs until `until` (from the start), event by event, on the virtual clock.
    fn run_until(&mut self, until: Duration) {
        let end = self.net().t0 + until;
        loop {
            let next = [self.net().poll_timeout(), self.client_timeout()]
                .into_iter()
                .flatten()
                .fold(end, Instant::min);
            if next > end {
                break;
            }
            let net = self.net();
            net.now = net.now.max(next);
            // deliveries due now, in order
            while let Some((from, bytes)) = self.net().pop_due() {
                self.client_receive(from, &bytes);
            }
            let now = self.net().now;
            if self.client_timeout().is_some_and(|t| t <= now) {
                self.client_timers();
            }
            self.net().handle_timeouts();
            self.collect();
            if self.net().now >= end {
                break;
            }
        }
        self.net().now = end;
    }
}
