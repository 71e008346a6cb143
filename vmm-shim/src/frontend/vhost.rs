//! vhost-user-net: QEMU (`-netdev vhost-user`) shares the guest's memory and hands the shim the
//! virtio-net queues (0 = RX, to the guest; 1 = TX, from the guest).
//!
//! The rust-vmm crates (vhost-user-backend, vhost, virtio-queue, vm-memory) run the protocol
//! and the queue mechanics on their own threads; this module moves frames between the queues
//! and the IO loop, through bounded queues on both sides:
//! - TX: every available chain is copied **once** into a buffer of ours (virtio-queue's
//!   `Reader` walks and bounds-checks the chain once; nothing is read from guest memory again),
//!   its virtio-net header is checked, and the frame goes to the IO loop. Every head is
//!   returned, also for a dropped frame.
//! - RX: frames from the IO loop wait in a bounded backlog until the guest posts buffers.
//!
//! The guest is hostile: chains that are short, too long, outside guest memory, of the wrong
//! direction, or that ask for offloads never negotiated are dropped and counted; a corrupt
//! avail index stops the queue until the driver resets it (instead of spinning). An error is
//! never returned to the vhost worker (that would end it): everything is counted.
//!
//! One QEMU at a time: when it disconnects the next connection gets a fresh daemon. The
//! engine keeps running (and the tunnels warm) in between.

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use tokio::sync::mpsc;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{
    Error as DaemonError, VhostUserBackend, VhostUserDaemon, VringRwLock, VringState, VringT,
};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_shim::guest::MAX_FRAME;
use vmm_shim::virtio::{self, NetHeader, NET_HDR_LEN};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::Input;

type Mem = GuestMemoryMmap<()>;
type GuestMem = GuestMemoryAtomic<Mem>;

const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const NUM_QUEUES: usize = 2;
/// QEMU allows queue sizes up to 1024 for vhost-user.
const MAX_QUEUE_SIZE: usize = 1024;
/// Our own epoll token (0..=NUM_QUEUES belong to the library): frames for the guest queued.
const EV_RX_READY: u16 = NUM_QUEUES as u16 + 1;
/// Without VERSION_1 (legacy drivers) the header has no `num_buffers`.
const LEGACY_HDR_LEN: usize = 10;
/// Frames for the guest waiting for RX buffers, at most.
const RX_BACKLOG: usize = 512;
/// Frames from the guest waiting for the IO loop, at most.
const TX_CHANNEL: usize = 1024;
/// Chains handled per TX wake-up before giving the RX side and other events a turn.
const TX_BUDGET: usize = 256;

/// What the vhost side tells the IO loop.
#[derive(Debug)]
pub enum VhostEvent {
    /// a frame from the guest
    Frame(Vec<u8>),
    /// QEMU connected
    Connected,
    /// QEMU disconnected
    Disconnected,
}

macro_rules! counters {
    ($name:ident { $($field:ident),* $(,)? }) => {
        #[derive(Debug, Default, Clone, Copy)]
        struct $name { $($field: u64,)* }
        impl $name {
            fn counts(&self) -> control_proto::Counts {
                [$((stringify!($field), self.$field),)*]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect()
            }
        }
    };
}

counters!(Counters {
    connections,
    tx_frames,
    tx_short,
    tx_too_long,
    tx_offload,
    tx_bad_chain,
    tx_wrong_direction,
    tx_queue_full,
    rx_frames,
    rx_no_room,
    rx_bad_chain,
    rx_backlog_full,
    bad_head,
    queue_broken,
    early_ring_enables,
});

#[derive(Debug)]
struct Inner {
    mem: GuestMem,
    hdr_len: usize,
    rx_backlog: VecDeque<Vec<u8>>,
    broken: [bool; NUM_QUEUES],
    counters: Counters,
}

