//! `vmm-shim`: the backend of a guest's NIC that keeps the guest's TCP connections alive across a
//! datacenter failure.
//!
//! The guest's link is a [`LocalLink`] of the one client loop ([`runtime::drive`]) that
//! `failoverd` runs with its TUN: the same engine, underlay, timers, control socket and
//! roaming, with [`GuestNet`] — and through it the engine — between the guest's frames and the
//! tunnels. The frames reach it through one of two front ends ([`frontend`]): QEMU's
//! `-netdev stream` socket, or a vhost-user-net backend whose virtqueue worker runs on its own
//! thread and hands frames over through bounded queues.

mod frontend;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use control_proto::{Answer, ClientStatus, GuestStatus, GuestTransport, ShimStatus, Status};
use engine::{Batch, Engine};
use runtime::client;
use runtime::config::{ClientConfig, ShimConfig};
use runtime::drive::{self, Flow, LocalLink, Node, Transmitter};
use runtime::{clock, Shutdown};
use sessionkeeper::StableAddresses;
use vmm_shim::guest::OUT_LEN;
use vmm_shim::wire::Mac;
use vmm_shim::{Action, GuestConfig, GuestNet};

use crate::frontend::{Input, Output, Receiver};

const USAGE: &str = "\
usage:
  vmm-shim stream --config FILE --fd N         serve QEMU -netdev stream on an inherited socket
  vmm-shim stream --config FILE --listen PATH  serve QEMU -netdev stream on a unix socket
  vmm-shim vhost-user --config FILE --socket PATH
                                               serve QEMU -netdev vhost-user (QEMU connects)
  vmm-shim check --config FILE                 validate a configuration
";

/// Which front end, and where.
#[derive(Debug)]
enum Frontend {
    StreamFd(i32),
    StreamListen(PathBuf),
    VhostUser(PathBuf),
}

fn parse_args(args: &[String]) -> Result<(Option<Frontend>, PathBuf), String> {
    let Some((mode, rest)) = args.split_first() else {
        return Err(USAGE.into());
    };
    let mut config = None;
    let mut fd = None;
    let mut listen = None;
    let mut socket = None;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let slot = match flag.as_str() {
            "--config" | "-c" => &mut config,
            "--fd" => &mut fd,
            "--listen" => &mut listen,
            "--socket" => &mut socket,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        };
        if slot.replace(value.clone()).is_some() {
            return Err(format!("{flag} given twice"));
        }
    }
    let config = PathBuf::from(config.ok_or_else(|| format!("--config is required\n{USAGE}"))?);
    let frontend = match (mode.as_str(), fd, listen, socket) {
        ("check", None, None, None) => None,
        ("stream", Some(fd), None, None) => Some(Frontend::StreamFd(
            fd.parse()
                .ok()
                .filter(|n| *n > 2)
                .ok_or_else(|| format!("--fd {fd:?}: give the inherited socket's number (> 2)"))?,
        )),
        ("stream", None, Some(path), None) => Some(Frontend::StreamListen(path.into())),
        ("vhost-user", None, None, Some(path)) => Some(Frontend::VhostUser(path.into())),
        _ => return Err(USAGE.into()),
    };
    Ok((frontend, config))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (frontend, path) = match parse_args(&args) {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("vmm-shim: {usage}");
            return ExitCode::from(2);
        }
    };
    let result = ShimConfig::load(&path)
        .map_err(anyhow::Error::from)
        .and_then(|config| match frontend {
            None => {
                println!("{}: ok", path.display());
                Ok(())
            }
            Some(frontend) => serve(path.clone(), config, frontend),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmm-shim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf, config: ShimConfig, frontend: Frontend) -> anyhow::Result<()> {
    runtime::init_logging();
    runtime::privileges::set_non_dumpable()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = Shutdown::new()?;
        let (rx, tx) = match &frontend {
            Frontend::StreamFd(fd) => frontend::stream_fd(*fd)?,
            Frontend::StreamListen(path) => frontend::stream_listen(path)?,
            Frontend::VhostUser(path) => frontend::vhost_user(path, config.guest.mac)?,
        };
        let mut engine_config = client::engine_config(&config.client);
        engine_config.keeper.local = StableAddresses::default();
        let engine = Engine::new(engine_config, clock::now()).context("building the engine")?;
        let net = NetNode(GuestNet::new(guest_config(&config), engine, clock::now()));
        let link = GuestLink {
            rx,
            tx,
            path,
            out: vec![0u8; OUT_LEN],
        };
        // the host's network changes are the shim's too (it shares the host's uplink)
        drive::drive(net, link, config.client, 0, shutdown).await
    })
}

fn guest_config(config: &ShimConfig) -> GuestConfig {
    let g = &config.guest;
    GuestConfig {
        mac: g.mac.map(Mac),
        address: g.address,
        prefix_len: g.prefix_len,
        gateway: g.gateway,
        dns: g.dns.clone(),
        prefix6: g.prefix6,
        lease_secs: g.lease_secs,
        ipv6: config.client.stable_v6.is_some(),
    }
}

/// The guest's link and the engine behind it, as the loop's node.
struct NetNode(GuestNet);

impl Node for NetNode {
    fn engine(&self) -> &Engine {
        self.0.engine()
    }
    fn engine_mut(&mut self) -> &mut Engine {
        self.0.engine_mut()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.0.handle_timeout(now)
    }
    fn poll_transmit(&mut self, now: Instant, batch: &mut Batch) {
        self.0.poll_transmit(now, batch)
    }
}

