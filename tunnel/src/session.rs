//! [`Tunnel`]: one WireGuard session with one peer.
//!
//! Calling contract (quinn-style):
//! - call [`Tunnel::handle_timeout`] no later than [`Tunnel::poll_timeout`];
//! - after any call that returned [`Outcome::Transmit`], drain [`Tunnel::poll_transmit`] until
//!   it returns `None` (packets boringtun queued while the handshake was in flight);
//! - every output buffer must be at least [`crate::min_buffer_len`] of the input; a smaller one
//!   is refused with [`DropReason::BufferTooSmall`], never a panic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};

use crate::inner::InnerPacket;
use crate::PresharedKey;
use crate::{
    min_buffer_len, AllowedIps, DropCounters, DropReason, Outcome, PrivateKey, PublicKey, Transmit,
    TunnelError,
};

/// How often boringtun's timers are checked; boringtun's own device layer uses 250 ms too.
pub const TIMER_TICK: Duration = Duration::from_millis(250);

const MSG_COOKIE_REPLY: u8 = 3;

enum TimerAction {
    Send(usize),
    Expired,
    Idle,
}
const MSG_DATA: u8 = 4;

/// Where this tunnel sends, and from where it accepts datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointPolicy {
    /// A client's view of a datacenter: send to this address, and drop datagrams from any other
    /// source. Only configuration (or the controller) changes it.
    Fixed(SocketAddr),
    /// A gateway's view of a client: accept from anywhere, and move the endpoint to a datagram's
    /// source only after that datagram authenticated (data decrypted or handshake completed).
    LearnAuthenticated,
    /// Like `Fixed`, with the address not known yet (a host name still being resolved): send
    /// nothing and accept nothing until the controller sets it (then it is `Fixed`).
    Controlled,
}

/// What a session needs.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// our static key
    pub private_key: PrivateKey,
    /// the peer's static key
    pub peer_public_key: PublicKey,
    /// seconds between keepalives when idle, if any
    pub persistent_keepalive: Option<u16>,
    /// the pre-shared key both sides mix into the handshake, if any
    pub preshared_key: Option<PresharedKey>,
    /// 24-bit local index; our session indexes are `index << 8 | n`
    pub index: u32,
    /// inner sources accepted from this peer
    pub allowed_ips: AllowedIps,
    /// endpoint policy
    pub endpoint: EndpointPolicy,
    /// whether this side keeps a session established at all times (a client's datacenters)
    pub keep_established: bool,
}

/// A named view of boringtun's `stats()` tuple plus our own counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TunnelStats {
    /// time since the current session's handshake completed, if there is a session
    pub since_last_handshake: Option<Duration>,
    /// inner bytes sent
    pub tx_bytes: u64,
    /// inner bytes received
    pub rx_bytes: u64,
    /// boringtun's estimate of the share of data messages lost, 0..1
    pub estimated_loss: f32,
    /// round-trip time of the last handshake, in milliseconds
    pub handshake_rtt_ms: Option<u32>,
    /// handshakes completed (as initiator or responder)
    pub handshakes: u64,
    /// drops, by reason
    pub drops: DropCounters,
}

/// One WireGuard session with one peer.
pub struct Tunnel {
    tunn: Tunn,
    allowed_ips: AllowedIps,
    policy: EndpointPolicy,
    endpoint: Option<SocketAddr>,
    keep_established: bool,
    /// boringtun may hold queued packets to flush after a handshake completes
    flush_queued: bool,
    next_tick: Option<Instant>,
    last_authenticated_rx: Option<Instant>,
    handshakes: u64,
    drops: DropCounters,
    peer_public_key: PublicKey,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("peer", &self.peer_public_key)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn classify(err: &WireGuardError) -> DropReason {
    use WireGuardError as E;
    match err {
        E::DestinationBufferTooSmall => DropReason::BufferTooSmall,
        E::IncorrectPacketLength | E::InvalidPacket | E::WrongPacketType => DropReason::Malformed,
        E::InvalidMac => DropReason::InvalidMac,
        E::InvalidAeadTag => DropReason::DecryptFailed,
        E::InvalidCounter | E::DuplicateCounter => DropReason::Replay,
        E::NoCurrentSession | E::WrongIndex => DropReason::NoSession,
        E::ConnectionExpired => DropReason::Expired,
        E::UnderLoad => DropReason::UnderLoad,
        E::UnexpectedPacket
        | E::WrongKey
        | E::InvalidTai64nTimestamp
        | E::WrongTai64nTimestamp
        | E::LockFailed => DropReason::HandshakeRejected,
    }
}

impl Tunnel {
    /// Creates the session. Nothing is sent until the first [`Tunnel::handle_timeout`] (which
    /// starts the handshake when `keep_established`) or [`Tunnel::encapsulate`].
    pub fn new(config: TunnelConfig) -> Result<Self, TunnelError> {
        if config.private_key.public_key() == config.peer_public_key {
            return Err(TunnelError::PeerIsSelf);
        }
        let tunn = Tunn::new(
            config.private_key.secret().clone(),
            config.peer_public_key.dalek(),
            config.preshared_key.as_ref().map(PresharedKey::bytes),
            config.persistent_keepalive,
            config.index,
            None,
        );
        let endpoint = match config.endpoint {
            EndpointPolicy::Fixed(addr) => Some(addr),
            EndpointPolicy::LearnAuthenticated | EndpointPolicy::Controlled => None,
        };
        Ok(Self {
            tunn,
            allowed_ips: config.allowed_ips,
            policy: config.endpoint,
            endpoint,
            keep_established: config.keep_established,
            flush_queued: false,
            next_tick: None,
            last_authenticated_rx: None,
            handshakes: 0,
            drops: DropCounters::default(),
            peer_public_key: config.peer_public_key,
        })
    }

