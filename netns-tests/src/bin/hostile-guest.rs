//! `hostile-guest`: a hostile VMM. It replays malformed input through one of `vmm-shim`'s
//! front ends, then checks that the shim still serves.
//!
//! ```text
//! hostile-guest stream --socket PATH [--seed S] [--pid PID] [--skip CASE,CASE]
//! hostile-guest vhost  --socket PATH [--seed S] [--pid PID] [--skip CASE,CASE]
//! ```
//!
//! - `stream` speaks QEMU's `-netdev stream` framing: a 4-byte big-endian length, then an
//!   Ethernet frame. Input that puts the stream out of step goes on its own connection.
//! - `vhost` is a vhost-user front end, as QEMU is. It shares a memfd as guest memory
//!   (SET_MEM_TABLE) and sets up the virtio-net queues itself (RX = 0, TX = 1). It sends
//!   malformed TX chains, posts hostile RX buffers, corrupts the avail indexes, resets the
//!   rings, and abuses the vhost-user protocol on connections of their own.
//!
//! The shim's pid is given with `--pid` or read from the socket (SO_PEERCRED). It is only
//! needed to check that a corrupt avail index does not make the shim spin.
//!
//! The vhost corpus ends with three "suspects": inputs that wedged or killed the shim when
//! this tool was written (see `run` in `vhost_corpus`). After each one the tool checks that a
//! new connection is still answered, and if not it runs nothing more but the final check.
//! `--skip` takes case names and the groups `rings`, `abuse` and `suspects` (vhost). Every
//! wait is bounded, including a `vhost` crate front end that would otherwise retry a read
//! forever, so the tool ends even when the shim hangs.
//!
//! At the end a clean connection must get a valid answer, within 5 s. The check sends an ARP
//! request from 52:54:00:12:34:56 / 10.200.0.2 for 10.200.0.1. The answer must be the ARP
//! reply from 02:fa:11:0e:00:01. Every connection opened is closed again, because a real
//! QEMU connects next.
//!
//! Output is one JSON line:
//! - `sent`: counts per kind of input;
//! - `expect`: minimum values the shim's status should show under `guest`, e.g.
//!   `drops.vlan_tagged` or `link.receive.tx_short`;
//! - `results`: what this side observed;
//! - `served_after`.
//!
//! Exit status: 0 if the shim served after everything, 1 if not, 2 for a usage error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use netns_tests::measure::cpu_seconds;
use netns_tests::stream::splitmix64;
use serde_json::{json, Value};

/// The clean connection at the end must be answered within this time.
const SERVED_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for an answer to a valid frame in the middle of the corpus.
const REPLY_WAIT: Duration = Duration::from_secs(3);
/// How long the shim may take to close a connection.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The binary's clock: the one place it reads it.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

type Res<T> = Result<T, String>;

/// Adds context to an error, for `map_err`.
fn ctx<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

// ---------------------------------------------------------------------------------------------
// Arguments

/// Which of the shim's front ends to attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// QEMU's `-netdev stream` framing
    Stream,
    /// a vhost-user front end, as QEMU is
    #[value(alias = "vhost-user")]
    Vhost,
}

