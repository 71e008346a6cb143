//! The gateway's engine: many clients on one port ([`tunnel::Responder`]), the probe responder
//! ([`probe::echo::EchoResponder`]) and the claim decisions that make the return path follow a
//! client. The `failoverd gateway` front end owns the sockets, the TUN and the neighbour
//! takeover; every decision is made here, sans-IO.
//!
//! Calling contract: [`Gateway::handle_datagram`] for every underlay datagram,
//! [`Gateway::handle_inside_packet`] for every packet from the datacenter side,
//! [`Gateway::handle_timeout`] no later than [`Gateway::poll_timeout`]; after each,
//! [`Gateway::poll_event`] until `None`, carrying out every claim and release and reporting
//! each claim's result with [`Gateway::claim_done`], then [`Gateway::poll_transmit`] until it
//! adds nothing.
//!
//! The claim decisions: a client's probe with intent Active makes this gateway claim its
//! addresses ([`GatewayEvent::Claim`]), and the probe's answer is held until the front end
//! says the claim is in place — the client takes that answer to mean the return path follows
//! it. A claim that failed is forgotten, so the client's next Active probe tries again. A
//! claim that landed is announced again after 1 s and 3 s ([`GatewayEvent::Announce`]) in
//! case an announcement was lost on the segment, but only while the client still probes
//! here at its usual pace: a gateway that lost its client must not pull the return path back
//! from the gateway the client moved to.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use probe::echo::{ClaimChange, EchoResponder};
use tunnel::{
    DropCounters, DropReason, Outcome, PeerConfig, PeerId, PrivateKey, Responder, Transmit,
};

use crate::Batch;

/// After a claim landed, it is announced again after these delays.
pub const REANNOUNCE: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];

/// Timer datagrams (handshake initiations, keepalives; at most a data packet a session queued)
/// and held probe answers wait in the gateway's outbox for [`Gateway::poll_transmit`] …
const OUTBOX_SLOT: usize = 2048;
/// … which holds this many; beyond it they are dropped and counted (their timers fire again).
const OUTBOX_SLOTS: usize = 1024;

/// How a client's return path is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPath {
    /// claimed while the client's probes say this gateway is active (failoverd clients)
    Claim,
    /// claimed from start to end (plain WireGuard clients, which send no probes)
    Static,
}

/// One client.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayClient {
    /// its session parameters
    pub peer: PeerConfig,
    /// how its return path is made
    pub return_path: ReturnPath,
}

/// What the gateway engine needs.
#[derive(Debug)]
pub struct GatewayConfig {
    /// the gateway's key
    pub private_key: PrivateKey,
    /// handshakes per second on the port before cookies are required
    pub handshake_rate_limit: u64,
    /// the gateway's own inner addresses (probe responder)
    pub inner_addresses: Vec<IpAddr>,
    /// release a claim after this long without a probe
    pub claim_timeout: Duration,
    /// the clients
    pub clients: Vec<GatewayClient>,
}

/// What a reload did, by peer id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayReload {
    /// new clients (and changed ones, under their new id)
    pub added: Vec<PeerId>,
    /// clients no longer configured (and changed ones, under their old id)
    pub removed: Vec<PeerId>,
    /// clients kept as they were
    pub unchanged: Vec<PeerId>,
}

/// What the front end must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayEvent {
    /// attract the client's return traffic (route + neighbour takeover), then report the
    /// result with [`Gateway::claim_done`]
    Claim(PeerId),
    /// stop attracting it
    Release(PeerId),
    /// announce the client's claimed addresses again (gratuitous ARP, unsolicited NA)
    Announce(PeerId),
}

/// Counters of probe requests not acted on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeRefusals {
    /// did not parse
    pub malformed: u64,
    /// reordered or stale: echoed, but their intent was not acted on
    pub stale: u64,
    /// a reply, or otherwise not a request
    pub not_request: u64,
}

