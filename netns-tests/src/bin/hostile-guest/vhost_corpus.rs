//! The vhost-user front end's corpus, and the vhost-user front end (what QEMU is to the
//! shim) it drives.

use super::*;
use ::vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use ::vhost::vhost_user::{Frontend, VhostUserFrontend as _};
use ::vhost::{VhostBackend as _, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes as _, FileOffset, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::sock_ctrl_msg::ScmSocket as _;

/// Guest memory: one memfd, shared with the shim.
const MEM_SIZE: u64 = 4 << 20;
/// Where "the VMM" has guest memory mapped, as SET_MEM_TABLE and SET_VRING_ADDR say. The
/// shim translates ring addresses with it; nothing is mapped there in this process.
const VA_BASE: u64 = 0x7f00_4000_0000;
/// Queue size of both rings (QEMU's default).
const QS: u16 = 256;
const RXQ: usize = 0;
const TXQ: usize = 1;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const HDR_LEN: usize = 12;
/// Ring placements: [RX, TX] for the first setup, then after the reset.
const RING_SETS: [[u64; 2]; 2] = [[0x1_0000, 0x1_4000], [0x1_8000, 0x1_c000]];
/// Each ring: descriptors at +0, avail at +0x1000, used at +0x2000.
const RING_SPAN: usize = 0x3000;
/// RX buffers: one 2 KiB buffer per descriptor.
const RX_BUF_BASE: u64 = 0x30_0000;
const RX_BUF_LEN: u32 = 0x800;
/// TX buffers and indirect tables, allocated per case.
const SCRATCH: (u64, u64) = (0x10_0000, 0x30_0000);
/// Far outside guest memory.
const NOWHERE: u64 = 0xdead_0000_0000;

// vhost-user requests sent by hand
const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;
const RESET_OWNER: u32 = 4;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const GET_VRING_BASE: u32 = 11;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;
const SET_VRING_ENABLE: u32 = 18;
/// Header flags: version 1; reply; the sender wants a reply.
const V1: u32 = 0x1;
const REPLY: u32 = 0x4;
const NEED_REPLY: u32 = 0x8;

// -----------------------------------------------------------------------------------------
// Guest memory and rings

#[allow(unsafe_code)]
fn memfd(size: u64) -> Res<File> {
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new descriptor (or
    // -1); it touches no other memory of ours.
    let fd = unsafe {
        libc::memfd_create(
            c"hostile-guest-ram".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(format!("memfd_create: {}", io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created by memfd_create and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(ctx("sizing the memfd"))?;
    // Sealed against resizing, as QEMU's memory-backend-memfd does by default (the shim
    // refuses a memfd that could still shrink under its mapping).
    // SAFETY: fcntl(F_ADD_SEALS) on our own descriptor, integer arguments.
    let rc = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    if rc < 0 {
        return Err(format!("sealing the memfd: {}", io::Error::last_os_error()));
    }
    Ok(file)
}

struct Guest {
    mem: GuestMemoryMmap<()>,
    file: File,
    size: u64,
}

impl Guest {
    fn new(size: u64) -> Res<Guest> {
        let file = memfd(size)?;
        let clone = file.try_clone().map_err(ctx("dup of the memfd"))?;
        let len = usize::try_from(size).map_err(ctx("memory size"))?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            len,
            Some(FileOffset::new(clone, 0)),
        )])
        .map_err(ctx("mapping guest memory"))?;
        Ok(Guest { mem, file, size })
    }

    /// The SET_MEM_TABLE region, declaring `declared` bytes.
    fn region(&self, declared: u64) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: declared,
            userspace_addr: VA_BASE,
            mmap_offset: 0,
            mmap_handle: self.file.as_raw_fd(),
        }
    }

    fn write(&self, addr: u64, bytes: &[u8]) -> Res<()> {
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .map_err(ctx("writing guest memory"))
    }

    fn read(&self, addr: u64, len: usize) -> Res<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(addr))
            .map_err(ctx("reading guest memory"))?;
        Ok(v)
    }

    fn store16(&self, addr: u64, v: u16) -> Res<()> {
        self.mem
            .store(v, GuestAddress(addr), Ordering::Release)
            .map_err(ctx("writing guest memory"))
    }

    fn load16(&self, addr: u64) -> Res<u16> {
        self.mem
            .load(GuestAddress(addr), Ordering::Acquire)
            .map_err(ctx("reading guest memory"))
    }

    fn load32(&self, addr: u64) -> Res<u32> {
        self.mem
            .load(GuestAddress(addr), Ordering::Acquire)
            .map_err(ctx("reading guest memory"))
    }

    /// Writes descriptor `i` of the table at `table`.
    fn desc(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) -> Res<()> {
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        self.write(table + 16 * u64::from(i), &d)
    }
}

/// One split virtqueue, from the driver's side.
#[derive(Debug, Clone, Copy, Default)]
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    /// next avail index to publish
    avail_idx: u16,
    /// used entries consumed so far
    used_seen: u16,
}

impl Ring {
    fn at(base: u64) -> Ring {
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    fn config(&self) -> VringConfigData {
        VringConfigData {
            queue_max_size: QS,
            queue_size: QS,
            flags: 0,
            desc_table_addr: VA_BASE + self.desc,
            used_ring_addr: VA_BASE + self.used,
            avail_ring_addr: VA_BASE + self.avail,
            log_addr: None,
        }
    }

    /// Makes chain `head` available.
    fn push(&mut self, g: &Guest, head: u16) -> Res<()> {
        let slot = u64::from(self.avail_idx % QS);
        g.store16(self.avail + 4 + 2 * slot, head)?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        g.store16(self.avail + 2, self.avail_idx)
    }

    fn used_idx(&self, g: &Guest) -> Res<u16> {
        g.load16(self.used + 2)
    }

    /// (id, len) of used entry number `n`.
    fn used_elem(&self, g: &Guest, n: u16) -> Res<(u32, u32)> {
        let at = self.used + 4 + 8 * u64::from(n % QS);
        Ok((g.load32(at)?, g.load32(at + 4)?))
    }
}

/// Bump allocation of TX buffers and tables in guest memory, for one case.
struct Scratch<'g> {
    g: &'g Guest,
    next: u64,
    table: u64,
}

