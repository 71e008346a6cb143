//! `vmm-shim`: the backend of a guest's NIC that keeps the guest's TCP connections alive across a
//! datacenter failure.
//!
//! The guest's link is a [`LocalLink`] of the one client loop ([`runtime::drive`]) that
//! `failoverd` runs with its TUN: the same engine, underlay, timers, control socket and
//! roaming, with [`GuestNet`] — and through it the engine — between the guest's frames and the
//! tunnels. The frames reach it through one of two front ends ([`frontend`]): QEMU's
//! `-netdev stream` socket, or a vhost-user-net backend whose virtqueue worker runs on its own
//! thread and hands frames over through bounded queues.

mod config;
mod frontend;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use control_proto::{Answer, ClientStatus, GuestStatus, GuestTransport, ShimStatus, Status};
use engine::{Batch, Engine};
use runtime::client;
use runtime::config::ClientConfig;
use runtime::drive::{self, Flow, LocalLink, Node, Transmitter};
use runtime::{clock, Shutdown};
use sessionkeeper::StableAddresses;
use vmm_shim::guest::OUT_LEN;
use vmm_shim::{Action, GuestConfig, GuestNet};
use wire::Mac;

use crate::config::ShimConfig;
use crate::frontend::{Input, Output, Receiver};

/// `--version`: the crate's version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("FAILOVER_GIT_REVISION"),
    ")"
);

/// The command line: usage errors name the argument and exit 2 (clap), a bad configuration or
/// a failed backend exits 1.
#[derive(Debug, Parser)]
#[command(
    name = "vmm-shim",
    version = VERSION,
    propagate_version = true,
    about = "The failover engine as the backend of a guest's NIC"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve QEMU's `-netdev stream` on an inherited socket (--fd) or a unix socket (--listen)
    Stream {
        #[command(flatten)]
        config: ConfigFile,
        #[command(flatten)]
        socket: StreamSocket,
    },
    /// Serve QEMU's `-netdev vhost-user` on a unix socket (QEMU connects)
    VhostUser {
        #[command(flatten)]
        config: ConfigFile,
        /// The vhost-user socket to listen on
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
    },
    /// Validate a configuration and exit
    Check {
        #[command(flatten)]
        config: ConfigFile,
    },
}

#[derive(Debug, clap::Args)]
struct ConfigFile {
    /// The shim's configuration file (TOML)
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

/// Where the stream front end finds QEMU: exactly one of the two.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct StreamSocket {
    /// The inherited socket's descriptor number (> 2)
    #[arg(long, value_name = "N", value_parser = inherited_fd)]
    fd: Option<i32>,
    /// The unix socket to listen on (QEMU connects)
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
}

/// `--fd`: a descriptor the shim inherited; 0, 1 and 2 are stdio, never the socket.
fn inherited_fd(value: &str) -> Result<i32, String> {
    value
        .parse()
        .ok()
        .filter(|n| *n > 2)
        .ok_or_else(|| "give the inherited socket's number (> 2)".to_owned())
}

/// Which front end, and where.
#[derive(Debug)]
enum Frontend {
    StreamFd(i32),
    StreamListen(PathBuf),
    VhostUser(PathBuf),
}

impl Mode {
    /// The front end to serve (none for `check`) and the configuration file.
    fn into_frontend(self) -> (Option<Frontend>, PathBuf) {
        match self {
            Mode::Stream { config, socket } => {
                let frontend = match socket {
                    StreamSocket { fd: Some(fd), .. } => Frontend::StreamFd(fd),
                    StreamSocket {
                        listen: Some(path), ..
                    } => Frontend::StreamListen(path),
                    // clap's group already refuses this; never let it fall through to `check`
                    StreamSocket { .. } => Cli::command()
                        .error(
                            clap::error::ErrorKind::MissingRequiredArgument,
                            "stream needs --fd N or --listen PATH",
                        )
                        .exit(),
                };
                (Some(frontend), config.config)
            }
            Mode::VhostUser { config, socket } => {
                (Some(Frontend::VhostUser(socket)), config.config)
            }
            Mode::Check { config } => (None, config.config),
        }
    }
}

