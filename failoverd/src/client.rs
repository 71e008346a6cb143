//! The client daemon: a TUN device with the stable address, one UDP socket, and the engine.
//!
//! One task owns the engine and every socket; it reads the clock once per wake-up and passes
//! `now` down. All protocol decisions are the engine's.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use engine::{DatacenterConfig, Engine, EngineConfig, Event};
use probe::packet::ProbeTarget;
use probe::PathHealth;
use rand_core::RngCore as _;
use serde_json::json;
use sessionkeeper::{KeeperConfig, StableAddresses};
use tokio::sync::mpsc;
use tunnel::{EndpointPolicy, Outcome, TunnelConfig};

use crate::config::{ClientConfig, ProbeKind};
use crate::control::{self, Command};
use crate::net::Underlay;
use crate::{clock, drops_json, net, Shutdown, BUFFER_LEN};

/// The engine's configuration from a client configuration file: every datacenter's tunnel and
/// probe target (probe ids and nonces drawn here: the engine has no randomness), the session
/// keeper with the file's local addresses.
pub fn engine_config(config: &ClientConfig) -> EngineConfig {
    let datacenters = config
        .datacenters
        .iter()
        .enumerate()
        .map(|(i, d)| DatacenterConfig {
            probe: match d.probe {
                ProbeKind::Gateway => ProbeTarget::Gateway(d.probe_address),
                ProbeKind::Icmp => ProbeTarget::Icmp {
                    addr: d.probe_address,
                    id: (rand_core::OsRng.next_u32() & 0xffff) as u16,
                },
            },
            probe_nonce: rand_core::OsRng.next_u64(),
            name: d.name.clone(),
            tunnel: TunnelConfig {
                private_key: config.private_key.clone(),
                peer_public_key: d.public_key,
                persistent_keepalive: (d.persistent_keepalive > 0)
                    .then_some(d.persistent_keepalive),
                index: i as u32,
                allowed_ips: d.allowed_ips.clone(),
                endpoint: EndpointPolicy::Fixed(d.endpoint),
                keep_established: true,
            },
        })
        .collect();
    let stable = StableAddresses {
        v4: config.stable_v4,
        v6: config.stable_v6,
    };
    let mut keeper = KeeperConfig::new(stable, config.mtu());
    keeper.local = StableAddresses {
        v4: config.local_v4,
        v6: config.local_v6,
    };
    keeper.max_flows = config.flow_table_size;
    keeper.recovery = config.switch_recovery;
    EngineConfig {
        stable,
        datacenters,
        probe: config.probe.clone(),
        policy: config.policy,
        keeper,
    }
}

/// Runs the engine's due timers and sends what they produce.
pub async fn run_timers(engine: &mut Engine, underlay: &mut Underlay, out: &mut [u8]) {
    let mut sends: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    engine.handle_timeout(clock::now(), out, |t| {
        sends.push((t.to, t.datagram.to_vec()))
    });
    for (to, datagram) in sends {
        underlay.send(to, &datagram).await;
    }
}

