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
//! Every tunnel is probed from inside (a [`probe::PathMonitor`] each); authenticated inbound
//! traffic counts as evidence too. A [`probe::Selector`] picks the active tunnel; on a switch the
//! new gateway is told at once (a probe with intent Active, so it claims the stable address) and
//! the old one too (intent Standby, so it releases it), and an [`Event::Switched`] records why,
//! from where to where, and how long detection took.

#![forbid(unsafe_code)]

pub mod gateway;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use probe::health::{HealthChange, ProbeCounters};
use probe::packet::ProbeTarget;
use probe::select::PathView;
use probe::{Intent, PathHealth, PathMonitor, Policy, ProbeConfig, Selector, SwitchReason};
use sessionkeeper::StableAddresses;
use tunnel::{DropCounters, DropReason, Outcome, Transmit, Tunnel, TunnelConfig, TunnelStats};

/// Least time a first datacenter that has not answered yet is waited for at start.
const STARTUP_GRACE: Duration = Duration::from_secs(1);

/// Bound on undelivered events; the oldest are dropped beyond it (events are informational).
const MAX_EVENTS: usize = 256;

/// One datacenter as the engine sees it.
#[derive(Debug)]
pub struct DatacenterConfig {
    /// operator-chosen name, unique
    pub name: String,
    /// the session to its gateway (endpoint fixed, kept established)
    pub tunnel: TunnelConfig,
    /// where this tunnel's probes go
    pub probe: ProbeTarget,
    /// random per process and tunnel (the front end draws it; the engine has no randomness)
    pub probe_nonce: u64,
}

/// What the engine needs.
#[derive(Debug)]
pub struct EngineConfig {
    /// the client's stable inner addresses: the only sources it sends into a tunnel
    pub stable: StableAddresses,
    /// the datacenters, in priority order
    pub datacenters: Vec<DatacenterConfig>,
    /// probe timing, detection, hold-down and damping
    pub probe: ProbeConfig,
    /// path selection policy
    pub policy: Policy,
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
    /// a datacenter's health changed
    Health {
        /// which
        dc: DcId,
        /// before
        from: PathHealth,
        /// after
        to: PathHealth,
    },
    /// traffic moved
    Switched {
        /// from
        from: DcId,
        /// to
        to: DcId,
        /// why
        reason: SwitchReason,
        /// for a failure: how long the old tunnel had been silent when declared down
        detection: Option<Duration>,
    },
}

/// Errors building the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// no datacenter configured
    #[error("at least one datacenter is needed")]
    NoDatacenter,
    /// a probe target of a family with no stable address to send from
    #[error("datacenter {name}: the probe target {target} needs a stable address of its family")]
    ProbeFamily {
        /// the datacenter
        name: String,
        /// the target
        target: IpAddr,
    },
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
    /// probe-judged health
    pub health: PathHealth,
    /// smoothed probe RTT
    pub srtt: Option<Duration>,
    /// probe loss over the window
    pub loss: Option<f64>,
    /// damped out
    pub suppressed: bool,
    /// probe counters
    pub probes: ProbeCounters,
}

struct Datacenter {
    name: String,
    tunnel: Tunnel,
    established: bool,
    monitor: PathMonitor,
    probe: ProbeTarget,
    probe_source: IpAddr,
    /// why it last went down, and how long it had been silent then
    last_down: Option<(probe::health::DownReason, Duration)>,
}

/// The client engine. See the module docs for the calling contract.
pub struct Engine {
    stable: StableAddresses,
    dcs: Vec<Datacenter>,
    selector: Selector,
    probe_buf: Vec<u8>,
    probe_malformed: u64,
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
            .field("active", &self.selector.active())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds every tunnel and monitor. Nothing is sent before the first
    /// [`Engine::handle_timeout`], which the front end must call at once.
    pub fn new(config: EngineConfig, now: Instant) -> Result<Self, EngineError> {
        if config.datacenters.is_empty() {
            return Err(EngineError::NoDatacenter);
        }
        let mut dcs = Vec::with_capacity(config.datacenters.len());
        for (i, dc) in config.datacenters.into_iter().enumerate() {
            let target = dc.probe.addr();
            let probe_source = match target {
                IpAddr::V4(_) => config.stable.v4.map(IpAddr::V4),
                IpAddr::V6(_) => config.stable.v6.map(IpAddr::V6),
            }
            .ok_or_else(|| EngineError::ProbeFamily {
                name: dc.name.clone(),
                target,
            })?;
            let tunnel = Tunnel::new(dc.tunnel).map_err(|source| EngineError::Tunnel {
                name: dc.name.clone(),
                source,
            })?;
            let mut monitor = PathMonitor::new(config.probe.clone(), dc.probe_nonce, now);
            monitor.set_intent(if i == 0 {
                Intent::Active
            } else {
                Intent::Standby
            });
            dcs.push(Datacenter {
                name: dc.name,
                tunnel,
                established: false,
                monitor,
                probe: dc.probe,
                probe_source,
                last_down: None,
            });
        }
        Ok(Self {
            stable: config.stable,
            dcs,
            // All tunnels start together: the first one gets a handshake's worth of time to
            // answer (1 s covers a WAN round trip or two) before it is left like a failed one.
            selector: Selector::new(
                config.policy,
                now,
                config
                    .probe
                    .detect_time(config.probe.interval)
                    .max(STARTUP_GRACE),
            ),
            probe_buf: Vec::with_capacity(128),
            probe_malformed: 0,
            flushing: None,
            events: VecDeque::new(),
            local_drops: [0; 2],
            underlay_drops: DropCounters::default(),
        })
    }

