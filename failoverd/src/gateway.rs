//! The gateway daemon: many clients on one UDP port, and a TUN device into the datacenter.
//!
//! One task owns the responder and every socket; it reads the clock once per wake-up.
//! Packets from the datacenter are routed to a client by cryptokey routing (the client whose
//! allowed IPs hold the destination).

use std::net::SocketAddr;

use anyhow::Context as _;
use serde_json::json;
use tokio::sync::mpsc;
use tunnel::{DropCounters, DropReason, Outcome, PeerConfig, Responder};

use crate::config::GatewayConfig;
use crate::control::{self, Command};
use crate::{clock, drops_json, net, Shutdown, BUFFER_LEN};

/// Runs the gateway until `shutdown` fires.
pub async fn run(config: GatewayConfig, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let tun = net::create_tun(&config.interface, config.mtu)?;
    let routes: Vec<_> = config
        .clients
        .iter()
        .flat_map(|c| c.allowed_ips.prefixes().to_vec())
        .collect();
    net::configure_interface(
        &config.interface,
        config.mtu,
        &config.address_hosts,
        &routes,
    )
    .await?;
    let socket = net::underlay_socket(config.listen_port)?;
    let dual_stack = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    let peers = config
        .clients
        .iter()
        .map(|c| PeerConfig {
            public_key: c.public_key,
            allowed_ips: c.allowed_ips.clone(),
            persistent_keepalive: (c.persistent_keepalive > 0).then_some(c.persistent_keepalive),
        })
        .collect();
    let mut responder = Responder::new(
        config.private_key.clone(),
        peers,
        config.handshake_rate_limit,
    )
    .context("building the WireGuard responder")?;
    let names: Vec<String> = config.clients.iter().map(|c| c.name.clone()).collect();

    let (control_tx, mut control_rx) = mpsc::channel(16);
    let _control = control::serve(&config.control_socket, control_tx)?;
    tracing::info!(
        interface = %config.interface,
        port = config.listen_port,
        clients = names.len(),
        public_key = %responder.public_key(),
        control = %config.control_socket.display(),
        "failoverd gateway ready"
    );

    let mut tun_buf = vec![0u8; BUFFER_LEN];
    let mut udp_buf = vec![0u8; BUFFER_LEN];
    let mut out = vec![0u8; BUFFER_LEN];
    let mut timer_sends: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut tun_drops = DropCounters::default();
    let mut datagrams: u64 = 0;
    let mut send_errors: u64 = 0;
    // The first timeout starts every handshake and arms every timer; after it, poll_timeout
    // always has a deadline, so control requests cannot keep pushing the first tick away.
    responder.handle_timeout(clock::now(), &mut out, |t| {
        timer_sends.push((t.to, t.datagram.to_vec()))
    });
    for (to, datagram) in timer_sends.drain(..) {
        if socket
            .send_to(&datagram, net::for_socket(to, dual_stack))
            .await
            .is_err()
        {
            send_errors += 1;
        }
    }
    loop {
        let deadline = responder
            .poll_timeout()
            .unwrap_or_else(|| clock::now() + clock::IDLE_WAKE);
        tokio::select! {
            read = tun.recv(&mut tun_buf) => {
                let n = read.context("reading from the TUN device")?;
                let Some(packet) = tun_buf.get(..n) else { continue };
                let Some(dst) = sessionkeeper::addresses(packet).map(|(_, d)| d) else {
                    tun_drops.add(DropReason::InnerMalformed);
                    continue;
                };
                let Some(peer) = responder.route(dst) else {
                    tun_drops.add(DropReason::NoRoute);
                    continue;
                };
                let Some(tunnel) = responder.peer_mut(peer) else { continue };
                if let Outcome::Transmit(t) = tunnel.encapsulate(packet, &mut out) {
                    if socket.send_to(t.datagram, net::for_socket(t.to, dual_stack)).await.is_err() {
                        send_errors += 1;
                    }
                }
            }
            read = socket.recv_from(&mut udp_buf) => {
                let Ok((n, from)) = read else { continue };
                datagrams += 1;
                let now = clock::now();
                let Some(datagram) = udp_buf.get(..n) else { continue };
                let (peer, outcome) = responder.handle_datagram(now, net::canonical(from), datagram, &mut out);
                match outcome {
                    Outcome::Deliver(packet) => {
                        if tun.send(packet).await.is_err() {
                            send_errors += 1;
                        }
                    }
                    Outcome::Transmit(t) => {
                        if socket.send_to(t.datagram, net::for_socket(t.to, dual_stack)).await.is_err() {
                            send_errors += 1;
                        }
                        if let Some(tunnel) = peer.and_then(|p| responder.peer_mut(p)) {
                            while let Some(t) = tunnel.poll_transmit(&mut out) {
                                if socket.send_to(t.datagram, net::for_socket(t.to, dual_stack)).await.is_err() {
                                    send_errors += 1;
                                }
                            }
                        }
                    }
                    Outcome::Done | Outcome::Dropped(_) => {}
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                responder.handle_timeout(clock::now(), &mut out, |t| timer_sends.push((t.to, t.datagram.to_vec())));
                for (to, datagram) in timer_sends.drain(..) {
                    if socket.send_to(&datagram, net::for_socket(to, dual_stack)).await.is_err() {
                        send_errors += 1;
                    }
                }
            }
            Some(request) = control_rx.recv() => {
                let answer = match request.command {
                    Command::Status => status(&responder, &names, &tun_drops, datagrams, send_errors),
                };
                let _ = request.reply.send(answer);
            }
            () = shutdown.wait() => {
                tracing::info!("shutting down");
                return Ok(());
            }
        }
    }
}

fn status(
    responder: &Responder,
    names: &[String],
    tun_drops: &DropCounters,
    datagrams: u64,
    send_errors: u64,
) -> serde_json::Value {
    let clients: Vec<_> = responder
        .peer_ids()
        .filter_map(|id| responder.peer(id).map(|t| (id, t)))
        .map(|(id, t)| {
            let stats = t.stats();
            json!({
                "name": names.get(id.0),
                "endpoint": t.endpoint().map(|e| e.to_string()),
                "established": t.is_established(),
                "tx_bytes": stats.tx_bytes,
                "rx_bytes": stats.rx_bytes,
                "handshakes": stats.handshakes,
                "allowed_ips": t.allowed_ips().prefixes().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "drops": drops_json(&stats.drops),
            })
        })
        .collect();
    json!({
        "v": 1,
        "ok": true,
        "mode": "gateway",
        "public_key": responder.public_key().to_string(),
        "clients": clients,
        "port_drops": drops_json(responder.port_drops()),
        "tun_drops": drops_json(tun_drops),
        "datagrams_received": datagrams,
        "send_errors": send_errors,
    })
}
