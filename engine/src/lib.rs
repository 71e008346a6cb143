//! The client's engine: one [`tunnel::Tunnel`] per datacenter, all kept established, one active.
//!
//! Both front ends (the `failoverd` daemon with a TUN device, and `vmm-shim` below a guest) link
//! this and only this for the data path. It is sans-IO and clock-free: the caller passes packets,
//! datagrams, caller-owned buffers and `now`, and gets back what to send or deliver.
//!
//! Calling contract (quinn's verbs):
//! - [`Engine::handle_local`] for every IP packet from the local side (TUN or guest);
//! - [`Engine::handle_datagram`] for every UDP datagram from the underlay;
//! - [`Engine::handle_timeout`] no later than [`Engine::poll_timeout`];
//! - after any of them, [`Engine::poll_transmit`] into a caller-owned [`Batch`] until it adds
//!   nothing (send what it holds in between), and [`Engine::poll_event`] until `None`.
//!
//! Every tunnel is probed from inside (a [`probe::PathMonitor`] each); authenticated inbound
//! traffic counts as evidence too. A [`probe::Selector`] picks the active tunnel; on a switch the
//! new gateway is told at once (a probe with intent Active, so it claims the stable address) and
//! the old one too (intent Standby, so it releases it), and an [`Event::Switched`] records why,
//! from where to where, and how long detection took.

#![forbid(unsafe_code)]

mod batch;
pub mod gateway;
pub mod resolve;
/// The datacenter side of a simulation, for the simulation tests of every front end.
#[cfg(feature = "testkit")]
pub mod testkit;

pub use batch::{Batch, Run, Runs};
pub use resolve::Lookup;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use probe::health::{HealthChange, ProbeCounters};
use probe::packet::ProbeTarget;
use probe::select::PathView;
use probe::{Intent, PathHealth, PathMonitor, Selector, SwitchReason};
use sessionkeeper::{Keeper, KeeperConfig, KeeperStats};
use tunnel::{
    DropCounters, DropReason, EndpointPolicy, Outcome, Transmit, Tunnel, TunnelConfig, TunnelStats,
};

// The types an EngineConfig is made of, so front ends need no crate below the engine.
pub use probe::{Policy, ProbeConfig};
pub use sessionkeeper::StableAddresses;
pub use tunnel::{AllowedIps, Prefix, PrivateKey, PublicKey};

/// A call this much later than the engine's own deadline ([`Engine::poll_timeout`]) means the
/// process did not run (suspend, SIGSTOP, a paused VM): the engine resumes instead of blaming
/// the datacenters for the silence.
pub const STALL: Duration = Duration::from_millis(250);

/// Least time a first datacenter that has not answered yet is waited for at start.
const STARTUP_GRACE: Duration = Duration::from_secs(1);

/// Bound on undelivered events; the oldest are dropped beyond it (events are informational).
const MAX_EVENTS: usize = 256;

/// Switch records kept for operators ([`Engine::switches`]); the oldest go first.
pub const SWITCH_RECORDS: usize = 64;

/// Switch-over recovery waits for the new gateway's first answer after the switch (it has
/// claimed the return path by then), but no longer than this many of its RTTs …
const RECOVERY_WAIT_RTTS: u32 = 2;
/// … within these bounds.
const RECOVERY_WAIT_MIN: Duration = Duration::from_millis(10);
const RECOVERY_WAIT_MAX: Duration = Duration::from_millis(200);
/// The wait when the new tunnel has no RTT estimate yet.
const RECOVERY_WAIT_DEFAULT: Duration = Duration::from_millis(50);

/// Timer and probe datagrams (handshake initiations, keepalives, probes: all under this size)
/// wait in the engine's own outbox until [`Engine::poll_transmit`] hands them out …
const OUTBOX_SLOT: usize = 512;
/// … which holds this many per datacenter (one timer datagram and a few probes per
/// [`Engine::handle_timeout`]); beyond it they are dropped and counted, like a full socket.
const OUTBOX_PER_DC: usize = 8;

/// Where a datacenter's gateway listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// an address and port
    Addr(SocketAddr),
    /// a host name and port, resolved at run time ([`Engine::poll_lookup`]); the tunnel sends
    /// nothing until it resolves
    Name {
        /// the host name
        host: String,
        /// the port
        port: u16,
    },
}

/// How a datacenter's tunnel is probed from inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// a failoverd gateway's probe responder at this inner address (it also claims the stable
    /// address while this datacenter is active)
    Gateway(IpAddr),
    /// ICMP echo to this host behind a plain WireGuard server
    Icmp(IpAddr),
}

impl Probe {
    /// The address probes go to.
    pub fn addr(self) -> IpAddr {
        match self {
            Probe::Gateway(a) | Probe::Icmp(a) => a,
        }
    }
}

/// One datacenter, as the front end configures it.
#[derive(Debug, Clone)]
pub struct DatacenterConfig {
    /// operator-chosen name, unique
    pub name: String,
    /// where its gateway listens
    pub endpoint: Endpoint,
    /// its gateway's public key
    pub public_key: PublicKey,
    /// inner sources accepted from it
    pub allowed_ips: AllowedIps,
    /// seconds between keepalives when idle, if any
    pub persistent_keepalive: Option<u16>,
    /// the pre-shared key both sides mix into the handshake, if any
    pub preshared_key: Option<tunnel::PresharedKey>,
    /// how its tunnel is probed
    pub probe: Probe,
}

