//! What both client front ends (`failoverd` with its TUN, `vmm-shim` below a guest) share
//! above the engine: the engine's configuration from a client file, reloads, privileges, the
//! control answers (`status`, `tunnels`, `flows`, `events`, steering) and the metrics, and the
//! switch log. The loop that uses them is [`crate::drive`].

use std::path::Path;

use anyhow::Context as _;
use control_proto::{
    Answer, ClientStatus, Datacenter, FlowList, Health, KeeperStatus, LocalDrops, Reload, Steered,
    SwitchEvent,
};
use engine::{DatacenterConfig, Engine, EngineConfig, Event, Probe, StableAddresses};
use probe::PathHealth;
use rand_core::RngCore as _;

use crate::config::{ClientConfig, Endpoint, ProbeKind};
use crate::control::{self, Command};
use crate::metrics::Exposition;
use crate::{clock, drop_counts, privileges};

/// The engine's configuration from a client configuration file (the randomness the engine
/// has none of — probe nonces, ICMP identifiers — comes from the seed drawn here).
pub fn engine_config(config: &ClientConfig) -> EngineConfig {
    EngineConfig {
        private_key: config.private_key.clone(),
        stable: StableAddresses {
            v4: config.stable_v4,
            v6: config.stable_v6,
        },
        local: StableAddresses {
            v4: config.local_v4,
            v6: config.local_v6,
        },
        datacenters: config
            .datacenters
            .iter()
            .map(|d| DatacenterConfig {
                name: d.name.clone(),
                endpoint: match &d.endpoint {
                    Endpoint::Addr(a) => engine::Endpoint::Addr(*a),
                    Endpoint::Name { host, port } => engine::Endpoint::Name {
                        host: host.clone(),
                        port: *port,
                    },
                },
                public_key: d.public_key,
                allowed_ips: d.allowed_ips.clone(),
                persistent_keepalive: (d.persistent_keepalive > 0)
                    .then_some(d.persistent_keepalive),
                preshared_key: d.preshared_key.clone(),
                probe: match d.probe {
                    ProbeKind::Gateway => Probe::Gateway(d.probe_address),
                    ProbeKind::Icmp => Probe::Icmp(d.probe_address),
                },
            })
            .collect(),
        probe: config.probe.clone(),
        policy: config.policy,
        mtu: config.mtu(),
        max_flows: config.flow_table_size,
        switch_recovery: config.switch_recovery,
        routes: config.routes.clone(),
        seed: rand_core::OsRng.next_u64(),
        unix_time: std::time::Duration::from_millis(clock::unix_millis()),
    }
}

/// Why a reloaded configuration cannot be applied without a restart, if it cannot, for what
/// only the IO floor uses (the interface, its routes and address, sockets, privileges, the
/// fail mode's routes). What the engine cannot change — the stable address, the MTU, the flow
/// table — [`Engine::reconfigure`] refuses itself.
pub fn restart_needed(old: &ClientConfig, new: &ClientConfig) -> Option<&'static str> {
    if old.interface != new.interface {
        Some("client.interface")
    } else if old.routes != new.routes {
        Some("client.routes")
    } else if old.control_socket != new.control_socket {
        Some("client.control_socket")
    } else if old.operations != new.operations {
        Some("client.control_group, client.metrics_listen or client.user")
    } else if (old.local_v4, old.local_v6) != (new.local_v4, new.local_v6) {
        Some("client.local_address (the TUN's address)")
    } else if old.fail_mode != new.fail_mode {
        Some("client.fail_mode")
    } else {
        None
    }
}

/// Applies `new` to the running engine (see [`Engine::reconfigure`]) unless it needs a
/// restart; on success `running` becomes `new`. Returns the control answer.
pub fn apply_reload(
    engine: &mut Engine,
    running: &mut ClientConfig,
    new: ClientConfig,
    restart_only: impl Fn(&ClientConfig, &ClientConfig) -> Option<&'static str>,
) -> Answer {
    if let Some(what) = restart_only(running, &new) {
        let e = format!(
            "{what} changed: restart the daemon to apply it; the running configuration stays"
        );
        tracing::warn!("reload refused: {e}");
        return Answer::error(e);
    }
    match engine.reconfigure(engine_config(&new), clock::now()) {
        Ok(r) => {
            tracing::info!(
                added = ?r.added,
                removed = ?r.removed,
                changed = ?r.changed,
                unchanged = r.unchanged.len(),
                "configuration reloaded"
            );
            *running = new;
            Answer::Reload(Reload {
                added: r.added,
                removed: r.removed,
                changed: r.changed,
                unchanged: r.unchanged,
            })
        }
        Err(e) => {
            tracing::warn!("reload refused: {e}");
            Answer::error(format!("{e}; the running configuration stays"))
        }
    }
}