    /// The datacenter that carries traffic now.
    pub fn active(&self) -> DcId {
        DcId(self.selector.active())
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
        let Some(dc) = self.dcs.get_mut(self.selector.active()) else {
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
        if dc.tunnel.last_authenticated_rx() == Some(now) {
            dc.monitor.on_inbound(now);
        }
        if dc.tunnel.is_established() && !dc.established {
            dc.established = true;
            push_event(&mut self.events, Event::Established(DcId(i)));
        }
        let outcome = match outcome {
            Outcome::Deliver(packet) => match probe::packet::probe_reply(packet, dc.probe) {
                None => Outcome::Deliver(packet),
                Some(Ok(msg)) => {
                    // refused replies are counted by the monitor and are not evidence
                    let _ = dc.monitor.on_reply(now, &msg);
                    Outcome::Done
                }
                Some(Err(_)) => {
                    self.probe_malformed += 1;
                    Outcome::Done
                }
            },
            Outcome::Transmit(t) => {
                self.flushing = Some(DcId(i));
                Outcome::Transmit(t)
            }
            other => other,
        };
        self.after_health_changes(now, false);
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
            .flat_map(|d| {
                d.tunnel
                    .poll_timeout()
                    .into_iter()
                    .chain([d.monitor.poll_timeout()])
            })
            .min()
    }

    /// Runs every due timer: tunnels (handshakes, keepalives, rekeys), probes, health and
    /// selection; hands each datagram to `send`. The first call starts every handshake.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        out: &mut [u8],
        mut send: impl FnMut(Transmit<'_>),
    ) {
        for (i, dc) in self.dcs.iter_mut().enumerate() {
            if dc.tunnel.poll_timeout().is_none_or(|t| now >= t) {
                dc.tunnel.tick(now, out, &mut send);
            }
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
            dc.monitor.handle_timeout(now);
        }
        self.after_health_changes(now, true);
        for i in 0..self.dcs.len() {
            self.send_probes(i, now, out, &mut send);
        }
    }

    fn send_probes(
        &mut self,
        i: usize,
        now: Instant,
        out: &mut [u8],
        send: &mut impl FnMut(Transmit<'_>),
    ) {
        let Some(dc) = self.dcs.get_mut(i) else {
            return;
        };
        while let Some(msg) = dc.monitor.poll_probe(now) {
            probe::packet::probe_request(dc.probe_source, dc.probe, &msg, &mut self.probe_buf);
            if let Outcome::Transmit(t) = dc.tunnel.encapsulate(&self.probe_buf, out) {
                send(t);
            }
        }
    }

    /// Records health changes as events and lets the selector act.
    ///
    /// `on_timer`: called from [`Engine::handle_timeout`], where selection is re-evaluated even
    /// without a change (some of its rules are timers: the startup grace, the RTT policy's
    /// dwell). On the per-datagram path it runs only after a change.
    fn after_health_changes(&mut self, now: Instant, on_timer: bool) {
        let mut changed = false;
        for (i, dc) in self.dcs.iter_mut().enumerate() {
            while let Some(HealthChange { from, to, down }) = dc.monitor.poll_change() {
                changed = true;
                if down.is_some() {
                    dc.last_down = down;
                }
                push_event(
                    &mut self.events,
                    Event::Health {
                        dc: DcId(i),
                        from,
                        to,
                    },
                );
            }
        }
        if !changed && !on_timer {
            return;
        }
        let views: Vec<PathView> = self
            .dcs
            .iter()
            .map(|d| PathView {
                health: d.monitor.health(),
                suppressed: d.monitor.suppressed(),
                srtt: d.monitor.srtt(),
                down: d.last_down,
            })
            .collect();
        if let Some(sw) = self.selector.evaluate(now, &views) {
            self.apply_switch(now, sw);
        }
    }

    fn apply_switch(&mut self, now: Instant, sw: probe::SwitchEvent) {
        if let Some(old) = self.dcs.get_mut(sw.from) {
            old.monitor.set_intent(Intent::Standby);
            old.monitor.probe_now(now);
        }
        if let Some(new) = self.dcs.get_mut(sw.to) {
            new.monitor.set_intent(Intent::Active);
            new.monitor.probe_now(now);
        }
        push_event(
            &mut self.events,
            Event::Switched {
                from: DcId(sw.from),
                to: DcId(sw.to),
                reason: sw.reason,
                detection: sw.detection,
            },
        );
    }

    /// Moves traffic to `dc` by operator request (it stays there while it is alive).
    pub fn switch_to(&mut self, now: Instant, dc: DcId) -> bool {
        if dc.0 >= self.dcs.len() {
            return false;
        }
        if let Some(sw) = self.selector.force(dc.0) {
            self.apply_switch(now, sw);
        }
        true
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
                active: i == self.selector.active(),
                established: d.tunnel.is_established(),
                stats: d.tunnel.stats(),
                health: d.monitor.health(),
                srtt: d.monitor.srtt(),
                loss: d.monitor.loss(),
                suppressed: d.monitor.suppressed(),
                probes: d.monitor.counters(),
            })
            .collect()
    }

    /// Drops of local packets: (not IP, source not a stable address).
    pub fn local_drops(&self) -> (u64, u64) {
        let [a, b] = self.local_drops;
        (a, b)
    }

    /// Probe replies that did not parse.
    pub fn probe_malformed(&self) -> u64 {
        self.probe_malformed
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