/// What the engine needs: the front end builds it from its configuration file and nothing
/// else (the tunnels, probes and session keeper are configured from it inside).
#[derive(Debug)]
pub struct EngineConfig {
    /// the client's private key, the same on every tunnel
    pub private_key: PrivateKey,
    /// the client's stable inner addresses: the only sources it sends into a tunnel
    pub stable: StableAddresses,
    /// the addresses the local side uses, mapped to the stable ones (none: the local side
    /// uses the stable addresses)
    pub local: StableAddresses,
    /// the datacenters, in priority order
    pub datacenters: Vec<DatacenterConfig>,
    /// probe timing, detection, hold-down and damping
    pub probe: ProbeConfig,
    /// path selection policy
    pub policy: Policy,
    /// the local side's MTU (the smallest datacenter MTU): SYNs are clamped to fit it
    pub mtu: u16,
    /// flows tracked at most
    pub max_flows: usize,
    /// switch-over recovery of live TCP flows at a switch
    pub switch_recovery: bool,
    /// what the client routes into its tunnels: an endpoint name resolving in here is refused
    /// (the tunnel's packets would go through itself)
    pub routes: Vec<Prefix>,
    /// randomness for probe nonces and ICMP identifiers, drawn by the front end (the engine
    /// has none): a new value per process
    pub seed: u64,
    /// the wall clock (since the Unix epoch) at the `now` given to [`Engine::new`]: switch
    /// generations grow with it, so a restarted client's claims outrank its old ones
    pub unix_time: Duration,
}

/// A datacenter as the engine builds it: its tunnel's and probe's own configuration.
#[derive(Debug)]
struct Planned {
    name: String,
    tunnel: TunnelConfig,
    probe: ProbeTarget,
    /// how it was configured, for what a reload compares
    configured_probe: Probe,
    probe_nonce: u64,
    endpoint_name: Option<(String, u16)>,
}

/// An [`EngineConfig`] in the terms of the crates below.
#[derive(Debug)]
struct Lowered {
    unix_time: Duration,
    stable: StableAddresses,
    datacenters: Vec<Planned>,
    probe: ProbeConfig,
    policy: Policy,
    keeper: KeeperConfig,
    routes: Vec<Prefix>,
}

/// Switch generations count tenths of a second from 2026-01-01T00:00:00Z (Unix time): 32 bits
/// last until 2039, and a client restarted with a sane clock starts above every generation it
/// claimed with before.
const GENERATION_EPOCH: Duration = Duration::from_secs(1_767_225_600);

/// The generation the wall clock gives at `now`, from `base` = (an instant, the wall clock
/// then). A switch takes the larger of this and the last generation + 1.
fn generation_at(base: (Instant, Duration), now: Instant) -> u32 {
    let wall = base.1 + now.saturating_duration_since(base.0);
    let tenths = wall.saturating_sub(GENERATION_EPOCH).as_millis() / 100;
    u32::try_from(tenths).unwrap_or(u32::MAX)
}

/// splitmix64: a well-mixed value per (seed, datacenter) for nonces and ICMP ids.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl EngineConfig {
    fn lower(self) -> Lowered {
        let datacenters = self
            .datacenters
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let r = mix(self.seed, i as u64);
                Planned {
                    tunnel: TunnelConfig {
                        private_key: self.private_key.clone(),
                        peer_public_key: d.public_key,
                        persistent_keepalive: d.persistent_keepalive,
                        preshared_key: d.preshared_key,
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        allowed_ips: d.allowed_ips,
                        endpoint: match d.endpoint {
                            Endpoint::Addr(a) => EndpointPolicy::Fixed(a),
                            Endpoint::Name { .. } => EndpointPolicy::Controlled,
                        },
                        keep_established: true,
                    },
                    probe: match d.probe {
                        Probe::Gateway(a) => ProbeTarget::Gateway(a),
                        Probe::Icmp(addr) => ProbeTarget::Icmp {
                            addr,
                            id: (r >> 48) as u16,
                        },
                    },
                    configured_probe: d.probe,
                    probe_nonce: r,
                    endpoint_name: match d.endpoint {
                        Endpoint::Name { host, port } => Some((host, port)),
                        Endpoint::Addr(_) => None,
                    },
                    name: d.name,
                }
            })
            .collect();
        Lowered {
            unix_time: self.unix_time,
            keeper: KeeperConfig {
                local: self.local,
                max_flows: self.max_flows,
                recovery: self.switch_recovery,
                ..KeeperConfig::new(self.stable, self.mtu)
            },
            stable: self.stable,
            datacenters,
            probe: self.probe,
            policy: self.policy,
            routes: self.routes,
        }
    }
}

/// A datacenter, by its place in configuration order (a reload may renumber them: names are
/// what stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DcId(usize);

impl DcId {
    /// The datacenter at `index` in configuration order.
    pub const fn new(index: usize) -> Self {
        Self(index)
    }

    /// Its place in configuration order.
    pub const fn index(self) -> usize {
        self.0
    }
}

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
    /// the first data packet arrived through the tunnel traffic moved to: the inbound data
    /// path had been silent for `stall` (from the last authenticated datagram on the old
    /// tunnel), the stall this switch cost every flow at the least
    Recovered {
        /// the new tunnel
        dc: DcId,
        /// inbound silence across the switch
        stall: Duration,
    },
    /// every datacenter is down: nothing carries traffic (the front end applies its fail
    /// mode: keep dropping — fail closed — or let the traffic take the uplink — fail open)
    AllDown,
    /// after [`Event::AllDown`]: a datacenter is alive again
    AnyUp,
    /// a datacenter's endpoint name resolved to a new address, which its tunnel uses now
    EndpointResolved {
        /// which
        dc: DcId,
        /// the new endpoint
        endpoint: SocketAddr,
    },
    /// a datacenter's endpoint name did not resolve to a usable address; the last good one
    /// stays, and the name is asked again after a backoff
    ResolveFailed {
        /// which
        dc: DcId,
        /// why, for the log
        error: String,
    },
    /// the engine was called `gap` later than its own deadline: the process did not run
    /// (suspend, SIGSTOP, a paused VM). It resumed without blaming the datacenters: nothing
    /// was declared down for the silence and every tunnel was probed at once.
    Resumed {
        /// how long past its deadline
        gap: Duration,
    },
}

