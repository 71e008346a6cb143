//! The gateway daemon: many clients on one UDP port, a TUN device into the datacenter, and the
//! claim of each client's stable address on the inside segment while that client is active here.
//!
//! One task owns the gateway engine, the sockets and the takeover; it reads the clock once per
//! wake-up. Every decision (which datagram belongs to whom, probe echo, when to claim or
//! release) is `engine::gateway`'s; this file only carries them out.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use control_proto::{Answer, Client, GatewayStatus, ProbesRefused, Status};
use engine::gateway::{
    Gateway, GatewayClient, GatewayConfig as EngineGatewayConfig, GatewayEvent, ReturnPath,
};
use engine::Batch;
use tokio::sync::mpsc;
use tunnel::{Outcome, PeerConfig, PeerId};

use crate::config::GatewayConfig;
use crate::net;
use crate::routing_daemon;
use crate::takeover::{Backends, Takeover};
use crate::tun::TunIo;
use runtime::control::{self, Command};
use runtime::metrics::{self, Exposition};
use runtime::notify::Notifier;
use runtime::underlay::{RecvBatch, Underlay};
use runtime::{clock, drop_counts, privileges, Shutdown, SignalRequest};

/// Datagrams handed out per `poll_transmit` call.
const BATCH: usize = 64;

/// The engine's view of the configured clients.
fn engine_clients(config: &GatewayConfig) -> Vec<GatewayClient> {
    config
        .clients
        .iter()
        .map(|c| GatewayClient {
            peer: PeerConfig {
                public_key: c.public_key,
                allowed_ips: c.allowed_ips.clone(),
                persistent_keepalive: (c.persistent_keepalive > 0)
                    .then_some(c.persistent_keepalive),
                preshared_key: c.preshared_key.clone(),
            },
            return_path: if c.claim_on_intent {
                ReturnPath::Claim
            } else {
                ReturnPath::Static
            },
        })
        .collect()
}

/// The addresses the gateway claims for a client: only single addresses (a client's wider
/// prefixes are routed by the operator).
fn claim_addresses(c: &crate::config::GatewayClient) -> Vec<IpAddr> {
    c.allowed_ips
        .prefixes()
        .iter()
        .filter(|p| p.len() == if p.addr().is_ipv4() { 32 } else { 128 })
        .map(|p| p.addr())
        .collect()
}

/// Why a reloaded gateway configuration needs a restart, if it does.
fn restart_needed(old: &GatewayConfig, new: &GatewayConfig) -> Option<&'static str> {
    if old.private_key.public_key() != new.private_key.public_key() {
        Some("gateway.private_key_file")
    } else if old.listen_port != new.listen_port {
        Some("gateway.listen_port")
    } else if old.address_hosts != new.address_hosts {
        Some("gateway.address")
    } else if old.interface != new.interface || old.mtu != new.mtu {
        Some("gateway.interface or gateway.mtu")
    } else if old.inside_interface != new.inside_interface {
        Some("gateway.inside_interface")
    } else if old.claim_backends != new.claim_backends {
        Some("gateway.claim")
    } else if old.handshake_rate_limit != new.handshake_rate_limit
        || old.claim_timeout != new.claim_timeout
    {
        Some("gateway.handshake_rate_limit or gateway.claim_timeout_ms")
    } else if old.control_socket != new.control_socket || old.operations != new.operations {
        Some("gateway.control_socket, control_group, metrics_listen or user")
    } else {
        None
    }
}

