//! `fo-relay`: the lab's wide-area impairment relay, the IO side of `netns_tests::impair`.
//!
//! It bridges two interfaces of its own namespace at layer 2, in userspace: frames read on
//! `--client-if` leave by `--wan-if` and the other way round, each at the time the [`Pipe`] of
//! its datacenter and direction decides (delay, jitter, loss, reordering, duplication, a rate
//! limit). Frames are classified by the datacenter's underlay address (destination going up,
//! source coming down); everything else (ARP, neighbour discovery, traffic to addresses with
//! no pipe) passes at once, untouched.
//!
//! Packet sockets carry a `virtio_net_hdr` (`PACKET_VNET_HDR`), so a frame whose checksum the
//! sender left to the hardware, or a GSO super-frame, is forwarded as the kernel would forward
//! it: nothing is recomputed or resegmented here (a super-frame is one unit for loss and
//! delay). Own transmissions are not read back (`PACKET_IGNORE_OUTGOING`).
//!
//! The control socket takes one command per connection, one line, and answers one line:
//! - `set DC[:up|:down] SPEC` changes a pipe from now on (`SPEC` as [`Params::apply`]);
//!   answers `ok` or `error: ...`;
//! - `stats` answers a JSON object: every pipe's parameters and counters, the relay's own CPU
//!   time and the kernel's receive drops.

use std::collections::BinaryHeap;
use std::ffi::CString;
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use netns_tests::impair::{Params, Pipe, PipeStats, Verdict};

/// `sizeof(struct virtio_net_hdr)`.
const VNET_HDR: usize = 10;
/// Largest frame read: a 64 KiB GSO super-frame with its headers.
const FRAME_MAX: usize = 65_535 + 14 + VNET_HDR;
/// Frames read from one side per turn before the other side and the timers get theirs.
const READ_BURST: usize = 128;
/// Most bytes the relay holds in all its pipes together.
const HELD_BYTES_MAX: usize = 512 << 20;

// linux/if_packet.h
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// The relay's clock: the one place it reads it.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

#[derive(Debug, Parser)]
#[command(name = "fo-relay", version = netns_tests::VERSION, about = "The lab's wide-area impairment relay")]
struct Cli {
    /// interface towards the client
    #[arg(long)]
    client_if: String,
    /// interface towards the underlay
    #[arg(long)]
    wan_if: String,
    /// control socket path
    #[arg(long)]
    control: PathBuf,
    /// a datacenter: NAME=ADDR[=SPEC], e.g. dc1=198.18.0.11=delay=7.5ms (repeatable)
    #[arg(long = "dc", value_name = "NAME=ADDR[=SPEC]")]
    dcs: Vec<String>,
    /// seed of the pipes' random streams
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// towards the underlay (read on the client side)
    Up,
    /// towards the client
    Down,
}

#[derive(Debug)]
struct Dc {
    name: String,
    addr: IpAddr,
    up: PipeSlot,
    down: PipeSlot,
}

#[derive(Debug)]
struct PipeSlot {
    pipe: Pipe,
    held: usize,
}

#[derive(Debug)]
struct Pending {
    at: Instant,
    seq: u64,
    out: Side,
    /// (datacenter, direction) whose `held` this counts against
    owner: (usize, Side),
    frame: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Reversed: the earliest departure is the greatest, for `BinaryHeap`.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct RelayStats {
    /// frames passed at once (no pipe)
    unclassified: u64,
    /// frames the kernel dropped before the relay read them
    kernel_drops: u64,
    /// frames that could not be sent
    send_errors: u64,
    /// frames dropped because the relay held too many bytes
    dropped_memory: u64,
}

struct Relay {
    sock: [OwnedFd; 2],
    dcs: Vec<Dc>,
    heap: BinaryHeap<Pending>,
    seq: u64,
    held_bytes: usize,
    stats: RelayStats,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fo-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_dc(s: &str, k: usize, seed: u64) -> io::Result<Dc> {
    let mut parts = s.splitn(3, '=');
    let (Some(name), Some(addr)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other(format!(
            "--dc {s}: expected NAME=ADDR[=SPEC]"
        )));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| io::Error::other(format!("--dc {s}: {addr} is not an IP address")))?;
    let params = Params::parse(parts.next().unwrap_or(""))
        .map_err(|e| io::Error::other(format!("--dc {s}: {e}")))?;
    let k = k as u64;
    Ok(Dc {
        name: name.to_string(),
        addr,
        up: PipeSlot {
            pipe: Pipe::new(params.clone(), seed ^ (2 * k + 1).wrapping_mul(0x9E37_79B9)),
            held: 0,
        },
        down: PipeSlot {
            pipe: Pipe::new(params, seed ^ (2 * k + 2).wrapping_mul(0x9E37_79B9)),
            held: 0,
        },
    })
}

fn run(cli: Cli) -> io::Result<()> {
    let dcs = cli
        .dcs
        .iter()
        .enumerate()
        .map(|(k, s)| parse_dc(s, k, cli.seed))
        .collect::<io::Result<Vec<_>>>()?;
    let client = packet_socket(&cli.client_if)?;
    let wan = packet_socket(&cli.wan_if)?;
    let _ = std::fs::remove_file(&cli.control);
    let listener = UnixListener::bind(&cli.control)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cli.control.display())))?;

    // the control thread hands commands over and pokes the data loop through a pipe
    let (wake_r, wake_w) = wake_pipe()?;
    let (tx, rx) = mpsc::sync_channel::<(String, mpsc::SyncSender<String>)>(16);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || control_thread(listener, tx, wake_w))?;

    let mut relay = Relay {
        sock: [client, wan],
        dcs,
        heap: BinaryHeap::new(),
        seq: 0,
        held_bytes: 0,
        stats: RelayStats::default(),
    };
    let mut frame = vec![0u8; FRAME_MAX];
    loop {
        let timeout = relay
            .heap
            .peek()
            .map(|p| p.at.saturating_duration_since(now()));
        wait(
            &[
                relay.sock[0].as_raw_fd(),
                relay.sock[1].as_raw_fd(),
                wake_r.as_raw_fd(),
            ],
            timeout,
        )?;
        drain_wake(&wake_r);
        while let Ok((line, reply)) = rx.try_recv() {
            let _ = reply.send(relay.command(&line));
        }
        for side in [Side::Up, Side::Down] {
            for _ in 0..READ_BURST {
                let n = match recv(relay.reads(side), &mut frame) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let Some(f) = frame.get(..n) else { break };
                relay.admit(now(), side, f);
            }
        }
        relay.send_due(now());
    }
}

