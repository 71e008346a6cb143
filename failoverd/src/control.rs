//! The control socket: a unix stream socket speaking one line of JSON each way.
//!
//! Request: `{"v":1,"cmd":"status"}`. Response: `{"v":1,"ok":true,...}` or
//! `{"v":1,"ok":false,"error":"..."}`. Every request is checked with `SO_PEERCRED`: only root and
//! the daemon's own uid are served. Requests are bounded (4 KiB, 2 s, 16 connections at once).
//! The socket is created 0600. Nothing in a request is ever executed; no key is ever returned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

const MAX_REQUEST: u64 = 4096;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 16;

/// A request the daemon's loop answers.
#[derive(Debug)]
pub enum Command {
    /// everything `status` shows
    Status,
}

/// A request with the channel its answer goes back on.
#[derive(Debug)]
pub struct Request {
    /// what is asked
    pub command: Command,
    /// where the JSON answer goes
    pub reply: oneshot::Sender<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    v: u32,
    cmd: String,
}

/// Removes the socket file when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket at `path` (0600) and serves it until the receiver is dropped.
pub fn serve(path: &Path, to_loop: mpsc::Sender<Request>) -> anyhow::Result<ControlSocket> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the control socket directory {}", dir.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        // A stale socket from a previous run; refuse if another daemon still answers on it.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another failoverd already serves {}; stop it or set control_socket to another path",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting 0600 on {}", path.display()))?;
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // out of file descriptors or similar: back off instead of spinning
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                drop(stream); // at capacity: refuse rather than queue without bound
                continue;
            };
            let to_loop = to_loop.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, to_loop)).await;
                drop(permit);
            });
        }
    });
    Ok(ControlSocket {
        path: path.to_path_buf(),
    })
}

fn error(message: &str) -> serde_json::Value {
    serde_json::json!({"v": 1, "ok": false, "error": message})
}

async fn handle(stream: UnixStream, to_loop: mpsc::Sender<Request>) {
    let authorized = stream.peer_cred().is_ok_and(|c| {
        let me = crate::keyfile::effective_uid();
        c.uid() == 0 || c.uid() == me
    });
    let (read, mut write) = stream.into_split();
    let answer = if !authorized {
        error("permission denied: only root and the daemon's user may use this socket")
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST));
        match reader.read_line(&mut line).await {
            Ok(_) if !line.ends_with('\n') => {
                error("request too long or not terminated by a newline")
            }
            Ok(_) => match serde_json::from_str::<WireRequest>(&line) {
                Ok(r) if r.v != 1 => error("unsupported protocol version; this daemon speaks v=1"),
                Ok(r) if r.cmd == "status" => ask(&to_loop, Command::Status).await,
                Ok(_) => error("unknown command; known: status"),
                Err(_) => {
                    error("malformed request; send {\"v\":1,\"cmd\":\"status\"} and a newline")
                }
            },
            Err(_) => error("unreadable request"),
        }
    };
    let mut text = answer.to_string();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

async fn ask(to_loop: &mpsc::Sender<Request>, command: Command) -> serde_json::Value {
    let (reply, answer) = oneshot::channel();
    if to_loop.send(Request { command, reply }).await.is_err() {
        return error("the daemon is shutting down");
    }
    answer
        .await
        .unwrap_or_else(|_| error("the daemon is shutting down"))
}
