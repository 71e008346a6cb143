//! The control socket: a unix stream socket speaking one line of JSON each way.
//!
//! Request: `{"v":1,"cmd":"status"}` (some commands take `"datacenter"` or `"limit"`).
//! Response: `{"v":1,"ok":true,...}` or `{"v":1,"ok":false,"error":"..."}`. The wire form,
//! every answer's fields and their units are [`control_proto`]'s; this module is the socket,
//! the access rules and the hand-off to the daemon's loop. The README's "Control socket"
//! section lists every command.
//!
//! Who may ask, checked with `SO_PEERCRED` on every connection (one request per connection, so
//! the credentials are the requester's at request time): root and the daemon's own uid may do
//! everything; with `control_group` set, processes whose group is that group may read (status,
//! tunnels, flows, events, clients, metrics) but not steer. The socket is 0600, or 0660 owned by
//! the control group. Requests are bounded: 4 KiB, 2 s, 16 connections at once (more are closed at
//! once). Nothing in a request is ever executed or used as a path; no key is ever returned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

const MAX_REQUEST: u64 = 4096;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 16;

pub use control_proto::{Answer, Command, MAX_FLOWS_LISTED};

/// A request with the channel its answer goes back on.
#[derive(Debug)]
pub struct Request {
    /// what is asked
    pub command: Command,
    /// where the answer goes
    pub reply: oneshot::Sender<Answer>,
}

/// Who may use the socket besides root and the daemon's user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// this group may read (not steer)
    pub read_group: Option<u32>,
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

/// Binds the socket at `path` (0600, or 0660 with the read group as its group) and serves it
/// until the receiver is dropped.
pub fn serve(
    path: &Path,
    access: Access,
    to_loop: mpsc::Sender<Request>,
) -> anyhow::Result<ControlSocket> {
    use std::os::unix::fs::PermissionsExt as _;
    let listener = bind_fresh(
        path,
        "another failoverd already serves it; stop it or set control_socket to another path",
    )?;
    let mode = match access.read_group {
        Some(gid) => {
            std::os::unix::fs::chown(path, None, Some(gid))
                .with_context(|| format!("giving {} to group {gid}", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting {mode:o} on {}", path.display()))?;
    accept_bounded(listener, move |stream| {
        handle(stream, access, to_loop.clone())
    });
    Ok(ControlSocket {
        path: path.to_path_buf(),
    })
}

/// Binds a unix socket at `path` (its directory created), replacing a stale socket file of a
/// previous run; refused with `busy` when another process still answers on it.
pub(crate) fn bind_fresh(path: &Path, busy: &str) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{}: {busy}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

/// Serves `listener` until the process ends: each connection is handled by `handle` within
/// [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once (more are closed at once).
pub(crate) fn accept_bounded<F, Fut>(listener: UnixListener, handle: F)
where
    F: Fn(UnixStream) -> Fut + Send + 'static,
    Fut: std::future::Future + Send + 'static,
{
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
            let work = handle(stream);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, work).await;
                drop(permit);
            });
        }
    });
}

/// What the peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Steer,
    Read,
    Nobody,
}

fn peer_rights(stream: &UnixStream, access: Access) -> Peer {
    let Ok(cred) = stream.peer_cred() else {
        return Peer::Nobody;
    };
    let me = crate::keyfile::effective_uid();
    if cred.uid() == 0 || cred.uid() == me {
        Peer::Steer
    } else if access
        .read_group
        .is_some_and(|g| cred.gid() == g || member_of(cred.uid(), g))
    {
        Peer::Read
    } else {
        Peer::Nobody
    }
}

async fn handle(stream: UnixStream, access: Access, to_loop: mpsc::Sender<Request>) {
    let rights = peer_rights(&stream, access);
    let (read, mut write) = stream.into_split();
    let answer = if rights == Peer::Nobody {
        Answer::error("permission denied: only root, the daemon's user and the control group may use this socket")
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST));
        match reader.read_line(&mut line).await {
            Ok(_) if !line.ends_with('\n') => {
                Answer::error("request too long or not terminated by a newline")
            }
            Ok(_) => match serde_json::from_str::<control_proto::Request>(&line) {
                Ok(r) => match r.command() {
                    Ok(c) if c.steers() && rights != Peer::Steer => Answer::error(
                        "permission denied: the control group may read; only root and the \
                         daemon's user may steer",
                    ),
                    Ok(c) => ask(&to_loop, c).await,
                    Err(e) => Answer::error(e.to_string()),
                },
                Err(_) => Answer::error(
                    "malformed request; send one JSON object and a newline, e.g. {\"v\":1,\"cmd\":\"status\"}",
                ),
            },
            Err(_) => Answer::error("unreadable request"),
        }
    };
    let _ = write.write_all(answer.to_line().as_bytes()).await;
}

async fn ask(to_loop: &mpsc::Sender<Request>, command: Command) -> Answer {
    let (reply, answer) = oneshot::channel();
    if to_loop.send(Request { command, reply }).await.is_err() {
        return Answer::error("the daemon is shutting down");
    }
    answer
        .await
        .unwrap_or_else(|_| Answer::error("the daemon is shutting down"))
}

/// Whether user `uid` is listed as a member of group `gid` in `/etc/group` (a supplementary
/// group: `SO_PEERCRED` carries only the primary one).
fn member_of(uid: u32, gid: u32) -> bool {
    let Some(name) = crate::privileges::user_name(uid) else {
        return false;
    };
    let Ok(groups) = std::fs::read_to_string("/etc/group") else {
        return false;
    };
    groups.lines().any(|line| {
        let mut f = line.split(':');
        let (_, _, id, members) = (f.next(), f.next(), f.next(), f.next());
        id.and_then(|i| i.parse::<u32>().ok()) == Some(gid)
            && members.is_some_and(|m| m.split(',').any(|u| u.trim() == name))
    })
}

/// The gid of group `name`, from `/etc/group`.
pub fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}
