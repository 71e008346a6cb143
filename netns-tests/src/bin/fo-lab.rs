//! `fo-lab`: the IO side of the lab's tools.
//!
//! - `stream-serve` / `stream-send`: the stream verifier over real TCP (wire format and
//!   judgement live in `netns_tests::stream`; this file only moves bytes and reads the clock).
//! - `garbage`: hostile UDP datagrams aimed at a WireGuard port.
//! - `selftest`: builds the standard lab as root and runs a verified stream through it.
//!
//! Every blocking socket call uses a short OS timeout and re-checks a per-connection deadline,
//! so a dead path ends at `--timeout-secs` instead of hanging; a stall shorter than that is not
//! an error. Usage errors exit 2, failed checks exit 1.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use netns_tests::lab::{self, Lab, Topology};
use netns_tests::stream::{
    fill, splitmix64, DirectionReport, Receiver, SendReport, ServeReport, StreamHeader,
    StreamTrailer, UpReport, WIRE_LEN,
};

/// Buffer size of every stream read and write.
const BUF: usize = 64 * 1024;
/// OS-level timeout of each blocking socket call; the deadline is re-checked between calls.
const SOCKET_POLL: Duration = Duration::from_millis(200);
/// How long `stream-send` retries a refused connect.
const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// The binary's clock: the one place it reads it.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// The command line: usage errors name the argument and exit 2 (clap), failed checks exit 1.
#[derive(Debug, Parser)]
#[command(
    name = "fo-lab",
    version = netns_tests::VERSION,
    about = "The IO side of the lab's tools",
    after_help = "ADDR may be IPv6 in brackets, e.g. [fd00:19::100]:5201."
)]
struct Cli {
    #[command(subcommand)]
    command: Tool,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// Serve verified streams; one JSON line per connection
    StreamServe(StreamServe),
    /// Send and receive one verified stream; one JSON line
    StreamSend(StreamSend),
    /// Handshake initiations with valid MAC1 from fresh keys, round-robin over source addresses
    Flood(Flood),
    /// Hostile UDP datagrams aimed at a WireGuard port
    Garbage(Garbage),
    /// Build the standard lab (as root) and run a verified stream through it
    Selftest(Selftest),
}

#[derive(Debug, clap::Args)]
struct StreamServe {
    /// Where to listen
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Seconds a connection may take before it is abandoned
    #[arg(long, value_name = "T", default_value_t = 300)]
    timeout_secs: u64,
}

#[derive(Debug, clap::Args)]
struct StreamSend {
    /// The stream server
    #[arg(long, value_name = "ADDR:PORT")]
    connect: SocketAddr,
    /// Bytes to send
    #[arg(long, value_name = "N")]
    up: u64,
    /// Bytes to ask the server for
    #[arg(long, value_name = "N")]
    down: u64,
    /// Seed of the byte pattern
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// Seconds the exchange may take
    #[arg(long, value_name = "T", default_value_t = 300)]
    timeout_secs: u64,
    /// Where to write the bytes received per 10 ms bin (JSON)
    #[arg(long, value_name = "PATH")]
    bins_file: Option<String>,
}

#[derive(Debug, clap::Args)]
struct Flood {
    /// The gateway's WireGuard port
    #[arg(long, value_name = "ADDR:PORT")]
    target: SocketAddr,
    /// The gateway's public key (base64), for MAC1
    #[arg(long, value_name = "KEY", value_parser = public_key)]
    public_key: tunnel::PublicKey,
    /// Handshake initiations to send
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    count: u64,
    /// Source addresses on this namespace's interfaces, comma-separated
    #[arg(
        long,
        value_name = "IP,IP,..",
        value_delimiter = ',',
        default_value = "0.0.0.0"
    )]
    sources: Vec<IpAddr>,
}