impl Scratch<'_> {
    fn alloc(&mut self, len: u64) -> Res<u64> {
        let at = self.next.div_ceil(16) * 16;
        if at + len > SCRATCH.1 {
            return Err("scratch memory exhausted".into());
        }
        self.next = at + len;
        Ok(at)
    }

    fn buf(&mut self, bytes: &[u8]) -> Res<u64> {
        let at = self.alloc(bytes.len() as u64)?;
        self.g.write(at, bytes)?;
        Ok(at)
    }

    /// Writes `bytes` padded with zeros to `len`.
    fn padded(&mut self, bytes: &[u8], len: usize) -> Res<u64> {
        let mut v = bytes.to_vec();
        v.resize(len.max(bytes.len()), 0);
        self.buf(&v)
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) -> Res<()> {
        self.g.desc(self.table, i, addr, len, flags, next)
    }

    /// Descriptors 0.. in `table` (the ring's table, or an indirect one) chained in
    /// order: (address, length, flags besides NEXT).
    fn chain_in(&self, table: u64, parts: &[(u64, u32, u16)]) -> Res<()> {
        for (i, (addr, len, flags)) in parts.iter().enumerate() {
            let i = u16::try_from(i).map_err(ctx("chain length"))?;
            let last = usize::from(i) + 1 == parts.len();
            let flags = if last { *flags } else { *flags | F_NEXT };
            self.g
                .desc(table, i, *addr, *len, flags, i.wrapping_add(1))?;
        }
        Ok(())
    }

    /// A chain in the ring's table from descriptor 0; returns its head.
    fn chain(&self, parts: &[(u64, u32, u16)]) -> Res<u16> {
        self.chain_in(self.table, parts)?;
        Ok(0)
    }

    /// An indirect table holding `parts`; returns (address, length in bytes).
    fn indirect(&mut self, parts: &[(u64, u32, u16)]) -> Res<(u64, u32)> {
        let len = 16 * parts.len() as u64;
        let at = self.alloc(len)?;
        self.chain_in(at, parts)?;
        Ok((at, u32::try_from(len).map_err(ctx("table length"))?))
    }

    /// `bytes` cut into readable pieces of `sizes` (then the rest), chained from 0.
    fn split(&mut self, bytes: &[u8], sizes: &[usize]) -> Res<u16> {
        let mut parts = Vec::new();
        let mut rest = bytes;
        for &n in sizes {
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            let at = self.buf(piece)?;
            parts.push((at, piece.len() as u32, 0));
            rest = tail;
        }
        if !rest.is_empty() || parts.is_empty() {
            let at = self.buf(rest)?;
            parts.push((at, rest.len() as u32, 0));
        }
        self.chain(&parts)
    }
}

/// A virtio-net header (flags, gso_type) and the frame: what one TX chain carries.
fn packet_with(flags: u8, gso: u8, frame: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; HDR_LEN];
    if let Some(h) = p.get_mut(..2) {
        h.copy_from_slice(&[flags, gso]);
    }
    p.extend_from_slice(frame);
    p
}

/// A valid TX packet: header and the probe (54 bytes).
fn packet() -> Vec<u8> {
    packet_with(0, 0, &probe())
}

// -----------------------------------------------------------------------------------------
// A connection with its rings

/// Shuts a connection down if it is still open at a deadline. The `vhost` crate's front
/// end retries a read that timed out, forever; a shut-down socket ends that wait.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    fn new(s: &UnixStream, limit: Duration) -> Res<Watchdog> {
        let s = s.try_clone().map_err(ctx("cloning the socket"))?;
        let (done, wait) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let f2 = fired.clone();
        let thread = thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                    f2.store(true, Ordering::SeqCst);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            })
            .map_err(ctx("starting the watchdog"))?;
        Ok(Watchdog {
            done: Some(done),
            fired,
            thread: Some(thread),
        })
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A vhost-user connection set up as QEMU does, through the `vhost` crate's front end.
struct Session {
    /// ends the connection at the session's deadline
    watchdog: Watchdog,
    fe: Frontend,
    /// the same connection, for requests the `vhost` front end will not send
    raw: UnixStream,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    rx: Ring,
    tx: Ring,
    /// TX used entries expected so far
    tx_used: u16,
}

impl Session {
    /// Connects, negotiates everything the shim offers (REPLY_ACK, every request acked)
    /// and shares guest memory, declaring `declared` bytes of it. The connection ends
    /// after `limit` at the latest.
    fn connect(
        path: &Path,
        g: &Guest,
        declared: u64,
        limit: Duration,
        t: &mut Tally,
    ) -> Res<Session> {
        let sock = UnixStream::connect(path).map_err(ctx("connecting"))?;
        t.connected(&sock);
        let watchdog = Watchdog::new(&sock, limit)?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(ctx("read timeout"))?;
        sock.set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(ctx("write timeout"))?;
        let raw = sock.try_clone().map_err(ctx("cloning the socket"))?;
        let mut fe = Frontend::from_stream(sock, 2);
        Self::negotiate(&mut fe, g, declared).map_err(|e| {
            if watchdog.fired() {
                format!("no answer; the connection was ended after {limit:?} ({e})")
            } else {
                e
            }
        })?;
        Ok(Session {
            watchdog,
            fe,
            raw,
            kicks: Vec::new(),
            calls: Vec::new(),
            rx: Ring::default(),
            tx: Ring::default(),
            tx_used: 0,
        })
    }

    fn negotiate(fe: &mut Frontend, g: &Guest, declared: u64) -> Res<()> {
        fe.set_owner().map_err(ctx("SET_OWNER"))?;
        let features = fe.get_features().map_err(ctx("GET_FEATURES"))?;
        let pf = fe
            .get_protocol_features()
            .map_err(ctx("GET_PROTOCOL_FEATURES"))?;
        fe.set_protocol_features(pf & VhostUserProtocolFeatures::REPLY_ACK)
            .map_err(ctx("SET_PROTOCOL_FEATURES"))?;
        fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        fe.set_features(features).map_err(ctx("SET_FEATURES"))?;
        fe.set_mem_table(&[g.region(declared)])
            .map_err(ctx("SET_MEM_TABLE"))?;
        Ok(())
    }

    /// Sets up and enables both rings at `bases` (zeroed first if `zero`). With
    /// `tx_kick`, the TX kick descriptor is that one instead of an eventfd.
    fn start_rings(
        &mut self,
        g: &Guest,
        bases: [u64; 2],
        zero: bool,
        tx_kick: Option<RawFd>,
    ) -> Res<()> {
        self.kicks.clear();
        self.calls.clear();
        for (q, base) in bases.into_iter().enumerate() {
            if zero {
                g.write(base, &[0u8; RING_SPAN])?;
            }
            let ring = Ring::at(base);
            self.fe.set_vring_num(q, QS).map_err(ctx("SET_VRING_NUM"))?;
            self.fe
                .set_vring_addr(q, &ring.config())
                .map_err(ctx("SET_VRING_ADDR"))?;
            self.fe
                .set_vring_base(q, 0)
                .map_err(ctx("SET_VRING_BASE"))?;
            let call = EventFd::new(EFD_NONBLOCK).map_err(ctx("eventfd"))?;
            let kick = EventFd::new(EFD_NONBLOCK).map_err(ctx("eventfd"))?;
            self.fe
                .set_vring_call(q, &call)
                .map_err(ctx("SET_VRING_CALL"))?;
            match tx_kick {
                Some(fd) if q == TXQ => {
                    let raw = Raw { s: &self.raw };
                    raw.send(
                        SET_VRING_KICK,
                        V1 | NEED_REPLY,
                        &(q as u64).to_le_bytes(),
                        &[fd],
                    )
                    .map_err(ctx("SET_VRING_KICK"))?;
                    raw.reply().map_err(ctx("SET_VRING_KICK ack"))?;
                }
                _ => self
                    .fe
                    .set_vring_kick(q, &kick)
                    .map_err(ctx("SET_VRING_KICK"))?,
            }
            self.fe
                .set_vring_enable(q, true)
                .map_err(ctx("SET_VRING_ENABLE"))?;
            self.calls.push(call);
            self.kicks.push(kick);
            if q == RXQ {
                self.rx = ring;
            } else {
                self.tx = ring;
            }
        }
        self.tx_used = 0;
        Ok(())
    }