/// The command line: usage errors name the argument and exit 2 (clap).
#[derive(Debug, Parser)]
#[command(
    name = "hostile-guest",
    version = netns_tests::VERSION,
    about = "A hostile VMM: replays malformed input through one of vmm-shim's front ends, then \
             checks that the shim still serves",
    after_help = "Prints one JSON line. Exit 0 only if the shim still serves a clean connection \
                  afterwards."
)]
struct Args {
    /// The front end to attack
    #[arg(value_enum)]
    mode: Mode,
    /// The shim's socket (its --listen or --socket)
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Seed of the random parts of the corpus
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// The shim's pid (else read from the socket, SO_PEERCRED)
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Cases (and, for vhost, the groups rings, abuse, suspects) to leave out; may be repeated
    #[arg(long, value_name = "CASE,CASE", value_delimiter = ',')]
    skip: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = now();
    let mut t = Tally::new(&args);
    // Descriptors a hostile VMM keeps open after it has disconnected (see the vhost corpus).
    // They are closed when the report has been printed.
    let mut held: Vec<UnixStream> = Vec::new();
    let served = match args.mode {
        Mode::Stream => stream_corpus::run(&args, &mut t),
        Mode::Vhost => vhost_corpus::run(&args, &mut t, &mut held),
    };
    println!("{}", t.report(&args, served, started.elapsed()));
    drop(held);
    if served {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping

/// What was sent, what the shim should have counted, what was observed.
#[derive(Debug, Default)]
struct Tally {
    pid: Option<u32>,
    connections: u64,
    sent: BTreeMap<String, u64>,
    expect: BTreeMap<String, u64>,
    results: BTreeMap<String, Value>,
    notes: Vec<String>,
    skipped: Vec<String>,
}

impl Tally {
    fn new(args: &Args) -> Self {
        Self {
            pid: args.pid,
            ..Self::default()
        }
    }

    fn sent(&mut self, kind: &str, n: u64) {
        *self.sent.entry(kind.to_owned()).or_default() += n;
    }

    /// The shim's status should show at least `n` more in `guest.<counter>`.
    fn expect(&mut self, counter: &str, n: u64) {
        *self.expect.entry(counter.to_owned()).or_default() += n;
    }

    fn result(&mut self, key: &str, value: impl Into<Value>) {
        self.results.insert(key.to_owned(), value.into());
    }

    /// Adds to a list of results.
    fn push_result(&mut self, key: &str, value: impl Into<Value>) {
        let entry = self
            .results
            .entry(key.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(value.into());
        }
    }

    /// Adds `n` to a numeric result.
    fn count_result(&mut self, key: &str, n: u64) {
        let old = self
            .results
            .get(key)
            .and_then(Value::as_u64)
            .unwrap_or_default();
        self.results.insert(key.to_owned(), (old + n).into());
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// A new connection to the shim: counts it, and learns the shim's pid from it.
    fn connected(&mut self, s: &UnixStream) {
        self.connections += 1;
        if self.pid.is_none() {
            self.pid = peer_pid(s);
        }
    }

    fn report(&self, args: &Args, served: bool, elapsed: Duration) -> String {
        json!({
            "frontend": match args.mode { Mode::Stream => "stream", Mode::Vhost => "vhost-user" },
            "seed": args.seed,
            "shim_pid": self.pid,
            "connections": self.connections,
            "sent": self.sent,
            "expect": self.expect,
            "results": self.results,
            "notes": self.notes,
            "skipped": self.skipped,
            "served_after": served,
            "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        })
        .to_string()
    }
}

/// A seeded generator (splitmix64), so a corpus can be replayed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// The pid of the process at the other end of a unix socket (its listener's, for a connected
/// socket).
#[allow(unsafe_code)]
fn peer_pid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).ok()?;
    // SAFETY: getsockopt writes at most `len` bytes (the size of `cred`, which lives across the
    // call) into `cred` and updates `len`; the descriptor is borrowed from a live socket.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        u32::try_from(cred.pid).ok().filter(|p| *p > 0)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
const SHIM_MAC: [u8; 6] = [0x02, 0xfa, 0x11, 0x0e, 0x00, 0x01];
const BROADCAST: [u8; 6] = [0xff; 6];
const GUEST_IP: [u8; 4] = [10, 200, 0, 2];
const GATEWAY_IP: [u8; 4] = [10, 200, 0, 1];
const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
/// An EtherType for local experiments: the shim does not know it.
const ETH_EXPERIMENTAL: u16 = 0x88b5;
/// The largest frame the shim accepts: 65 535 bytes of IP and the Ethernet header.
const MAX_FRAME: usize = 14 + 65_535;

fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + body.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn arp_body(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    b.extend_from_slice(&op.to_be_bytes());
    b.extend_from_slice(&sha);
    b.extend_from_slice(&spa);
    b.extend_from_slice(&tha);
    b.extend_from_slice(&tpa);
    b
}

/// A broadcast ARP request from `mac` / `spa` for `tpa`.
fn arp_request(mac: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    ether(BROADCAST, mac, ETH_ARP, &arp_body(1, mac, spa, [0; 6], tpa))
}

/// The valid question: the guest asks for its gateway.
fn probe() -> Vec<u8> {
    arp_request(GUEST_MAC, GUEST_IP, GATEWAY_IP)
}

/// The sender address of `frame` if it is an ARP reply from the shim to the guest.
fn arp_reply_spa(frame: &[u8]) -> Option<[u8; 4]> {
    let f = frame.get(..42)?;
    let fields_ok = f.get(0..6) == Some(GUEST_MAC.as_slice())
        && f.get(6..12) == Some(SHIM_MAC.as_slice())
        && f.get(12..14) == Some(ETH_ARP.to_be_bytes().as_slice())
        && f.get(14..22) == Some([0, 1, 0x08, 0x00, 6, 4, 0, 2].as_slice())
        && f.get(22..28) == Some(SHIM_MAC.as_slice())
        && f.get(32..38) == Some(GUEST_MAC.as_slice())
        && f.get(38..42) == Some(GUEST_IP.as_slice());
    if !fields_ok {
        return None;
    }
    f.get(28..32)?.try_into().ok()
}

/// An IPv4 header (`total_len` as given, checksum right) and a UDP header (checksum 0).
fn ipv4_udp(src: [u8; 4], dst: [u8; 4], ports: (u16, u16), payload: &[u8], total: u16) -> Vec<u8> {
    let mut ip = Vec::with_capacity(28 + payload.len());
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let sum = wire::checksum::finish(wire::checksum::sum(&ip));
    if let Some(slot) = ip.get_mut(10..12) {
        slot.copy_from_slice(&sum.to_be_bytes());
    }
    let udp_len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    ip.extend_from_slice(&ports.0.to_be_bytes());
    ip.extend_from_slice(&ports.1.to_be_bytes());
    ip.extend_from_slice(&udp_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ip
}

/// A BOOTP request: op, htype, hlen, magic cookie as given, then `options`.
fn bootp(op: u8, chaddr: [u8; 6], magic: [u8; 4], options: &[u8]) -> Vec<u8> {
    let mut b = vec![op, 1, 6, 0];
    b.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // xid
    b.extend_from_slice(&[0, 0, 0x80, 0]); // secs, flags: broadcast
    b.extend_from_slice(&[0; 16]); // ciaddr, yiaddr, siaddr, giaddr
    b.extend_from_slice(&chaddr);
    b.resize(236, 0); // rest of chaddr, sname, file
    b.extend_from_slice(&magic);
    b.extend_from_slice(options);
    b
}

const DHCP_MAGIC: [u8; 4] = [99, 130, 83, 99];

/// A DHCP message from the guest, broadcast, with the IP total length given or right.
fn dhcp_frame(src: [u8; 6], payload: &[u8], total: Option<u16>) -> Vec<u8> {
    let right = u16::try_from(28 + payload.len()).unwrap_or(u16::MAX);
    ether(
        BROADCAST,
        src,
        ETH_IPV4,
        &ipv4_udp([0; 4], [255; 4], (68, 67), payload, total.unwrap_or(right)),
    )
}

/// DHCP messages with broken options and headers: (kind, frame, the drop it must count).
fn dhcp_corpus(rng: &mut Rng) -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let discover = |opts: &[u8]| bootp(1, GUEST_MAC, DHCP_MAGIC, opts);
    let malformed = Some("drops.dhcp_malformed");
    let mut v = vec![
        (
            "dhcp_option_overruns_message",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1, 12, 200, b'a', b'b']), None),
            malformed,
        ),
        (
            "dhcp_option_code_without_length",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1, 61]), None),
            malformed,
        ),
        (
            "dhcp_message_type_length_2",
            dhcp_frame(GUEST_MAC, &discover(&[53, 2, 1, 1, 255]), None),
            malformed,
        ),
        (
            "dhcp_unknown_message_type",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 99, 255]), None),
            malformed,
        ),
        (
            "dhcp_no_message_type",
            dhcp_frame(GUEST_MAC, &discover(&[12, 3, b'a', b'b', b'c', 255]), None),
            malformed,
        ),
        (
            "dhcp_requested_address_3_bytes",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 3, 50, 3, 1, 2, 3, 255]), None),
            malformed,
        ),
        (
            "dhcp_server_id_5_bytes",
            dhcp_frame(
                GUEST_MAC,
                &discover(&[53, 1, 3, 54, 5, 10, 200, 0, 1, 9, 255]),
                None,
            ),
            malformed,
        ),
        (
            "dhcp_bootp_truncated",
            dhcp_frame(
                GUEST_MAC,
                discover(&[]).get(..100).unwrap_or_default(),
                None,
            ),
            malformed,
        ),
        (
            "dhcp_bad_magic",
            dhcp_frame(
                GUEST_MAC,
                &bootp(1, GUEST_MAC, [1, 2, 3, 4], &[53, 1, 1, 255]),
                None,
            ),
            malformed,
        ),
        (
            "dhcp_bootreply_from_guest",
            dhcp_frame(
                GUEST_MAC,
                &bootp(2, GUEST_MAC, DHCP_MAGIC, &[53, 1, 1, 255]),
                None,
            ),
            malformed,
        ),
        (
            "dhcp_udp_header_cut",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1, 255]), Some(24)),
            malformed,
        ),
        (
            "dhcp_ip_total_length_beyond_frame",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1, 255]), Some(4000)),
            Some("drops.ip_malformed"),
        ),
        (
            "dhcp_foreign_client_hardware_address",
            dhcp_frame(
                GUEST_MAC,
                &bootp(1, OTHER_MAC, DHCP_MAGIC, &[53, 1, 1, 255]),
                None,
            ),
            Some("drops.dhcp_foreign_client"),
        ),
        // Well formed under the garbage: each must be answered (an OFFER).
        (
            "dhcp_pad_flood_then_discover",
            dhcp_frame(
                GUEST_MAC,
                &discover(&[vec![0u8; 1000], vec![53, 1, 1, 255]].concat()),
                None,
            ),
            Some("dhcp_replies"),
        ),
        (
            "dhcp_discover_without_end_option",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1]), None),
            Some("dhcp_replies"),
        ),
        (
            "dhcp_option_overload_with_garbage",
            dhcp_frame(
                GUEST_MAC,
                &{
                    let mut m = discover(&[52, 1, 3, 53, 1, 1, 255]);
                    if let Some(sname_file) = m.get_mut(44..236) {
                        sname_file.copy_from_slice(&rng.bytes(192));
                    }
                    m
                },
                None,
            ),
            Some("dhcp_replies"),
        ),
        (
            "dhcp_60k_of_unknown_options",
            dhcp_frame(
                GUEST_MAC,
                &discover(&{
                    let mut o = Vec::new();
                    for _ in 0..235 {
                        o.extend_from_slice(&[224, 255]);
                        o.extend_from_slice(&rng.bytes(255));
                    }
                    o.extend_from_slice(&[53, 1, 1, 255]);
                    o
                }),
                None,
            ),
            Some("dhcp_replies"),
        ),
    ];
    for _ in 0..20 {
        let len = usize::try_from(rng.range(1, 300)).unwrap_or(1);
        let mut opts = rng.bytes(len);
        // usually with a message type first, so the parser walks the garbage after it
        if rng.next() & 1 == 0 {
            opts.splice(0..0, [53, 1, 1]);
        }
        v.push((
            "dhcp_random_options",
            dhcp_frame(GUEST_MAC, &discover(&opts), None),
            None,
        ));
    }
    v
}

