//! QEMU `-netdev stream`: length-prefixed Ethernet frames over a unix stream socket, either
//! inherited from the process that started QEMU (`addr.type=fd`, one end of a socketpair: no
//! path, no race) or accepted on a listening socket (`addr.type=unix`; QEMU 7.2 cannot
//! reconnect, so the shim must listen before QEMU starts).
//!
//! Reads go through [`Decoder`] (bounded by one frame); writes are queued in a bounded backlog
//! and written as the socket takes them, so a guest that stops reading costs dropped frames,
//! never a stalled IO loop (whose probes keep the tunnels alive).

use std::os::fd::FromRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::io::AsyncReadExt as _;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use vmm_shim::framing::{self, Decoder};
use vmm_shim::guest::MAX_FRAME;

use super::Input;

/// Bytes read per call.
const READ_BUF: usize = 256 * 1024;
/// Bytes queued for the guest at most (about 700 full-size frames).
const MAX_BACKLOG: usize = 1 << 20;

/// The receiving half.
#[derive(Debug)]
pub struct StreamRx {
    listener: Option<(UnixListener, PathBuf)>,
    conn: Option<OwnedReadHalf>,
    /// the first connection's sending half, handed out by the first `input`
    first: Option<OwnedWriteHalf>,
    /// an inherited socket that closed: nothing will come again
    ended: bool,
    decoder: Decoder,
    buf: Box<[u8]>,
    connections: u64,
    desyncs: u64,
    frames: u64,
    empty: u64,
    oversize: u64,
}

/// The sending half.
#[derive(Debug)]
pub struct StreamTx {
    conn: Option<OwnedWriteHalf>,
    backlog: Vec<u8>,
    sent: usize,
    frames: u64,
    dropped_backlog_full: u64,
    dropped_no_link: u64,
    write_errors: u64,
}

fn halves(
    rx: Option<OwnedReadHalf>,
    first: Option<OwnedWriteHalf>,
    listener: Option<(UnixListener, PathBuf)>,
) -> (StreamRx, StreamTx) {
    (
        StreamRx {
            listener,
            conn: rx,
            first,
            ended: false,
            decoder: Decoder::new(MAX_FRAME),
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            connections: 0,
            desyncs: 0,
            frames: 0,
            empty: 0,
            oversize: 0,
        },
        StreamTx {
            conn: None,
            backlog: Vec::new(),
            sent: 0,
            frames: 0,
            dropped_backlog_full: 0,
            dropped_no_link: 0,
            write_errors: 0,
        },
    )
}

/// The front end on inherited socket `fd`.
#[allow(unsafe_code)]
pub fn from_fd(fd: i32) -> anyhow::Result<(StreamRx, StreamTx)> {
    // SAFETY: the caller passes the number of a socket this process inherited for exactly this
    // purpose (`--fd`); nothing else in the process owns or closes it, so taking ownership
    // here is sound. fstat below checks that it is a socket before use.
    let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    std.local_addr()
        .with_context(|| format!("--fd {fd} is not an open unix stream socket"))?;
    std.set_nonblocking(true)
        .with_context(|| format!("making socket {fd} non-blocking"))?;
    let stream = UnixStream::from_std(std).context("registering the guest socket")?;
    let (r, w) = stream.into_split();
    let (mut rx, tx) = halves(Some(r), Some(w), None);
    rx.connections = 1;
    Ok((rx, tx))
}

/// The front end listening at `path` (mode 0600; a stale socket file is replaced).
pub fn listen(path: &Path) -> anyhow::Result<(StreamRx, StreamTx)> {
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another process serves {}; pick another path",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting 0600 on {}", path.display()))?;
    Ok(halves(None, None, Some((listener, path.to_path_buf()))))
}