    /// GET_VRING_BASE on both rings: QEMU's way of stopping them.
    fn stop_rings(&mut self) -> Res<[u32; 2]> {
        let rx = self.fe.get_vring_base(RXQ).map_err(ctx("GET_VRING_BASE"))?;
        let tx = self.fe.get_vring_base(TXQ).map_err(ctx("GET_VRING_BASE"))?;
        Ok([rx, tx])
    }

    fn kick(&self, q: usize) -> Res<()> {
        self.kicks
            .get(q)
            .ok_or("no kick eventfd")?
            .write(1)
            .map_err(ctx("kick"))
    }

    /// Points every RX descriptor at its own 2 KiB buffer.
    fn write_rx_pool(&self, g: &Guest) -> Res<()> {
        for i in 0..QS {
            let buf = RX_BUF_BASE + u64::from(i) * u64::from(RX_BUF_LEN);
            g.desc(self.rx.desc, i, buf, RX_BUF_LEN, F_WRITE, 0)?;
        }
        Ok(())
    }

    /// Posts `n` pool buffers; each descriptor is reused only after 256 posts, and at most
    /// half the ring is outstanding.
    fn post_rx(&mut self, g: &Guest, n: u16) -> Res<()> {
        for _ in 0..n {
            let head = self.rx.avail_idx % QS;
            self.rx.push(g, head)?;
        }
        self.kick(RXQ)
    }

    /// The frames the shim wrote into pool buffers since the last call; every used buffer
    /// is posted again.
    fn take_rx(&mut self, g: &Guest) -> Res<Vec<Vec<u8>>> {
        let used = self.rx.used_idx(g)?;
        let mut frames = Vec::new();
        while self.rx.used_seen != used {
            let (id, len) = self.rx.used_elem(g, self.rx.used_seen)?;
            self.rx.used_seen = self.rx.used_seen.wrapping_add(1);
            let len = len as usize;
            if id < u32::from(QS) && len > HDR_LEN && len <= RX_BUF_LEN as usize {
                let buf = RX_BUF_BASE + u64::from(id) * u64::from(RX_BUF_LEN);
                frames.push(g.read(buf + HDR_LEN as u64, len - HDR_LEN)?);
            } else {
                frames.push(Vec::new());
            }
            let head = self.rx.avail_idx % QS;
            self.rx.push(g, head)?;
        }
        if !frames.is_empty() {
            self.kick(RXQ)?;
        }
        Ok(frames)
    }

    /// Waits for the ARP reply for the gateway on RX; counts other frames.
    fn wait_reply(&mut self, g: &Guest, timeout: Duration, other: &mut u64) -> Res<bool> {
        let deadline = now() + timeout;
        loop {
            let mut found = false;
            for f in self.take_rx(g)? {
                if arp_reply_spa(&f) == Some(GATEWAY_IP) {
                    found = true;
                } else {
                    *other += 1;
                }
            }
            if found {
                return Ok(true);
            }
            if now() >= deadline {
                return Ok(false);
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Publishes TX chain `head` and waits until it is returned. A head out of range
    /// cannot be returned: then only checks, after a while, that nothing was.
    fn submit_tx(&mut self, g: &Guest, head: u16) -> Res<TxOutcome> {
        self.tx.push(g, head)?;
        self.kick(TXQ)?;
        if head >= QS {
            thread::sleep(Duration::from_millis(200));
            let used = self.tx.used_idx(g)?;
            return Ok(TxOutcome {
                returned: used != self.tx_used,
                id: None,
                len: None,
            });
        }
        self.tx_used = self.tx_used.wrapping_add(1);
        let deadline = now() + Duration::from_secs(2);
        while self.tx.used_idx(g)? != self.tx_used {
            if now() >= deadline {
                return Ok(TxOutcome {
                    returned: false,
                    id: None,
                    len: None,
                });
            }
            thread::sleep(Duration::from_micros(200));
        }
        let (id, len) = self.tx.used_elem(g, self.tx_used.wrapping_sub(1))?;
        Ok(TxOutcome {
            returned: true,
            id: Some(id),
            len: Some(len),
        })
    }
}

#[derive(Debug)]
struct TxOutcome {
    returned: bool,
    id: Option<u32>,
    len: Option<u32>,
}

// -----------------------------------------------------------------------------------------
// Raw vhost-user messages

/// Messages written by hand on a connection.
struct Raw<'s> {
    s: &'s UnixStream,
}

impl Raw<'_> {
    /// A message whose header states the payload's true size.
    fn send(&self, request: u32, flags: u32, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.send_sized(request, flags, size, payload, fds)
    }

    /// A message with any size in its header.
    fn send_sized(
        &self,
        request: u32,
        flags: u32,
        size: u32,
        payload: &[u8],
        fds: &[RawFd],
    ) -> io::Result<()> {
        let mut msg = Vec::with_capacity(12 + payload.len());
        msg.extend_from_slice(&request.to_le_bytes());
        msg.extend_from_slice(&flags.to_le_bytes());
        msg.extend_from_slice(&size.to_le_bytes());
        msg.extend_from_slice(payload);
        let mut rest = msg.as_slice();
        if !fds.is_empty() {
            let n = self
                .s
                .send_with_fds(&[rest], fds)
                .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
            rest = rest.get(n..).unwrap_or_default();
        }
        let mut w = self.s;
        w.write_all(rest)
    }

    /// One reply: (request, flags, payload).
    fn reply(&self) -> io::Result<(u32, u32, Vec<u8>)> {
        let mut r = self.s;
        let mut h = [0u8; 12];
        r.read_exact(&mut h)?;
        let word = |i: usize| {
            h.get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .unwrap_or_default()
        };
        let size = word(8) as usize;
        if size > 4096 {
            return Err(io::Error::other(format!("a reply of {size} bytes")));
        }
        let mut payload = vec![0u8; size];
        r.read_exact(&mut payload)?;
        Ok((word(0), word(4), payload))
    }

    /// SET_OWNER, GET_FEATURES, SET_FEATURES (everything offered); returns the features.
    fn handshake(&self) -> io::Result<u64> {
        self.send(SET_OWNER, V1, &[], &[])?;
        self.send(GET_FEATURES, V1, &[], &[])?;
        let (_, _, p) = self.reply()?;
        let features = p
            .first_chunk::<8>()
            .map(|b| u64::from_le_bytes(*b))
            .ok_or_else(|| io::Error::other("short GET_FEATURES reply"))?;
        self.send(SET_FEATURES, V1, &features.to_le_bytes(), &[])?;
        Ok(features)
    }

    /// Whether the shim still answers on this connection: "kept", "dropped" (closed or
    /// reset) or "no_answer" (no reply in time).
    fn alive(&self) -> &'static str {
        let answered = self
            .send(GET_FEATURES, V1, &[], &[])
            .and_then(|()| self.reply());
        match answered {
            Ok((GET_FEATURES, flags, _)) if flags & REPLY != 0 => "kept",
            Ok(_) => "wrong_answer",
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                "no_answer"
            }
            Err(_) => "dropped",
        }
    }
}