/// Re-reads `path` and applies its client list: unchanged clients keep their sessions and
/// claims; removed ones are released (the events are carried out by the caller's loop).
/// `names` and `claimable` grow with the new peer ids (ids are never reused).
fn reload(
    path: &Path,
    running: &mut GatewayConfig,
    gateway: &mut Gateway,
    names: &mut Vec<String>,
    claimable: &mut Vec<Vec<IpAddr>>,
) -> Answer {
    let new = match GatewayConfig::load(path) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("reload refused: {e}");
            return Answer::error(format!("{e}\n(the running configuration stays)"));
        }
    };
    if let Some(what) = restart_needed(running, &new) {
        let e = format!(
            "{what} changed: restart the gateway to apply it; the running configuration stays"
        );
        tracing::warn!("reload refused: {e}");
        return Answer::error(e);
    }
    let report = match gateway.reconfigure(engine_clients(&new)) {
        Ok(r) => r,
        Err(e) => return Answer::error(format!("{e}; the running configuration stays")),
    };
    let named = |names: &Vec<String>, ids: &[PeerId]| -> Vec<String> {
        ids.iter()
            .filter_map(|id| names.get(id.0).cloned())
            .collect()
    };
    let removed = named(names, &report.removed);
    let unchanged = named(names, &report.unchanged);
    // new ids are appended in the order of the new file's clients that were not kept
    let kept: Vec<&[u8; 32]> = report
        .unchanged
        .iter()
        .filter_map(|id| gateway.responder().peer(*id))
        .map(|t| t.peer_public_key().as_bytes())
        .collect();
    for c in new
        .clients
        .iter()
        .filter(|c| !kept.contains(&c.public_key.as_bytes()))
    {
        names.push(c.name.clone());
        claimable.push(claim_addresses(c));
    }
    let added = named(names, &report.added);
    tracing::info!(
        ?added,
        ?removed,
        unchanged = unchanged.len(),
        "configuration reloaded"
    );
    *running = new;
    Answer::Reload(control_proto::Reload {
        added,
        removed,
        changed: Vec::new(),
        unchanged,
    })
}

