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

mod frames;
mod stream_corpus;
mod vhost_corpus;

use frames::*;

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