// ---------------------------------------------------------------------------------------------
// The stream front end

mod stream_corpus {
    use super::*;

    /// `frame` with its length prefix.
    pub(super) fn framed(frame: &[u8]) -> Vec<u8> {
        let mut v = prefix(u32::try_from(frame.len()).unwrap_or(u32::MAX)).to_vec();
        v.extend_from_slice(frame);
        v
    }

    fn prefix(len: u32) -> [u8; 4] {
        len.to_be_bytes()
    }

    /// What came back on one connection.
    #[derive(Debug, Default, Clone)]
    struct Received {
        frames: u64,
        arp_replies: u64,
        gateway_replies: u64,
        other: u64,
        /// the shim ended the connection (EOF or reset) before we did
        closed_by_shim: bool,
        error: Option<String>,
    }

    impl Received {
        fn json(&self) -> Value {
            json!({
                "frames": self.frames,
                "arp_replies": self.arp_replies,
                "gateway_replies": self.gateway_replies,
                "other_frames": self.other,
                "closed_by_shim": self.closed_by_shim,
                "read_error": self.error,
            })
        }
    }

    /// One connection to the shim, with a thread reading what it sends.
    struct Conn {
        stream: UnixStream,
        /// the reader reads only once this is set
        go: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
        arp: Arc<AtomicU64>,
        gateway: Arc<AtomicU64>,
        reader: Option<thread::JoinHandle<Received>>,
    }

