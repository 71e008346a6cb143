//! The daemons' library: configuration, the control socket, keys, interface setup, the client
//! and gateway IO loops. `failoverd` (the binary) is its command line; `vmm-shim` links the same
//! configuration, control socket and client runtime pieces, so the VMM backend and the daemon
//! stay one program with two front ends.
//!
//! This is the IO layer: every protocol decision is made by the sans-IO crates it drives
//! (`engine`, `tunnel`).

pub mod client;
pub mod config;
pub mod control;
pub mod gateway;
pub mod keyfile;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod privileges;
pub mod takeover;

use tunnel::DropCounters;

/// Every buffer on the data path holds the largest datagram plus WireGuard's overhead, so
/// `tunnel::min_buffer_len` holds for any input.
pub const BUFFER_LEN: usize = tunnel::min_buffer_len(tunnel::MAX_DATAGRAM);

pub mod clock {
    //! The one place the daemon reads the clock; the cores get `now` from here.
    //!
    //! Known gap (the laptop-life work): `Instant` is CLOCK_MONOTONIC, which stops during
    //! suspend; boringtun's own timers already use CLOCK_BOOTTIME.
    use std::time::{Duration, Instant};

    /// How long the loop sleeps when no timer is pending.
    pub const IDLE_WAKE: Duration = Duration::from_secs(1);

    /// The current time, read once per wake-up of the IO loop.
    #[allow(clippy::disallowed_methods)] // the IO layer is where the clock is read
    pub fn now() -> Instant {
        Instant::now()
    }

    /// Wall-clock milliseconds since the Unix epoch, for event logs read by people.
    #[allow(clippy::disallowed_methods)] // wall time for display only, never for timers
    pub fn unix_millis() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// `{label: count}` for every non-zero drop counter.
pub fn drops_json(drops: &DropCounters) -> serde_json::Value {
    drops
        .nonzero()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
        .collect()
}

/// Logs to stderr: human-readable on a terminal; under systemd (`$JOURNAL_STREAM` set) without
/// timestamps or colours, which the journal adds itself, one event per line. The filter comes
/// from `$RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .init();
    } else {
        builder.init();
    }
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalRequest {
    /// SIGTERM or SIGINT: stop
    Stop,
    /// SIGHUP: re-read the configuration
    Reload,
}

/// The daemon's signals: SIGTERM and SIGINT stop it, SIGHUP reloads it.
#[allow(missing_debug_implementations)] // tokio's Signal has no Debug
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the signal handlers (inside a tokio runtime).
    pub fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal's request. Cancel-safe.
    pub async fn next(&mut self) -> SignalRequest {
        tokio::select! {
            _ = self.term.recv() => SignalRequest::Stop,
            _ = self.int.recv() => SignalRequest::Stop,
            _ = self.hup.recv() => SignalRequest::Reload,
        }
    }

    /// Resolves at the next stop request (SIGHUP is ignored: for loops without a reload).
    pub async fn wait(&mut self) {
        while self.next().await != SignalRequest::Stop {}
    }
}
