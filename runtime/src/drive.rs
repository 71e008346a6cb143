//! The one IO loop of a client: the engine between the underlay socket and a [`LocalLink`].
//!
//! `failoverd` (a TUN device) and `vmm-shim` (a guest's NIC) are two [`LocalLink`]s driven by
//! this same [`drive`]: the underlay, the timers, the control socket, metrics, sd_notify,
//! roaming (suspend, network changes, endpoint names) and signals are handled here once. A
//! link owns only what differs: how local packets arrive and leave, what its status adds, how
//! its configuration reloads and what it does when the daemon stops.
//!
//! The clock is read once per wake-up ([`clock::now`]) and passed down. After every wake-up,
//! in this order: the engine's datagrams are sent (batch after batch, until none is left), the
//! link finishes its pass, engine events are logged and shown to roaming and the link, and the
//! watchdog is kicked.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use control_proto::{Answer, ClientStatus, Status};
use engine::{Batch, Engine, Event};
use tokio::sync::mpsc;

use crate::client;
use crate::config::{ClientConfig, FailMode};
use crate::control::{self, Command};
use crate::notify::Notifier;
use crate::roaming::Roaming;
use crate::underlay::{RecvBatch, Underlay};
use crate::{clock, metrics, netwatch, uapi, Shutdown, SignalRequest};

/// Datagrams a [`Transmitter`] holds before it sends them: a 64 KiB TUN super-packet is about
/// 45 of them, and a GSO send carries up to 64.
const BATCH: usize = 64;

/// What carries the engine's local side: the engine itself (a TUN delivers IP packets) or a
/// layer over it (the guest's link, which speaks Ethernet, ARP, DHCP and NDP itself).
pub trait Node {
    /// The engine inside.
    fn engine(&self) -> &Engine;
    /// The engine inside, for operator commands and roaming.
    fn engine_mut(&mut self) -> &mut Engine;
    /// When [`Node::handle_timeout`] must run next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Runs the due timers.
    fn handle_timeout(&mut self, now: Instant);
    /// Adds the datagrams due now to `batch` (see [`Engine::poll_transmit`]).
    fn poll_transmit(&mut self, now: Instant, batch: &mut Batch);
}

impl Node for Engine {
    fn engine(&self) -> &Engine {
        self
    }
    fn engine_mut(&mut self) -> &mut Engine {
        self
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Engine::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Engine::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self, now: Instant, batch: &mut Batch) {
        Engine::poll_transmit(self, now, batch)
    }
}

/// Whether the loop goes on after a link's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// keep serving
    Continue,
    /// the local side is gone for good (the VMM closed the guest's link): stop cleanly
    Exit,
}

/// The underlay socket with the batch the engine fills.
#[derive(Debug)]
pub struct Transmitter {
    underlay: Underlay,
    batch: Batch,
}

impl Transmitter {
    /// Sends one datagram at once (the engine's answer to a packet or datagram just handled).
    pub async fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.underlay.send(to, datagram).await;
    }

    /// Lets `write` add a datagram to the batch (see [`Batch::fill`]), sending the batch first
    /// when it is full. What is queued goes out at the end of the loop's pass, a GSO send per
    /// run of equal datagrams.
    pub async fn queue(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> Option<(SocketAddr, usize)>,
    ) -> bool {
        if self.batch.is_full() {
            self.send_batch().await;
        }
        self.batch.fill(write)
    }

    /// Sends what the batch holds and empties it.
    async fn send_batch(&mut self) {
        if !self.batch.is_empty() {
            self.underlay.send_batch(&self.batch).await;
            self.batch.clear();
        }
    }

    /// Sends what was queued and everything `node` has to send now, batch after batch.
    pub async fn flush(&mut self, node: &mut impl Node, now: Instant) {
        loop {
            node.poll_transmit(now, &mut self.batch);
            if self.batch.is_empty() {
                return;
            }
            self.send_batch().await;
        }
    }

    /// Counts a failed write elsewhere on the data path (the TUN, the guest's link).
    pub fn count_send_error(&mut self) {
        self.underlay.count_send_error();
    }

    /// Writes that failed.
    pub fn send_errors(&self) -> u64 {
        self.underlay.send_errors()
    }
}