    impl Conn {
        fn open(path: &Path, t: &mut Tally) -> Res<Conn> {
            let c = Self::open_paused(path, t)?;
            c.go.store(true, Ordering::SeqCst);
            Ok(c)
        }

        /// A connection whose replies are not read until `go` is set.
        fn open_paused(path: &Path, t: &mut Tally) -> Res<Conn> {
            let stream = UnixStream::connect(path).map_err(ctx("connecting"))?;
            t.connected(&stream);
            stream
                .set_write_timeout(Some(Duration::from_secs(10)))
                .map_err(ctx("write timeout"))?;
            let r = stream.try_clone().map_err(ctx("cloning the socket"))?;
            r.set_read_timeout(Some(Duration::from_millis(50)))
                .map_err(ctx("read timeout"))?;
            let go = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let arp = Arc::new(AtomicU64::new(0));
            let gateway = Arc::new(AtomicU64::new(0));
            let (go2, s2, a2, g2) = (go.clone(), stop.clone(), arp.clone(), gateway.clone());
            let reader = thread::Builder::new()
                .name("stream-reader".into())
                .spawn(move || {
                    while !go2.load(Ordering::SeqCst) && !s2.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(2));
                    }
                    read_frames(&r, &s2, &a2, &g2)
                })
                .map_err(ctx("starting the reader"))?;
            Ok(Conn {
                stream,
                go,
                stop,
                arp,
                gateway,
                reader: Some(reader),
            })
        }

        fn send(&self, bytes: &[u8]) -> Res<()> {
            (&self.stream).write_all(bytes).map_err(ctx("writing"))
        }

        /// Waits until at least `gateway` answers for the gateway and `all` ARP replies in
        /// total came back.
        fn wait_arp(&self, gateway: u64, all: u64, timeout: Duration) -> bool {
            let deadline = now() + timeout;
            loop {
                if self.gateway.load(Ordering::SeqCst) >= gateway
                    && self.arp.load(Ordering::SeqCst) >= all
                {
                    return true;
                }
                if now() >= deadline {
                    return false;
                }
                thread::sleep(Duration::from_millis(2));
            }
        }

        /// Ends the connection: half-closes it first if `half_close`, then waits up to `wait`
        /// for the shim to close its side, then closes ours.
        fn close(&mut self, half_close: bool, wait: Duration) -> Received {
            if half_close {
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
            }
            let Some(reader) = self.reader.take() else {
                return Received::default();
            };
            let deadline = now() + wait;
            while !reader.is_finished() && now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
            self.stop.store(true, Ordering::SeqCst);
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            reader.join().unwrap_or_default()
        }
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            if self.reader.is_some() {
                self.close(false, Duration::ZERO);
            }
        }
    }

    fn read_frames(s: &UnixStream, stop: &AtomicBool, arp: &AtomicU64, gw: &AtomicU64) -> Received {
        let mut r = Received::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            match (&*s).read(&mut buf) {
                Ok(0) => {
                    r.closed_by_shim = !stop.load(Ordering::SeqCst);
                    break;
                }
                Ok(n) => {
                    pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                    while let Some(len) = pending.first_chunk::<4>().map(|p| u32::from_be_bytes(*p))
                    {
                        let len = len as usize;
                        if len > 1 << 20 {
                            r.error = Some(format!("the shim sent a frame length of {len}"));
                            return r;
                        }
                        let Some(frame) = pending.get(4..4 + len) else {
                            break;
                        };
                        r.frames += 1;
                        match arp_reply_spa(frame) {
                            Some(spa) => {
                                r.arp_replies += 1;
                                arp.fetch_add(1, Ordering::SeqCst);
                                if spa == GATEWAY_IP {
                                    r.gateway_replies += 1;
                                    gw.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            None => r.other += 1,
                        }
                        pending.drain(..4 + len);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    if !stop.load(Ordering::SeqCst) {
                        r.closed_by_shim = true;
                        r.error = Some(e.to_string());
                    }
                    break;
                }
            }
        }
        r
    }

    type Case = fn(&Path, &mut Rng, &mut Tally) -> Res<()>;

    /// The corpus, in order. Each case opens its own connection(s).
    const CASES: &[(&str, Case)] = &[
        ("zero_length", zero_length),
        ("shorter_than_ethernet", shorter_than_ethernet),
        ("oversize", oversize),
        ("desync_ffffffff", |p, r, t| {
            desync(p, r, t, "desync_ffffffff", u32::MAX)
        }),
        ("desync_300000", |p, r, t| {
            desync(p, r, t, "desync_300000", 300_000)
        }),
        ("desync_262145", |p, r, t| {
            desync(p, r, t, "desync_262145", 262_145)
        }),
        ("largest_skippable_262144", largest_skippable),
        ("prefix_byte_by_byte", prefix_byte_by_byte),
        ("eof_in_prefix", eof_in_prefix),
        ("eof_mid_frame", eof_mid_frame),
        ("tiny_frames_one_write", tiny_frames_one_write),
        ("random_garbage", random_garbage),
        ("hostile_ethernet", hostile_ethernet),
        ("replies_not_read", replies_not_read),
    ];

    /// Runs the corpus, then the clean check; returns whether the shim served.
    pub(super) fn run(args: &Args, t: &mut Tally) -> bool {
        let mut rng = Rng(args.seed);
        let started = now();
        for (name, case) in CASES {
            if args.skip.iter().any(|s| s == name) {
                t.skipped.push((*name).to_owned());
                continue;
            }
            if let Err(e) = case(&args.socket, &mut rng, t) {
                t.note(format!("{name}: {e}"));
            }
        }
        t.result("corpus_ms", elapsed_ms(started));
        served(&args.socket, t)
    }

    fn elapsed_ms(since: Instant) -> u64 {
        u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Valid probes on a connection: counted, and their replies expected.
    fn probes(t: &mut Tally, n: u64) {
        t.sent("valid_arp_request", n);
        t.expect("arp_replies", n);
    }

    /// A clean connection: one ARP request, its reply within 5 s.
    fn served(path: &Path, t: &mut Tally) -> bool {
        let started = now();
        let mut c = match Conn::open(path, t) {
            Ok(c) => c,
            Err(e) => {
                t.note(format!("served_after: {e}"));
                return false;
            }
        };
        if let Err(e) = c.send(&framed(&probe())) {
            t.note(format!("served_after: {e}"));
        }
        let ok = c.wait_arp(1, 1, SERVED_TIMEOUT);
        t.result("served_after_ms", elapsed_ms(started));
        let r = c.close(true, CLOSE_WAIT);
        t.result("served_after_connection", r.json());
        t.sent("valid_arp_request", 1);
        ok
    }

    fn zero_length(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        let mut w = Vec::new();
        for _ in 0..100 {
            w.extend_from_slice(&prefix(0));
        }
        w.extend(framed(&probe()));
        c.send(&w)?;
        let kept = c.wait_arp(1, 1, REPLY_WAIT);
        let r = c.close(true, CLOSE_WAIT);
        t.sent("zero_length_frame", 100);
        t.expect("link.receive.empty_frames", 100);
        probes(t, 1);
        t.result(
            "zero_length",
            json!({"answered_after": kept, "connection": r.json()}),
        );
        Ok(())
    }

    fn shorter_than_ethernet(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        let mut w = Vec::new();
        for _ in 0..5 {
            for len in 1..=13usize {
                w.extend(framed(&rng.bytes(len)));
            }
        }
        w.extend(framed(&probe()));
        c.send(&w)?;
        let kept = c.wait_arp(1, 1, REPLY_WAIT);
        let r = c.close(true, CLOSE_WAIT);
        t.sent("frame_1_to_13_bytes", 65);
        t.expect("drops.frame_too_short", 65);
        probes(t, 1);
        t.result(
            "shorter_than_ethernet",
            json!({"answered_after": kept, "connection": r.json()}),
        );
        Ok(())
    }

    fn oversize(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        for len in [MAX_FRAME + 1, 200_000] {
            c.send(&framed(&rng.bytes(len)))?;
        }
        // the largest accepted frame: parsed, and dropped for its EtherType
        let mut largest = ether(SHIM_MAC, GUEST_MAC, ETH_EXPERIMENTAL, &[]);
        largest.resize(MAX_FRAME, 0);
        c.send(&framed(&largest))?;
        c.send(&framed(&probe()))?;
        let kept = c.wait_arp(1, 1, REPLY_WAIT);
        let r = c.close(true, CLOSE_WAIT);
        t.sent("frame_65550_bytes", 1);
        t.sent("frame_200000_bytes", 1);
        t.sent("frame_65549_bytes", 1);
        t.expect("link.receive.oversize_frames", 2);
        t.expect("drops.unknown_ethertype", 1);
        probes(t, 1);
        t.result(
            "oversize",
            json!({"answered_after": kept, "connection": r.json()}),
        );
        Ok(())
    }

    /// A length beyond anything QEMU sends: the shim must close the connection by itself.
    fn desync(path: &Path, rng: &mut Rng, t: &mut Tally, name: &str, len: u32) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        let mut w = prefix(len).to_vec();
        w.extend(rng.bytes(1000));
        w.extend(framed(&probe()));
        let sent = c.send(&w);
        let answered = c.wait_arp(1, 1, Duration::from_millis(300));
        let r = c.close(false, CLOSE_WAIT);
        t.sent(&format!("length_prefix_{len}"), 1);
        t.expect("link.receive.desyncs", 1);
        t.result(
            name,
            json!({
                "closed_by_shim": r.closed_by_shim,
                "answered_after": answered,
                "write_error": sent.err(),
                "connection": r.json(),
            }),
        );
        Ok(())
    }

    fn largest_skippable(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        c.send(&framed(&rng.bytes(262_144)))?;
        c.send(&framed(&probe()))?;
        let kept = c.wait_arp(1, 1, REPLY_WAIT);
        let r = c.close(true, CLOSE_WAIT);
        t.sent("frame_262144_bytes", 1);
        t.expect("link.receive.oversize_frames", 1);
        probes(t, 1);
        t.result(
            "largest_skippable_262144",
            json!({"answered_after": kept, "connection": r.json()}),
        );
        Ok(())
    }

    fn prefix_byte_by_byte(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        for _ in 0..3 {
            let f = framed(&probe());
            let (head, body) = f.split_at(4);
            for b in head {
                c.send(&[*b])?;
                thread::sleep(Duration::from_millis(40));
            }
            let (b1, b2) = body.split_at(17);
            c.send(b1)?;
            thread::sleep(Duration::from_millis(40));
            c.send(b2)?;
        }
        let kept = c.wait_arp(3, 3, REPLY_WAIT);
        let r = c.close(true, CLOSE_WAIT);
        t.sent("prefix_one_byte_at_a_time", 3);
        probes(t, 3);
        t.result(
            "prefix_byte_by_byte",
            json!({"all_answered": kept, "connection": r.json()}),
        );
        Ok(())
    }

    fn eof_in_prefix(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
        for k in 1..=3usize {
            let mut c = Conn::open(path, t)?;
            c.send(prefix(42).get(..k).unwrap_or_default())?;
            let r = c.close(true, CLOSE_WAIT);
            t.sent(&format!("eof_after_{k}_length_bytes"), 1);
            t.result(
                &format!("eof_after_{k}_length_bytes"),
                json!({"closed_by_shim": r.closed_by_shim}),
            );
        }
        Ok(())
    }

    fn eof_mid_frame(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        let f = framed(&probe());
        c.send(f.get(..30).unwrap_or_default())?;
        let r = c.close(true, CLOSE_WAIT);
        t.sent("eof_mid_frame", 1);
        t.result("eof_mid_frame", json!({"closed_by_shim": r.closed_by_shim}));
        // and in the middle of an oversize frame being skipped
        let mut c = Conn::open(path, t)?;
        let mut w = prefix(200_000).to_vec();
        w.extend(rng.bytes(1000));
        c.send(&w)?;
        let r = c.close(true, CLOSE_WAIT);
        t.sent("eof_mid_skipped_frame", 1);
        t.expect("link.receive.oversize_frames", 1);
        t.result(
            "eof_mid_skipped_frame",
            json!({"closed_by_shim": r.closed_by_shim}),
        );
        Ok(())
    }

    fn tiny_frames_one_write(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        let header = ether(SHIM_MAC, GUEST_MAC, ETH_EXPERIMENTAL, &[0, 0]);
        let mut w = Vec::new();
        let (mut short, mut unknown) = (0u64, 0u64);
        for i in 0..10_000usize {
            let len = 1 + i % 16;
            w.extend(framed(header.get(..len).unwrap_or_default()));
            if len < 14 {
                short += 1;
            } else {
                unknown += 1;
            }
        }
        w.extend(framed(&probe()));
        c.send(&w)?;
        let kept = c.wait_arp(1, 1, REPLY_WAIT);
        let r = c.close(true, CLOSE_WAIT);
        t.sent("tiny_frame_burst_frames", 10_000);
        t.sent("tiny_frame_burst_bytes", w.len() as u64);
        t.expect("drops.frame_too_short", short);
        t.expect("drops.unknown_ethertype", unknown);
        probes(t, 1);
        t.result(
            "tiny_frames_one_write",
            json!({"answered_after": kept, "connection": r.json()}),
        );
        Ok(())
    }

    fn random_garbage(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        let mut w = Vec::new();
        let n = 2000;
        for _ in 0..n {
            let len = match rng.next() % 20 {
                0 => rng.range(1601, 9000),
                1..=5 => rng.range(129, 1600),
                _ => rng.range(1, 128),
            };
            w.extend(framed(&rng.bytes(usize::try_from(len).unwrap_or(1))));
        }
        // written in random pieces, so frames and prefixes straddle reads
        let mut rest = w.as_slice();
        while !rest.is_empty() {
            let k = usize::try_from(rng.range(1, 8192))
                .unwrap_or(1)
                .min(rest.len());
            let (piece, tail) = rest.split_at(k);
            c.send(piece)?;
            rest = tail;
        }
        let r = c.close(true, CLOSE_WAIT);
        t.sent("random_garbage_frames", n);
        t.result("random_garbage", json!({"connection": r.json()}));
        Ok(())
    }

    /// 30 000 ARP requests while nothing is read: the shim must drop what does not fit its
    /// backlog, never block, and answer once the guest reads again.
    fn replies_not_read(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open_paused(path, t)?;
        let mut w = Vec::new();
        for i in 0..30_000u32 {
            let host = 3 + (i % 250) as u8;
            w.extend(framed(&arp_request(
                GUEST_MAC,
                GUEST_IP,
                [10, 200, 0, host],
            )));
        }
        c.send(&w)?;
        t.sent("arp_requests_replies_not_read", 30_000);
        t.expect("link.send.dropped_backlog_full", 1);
        thread::sleep(Duration::from_millis(500));
        c.go.store(true, Ordering::SeqCst);
        // the backlog drains; then a probe on the same connection is answered
        thread::sleep(Duration::from_millis(500));
        c.send(&framed(&probe()))?;
        probes(t, 1);
        let kept = c.wait_arp(1, 1, REPLY_WAIT);
        let r = c.close(true, CLOSE_WAIT);
        t.result(
            "replies_not_read",
            json!({"answered_after": kept, "connection": r.json()}),
        );
        Ok(())
    }

    /// Well-framed frames that the Ethernet core must refuse, on one connection that keeps
    /// working throughout.
    fn hostile_ethernet(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
        let mut c = Conn::open(path, t)?;
        let mut replies = 0u64;
        // first frame: the guest's MAC is learned from it
        c.send(&framed(&probe()))?;
        probes(t, 1);
        replies += 1;

        let mut batch = Vec::new();
        let add =
            |batch: &mut Vec<u8>, t: &mut Tally, kind: &str, frame: &[u8], drop: Option<&str>| {
                batch.extend(framed(frame));
                t.sent(kind, 1);
                if let Some(d) = drop {
                    t.expect(d, 1);
                }
            };
        let arp = arp_body(1, GUEST_MAC, GUEST_IP, [0; 6], GATEWAY_IP);
        for i in 0..50u16 {
            let mut tagged = (i & 0x0fff).to_be_bytes().to_vec();
            tagged.extend_from_slice(&ETH_ARP.to_be_bytes());
            tagged.extend_from_slice(&arp);
            let frame = ether(BROADCAST, GUEST_MAC, ETH_VLAN, &tagged);
            add(
                &mut batch,
                t,
                "vlan_8021q",
                &frame,
                Some("drops.vlan_tagged"),
            );
            let frame = ether(BROADCAST, GUEST_MAC, ETH_QINQ, &tagged);
            add(
                &mut batch,
                t,
                "vlan_8021ad",
                &frame,
                Some("drops.vlan_tagged"),
            );
        }
        let known = [ETH_IPV4, ETH_ARP, ETH_IPV6, ETH_VLAN, ETH_QINQ];
        let mut unknown_types = vec![0x0000u16, 0x05dc, 0xffff, 0x8847, 0x88cc];
        while unknown_types.len() < 100 {
            let et = (rng.next() & 0xffff) as u16;
            if !known.contains(&et) {
                unknown_types.push(et);
            }
        }
        for et in unknown_types {
            let frame = ether(SHIM_MAC, GUEST_MAC, et, &rng.bytes(46));
            add(
                &mut batch,
                t,
                "unknown_ethertype",
                &frame,
                Some("drops.unknown_ethertype"),
            );
        }
        for i in 0..50u8 {
            let src = match i % 5 {
                0 => BROADCAST,
                1 => [0; 6],
                2 => [0x33, 0x33, 0, 0, 0, i],
                _ => [0x01, 0x00, 0x5e, 0, 0, i],
            };
            let frame = ether(
                SHIM_MAC,
                src,
                ETH_ARP,
                &arp_body(1, src, GUEST_IP, [0; 6], GATEWAY_IP),
            );
            add(
                &mut batch,
                t,
                "multicast_or_zero_source_mac",
                &frame,
                Some("drops.bad_source_mac"),
            );
        }
        for _ in 0..50 {
            let frame = arp_request(OTHER_MAC, [10, 200, 0, 77], GATEWAY_IP);
            add(
                &mut batch,
                t,
                "foreign_source_mac",
                &frame,
                Some("drops.foreign_source_mac"),
            );
        }
        for _ in 0..20 {
            let frame = ether(OTHER_MAC, GUEST_MAC, ETH_ARP, &arp);
            add(
                &mut batch,
                t,
                "unicast_not_for_shim",
                &frame,
                Some("drops.not_for_shim"),
            );
        }
        for i in 0..20usize {
            let body = match i % 4 {
                0 => arp.get(..10).unwrap_or_default().to_vec(),
                1 => [&[0u8, 6][..], arp.get(2..).unwrap_or_default()].concat(), // htype 6
                2 => arp_body(3, GUEST_MAC, GUEST_IP, [0; 6], GATEWAY_IP),       // op 3
                _ => arp.get(..27).unwrap_or_default().to_vec(),                 // one byte short
            };
            let frame = ether(BROADCAST, GUEST_MAC, ETH_ARP, &body);
            add(
                &mut batch,
                t,
                "arp_malformed",
                &frame,
                Some("drops.arp_malformed"),
            );
        }
        for i in 0..20usize {
            let body = match i % 4 {
                0 => arp_body(1, GUEST_MAC, GUEST_IP, [0; 6], GUEST_IP), // for its own address
                1 => arp_body(1, GUEST_MAC, [0; 4], [0; 6], GATEWAY_IP), // a probe
                2 => arp_body(2, GUEST_MAC, GUEST_IP, SHIM_MAC, GATEWAY_IP), // a reply
                _ => arp_body(1, OTHER_MAC, GUEST_IP, [0; 6], GATEWAY_IP), // sha not the sender
            };
            let frame = ether(BROADCAST, GUEST_MAC, ETH_ARP, &body);
            add(
                &mut batch,
                t,
                "arp_ignored",
                &frame,
                Some("drops.arp_ignored"),
            );
        }
        c.send(&batch)?;

        // a storm of broadcast ARP requests: every one is answered
        let mut storm = Vec::new();
        for i in 0..1000u32 {
            let host = 3 + (i % 250) as u8;
            storm.extend(framed(&arp_request(
                GUEST_MAC,
                GUEST_IP,
                [10, 200, 0, host],
            )));
        }
        c.send(&storm)?;
        t.sent("arp_request_storm", 1000);
        t.expect("arp_replies", 1000);
        replies += 1000;

        let mut dhcp = Vec::new();
        for (kind, frame, drop) in dhcp_corpus(rng) {
            add(&mut dhcp, t, kind, &frame, drop);
        }
        c.send(&dhcp)?;

        c.send(&framed(&probe()))?;
        probes(t, 1);
        replies += 1;
        let all = c.wait_arp(2, replies, Duration::from_secs(10));
        let r = c.close(true, CLOSE_WAIT);
        t.result(
            "hostile_ethernet",
            json!({"all_arp_answered": all, "arp_replies_expected": replies, "connection": r.json()}),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The vhost-user front end

mod vhost_corpus {
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
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn the_tests_invocation_parses() {
        // as tests/hostile_guest.rs runs it, with HOSTILE_GUEST_SKIP
        let a = Args::try_parse_from([
            "hostile-guest",
            "vhost-user",
            "--socket",
            "s.sock",
            "--seed",
            "1",
            "--pid",
            "42",
            "--skip",
            "rings,suspects",
        ])
        .unwrap();
        assert_eq!(a.mode, Mode::Vhost);
        assert_eq!((a.seed, a.pid), (1, Some(42)));
        assert_eq!(a.skip, ["rings", "suspects"]);
        let a = Args::try_parse_from(["hostile-guest", "stream", "--socket", "s.sock"]).unwrap();
        assert_eq!((a.mode, a.seed, a.pid), (Mode::Stream, 1, None));
        assert!(Args::try_parse_from(["hostile-guest", "stream"]).is_err());
        assert!(Args::try_parse_from(["hostile-guest", "qemu", "--socket", "s"]).is_err());
    }
}