impl Relay {
    fn admit(&mut self, now: Instant, side: Side, frame: &[u8]) {
        let dc = classify(frame, side).and_then(|a| self.dcs.iter().position(|d| d.addr == a));
        let Some(i) = dc else {
            self.stats.unclassified += 1;
            self.send(side, frame);
            return;
        };
        if self.held_bytes + frame.len() > HELD_BYTES_MAX {
            self.stats.dropped_memory += 1;
            return;
        }
        let Some(d) = self.dcs.get_mut(i) else { return };
        let slot = match side {
            Side::Up => &mut d.up,
            Side::Down => &mut d.down,
        };
        // the payload length the link carries: without the virtio header
        let wire_len = frame.len().saturating_sub(VNET_HDR);
        let Verdict::Send { at, dup } = slot.pipe.admit(now, wire_len, slot.held) else {
            return;
        };
        for at in std::iter::once(at).chain(dup) {
            slot.held += 1;
            self.held_bytes += frame.len();
            self.seq += 1;
            self.heap.push(Pending {
                at,
                seq: self.seq,
                out: side,
                owner: (i, side),
                frame: frame.to_vec(),
            });
        }
    }

    fn send_due(&mut self, now: Instant) {
        while self.heap.peek().is_some_and(|p| p.at <= now) {
            let Some(p) = self.heap.pop() else { break };
            self.held_bytes = self.held_bytes.saturating_sub(p.frame.len());
            if let Some(d) = self.dcs.get_mut(p.owner.0) {
                let slot = match p.owner.1 {
                    Side::Up => &mut d.up,
                    Side::Down => &mut d.down,
                };
                slot.held = slot.held.saturating_sub(1);
            }
            self.send(p.out, &p.frame);
        }
    }

    /// The socket frames travelling `side` are read from.
    fn reads(&self, side: Side) -> &OwnedFd {
        let [client, wan] = &self.sock;
        match side {
            Side::Up => client,
            Side::Down => wan,
        }
    }

    fn send(&mut self, side: Side, frame: &[u8]) {
        let [client, wan] = &self.sock;
        let sock = match side {
            Side::Up => wan,
            Side::Down => client,
        };
        if send(sock, frame).is_err() {
            self.stats.send_errors += 1;
        }
    }

    fn command(&mut self, line: &str) -> String {
        let line = line.trim();
        if line == "stats" {
            return self.stats_json();
        }
        let Some(rest) = line.strip_prefix("set ") else {
            return format!(
                "error: unknown command {line:?}: expected `set DC[:up|:down] SPEC` or `stats`"
            );
        };
        let (target, spec) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
        let (name, dirs): (&str, &[Side]) = match target.split_once(':') {
            None => (target, &[Side::Up, Side::Down]),
            Some((n, "up")) => (n, &[Side::Up]),
            Some((n, "down")) => (n, &[Side::Down]),
            Some((_, d)) => return format!("error: direction {d:?}: up or down"),
        };
        let Some(dc) = self.dcs.iter_mut().find(|d| d.name == name) else {
            return format!("error: no datacenter {name:?}");
        };
        for dir in dirs {
            let slot = match dir {
                Side::Up => &mut dc.up,
                Side::Down => &mut dc.down,
            };
            let mut p = slot.pipe.params().clone();
            if let Err(e) = p.apply(spec) {
                return format!("error: {e}");
            }
            slot.pipe.set_params(p);
        }
        "ok".to_string()
    }