/// The backend shared by the vhost threads and the IO loop.
#[derive(Debug)]
struct NetBackend {
    mac: Option<[u8; 6]>,
    inner: Mutex<Inner>,
    rx_ready: EventConsumer,
    rx_notify: EventNotifier,
    to_loop: mpsc::Sender<VhostEvent>,
}

/// The receiving half: events from the vhost threads.
#[derive(Debug)]
pub struct VhostRx {
    events: mpsc::Receiver<VhostEvent>,
    backend: Arc<NetBackend>,
    path: Option<PathBuf>,
}

/// The sending half: the RX backlog.
#[derive(Debug)]
pub struct VhostTx {
    backend: Arc<NetBackend>,
}

/// Why a chain's frame was not used.
#[derive(Debug, Clone, Copy)]
enum ChainDrop {
    BadChain,
    WrongDirection,
    Short,
    TooLong,
    Offload,
    NoRoom,
}

impl NetBackend {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic on another thread while holding the lock leaves counters and queues that are
        // still consistent (every update is a single step): keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_tx_drop(c: &mut Counters, d: ChainDrop) {
        match d {
            ChainDrop::BadChain => c.tx_bad_chain += 1,
            ChainDrop::WrongDirection => c.tx_wrong_direction += 1,
            ChainDrop::Short => c.tx_short += 1,
            ChainDrop::TooLong => c.tx_too_long += 1,
            ChainDrop::Offload => c.tx_offload += 1,
            ChainDrop::NoRoom => {}
        }
    }

    fn process_tx(&self, inner: &mut Inner, vring: &VringRwLock) {
        let q = usize::from(TX_QUEUE);
        if inner.broken.get(q).copied().unwrap_or(true) {
            return;
        }
        let guard = inner.mem.memory();
        let mem: &Mem = &guard;
        let hdr_len = inner.hdr_len;
        let mut vr = vring.get_mut();
        if !vr.get_queue().ready() || !vr.is_enabled() {
            return;
        }
        let mut used = false;
        let mut handled = 0;
        'outer: loop {
            let _ = vr.disable_notification();
            while handled < TX_BUDGET {
                let chain = match pop_chain(&mut vr, mem) {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(()) => {
                        mark_broken(inner, q);
                        break 'outer;
                    }
                };
                handled += 1;
                let head = chain.head_index();
                match read_tx_chain(mem, chain, hdr_len) {
                    Ok(frame) => match self.to_loop.try_send(VhostEvent::Frame(frame)) {
                        Ok(()) => inner.counters.tx_frames += 1,
                        Err(_) => inner.counters.tx_queue_full += 1,
                    },
                    Err(d) => Self::count_tx_drop(&mut inner.counters, d),
                }
                // the device wrote nothing: used length 0, also for a dropped frame
                if vr.add_used(head, 0).is_err() {
                    inner.counters.bad_head += 1;
                }
                used = true;
            }
            if handled >= TX_BUDGET {
                // more may wait: come back after the other events had their turn
                let _ = self.rx_notify.notify();
                break;
            }
            match vr.enable_notification() {
                Ok(true) => continue,
                _ => break,
            }
        }
        if used && vr.needs_notification().unwrap_or(true) {
            let _ = vr.signal_used_queue();
        }
    }

    fn process_rx(&self, inner: &mut Inner, vring: &VringRwLock) {
        let q = usize::from(RX_QUEUE);
        if inner.broken.get(q).copied().unwrap_or(true) || inner.rx_backlog.is_empty() {
            return;
        }
        let guard = inner.mem.memory();
        let mem: &Mem = &guard;
        let hdr_len = inner.hdr_len;
        let mut vr = vring.get_mut();
        if !vr.get_queue().ready() || !vr.is_enabled() {
            return; // frames stay; the ring's enable event calls again
        }
        let mut used = false;
        loop {
            while let Some(frame) = inner.rx_backlog.front() {
                let chain = match pop_chain(&mut vr, mem) {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(()) => {
                        mark_broken(inner, q);
                        inner.rx_backlog.clear();
                        break;
                    }
                };
                let head = chain.head_index();
                let len = match write_rx_chain(mem, chain, hdr_len, frame) {
                    Ok(n) => {
                        inner.counters.rx_frames += 1;
                        n
                    }
                    Err(ChainDrop::NoRoom) => {
                        inner.counters.rx_no_room += 1;
                        0
                    }
                    Err(_) => {
                        inner.counters.rx_bad_chain += 1;
                        0
                    }
                };
                inner.rx_backlog.pop_front();
                if vr.add_used(head, len).is_err() {
                    inner.counters.bad_head += 1;
                }
                used = true;
            }
            if inner.rx_backlog.is_empty() || inner.broken.get(q).copied().unwrap_or(true) {
                break;
            }
            // out of buffers with frames waiting: ask for a kick, and re-check the race
            match vr.enable_notification() {
                Ok(true) => continue,
                _ => break,
            }
        }
        if used && vr.needs_notification().unwrap_or(true) {
            let _ = vr.signal_used_queue();
        }
    }
}