/// The local side of a client: a TUN device, or a guest's NIC. See the module docs.
#[allow(async_fn_in_trait)] // driven on one current-thread runtime: no Send bound wanted
pub trait LocalLink {
    /// What it carries the engine through.
    type Node: Node;
    /// What [`LocalLink::recv`] hands to [`LocalLink::handle`].
    type Input;

    /// What it is, for logs ("TUN failover0", "guest on a stream socket").
    fn describe(&self) -> String;

    /// The interface name `wg show` knows it by, if it has one: the loop then serves the
    /// read-only WireGuard configuration socket for it ([`crate::uapi`]).
    fn wg_interface(&self) -> Option<String> {
        None
    }

    /// Waits for the local side. Cancel-safe: another branch of the loop may win, and nothing
    /// read may be lost then.
    async fn recv(&mut self) -> Self::Input;

    /// Handles what [`LocalLink::recv`] returned: packets go into `node`, what it answers at
    /// once through `tx`.
    async fn handle(
        &mut self,
        now: Instant,
        node: &mut Self::Node,
        input: Self::Input,
        tx: &mut Transmitter,
    ) -> anyhow::Result<Flow>;

    /// Hands a datagram from the underlay to `node` and delivers what comes out locally.
    async fn handle_datagram(
        &mut self,
        now: Instant,
        node: &mut Self::Node,
        from: SocketAddr,
        datagram: &[u8],
        tx: &mut Transmitter,
    );

    /// The end of every pass of the loop, after the engine's datagrams were sent: deliver
    /// what the node queued for the local side.
    async fn after_pass(&mut self, _node: &mut Self::Node) {}

    /// Every engine event (after it was logged).
    async fn on_event(&mut self, _node: &Self::Node, _event: &Event) {}

    /// The `status` answer from the client's part and the link's own (a TUN adds nothing: a
    /// client's status; a guest's link makes it a shim's).
    fn status(&self, _node: &Self::Node, client: ClientStatus) -> Status {
        Status::Client(client)
    }

    /// Re-reads the configuration and applies it to `node`; on success `running` is the new
    /// client configuration. Returns the control answer.
    fn reload(&mut self, node: &mut Self::Node, running: &mut ClientConfig) -> Answer;

    /// A deliberate stop (SIGTERM, SIGINT) or the end of the local side: undo what must not
    /// outlive the daemon.
    async fn shutdown(&mut self) {}
}