    fn stats_json(&mut self) -> String {
        for sock in &self.sock {
            self.stats.kernel_drops += kernel_drops(sock);
        }
        #[derive(serde::Serialize)]
        struct PipeOut {
            params: String,
            held: usize,
            #[serde(flatten)]
            stats: PipeStats,
        }
        let pipes: serde_json::Map<String, serde_json::Value> = self
            .dcs
            .iter()
            .flat_map(|d| {
                [("up", &d.up), ("down", &d.down)].map(|(dir, s)| {
                    let out = PipeOut {
                        params: s.pipe.params().to_string(),
                        held: s.held,
                        stats: s.pipe.stats(),
                    };
                    (
                        format!("{}:{dir}", d.name),
                        serde_json::to_value(out).unwrap_or_default(),
                    )
                })
            })
            .collect();
        serde_json::json!({
            "pipes": pipes,
            "relay": &self.stats,
            "cpu_ms": cpu_ms(),
            "held_bytes": self.held_bytes,
        })
        .to_string()
    }
}

/// The underlay address that names a frame's datacenter: the IP destination going up, the
/// source coming down. `frame` starts with the virtio header.
fn classify(frame: &[u8], side: Side) -> Option<IpAddr> {
    let eth = frame.get(VNET_HDR..)?;
    let ethertype = u16::from_be_bytes([*eth.get(12)?, *eth.get(13)?]);
    let ip = eth.get(14..)?;
    match ethertype {
        0x0800 => {
            let at = if side == Side::Up { 16 } else { 12 };
            let b: [u8; 4] = ip.get(at..at + 4)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        0x86dd => {
            let at = if side == Side::Up { 24 } else { 8 };
            let b: [u8; 16] = ip.get(at..at + 16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

fn control_thread(
    listener: UnixListener,
    tx: mpsc::SyncSender<(String, mpsc::SyncSender<String>)>,
    wake: OwnedFd,
) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if let Err(e) = serve_one(conn, &tx, &wake) {
            eprintln!("fo-relay: control: {e}");
        }
    }
}

fn serve_one(
    conn: UnixStream,
    tx: &mpsc::SyncSender<(String, mpsc::SyncSender<String>)>,
    wake: &OwnedFd,
) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(conn.try_clone()?).take_line(&mut line, 4096)?;
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    tx.send((line, reply_tx))
        .map_err(|_| io::Error::other("relay gone"))?;
    poke(wake);
    let answer = reply_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| io::Error::other("no answer from the data loop"))?;
    let mut conn = conn;
    conn.write_all(answer.as_bytes())?;
    conn.write_all(b"\n")
}

/// Reads one line of at most `max` bytes.
trait TakeLine {
    fn take_line(&mut self, line: &mut String, max: u64) -> io::Result<usize>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(&mut self, line: &mut String, max: u64) -> io::Result<usize> {
        use std::io::Read as _;
        self.take(max).read_line(line)
    }
}

// ---- system calls -------------------------------------------------------------------------

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[allow(unsafe_code)]
fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live c_int of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A non-blocking packet socket bound to `ifname`, with virtio headers, not reading back its
/// own transmissions.
#[allow(unsafe_code)]
fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let name = CString::new(ifname).map_err(|_| io::Error::other("interface name with NUL"))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::other(format!("no interface {ifname}")));
    }
    // protocol 0: no frame is queued before bind names the interface
    // SAFETY: plain socket(2) call; the result is checked and owned at once.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("packet socket (needs CAP_NET_RAW): {e}")))?;
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    setsockopt_int(raw, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
    setsockopt_int(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20)?;
    setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 16 << 20)?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value before we fill it.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a live sockaddr_ll and the length passed is its size.
    cvt(unsafe {
        libc::bind(
            raw,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

#[allow(unsafe_code)]
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a live, writable slice of the length passed.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[allow(unsafe_code)]
fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a live slice of the length passed.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Frames the kernel dropped on `fd` since the last call (reading resets the counter).
#[allow(unsafe_code)]
fn kernel_drops(fd: &OwnedFd) -> u64 {
    let mut st = [0u32; 2];
    let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
    // SAFETY: st is a live tpacket_stats-sized buffer; len holds its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_STATISTICS,
            st.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc == 0 {
        u64::from(st[1])
    } else {
        0
    }
}

/// This process's CPU time (user + system) in milliseconds.
#[allow(unsafe_code)]
fn cpu_ms() -> u64 {
    // SAFETY: rusage is plain old data, filled by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

#[allow(unsafe_code)]
fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a live array of two ints for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[allow(unsafe_code)]
fn poke(fd: &OwnedFd) {
    // SAFETY: writes one byte from a live buffer; a full pipe (EAGAIN) already wakes the loop.
    let _ = unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
}

#[allow(unsafe_code)]
fn drain_wake(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reads into a live buffer of the length passed; the fd is non-blocking.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no timeout), with
/// nanosecond resolution (ppoll).
#[allow(unsafe_code)]
fn wait(fds: &[RawFd; 3], timeout: Option<Duration>) -> io::Result<()> {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: pfds is a live array of the length passed; tsp is null or a live timespec.
    let rc = unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            tsp,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
