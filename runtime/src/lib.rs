//! The IO floor both client front ends (`failoverd` with a TUN, `vmm-shim` below a guest) and
//! the gateway stand on: the one clock read per wake-up, the underlay socket, configuration
//! loading, the control server and its answers, metrics, sd_notify, the network watcher,
//! privileges, and the one loop ([`drive`]) that drives the engine between the underlay and a
//! [`drive::LocalLink`].
//!
//! Every protocol decision is made by the sans-IO crates below (`engine`, `tunnel`); what lives
//! here moves bytes, reads the clock and talks to the kernel.

pub mod client;
pub mod config;
pub mod control;
pub mod drive;
pub mod keyfile;
pub mod metrics;
pub mod netwatch;
pub mod notify;
pub mod privileges;
pub mod roaming;
pub mod uapi;
pub mod underlay;

use tunnel::DropCounters;

/// Every buffer on the data path holds the largest datagram plus WireGuard's overhead, so
/// `tunnel::min_buffer_len` holds for any input.
pub const BUFFER_LEN: usize = tunnel::min_buffer_len(tunnel::MAX_DATAGRAM);

pub mod clock {
    //! The one place the daemon reads the clock; the cores get `now` from here.
    //!
    //! Time is CLOCK_BOOTTIME, which keeps counting while a laptop sleeps (Linux's
    //! CLOCK_MONOTONIC, behind `Instant` and tokio, stops): an `Instant` from [`now`] is the
    //! start instant plus the boot time elapsed since, so the cores see a suspend as the time
    //! it really was, and boringtun's timers (which read CLOCK_BOOTTIME themselves) agree with
    //! ours. Sleeps are asked of tokio as durations ([`sleep_until`]), never as instants of
    //! this clock. The engine notices when the process did not run (suspend, SIGSTOP, a paused
    //! VM) from how late it is called ([`engine::STALL`]).
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// How long the loop sleeps when no timer is pending.
    pub const IDLE_WAKE: Duration = Duration::from_secs(1);

    /// CLOCK_BOOTTIME.
    #[allow(unsafe_code)]
    fn boottime() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `ts`, which we own; CLOCK_BOOTTIME
        // exists on every Linux this runs on (2.6.39+), and it cannot fail with a valid pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    }

    /// The current time on the boot-time clock, read once per wake-up of the IO loop.
    #[allow(clippy::disallowed_methods)] // the IO layer is where the clock is read
    pub fn now() -> Instant {
        static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
        let (start, boot_at_start) = *BASE.get_or_init(|| (Instant::now(), boottime()));
        start + boottime().saturating_sub(boot_at_start)
    }

    /// Sleeps until `deadline` on this clock. The deadline is mapped back onto tokio's
    /// (monotonic) clock by the current difference of the two, which grows only when the
    /// machine sleeps — not re-based on "now": a due deadline must stay a fixed past instant,
    /// or a loop kept busy by packets (tokio's timer wheel advances only when the driver turns)
    /// would never see it elapse. After a suspend it may wake up to one remaining wait late;
    /// the engine notices.
    pub fn sleep_until(deadline: Instant) -> tokio::time::Sleep {
        tokio::time::sleep_until(tokio_instant(deadline))
    }

    /// `deadline` on tokio's clock, mapped as [`sleep_until`] does: for a `Sleep` that is
    /// kept and reset only when the deadline changes.
    #[allow(clippy::disallowed_methods)] // the monotonic reading that anchors the mapping
    pub fn tokio_instant(deadline: Instant) -> tokio::time::Instant {
        let monotonic = Instant::now();
        let ahead = now().saturating_duration_since(monotonic);
        deadline.checked_sub(ahead).unwrap_or(monotonic).into()
    }

    /// The wall-clock time of `t` (an instant of [`now`]'s clock), in milliseconds since the
    /// Unix epoch, for event logs read by people: mapped through one reading of both clocks
    /// taken at the first call, so the same instant always gives the same time.
    pub fn unix_millis_at(t: Instant) -> u64 {
        static BASE: OnceLock<(Instant, u64)> = OnceLock::new();
        let (base, unix) = *BASE.get_or_init(|| (now(), unix_millis()));
        // signed nanoseconds from the base, floored to milliseconds either side of it
        let offset = if t >= base {
            i128::try_from((t - base).as_nanos()).unwrap_or(i128::MAX)
        } else {
            -i128::try_from((base - t).as_nanos()).unwrap_or(i128::MAX)
        };
        let ms = i128::from(unix).saturating_add(offset.div_euclid(1_000_000));
        u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
    }

    /// Wall-clock milliseconds since the Unix epoch, for event logs read by people.
    #[allow(clippy::disallowed_methods)] // wall time for display only, never for timers
    pub fn unix_millis() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn an_instant_always_has_the_same_wall_clock_time() {
            let t = now();
            let a = unix_millis_at(t);
            std::thread::sleep(Duration::from_millis(3));
            assert_eq!(unix_millis_at(t), a);
            assert_eq!(unix_millis_at(t + Duration::from_secs(2)), a + 2000);
            assert!(a.abs_diff(unix_millis()) < 1000);
        }

        #[test]
        fn boot_time_advances_with_monotonic_time() {
            let a = now();
            std::thread::sleep(Duration::from_millis(20));
            let d = now() - a;
            assert!(
                d >= Duration::from_millis(20) && d < Duration::from_secs(5),
                "{d:?}"
            );
        }
    }
}

/// `{label: count}` for every non-zero drop counter, for the control answers.
pub fn drop_counts(drops: &DropCounters) -> control_proto::Counts {
    drops.nonzero().map(|(k, v)| (k.to_owned(), v)).collect()
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
