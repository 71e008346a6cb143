//! [`Responder`]: many peers on one UDP port, as a gateway terminates its clients.
//!
//! Demultiplexing follows WireGuard implementations: a handshake initiation names its sender
//! only inside its encrypted static key, so it is first checked by a port-wide rate limiter
//! (MAC1, and under load MAC2 with a cookie bound to the *real* source address), then opened
//! with `parse_handshake_anon` to learn the initiator's key and find the peer. Every other
//! message carries our receiver index, whose top 24 bits are the peer's index.
//!
//! Outbound, a packet goes to the peer whose allowed IPs hold its destination with the longest
//! prefix (cryptokey routing).
//!
//! Peers can be added and removed while the others keep their sessions (a gateway's reload). A
//! removed peer's index is never given to another: datagrams still in flight for it find no
//! peer, instead of another peer's session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, TunnResult};

use crate::prefix::PrefixTable;
use crate::{
    AllowedIps, DropCounters, DropReason, EndpointPolicy, Outcome, PrivateKey, PublicKey, Transmit,
    Tunnel, TunnelConfig, TunnelError,
};

/// The largest peer index: session indexes are `peer << 8 | n` in 32 bits.
const MAX_PEERS: usize = 1 << 24;
const COOKIE_REPLY_LEN: usize = 64;
/// How often the port-wide handshake counter resets, as in boringtun's device layer.
const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(1);

/// Identifies one peer of a [`Responder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// One configured peer (a client of the gateway).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// the peer's static key
    pub public_key: PublicKey,
    /// inner addresses the peer may use as sources, and that route to it
    pub allowed_ips: AllowedIps,
    /// seconds between keepalives when idle, if any
    pub persistent_keepalive: Option<u16>,
    /// the pre-shared key both sides mix into the handshake, if any
    pub preshared_key: Option<crate::PresharedKey>,
}

/// Many WireGuard peers on one port.
pub struct Responder {
    private_key: PrivateKey,
    public_key: PublicKey,
    limiter: Arc<RateLimiter>,
    /// by index; `None` where a peer was removed (indexes are never reused)
    peers: Vec<Option<Tunnel>>,
    by_key: HashMap<[u8; 32], PeerId>,
    /// every peer's allowed IPs: the route of a packet from the inside
    routes: PrefixTable<PeerId>,
    next_limiter_reset: Option<Instant>,
    drops: DropCounters,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("public_key", &self.public_key)
            .field("peers", &self.len())
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Builds the responder; `handshakes_per_second` is the port-wide rate above which
    /// initiations must carry a valid cookie (boringtun's device uses 100).
    pub fn new(
        private_key: PrivateKey,
        peers: Vec<PeerConfig>,
        handshakes_per_second: u64,
    ) -> Result<Self, TunnelError> {
        if peers.len() >= MAX_PEERS {
            return Err(TunnelError::TooManyPeers { max: MAX_PEERS - 1 });
        }
        let public_key = private_key.public_key();
        let limiter = Arc::new(RateLimiter::new(&public_key.dalek(), handshakes_per_second));
        let mut responder = Self {
            private_key,
            public_key,
            limiter,
            peers: Vec::with_capacity(peers.len()),
            by_key: HashMap::with_capacity(peers.len()),
            routes: PrefixTable::default(),
            next_limiter_reset: None,
            drops: DropCounters::default(),
        };
        for peer in peers {
            responder.add_peer(peer)?;
        }
        Ok(responder)
    }

    /// Adds a peer under a new index (never one a removed peer had).
    pub fn add_peer(&mut self, peer: PeerConfig) -> Result<PeerId, TunnelError> {
        let i = self.peers.len();
        if i >= MAX_PEERS {
            return Err(TunnelError::TooManyPeers { max: MAX_PEERS - 1 });
        }
        let index =
            u32::try_from(i).map_err(|_| TunnelError::TooManyPeers { max: MAX_PEERS - 1 })?;
        let key = *peer.public_key.as_bytes();
        for prefix in peer.allowed_ips.prefixes() {
            self.routes.insert(*prefix, PeerId(i));
        }
        let tunnel = Tunnel::new(TunnelConfig {
            private_key: self.private_key.clone(),
            peer_public_key: peer.public_key,
            persistent_keepalive: peer.persistent_keepalive,
            preshared_key: peer.preshared_key,
            index,
            allowed_ips: peer.allowed_ips,
            endpoint: EndpointPolicy::LearnAuthenticated,
            keep_established: false,
        })?;
        self.by_key.insert(key, PeerId(i));
        self.peers.push(Some(tunnel));
        Ok(PeerId(i))
    }

    /// Removes a peer: its session ends, its datagrams are dropped from now on.
    pub fn remove_peer(&mut self, id: PeerId) -> Option<Tunnel> {
        let tunnel = self.peers.get_mut(id.0)?.take()?;
        self.by_key.remove(tunnel.peer_public_key().as_bytes());
        for prefix in tunnel.allowed_ips().prefixes() {
            self.routes.remove(*prefix, id);
        }
        Some(tunnel)
    }