/// Re-reads the client configuration at `path` and applies it.
pub fn reload(path: &Path, engine: &mut Engine, running: &mut ClientConfig) -> Answer {
    match ClientConfig::load(path) {
        Ok(new) => apply_reload(engine, running, new, restart_needed),
        Err(e) => {
            tracing::warn!("reload refused: {e}");
            Answer::error(format!("{e}\n(the running configuration stays)"))
        }
    }
}

/// The control socket's access rules from the configuration.
pub fn access(config: &ClientConfig) -> control::Access {
    control::Access {
        read_group: config
            .operations
            .control_group
            .as_ref()
            .map(|(_, gid)| *gid),
    }
}

/// Becomes the configured user, keeping `CAP_NET_ADMIN` (a no-op without `user`).
pub fn drop_privileges(config: &ClientConfig) -> anyhow::Result<()> {
    if let Some((name, uid, gid)) = &config.operations.user {
        privileges::drop_to(*uid, *gid, &[caps::Capability::CAP_NET_ADMIN])
            .with_context(|| format!("becoming user {name}"))?;
        tracing::info!(user = %name, "running as {name} with CAP_NET_ADMIN only");
    }
    Ok(())
}

/// One line for systemd's `STATUS=`: where traffic goes and how the tunnels are.
pub fn status_line(engine: &Engine) -> String {
    let tunnels: Vec<String> = engine
        .status()
        .iter()
        .map(|d| {
            let drained = if d.drained { ", drained" } else { "" };
            format!("{} {}{drained}", d.name, d.health.label())
        })
        .collect();
    format!(
        "active {}; {}",
        engine.name(engine.active()),
        tunnels.join(", ")
    )
}