/// Runs the gateway until SIGTERM or SIGINT; SIGHUP reloads its client list from `path`.
pub async fn run(
    path: PathBuf,
    mut config: GatewayConfig,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    privileges::set_non_dumpable()?;
    let mut tun = TunIo::new(net::create_tun(&config.interface, config.mtu)?, config.mtu);
    net::configure_interface(&config.interface, config.mtu, &config.address_hosts, &[]).await?;
    let mut takeover = Takeover::new(
        &config.interface,
        &config.inside_interface,
        config.claim_backends,
    )
    .await?;
    let mut underlay = Underlay::bind(config.listen_port)?;
    let mut gateway = Gateway::new(EngineGatewayConfig {
        private_key: config.private_key.clone(),
        handshake_rate_limit: config.handshake_rate_limit,
        inner_addresses: config.address_hosts.iter().map(|(a, _)| *a).collect(),
        claim_timeout: config.claim_timeout,
        clients: engine_clients(&config),
    })
    .context("building the WireGuard responder")?;
    let mut claimable: Vec<Vec<IpAddr>> = config.clients.iter().map(claim_addresses).collect();
    // a gateway that was SIGKILLed (or lost power) left its claims in the kernel: they would
    // keep attracting clients that have moved on
    let all: Vec<IpAddr> = claimable.iter().flatten().copied().collect();
    let (stale_routes, stale_proxies) = takeover
        .clean_up(&all)
        .await
        .context("removing the claims a previous run left behind")?;
    let mut names: Vec<String> = config.clients.iter().map(|c| c.name.clone()).collect();

    let (control_tx, mut control_rx) = mpsc::channel(16);
    let access = control::Access {
        read_group: config
            .operations
            .control_group
            .as_ref()
            .map(|(_, gid)| *gid),
    };
    let _control = control::serve(&config.control_socket, access, control_tx.clone())?;
    if let Some(addr) = config.operations.metrics_listen {
        metrics::serve(addr, control_tx).await?;
    }
    if let Some((name, uid, gid)) = &config.operations.user {
        // claims write routes, neighbour entries and sysctls at run time; the raw sockets
        // for announcements are open already
        privileges::drop_to(*uid, *gid, &[caps::Capability::CAP_NET_ADMIN])
            .with_context(|| format!("becoming user {name}"))?;
        tracing::info!(user = %name, "running as {name} with CAP_NET_ADMIN only");
    }
    let mut notifier = Notifier::from_env(clock::now());
    tracing::info!(
        interface = %config.interface,
        inside = %config.inside_interface,
        port = config.listen_port,
        clients = names.len(),
        public_key = %gateway.responder().public_key(),
        control = %config.control_socket.display(),
        "failoverd gateway ready"
    );

    let mut rx = RecvBatch::new();
    let mut batch = Batch::for_datagrams(BATCH);
    let routing = config
        .routing_daemon_socket
        .clone()
        .map(|socket| (socket.clone(), routing_daemon::watch(socket)));
    let mut counters = Counters {
        stale_routes: u64::try_from(stale_routes).unwrap_or(u64::MAX),
        stale_proxies: u64::try_from(stale_proxies).unwrap_or(u64::MAX),
        ..Counters::default()
    };
    gateway.handle_timeout(clock::now());
    notifier.ready(&status_line(&gateway, &names));
    // the status line follows claims and releases (rebuilding it per datagram costs)
    let mut status_changes = 0;
    let result = loop {
        // every claim, release and announcement the engine asked for, then what it sends:
        // a probe's answer is released only once its claim is in place
        carry_out_all(
            &mut gateway,
            &claimable,
            &names,
            &mut takeover,
            &mut counters,
        )
        .await;
        loop {
            gateway.poll_transmit(&mut batch);
            if batch.is_empty() {
                break;
            }
            underlay.send_batch(&batch).await;
            batch.clear();
        }
        notifier.kick(clock::now());
        if notifier.enabled() && counters.claims + counters.releases != status_changes {
            status_changes = counters.claims + counters.releases;
            notifier.status(&status_line(&gateway, &names));
        }
        let deadline = gateway
            .poll_timeout()
            .into_iter()
            .chain(notifier.next_watchdog())
            .min()
            .unwrap_or_else(|| clock::now() + clock::IDLE_WAKE);
        tokio::select! {
            read = tun.recv() => {
                let n = match read.context("reading from the TUN device") {
                    Ok(n) => n,
                    Err(e) => break Err(e),
                };
                // a super-packet's segments, each sealed straight into the batch; the top of
                // the loop sends it, a GSO send per run
                for packet in tun.packets_mut(n) {
                    if batch.is_full() {
                        underlay.send_batch(&batch).await;
                        batch.clear();
                    }
                    batch.fill(|slot| {
                        gateway
                            .handle_inside_packet(packet, slot)
                            .map(|t| (t.to, t.datagram.len()))
                    });
                }
            }
            read = underlay.recv(&mut rx) => {
                if read.is_err() {
                    continue;
                }
                let now = clock::now();
                for (from, datagram) in rx.datagrams() {
                    counters.datagrams += 1;
                    let Ok(out) = tun.buffer(tunnel::min_buffer_len(datagram.len())).await else {
                        counters.send_errors += 1;
                        continue;
                    };
                    let base = out.as_ptr() as usize;
                    match gateway.handle_datagram(now, from, datagram, out) {
                        Outcome::Deliver(packet) => {
                            let (start, len) = (packet.as_ptr() as usize - base, packet.len());
                            tun.commit(start, len);
                        }
                        Outcome::Transmit(t) => underlay.send(t.to, t.datagram).await,
                        Outcome::Done | Outcome::Dropped(_) => {}
                    }
                }
                // what the datagrams carried, coalesced into as few writes as the offloads allow
                if tun.flush().await.is_err() {
                    counters.send_errors += 1;
                }
            }
            () = clock::sleep_until(deadline) => gateway.handle_timeout(clock::now()),
            Some(request) = control_rx.recv() => {
                counters.underlay_send_errors = underlay.send_errors();
                let answer = match request.command {
                    Command::Status => Answer::from(Status::Gateway(status(&gateway, &names, &counters, config.claim_backends, routing.as_ref()))),
                    Command::Clients => Answer::Clients(control_proto::ClientList { clients: client_list(&gateway, &names) }),
                    Command::Metrics => Answer::Metrics(control_proto::Metrics { text: metrics(&gateway, &names, &counters, config.claim_backends, routing.as_ref()).render() }),
                    Command::Reload => reload(&path, &mut config, &mut gateway, &mut names, &mut claimable),
                    _ => Answer::error("this is a gateway: it answers status, clients, metrics, reload"),
                };
                let _ = request.reply.send(answer);
            }
            signal = shutdown.next() => match signal {
                SignalRequest::Stop => {
                    tracing::info!("shutting down");
                    notifier.stopping();
                    break Ok(());
                }
                SignalRequest::Reload => {
                    let _ = reload(&path, &mut config, &mut gateway, &mut names, &mut claimable);
                }
            }
        }
    };
    // Give back every claimed address: Drop cannot, and a stale proxy entry would keep
    // attracting a client's return traffic to a gateway that no longer runs.
    for addrs in &claimable {
        for addr in addrs {
            if takeover.is_claimed(*addr) {
                if let Err(e) = takeover.release(*addr).await {
                    tracing::warn!(%addr, error = %e, "releasing a claim at shutdown failed");
                }
            }
        }
    }
    result
}

#[derive(Debug, Default)]
struct Counters {
    datagrams: u64,
    /// writes to the TUN device that failed
    send_errors: u64,
    /// sends on the underlay socket that failed (the socket counts them; copied when asked)
    underlay_send_errors: u64,
    claims: u64,
    releases: u64,
    claim_errors: u64,
    /// routes a previous run left behind, removed at start
    stale_routes: u64,
    /// proxy entries a previous run left behind, removed at start
    stale_proxies: u64,
}