fn mark_broken(inner: &mut Inner, q: usize) {
    if let Some(b) = inner.broken.get_mut(q) {
        if !*b {
            inner.counters.queue_broken += 1;
            tracing::warn!(
                queue = q,
                "the guest corrupted a virtqueue; it stays stopped until reset"
            );
        }
        *b = true;
    }
}

/// The next available chain; `Err` when the queue is unusable (not ready, corrupt avail index).
fn pop_chain<'m>(
    vr: &mut VringState<GuestMem>,
    mem: &'m Mem,
) -> Result<Option<DescriptorChain<&'m Mem>>, ()> {
    match vr.get_queue_mut().iter(mem) {
        Ok(mut it) => Ok(it.next()),
        Err(_) => Err(()),
    }
}

/// Copies one TX chain (header, then frame) out of guest memory, once, and checks it.
fn read_tx_chain(
    mem: &Mem,
    chain: DescriptorChain<&Mem>,
    hdr_len: usize,
) -> Result<Vec<u8>, ChainDrop> {
    if chain.clone().writable().next().is_some() {
        return Err(ChainDrop::WrongDirection);
    }
    let mut r = chain.reader(mem).map_err(|_| ChainDrop::BadChain)?;
    let total = r.available_bytes();
    if total < hdr_len + 14 {
        return Err(ChainDrop::Short);
    }
    if total - hdr_len > MAX_FRAME {
        return Err(ChainDrop::TooLong);
    }
    let mut hdr = [0u8; NET_HDR_LEN];
    r.read_exact(hdr.get_mut(..hdr_len).ok_or(ChainDrop::Short)?)
        .map_err(|_| ChainDrop::BadChain)?;
    NetHeader::parse_tx(&hdr).map_err(|_| ChainDrop::Offload)?;
    let mut frame = vec![0u8; total - hdr_len];
    r.read_exact(&mut frame).map_err(|_| ChainDrop::BadChain)?;
    Ok(frame)
}