/// Runs `node` between the underlay and `link` until a stop signal or the link's end: the one
/// client loop (see the module docs). `config` is the running client configuration (the
/// engine was built from it); `watch_ignore` is an interface index whose own changes are no
/// network change (the TUN's; 0 for none).
pub async fn drive<L: LocalLink>(
    mut node: L::Node,
    mut link: L,
    mut config: ClientConfig,
    watch_ignore: u32,
    mut signals: Shutdown,
) -> anyhow::Result<()> {
    // everything that needs privileges first: the daemon may drop them below
    let changes = match netwatch::watch(watch_ignore) {
        Ok(rx) => Some(rx),
        Err(e) => {
            tracing::warn!("not watching the network for changes: {e:#}");
            None
        }
    };
    let mut tx = Transmitter {
        underlay: Underlay::bind(0)?,
        batch: Batch::for_datagrams(BATCH),
    };
    let (control_tx, mut control_rx) = mpsc::channel(16);
    let _control = control::serve(
        &config.control_socket,
        client::access(&config),
        control_tx.clone(),
    )?;
    if let Some(addr) = config.operations.metrics_listen {
        metrics::serve(addr, control_tx).await?;
    }
    let (uapi_tx, mut uapi_rx) = mpsc::channel::<uapi::GetRequest>(4);
    let _uapi = link
        .wg_interface()
        .and_then(|name| match uapi::serve(&name, uapi_tx) {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::warn!("`wg show` will not see this client: {e:#}");
                None
            }
        });
    client::drop_privileges(&config)?;
    tracing::info!(
        datacenters = config.datacenters.len(),
        control = %config.control_socket.display(),
        "{} ready", link.describe()
    );
    let mut rx = RecvBatch::new();
    let mut notifier = Notifier::from_env(clock::now());
    // The first timeout starts every handshake and arms every timer; after it, poll_timeout
    // always has a deadline, so control requests cannot keep pushing the first tick away.
    let now = clock::now();
    node.handle_timeout(now);
    tx.flush(&mut node, now).await;
    notifier.ready(&client::status_line(node.engine()));
    let mut roaming = Roaming::new(changes);
    // One timer, reset only when the deadline moves (not a new Sleep per packet), and one
    // clock read per wake-up, handed to everything the pass does.
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    let mut now = clock::now();
    let result = loop {
        roaming.before_sleep(node.engine_mut());
        let deadline = node
            .poll_timeout()
            .into_iter()
            .chain(notifier.next_watchdog())
            .min()
            .unwrap_or(now + clock::IDLE_WAKE);
        if armed != Some(deadline) {
            sleep.as_mut().reset(clock::tokio_instant(deadline));
            armed = Some(deadline);
        }
        now = tokio::select! {
            input = link.recv() => {
                let now = clock::now();
                match link.handle(now, &mut node, input, &mut tx).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Exit) => break Ok(()),
                    Err(e) => break Err(e),
                }
                now
            }
            read = tx.underlay.recv(&mut rx) => {
                let now = clock::now();
                if read.is_ok() {
                    for (from, datagram) in rx.datagrams() {
                        link.handle_datagram(now, &mut node, from, datagram, &mut tx).await;
                    }
                }
                now
            }
            () = &mut sleep => {
                // after a stall the engine resumes first; missed timers then fire once
                let now = clock::now();
                node.handle_timeout(now);
                armed = None;
                now
            }
            event = roaming.next() => {
                let now = clock::now();
                roaming.handle(node.engine_mut(), event, now);
                now
            }
            Some(request) = control_rx.recv() => {
                let answer = match &request.command {
                    Command::Status => {
                        let fail_mode = match config.fail_mode {
                            FailMode::Closed => control_proto::FailMode::Closed,
                            FailMode::Open => control_proto::FailMode::Open,
                        };
                        let client = client::status(
                            node.engine(),
                            tx.send_errors(),
                            roaming.status(node.engine()),
                            fail_mode,
                        );
                        Answer::from(link.status(&node, client))
                    }
                    Command::Reload => {
                        link.reload(&mut node, &mut config)
                    }
                    Command::Metrics => Answer::Metrics(control_proto::Metrics {
                        text: client::metrics(node.engine(), tx.send_errors()).render(),
                    }),
                    other => client::operate(node.engine_mut(), other),
                };
                let _ = request.reply.send(answer);
                clock::now()
            }
            Some(reply) = uapi_rx.recv() => {
                let now = clock::now();
                let port = tx.underlay.local_addr().map_or(0, |a| a.port());
                let _ = reply.send(uapi::render(&config, node.engine(), port, now));
                now
            }
            signal = signals.next() => match signal {
                SignalRequest::Stop => {
                    tracing::info!("shutting down");
                    notifier.stopping();
                    break Ok(());
                }
                SignalRequest::Reload => {
                    link.reload(&mut node, &mut config);
                    clock::now()
                }
            }
        };
        tx.flush(&mut node, now).await;
        link.after_pass(&mut node).await;
        let mut changed = false;
        while let Some(event) = node.engine_mut().poll_event() {
            client::log_event(node.engine(), &event);
            link.on_event(&node, &event).await;
            changed = true;
        }
        notifier.kick(now);
        if changed && notifier.enabled() {
            // only when something happened: this runs after every packet
            notifier.status(&client::status_line(node.engine()));
        }
    };
    link.shutdown().await;
    result.context("the client loop")
}