/// The gateway engine.
#[derive(Debug)]
pub struct Gateway {
    responder: Responder,
    echo: EchoResponder,
    inner: Vec<IpAddr>,
    /// by peer index, also for removed peers (indexes are not reused)
    clients: Vec<GatewayClient>,
    events: VecDeque<GatewayEvent>,
    probe_buf: Vec<u8>,
    scratch: Vec<u8>,
    flushing: Option<PeerId>,
    inside_drops: DropCounters,
    refusals: ProbeRefusals,
    probes_answered: u64,
    /// timer datagrams and released probe answers, until [`Gateway::poll_transmit`]
    outbox: Batch,
    /// probe answers waiting for their client's claim to land (one per client at most)
    held: Vec<(PeerId, SocketAddr, Vec<u8>)>,
    /// announcements due: when, for whom
    reannounce: Vec<(Instant, PeerId)>,
    /// datagrams dropped because the outbox was full
    outbox_full: u64,
}

impl Gateway {
    /// Builds the engine; static return paths are claimed at once (see [`Gateway::poll_event`]).
    pub fn new(config: GatewayConfig) -> Result<Self, tunnel::TunnelError> {
        let peers = config.clients.iter().map(|c| c.peer.clone()).collect();
        let responder = Responder::new(config.private_key, peers, config.handshake_rate_limit)?;
        let events = config
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.return_path == ReturnPath::Static)
            .map(|(i, _)| GatewayEvent::Claim(PeerId(i)))
            .collect();
        Ok(Self {
            echo: EchoResponder::new(config.clients.len(), config.claim_timeout),
            responder,
            inner: config.inner_addresses,
            clients: config.clients,
            events,
            probe_buf: Vec::with_capacity(128),
            // the session timers may flush a queued packet: any datagram must fit
            scratch: vec![0u8; tunnel::min_buffer_len(tunnel::MAX_DATAGRAM)],
            flushing: None,
            inside_drops: DropCounters::default(),
            refusals: ProbeRefusals::default(),
            probes_answered: 0,
            outbox: Batch::new(OUTBOX_SLOTS, OUTBOX_SLOT),
            held: Vec::new(),
            reannounce: Vec::new(),
            outbox_full: 0,
        })
    }

    /// The sessions, for status.
    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    fn return_path(&self, peer: PeerId) -> Option<ReturnPath> {
        self.responder.peer(peer)?;
        self.clients.get(peer.0).map(|c| c.return_path)
    }

    /// Whether client `peer` is claimed here.
    pub fn claimed(&self, peer: PeerId) -> bool {
        match self.return_path(peer) {
            Some(ReturnPath::Static) => true,
            Some(ReturnPath::Claim) => self.echo.claimed(peer.0),
            None => false,
        }
    }

    /// The switch generation client `peer`'s claim was made for (0 for static return paths and
    /// for clients that send none): the network prefers the claim with the highest.
    pub fn generation(&self, peer: PeerId) -> u32 {
        match self.return_path(peer) {
            Some(ReturnPath::Claim) => self.echo.generation(peer.0),
            _ => 0,
        }
    }

    /// Applies a new client list (a reload): a client whose key, allowed IPs, keepalive and
    /// return path are unchanged keeps its session and claim; every other configured client
    /// is removed (its claim released: a `Release` event) and those new or changed are added
    /// under new ids (a static one claimed: a `Claim` event).
    pub fn reconfigure(
        &mut self,
        clients: Vec<GatewayClient>,
    ) -> Result<GatewayReload, tunnel::TunnelError> {
        let mut report = GatewayReload::default();
        let mut new = Vec::new();
        for c in clients {
            let same = self
                .responder
                .find(&c.peer.public_key)
                .filter(|id| self.clients.get(id.0) == Some(&c));
            match same {
                Some(id) => report.unchanged.push(id),
                None => new.push(c),
            }
        }
        let gone: Vec<PeerId> = self
            .responder
            .peer_ids()
            .filter(|id| !report.unchanged.contains(id))
            .collect();
        for id in gone {
            if self.claimed(id) {
                self.events.push_back(GatewayEvent::Release(id));
            }
            self.responder.remove_peer(id);
            self.echo.forget(id.0);
            report.removed.push(id);
        }
        for c in new {
            let id = self.responder.add_peer(c.peer.clone())?;
            let echo_id = self.echo.add_client();
            debug_assert_eq!(echo_id, id.0);
            if c.return_path == ReturnPath::Static {
                self.events.push_back(GatewayEvent::Claim(id));
            }
            self.clients.push(c);
            report.added.push(id);
        }
        if self
            .flushing
            .is_some_and(|p| self.responder.peer(p).is_none())
        {
            self.flushing = None;
        }
        let responder = &self.responder;
        self.held.retain(|(p, _, _)| responder.peer(*p).is_some());
        self.reannounce
            .retain(|(_, p)| responder.peer(*p).is_some());
        Ok(report)
    }

    /// When client `peer` last probed.
    pub fn last_probe(&self, peer: PeerId) -> Option<Instant> {
        self.echo.last_heard(peer.0)
    }

    /// Whether `peer` still probes at its usual pace (see `EchoResponder::still_probing`).
    pub fn still_probing(&self, peer: PeerId, now: Instant) -> bool {
        self.echo.still_probing(peer.0, now)
    }

    /// Refused probe requests.
    pub fn refusals(&self) -> ProbeRefusals {
        self.refusals
    }

    /// The front end carried out a [`GatewayEvent::Claim`] for `peer` at `now`: `landed` if
    /// every address is claimed. The probe answer held for the claim is released (to
    /// [`Gateway::poll_transmit`]) either way; a claim that landed is announced again later
    /// ([`REANNOUNCE`]); one that failed is forgotten, so the client's next Active probe
    /// tries again.
    pub fn claim_done(&mut self, now: Instant, peer: PeerId, landed: bool) {
        if landed {
            self.reannounce
                .extend(REANNOUNCE.iter().map(|d| (now + *d, peer)));
        } else if self.return_path(peer) == Some(ReturnPath::Claim) {
            self.echo.claim_failed(peer.0);
        }
        let mut i = 0;
        while i < self.held.len() {
            if self.held.get(i).is_some_and(|(p, _, _)| *p == peer) {
                let (_, to, datagram) = self.held.swap_remove(i);
                if !self.outbox.push(to, &datagram) {
                    self.outbox_full += 1;
                }
            } else {
                i += 1;
            }
        }
    }

    /// Datagrams dropped because the outbox was full.
    pub fn outbox_full(&self) -> u64 {
        self.outbox_full
    }

    /// Probe requests answered.
    pub fn probes_answered(&self) -> u64 {
        self.probes_answered
    }

    /// Drops of packets from the inside.
    pub fn inside_drops(&self) -> &DropCounters {
        &self.inside_drops
    }

    /// Handles a datagram from the underlay. Probe requests are answered here (the reply is
    /// returned as a `Transmit`); other packets are delivered to the inside.
    pub fn handle_datagram<'a>(
        &'a mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> Outcome<'a> {
        let (peer, outcome) = self.responder.handle_datagram(now, from, datagram, out);
        if let (Some(peer), Outcome::Deliver(packet)) = (peer, &outcome) {
            if let Some((client, request)) = probe::packet::probe_request_to(packet, &self.inner) {
                let gateway_addr = probe::packet::segment(packet).map(|s| s.dst);
                return self.answer_probe(now, peer, client, gateway_addr, request);
            }
        }
        if matches!(outcome, Outcome::Transmit(_)) {
            self.flushing = peer;
        }
        outcome
    }

    fn answer_probe(
        &mut self,
        now: Instant,
        peer: PeerId,
        client: IpAddr,
        gateway_addr: Option<IpAddr>,
        request: Result<probe::ProbeMessage, probe::wire::WireError>,
    ) -> Outcome<'_> {
        let Ok(msg) = request else {
            self.refusals.malformed += 1;
            return Outcome::Done;
        };
        let answer = match self.echo.handle_request(now, peer.0, &msg) {
            Ok(a) => a,
            Err(_) => {
                self.refusals.not_request += 1;
                return Outcome::Done;
            }
        };
        if answer.stale {
            self.refusals.stale += 1;
        }
        let reply = answer.reply;
        let mut hold = false;
        if self.return_path(peer) == Some(ReturnPath::Claim) {
            match answer.change {
                Some(ClaimChange::Claim) => {
                    self.events.push_back(GatewayEvent::Claim(peer));
                    hold = true;
                }
                Some(ClaimChange::Release) => self.events.push_back(GatewayEvent::Release(peer)),
                None => {}
            }
        }
        let Some(gateway_addr) = gateway_addr else {
            return Outcome::Done;
        };
        probe::packet::probe_reply_packet(
            gateway_addr,
            client,
            &reply.reply(),
            &mut self.probe_buf,
        );
        self.probes_answered += 1;
        let Some(tunnel) = self.responder.peer_mut(peer) else {
            return Outcome::Done;
        };
        match tunnel.encapsulate(&self.probe_buf, &mut self.scratch) {
            Outcome::Transmit(t) if hold => {
                // answered once the claim is in place (claim_done); one held answer per client
                let datagram = t.datagram.to_vec();
                self.held.retain(|(p, _, _)| *p != peer);
                self.held.push((peer, t.to, datagram));
                Outcome::Done
            }
            other => other,
        }
    }

    /// Adds to `batch` what is due: timer datagrams, probe answers whose claim landed, and
    /// what a session queued behind a completed handshake. Call after every `handle_*` and
    /// [`Gateway::claim_done`], and again after sending, until it adds nothing. `batch`'s
    /// slots must hold any datagram ([`Batch::for_datagrams`]).
    pub fn poll_transmit(&mut self, batch: &mut Batch) {
        self.outbox.drain_into(batch);
        while let Some(peer) = self.flushing {
            if batch.is_full() {
                return;
            }
            let Some(tunnel) = self.responder.peer_mut(peer) else {
                self.flushing = None;
                return;
            };
            if !batch.fill(|slot| tunnel.poll_transmit(slot).map(|t| (t.to, t.datagram.len()))) {
                self.flushing = None;
            }
        }
    }

    /// Handles a packet from the datacenter side: encrypts it for the client whose allowed IPs
    /// hold its destination.
    pub fn handle_inside_packet<'o>(
        &mut self,
        packet: &[u8],
        out: &'o mut [u8],
    ) -> Option<Transmit<'o>> {
        let Some((_, dst)) = sessionkeeper::addresses(packet) else {
            self.inside_drops.add(DropReason::InnerMalformed);
            return None;
        };
        let Some(peer) = self.responder.route(dst) else {
            self.inside_drops.add(DropReason::NoRoute);
            return None;
        };
        match self.responder.peer_mut(peer)?.encapsulate(packet, out) {
            Outcome::Transmit(t) => Some(t),
            _ => None,
        }
    }

    /// When [`Gateway::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.responder
            .poll_timeout()
            .into_iter()
            .chain(self.echo.poll_timeout())
            .chain(self.reannounce.iter().map(|(at, _)| *at))
            .min()
    }

    /// Runs session timers (their datagrams wait for [`Gateway::poll_transmit`]), releases
    /// claims of silent clients and asks for due announcements.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (outbox, full) = (&mut self.outbox, &mut self.outbox_full);
        self.responder.handle_timeout(now, &mut self.scratch, |t| {
            if !outbox.push(t.to, t.datagram) {
                *full += 1;
            }
        });
        if self.reannounce.iter().any(|&(at, _)| at <= now) {
            let mut due = Vec::new();
            self.reannounce.retain(|&(at, peer)| {
                if at > now {
                    return true;
                }
                due.push(peer);
                false
            });
            for peer in due {
                if self.claimed(peer) && self.echo.still_probing(peer.0, now) {
                    self.events.push_back(GatewayEvent::Announce(peer));
                }
            }
        }
        let mut silent = Vec::new();
        self.echo.handle_timeout(now, |i| silent.push(PeerId(i)));
        for peer in silent {
            if self.return_path(peer) == Some(ReturnPath::Claim) {
                self.events.push_back(GatewayEvent::Release(peer));
            }
        }
    }

    /// The next claim, release or announcement to carry out.
    pub fn poll_event(&mut self) -> Option<GatewayEvent> {
        self.events.pop_front()
    }
}