/// One switch of the active datacenter, as operators see it: when, from where to where, why,
/// how long detection took, and the outage it caused on the inbound data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchRecord {
    /// when traffic moved
    pub at: Instant,
    /// from (the datacenter's name: indexes change with a reload, names do not)
    pub from: String,
    /// to
    pub to: String,
    /// why
    pub reason: SwitchReason,
    /// for a failure: how long the old tunnel had been silent when declared down
    pub detection: Option<Duration>,
    /// inbound silence across the switch (from the old tunnel's last authenticated datagram
    /// to the first data packet through the new one); `None` until that packet arrives
    pub stall: Option<Duration>,
}

/// Why an operator's request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// no datacenter has that index
    #[error("no such datacenter")]
    Unknown,
    /// switching to a drained datacenter
    #[error("the datacenter is drained: undrain it first")]
    Drained,
    /// switching to a datacenter that is down
    #[error("the datacenter is down: its probes are not answered")]
    Down,
}

/// One tracked flow, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowInfo {
    /// IP protocol number
    pub protocol: u8,
    /// the far end
    pub remote: IpAddr,
    /// its port (or 0)
    pub remote_port: u16,
    /// the local port (or ICMP echo identifier)
    pub local_port: u16,
    /// the tunnel its last outbound packet took
    pub tunnel: DcId,
    /// since it was first seen
    pub age: Duration,
    /// since its last packet
    pub idle: Duration,
    /// packets from the local side
    pub packets_out: u64,
    /// packets from the far end
    pub packets_in: u64,
    /// TCP: `syn_sent`, `established` or `closing`; other protocols: `-`
    pub state: &'static str,
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
    /// a reload changed the stable address
    #[error(
        "client.stable_address changed: the gateways claim it; restart the daemon to apply it"
    )]
    StableChanged,
    /// a reload changed what the running engine cannot change under live flows
    #[error("{what} changed: restart the daemon to apply it")]
    RestartNeeded {
        /// which setting, as the configuration names it
        what: &'static str,
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

/// Why the engine dropped a packet from the local side (the session keeper counts each).
pub type LocalDrop = sessionkeeper::KeeperDrop;

/// Switch-over recovery waiting for the new path.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    /// the tunnel traffic moved to
    dc: usize,
    /// the first probe sent to it after the switch; its answer means the path is ready
    after_seq: Option<u64>,
    /// go anyway at this time
    deadline: Instant,
    /// ready: drain the keeper's recovery packets
    ready: bool,
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
    /// taken out of service by the operator
    pub drained: bool,
}

/// What makes a datacenter's tunnel the same one across a reload.
#[derive(Debug, Clone, PartialEq)]
struct TunnelIdentity {
    own_public: tunnel::PublicKey,
    peer: tunnel::PublicKey,
    keepalive: Option<u16>,
    preshared_key: Option<tunnel::PresharedKey>,
    allowed_ips: tunnel::AllowedIps,
    endpoint: tunnel::EndpointPolicy,
    /// as configured: a new ICMP identifier or nonce is no new tunnel
    probe: Probe,
}

impl TunnelIdentity {
    fn of(dc: &Planned) -> Self {
        Self {
            own_public: dc.tunnel.private_key.public_key(),
            peer: dc.tunnel.peer_public_key,
            keepalive: dc.tunnel.persistent_keepalive,
            preshared_key: dc.tunnel.preshared_key.clone(),
            allowed_ips: dc.tunnel.allowed_ips.clone(),
            endpoint: dc.tunnel.endpoint,
            probe: dc.configured_probe,
        }
    }
}

/// What a reload did, by datacenter name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// new datacenters
    pub added: Vec<String>,
    /// datacenters no longer configured (their sessions are gone)
    pub removed: Vec<String>,
    /// datacenters whose tunnel was rebuilt (key, endpoint, allowed IPs, keepalive or probe
    /// target changed)
    pub changed: Vec<String>,
    /// datacenters whose tunnel was kept as it was
    pub unchanged: Vec<String>,
}

struct Datacenter {
    name: String,
    identity: TunnelIdentity,
    /// the session index base its tunnel was built with
    index: u32,
    tunnel: Tunnel,
    established: bool,
    monitor: PathMonitor,
    probe: ProbeTarget,
    probe_source: IpAddr,
    /// why it last went down, and how long it had been silent then
    last_down: Option<(probe::health::DownReason, Duration)>,
    /// taken out of service by the operator
    drained: bool,
}

/// The client engine. See the module docs for the calling contract.
pub struct Engine {
    dcs: Vec<Datacenter>,
    /// the client's switch generation, carried by every probe (see [`generation_at`])
    generation: u32,
    /// (an instant, the wall clock then) for [`generation_at`]
    generation_base: (Instant, Duration),
    selector: Selector,
    probe_buf: Vec<u8>,
    probe_malformed: u64,
    /// datagrams from timers and probes, until [`Engine::poll_transmit`]
    outbox: Batch,
    /// where tunnels write before a datagram goes into the outbox
    scratch: Vec<u8>,
    events: VecDeque<Event>,
    underlay_drops: DropCounters,
    keeper: Keeper,
    recovery: Option<Recovery>,
    recovery_buf: Vec<u8>,
    /// after a switch: the new tunnel and the old tunnel's last authenticated datagram,
    /// until the first data packet arrives through the new one
    awaiting_data: Option<(usize, Option<Instant>)>,
    /// every datacenter was down at the last health change ([`Event::AllDown`] said so)
    all_down: bool,
    /// the `now` of the last `handle_*` call: with the deadline the engine had then, when it
    /// expected to be called next
    last_call: Option<Instant>,
    /// resumes after a stall, for status
    resumes: u64,
    /// the last [`SWITCH_RECORDS`] switches
    switches: VecDeque<SwitchRecord>,
    /// every switch since start, by reason ([`SwitchReason::ALL`]'s order)
    switch_counts: [u64; SwitchReason::ALL.len()],
    /// the endpoint-name policy
    resolver: resolve::Resolver,
    /// lookups due, until [`Engine::poll_lookup`]
    lookups: VecDeque<Lookup>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("datacenters", &self.dcs.len())
            .field("active", &self.selector.active())
            .finish_non_exhaustive()
    }
}