/// Writes the header (`num_buffers` = 1) and `frame` into one RX chain; returns the length.
fn write_rx_chain(
    mem: &Mem,
    chain: DescriptorChain<&Mem>,
    hdr_len: usize,
    frame: &[u8],
) -> Result<u32, ChainDrop> {
    if chain.clone().readable().next().is_some() {
        return Err(ChainDrop::WrongDirection);
    }
    let mut w = chain.writer(mem).map_err(|_| ChainDrop::BadChain)?;
    if w.available_bytes() < hdr_len + frame.len() {
        return Err(ChainDrop::NoRoom);
    }
    let hdr = virtio::rx_header(1);
    w.write_all(hdr.get(..hdr_len).ok_or(ChainDrop::BadChain)?)
        .map_err(|_| ChainDrop::BadChain)?;
    w.write_all(frame).map_err(|_| ChainDrop::BadChain)?;
    u32::try_from(hdr_len + frame.len()).map_err(|_| ChainDrop::NoRoom)
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        // No offloads and no mergeable buffers: frames are whole, checksums finished, and one
        // frame fits one guest RX buffer. MAC and STATUS are QEMU's to emulate; harmless here.
        // VHOST_USER_F_PROTOCOL_FEATURES: QEMU's vhost-user-net does not start without it
        // (see vhost_relay for the ordering it brings).
        1u64 << VIRTIO_F_VERSION_1
            | 1u64 << VIRTIO_RING_F_EVENT_IDX
            | 1u64 << VIRTIO_NET_F_MAC
            | 1u64 << VIRTIO_NET_F_STATUS
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        self.lock().hdr_len = if features & (1u64 << VIRTIO_F_VERSION_1) != 0 {
            NET_HDR_LEN
        } else {
            LEGACY_HDR_LEN
        };
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::empty()
    }

    fn set_event_idx(&self, _enabled: bool) {
        // the library sets it on every queue itself
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // virtio_net_config: mac, status (link up), max_virtqueue_pairs
        let mut cfg = [0u8; 10];
        if let Some(mac) = self.mac {
            cfg[..6].copy_from_slice(&mac);
        }
        cfg[6..8].copy_from_slice(&1u16.to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        let start = offset as usize;
        start
            .checked_add(size as usize)
            .and_then(|end| cfg.get(start..end))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        self.lock().mem = mem;
        Ok(())
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // the driver reset the queue: it gets a fresh start
        if let Some(b) = self.lock().broken.get_mut(queue_index as usize) {
            *b = false;
        }
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // without it the worker never leaves epoll and dropping a daemon hangs
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        let (Some(rx), Some(tx)) = (
            vrings.get(usize::from(RX_QUEUE)),
            vrings.get(usize::from(TX_QUEUE)),
        ) else {
            return Ok(());
        };
        let mut inner = self.lock();
        match device_event {
            RX_QUEUE => self.process_rx(&mut inner, rx),
            TX_QUEUE => self.process_tx(&mut inner, tx),
            EV_RX_READY => {
                let _ = self.rx_ready.consume();
                self.process_rx(&mut inner, rx);
                self.process_tx(&mut inner, tx);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Listens at `path` (mode 0600) and serves one QEMU after another on a thread of its own.
pub fn serve(path: &Path, mac: Option<[u8; 6]>) -> anyhow::Result<(VhostRx, VhostTx)> {
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another process serves {}; pick another path",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("listening at {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting 0600 on {}", path.display()))?;
    let (rx_ready, rx_notify) =
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC)
            .context("creating an eventfd")?;
    let (to_loop, events) = mpsc::channel(TX_CHANNEL);
    let backend = Arc::new(NetBackend {
        mac,
        inner: Mutex::new(Inner {
            mem: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
            hdr_len: NET_HDR_LEN,
            rx_backlog: VecDeque::new(),
            broken: [false; NUM_QUEUES],
            counters: Counters::default(),
        }),
        rx_ready,
        rx_notify,
        to_loop,
    });
    let worker = backend.clone();
    let private = path.with_file_name(format!(
        ".{}.backend",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("vhost")
    ));
    std::thread::Builder::new()
        .name("vhost-user".into())
        .spawn(move || serve_connections(&listener, &private, &worker))
        .context("starting the vhost-user thread")?;
    Ok((
        VhostRx {
            events,
            backend: backend.clone(),
            path: Some(path.to_path_buf()),
        },
        VhostTx { backend },
    ))
}

/// Hands the vhost crate one end of a fresh connection to `private` (a listening socket that
/// lives only while it is accepted), and returns the other end.
fn backend_connection(
    daemon: &mut VhostUserDaemon<Arc<NetBackend>>,
    private: &Path,
) -> anyhow::Result<std::os::unix::net::UnixStream> {
    let mut listener = Listener::new(private, true)
        .map_err(|e| anyhow::anyhow!("listening at {}: {e}", private.display()))?;
    let ours = std::os::unix::net::UnixStream::connect(private)
        .with_context(|| format!("connecting to {}", private.display()))?;
    let _ = std::fs::remove_file(private);
    daemon
        .start(&mut listener)
        .map_err(|e| anyhow::anyhow!("starting the vhost-user handler: {e}"))?;
    Ok(ours)
}

/// One daemon per QEMU connection, forever (the thread ends with the process). QEMU's stream
/// goes through [`vhost_relay`](super::vhost_relay) to the daemon.
fn serve_connections(
    listener: &std::os::unix::net::UnixListener,
    private: &Path,
    backend: &Arc<NetBackend>,
) {
    loop {
        let qemu = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a vhost-user connection failed");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        {
            let mut inner = backend.lock();
            inner.mem = mem.clone();
            inner.broken = [false; NUM_QUEUES];
            inner.hdr_len = NET_HDR_LEN;
        }
        let mut daemon = match VhostUserDaemon::new("vmm-shim".into(), backend.clone(), mem) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "creating the vhost-user daemon failed");
                return;
            }
        };
        let registered = daemon.get_epoll_handlers().first().map(|h| {
            h.register_listener(
                backend.rx_ready.as_raw_fd(),
                EventSet::IN,
                u64::from(EV_RX_READY),
            )
        });
        if !matches!(registered, Some(Ok(()))) {
            tracing::error!("registering the RX eventfd with the vhost worker failed");
            return;
        }
        let ours = match backend_connection(&mut daemon, private) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "a vhost-user connection failed to start");
                continue;
            }
        };
        backend.lock().counters.connections += 1;
        if backend
            .to_loop
            .blocking_send(VhostEvent::Connected)
            .is_err()
        {
            return;
        }
        let held = || backend.lock().counters.early_ring_enables += 1;
        if let Err(e) = super::vhost_relay::relay(qemu, ours, held) {
            tracing::warn!(error = %e, "the vhost-user relay ended");
        }
        match daemon.wait() {
            Ok(())
            | Err(DaemonError::HandleRequest(
                VhostUserError::Disconnected | VhostUserError::PartialMessage,
            )) => {}
            Err(e) => tracing::warn!(error = %e, "the vhost-user connection ended"),
        }
        if backend
            .to_loop
            .blocking_send(VhostEvent::Disconnected)
            .is_err()
        {
            return;
        }
        drop(daemon);
    }
}