/// The guest's NIC, through one of the front ends, as the client's local side.
struct GuestLink {
    rx: Receiver,
    tx: Output,
    /// the configuration file, read again on reload
    path: PathBuf,
    /// frames and datagrams [`GuestNet`] writes
    out: Vec<u8>,
}

/// What woke the guest's link.
enum GuestInput {
    /// the receiving half produced something
    Input(Input),
    /// the guest's backlog can be written again
    Writable,
}

impl GuestLink {
    async fn on_guest_frame(
        net: &mut GuestNet,
        now: Instant,
        frame: &mut [u8],
        out: &mut [u8],
        guest: &mut Output,
        tx: &mut Transmitter,
    ) {
        match net.handle_guest_frame(now, frame, out) {
            Action::ToGuest(reply) => guest.send_frame(reply),
            Action::ToUnderlay(t) => tx.send(t.to, t.datagram).await,
            Action::None => {}
        }
    }
}

impl LocalLink for GuestLink {
    type Node = NetNode;
    type Input = GuestInput;

    fn describe(&self) -> String {
        format!("vmm-shim ({})", self.rx.describe())
    }

    async fn recv(&mut self) -> GuestInput {
        let has_pending = self.tx.has_pending();
        tokio::select! {
            input = self.rx.input() => GuestInput::Input(input),
            () = self.tx.writable(), if has_pending => GuestInput::Writable,
        }
    }

    async fn handle(
        &mut self,
        now: Instant,
        node: &mut NetNode,
        input: GuestInput,
        tx: &mut Transmitter,
    ) -> anyhow::Result<Flow> {
        let net = &mut node.0;
        match input {
            GuestInput::Writable => self.tx.flush(),
            GuestInput::Input(Input::Bytes(n)) => {
                let mut frames = self.rx.decode(n);
                while let Some(frame) = frames.next_frame() {
                    Self::on_guest_frame(net, now, frame, &mut self.out, &mut self.tx, tx).await;
                }
                if frames.desynced() {
                    tracing::warn!("the guest stream is out of step; dropping the connection");
                    self.rx.desync();
                    self.tx.detach();
                }
            }
            GuestInput::Input(Input::Frame(mut frame)) => {
                Self::on_guest_frame(net, now, &mut frame, &mut self.out, &mut self.tx, tx).await;
            }
            GuestInput::Input(Input::Connected(writer)) => {
                tracing::info!("guest link up");
                self.tx.attach(writer);
                net.link_reset(now);
            }
            GuestInput::Input(Input::Disconnected) => {
                tracing::warn!("guest link down");
                self.tx.detach();
            }
            GuestInput::Input(Input::Closed) => {
                tracing::info!("the VMM closed the guest link; exiting");
                return Ok(Flow::Exit);
            }
        }
        Ok(Flow::Continue)
    }

    async fn handle_datagram(
        &mut self,
        now: Instant,
        node: &mut NetNode,
        from: SocketAddr,
        datagram: &[u8],
        tx: &mut Transmitter,
    ) {
        match node.0.handle_datagram(now, from, datagram, &mut self.out) {
            Action::ToGuest(frame) => self.tx.send_frame(frame),
            Action::ToUnderlay(t) => tx.send(t.to, t.datagram).await,
            Action::None => {}
        }
    }

    async fn after_pass(&mut self, node: &mut NetNode) {
        while let Some(frame) = node.0.poll_guest_frame() {
            self.tx.send_frame(&frame);
        }
        if self.tx.has_pending() {
            self.tx.flush();
        }
    }

    fn status(&self, node: &NetNode, client: ClientStatus) -> Status {
        let net = &node.0;
        let s = net.stats();
        Status::Shim(ShimStatus {
            client,
            guest: GuestStatus {
                mac: net.guest_mac().map(|m| m.to_string()),
                addresses: net.guest_addresses(),
                rx_frames: s.rx_frames,
                tx_frames: s.tx_frames,
                to_engine: s.to_engine,
                arp_replies: s.arp_replies,
                dhcp_replies: s.dhcp_replies,
                router_advertisements: s.router_advertisements,
                neighbor_advertisements: s.neighbor_advertisements,
                drops: s.drops.nonzero().map(|(k, v)| (k.to_owned(), v)).collect(),
                link: GuestTransport {
                    receive: self.rx.status(),
                    send: self.tx.status(),
                },
            },
        })
    }

    /// Re-reads the shim's configuration and applies what can change at run time: everything
    /// the client's reload applies; the guest section and the client's TUN-free keys need a
    /// restart.
    fn reload(&mut self, node: &mut NetNode, running: &mut ClientConfig) -> Answer {
        let net = &mut node.0;
        match ShimConfig::load(&self.path) {
            Ok(new) if guest_config(&new) != *net.config() => Answer::error(
                "the [guest] section changed: restart vmm-shim to apply it; the running configuration stays",
            ),
            Ok(new) => {
                // the shim's local addresses are the guest's, not the file's
                let keep_local = net.engine().local_addresses();
                let answer = client::apply_reload(
                    net.engine_mut(),
                    running,
                    new.client,
                    client::restart_needed,
                );
                net.engine_mut().set_local_addresses(keep_local);
                answer
            }
            Err(e) => Answer::error(format!("{e}\n(the running configuration stays)")),
        }
    }

    async fn shutdown(&mut self) {
        self.rx.shutdown();
    }
}