impl Datacenter {
    fn new(
        dc: Planned,
        probe: &ProbeConfig,
        probe_source: IpAddr,
        now: Instant,
    ) -> Result<Self, EngineError> {
        let identity = TunnelIdentity::of(&dc);
        let index = dc.tunnel.index;
        let tunnel = Tunnel::new(dc.tunnel).map_err(|source| EngineError::Tunnel {
            name: dc.name.clone(),
            source,
        })?;
        Ok(Datacenter {
            monitor: PathMonitor::new(probe.clone(), dc.probe_nonce, now),
            name: dc.name,
            identity,
            index,
            tunnel,
            established: false,
            probe: dc.probe,
            probe_source,
            last_down: None,
            drained: false,
        })
    }
}

/// The endpoint-name policy for `config`: its named endpoints, all due at `now`; the client's
/// own addresses and what it routes into its tunnels are refused as answers.
fn resolver_for(config: &Lowered, now: Instant) -> resolve::Resolver {
    let names = config.datacenters.iter().filter_map(|d| {
        d.endpoint_name
            .as_ref()
            .map(|(host, port)| (d.name.clone(), host.clone(), *port))
    });
    let own: Vec<IpAddr> = [
        config.stable.v4.map(IpAddr::V4),
        config.stable.v6.map(IpAddr::V6),
        config.keeper.local.v4.map(IpAddr::V4),
        config.keeper.local.v6.map(IpAddr::V6),
    ]
    .into_iter()
    .flatten()
    .chain(config.datacenters.iter().map(|d| d.probe.addr()))
    .collect();
    resolve::Resolver::new(names, own, config.routes.clone(), now)
}

fn probe_source(stable: &StableAddresses, dc: &Planned) -> Result<IpAddr, EngineError> {
    let target = dc.probe.addr();
    match target {
        IpAddr::V4(_) => stable.v4.map(IpAddr::V4),
        IpAddr::V6(_) => stable.v6.map(IpAddr::V6),
    }
    .ok_or_else(|| EngineError::ProbeFamily {
        name: dc.name.clone(),
        target,
    })
}