    /// The peer's public key.
    pub fn peer_public_key(&self) -> &PublicKey {
        &self.peer_public_key
    }

    /// The current endpoint, if known.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// Replaces the endpoint (the controller's decision: configuration, DNS, re-binding).
    pub fn set_endpoint(&mut self, endpoint: SocketAddr) {
        self.endpoint = Some(endpoint);
        if matches!(
            self.policy,
            EndpointPolicy::Fixed(_) | EndpointPolicy::Controlled
        ) {
            self.policy = EndpointPolicy::Fixed(endpoint);
        }
    }

    /// The peer's allowed inner sources.
    pub fn allowed_ips(&self) -> &AllowedIps {
        &self.allowed_ips
    }

    /// When the last datagram that authenticated arrived.
    pub fn last_authenticated_rx(&self) -> Option<Instant> {
        self.last_authenticated_rx
    }

    /// Whether a session is established (data can be sent without a handshake).
    pub fn is_established(&self) -> bool {
        self.tunn.stats().0.is_some()
    }

    fn drop_with(&mut self, reason: DropReason) -> Outcome<'static> {
        self.drops.add(reason);
        tracing::trace!(reason = reason.label(), "dropped");
        Outcome::Dropped(reason)
    }

    fn send_to_endpoint<'o>(&mut self, datagram: &'o [u8]) -> Outcome<'o> {
        match self.endpoint {
            Some(to) => Outcome::Transmit(Transmit { to, datagram }),
            None => self.drop_with(DropReason::NoEndpoint),
        }
    }

    /// Encrypts an inner packet for the peer. Without a session, the packet is queued by
    /// boringtun and a handshake initiation may be returned instead.
    pub fn encapsulate<'o>(&mut self, packet: &[u8], out: &'o mut [u8]) -> Outcome<'o> {
        if out.len() < min_buffer_len(packet.len()) {
            return self.drop_with(DropReason::BufferTooSmall);
        }
        if self.endpoint.is_none() {
            return self.drop_with(DropReason::NoEndpoint);
        }
        match self.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(datagram) => self.send_to_endpoint(datagram),
            TunnResult::Err(e) => self.drop_with(classify(&e)),
            _ => Outcome::Done,
        }
    }

    /// Handles a datagram that arrived from `from`. On [`Outcome::Transmit`], drain
    /// [`Tunnel::poll_transmit`] afterwards.
    pub fn decapsulate<'o>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &'o mut [u8],
    ) -> Outcome<'o> {
        if out.len() < min_buffer_len(datagram.len()) {
            return self.drop_with(DropReason::BufferTooSmall);
        }
        if datagram.is_empty() {
            // An empty datagram means "flush the queue" to boringtun; from the network it is
            // just malformed.
            return self.drop_with(DropReason::Malformed);
        }
        match self.policy {
            EndpointPolicy::Fixed(expected) if from != expected => {
                return self.drop_with(DropReason::UnexpectedSource);
            }
            EndpointPolicy::Controlled => return self.drop_with(DropReason::UnexpectedSource),
            _ => {}
        }
        let kind = datagram.first().copied().unwrap_or(0);
        match self.tunn.decapsulate(Some(from.ip()), datagram, out) {
            TunnResult::Done => {
                if kind == MSG_DATA {
                    // a keepalive: authentic, carries nothing
                    self.authenticated(now, from);
                }
                Outcome::Done
            }
            TunnResult::Err(e) => self.drop_with(classify(&e)),
            TunnResult::WriteToNetwork(reply) => {
                if reply.first() == Some(&MSG_COOKIE_REPLY) {
                    // under load: the reply goes to the sender, whoever it is, and proves nothing
                    self.drops.add(DropReason::UnderLoad);
                    return Outcome::Transmit(Transmit {
                        to: from,
                        datagram: reply,
                    });
                }
                // a handshake message that completed: authentic
                self.authenticated(now, from);
                self.handshakes += 1;
                self.flush_queued = true;
                self.send_to_endpoint(reply)
            }
            TunnResult::WriteToTunnelV4(packet, _) | TunnResult::WriteToTunnelV6(packet, _) => {
                self.authenticated(now, from);
                let (len, src) = match InnerPacket::parse(packet) {
                    Err(_) => return self.drop_with(DropReason::InnerMalformed),
                    Ok(inner) => (inner.len, inner.src),
                };
                if !self.allowed_ips.contains(src) {
                    return self.drop_with(DropReason::InnerSourceNotAllowed);
                }
                match packet.get_mut(..len) {
                    Some(p) => Outcome::Deliver(p),
                    None => self.drop_with(DropReason::InnerMalformed),
                }
            }
        }
    }

    fn authenticated(&mut self, now: Instant, from: SocketAddr) {
        self.last_authenticated_rx = Some(now);
        if self.policy == EndpointPolicy::LearnAuthenticated && self.endpoint != Some(from) {
            tracing::debug!(%from, "peer endpoint learnt from an authenticated datagram");
            self.endpoint = Some(from);
        }
    }

    /// Whether datagrams may be queued behind a completed handshake ([`Tunnel::poll_transmit`]
    /// finds out).
    pub fn has_queued(&self) -> bool {
        self.flush_queued
    }

    /// The next datagram boringtun queued behind a completed handshake, if any. Call until
    /// `None` after every [`Outcome::Transmit`].
    pub fn poll_transmit<'o>(&mut self, out: &'o mut [u8]) -> Option<Transmit<'o>> {
        if !self.flush_queued {
            return None;
        }
        // Queued packets are at most one MTU; a MAX_DATAGRAM buffer is required to be safe.
        if out.len() < min_buffer_len(crate::MAX_DATAGRAM) {
            self.drops.add(DropReason::BufferTooSmall);
            self.flush_queued = false;
            return None;
        }
        let endpoint = self.endpoint;
        match (self.tunn.decapsulate(None, &[], out), endpoint) {
            (TunnResult::WriteToNetwork(datagram), Some(to)) => Some(Transmit { to, datagram }),
            (TunnResult::WriteToNetwork(_), None) => {
                self.drops.add(DropReason::NoEndpoint);
                None
            }
            _ => {
                self.flush_queued = false;
                None
            }
        }
    }

    /// When [`Tunnel::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Runs boringtun's timers (handshake retries, rekeys, keepalives) and, for a tunnel that is
    /// kept established, starts a handshake whenever there is no session and none in flight.
    pub fn handle_timeout<'o>(&mut self, now: Instant, out: &'o mut [u8]) -> Outcome<'o> {
        self.next_tick = Some(now + TIMER_TICK);
        if out.len() < min_buffer_len(0) {
            return self.drop_with(DropReason::BufferTooSmall);
        }
        // boringtun writes any message at the start of `out`; keep only its length so `out` can
        // be reused below without holding a borrow across branches.
        let action = match self.tunn.update_timers(out) {
            TunnResult::WriteToNetwork(datagram) => TimerAction::Send(datagram.len()),
            TunnResult::Err(WireGuardError::ConnectionExpired) => TimerAction::Expired,
            TunnResult::Err(e) => {
                tracing::debug!(error = ?e, "timer error");
                TimerAction::Idle
            }
            _ => TimerAction::Idle,
        };
        let start_handshake = match action {
            TimerAction::Send(len) => {
                return match out.get(..len) {
                    Some(datagram) => self.send_to_endpoint(datagram),
                    None => Outcome::Done,
                }
            }
            TimerAction::Expired => {
                if self.keep_established {
                    tracing::info!("session expired; starting a new handshake");
                }
                self.keep_established
            }
            TimerAction::Idle => self.keep_established && !self.is_established(),
        };
        if start_handshake && self.endpoint.is_some() {
            // `false`: no new initiation while one is in flight; boringtun retries those itself.
            if let TunnResult::WriteToNetwork(datagram) =
                self.tunn.format_handshake_initiation(out, false)
            {
                return self.send_to_endpoint(datagram);
            }
        }
        Outcome::Done
    }

    /// Runs [`Tunnel::handle_timeout`] and drains [`Tunnel::poll_transmit`], handing every
    /// datagram to `send`.
    pub fn tick(&mut self, now: Instant, out: &mut [u8], send: &mut impl FnMut(Transmit<'_>)) {
        if let Outcome::Transmit(t) = self.handle_timeout(now, out) {
            send(t);
        }
        while let Some(t) = self.poll_transmit(out) {
            send(t);
        }
    }

    /// Named stats: boringtun's tuple plus our counters.
    pub fn stats(&self) -> TunnelStats {
        let (since, tx, rx, loss, rtt) = self.tunn.stats();
        TunnelStats {
            since_last_handshake: since,
            tx_bytes: tx as u64,
            rx_bytes: rx as u64,
            estimated_loss: loss,
            handshake_rtt_ms: rtt,
            handshakes: self.handshakes,
            drops: self.drops.clone(),
        }
    }
}