/// Carries out every claim, release and announcement the engine asked for, and reports each
/// claim's result to it.
async fn carry_out_all(
    gateway: &mut Gateway,
    claimable: &[Vec<IpAddr>],
    names: &[String],
    takeover: &mut Takeover,
    counters: &mut Counters,
) {
    while let Some(event) = gateway.poll_event() {
        let (peer, what) = match event {
            GatewayEvent::Claim(p) => (p, Change::Claim),
            GatewayEvent::Release(p) => (p, Change::Release),
            GatewayEvent::Announce(p) => (p, Change::Announce),
        };
        let generation = gateway.generation(peer);
        let landed = carry_out(peer, what, generation, claimable, names, takeover, counters).await;
        if what == Change::Claim {
            gateway.claim_done(clock::now(), peer, landed);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Claim,
    Release,
    Announce,
}

/// Carries out one change for every address of `peer`; whether all of them succeeded.
async fn carry_out(
    peer: PeerId,
    what: Change,
    generation: u32,
    claimable: &[Vec<IpAddr>],
    names: &[String],
    takeover: &mut Takeover,
    counters: &mut Counters,
) -> bool {
    let name = names.get(peer.0).map_or("?", String::as_str);
    let mut all_ok = true;
    for addr in claimable.get(peer.0).into_iter().flatten() {
        let result = match what {
            Change::Claim => takeover.claim(*addr, generation).await,
            Change::Release => takeover.release(*addr).await,
            Change::Announce => {
                if takeover.is_claimed(*addr) {
                    let _ = takeover.announce(*addr);
                }
                continue;
            }
        };
        match result {
            Ok(()) if what == Change::Claim => {
                counters.claims += 1;
                tracing::info!(client = name, %addr, generation, "claimed client address");
            }
            Ok(()) => {
                counters.releases += 1;
                tracing::info!(client = name, %addr, "released client address");
            }
            Err(e) => {
                all_ok = false;
                counters.claim_errors += 1;
                let claim = what == Change::Claim;
                tracing::error!(client = name, %addr, claim, error = %format!("{e:#}"), "claim change failed");
            }
        }
    }
    all_ok
}

/// One line for systemd's `STATUS=`.
fn status_line(gateway: &Gateway, names: &[String]) -> String {
    let claimed: Vec<&str> = gateway
        .responder()
        .peer_ids()
        .filter(|id| gateway.claimed(*id))
        .filter_map(|id| names.get(id.0).map(String::as_str))
        .collect();
    if claimed.is_empty() {
        format!("{} clients, none claimed", names.len())
    } else {
        format!("{} clients; claimed: {}", names.len(), claimed.join(", "))
    }
}

/// The routing daemon's watch: its socket and what it last found.
type Routing = (PathBuf, routing_daemon::Shared);

fn routing_health(routing: Option<&Routing>) -> Option<(String, routing_daemon::Health)> {
    let (socket, shared) = routing?;
    let h = shared.lock().ok()?.clone();
    Some((socket.display().to_string(), h))
}

fn metrics(
    gateway: &Gateway,
    names: &[String],
    counters: &Counters,
    backends: Backends,
    routing: Option<&Routing>,
) -> Exposition {
    let mut e = Exposition::default();
    if let Some((_, h)) = routing_health(routing) {
        e.gauge(
            "failoverd_gateway_routing_daemon_up",
            "Whether the routing daemon answered its last check (1) or not (0).",
            &[],
            f64::from(u8::from(h.reachable)),
        );
        e.gauge(
            "failoverd_gateway_routing_daemon_bgp_established",
            "The routing daemon's BGP sessions that are Established.",
            &[],
            f64::from(h.bgp_established),
        );
        e.counter(
            "failoverd_gateway_routing_daemon_check_failures_total",
            "Checks of the routing daemon that failed.",
            &[],
            h.failures,
        );
    }
    let responder = gateway.responder();
    for id in responder.peer_ids() {
        let (Some(t), Some(name)) = (responder.peer(id), names.get(id.0)) else {
            continue;
        };
        let c = [("client", name.as_str())];
        let stats = t.stats();
        e.gauge(
            "failoverd_gateway_client_claimed",
            "1 while this gateway claims the client's addresses.",
            &c,
            f64::from(u8::from(gateway.claimed(id))),
        );
        e.gauge(
            "failoverd_gateway_client_established",
            "1 while the client has a session.",
            &c,
            f64::from(u8::from(t.is_established())),
        );
        e.counter(
            "failoverd_gateway_client_transmit_bytes_total",
            "Inner bytes sent to the client.",
            &c,
            stats.tx_bytes,
        );
        e.counter(
            "failoverd_gateway_client_receive_bytes_total",
            "Inner bytes received from the client.",
            &c,
            stats.rx_bytes,
        );
        e.counter(
            "failoverd_gateway_client_handshakes_total",
            "Completed handshakes.",
            &c,
            stats.handshakes,
        );
    }
    for (reason, n) in responder.port_drops().nonzero() {
        e.counter(
            "failoverd_gateway_port_drops_total",
            "Datagrams dropped at the port, by reason.",
            &[("reason", reason)],
            n,
        );
    }
    e.counter(
        "failoverd_gateway_probes_answered_total",
        "Client probes answered.",
        &[],
        gateway.probes_answered(),
    );
    // one claim is carried out by every backend in use
    for backend in backends.names() {
        e.counter(
            "failoverd_gateway_claims_total",
            "Addresses claimed, by claim backend.",
            &[("backend", backend)],
            counters.claims,
        );
        e.counter(
            "failoverd_gateway_releases_total",
            "Addresses released, by claim backend.",
            &[("backend", backend)],
            counters.releases,
        );
    }
    for (backend, n) in [
        ("route", counters.stale_routes),
        ("neighbour", counters.stale_proxies),
    ] {
        e.counter(
            "failoverd_gateway_stale_claims_removed_total",
            "Claims a previous run left behind, removed at start, by claim backend.",
            &[("backend", backend)],
            n,
        );
    }
    e.counter(
        "failoverd_gateway_claim_errors_total",
        "Claim changes that failed.",
        &[],
        counters.claim_errors,
    );
    e.counter(
        "failoverd_gateway_send_errors_total",
        "Sends that failed.",
        &[],
        counters.send_errors + counters.underlay_send_errors,
    );
    e
}

fn client_list(gateway: &Gateway, names: &[String]) -> Vec<Client> {
    let responder = gateway.responder();
    let now = clock::now();
    responder
        .peer_ids()
        .filter_map(|id| responder.peer(id).map(|t| (id, t)))
        .map(|(id, t)| {
            let stats = t.stats();
            Client {
                name: names.get(id.0).cloned().unwrap_or_default(),
                endpoint: t.endpoint(),
                established: t.is_established(),
                claimed: gateway.claimed(id),
                claim_generation: gateway.claimed(id).then(|| gateway.generation(id)),
                last_probe_ms_ago: gateway.last_probe(id).map(|p| {
                    u64::try_from(now.saturating_duration_since(p).as_millis()).unwrap_or(u64::MAX)
                }),
                tx_bytes: stats.tx_bytes,
                rx_bytes: stats.rx_bytes,
                handshakes: stats.handshakes,
                allowed_ips: t
                    .allowed_ips()
                    .prefixes()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                drops: drop_counts(&stats.drops),
            }
        })
        .collect()
}

fn status(
    gateway: &Gateway,
    names: &[String],
    counters: &Counters,
    backends: Backends,
    routing: Option<&Routing>,
) -> GatewayStatus {
    let responder = gateway.responder();
    let refusals = gateway.refusals();
    GatewayStatus {
        routing_daemon: routing_health(routing).map(|(socket, h)| control_proto::RoutingDaemon {
            socket,
            reachable: h.reachable,
            bgp_sessions: h.bgp_sessions,
            bgp_established: h.bgp_established,
            checks: h.checks,
            failures: h.failures,
            last_error: h.last_error,
        }),
        claim_backends: backends.names().into_iter().map(String::from).collect(),
        stale_claims_removed: counters.stale_routes + counters.stale_proxies,
        public_key: responder.public_key().to_string(),
        clients: client_list(gateway, names),
        port_drops: drop_counts(responder.port_drops()),
        tun_drops: drop_counts(gateway.inside_drops()),
        probes_answered: gateway.probes_answered(),
        probes_refused: ProbesRefused {
            malformed: refusals.malformed,
            not_request: refusals.not_request,
        },
        probes_stale: refusals.stale,
        claims: counters.claims,
        releases: counters.releases,
        claim_errors: counters.claim_errors,
        datagrams_received: counters.datagrams,
        send_errors: counters.send_errors + counters.underlay_send_errors,
    }
}