/// Runs the client until `shutdown` fires.
pub async fn run(config: ClientConfig, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let mtu = config.mtu();
    let tun = net::create_tun(&config.interface, mtu)?;
    // The TUN carries the local address where one is configured (the session keeper maps it
    // to the stable one), else the stable address itself.
    let mut addresses: Vec<(IpAddr, u8)> = Vec::new();
    if let Some(a) = config.local_v4.or(config.stable_v4) {
        addresses.push((a.into(), 32));
    }
    if let Some(a) = config.local_v6.or(config.stable_v6) {
        addresses.push((a.into(), 128));
    }
    net::configure_interface(&config.interface, mtu, &addresses, &config.routes).await?;
    let mut underlay = Underlay::bind(0)?;
    let mut engine =
        Engine::new(engine_config(&config), clock::now()).context("building the engine")?;

    let (control_tx, mut control_rx) = mpsc::channel(16);
    let _control = control::serve(&config.control_socket, control_tx)?;
    tracing::info!(
        interface = %config.interface,
        mtu,
        datacenters = config.datacenters.len(),
        control = %config.control_socket.display(),
        "failoverd client ready"
    );

    let mut tun_buf = vec![0u8; BUFFER_LEN];
    let mut udp_buf = vec![0u8; BUFFER_LEN];
    let mut out = vec![0u8; BUFFER_LEN];
    let mut switches = SwitchLog::default();
    // The first timeout starts every handshake and arms every timer; after it, poll_timeout
    // always has a deadline, so control requests cannot keep pushing the first tick away.
    run_timers(&mut engine, &mut underlay, &mut out).await;
    loop {
        let deadline = engine
            .poll_timeout()
            .unwrap_or_else(|| clock::now() + clock::IDLE_WAKE);
        tokio::select! {
            read = tun.recv(&mut tun_buf) => {
                let n = read.context("reading from the TUN device")?;
                let Some(packet) = tun_buf.get_mut(..n) else { continue };
                if let Ok(Some(t)) = engine.handle_local_packet(clock::now(), packet, &mut out) {
                    underlay.send(t.to, t.datagram).await;
                }
            }
            read = underlay.recv_from(&mut udp_buf) => {
                let Ok((n, from)) = read else { continue };
                let Some(datagram) = udp_buf.get(..n) else { continue };
                match engine.handle_datagram(clock::now(), from, datagram, &mut out) {
                    Outcome::Deliver(packet) => {
                        if tun.send(packet).await.is_err() {
                            underlay.count_send_error();
                        }
                    }
                    Outcome::Transmit(t) => underlay.send(t.to, t.datagram).await,
                    Outcome::Done | Outcome::Dropped(_) => {}
                }
                // queued datagrams, and switch-over recovery once the new path answered
                while let Some(t) = engine.poll_transmit(&mut out) {
                    underlay.send(t.to, t.datagram).await;
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                run_timers(&mut engine, &mut underlay, &mut out).await;
            }
            Some(request) = control_rx.recv() => {
                let answer = match request.command {
                    Command::Status => {
                        serde_json::Value::Object(status(&engine, underlay.send_errors(), &switches))
                    }
                };
                let _ = request.reply.send(answer);
            }
            () = shutdown.wait() => {
                tracing::info!("shutting down");
                return Ok(());
            }
        }
        while let Some(event) = engine.poll_event() {
            switches.record(&engine, &event);
        }
    }
}

/// Most switches kept for `status`.
const SWITCH_LOG: usize = 64;

/// Logs every engine event, and keeps the last [`SWITCH_LOG`] switches for `status`.
#[derive(Debug, Default)]
pub struct SwitchLog {
    switches: VecDeque<serde_json::Value>,
}

impl SwitchLog {
    /// Logs `event`; a switch is also kept.
    pub fn record(&mut self, engine: &Engine, event: &Event) {
        match *event {
            Event::Established(dc) => {
                tracing::info!(datacenter = engine.name(dc), "tunnel established")
            }
            Event::Lost(dc) => tracing::warn!(datacenter = engine.name(dc), "tunnel session lost"),
            // A late probe (up ⇄ suspect) is routine on a loaded machine; only transitions
            // that change what the selector may use are worth an operator's attention.
            Event::Health { dc, from, to }
                if matches!(
                    (from, to),
                    (PathHealth::Up, PathHealth::Suspect) | (PathHealth::Suspect, PathHealth::Up)
                ) =>
            {
                tracing::debug!(
                    datacenter = engine.name(dc),
                    from = from.label(),
                    to = to.label(),
                    "health changed"
                )
            }
            Event::Health { dc, from, to } => tracing::info!(
                datacenter = engine.name(dc),
                from = from.label(),
                to = to.label(),
                "health changed"
            ),
            Event::Switched {
                from,
                to,
                reason,
                detection,
            } => {
                let detection_ms = detection.map(|d| d.as_secs_f64() * 1e3);
                tracing::warn!(
                    from = engine.name(from),
                    to = engine.name(to),
                    reason = reason.label(),
                    detection_ms,
                    "switched datacenter"
                );
                if self.switches.len() >= SWITCH_LOG {
                    self.switches.pop_front();
                }
                self.switches.push_back(json!({
                    "unix_ms": clock::unix_millis(),
                    "from": engine.name(from),
                    "to": engine.name(to),
                    "reason": reason.label(),
                    "detection_ms": detection_ms,
                }));
            }
        }
    }
}

/// The client's `status` answer: datacenters, drops, the session keeper, switches.
pub fn status(
    engine: &Engine,
    send_errors: u64,
    switches: &SwitchLog,
) -> serde_json::Map<String, serde_json::Value> {
    let k = engine.keeper_stats();
    let (flows, flow_cap) = engine.flows();
    let malformed: serde_json::Map<String, serde_json::Value> =
        sessionkeeper::parse::Malformed::ALL
            .iter()
            .zip(k.malformed)
            .map(|(m, n)| (m.label().to_owned(), n.into()))
            .collect();
    let datacenters: Vec<_> = engine
        .status()
        .into_iter()
        .map(|d| {
            json!({
                "name": d.name,
                "endpoint": d.endpoint.map(|e| e.to_string()),
                "active": d.active,
                "established": d.established,
                "tx_bytes": d.stats.tx_bytes,
                "rx_bytes": d.stats.rx_bytes,
                "handshakes": d.stats.handshakes,
                "since_last_handshake_ms": d.stats.since_last_handshake.map(|t| t.as_millis() as u64),
                "health": d.health.label(),
                "srtt_ms": d.srtt.map(|t| t.as_secs_f64() * 1e3),
                "loss": d.loss,
                "suppressed": d.suppressed,
                "probes_sent": d.probes.sent,
                "probe_replies": d.probes.replies,
                "probe_replies_refused": d.probes.refused.iter().sum::<u64>(),
                "flaps": d.probes.flaps,
                "drops": drops_json(&d.stats.drops),
            })
        })
        .collect();
    let status = json!({
        "v": 1,
        "ok": true,
        "mode": "client",
        "active": engine.name(engine.active()),
        "datacenters": datacenters,
        "local_drops": {"source_not_local": k.source_not_local, "malformed": malformed},
        "inbound_not_for_us": k.not_for_us,
        "sessionkeeper": {
            "flows": flows,
            "flow_table_size": flow_cap,
            "flow_memory_bytes": engine.flow_memory(),
            "flows_created": k.flows.created,
            "flows_expired": k.flows.expired,
            "flows_evicted_probation": k.flows.evicted_probation,
            "flows_evicted_protected": k.flows.evicted_protected,
            "mss_clamped": k.mss_clamped,
            "quoted_rewritten": k.quoted_rewritten,
            "udp6_zero_checksum": k.udp6_zero_checksum,
            "recoveries": k.recoveries,
            "recovery_segments": k.recovery_segments,
            "recovery_acks": k.recovery_acks,
            "recovery_over_budget": k.recovery_over_budget,
        },
        "underlay_drops": drops_json(engine.underlay_drops()),
        "probe_replies_malformed": engine.probe_malformed(),
        "switches": switches.switches,
        "send_errors": send_errors,
    });
    match status {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