impl VhostRx {
    /// See [`super::Receiver::input`].
    pub async fn input(&mut self) -> Input {
        match self.events.recv().await {
            Some(VhostEvent::Frame(f)) => Input::Frame(f),
            Some(VhostEvent::Connected) => Input::Connected(None),
            Some(VhostEvent::Disconnected) => {
                self.backend.lock().rx_backlog.clear();
                Input::Disconnected
            }
            None => Input::Closed,
        }
    }

    /// Removes the socket file.
    pub fn shutdown(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Counters.
    pub fn status(&self) -> control_proto::Counts {
        let inner = self.backend.lock();
        let mut counts = inner.counters.counts();
        counts.insert("rx_backlog".into(), inner.rx_backlog.len() as u64);
        counts.insert(
            "queues_broken_now".into(),
            inner.broken.iter().filter(|b| **b).count() as u64,
        );
        counts
    }
}

impl VhostTx {
    /// See [`super::Output::send_frame`].
    pub fn send_frame(&mut self, frame: &[u8]) {
        {
            let mut inner = self.backend.lock();
            if inner.rx_backlog.len() >= RX_BACKLOG {
                inner.counters.rx_backlog_full += 1;
                return;
            }
            inner.rx_backlog.push_back(frame.to_vec());
        }
        let _ = self.backend.rx_notify.notify();
    }

    /// Counters (shared with the receiving half's).
    pub fn status(&self) -> control_proto::Counts {
        control_proto::Counts::new()
    }
}
