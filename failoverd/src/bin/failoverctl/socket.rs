//! One request on the control socket: connect, write a JSON line, read a JSON line, all within
//! a deadline; every failure says what to do.

use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest answer read (a flow list can be long; `--limit` bounds it).
pub const MAX_ANSWER: u64 = 64 << 20;

/// Why no answer was had.
#[derive(Debug)]
pub enum Failure {
    /// the socket could not be reached or spoken to
    Unreachable(String),
    /// the daemon answered `ok: false`
    Refused(String),
}

fn unreachable(path: &Path, e: &std::io::Error) -> Failure {
    let shown = path.display();
    Failure::Unreachable(match e.kind() {
        ErrorKind::NotFound => format!(
            "{shown}: no such socket; is failoverd running? pass --socket PATH (or set FAILOVERCTL_SOCKET) if it uses another control_socket"
        ),
        ErrorKind::PermissionDenied => format!(
            "{shown}: permission denied; run as root or as a member of the control group (the socket is served to root and the daemon's user)"
        ),
        ErrorKind::ConnectionRefused => format!(
            "{shown}: nobody is listening (a stale socket?); is failoverd running? pass --socket PATH if it uses another control_socket"
        ),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
            "{shown}: no answer within the timeout; the daemon may be stuck or overloaded; retry, or check its log"
        ),
        _ => format!("{shown}: {e}; is failoverd running? pass --socket PATH"),
    })
}

/// The time left until `deadline`, or a timeout error.
#[allow(clippy::disallowed_methods)] // a command-line client's one deadline, not a sans-IO core
fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ErrorKind::TimedOut.into())
}

/// Sends `request` to the socket at `path` and returns the daemon's `ok: true` answer; the
/// whole exchange gets `timeout`.
#[allow(clippy::disallowed_methods)] // see `remaining`
pub fn ask(
    path: &Path,
    request: &control_proto::Request,
    timeout: Duration,
) -> Result<Value, Failure> {
    let deadline = Instant::now() + timeout;
    // A unix connect can block when the listener's backlog is full: bound it with a thread.
    let (tx, rx) = mpsc::channel();
    let target = PathBuf::from(path);
    std::thread::spawn(move || {
        let _ = tx.send(UnixStream::connect(&target));
    });
    let mut stream = match rx.recv_timeout(timeout) {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(unreachable(path, &e)),
        Err(_) => return Err(unreachable(path, &ErrorKind::TimedOut.into())),
    };
    let io = |e: std::io::Error| unreachable(path, &e);
    stream
        .set_write_timeout(Some(remaining(deadline).map_err(io)?))
        .map_err(io)?;
    stream.write_all(request.to_line().as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    // One line; the daemon closes after it.
    let mut limited = (&stream).take(MAX_ANSWER + 1);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline).map_err(io)?))
            .map_err(io)?;
        let n = match limited.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            break;
        }
        let got = chunk.get(..n).unwrap_or_default();
        if let Some(end) = got.iter().position(|b| *b == b'\n') {
            answer.extend_from_slice(got.get(..end).unwrap_or_default());
            break;
        }
        answer.extend_from_slice(got);
    }
    if answer.len() as u64 > MAX_ANSWER {
        return Err(Failure::Unreachable(format!(
            "{}: the answer is longer than {} MiB; ask for less (flows --limit N)",
            path.display(),
            MAX_ANSWER >> 20
        )));
    }
    if answer.is_empty() {
        return Err(Failure::Unreachable(format!(
            "{}: the daemon closed the connection without an answer; check its log",
            path.display()
        )));
    }
    let value: Value = serde_json::from_slice(&answer).map_err(|e| {
        Failure::Unreachable(format!(
            "{}: the answer is not JSON ({e}); is this a failoverd control socket?",
            path.display()
        ))
    })?;
    match value.get("ok") {
        Some(Value::Bool(true)) => Ok(value),
        Some(Value::Bool(false)) => Err(Failure::Refused(
            value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused without a reason")
                .to_owned(),
        )),
        _ => Err(Failure::Unreachable(format!(
            "{}: the answer has no \"ok\"; is this a failoverd control socket?",
            path.display()
        ))),
    }
}