fn vring_state(index: u32, num: u32) -> Vec<u8> {
    [index.to_le_bytes(), num.to_le_bytes()].concat()
}

/// A raw connection with short timeouts.
fn raw_connect(path: &Path, t: &mut Tally, timeout: Duration) -> Res<UnixStream> {
    let s = UnixStream::connect(path).map_err(ctx("connecting"))?;
    t.connected(&s);
    s.set_read_timeout(Some(timeout))
        .map_err(ctx("read timeout"))?;
    s.set_write_timeout(Some(timeout))
        .map_err(ctx("write timeout"))?;
    Ok(s)
}

// -----------------------------------------------------------------------------------------
// The corpus

/// One TX chain: what it is, the shim counter it must move, whether its frame is a valid
/// probe that must be answered.
struct TxCase {
    kind: &'static str,
    counter: Option<&'static str>,
    reply: bool,
    build: Build,
}

/// Writes a case's descriptors; returns the head.
type Build = Box<dyn Fn(&mut Scratch<'_>) -> Res<u16>>;

fn case(
    kind: &'static str,
    counter: Option<&'static str>,
    reply: bool,
    build: impl Fn(&mut Scratch<'_>) -> Res<u16> + 'static,
) -> TxCase {
    TxCase {
        kind,
        counter,
        reply,
        build: Box::new(build),
    }
}

fn tx_cases() -> Vec<TxCase> {
    const SHORT: Option<&str> = Some("tx_short");
    const FRAME: Option<&str> = Some("tx_frames");
    const BAD: Option<&str> = Some("tx_bad_chain");
    const WRONG: Option<&str> = Some("tx_wrong_direction");
    const LONG: Option<&str> = Some("tx_too_long");
    const OFFLOAD: Option<&str> = Some("tx_offload");
    let pkt = packet();
    let hdr = packet_with(0, 0, &[]);
    let frame = probe();
    let mut v = Vec::new();
    {
        let p = pkt.clone();
        v.push(case("tx_valid", FRAME, true, move |x| x.split(&p, &[])));
    }
    // zero-length descriptors
    v.push(case("tx_zero_length_descriptor", SHORT, false, |x| {
        let a = x.alloc(16)?;
        x.chain(&[(a, 0, 0)])
    }));
    v.push(case("tx_zero_length_chain_of_8", SHORT, false, |x| {
        let a = x.alloc(16)?;
        x.chain(&[(a, 0, 0); 8])
    }));
    {
        let p = pkt.clone();
        v.push(case(
            "tx_zero_length_between_parts",
            FRAME,
            true,
            move |x| x.split(&p, &[12, 0, 20, 0]),
        ));
    }
    v.push(case("tx_zero_length_outside_memory", SHORT, false, |x| {
        x.chain(&[(NOWHERE, 0, 0)])
    }));
    // shorter than the header, header only, header and a runt
    for n in 1..=11usize {
        let p = pkt.clone();
        v.push(case("tx_shorter_than_header", SHORT, false, move |x| {
            x.split(p.get(..n).unwrap_or_default(), &[])
        }));
    }
    {
        let h = hdr.clone();
        v.push(case("tx_header_only", SHORT, false, move |x| {
            x.split(&h, &[])
        }));
    }
    for n in 1..=13usize {
        let p = pkt.clone();
        v.push(case("tx_header_and_runt_frame", SHORT, false, move |x| {
            x.split(p.get(..HDR_LEN + n).unwrap_or_default(), &[])
        }));
    }
    // the header split across descriptors: valid
    let splits: [&[usize]; 7] = [
        &[1, 11],
        &[5, 7],
        &[6, 6],
        &[11, 1],
        &[4, 4, 4],
        &[1; 12],
        &[7], // the header's last 5 bytes share a descriptor with the frame
    ];
    for sizes in splits {
        let p = pkt.clone();
        v.push(case("tx_header_split", FRAME, true, move |x| {
            x.split(&p, sizes)
        }));
    }
    // device-writable descriptors on TX
    {
        let (h, f) = (hdr.clone(), frame.clone());
        v.push(case("tx_write_only_descriptor", WRONG, false, move |x| {
            let a = x.buf(&h)?;
            let b = x.buf(&f)?;
            x.chain(&[(a, 12, 0), (b, 42, F_WRITE)])
        }));
    }
    {
        let p = pkt.clone();
        v.push(case("tx_all_write_only", WRONG, false, move |x| {
            let a = x.buf(&p)?;
            x.chain(&[(a, 54, F_WRITE)])
        }));
    }
    {
        let p = pkt.clone();
        v.push(case(
            "tx_zero_length_write_only_tail",
            WRONG,
            false,
            move |x| {
                let a = x.buf(&p)?;
                x.chain(&[(a, 54, 0), (a, 0, F_WRITE)])
            },
        ));
    }
    // outside guest memory, and address + length overflowing
    let outside: [(&'static str, u64, u32); 6] = [
        ("tx_address_outside_memory", NOWHERE, 100),
        ("tx_address_straddles_end_of_memory", MEM_SIZE - 10, 100),
        ("tx_address_at_end_of_memory", MEM_SIZE, 60),
        ("tx_address_plus_length_overflows_u64", u64::MAX - 10, 100),
        (
            "tx_address_plus_4gib_overflows_u64",
            0xffff_ffff_ffff_f000,
            u32::MAX,
        ),
        ("tx_length_4gib_inside_memory", SCRATCH.0, u32::MAX),
    ];
    for (kind, addr, len) in outside {
        v.push(case(kind, BAD, false, move |x| x.chain(&[(addr, len, 0)])));
    }
    {
        let h = hdr.clone();
        v.push(case(
            "tx_second_descriptor_outside_memory",
            BAD,
            false,
            move |x| {
                let a = x.buf(&h)?;
                x.chain(&[(a, 12, 0), (NOWHERE, 42, 0)])
            },
        ));
    }
    {
        let h = hdr.clone();
        v.push(case("tx_lengths_sum_past_u32", BAD, false, move |x| {
            let a = x.buf(&h)?;
            x.chain(&[
                (a, 12, 0),
                (SCRATCH.0, 0xffff_fff0, 0),
                (SCRATCH.0, 0xffff_fff0, 0),
            ])
        }));
    }
    // loops and chains longer than the queue
    {
        let p = pkt.clone();
        // 256 trips (the queue size bounds it) of 200 bytes: a 51 188-byte frame
        v.push(case("tx_descriptor_loop_200_bytes", None, true, move |x| {
            let a = x.padded(&p, 200)?;
            x.desc(0, a, 200, F_NEXT, 0)?;
            Ok(0)
        }));
    }
    {
        let p = pkt.clone();
        // 256 trips of 4 KiB: 1 MiB
        v.push(case(
            "tx_descriptor_loop_4096_bytes",
            LONG,
            false,
            move |x| {
                let a = x.padded(&p, 4096)?;
                x.desc(0, a, 4096, F_NEXT, 0)?;
                Ok(0)
            },
        ));
    }
    {
        let p = pkt.clone();
        // every descriptor, each 1 byte, the last pointing back to the first
        v.push(case(
            "tx_chain_cycles_through_whole_table",
            FRAME,
            true,
            move |x| {
                let a = x.padded(&p, usize::from(QS))?;
                for i in 0..QS {
                    x.desc(i, a + u64::from(i), 1, F_NEXT, (i + 1) % QS)?;
                }
                Ok(0)
            },
        ));
    }
    {
        let p = pkt.clone();
        v.push(case("tx_next_index_out_of_range", FRAME, true, move |x| {
            let a = x.buf(&p)?;
            x.desc(0, a, 54, F_NEXT, QS + 44)?;
            Ok(0)
        }));
    }
    // indirect descriptors (never negotiated)
    {
        let (h, f) = (hdr.clone(), frame.clone());
        v.push(case("tx_indirect", FRAME, true, move |x| {
            let (a, b) = (x.buf(&h)?, x.buf(&f)?);
            let (table, len) = x.indirect(&[(a, 12, 0), (b, 42, 0)])?;
            x.chain(&[(table, len, F_INDIRECT)])
        }));
    }
    {
        let p = pkt.clone();
        v.push(case(
            "tx_indirect_1000_descriptors",
            FRAME,
            true,
            move |x| {
                let a = x.padded(&p, 1000)?;
                let parts: Vec<(u64, u32, u16)> = (0..1000u64).map(|i| (a + i, 1, 0)).collect();
                let (table, len) = x.indirect(&parts)?;
                x.chain(&[(table, len, F_INDIRECT)])
            },
        ));
    }
    {
        let p = pkt.clone();
        v.push(case(
            "tx_indirect_table_length_not_multiple_of_16",
            SHORT,
            false,
            move |x| {
                let a = x.buf(&p)?;
                let (table, _) = x.indirect(&[(a, 54, 0), (a, 0, 0)])?;
                x.chain(&[(table, 20, F_INDIRECT)])
            },
        ));
    }
    {
        let p = pkt.clone();
        v.push(case(
            "tx_indirect_table_length_zero",
            SHORT,
            false,
            move |x| {
                let a = x.buf(&p)?;
                let (table, _) = x.indirect(&[(a, 54, 0)])?;
                x.chain(&[(table, 0, F_INDIRECT)])
            },
        ));
    }
    {
        let p = pkt.clone();
        v.push(case("tx_indirect_nested", SHORT, false, move |x| {
            let a = x.buf(&p)?;
            let (inner, inner_len) = x.indirect(&[(a, 54, 0)])?;
            let (outer, outer_len) = x.indirect(&[(inner, inner_len, F_INDIRECT)])?;
            x.chain(&[(outer, outer_len, F_INDIRECT)])
        }));
    }
    v.push(case(
        "tx_indirect_table_outside_memory",
        SHORT,
        false,
        |x| x.chain(&[(NOWHERE, 32, F_INDIRECT)]),
    ));
    // offloads that were never negotiated
    let offloads: [(&'static str, u8, u8); 6] = [
        ("tx_flags_needs_csum", 1, 0),
        ("tx_gso_tcpv4", 0, 1),
        ("tx_gso_udp", 0, 3),
        ("tx_gso_tcpv6", 0, 4),
        ("tx_gso_tcpv4_ecn", 0, 0x81),
        ("tx_needs_csum_and_gso", 1, 1),
    ];
    for (kind, flags, gso) in offloads {
        let p = packet_with(flags, gso, &frame);
        v.push(case(kind, OFFLOAD, false, move |x| x.split(&p, &[])));
    }
    {
        // DATA_VALID is an RX flag; on TX it asks for nothing
        let p = packet_with(2, 0, &frame);
        v.push(case("tx_flags_data_valid", FRAME, true, move |x| {
            x.split(&p, &[])
        }));
    }
    // sizes
    {
        let p = pkt.clone();
        v.push(case("tx_frame_65550_bytes", LONG, false, move |x| {
            let a = x.padded(&p, HDR_LEN + MAX_FRAME + 1)?;
            x.chain(&[(a, (HDR_LEN + MAX_FRAME + 1) as u32, 0)])
        }));
    }
    {
        let mut big = packet_with(0, 0, &ether(SHIM_MAC, GUEST_MAC, ETH_EXPERIMENTAL, &[]));
        big.resize(HDR_LEN + MAX_FRAME, 0);
        v.push(case("tx_frame_65549_bytes", FRAME, false, move |x| {
            x.split(&big, &[])
        }));
    }
    {
        let p = pkt.clone();
        v.push(case("tx_sixteen_64k_descriptors", LONG, false, move |x| {
            let a = x.padded(&p, 65_536)?;
            x.chain(&[(a, 65_536, 0); 16])
        }));
    }
    v
}

/// RX buffers the guest posts: what they are, the shim counter they must move.
fn rx_cases() -> Vec<(&'static str, &'static str, u16, u64, u32, u16)> {
    // (kind, counter, head, address, length, flags)
    let buf = RX_BUF_BASE;
    vec![
        ("rx_readable_buffer", "rx_bad_chain", 0, buf, 2048, 0),
        ("rx_buffer_too_small", "rx_no_room", 1, buf, 20, F_WRITE),
        ("rx_buffer_zero_length", "rx_no_room", 2, buf, 0, F_WRITE),
        (
            "rx_buffer_outside_memory",
            "rx_bad_chain",
            3,
            NOWHERE,
            2048,
            F_WRITE,
        ),
        (
            "rx_buffer_straddles_end_of_memory",
            "rx_bad_chain",
            4,
            MEM_SIZE - 100,
            2048,
            F_WRITE,
        ),
        (
            "rx_indirect_table_length_not_multiple_of_16",
            "rx_no_room",
            5,
            buf,
            20,
            F_INDIRECT,
        ),
        ("rx_head_out_of_range", "rx_no_room", QS + 44, 0, 0, 0),
    ]
}

/// Runs the corpus, then the clean check; returns whether the shim served.
pub(super) fn run(args: &Args, t: &mut Tally, held: &mut Vec<UnixStream>) -> bool {
    let g = match Guest::new(MEM_SIZE) {
        Ok(g) => g,
        Err(e) => {
            t.note(format!("guest memory: {e}"));
            return false;
        }
    };
    let skip = |name: &str, group: &str| args.skip.iter().any(|s| s == name || s == group);
    let mut rng = Rng(args.seed);
    let started = now();
    if skip("rings", "rings") {
        t.skipped.push("rings".into());
    } else if let Err(e) = rings(args, &g, t) {
        t.note(format!("rings: {e}"));
    }
    t.result("rings_ms", elapsed_ms(started));
    let started = now();
    let mut answering = true;
    for (name, abuse) in ABUSE {
        if skip(name, "abuse") {
            t.skipped.push((*name).to_owned());
        } else if !answering {
            t.push_result("not_run_shim_not_answering", *name);
        } else {
            answering = run_abuse(&args.socket, &g, t, name, *abuse, &mut rng);
        }
    }
    t.result("protocol_abuse_ms", elapsed_ms(started));
    // Last: inputs that have wedged or killed the shim. Each is followed by a check that
    // the shim still answers a handshake.
    let suspects: [(&str, Suspect); 3] = [
        ("reply_flood_then_disconnect", reply_flood),
        ("kick_fd_not_an_eventfd", kick_fd_not_an_eventfd),
        ("mem_region_beyond_end_of_file", mem_region_beyond_eof),
    ];
    for (name, suspect) in suspects {
        if skip(name, "suspects") {
            t.skipped.push(name.to_owned());
            continue;
        }
        if !answering {
            t.push_result("not_run_shim_not_answering", name);
            continue;
        }
        let started = now();
        if let Err(e) = suspect(&args.socket, &g, t, held) {
            t.note(format!("{name}: {e}"));
        }
        answering = handshake_answers(&args.socket, t);
        t.result(
            name,
            json!({"ms": elapsed_ms(started), "shim_answers_after": answering}),
        );
        if !answering {
            t.note(format!(
                "after {name} the shim no longer answers a new connection"
            ));
        }
    }
    served(&args.socket, &g, t)
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Whether a fresh connection gets through SET_OWNER / GET_FEATURES within 3 s.
fn handshake_answers(path: &Path, t: &mut Tally) -> bool {
    let Ok(s) = raw_connect(path, t, Duration::from_secs(3)) else {
        return false;
    };
    let answered = Raw { s: &s }.handshake().is_ok();
    let _ = s.shutdown(std::net::Shutdown::Both);
    answered
}

/// The clean connection: rings, RX buffers, one ARP request on TX, its reply on RX.
fn served(path: &Path, g: &Guest, t: &mut Tally) -> bool {
    let started = now();
    let limit = SERVED_TIMEOUT + Duration::from_secs(3);
    let result = Session::connect(path, g, MEM_SIZE, limit, t).and_then(|mut s| {
        let ok = (|| -> Res<bool> {
            s.start_rings(g, RING_SETS[0], true, None)?;
            s.write_rx_pool(g)?;
            s.post_rx(g, 64)?;
            g.write(SCRATCH.0, &packet())?;
            g.desc(s.tx.desc, 0, SCRATCH.0, 54, 0, 0)?;
            s.submit_tx(g, 0)?;
            let mut other = 0;
            let ok = s.wait_reply(g, SERVED_TIMEOUT, &mut other)?;
            s.stop_rings()?;
            Ok(ok)
        })();
        if s.watchdog.fired() {
            return Err(format!(
                "no answer; the connection was ended after {limit:?}"
            ));
        }
        ok
    });
    t.result("served_after_ms", elapsed_ms(started));
    // (no `expect` for it: its answer is `served_after` itself)
    t.sent("valid_arp_request", 1);
    match result {
        Ok(ok) => ok,
        Err(e) => {
            t.note(format!("served_after: {e}"));
            false
        }
    }
}

/// The data-path corpus on one connection: hostile RX buffers, hostile TX chains, corrupt
/// avail indexes, then a ring reset that must bring the queues back.
fn rings(args: &Args, g: &Guest, t: &mut Tally) -> Res<()> {
    let mut s = Session::connect(&args.socket, g, MEM_SIZE, Duration::from_secs(90), t)?;
    let result = ring_corpus(&mut s, g, t);
    if s.watchdog.fired() {
        t.note("rings: the shim stopped answering; the connection was ended after 90 s");
    }
    result
}

fn ring_corpus(s: &mut Session, g: &Guest, t: &mut Tally) -> Res<()> {
    s.start_rings(g, RING_SETS[0], true, None)?;
    let mut other_rx = 0u64;

    // A valid probe on TX from descriptor 0 (used while RX holds hostile buffers).
    let probe_tx = |s: &mut Session| -> Res<TxOutcome> {
        g.write(SCRATCH.0, &packet())?;
        g.desc(s.tx.desc, 0, SCRATCH.0, 54, 0, 0)?;
        s.submit_tx(g, 0)
    };

    // 1. Hostile RX buffers, one at a time: the reply to a probe lands in each.
    for (kind, counter, head, addr, len, flags) in rx_cases() {
        if head < QS {
            g.desc(s.rx.desc, head, addr, len, flags, 0)?;
        }
        let before = s.rx.used_idx(g)?;
        s.rx.push(g, head)?;
        s.kick(RXQ)?;
        let sent = probe_tx(s)?;
        t.sent("valid_arp_request", 1);
        t.expect("arp_replies", 1);
        t.expect("link.receive.tx_frames", 1);
        t.sent(kind, 1);
        t.expect(&format!("link.receive.{counter}"), 1);
        let deadline = now() + Duration::from_millis(if head < QS { 2000 } else { 300 });
        while s.rx.used_idx(g)? == before && now() < deadline {
            thread::sleep(Duration::from_micros(200));
        }
        let after = s.rx.used_idx(g)?;
        if head >= QS {
            t.expect("link.receive.bad_head", 1);
            if after != before {
                t.push_result("rx_unexpected", kind);
            }
        } else if after == before.wrapping_add(1) {
            let (id, used_len) = s.rx.used_elem(g, before)?;
            if id != u32::from(head) || used_len != 0 {
                t.push_result(
                    "rx_unexpected",
                    json!({"kind": kind, "id": id, "len": used_len}),
                );
            }
            s.rx.used_seen = after;
        } else {
            t.push_result("rx_not_returned", kind);
        }
        if !sent.returned {
            t.push_result("tx_not_returned", "probe during rx cases");
        }
    }
    s.rx.used_seen = s.rx.used_idx(g)?;

    // 2. Good RX buffers from now on; a baseline answer.
    s.write_rx_pool(g)?;
    s.post_rx(g, 128)?;

    // 3. TX chains, one at a time; each must be returned (used length 0).
    let mut replies = 0u64;
    for c in tx_cases() {
        let mut x = Scratch {
            g,
            next: SCRATCH.0,
            table: s.tx.desc,
        };
        let head = (c.build)(&mut x)?;
        let outcome = s.submit_tx(g, head)?;
        t.sent(c.kind, 1);
        if let Some(counter) = c.counter {
            t.expect(&format!("link.receive.{counter}"), 1);
        }
        if !outcome.returned {
            t.push_result("tx_not_returned", c.kind);
        } else if outcome.id != Some(u32::from(head)) || outcome.len != Some(0) {
            t.push_result(
                "tx_unexpected_used_entry",
                json!({"kind": c.kind, "id": outcome.id, "len": outcome.len}),
            );
        }
        if c.reply {
            t.expect("arp_replies", 1);
            if s.wait_reply(g, REPLY_WAIT, &mut other_rx)? {
                replies += 1;
            } else {
                t.push_result("tx_valid_not_answered", c.kind);
            }
        }
    }
    {
        // a head index beyond the queue: cannot be returned; counted
        let outcome = s.submit_tx(g, QS + 44)?;
        t.sent("tx_head_out_of_range", 1);
        t.expect("link.receive.bad_head", 1);
        t.expect("link.receive.tx_short", 1);
        if outcome.returned {
            t.push_result("tx_unexpected_used_entry", "tx_head_out_of_range");
        }
    }
    t.result("tx_valid_answered", replies);
    // the 65 549-byte frame reaches the Ethernet core, which refuses its EtherType
    t.expect("drops.unknown_ethertype", 1);

    // 4. A corrupt RX avail index: the reply to a probe finds the queue unusable.
    let rx_used = s.rx.used_idx(g)?;
    g.store16(s.rx.avail + 2, s.rx.avail_idx.wrapping_add(QS + 10))?;
    s.kick(RXQ)?;
    g.write(SCRATCH.0, &packet())?;
    g.desc(s.tx.desc, 0, SCRATCH.0, 54, 0, 0)?;
    let sent = s.submit_tx(g, 0)?;
    t.sent("rx_avail_index_jump", 1);
    t.sent("valid_arp_request", 1);
    t.expect("arp_replies", 1);
    t.expect("link.receive.tx_frames", 1);
    t.expect("link.receive.queue_broken", 1);
    thread::sleep(Duration::from_millis(300));
    t.result(
        "rx_avail_index_jump",
        json!({"probe_returned": sent.returned, "rx_used_moved": s.rx.used_idx(g)? != rx_used}),
    );

    // 5. A corrupt TX avail index, then kicks for 2 s: the queue must stop, not spin.
    let tx_used = s.tx.used_idx(g)?;
    g.store16(s.tx.avail + 2, s.tx.avail_idx.wrapping_add(QS + 10))?;
    t.sent("tx_avail_index_jump", 1);
    t.expect("link.receive.queue_broken", 1);
    let pid = t.pid;
    let cpu_before = pid.and_then(|p| cpu_seconds(p).ok());
    let spin_started = now();
    let mut kicks = 0u64;
    while spin_started.elapsed() < Duration::from_secs(2) {
        s.kick(TXQ)?;
        s.kick(RXQ)?;
        kicks += 2;
        thread::sleep(Duration::from_millis(1));
    }
    let cpu_after = pid.and_then(|p| cpu_seconds(p).ok());
    let cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    t.sent("kicks_on_corrupt_queues", kicks);
    t.result(
        "tx_avail_index_jump",
        json!({
            "tx_used_moved": s.tx.used_idx(g)? != tx_used,
            "shim_cpu_seconds_in_2s_of_kicks": cpu,
            "kicks": kicks,
        }),
    );
    if let Some(c) = cpu {
        if c > 0.5 {
            t.note(format!(
                "the shim used {c:.2} s of CPU in 2 s with a corrupt avail index: it spins"
            ));
        }
    } else {
        t.note("no shim pid (give --pid): the spin check was not done");
    }

    // 6. Reset: GET_VRING_BASE stops both rings; set them up again elsewhere; the device
    // must serve on the same connection.
    let bases = s.stop_rings()?;
    s.start_rings(g, RING_SETS[1], true, None)?;
    s.write_rx_pool(g)?;
    s.post_rx(g, 128)?;
    g.write(SCRATCH.0, &packet())?;
    g.desc(s.tx.desc, 0, SCRATCH.0, 54, 0, 0)?;
    let sent = s.submit_tx(g, 0)?;
    let answered = s.wait_reply(g, REPLY_WAIT, &mut other_rx)?;
    t.sent("ring_reset", 1);
    t.sent("valid_arp_request", 1);
    t.expect("arp_replies", 1);
    t.expect("link.receive.tx_frames", 1);
    t.result(
        "ring_reset",
        json!({
            "vring_bases_before_reset": bases,
            "probe_returned": sent.returned,
            "answered_after_reset": answered,
        }),
    );
    t.result("rx_other_frames", other_rx);
    s.stop_rings()?;
    Ok(())
}

type Abuse = fn(&Raw<'_>, &Guest, &mut Rng) -> io::Result<()>;

/// Protocol abuse: each on a connection of its own, after SET_OWNER / GET_FEATURES /
/// SET_FEATURES unless the name says otherwise.
const ABUSE: &[(&str, Abuse)] = &[
    ("unknown_request_9999", |r, _, _| r.send(9999, V1, &[], &[])),
    ("unknown_request_0", |r, _, _| r.send(0, V1, &[0; 8], &[])),
    ("unknown_request_u32_max", |r, _, _| {
        r.send(u32::MAX, V1, &[], &[])
    }),
    ("set_vring_num_0", |r, _, _| {
        r.send(SET_VRING_NUM, V1, &vring_state(1, 0), &[])
    }),
    ("set_vring_num_not_power_of_two", |r, _, _| {
        r.send(SET_VRING_NUM, V1, &vring_state(1, 100), &[])
    }),
    ("set_vring_num_2048", |r, _, _| {
        r.send(SET_VRING_NUM, V1, &vring_state(1, 2048), &[])
    }),
    ("set_vring_num_u32_max", |r, _, _| {
        r.send(SET_VRING_NUM, V1, &vring_state(1, u32::MAX), &[])
    }),
    ("set_vring_num_queue_index_200", |r, _, _| {
        r.send(SET_VRING_NUM, V1, &vring_state(200, 256), &[])
    }),
    ("payload_shorter_than_request", |r, _, _| {
        r.send(SET_VRING_NUM, V1, &[1, 0, 0, 0], &[])
    }),
    ("payload_longer_than_request", |r, _, _| {
        r.send(GET_FEATURES, V1, &[0; 8], &[])
    }),
    ("payload_missing", |r, _, _| {
        r.send(SET_FEATURES, V1, &[], &[])
    }),
    ("payload_size_over_64k", |r, _, rng| {
        r.send_sized(SET_VRING_NUM, V1, 65_537, &rng.bytes(16), &[])
    }),
    ("payload_size_u32_max", |r, _, _| {
        r.send_sized(SET_VRING_NUM, V1, u32::MAX, &[0; 8], &[])
    }),
    ("payload_size_says_64_sends_8", |r, _, _| {
        r.send_sized(SET_VRING_NUM, V1, 64, &vring_state(1, 256), &[])
    }),
    ("set_mem_table_zero_regions", |r, _, _| {
        r.send(SET_MEM_TABLE, V1, &[0; 8], &[])
    }),
    ("set_mem_table_zero_regions_with_fd", |r, g, _| {
        r.send(SET_MEM_TABLE, V1, &[0; 8], &[g.file.as_raw_fd()])
    }),
    ("set_mem_table_two_regions_one_described", |r, g, _| {
        let mut p = [2u32.to_le_bytes(), 0u32.to_le_bytes()].concat();
        for v in [0, g.size, VA_BASE, 0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        r.send(SET_MEM_TABLE, V1, &p, &[g.file.as_raw_fd()])
    }),
    ("set_mem_table_guest_address_overflows", |r, g, _| {
        let mut p = [1u32.to_le_bytes(), 0u32.to_le_bytes()].concat();
        for v in [u64::MAX - 0xfff, g.size, VA_BASE, 0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        r.send(SET_MEM_TABLE, V1, &p, &[g.file.as_raw_fd()])
    }),
    ("header_version_2", |r, _, _| {
        r.send(GET_FEATURES, 0x2, &[], &[])
    }),
    ("reply_flag_from_front_end", |r, _, _| {
        r.send(GET_FEATURES, V1 | REPLY, &[], &[])
    }),
    ("twenty_descriptors_in_one_message", |r, g, _| {
        let fds = [g.file.as_raw_fd(); 20];
        r.send(SET_VRING_CALL, V1, &1u64.to_le_bytes(), &fds)
    }),
    ("descriptor_on_get_features", |r, g, _| {
        r.send(GET_FEATURES, V1, &[], &[g.file.as_raw_fd()])
    }),
    ("set_vring_kick_without_fd", |r, _, _| {
        r.send(SET_VRING_KICK, V1, &1u64.to_le_bytes(), &[])
    }),
    ("set_vring_addr_without_mem_table", |r, _, _| {
        let mut p = [1u32.to_le_bytes(), 0u32.to_le_bytes()].concat();
        for v in [VA_BASE, VA_BASE + 0x2000, VA_BASE + 0x1000, 0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        r.send(SET_VRING_ADDR, V1, &p, &[])
    }),
    ("get_vring_base_of_unset_ring", |r, _, _| {
        r.send(GET_VRING_BASE, V1, &vring_state(1, 0), &[])?;
        r.reply().map(|_| ())
    }),
    ("set_owner_twice", |r, _, _| r.send(SET_OWNER, V1, &[], &[])),
    ("reset_owner_twice", |r, _, _| {
        r.send(RESET_OWNER, V1, &[], &[])?;
        r.send(RESET_OWNER, V1, &[], &[])?;
        r.send(SET_OWNER, V1, &[], &[])
    }),
    ("ring_enabled_without_addresses", |r, _, _| {
        let kick = EventFd::new(EFD_NONBLOCK)?;
        r.send(SET_VRING_KICK, V1, &1u64.to_le_bytes(), &[kick.as_raw_fd()])?;
        r.send(SET_VRING_ENABLE, V1, &vring_state(1, 1), &[])?;
        kick.write(1)
    }),
    // without the handshake first ("before_features" in the name)
    ("vring_enable_index_7_before_features", |r, _, _| {
        r.send(SET_OWNER, V1, &[], &[])?;
        r.send(SET_VRING_ENABLE, V1 | NEED_REPLY, &vring_state(7, 1), &[])?;
        r.reply()?;
        r.send(GET_FEATURES, V1, &[], &[])?;
        let (_, _, p) = r.reply()?;
        r.send(SET_FEATURES, V1, &p, &[])
    }),
    ("request_before_features_unknown_77", |r, _, _| {
        r.send(77, V1, &[0; 8], &[])
    }),
    ("header_cut_before_features", |r, _, _| {
        let mut w = r.s;
        w.write_all(&[3, 0, 0, 0, 1])
    }),
];

/// Runs one abuse on a new connection; returns whether the shim answered the handshake
/// (true when the case has none).
fn run_abuse(
    path: &Path,
    g: &Guest,
    t: &mut Tally,
    name: &str,
    abuse: Abuse,
    rng: &mut Rng,
) -> bool {
    let s = match raw_connect(path, t, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => {
            t.push_result("reconnect_failed", json!({"before": name, "error": e}));
            return false;
        }
    };
    let r = Raw { s: &s };
    if !name.contains("before_features") {
        if let Err(e) = r.handshake() {
            t.push_result(
                "reconnect_failed",
                json!({"before": name, "error": e.to_string()}),
            );
            let _ = s.shutdown(std::net::Shutdown::Both);
            return false;
        }
    }
    t.sent(name, 1);
    let outcome = match abuse(&r, g, rng) {
        Ok(()) => r.alive(),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => "dropped",
        Err(e) => {
            t.note(format!("{name}: {e}"));
            r.alive()
        }
    };
    t.result(&format!("abuse.{name}"), outcome);
    t.count_result(&format!("abuse_outcomes.{outcome}"), 1);
    let _ = s.shutdown(std::net::Shutdown::Both);
    true
}

type Suspect = fn(&Path, &Guest, &mut Tally, &mut Vec<UnixStream>) -> Res<()>;

/// 20 000 GET_FEATURES without reading a reply, then a disconnect.
fn reply_flood(path: &Path, _g: &Guest, t: &mut Tally, _held: &mut Vec<UnixStream>) -> Res<()> {
    let s = raw_connect(path, t, Duration::from_secs(2))?;
    let r = Raw { s: &s };
    r.handshake().map_err(ctx("handshake"))?;
    let mut sent = 0u64;
    for _ in 0..20_000 {
        if r.send(GET_FEATURES, V1, &[], &[]).is_err() {
            break;
        }
        sent += 1;
    }
    t.sent("get_features_never_read", sent);
    let _ = s.shutdown(std::net::Shutdown::Both);
    thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// A TX kick "eventfd" that is a socket holding 3 bytes (an eventfd read takes 8), whose
/// other end this process keeps open after disconnecting.
fn kick_fd_not_an_eventfd(
    path: &Path,
    g: &Guest,
    t: &mut Tally,
    held: &mut Vec<UnixStream>,
) -> Res<()> {
    let (ours, theirs) = UnixStream::pair().map_err(ctx("socketpair"))?;
    let mut s = Session::connect(path, g, MEM_SIZE, Duration::from_secs(15), t)?;
    s.start_rings(g, RING_SETS[0], true, Some(theirs.as_raw_fd()))?;
    drop(theirs);
    (&ours)
        .write_all(&[1, 0, 0])
        .map_err(ctx("writing the kick"))?;
    t.sent("tx_kick_fd_is_a_socket_with_3_bytes", 1);
    // does the worker still serve RX?
    s.write_rx_pool(g)?;
    s.post_rx(g, 8)?;
    thread::sleep(Duration::from_millis(300));
    held.push(ours);
    drop(s);
    thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// SET_MEM_TABLE declaring 4 MiB of a 1 MiB memfd, with the rings beyond its end.
fn mem_region_beyond_eof(
    path: &Path,
    _g: &Guest,
    t: &mut Tally,
    _held: &mut Vec<UnixStream>,
) -> Res<()> {
    let small = Guest::new(1 << 20)?;
    let mut s = Session::connect(path, &small, MEM_SIZE, Duration::from_secs(10), t)?;
    t.sent("mem_region_4mib_of_1mib_memfd", 1);
    let started = s.start_rings(&small, [0x30_0000, 0x30_4000], false, None);
    thread::sleep(Duration::from_millis(300));
    t.result(
        "mem_region_beyond_end_of_file_setup",
        match &started {
            Ok(()) => "rings started".to_owned(),
            Err(e) => e.clone(),
        },
    );
    let _ = s.stop_rings();
    Ok(())
}
