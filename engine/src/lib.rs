//! The client's engine: one [`tunnel::Tunnel`] per datacenter, all kept established, one active.
//!
//! Both front ends (the `failoverd` daemon with a TUN device, and `vmm-shim` below a guest) link
//! this and only this for the data path. It is sans-IO and clock-free: the caller passes packets,
//! datagrams, caller-owned buffers and `now`, and gets back what to send or deliver.
//!
//! Calling contract (quinn's verbs):
//! - [`Engine::handle_local_packet`] for every IP packet from the local side (TUN or guest);
//! - [`Engine::handle_datagram`] for every UDP datagram from the underlay, then drain
//!   [`Engine::poll_transmit`];
//! - [`Engine::handle_timeout`] no later than [`Engine::poll_timeout`];
//! - [`Engine::poll_event`] after any of them, until `None`.
//!
//! For now traffic always uses the first datacenter; switching between them is the failover
//! work that builds on this.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use sessionkeeper::StableAddresses;
use tunnel::{DropCounters, DropReason, Outcome, Transmit, Tunnel, TunnelConfig, TunnelStats};

/// Bound on undelivered events; the oldest are dropped beyond it (events are informational).
const MAX_EVENTS: usize = 256;

/// One datacenter as the engine sees it.
#[derive(Debug)]
pub struct DatacenterConfig {
    /// operator-chosen name, unique
    pub name: String,
    /// the session to its gateway (endpoint fixed, kept established)
    pub tunnel: TunnelConfig,
}

/// What the engine needs.
#[derive(Debug)]
pub struct EngineConfig {
    /// the client's stable inner addresses: the only sources it sends into a tunnel
    pub stable: StableAddresses,
    /// the datacenters, in priority order
    pub datacenters: Vec<DatacenterConfig>,
}

/// Index of a datacenter in configuration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DcId(pub usize);

/// Things the front end may want to log, export or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// a datacenter's session became usable
    Established(DcId),
    /// a datacenter's session was lost (expired with no replacement yet)
    Lost(DcId),
}

/// Errors building the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// no datacenter configured
    #[error("at least one datacenter is needed")]
    NoDatacenter,
    /// a tunnel could not be built
    #[error("datacenter {name}: {source}")]
    Tunnel {
        /// the datacenter
        name: String,
        /// why
        source: tunnel::TunnelError,
    },
}

/// Why the engine dropped a packet from the local side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalDrop {
    /// not an IPv4/IPv6 packet
    NotIp,
    /// its source is not one of the stable addresses (it would be refused by cryptokey routing)
    SourceNotStable,
}

/// Per-datacenter view for status output.
#[derive(Debug, Clone)]
pub struct DatacenterStatus {
    /// name
    pub name: String,
    /// current endpoint
    pub endpoint: Option<SocketAddr>,
    /// whether traffic goes here now
    pub active: bool,
    /// whether a session is established
    pub established: bool,
    /// the tunnel's counters
    pub stats: TunnelStats,
}

struct Datacenter {
    name: String,
    tunnel: Tunnel,
    established: bool,
}