impl StreamRx {
    /// See [`super::Receiver::input`].
    pub async fn input(&mut self) -> Input {
        if let Some(w) = self.first.take() {
            return Input::Connected(Some(w));
        }
        if let Some(conn) = self.conn.as_mut() {
            return match conn.read(&mut self.buf).await {
                Ok(n) if n > 0 => Input::Bytes(n),
                _ => {
                    self.disconnect();
                    if self.ended {
                        Input::Closed
                    } else {
                        Input::Disconnected
                    }
                }
            };
        }
        if self.ended {
            return Input::Closed;
        }
        let Some((listener, _)) = self.listener.as_ref() else {
            return Input::Closed;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let (r, w) = stream.into_split();
                self.conn = Some(r);
                self.decoder = Decoder::new(MAX_FRAME);
                self.connections += 1;
                Input::Connected(Some(w))
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a guest connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                Input::Disconnected
            }
        }
    }

    /// The frames in the first `n` bytes of the receive buffer.
    pub fn decode(&mut self, n: usize) -> Frames<'_> {
        Frames {
            decoder: Some(&mut self.decoder),
            input: self.buf.get(..n).unwrap_or_default(),
            desynced: false,
        }
    }

    /// Drops a connection whose stream went out of step.
    pub fn desync(&mut self) {
        self.desyncs += 1;
        self.disconnect();
    }

    /// Drops the connection; an inherited socket does not come back.
    pub fn disconnect(&mut self) {
        if self.conn.take().is_some() {
            let s = self.decoder.stats();
            self.frames += s.frames;
            self.empty += s.empty;
            self.oversize += s.oversize;
            self.decoder = Decoder::new(MAX_FRAME);
        }
        if self.listener.is_none() {
            self.ended = true;
        }
    }

    /// Removes the listening socket's file.
    pub fn shutdown(&mut self) {
        if let Some((_, path)) = self.listener.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Counters.
    pub fn status(&self) -> control_proto::Counts {
        let s = self.decoder.stats();
        [
            ("connections", self.connections),
            ("connected", u64::from(self.conn.is_some())),
            ("frames", self.frames + s.frames),
            ("empty_frames", self.empty + s.empty),
            ("oversize_frames", self.oversize + s.oversize),
            ("desyncs", self.desyncs),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// The frames of one read: a lending iterator over the decoder.
#[derive(Debug)]
pub struct Frames<'a> {
    decoder: Option<&'a mut Decoder>,
    input: &'a [u8],
    desynced: bool,
}

impl Frames<'_> {
    /// No frames.
    pub fn empty() -> Self {
        Frames {
            decoder: None,
            input: &[],
            desynced: false,
        }
    }

    /// The next whole frame, valid until the next call.
    pub fn next_frame(&mut self) -> Option<&mut [u8]> {
        let decoder = self.decoder.as_mut()?;
        match decoder.next_frame(&mut self.input) {
            Ok(f) => f,
            Err(_) => {
                self.desynced = true;
                None
            }
        }
    }

    /// Whether the stream went out of step (the connection must go).
    pub fn desynced(&self) -> bool {
        self.desynced
    }
}

impl StreamTx {
    /// See [`super::Output::send_frame`].
    pub fn send_frame(&mut self, frame: &[u8]) {
        if self.conn.is_none() {
            self.dropped_no_link += 1;
            return;
        }
        if self.backlog.len() - self.sent + framing::PREFIX_LEN + frame.len() > MAX_BACKLOG {
            self.dropped_backlog_full += 1;
            return;
        }
        if self.sent > 0 && self.sent * 2 >= self.backlog.len() {
            self.backlog.drain(..self.sent);
            self.sent = 0;
        }
        framing::encode(frame, &mut self.backlog);
        self.frames += 1;
    }

    /// Whether bytes wait.
    pub fn has_pending(&self) -> bool {
        self.conn.is_some() && self.sent < self.backlog.len()
    }

    /// Resolves when the socket is writable.
    pub async fn writable(&self) {
        match &self.conn {
            Some(c) => {
                let _ = c.writable().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Writes what the socket takes without blocking.
    pub fn flush(&mut self) {
        while let Some(conn) = &self.conn {
            let Some(pending) = self.backlog.get(self.sent..).filter(|p| !p.is_empty()) else {
                self.backlog.clear();
                self.sent = 0;
                return;
            };
            match conn.try_write(pending) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.write_errors += 1;
                    self.detach();
                }
            }
        }
    }

    /// See [`super::Output::attach`].
    pub fn attach(&mut self, w: OwnedWriteHalf) {
        self.detach();
        self.conn = Some(w);
    }

    /// See [`super::Output::detach`].
    pub fn detach(&mut self) {
        self.conn = None;
        self.backlog.clear();
        self.sent = 0;
    }

    /// Counters.
    pub fn status(&self) -> control_proto::Counts {
        [
            ("frames", self.frames),
            (
                "backlog_bytes",
                self.backlog.len().saturating_sub(self.sent) as u64,
            ),
            ("dropped_backlog_full", self.dropped_backlog_full),
            ("dropped_no_link", self.dropped_no_link),
            ("write_errors", self.write_errors),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}
