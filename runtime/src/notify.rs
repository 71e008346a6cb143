//! systemd's notification protocol (`sd_notify(3)`), without libsystemd: datagrams of
//! `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace).
//!
//! - `READY=1` once the tunnels are configured and the control socket answers;
//! - `STATUS=` names the active datacenter (or the gateway's claims), updated when it changes;
//! - `WATCHDOG=1` from the daemon's own IO loop, at half `$WATCHDOG_USEC`: a wedged loop stops
//!   sending it and systemd restarts the daemon (`WatchdogSec=` in the unit);
//! - `STOPPING=1` at shutdown.
//!
//! Without `$NOTIFY_SOCKET` every call does nothing. Send failures are ignored: a notification
//! is never a reason to stop forwarding.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The notification socket and the watchdog's schedule.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
    next_watchdog: Option<Instant>,
    last_status: String,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (the watchdog applies only
    /// when the PID is ours or unset). The variables are removed from the environment, so no
    /// child inherits them.
    pub fn from_env(now: Instant) -> Self {
        let path = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let socket = path.and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            let addr = match p.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt as _;
                    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&p).ok()?,
            };
            // never block the loop on a receiver that does not read (a full queue drops the
            // notification: the next one follows soon)
            let socket = UnixDatagram::unbound().ok()?;
            socket.set_nonblocking(true).ok()?;
            Some((socket, addr))
        });
        let ours = pid.is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = usec
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && ours && socket.is_some())
            .map(|u| Duration::from_micros(u) / 2);
        Self {
            socket,
            next_watchdog: watchdog.map(|_| now),
            watchdog,
            last_status: String::new(),
        }
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket {
            let _ = socket.send_to_addr(message.as_bytes(), addr);
        }
    }

    /// Whether systemd listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// `READY=1` with a first status line.
    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_owned();
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// `STATUS=...` when it changed.
    pub fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_owned();
            self.send(&format!("STATUS={status}"));
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// When the loop must wake for the watchdog next (`None`: no watchdog).
    pub fn next_watchdog(&self) -> Option<Instant> {
        self.next_watchdog
    }

    /// Sends `WATCHDOG=1` if it is due. Call from the IO loop on every wake-up, so that only a
    /// loop that still runs keeps systemd satisfied.
    pub fn kick(&mut self, now: Instant) {
        if let (Some(due), Some(every)) = (self.next_watchdog, self.watchdog) {
            if now >= due {
                self.send("WATCHDOG=1");
                self.next_watchdog = Some(now + every);
            }
        }
    }
}
