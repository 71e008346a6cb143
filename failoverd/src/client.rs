//! The client daemon: a TUN device with the stable (or local) address as the engine's
//! [`LocalLink`], driven by the one client loop ([`runtime::drive`]).
//!
//! What is the TUN's alone lives here: creating and addressing it, its routes, the fail-closed
//! blackhole routes and the fail-open withdrawal. Every protocol decision is the engine's.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use control_proto::{ClientStatus, Status};
use engine::{Engine, Event};
use runtime::client;
use runtime::config::{ClientConfig, FailMode};
use runtime::drive::{self, Flow, LocalLink, Transmitter};
use runtime::{clock, privileges, Shutdown};
use tunnel::{Outcome, Prefix};

use crate::net::{self, RouteKind};
use crate::tun::TunIo;

/// The TUN device as the client's local side.
struct TunLink {
    tun: TunIo,
    /// `interface` as configured
    name: String,
    /// its index, for routes
    index: u32,
    routes: Vec<Prefix>,
    fail_mode: FailMode,
    /// the configuration file, read again on reload
    path: PathBuf,
}

impl LocalLink for TunLink {
    type Node = Engine;
    /// packets the read was split into
    type Input = std::io::Result<usize>;

    fn describe(&self) -> String {
        format!("failoverd client on {}", self.name)
    }

    fn wg_interface(&self) -> Option<String> {
        Some(self.name.clone())
    }

    async fn recv(&mut self) -> Self::Input {
        self.tun.recv().await
    }

    async fn handle(
        &mut self,
        now: Instant,
        engine: &mut Engine,
        input: Self::Input,
        tx: &mut Transmitter,
    ) -> anyhow::Result<Flow> {
        let n = input.context("reading from the TUN device")?;
        // a super-packet's segments, each sealed straight into the batch the pass sends; a
        // read is one super-packet (one flow) or one packet, so only its last is kept whole
        // for switch-over recovery
        for (i, packet) in self.tun.packets_mut(n).enumerate() {
            let followed = i + 1 < n;
            tx.queue(
                |slot| match engine.handle_local_segment(now, packet, slot, followed) {
                    Ok(Some(t)) => Some((t.to, t.datagram.len())),
                    _ => None,
                },
            )
            .await;
        }
        Ok(Flow::Continue)
    }

    async fn handle_datagram(
        &mut self,
        now: Instant,
        engine: &mut Engine,
        from: SocketAddr,
        datagram: &[u8],
        tx: &mut Transmitter,
    ) {
        let out = match self
            .tun
            .buffer(tunnel::min_buffer_len(datagram.len()))
            .await
        {
            Ok(out) => out,
            Err(_) => {
                tx.count_send_error();
                return;
            }
        };
        let base = out.as_ptr() as usize;
        match engine.handle_datagram(now, from, datagram, out) {
            Outcome::Deliver(packet) => {
                let (start, len) = (packet.as_ptr() as usize - base, packet.len());
                self.tun.commit(start, len);
            }
            Outcome::Transmit(t) => tx.send(t.to, t.datagram).await,
            Outcome::Done | Outcome::Dropped(_) => {}
        }
    }

    async fn after_pass(&mut self, _engine: &mut Engine) {
        // what the pass decrypted, coalesced into as few writes as the offloads allow
        if self.tun.flush().await.is_err() {
            tracing::debug!("a write to the TUN device failed");
        }
    }

    async fn on_event(&mut self, _engine: &Engine, event: &Event) {
        let withdrawn = match event {
            Event::AllDown => true,
            Event::AnyUp => false,
            _ => return,
        };
        if self.fail_mode != FailMode::Open {
            return;
        }
        // fail open: while nothing carries traffic, what the TUN routes takes the uplink
        tracing::warn!(
            withdrawn,
            "fail open: every datacenter down; the tunnel's routes {}",
            if withdrawn {
                "are withdrawn"
            } else {
                "are back"
            }
        );
        if let Err(e) = net::set_routes(&self.routes, RouteKind::Tun(self.index), !withdrawn).await
        {
            tracing::error!("changing the tunnel's routes failed: {e:#}");
        }
    }

    fn status(&self, _engine: &Engine, mut client: ClientStatus) -> Status {
        // reads of the TUN the offload code could not split (each a whole super-packet)
        let unsplit = self.tun.malformed();
        if unsplit > 0 {
            client
                .local_drops
                .malformed
                .insert("tun_read_not_split".into(), unsplit);
        }
        Status::Client(client)
    }

    fn reload(&mut self, engine: &mut Engine, running: &mut ClientConfig) -> control_proto::Answer {
        client::reload(&self.path, engine, running)
    }

    async fn shutdown(&mut self) {
        if self.fail_mode == FailMode::Closed {
            // a deliberate stop: the user wants the traffic back on the uplink
            if let Err(e) = net::set_routes(&self.routes, RouteKind::Blackhole, false).await {
                tracing::warn!("removing the fail-closed routes failed: {e:#}");
            }
        }
    }
}

/// Runs the client until SIGTERM or SIGINT; SIGHUP reloads `path`.
pub async fn run(path: PathBuf, config: ClientConfig, signals: Shutdown) -> anyhow::Result<()> {
    privileges::set_non_dumpable()?;
    let mtu = config.mtu();
    let tun = TunIo::new(net::create_tun(&config.interface, mtu)?, mtu);
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
    let index = net::ifindex(&config.interface).unwrap_or(0);
    if config.fail_mode == FailMode::Closed {
        // what the TUN's routes carry is dropped, never sent out the uplink, also after a crash
        net::set_routes(&config.routes, RouteKind::Blackhole, true).await?;
    }
    let engine =
        Engine::new(client::engine_config(&config), clock::now()).context("building the engine")?;
    let link = TunLink {
        tun,
        name: config.interface.clone(),
        index,
        routes: config.routes.clone(),
        fail_mode: config.fail_mode,
        path,
    };
    drive::drive(engine, link, config, index, signals).await
}
