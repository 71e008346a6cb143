//! A watch on the routing daemon that exports the gateway's claims (BIRD), when the
//! configuration names its control socket (`routing_daemon_socket`).
//!
//! The gateway never depends on it: claims are kernel routes, made whether BIRD runs or not. But
//! a gateway whose BIRD is down (not running, a broken configuration, its BGP sessions idle)
//! attracts nothing, and an operator must see that where they look: every few seconds a task
//! off the data loop asks BIRD `show protocols` over its control socket, counts the BGP
//! sessions and how many are Established, logs every change, counts failed checks, and
//! `failoverctl status` and the metrics show the last answer. A check never blocks the
//! gateway: it has a time limit and runs on its own task.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

/// Time between two checks.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest one check may take.
const CHECK_LIMIT: Duration = Duration::from_secs(1);
/// Most lines of an answer read.
const MAX_LINES: usize = 4096;

/// What the last check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// checks made
    pub checks: u64,
    /// checks that failed (no daemon, no answer, an answer that did not parse)
    pub failures: u64,
    /// the last check got an answer
    pub reachable: bool,
    /// BGP sessions it has
    pub bgp_sessions: u32,
    /// of those, Established
    pub bgp_established: u32,
    /// why the last check failed
    pub last_error: Option<String>,
}

/// The shared view of the watch.
pub type Shared = Arc<Mutex<Health>>;

/// Counts BGP sessions and Established ones in BIRD's `show protocols` answer.
pub fn count_bgp(answer: &str) -> (u32, u32) {
    let mut sessions = 0;
    let mut established = 0;
    for line in answer.lines() {
        // "1002-name BGP ---  up  12:00:00  Established" or " name BGP ... start ... Idle"
        let words: Vec<&str> = line
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == '-')
            .split_whitespace()
            .collect();
        if words.get(1) == Some(&"BGP") {
            sessions += 1;
            if words.contains(&"Established") {
                established += 1;
            }
        }
    }
    (sessions, established)
}

/// One check: the answer to `show protocols`, or why there is none.
async fn ask(socket: &PathBuf) -> Result<String, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // the greeting: "0001 BIRD 2.0.12 ready."
    let hello = lines
        .next_line()
        .await
        .map_err(|e| format!("reading the greeting: {e}"))?
        .unwrap_or_default();
    if !hello.starts_with("0001") {
        return Err(format!("not BIRD's greeting: {hello:?}"));
    }
    write
        .write_all(b"show protocols\n")
        .await
        .map_err(|e| format!("asking: {e}"))?;
    let mut answer = String::new();
    for _ in 0..MAX_LINES {
        let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
        else {
            return Err("the answer ended early".into());
        };
        // "0000" ends a successful answer; "8xxx"/"9xxx" are errors
        if line.starts_with("0000") {
            return Ok(answer);
        }
        if line.starts_with('8') || line.starts_with('9') {
            return Err(format!("BIRD answered an error: {line}"));
        }
        answer.push_str(&line);
        answer.push('\n');
    }
    Err(format!("an answer of more than {MAX_LINES} lines"))
}

/// Starts the watch on `socket`; the returned state is updated every [`CHECK_EVERY`].
pub fn watch(socket: PathBuf) -> Shared {
    let shared: Shared = Arc::new(Mutex::new(Health::default()));
    let state = Arc::clone(&shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = match tokio::time::timeout(CHECK_LIMIT, ask(&socket)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {CHECK_LIMIT:?}")),
            };
            let Ok(mut h) = state.lock() else { return };
            let before = h.clone();
            h.checks += 1;
            match result {
                Ok(answer) => {
                    let (sessions, established) = count_bgp(&answer);
                    h.reachable = true;
                    h.bgp_sessions = sessions;
                    h.bgp_established = established;
                    h.last_error = None;
                }
                Err(e) => {
                    h.failures += 1;
                    h.reachable = false;
                    h.bgp_established = 0;
                    h.last_error = Some(e);
                }
            }
            let changed = (
                before.reachable,
                before.bgp_sessions,
                before.bgp_established,
            ) != (h.reachable, h.bgp_sessions, h.bgp_established)
                || before.checks == 0;
            if changed {
                if h.reachable && h.bgp_established == h.bgp_sessions && h.bgp_sessions > 0 {
                    tracing::info!(
                        socket = %socket.display(),
                        sessions = h.bgp_sessions,
                        "routing daemon up, every BGP session established"
                    );
                } else {
                    tracing::warn!(
                        socket = %socket.display(),
                        reachable = h.reachable,
                        sessions = h.bgp_sessions,
                        established = h.bgp_established,
                        error = h.last_error.as_deref().unwrap_or(""),
                        "routing daemon not exporting our claims: the return path cannot move \
                         here (the gateway keeps serving; checking again every 2 s)"
                    );
                }
            }
        }
    });
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgp_sessions_are_counted_from_show_protocols() {
        let answer = "2002-Name       Proto      Table      State  Since         Info\n\
                      1002-device1    Device     ---        up     06:45:09.123  \n \
                      kernel4    Kernel     master4    up     06:45:09.123  \n \
                      bfd1       BFD        ---        up     06:45:09.123  \n \
                      backbone4  BGP        ---        up     06:45:10.321  Established   \n \
                      backbone6  BGP        ---        start  06:45:10.321  Active        Socket: Connection refused\n";
        assert_eq!(count_bgp(answer), (2, 1));
        assert_eq!(count_bgp(""), (0, 0));
        assert_eq!(count_bgp("garbage\nBGP\n\u{0}\u{1}\n"), (0, 0));
    }
}