impl Engine {
    /// Builds every tunnel and monitor. Nothing is sent before the first
    /// [`Engine::handle_timeout`], which the front end must call at once.
    pub fn new(config: EngineConfig, now: Instant) -> Result<Self, EngineError> {
        let config = config.lower();
        if config.datacenters.is_empty() {
            return Err(EngineError::NoDatacenter);
        }
        let resolver = resolver_for(&config, now);
        let generation_base = (now, config.unix_time);
        let generation = generation_at(generation_base, now).max(1);
        let mut dcs = Vec::with_capacity(config.datacenters.len());
        for (i, dc) in config.datacenters.into_iter().enumerate() {
            let probe_source = probe_source(&config.stable, &dc)?;
            let mut d = Datacenter::new(dc, &config.probe, probe_source, now)?;
            d.monitor.set_intent(if i == 0 {
                Intent::Active
            } else {
                Intent::Standby
            });
            d.monitor.set_generation(generation);
            dcs.push(d);
        }
        let dcs_len = dcs.len();
        Ok(Self {
            dcs,
            generation,
            generation_base,
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
            outbox: Batch::new(OUTBOX_PER_DC * dcs_len + OUTBOX_PER_DC, OUTBOX_SLOT),
            scratch: vec![0; tunnel::min_buffer_len(tunnel::MAX_DATAGRAM)],
            events: VecDeque::new(),
            underlay_drops: DropCounters::default(),
            keeper: Keeper::new(KeeperConfig {
                stable: config.stable,
                ..config.keeper
            }),
            recovery: None,
            recovery_buf: Vec::with_capacity(tunnel::MAX_DATAGRAM),
            awaiting_data: None,
            all_down: false,
            last_call: None,
            resumes: 0,
            switches: VecDeque::with_capacity(SWITCH_RECORDS),
            switch_counts: [0; SwitchReason::ALL.len()],
            resolver,
            lookups: VecDeque::new(),
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

    /// Handles an IP packet from the local side: the session keeper validates it, maps its
    /// source to the stable address and tracks it, in place; returns the datagram to send on
    /// the active tunnel, if any.
    pub fn handle_local<'o>(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        out: &'o mut [u8],
    ) -> Result<Option<Transmit<'o>>, LocalDrop> {
        self.handle_local_segment(now, packet, out, false)
    }

    /// [`Engine::handle_local`] for one segment of a super-packet the local side split:
    /// `followed` says another segment of the same super-packet comes next, so only the last
    /// one is kept whole for switch-over recovery (see `Keeper::outbound_segment`).
    pub fn handle_local_segment<'o>(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        out: &'o mut [u8],
        followed: bool,
    ) -> Result<Option<Transmit<'o>>, LocalDrop> {
        self.notice_stall(now);
        let active = self.selector.active();
        let len = self
            .keeper
            .outbound_segment(now, packet, active, followed)?;
        let (Some(dc), Some(packet)) = (self.dcs.get_mut(active), packet.get(..len)) else {
            return Ok(None);
        };
        Ok(match dc.tunnel.encapsulate(packet, out) {
            Outcome::Transmit(t) => Some(t),
            _ => None,
        })
    }

    /// Handles a datagram from the underlay. Datagrams from an address that is no datacenter's
    /// endpoint are dropped and counted. A `Transmit` (a handshake's answer) is to be sent at
    /// once; what a completed handshake released comes from [`Engine::poll_transmit`].
    pub fn handle_datagram<'o>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &'o mut [u8],
    ) -> Outcome<'o> {
        self.notice_stall(now);
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
        // (is_established asks boringtun for its stats: only while not yet known)
        if !dc.established && dc.tunnel.is_established() {
            dc.established = true;
            push_event(&mut self.events, Event::Established(DcId(i)));
        }
        let outcome = match outcome {
            Outcome::Deliver(packet) => match probe::packet::probe_reply(packet, dc.probe) {
                None => match self.keeper.inbound(now, packet) {
                    Ok(len) => match packet.get_mut(..len) {
                        Some(p) if self.awaiting_data.is_some_and(|(to, _)| to == i) => {
                            if let Some((_, Some(last))) = self.awaiting_data.take() {
                                let stall = now.saturating_duration_since(last);
                                if let Some(r) = self.switches.back_mut() {
                                    if r.to == dc.name && r.stall.is_none() {
                                        r.stall = Some(stall);
                                    }
                                }
                                push_event(
                                    &mut self.events,
                                    Event::Recovered { dc: DcId(i), stall },
                                );
                            }
                            Outcome::Deliver(p)
                        }
                        Some(p) => Outcome::Deliver(p),
                        None => Outcome::Done,
                    },
                    // the session keeper refused it (not for a stable address, or malformed in
                    // its transport header) and counted why: a drop of its own, not the tunnel's
                    Err(_) => Outcome::Done,
                },
                Some(Ok(msg)) => {
                    // refused replies are counted by the monitor and are not evidence
                    let accepted = dc.monitor.on_reply(now, &msg).is_ok();
                    if let Some(r) = self.recovery.as_mut() {
                        if accepted && r.dc == i && r.after_seq.is_some_and(|s| msg.seq >= s) {
                            r.ready = true;
                        }
                    }
                    Outcome::Done
                }
                Some(Err(_)) => {
                    self.probe_malformed += 1;
                    Outcome::Done
                }
            },
            other => other,
        };
        self.after_health_changes(now, false);
        outcome
    }

    /// Adds to `batch` the datagrams due now, in order: timer and probe datagrams from
    /// [`Engine::handle_timeout`], those a tunnel queued behind a completed handshake, then
    /// switch-over recovery once the new path is ready (or its wait is over at `now`). Call it
    /// after every `handle_*`, and again after sending, until it adds nothing: a full batch
    /// leaves the rest for the next call. `batch`'s slots must hold any datagram
    /// ([`Batch::for_datagrams`]); smaller ones lose what does not fit, counted.
    pub fn poll_transmit(&mut self, now: Instant, batch: &mut Batch) {
        self.outbox.drain_into(batch);
        for dc in &mut self.dcs {
            while dc.tunnel.has_queued() && !batch.is_full() {
                batch.fill(|slot| {
                    dc.tunnel
                        .poll_transmit(slot)
                        .map(|t| (t.to, t.datagram.len()))
                });
            }
        }
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        r.ready |= now >= r.deadline;
        if !r.ready {
            return;
        }
        let r = *r;
        while !batch.is_full() {
            if r.dc != self.selector.active() || !self.keeper.poll_recovery(&mut self.recovery_buf)
            {
                self.recovery = None;
                return;
            }
            let Some(dc) = self.dcs.get_mut(r.dc) else {
                self.recovery = None;
                return;
            };
            let packet = &self.recovery_buf;
            batch.fill(|slot| match dc.tunnel.encapsulate(packet, slot) {
                Outcome::Transmit(t) => Some((t.to, t.datagram.len())),
                _ => None,
            });
        }
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let recovery = self.recovery.map(|r| r.deadline);
        let names = self.resolver.next_due();
        self.dcs
            .iter()
            .flat_map(|d| {
                d.tunnel
                    .poll_timeout()
                    .into_iter()
                    .chain([d.monitor.poll_timeout()])
            })
            .chain(recovery)
            .chain(names)
            .min()
    }

    /// Runs every due timer: tunnels (handshakes, keepalives, rekeys), probes, health and
    /// selection. What they send waits for [`Engine::poll_transmit`]. The first call starts
    /// every handshake.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.notice_stall(now);
        for (i, dc) in self.dcs.iter_mut().enumerate() {
            if dc.tunnel.poll_timeout().is_none_or(|t| now >= t) {
                if let Outcome::Transmit(t) = dc.tunnel.handle_timeout(now, &mut self.scratch) {
                    if !self.outbox.push(t.to, t.datagram) {
                        self.underlay_drops.add(DropReason::BufferTooSmall);
                    }
                }
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
            self.send_probes(i, now);
        }
        if let Some(r) = self.recovery.as_mut() {
            r.ready |= now >= r.deadline;
        }
        self.lookups.extend(self.resolver.due(now));
    }

    /// The next endpoint-name lookup to start, if any: the front end resolves `host` (with a
    /// timeout) and hands the answer to [`Engine::handle_resolved`]. Call after
    /// [`Engine::handle_timeout`] until `None`.
    pub fn poll_lookup(&mut self) -> Option<Lookup> {
        self.lookups.pop_front()
    }

    /// The answer to a [`Lookup`] of datacenter `dc` (its name): the addresses found, or the
    /// error. A usable new address becomes the tunnel's endpoint ([`Event::EndpointResolved`]);
    /// answers that would loop are refused ([`Event::ResolveFailed`]; the last good address
    /// stays). `jitter` in [0, 1) spreads retries: the front end draws it (the engine has no
    /// randomness).
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        dc: &str,
        result: Result<Vec<SocketAddr>, String>,
        jitter: f64,
    ) {
        let outcome = self.resolver.answer(dc, result, now, jitter);
        let Some(id) = self.find(dc) else {
            return;
        };
        match outcome {
            resolve::Judged::NewEndpoint(_, endpoint) => {
                let _ = self.set_endpoint(id, endpoint);
                push_event(
                    &mut self.events,
                    Event::EndpointResolved { dc: id, endpoint },
                );
            }
            resolve::Judged::Unchanged => {}
            resolve::Judged::Failed(error) => {
                push_event(&mut self.events, Event::ResolveFailed { dc: id, error });
            }
        }
    }

    /// Every named endpoint: `(datacenter, host, current address, failed lookups)`.
    pub fn endpoint_names(&self) -> impl Iterator<Item = (&str, &str, Option<SocketAddr>, u64)> {
        self.resolver.status()
    }

    /// Queues the probes `dc` owes now.
    fn send_probes(&mut self, i: usize, now: Instant) {
        let Some(dc) = self.dcs.get_mut(i) else {
            return;
        };
        while let Some(msg) = dc.monitor.poll_probe(now) {
            if let Some(r) = self.recovery.as_mut() {
                if r.dc == i && r.after_seq.is_none() {
                    r.after_seq = Some(msg.seq);
                }
            }
            probe::packet::probe_request(dc.probe_source, dc.probe, &msg, &mut self.probe_buf);
            if let Outcome::Transmit(t) = dc.tunnel.encapsulate(&self.probe_buf, &mut self.scratch)
            {
                if !self.outbox.push(t.to, t.datagram) {
                    self.underlay_drops.add(DropReason::BufferTooSmall);
                }
            }
        }
    }

    /// First thing in every `handle_*`: a call long after the deadline the engine had at its
    /// previous call (or after that call itself, when the deadline had already passed: a loop
    /// kept busy by packets) means the process did not run; the engine resumes before anything
    /// else is handled, or a timer would blame the datacenters for the process's own silence.
    fn notice_stall(&mut self, now: Instant) {
        // Cheap first: the planned wake-up is never before the previous call, so a call
        // within STALL of it cannot be a stall (this keeps poll_timeout off the per-packet path).
        if let Some(last) = self
            .last_call
            .filter(|last| now.saturating_duration_since(*last) > STALL)
        {
            // the state is as the previous call left it, so this is the deadline the caller
            // slept towards (an earlier wake-up of its own only makes the gap smaller)
            let planned = self.poll_timeout().map_or(last, |d| d.max(last));
            let gap = now.saturating_duration_since(planned);
            if gap > STALL {
                self.resume(now, gap);
                self.resumes += 1;
                push_event(&mut self.events, Event::Resumed { gap });
            }
        }
        self.last_call = Some(now);
    }

    /// How often the engine resumed after a stall.
    pub fn resumes(&self) -> u64 {
        self.resumes
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
                if to == PathHealth::Down {
                    // its name may point elsewhere now
                    self.resolver.datacenter_down(&dc.name, now);
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
        if self.all_down() != self.all_down {
            self.all_down = !self.all_down;
            push_event(
                &mut self.events,
                if self.all_down {
                    Event::AllDown
                } else {
                    Event::AnyUp
                },
            );
        }
        let views: Vec<PathView> = self
            .dcs
            .iter()
            .map(|d| PathView {
                health: d.monitor.health(),
                suppressed: d.monitor.suppressed(),
                srtt: d.monitor.srtt(),
                base_rtt: d.monitor.base_rtt(),
                down: d.last_down,
                drained: d.drained,
            })
            .collect();
        if let Some(sw) = self.selector.evaluate(now, &views) {
            self.apply_switch(now, sw);
        }
    }

    fn apply_switch(&mut self, now: Instant, sw: probe::SwitchEvent) {
        self.recovery = None;
        let old_rx = self
            .dcs
            .get(sw.from)
            .and_then(|d| d.tunnel.last_authenticated_rx());
        self.awaiting_data = Some((sw.to, old_rx));
        if self.keeper.on_switch(now, sw.from) > 0 {
            let wait = self
                .dcs
                .get(sw.to)
                .and_then(|d| d.monitor.srtt())
                .map_or(RECOVERY_WAIT_DEFAULT, |rtt| {
                    (rtt * RECOVERY_WAIT_RTTS).clamp(RECOVERY_WAIT_MIN, RECOVERY_WAIT_MAX)
                });
            self.recovery = Some(Recovery {
                dc: sw.to,
                after_seq: None,
                deadline: now + wait,
                ready: false,
            });
        }
        self.generation = self
            .generation
            .saturating_add(1)
            .max(generation_at(self.generation_base, now));
        for d in &mut self.dcs {
            d.monitor.set_generation(self.generation);
        }
        if let Some(old) = self.dcs.get_mut(sw.from) {
            old.monitor.set_intent(Intent::Standby);
            old.monitor.probe_now(now);
        }
        if let Some(new) = self.dcs.get_mut(sw.to) {
            new.monitor.set_intent(Intent::Active);
            new.monitor.probe_now(now);
        }
        if self.switches.len() >= SWITCH_RECORDS {
            self.switches.pop_front();
        }
        self.switches.push_back(SwitchRecord {
            at: now,
            from: self.name(DcId(sw.from)).to_owned(),
            to: self.name(DcId(sw.to)).to_owned(),
            reason: sw.reason,
            detection: sw.detection,
            stall: None,
        });
        if let Some(n) = SwitchReason::ALL
            .iter()
            .position(|r| *r == sw.reason)
            .and_then(|i| self.switch_counts.get_mut(i))
        {
            *n += 1;
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

    /// The last [`SWITCH_RECORDS`] switches, oldest first, each with the outage it caused once
    /// known.
    pub fn switches(&self) -> impl Iterator<Item = &SwitchRecord> + '_ {
        self.switches.iter()
    }

    /// Switches since start for `reason`.
    pub fn switch_count(&self, reason: SwitchReason) -> u64 {
        SwitchReason::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.switch_counts.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Moves traffic to `dc` by operator request; it stays there (failback and the RTT policy
    /// leave it alone) while it is alive.
    pub fn switch_to(&mut self, now: Instant, dc: DcId) -> Result<(), OperatorError> {
        let d = self.dcs.get(dc.0).ok_or(OperatorError::Unknown)?;
        if d.drained {
            return Err(OperatorError::Drained);
        }
        if d.monitor.health() == PathHealth::Down {
            return Err(OperatorError::Down);
        }
        if let Some(sw) = self.selector.force(dc.0) {
            self.apply_switch(now, sw);
        }
        Ok(())
    }

    /// Takes `dc` out of service (`drained`) or back in. Traffic leaves a drained datacenter
    /// at once for any other live one, and never returns while it is drained.
    pub fn set_drained(
        &mut self,
        now: Instant,
        dc: DcId,
        drained: bool,
    ) -> Result<(), OperatorError> {
        let d = self.dcs.get_mut(dc.0).ok_or(OperatorError::Unknown)?;
        if d.drained != drained {
            d.drained = drained;
            self.selector.unpin();
        }
        self.after_health_changes(now, true);
        Ok(())
    }

    /// Whether `dc` is drained.
    pub fn is_drained(&self, dc: DcId) -> bool {
        self.dcs.get(dc.0).is_some_and(|d| d.drained)
    }

    /// The datacenter named `name`.
    pub fn find(&self, name: &str) -> Option<DcId> {
        self.dcs.iter().position(|d| d.name == name).map(DcId)
    }

    /// The tracked flows, most recently used first, at most `limit`.
    pub fn flow_list(&self, now: Instant, limit: usize) -> Vec<FlowInfo> {
        let mut flows: Vec<&sessionkeeper::flows::Flow> = self.keeper.flows().iter().collect();
        flows.sort_unstable_by_key(|f| std::cmp::Reverse(f.last_seen));
        flows
            .into_iter()
            .take(limit)
            .map(|f| FlowInfo {
                protocol: f.key.protocol,
                remote: f.key.remote,
                remote_port: f.key.remote_port,
                local_port: f.key.local_port,
                tunnel: DcId(f.last_tunnel),
                age: now.saturating_duration_since(f.created),
                idle: now.saturating_duration_since(f.last_seen),
                packets_out: f.packets_out,
                packets_in: f.packets_in,
                state: match &f.tcp {
                    None => "-",
                    Some(t) if t.closing() => "closing",
                    Some(_) if f.packets_out > 0 && f.packets_in > 0 => "established",
                    Some(_) => "syn_sent",
                },
            })
            .collect()
    }

    /// Applies a new configuration (a reload). Datacenters are matched by name: one whose
    /// tunnel is the same (keys, endpoint, allowed IPs, keepalive, probe target) keeps its
    /// session, probe history and drain state; others are built new (and handshake at the next
    /// [`Engine::handle_timeout`]); missing ones are dropped. Probe timings, the policy and the
    /// session keeper's local addresses and recovery switch apply at once. The active
    /// datacenter stays active if it is kept; otherwise the selector picks anew.
    ///
    /// Refused, leaving everything as it was: a changed stable address (the gateways claim it)
    /// or an empty datacenter list.
    pub fn reconfigure(
        &mut self,
        config: EngineConfig,
        now: Instant,
    ) -> Result<ReloadReport, EngineError> {
        let config = config.lower();
        if config.datacenters.is_empty() {
            return Err(EngineError::NoDatacenter);
        }
        if config.stable != self.keeper_stable() {
            return Err(EngineError::StableChanged);
        }
        // The local side was set up with this MTU (the TUN's, or what DHCP and router
        // advertisements told the guest) and the flow table was sized at start: neither
        // changes under live flows.
        if config.keeper.mtu != self.keeper.mtu() {
            return Err(EngineError::RestartNeeded {
                what: "the smallest datacenter mtu (the local side's MTU)",
            });
        }
        if config.keeper.max_flows != self.keeper.flows().cap() {
            return Err(EngineError::RestartNeeded {
                what: "client.flow_table_size",
            });
        }
        let resolver = resolver_for(&config, now);
        // Validate and build everything new before touching the running state.
        let mut report = ReloadReport::default();
        let mut plan: Vec<(Planned, Option<usize>)> = Vec::new();
        for dc in config.datacenters {
            probe_source(&config.stable, &dc)?;
            let old = self.dcs.iter().position(|d| d.name == dc.name);
            let keep = old.filter(|&i| {
                self.dcs
                    .get(i)
                    .is_some_and(|d| d.identity == TunnelIdentity::of(&dc))
            });
            match (old, keep) {
                (None, _) => report.added.push(dc.name.clone()),
                (Some(_), Some(_)) => report.unchanged.push(dc.name.clone()),
                (Some(_), None) => report.changed.push(dc.name.clone()),
            }
            plan.push((dc, keep));
        }
        let mut fresh: Vec<Option<Datacenter>> = Vec::with_capacity(plan.len());
        let used_indexes: Vec<u32> = plan
            .iter()
            .filter_map(|(_, keep)| *keep)
            .filter_map(|i| self.dcs.get(i).map(|d| d.index))
            .collect();
        let mut next_index = 0u32;
        for (dc, keep) in &plan {
            if keep.is_some() {
                fresh.push(None);
                continue;
            }
            // a session index base no kept tunnel uses
            while used_indexes.contains(&next_index) {
                next_index += 1;
            }
            let mut cfg = Planned {
                name: dc.name.clone(),
                tunnel: dc.tunnel.clone(),
                probe: dc.probe,
                configured_probe: dc.configured_probe,
                probe_nonce: dc.probe_nonce,
                endpoint_name: dc.endpoint_name.clone(),
            };
            cfg.tunnel.index = next_index;
            next_index += 1;
            let source = probe_source(&config.stable, &cfg)?;
            fresh.push(Some(Datacenter::new(cfg, &config.probe, source, now)?));
        }
        // Commit.
        let old_active = self.dcs.get(self.selector.active()).map(|d| d.name.clone());
        let old_pinned = self
            .selector
            .pinned()
            .and_then(|i| self.dcs.get(i))
            .map(|d| d.name.clone());
        let mut old: Vec<Option<Datacenter>> = self.dcs.drain(..).map(Some).collect();
        for d in old.iter().flatten() {
            if !plan.iter().any(|(dc, _)| dc.name == d.name) {
                report.removed.push(d.name.clone());
            }
        }
        for ((_, keep), built) in plan.iter().zip(fresh) {
            let d = match (keep, built) {
                (Some(i), _) => old.get_mut(*i).and_then(Option::take),
                (None, built) => built,
            };
            if let Some(mut d) = d {
                d.monitor.set_config(config.probe.clone(), now);
                self.dcs.push(d);
            }
        }
        let position = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| self.dcs.iter().position(|d| &d.name == n))
        };
        let active = position(&old_active);
        self.selector = Selector::renumbered(
            config.policy,
            now,
            active.unwrap_or(0),
            position(&old_pinned),
        );
        for (i, d) in self.dcs.iter_mut().enumerate() {
            d.monitor.set_intent(if Some(i) == active {
                Intent::Active
            } else {
                Intent::Standby
            });
            d.monitor.set_generation(self.generation);
        }
        self.recovery = None;
        self.awaiting_data = None;
        // names are resolved afresh (a lookup still in flight is answered to the new policy)
        self.resolver = resolver;
        self.lookups.clear();
        self.keeper.reconfigure(&config.keeper);
        self.after_health_changes(now, true);
        Ok(report)
    }

    fn keeper_stable(&self) -> StableAddresses {
        self.keeper.stable()
    }

    /// The client's stable addresses.
    pub fn stable(&self) -> StableAddresses {
        self.keeper.stable()
    }

    /// The process did not run for `gap` until `now` (suspend, SIGSTOP): the silence was ours,
    /// not the datacenters'. Probe state moves forward by `gap` (nothing is declared down for
    /// it), every tunnel is probed at once, switch-over recovery in progress is dropped, and
    /// sessions that expired meanwhile are re-established at the next
    /// [`Engine::handle_timeout`]. The engine notices a stall itself (see [`STALL`]); this is
    /// for a front end that knows of one the engine cannot see.
    pub fn resume(&mut self, now: Instant, gap: Duration) {
        for d in &mut self.dcs {
            d.monitor.resume(now, gap);
        }
        self.recovery = None;
        self.awaiting_data = None;
    }

    /// The local network changed (an address, a link, the default route): every gateway is
    /// probed at once, so each learns the client's new source from an authenticated datagram
    /// without waiting for the next probe interval.
    pub fn network_changed(&mut self, now: Instant) {
        for d in &mut self.dcs {
            d.monitor.probe_now(now);
        }
        // another resolver, other answers: every name is asked again now
        self.resolver.network_changed(now);
    }

    /// Sets a datacenter's endpoint (a resolved host name); its tunnel then sends there and
    /// accepts datagrams only from there.
    pub fn set_endpoint(&mut self, dc: DcId, endpoint: SocketAddr) -> Result<(), OperatorError> {
        let d = self.dcs.get_mut(dc.0).ok_or(OperatorError::Unknown)?;
        if d.tunnel.endpoint() != Some(endpoint) {
            d.tunnel.set_endpoint(endpoint);
        }
        Ok(())
    }

    /// Whether every datacenter is down (nothing alive to carry traffic).
    pub fn all_down(&self) -> bool {
        self.dcs
            .iter()
            .all(|d| d.monitor.health() == PathHealth::Down)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The client's switch generation now (carried by every probe; the network prefers the
    /// claim with the highest).
    pub fn generation(&self) -> u32 {
        self.generation
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
                drained: d.drained,
            })
            .collect()
    }

    /// Changes the addresses the local side uses (mapped to the stable ones); see
    /// [`Keeper::set_local`].
    pub fn set_local_addresses(&mut self, local: StableAddresses) {
        self.keeper.set_local(local);
    }

    /// The addresses the local side uses.
    pub fn local_addresses(&self) -> StableAddresses {
        self.keeper.local()
    }

    /// The smallest tunnel MTU (the local side's MTU).
    pub fn mtu(&self) -> u16 {
        self.keeper.mtu()
    }

    /// The session keeper's counters (local drops by reason, rewrites, flows, recovery).
    pub fn keeper_stats(&self) -> KeeperStats {
        self.keeper.stats()
    }

    /// Flows tracked now, and the table's cap.
    pub fn flows(&self) -> (usize, usize) {
        (self.keeper.flows().len(), self.keeper.flows().cap())
    }

    /// Heap bytes held by the flow table.
    pub fn flow_memory(&self) -> usize {
        self.keeper.flows().memory_bytes()
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