/// `--public-key`: base64, and not of low order.
fn public_key(value: &str) -> Result<tunnel::PublicKey, String> {
    tunnel::PublicKey::from_base64(value).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
struct Garbage {
    /// The WireGuard port to aim at
    #[arg(long, value_name = "ADDR:PORT")]
    target: SocketAddr,
    /// Datagrams to send
    #[arg(long, value_name = "N", default_value_t = 2000)]
    count: u64,
    /// Seed of the garbage
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, clap::Args)]
struct Selftest {
    /// Bytes each way of the verified stream
    #[arg(long, value_name = "N", default_value_t = 50_000_000)]
    bytes: u64,
    /// Datacenters in the lab
    #[arg(long, value_name = "N", default_value_t = 2)]
    dcs: usize,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Tool::StreamServe(args) => stream_serve(args),
        Tool::StreamSend(args) => stream_send(args),
        Tool::Flood(args) => flood(args),
        Tool::Garbage(args) => garbage(args),
        Tool::Selftest(args) => selftest(args),
    }
}

/// Prints one JSON line on stdout and flushes (stdout is locked, so lines never interleave).
fn print_json<T: serde::Serialize>(value: &T) {
    let line = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Shared fate of one connection's two directions: a deadline, an abort flag, and the first
/// failure (the root cause; the other direction then only reports "aborted").
#[derive(Debug)]
struct Ctl {
    deadline: Instant,
    timeout: Duration,
    abort: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Ctl {
    fn new(start: Instant, timeout: Duration) -> Arc<Ctl> {
        Arc::new(Ctl {
            deadline: start + timeout,
            timeout,
            abort: AtomicBool::new(false),
            first_error: Mutex::new(None),
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.abort.load(Ordering::Relaxed) {
            Err("aborted: the other direction failed".to_string())
        } else if now() >= self.deadline {
            Err(format!(
                "timeout: not finished within {} s",
                self.timeout.as_secs_f64()
            ))
        } else {
            Ok(())
        }
    }

    /// Records `err` unless an earlier failure was recorded, then stops both directions.
    fn fail(&self, stream: &TcpStream, err: &str) {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| err.to_string());
        self.abort.store(true, Ordering::Relaxed);
        let _ = stream.shutdown(Shutdown::Both);
    }

    /// The first failure recorded by [`Ctl::fail`].
    fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// One read that brings data; EOF is an error (we only read when more bytes are owed).
fn read_some(s: &mut TcpStream, buf: &mut [u8], ctl: &Ctl) -> Result<usize, String> {
    loop {
        ctl.check()?;
        match s.read(buf) {
            Ok(0) => return Err("connection closed by peer (EOF)".to_string()),
            Ok(n) => return Ok(n),
            Err(e) if is_retry(&e) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn read_full(s: &mut TcpStream, buf: &mut [u8], ctl: &Ctl) -> Result<(), String> {
    let mut at = 0;
    while let Some(rest) = buf.get_mut(at..).filter(|r| !r.is_empty()) {
        at += read_some(s, rest, ctl)?;
    }
    Ok(())
}

/// Writes all of `buf`, adding to `sent` as bytes are accepted.
fn write_full(s: &mut TcpStream, buf: &[u8], ctl: &Ctl, sent: &mut u64) -> Result<(), String> {
    let mut at = 0;
    while let Some(rest) = buf.get(at..).filter(|r| !r.is_empty()) {
        ctl.check()?;
        match s.write(rest) {
            Ok(0) => return Err("connection closed (write returned 0)".to_string()),
            Ok(n) => {
                at += n;
                *sent += n as u64;
            }
            Err(e) if is_retry(&e) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Sends `total` bytes of pattern `seed`; returns the bytes accepted by the socket and how it
/// ended.
fn send_pattern(s: &mut TcpStream, seed: u64, total: u64, ctl: &Ctl) -> (u64, Result<(), String>) {
    let mut buf = vec![0u8; BUF];
    let mut sent = 0u64;
    let mut off = 0u64;
    while off < total {
        let len = (total - off).min(BUF as u64) as usize;
        let Some(chunk) = buf.get_mut(..len) else {
            break;
        };
        fill(seed, off, chunk);
        if let Err(e) = write_full(s, chunk, ctl, &mut sent) {
            return (sent, Err(format!("send at offset {sent}: {e}")));
        }
        off += len as u64;
    }
    (sent, Ok(()))
}

/// Receives exactly `total` bytes of pattern `seed` into a [`Receiver`].
fn recv_pattern(
    s: &mut TcpStream,
    seed: u64,
    total: u64,
    ctl: &Ctl,
) -> (Receiver, Result<(), String>) {
    let mut rx = Receiver::new(seed);
    let mut buf = vec![0u8; BUF];
    while rx.received() < total {
        let want = (total - rx.received()).min(BUF as u64) as usize;
        let Some(dst) = buf.get_mut(..want) else {
            break;
        };
        match read_some(s, dst, ctl) {
            Ok(n) => rx.on_data(now(), dst.get(..n).unwrap_or_default()),
            Err(e) => {
                let at = rx.received();
                return (rx, Err(format!("receive at offset {at}: {e}")));
            }
        }
    }
    (rx, Ok(()))
}

fn set_poll_timeouts(s: &TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(SOCKET_POLL))?;
    s.set_write_timeout(Some(SOCKET_POLL))
}

// ---------------------------------------------------------------- stream-serve

fn stream_serve(args: StreamServe) -> ExitCode {
    let listen = args.listen;
    let timeout = Duration::from_secs(args.timeout_secs);
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fo-lab stream-serve: bind {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    eprintln!("fo-lab stream-serve: listening on {local}");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                thread::spawn(move || print_json(&serve_conn(stream, timeout)));
            }
            Err(e) => eprintln!("fo-lab stream-serve: accept: {e}"),
        }
    }
    ExitCode::SUCCESS
}

fn serve_conn(mut stream: TcpStream, timeout: Duration) -> ServeReport {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut report = ServeReport {
        peer,
        seed: 0,
        up_expected: 0,
        up: Receiver::new(0).report(),
        down_sent: 0,
        trailer_sent: false,
        ok: false,
        error: None,
    };
    let ctl = Ctl::new(now(), timeout);
    if let Err(e) = set_poll_timeouts(&stream) {
        report.error = Some(format!("socket options: {e}"));
        return report;
    }
    let mut head = [0u8; WIRE_LEN];
    if let Err(e) = read_full(&mut stream, &mut head, &ctl) {
        report.error = Some(format!("header: {e}"));
        return report;
    }
    let Some(header) = StreamHeader::decode(&head) else {
        report.error = Some("header: bad magic (not a fo-lab stream)".to_string());
        return report;
    };
    report.seed = header.seed;
    report.up_expected = header.up_bytes;

    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            report.error = Some(format!("clone socket: {e}"));
            return report;
        }
    };
    let sender_ctl = Arc::clone(&ctl);
    let sender = thread::spawn(move || {
        let res = send_pattern(
            &mut writer,
            header.down_seed(),
            header.down_bytes,
            &sender_ctl,
        );
        if let Err(e) = &res.1 {
            sender_ctl.fail(&writer, e);
        }
        res
    });
    let (rx, recv_res) = recv_pattern(&mut stream, header.seed, header.up_bytes, &ctl);
    if let Err(e) = &recv_res {
        ctl.fail(&stream, e);
    }
    let (down_sent, send_res) = sender
        .join()
        .unwrap_or_else(|_| (0, Err("sender thread panicked".to_string())));
    report.up = rx.report();
    report.down_sent = down_sent;

    let error = match (recv_res, send_res) {
        (Err(e), _) | (Ok(()), Err(e)) => Some(ctl.first_error().unwrap_or(e)),
        (Ok(()), Ok(())) => {
            let verified_all = rx.verified() == header.up_bytes && rx.corrupt_at().is_none();
            let trailer = StreamTrailer {
                ok: verified_all,
                verified: rx.verified(),
                longest_stall_us: u64::try_from(rx.longest_stall().as_micros()).unwrap_or(u64::MAX),
                corrupt_at: rx.corrupt_at(),
            };
            let mut ignored = 0;
            match write_full(&mut stream, &trailer.encode(), &ctl, &mut ignored) {
                Ok(()) => {
                    report.trailer_sent = true;
                    rx.corrupt_at()
                        .map(|at| format!("corruption in up stream at offset {at}"))
                }
                Err(e) => Some(format!("trailer: {e}")),
            }
        }
    };
    report.ok = error.is_none();
    report.error = error;
    report
}

// ---------------------------------------------------------------- stream-send

fn stream_send(args: StreamSend) -> ExitCode {
    let StreamSend {
        connect: target,
        up,
        down,
        seed,
        timeout_secs,
        bins_file,
    } = args;
    let timeout = Duration::from_secs(timeout_secs);

    let start = now();
    let ctl = Ctl::new(start, timeout);
    let header = StreamHeader {
        seed,
        up_bytes: up,
        down_bytes: down,
    };
    let outcome = run_send(target, header, &ctl);
    let elapsed_ms = now().saturating_duration_since(start).as_secs_f64() * 1e3;

    let mut down_report = outcome.rx.report();
    if let Some(path) = bins_file {
        match serde_json::to_vec(&outcome.rx.goodput_bins()).map_err(io::Error::other) {
            Ok(json) => match std::fs::write(&path, json) {
                Ok(()) => down_report.bins_file = Some(path),
                Err(e) => eprintln!("fo-lab stream-send: write {path}: {e}"),
            },
            Err(e) => eprintln!("fo-lab stream-send: bins: {e}"),
        }
    }
    let trailer = outcome.trailer;
    let mut error = outcome.error;
    if error.is_none() {
        error = judge(&header, &down_report, trailer.as_ref());
    }
    let report = SendReport {
        ok: error.is_none(),
        up: UpReport {
            bytes_sent: outcome.sent,
            verified_by_server: trailer.map_or(0, |t| t.verified),
            server_longest_stall_ms: trailer.map(|t| t.longest_stall_us as f64 / 1e3),
            corrupt_at: trailer.and_then(|t| t.corrupt_at),
        },
        down: down_report,
        elapsed_ms,
        seed,
        error,
    };
    print_json(&report);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The error, if the finished exchange did not verify every byte both ways.
fn judge(
    header: &StreamHeader,
    down: &DirectionReport,
    trailer: Option<&StreamTrailer>,
) -> Option<String> {
    if let Some(at) = down.corrupt_at {
        return Some(format!("corruption in down stream at offset {at}"));
    }
    if down.verified != header.down_bytes {
        return Some(format!(
            "down stream: verified {} of {}",
            down.verified, header.down_bytes
        ));
    }
    let Some(t) = trailer else {
        return Some("no trailer from the server".to_string());
    };
    if let Some(at) = t.corrupt_at {
        return Some(format!("corruption in up stream at offset {at} (server)"));
    }
    if !t.ok || t.verified != header.up_bytes {
        return Some(format!(
            "up stream: server verified {} of {}",
            t.verified, header.up_bytes
        ));
    }
    None
}

/// What one stream-send exchange produced, however far it got.
#[derive(Debug)]
struct SendOutcome {
    sent: u64,
    rx: Receiver,
    trailer: Option<StreamTrailer>,
    error: Option<String>,
}

fn connect(target: SocketAddr, ctl: &Ctl, start: Instant) -> Result<TcpStream, String> {
    loop {
        ctl.check()?;
        let left = ctl
            .deadline
            .saturating_duration_since(now())
            .max(Duration::from_millis(1));
        match TcpStream::connect_timeout(&target, left) {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == io::ErrorKind::ConnectionRefused
                    && now().saturating_duration_since(start) < CONNECT_RETRY =>
            {
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("connect {target}: {e}")),
        }
    }
}

fn run_send(target: SocketAddr, header: StreamHeader, ctl: &Arc<Ctl>) -> SendOutcome {
    let mut out = SendOutcome {
        sent: 0,
        rx: Receiver::new(header.down_seed()),
        trailer: None,
        error: None,
    };
    let mut stream = match connect(target, ctl, now()) {
        Ok(s) => s,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    if let Err(e) = set_poll_timeouts(&stream) {
        out.error = Some(format!("socket options: {e}"));
        return out;
    }
    let mut header_sent = 0;
    if let Err(e) = write_full(&mut stream, &header.encode(), ctl, &mut header_sent) {
        out.error = Some(format!("header: {e}"));
        return out;
    }
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            out.error = Some(format!("clone socket: {e}"));
            return out;
        }
    };
    let sender_ctl = Arc::clone(ctl);
    let sender = thread::spawn(move || {
        let res = send_pattern(&mut writer, header.seed, header.up_bytes, &sender_ctl);
        if let Err(e) = &res.1 {
            sender_ctl.fail(&writer, e);
        }
        res
    });
    let (rx, mut recv_res) = recv_pattern(&mut stream, header.down_seed(), header.down_bytes, ctl);
    out.rx = rx;
    if recv_res.is_ok() {
        let mut tail = [0u8; WIRE_LEN];
        recv_res = read_full(&mut stream, &mut tail, ctl)
            .map_err(|e| format!("trailer: {e}"))
            .and_then(|()| {
                StreamTrailer::decode(&tail).ok_or_else(|| "trailer: bad magic".to_string())
            })
            .map(|t| out.trailer = Some(t));
    }
    if let Err(e) = &recv_res {
        ctl.fail(&stream, e);
    }
    let (sent, send_res) = sender
        .join()
        .unwrap_or_else(|_| (0, Err("sender thread panicked".to_string())));
    out.sent = sent;
    out.error = match (recv_res, send_res) {
        (Err(e), _) | (Ok(()), Err(e)) => Some(ctl.first_error().unwrap_or(e)),
        (Ok(()), Ok(())) => None,
    };
    out
}

// ---------------------------------------------------------------- garbage

/// Tiny deterministic generator (splitmix64 over a counter).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T], default: T) -> T {
        let i = self.below(items.len() as u64) as usize;
        items.get(i).copied().unwrap_or(default)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        fill(self.next(), 0, &mut v);
        v
    }
}

/// A WireGuard-like datagram: type byte, three reserved bytes, random rest, `len` total.
fn typed(rng: &mut Rng, ty: u8, reserved_zero: bool, len: usize) -> Vec<u8> {
    let mut v = rng.bytes(len);
    if let Some(t) = v.first_mut() {
        *t = ty;
    }
    for r in v.iter_mut().skip(1).take(3) {
        *r = if reserved_zero { 0 } else { 0xA5 };
    }
    v
}

/// Datagram classes; the first pass sends every fixed case once, then random picks.
const CLASSES: &[&str] = &[
    "short",
    "bad_type",
    "bad_reserved",
    "init",
    "response",
    "cookie",
    "data",
    "random",
];

fn datagram(class: &str, rng: &mut Rng, case: u64) -> Vec<u8> {
    match class {
        "short" => {
            let len = rng.pick(&[0usize, 1, 3, 4], 0);
            typed(rng, rng_type_1_to_4(case), true, len)
        }
        "bad_type" => {
            let ty = rng.pick(&[0u8, 5, 255], 0);
            let len = rng.pick(&[4usize, 16, 32, 64, 92, 148, 1000], 32);
            typed(rng, ty, case & 1 == 0, len)
        }
        "bad_reserved" => {
            let (ty, len) = rng.pick(
                &[(1u8, 148usize), (2, 92), (3, 64), (4, 32), (4, 96)],
                (1, 148),
            );
            typed(rng, ty, false, len)
        }
        "init" => {
            let len = rng.pick(&[147usize, 148, 149], 148);
            typed(rng, 1, true, len)
        }
        "response" => {
            let len = rng.pick(&[91usize, 92, 93], 92);
            typed(rng, 2, true, len)
        }
        "cookie" => {
            let len = rng.pick(&[63usize, 64, 65], 64);
            typed(rng, 3, true, len)
        }
        "data" => {
            let len = if case & 1 == 0 {
                rng.pick(&[16usize, 31, 32], 32)
            } else {
                16 + rng.below(1500 - 16 + 1) as usize
            };
            let mut v = typed(rng, 4, true, len);
            // Small receiver indices and counters too: they are what an implementation may
            // actually have allocated or expect next.
            let idx = if rng.below(4) == 0 {
                rng.below(4) as u32
            } else {
                rng.next() as u32
            };
            let ctr = if rng.below(4) == 0 {
                rng.below(16)
            } else {
                rng.next()
            };
            for (dst, src) in v
                .iter_mut()
                .skip(4)
                .zip(idx.to_le_bytes().iter().chain(&ctr.to_le_bytes()))
            {
                *dst = *src;
            }
            v
        }
        _ => {
            let len = rng.below(1501) as usize;
            rng.bytes(len)
        }
    }
}

fn rng_type_1_to_4(case: u64) -> u8 {
    (case % 4) as u8 + 1
}

/// Sends `count` handshake initiations with valid MAC1 for the gateway key `public-key`, each
/// from a fresh random static key (so none is a configured peer), round-robin over UDP sockets
/// bound to `sources` (comma-separated addresses on this namespace's interfaces). This is the
/// flood a WireGuard responder must survive with cookies: it cannot be told from a real client
/// before the expensive Diffie-Hellman, except by rate and source address.
fn flood(args: Flood) -> ExitCode {
    use tunnel::{AllowedIps, EndpointPolicy, Outcome, PrivateKey, Tunnel, TunnelConfig};
    let Flood {
        target,
        count,
        public_key: gateway,
        sources,
    } = args;
    let mut sockets = Vec::new();
    for ip in sources {
        match UdpSocket::bind(SocketAddr::new(ip, 0)) {
            Ok(sock) => sockets.push(sock),
            Err(e) => {
                eprintln!("fo-lab flood: bind {ip}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let start = now();
    let mut buf = vec![0u8; 2048];
    let (mut sent, mut errors) = (0u64, 0u64);
    for i in 0..count {
        let Ok(mut tunnel) = Tunnel::new(TunnelConfig {
            private_key: PrivateKey::generate(),
            peer_public_key: gateway,
            persistent_keepalive: None,
            preshared_key: None,
            index: 0,
            allowed_ips: AllowedIps::default(),
            endpoint: EndpointPolicy::Fixed(target),
            keep_established: true,
        }) else {
            continue;
        };
        let socket = sockets.get((i as usize) % sockets.len().max(1));
        if let (Outcome::Transmit(t), Some(socket)) =
            (tunnel.handle_timeout(now(), &mut buf), socket)
        {
            match socket.send_to(t.datagram, target) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
    }
    let report = serde_json::json!({
        "target": target.to_string(),
        "sent": sent,
        "send_errors": errors,
        "sources": sockets.len(),
        "elapsed_ms": now().duration_since(start).as_secs_f64() * 1e3,
    });
    println!("{report}");
    if sent > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn garbage(args: Garbage) -> ExitCode {
    let Garbage {
        target,
        count,
        seed,
    } = args;
    let mut rng = Rng(seed);
    let bind = if target.is_ipv6() {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    };
    let sock = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fo-lab garbage: bind {bind}: {e}");
            return ExitCode::FAILURE;
        }
    };

    // The largest UDP payloads: 65507 over IPv4; over IPv6 also 65527 (65535 - 8).
    let mut jumbos = vec![65_507usize];
    if target.is_ipv6() {
        jumbos.push(65_527);
    }
    let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sent, mut bytes, mut attempts) = (0u64, 0u64, 0u64);
    let mut send = |class: &str, dgram: &[u8]| {
        attempts += 1;
        match sock.send_to(dgram, target) {
            Ok(_) => {
                sent += 1;
                bytes += dgram.len() as u64;
                *by_class.entry(class.to_string()).or_default() += 1;
            }
            Err(e) => *errors.entry(format!("{class}: {e}")).or_default() += 1,
        }
        if attempts % 64 == 0 {
            thread::sleep(Duration::from_millis(2));
        }
    };

    let mut budget = count;
    for len in &jumbos {
        if budget == 0 {
            break;
        }
        let d = rng.bytes(*len);
        send("jumbo", &d);
        budget -= 1;
    }
    // First pass: every class with every case variant, then random picks.
    let mut case = 0u64;
    while budget > 0 {
        let class = if case < (CLASSES.len() as u64) * 8 {
            CLASSES
                .get((case % CLASSES.len() as u64) as usize)
                .copied()
                .unwrap_or("random")
        } else {
            rng.pick(CLASSES, "random")
        };
        let d = datagram(class, &mut rng, case / CLASSES.len() as u64);
        send(class, &d);
        case += 1;
        budget -= 1;
    }
    print_json(&serde_json::json!({
        "target": target.to_string(),
        "sent": sent,
        "bytes": bytes,
        "send_errors": errors,
        "by_class": by_class,
    }));
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------- selftest

fn selftest(args: Selftest) -> ExitCode {
    match run_selftest(args.bytes, args.dcs) {
        Ok(()) => {
            println!("selftest: PASS");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("selftest: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_selftest(bytes: u64, dcs: usize) -> io::Result<()> {
    let fail = |msg: String| io::Error::other(msg);
    let t0 = now();
    let mut lab = Lab::new("fo-lab-selftest")?;
    let topo = Topology::build(&mut lab, dcs)?;
    let names: Vec<String> = lab
        .namespaces()
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    let dir = lab.dir().to_path_buf();
    println!(
        "lab {}: {} namespaces built and checked in {:.0} ms ({})",
        lab.id(),
        names.len(),
        now().saturating_duration_since(t0).as_secs_f64() * 1e3,
        names.join(" ")
    );

    let bin = lab::bin_path("fo-lab");
    let bin = bin.to_string_lossy().into_owned();
    let server = lab.spawn(
        &topo.server,
        "stream-serve",
        &[&bin, "stream-serve", "--listen", "[::]:5201"],
    )?;
    lab.wait_tcp_listening(&topo.server, 5201)?;
    let dc1 = topo.dc(1).ok_or_else(|| fail("no dc1".into()))?;
    let n = bytes.to_string();
    for target in [
        format!("{}:5201", lab::SERVER_IP4),
        format!("[{}]:5201", lab::SERVER_IP6),
    ] {
        let args = [
            &bin,
            "stream-send",
            "--connect",
            &target,
            "--up",
            &n,
            "--down",
            &n,
            "--timeout-secs",
            "60",
        ];
        let out = lab.exec_unchecked(dc1, &args)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = SendReport::parse(&stdout).map_err(|e| {
            fail(format!(
                "stream-send output {stdout:?}: {e}; stderr {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })?;
        let up_mbps = report.up.bytes_sent as f64 * 8.0 / (report.elapsed_ms / 1e3) / 1e6;
        println!(
            "dc1 -> {target}: ok={} up {} B verified {} ({:.0} Mbit/s over the whole exchange), \
             down {} B verified {} ({:.0} Mbit/s), longest stall up {:.1} ms down {:.1} ms, \
             {:.0} ms",
            report.ok,
            report.up.bytes_sent,
            report.up.verified_by_server,
            up_mbps,
            report.down.bytes,
            report.down.verified,
            report.down.goodput_mbps,
            report.up.server_longest_stall_ms.unwrap_or(f64::NAN),
            report.down.longest_stall_ms,
            report.elapsed_ms,
        );
        println!("  {}", stdout.trim());
        if !report.ok || !out.status.success() {
            return Err(fail(format!(
                "stream to {target} failed: {:?}",
                report.error
            )));
        }
    }

    // Garbage at a UDP socket the test opened inside dc1 (run_in): count what arrives,
    // including the 65507-byte datagram.
    let sock = lab.run_in(dc1, || UdpSocket::bind("0.0.0.0:51820"))??;
    lab.wait_udp_bound(dc1, 51820)?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    let target = format!("{}:51820", lab::dc_underlay_ip(1));
    let out = lab.exec(
        &topo.client,
        &[&bin, "garbage", "--target", &target, "--count", "300"],
    )?;
    println!(
        "garbage -> {target}: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let (mut got, mut largest) = (0u64, 0usize);
    let mut buf = vec![0u8; 65_536];
    while let Ok((len, _)) = sock.recv_from(&mut buf) {
        got += 1;
        largest = largest.max(len);
    }
    println!("  dc1 received {got} datagrams, largest {largest} bytes");
    if got == 0 || largest != 65_507 {
        return Err(fail("garbage did not arrive as sent".into()));
    }

    // Daemon handle: stop/continue, then kill.
    server.signal(libc::SIGSTOP)?;
    server.signal(libc::SIGCONT)?;
    if !server.is_running() {
        return Err(fail("stream-serve died".into()));
    }
    let served = server.read_stdout();
    println!("stream-serve saw {} connection(s)", served.lines().count());

    drop(lab);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    let list = String::from_utf8_lossy(&list.stdout);
    let left: Vec<&String> = names.iter().filter(|n| list.contains(n.as_str())).collect();
    if !left.is_empty() {
        return Err(fail(format!("namespaces left after drop: {left:?}")));
    }
    if dir.exists() && std::env::var("FAILOVER_LAB_KEEP").as_deref() != Ok("1") {
        return Err(fail(format!("{} left after drop", dir.display())));
    }
    if server.is_running() {
        return Err(fail("stream-serve still running after drop".into()));
    }
    println!(
        "cleanup: namespaces, processes and {} removed",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Tool, clap::Error> {
        Cli::try_parse_from(std::iter::once("fo-lab").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_labs_invocations_parse() {
        // as scenario.rs, tests/hostile.rs and the guest scripts run it
        let Tool::StreamSend(s) = parse(&[
            "stream-send",
            "--connect",
            "[fd00:19::100]:5201",
            "--up",
            "5",
            "--down",
            "6",
            "--seed",
            "11",
            "--timeout-secs",
            "240",
        ])
        .unwrap() else {
            panic!("not stream-send");
        };
        assert_eq!((s.up, s.down, s.seed, s.timeout_secs), (5, 6, 11, 240));
        assert!(s.bins_file.is_none());
        let Tool::StreamServe(s) = parse(&["stream-serve", "--listen", "[::]:5201"]).unwrap()
        else {
            panic!("not stream-serve");
        };
        assert_eq!(s.timeout_secs, 300);
        let Tool::Flood(f) = parse(&[
            "flood",
            "--target",
            "198.18.0.11:51820",
            "--public-key",
            "hq7aij0ZmmD1zIWdCs0XTzIw1HvUAn9wTcXD53zON0c=",
            "--sources",
            "198.18.0.100,198.18.0.101",
        ])
        .unwrap() else {
            panic!("not flood");
        };
        assert_eq!((f.count, f.sources.len()), (10_000, 2));
        let Tool::Garbage(g) = parse(&[
            "garbage",
            "--target",
            "198.18.0.11:51820",
            "--count",
            "3000",
        ])
        .unwrap() else {
            panic!("not garbage");
        };
        assert_eq!((g.count, g.seed), (3000, 1));
        let Tool::Selftest(t) = parse(&["selftest"]).unwrap() else {
            panic!("not selftest");
        };
        assert_eq!((t.bytes, t.dcs), (50_000_000, 2));
    }

    #[test]
    fn refusals_exit_2() {
        for bad in [
            &[][..],
            &[
                "stream-send",
                "--connect",
                "10.0.0.1",
                "--up",
                "1",
                "--down",
                "1",
            ],
            &["garbage", "--target", "10.0.0.1:9", "--bogus", "1"],
            &["flood", "--target", "10.0.0.1:9", "--public-key", "short"],
        ] {
            let e = parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