/// The answer to an operator command other than status, reload and metrics.
pub fn operate(engine: &mut Engine, command: &Command) -> Answer {
    let now = clock::now();
    let find = |engine: &Engine, name: &str| {
        engine
            .find(name)
            .ok_or_else(|| Answer::error(format!("no datacenter named '{name}'")))
    };
    let steered =
        |engine: &Engine, r: Result<(), engine::OperatorError>, what: &str, name: &str| match r {
            Ok(()) => {
                tracing::warn!(datacenter = name, "operator: {what}");
                Answer::Steered(Steered {
                    active: engine.name(engine.active()).to_owned(),
                })
            }
            Err(e) => Answer::error(format!("{name}: {e}")),
        };
    match command {
        Command::Tunnels => Answer::Tunnels(control_proto::TunnelList {
            tunnels: datacenters(engine),
        }),
        Command::Flows { limit } => {
            let flows = engine
                .flow_list(now, *limit)
                .into_iter()
                .map(|f| control_proto::Flow {
                    protocol: protocol_name(f.protocol),
                    remote: f.remote,
                    remote_port: f.remote_port,
                    local_port: f.local_port,
                    tunnel: engine.name(f.tunnel).to_owned(),
                    age_ms: millis(f.age),
                    idle_ms: millis(f.idle),
                    packets_out: f.packets_out,
                    packets_in: f.packets_in,
                    state: f.state.to_owned(),
                })
                .collect();
            Answer::Flows(FlowList {
                total: engine.flows().0 as u64,
                flows,
            })
        }
        Command::Events => Answer::Events(control_proto::EventList {
            events: switch_records(engine),
        }),
        Command::Switch(name) => match find(engine, name) {
            Ok(dc) => {
                let r = engine.switch_to(now, dc);
                steered(engine, r, "switch", name)
            }
            Err(e) => e,
        },
        Command::Drain(name) => match find(engine, name) {
            Ok(dc) => {
                let r = engine.set_drained(now, dc, true);
                steered(engine, r, "drain", name)
            }
            Err(e) => e,
        },
        Command::Undrain(name) => match find(engine, name) {
            Ok(dc) => {
                let r = engine.set_drained(now, dc, false);
                steered(engine, r, "undrain", name)
            }
            Err(e) => e,
        },
        Command::Clients => Answer::error("clients: this is a client; a gateway answers it"),
        Command::Status | Command::Reload | Command::Metrics => {
            Answer::error("internal: answered by the loop")
        }
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// Whole milliseconds, for the `_ms` fields that count them.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds with their fraction, for the `_ms` fields measured finer (RTT, detection,
/// stall).
fn fractional_millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn health(h: PathHealth) -> Health {
    match h {
        PathHealth::Up => Health::Up,
        PathHealth::Suspect => Health::Suspect,
        PathHealth::Down => Health::Down,
        PathHealth::Recovering => Health::Recovering,
    }
}

/// Every datacenter and its tunnel: the items of `status` and of `tunnels`.
fn datacenters(engine: &Engine) -> Vec<Datacenter> {
    engine
        .status()
        .into_iter()
        .map(|d| Datacenter {
            endpoint: d.endpoint,
            active: d.active,
            drained: d.drained,
            suppressed: d.suppressed,
            established: d.established,
            health: health(d.health),
            rtt_ms: d.srtt.map(fractional_millis),
            loss: d.loss,
            last_handshake_ms_ago: d.stats.since_last_handshake.map(millis),
            tx_bytes: d.stats.tx_bytes,
            rx_bytes: d.stats.rx_bytes,
            handshakes: d.stats.handshakes,
            probes_sent: d.probes.sent,
            probe_replies: d.probes.replies,
            probe_replies_refused: d.probes.refused.iter().sum::<u64>(),
            flaps: d.probes.flaps,
            drops: drop_counts(&d.stats.drops),
            name: d.name,
        })
        .collect()
}

/// The client's Prometheus metrics.
pub fn metrics(engine: &Engine, send_errors: u64) -> Exposition {
    let mut e = Exposition::default();
    for d in engine.status() {
        let dc = [("datacenter", d.name.as_str())];
        for state in [
            PathHealth::Up,
            PathHealth::Suspect,
            PathHealth::Down,
            PathHealth::Recovering,
        ] {
            e.gauge(
                "failoverd_tunnel_state",
                "1 for the tunnel's current health state.",
                &[("datacenter", d.name.as_str()), ("state", state.label())],
                f64::from(u8::from(d.health == state)),
            );
        }
        e.gauge(
            "failoverd_tunnel_active",
            "1 for the datacenter traffic uses now.",
            &dc,
            f64::from(u8::from(d.active)),
        );
        e.gauge(
            "failoverd_tunnel_drained",
            "1 while the operator has the datacenter drained.",
            &dc,
            f64::from(u8::from(d.drained)),
        );
        e.gauge(
            "failoverd_tunnel_established",
            "1 while the tunnel has a session.",
            &dc,
            f64::from(u8::from(d.established)),
        );
        if let Some(rtt) = d.srtt {
            e.gauge(
                "failoverd_tunnel_rtt_seconds",
                "Smoothed probe round-trip time.",
                &dc,
                rtt.as_secs_f64(),
            );
        }
        if let Some(loss) = d.loss {
            e.gauge(
                "failoverd_tunnel_probe_loss_ratio",
                "Probe loss over the last window.",
                &dc,
                loss,
            );
        }
        e.counter(
            "failoverd_tunnel_transmit_bytes_total",
            "Inner bytes sent into the tunnel.",
            &dc,
            d.stats.tx_bytes,
        );
        e.counter(
            "failoverd_tunnel_receive_bytes_total",
            "Inner bytes received from the tunnel.",
            &dc,
            d.stats.rx_bytes,
        );
        e.counter(
            "failoverd_tunnel_handshakes_total",
            "Completed handshakes.",
            &dc,
            d.stats.handshakes,
        );
        e.counter(
            "failoverd_tunnel_probes_sent_total",
            "Probes sent.",
            &dc,
            d.probes.sent,
        );
        e.counter(
            "failoverd_tunnel_probe_replies_total",
            "Probe replies accepted.",
            &dc,
            d.probes.replies,
        );
        for (reason, n) in d.stats.drops.nonzero() {
            e.counter(
                "failoverd_tunnel_drops_total",
                "Datagrams and packets dropped, by reason.",
                &[("datacenter", d.name.as_str()), ("reason", reason)],
                n,
            );
        }
    }
    for reason in probe::SwitchReason::ALL {
        let n = engine.switch_count(reason);
        e.counter(
            "failoverd_switches_total",
            "Switches of the active datacenter, by reason.",
            &[("reason", reason.label())],
            n,
        );
    }
    let k = engine.keeper_stats();
    for (m, n) in sessionkeeper::parse::Malformed::ALL.iter().zip(k.malformed) {
        e.counter(
            "failoverd_local_drops_total",
            "Local packets dropped, by reason.",
            &[("reason", m.label())],
            n,
        );
    }
    e.counter(
        "failoverd_local_drops_total",
        "Local packets dropped, by reason.",
        &[("reason", "source_not_local")],
        k.source_not_local,
    );
    for (reason, n) in engine.underlay_drops().nonzero() {
        e.counter(
            "failoverd_underlay_drops_total",
            "Underlay datagrams from no datacenter's endpoint, dropped.",
            &[("reason", reason)],
            n,
        );
    }
    let (flows, cap) = engine.flows();
    e.gauge(
        "failoverd_flows",
        "Flows the session keeper tracks.",
        &[],
        flows as f64,
    );
    e.gauge(
        "failoverd_flow_table_size",
        "The flow table's cap.",
        &[],
        cap as f64,
    );
    e.gauge(
        "failoverd_flow_memory_bytes",
        "Heap bytes of the flow table.",
        &[],
        engine.flow_memory() as f64,
    );
    e.counter(
        "failoverd_recoveries_total",
        "Switches that triggered switch-over recovery.",
        &[],
        k.recoveries,
    );
    e.counter(
        "failoverd_recovery_segments_total",
        "Data segments resent at switches.",
        &[],
        k.recovery_segments,
    );
    e.counter(
        "failoverd_recovery_acks_total",
        "ACKs resent at switches.",
        &[],
        k.recovery_acks,
    );
    e.counter(
        "failoverd_send_errors_total",
        "Writes to the underlay or TUN that failed.",
        &[],
        send_errors,
    );
    e
}

/// Logs an engine event: one structured line each (a switch names from, to, reason and
/// detection; the stall follows when the first data arrives through the new datacenter).
pub fn log_event(engine: &Engine, event: &Event) {
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
        } => tracing::warn!(
            from = engine.name(from),
            to = engine.name(to),
            reason = reason.label(),
            detection_ms = detection.map(|d| d.as_secs_f64() * 1e3),
            "switched datacenter"
        ),
        Event::AllDown => {
            tracing::warn!("every datacenter is down: nothing carries traffic")
        }
        Event::AnyUp => tracing::info!("a datacenter is alive again"),
        Event::EndpointResolved { dc, endpoint } => tracing::info!(
            datacenter = engine.name(dc),
            %endpoint,
            "endpoint resolved"
        ),
        Event::ResolveFailed { dc, ref error } => tracing::warn!(
            datacenter = engine.name(dc),
            error = %error,
            "resolving the endpoint failed; the last good address stays"
        ),
        Event::Resumed { gap } => tracing::warn!(
            gap_ms = gap.as_millis() as u64,
            "the process did not run (suspend or stop): resumed without blaming the datacenters"
        ),
        Event::Recovered { dc, stall } => tracing::info!(
            datacenter = engine.name(dc),
            stall_ms = stall.as_secs_f64() * 1e3,
            "data flows through the new datacenter"
        ),
    }
}