/// The client engine. See the module docs for the calling contract.
pub struct Engine {
    stable: StableAddresses,
    dcs: Vec<Datacenter>,
    active: DcId,
    /// the tunnel that may still hold datagrams queued behind a handshake
    flushing: Option<DcId>,
    events: VecDeque<Event>,
    local_drops: [u64; 2],
    underlay_drops: DropCounters,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("datacenters", &self.dcs.len())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds every tunnel. Nothing is sent before the first [`Engine::handle_timeout`].
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        if config.datacenters.is_empty() {
            return Err(EngineError::NoDatacenter);
        }
        let mut dcs = Vec::with_capacity(config.datacenters.len());
        for dc in config.datacenters {
            let tunnel = Tunnel::new(dc.tunnel).map_err(|source| EngineError::Tunnel {
                name: dc.name.clone(),
                source,
            })?;
            dcs.push(Datacenter {
                name: dc.name,
                tunnel,
                established: false,
            });
        }
        Ok(Self {
            stable: config.stable,
            dcs,
            active: DcId(0),
            flushing: None,
            events: VecDeque::new(),
            local_drops: [0; 2],
            underlay_drops: DropCounters::default(),
        })
    }

    /// The datacenter that carries traffic now.
    pub fn active(&self) -> DcId {
        self.active
    }

    /// A datacenter's name.
    pub fn name(&self, dc: DcId) -> &str {
        self.dcs.get(dc.0).map_or("?", |d| d.name.as_str())
    }

    /// Handles an IP packet from the local side: returns the datagram to send on the active
    /// tunnel, if any.
    pub fn handle_local_packet<'o>(
        &mut self,
        packet: &[u8],
        out: &'o mut [u8],
    ) -> Result<Option<Transmit<'o>>, LocalDrop> {
        let src = sessionkeeper::source_address(packet).ok_or_else(|| {
            self.count_local(LocalDrop::NotIp);
            LocalDrop::NotIp
        })?;
        if !self.stable.contains(src) {
            self.count_local(LocalDrop::SourceNotStable);
            return Err(LocalDrop::SourceNotStable);
        }
        let Some(dc) = self.dcs.get_mut(self.active.0) else {
            return Ok(None);
        };
        Ok(match dc.tunnel.encapsulate(packet, out) {
            Outcome::Transmit(t) => Some(t),
            _ => None,
        })
    }

    fn count_local(&mut self, reason: LocalDrop) {
        if let Some(c) = self.local_drops.get_mut(reason as usize) {
            *c += 1;
        }
    }

    /// Handles a datagram from the underlay. Datagrams from an address that is no datacenter's
    /// endpoint are dropped and counted. After a `Transmit`, drain [`Engine::poll_transmit`].
    pub fn handle_datagram<'o>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &'o mut [u8],
    ) -> Outcome<'o> {
        let Some(i) = self
            .dcs
            .iter()
            .position(|d| d.tunnel.endpoint() == Some(from))
        else {
            self.underlay_drops.add(DropReason::UnexpectedSource);
            return Outcome::Dropped(DropReason::UnexpectedSource);
        };
        let Some(dc) = self.dcs.get_mut(i) else {
            return Outcome::Done;
        };
        let outcome = dc.tunnel.decapsulate(now, from, datagram, out);
        if dc.tunnel.is_established() && !dc.established {
            dc.established = true;
            push_event(&mut self.events, Event::Established(DcId(i)));
        }
        if matches!(outcome, Outcome::Transmit(_)) {
            self.flushing = Some(DcId(i));
        }
        outcome
    }

    /// Datagrams a tunnel queued behind a completed handshake. Call until `None` after
    /// [`Engine::handle_datagram`] returned a `Transmit`.
    pub fn poll_transmit<'o>(&mut self, out: &'o mut [u8]) -> Option<Transmit<'o>> {
        let dc = self.flushing?;
        let tunnel = &mut self.dcs.get_mut(dc.0)?.tunnel;
        let t = tunnel.poll_transmit(out);
        if t.is_none() {
            self.flushing = None;
        }
        t
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.dcs
            .iter()
            .filter_map(|d| d.tunnel.poll_timeout())
            .min()
    }

    /// Runs every due tunnel timer (handshakes, keepalives, rekeys), handing each datagram to
    /// `send`. The first call starts the handshake of every tunnel.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        out: &mut [u8],
        mut send: impl FnMut(Transmit<'_>),
    ) {
        for (i, dc) in self.dcs.iter_mut().enumerate() {
            if dc.tunnel.poll_timeout().is_some_and(|t| now < t) {
                continue;
            }
            dc.tunnel.tick(now, out, &mut send);
            let established = dc.tunnel.is_established();
            if established != dc.established {
                dc.established = established;
                let event = if established {
                    Event::Established(DcId(i))
                } else {
                    Event::Lost(DcId(i))
                };
                push_event(&mut self.events, event);
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Status of every datacenter.
    pub fn status(&self) -> Vec<DatacenterStatus> {
        self.dcs
            .iter()
            .enumerate()
            .map(|(i, d)| DatacenterStatus {
                name: d.name.clone(),
                endpoint: d.tunnel.endpoint(),
                active: i == self.active.0,
                established: d.tunnel.is_established(),
                stats: d.tunnel.stats(),
            })
            .collect()
    }

    /// Drops of local packets: (not IP, source not a stable address).
    pub fn local_drops(&self) -> (u64, u64) {
        let [a, b] = self.local_drops;
        (a, b)
    }

    /// Drops of underlay datagrams that belonged to no datacenter.
    pub fn underlay_drops(&self) -> &DropCounters {
        &self.underlay_drops
    }
}

fn push_event(events: &mut VecDeque<Event>, event: Event) {
    if events.len() >= MAX_EVENTS {
        events.pop_front();
    }
    events.push_back(event);
}