    /// The peer with this public key.
    pub fn find(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key.as_bytes()).copied()
    }

    /// Our public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// One peer's session.
    pub fn peer(&self, id: PeerId) -> Option<&Tunnel> {
        self.peers.get(id.0)?.as_ref()
    }

    /// One peer's session, mutably (timers, encapsulation, flushing).
    pub fn peer_mut(&mut self, id: PeerId) -> Option<&mut Tunnel> {
        self.peers.get_mut(id.0)?.as_mut()
    }

    /// Every peer id.
    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some())
            .map(|(i, _)| PeerId(i))
    }

    /// Drops of datagrams that reached no peer.
    pub fn port_drops(&self) -> &DropCounters {
        &self.drops
    }

    /// The peer whose allowed IPs hold `dst` with the longest prefix.
    pub fn route(&self, dst: IpAddr) -> Option<PeerId> {
        self.routes.lookup(dst)
    }

    fn drop_with(&mut self, reason: DropReason) -> (Option<PeerId>, Outcome<'static>) {
        self.drops.add(reason);
        (None, Outcome::Dropped(reason))
    }

    /// Handles a datagram from `from`. Returns the peer it belonged to, if one was found, and
    /// what to do. After [`Outcome::Transmit`] for a peer, drain that peer's
    /// [`Tunnel::poll_transmit`].
    pub fn handle_datagram<'o>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &'o mut [u8],
    ) -> (Option<PeerId>, Outcome<'o>) {
        if out.len() < crate::min_buffer_len(datagram.len()) {
            return self.drop_with(DropReason::BufferTooSmall);
        }
        // The cookie reply goes to its own small buffer so that `out` is not borrowed by it.
        let mut cookie_buf = [0u8; COOKIE_REPLY_LEN];
        let peer = match self
            .limiter
            .verify_packet(Some(from.ip()), datagram, &mut cookie_buf)
        {
            Ok(Packet::HandshakeInit(init)) => {
                match parse_handshake_anon(
                    self.private_key.secret(),
                    &self.public_key.dalek(),
                    &init,
                ) {
                    Ok(half) => match self.by_key.get(&half.peer_static_public) {
                        Some(id) => *id,
                        None => return self.drop_with(DropReason::UnknownPeer),
                    },
                    Err(_) => return self.drop_with(DropReason::HandshakeRejected),
                }
            }
            Ok(Packet::HandshakeResponse(p)) => PeerId((p.receiver_idx >> 8) as usize),
            Ok(Packet::PacketCookieReply(p)) => PeerId((p.receiver_idx >> 8) as usize),
            Ok(Packet::PacketData(p)) => PeerId((p.receiver_idx >> 8) as usize),
            Err(TunnResult::WriteToNetwork(cookie)) => {
                self.drops.add(DropReason::UnderLoad);
                let len = cookie.len();
                return match (out.get_mut(..len), cookie_buf.get(..len)) {
                    (Some(dst), Some(src)) => {
                        dst.copy_from_slice(src);
                        (
                            None,
                            Outcome::Transmit(Transmit {
                                to: from,
                                datagram: dst,
                            }),
                        )
                    }
                    _ => self.drop_with(DropReason::BufferTooSmall),
                };
            }
            Err(TunnResult::Err(e)) => {
                let reason = match e {
                    boringtun::noise::errors::WireGuardError::InvalidMac => DropReason::InvalidMac,
                    boringtun::noise::errors::WireGuardError::UnderLoad => DropReason::UnderLoad,
                    _ => DropReason::Malformed,
                };
                return self.drop_with(reason);
            }
            Err(_) => return self.drop_with(DropReason::Malformed),
        };
        match self.peers.get_mut(peer.0).and_then(Option::as_mut) {
            Some(tunnel) => (Some(peer), tunnel.decapsulate(now, from, datagram, out)),
            None => self.drop_with(DropReason::UnknownPeer),
        }
    }

    /// When [`Responder::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flatten()
            .filter_map(Tunnel::poll_timeout)
            .chain(self.next_limiter_reset)
            .min()
    }

    /// Resets the port-wide handshake counter once a second, and runs the timers of every peer
    /// that is due, calling `send` for each datagram to transmit.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        out: &mut [u8],
        mut send: impl FnMut(Transmit<'_>),
    ) {
        if self.next_limiter_reset.is_none_or(|t| now >= t) {
            self.limiter.reset_count();
            self.next_limiter_reset = Some(now + RATE_LIMIT_WINDOW);
        }
        for tunnel in self.peers.iter_mut().flatten() {
            if tunnel.poll_timeout().is_some_and(|t| now < t) {
                continue;
            }
            tunnel.tick(now, out, &mut send);
        }
    }
}