/// The engine's switch records for `events` and `status`, newest last: wall-clock time, from,
/// to, reason, detection and the stall each caused.
fn switch_records(engine: &Engine) -> Vec<SwitchEvent> {
    engine
        .switches()
        .map(|r| {
            SwitchEvent {
                // the same switch shows the same time in every answer
                unix_ms: clock::unix_millis_at(r.at),
                from: r.from.clone(),
                to: r.to.clone(),
                reason: r.reason.label().to_owned(),
                detection_ms: r.detection.map(fractional_millis),
                stall_ms: r.stall.map(fractional_millis),
            }
        })
        .collect()
}

/// The client's `status` answer: datacenters, drops, the session keeper, switches; `roaming`
/// and the fail mode are the loop's (see [`crate::drive`]).
pub fn status(
    engine: &Engine,
    send_errors: u64,
    roaming: control_proto::RoamingStatus,
    fail_mode: control_proto::FailMode,
) -> ClientStatus {
    let k = engine.keeper_stats();
    let (flows, flow_cap) = engine.flows();
    let stable = engine.stable();
    ClientStatus {
        active: engine.name(engine.active()).to_owned(),
        stable_address: stable
            .v4
            .map(std::net::IpAddr::V4)
            .into_iter()
            .chain(stable.v6.map(std::net::IpAddr::V6))
            .collect(),
        datacenters: datacenters(engine),
        fail_mode,
        local_drops: LocalDrops {
            source_not_local: k.source_not_local,
            malformed: sessionkeeper::parse::Malformed::ALL
                .iter()
                .zip(k.malformed)
                .map(|(m, n)| (m.label().to_owned(), n))
                .collect(),
        },
        inbound_not_for_us: k.not_for_us,
        sessionkeeper: KeeperStatus {
            flows: flows as u64,
            flow_table_size: flow_cap as u64,
            flow_memory_bytes: engine.flow_memory() as u64,
            flows_created: k.flows.created,
            flows_expired: k.flows.expired,
            flows_evicted_probation: k.flows.evicted_probation,
            flows_evicted_protected: k.flows.evicted_protected,
            mss_clamped: k.mss_clamped,
            quoted_rewritten: k.quoted_rewritten,
            udp6_zero_checksum: k.udp6_zero_checksum,
            recoveries: k.recoveries,
            recovery_segments: k.recovery_segments,
            recovery_acks: k.recovery_acks,
            recovery_over_budget: k.recovery_over_budget,
        },
        underlay_drops: drop_counts(engine.underlay_drops()),
        probe_replies_malformed: engine.probe_malformed(),
        switches: switch_records(engine),
        send_errors,
        roaming,
    }
}