fn main() -> ExitCode {
    let (frontend, path) = Cli::parse().mode.into_frontend();
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
        // the local addresses are the guest's, learnt from its link
        engine_config.local = StableAddresses::default();
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
    /// A frame from the guest: what it answers goes back to the guest at once; a packet for
    /// the underlay is sealed straight into the transmitter's batch (sent at the end of the
    /// pass, a GSO send per run).
    async fn on_guest_frame(
        net: &mut GuestNet,
        now: Instant,
        frame: &mut [u8],
        guest: &mut Output,
        tx: &mut Transmitter,
    ) {
        tx.queue(|slot| {
            let base = slot.as_ptr() as usize;
            let (to, start, len) = match net.handle_guest_frame(now, frame, slot) {
                Action::ToUnderlay(t) => {
                    (t.to, t.datagram.as_ptr() as usize - base, t.datagram.len())
                }
                Action::ToGuest(reply) => {
                    guest.send_frame(reply);
                    return None;
                }
                Action::None => return None,
            };
            // the batch keeps a datagram at the start of the room it offered
            if start != 0 {
                slot.copy_within(start..start.checked_add(len)?, 0);
            }
            Some((to, len))
        })
        .await;
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
                    Self::on_guest_frame(net, now, frame, &mut self.tx, tx).await;
                }
                if frames.desynced() {
                    tracing::warn!("the guest stream is out of step; dropping the connection");
                    self.rx.desync();
                    self.tx.detach();
                }
            }
            GuestInput::Input(Input::Frame(mut frame)) => {
                Self::on_guest_frame(net, now, &mut frame, &mut self.tx, tx).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Option<Frontend>, PathBuf), clap::Error> {
        Cli::try_parse_from(std::iter::once("vmm-shim").chain(args.iter().copied()))
            .map(|cli| cli.mode.into_frontend())
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_mode_and_front_end() {
        let front_end = |args: &[&str]| {
            let (frontend, config) = parse(args).unwrap();
            assert_eq!(config, PathBuf::from("vm.toml"), "{args:?}");
            frontend
        };
        let fd = front_end(&["stream", "--fd", "3", "--config", "vm.toml"]);
        assert!(matches!(fd, Some(Frontend::StreamFd(3))), "{fd:?}");
        match front_end(&["stream", "--listen", "q.sock", "-c", "vm.toml"]) {
            Some(Frontend::StreamListen(p)) => assert_eq!(p, PathBuf::from("q.sock")),
            other => panic!("{other:?}"),
        }
        match front_end(&["vhost-user", "--socket", "v.sock", "--config", "vm.toml"]) {
            Some(Frontend::VhostUser(p)) => assert_eq!(p, PathBuf::from("v.sock")),
            other => panic!("{other:?}"),
        }
        assert!(front_end(&["check", "--config", "vm.toml"]).is_none());
    }

    #[test]
    fn refusals_name_the_argument() {
        for (args, names) in [
            (&["stream", "--fd", "2", "-c", "x"][..], "--fd"),
            (&["stream", "--fd", "seven", "-c", "x"][..], "--fd"),
            (
                &["stream", "--fd", "3", "--listen", "p", "-c", "x"][..],
                "--listen",
            ),
            (&["stream", "-c", "x"][..], "--fd"),
            (&["vhost-user", "-c", "x"][..], "--socket"),
            (&["check"][..], "--config"),
            (&["check", "-c", "x", "--config", "y"][..], "--config"),
            (&["check", "-c", "x", "--socket", "y"][..], "--socket"),
            (&["serve", "-c", "x"][..], "serve"),
        ] {
            let err = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            assert!(text.contains(names), "{args:?}: {text}");
        }
    }
}
