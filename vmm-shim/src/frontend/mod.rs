//! The two front ends that move the guest's frames: QEMU's `-netdev stream` socket
//! ([`stream`]) and vhost-user-net ([`vhost`]). Each is split into a receiving half, awaited
//! by the IO loop, and a sending half that never blocks the loop: frames for a guest that does
//! not read are dropped and counted once a bounded backlog is full.

pub mod stream;
pub mod vhost;
mod vhost_relay;

use std::path::Path;

use tokio::net::unix::OwnedWriteHalf;

pub use stream::Frames;

/// What the receiving half produced.
#[derive(Debug)]
pub enum Input {
    /// stream bytes are in the receive buffer; take the frames with [`Receiver::decode`]
    Bytes(usize),
    /// one frame from the vhost-user TX queue
    Frame(Vec<u8>),
    /// a VMM connected (its stream's sending half, for the stream front end)
    Connected(Option<OwnedWriteHalf>),
    /// the VMM disconnected; another may connect
    Disconnected,
    /// the link is gone for good (an inherited socket closed, the vhost thread ended)
    Closed,
}

/// The receiving half.
#[derive(Debug)]
pub enum Receiver {
    /// QEMU stream socket
    Stream(stream::StreamRx),
    /// vhost-user-net
    Vhost(vhost::VhostRx),
}

/// The sending half.
#[derive(Debug)]
pub enum Output {
    /// QEMU stream socket
    Stream(stream::StreamTx),
    /// vhost-user-net
    Vhost(vhost::VhostTx),
}

/// Serves QEMU's `-netdev stream,addr.type=fd` on the inherited socket `fd`.
pub fn stream_fd(fd: i32) -> anyhow::Result<(Receiver, Output)> {
    let (rx, tx) = stream::from_fd(fd)?;
    Ok((Receiver::Stream(rx), Output::Stream(tx)))
}

/// Serves QEMU's `-netdev stream,addr.type=unix` on a listening socket at `path`.
pub fn stream_listen(path: &Path) -> anyhow::Result<(Receiver, Output)> {
    let (rx, tx) = stream::listen(path)?;
    Ok((Receiver::Stream(rx), Output::Stream(tx)))
}

/// Serves QEMU's `-netdev vhost-user` on a listening socket at `path`.
pub fn vhost_user(path: &Path, mac: Option<[u8; 6]>) -> anyhow::Result<(Receiver, Output)> {
    let (rx, tx) = vhost::serve(path, mac)?;
    Ok((Receiver::Vhost(rx), Output::Vhost(tx)))
}

impl Receiver {
    /// The next input. Cancel-safe: nothing is lost when another branch wins a `select!`.
    pub async fn input(&mut self) -> Input {
        match self {
            Self::Stream(s) => s.input().await,
            Self::Vhost(v) => v.input().await,
        }
    }

    /// The frames in the `n` bytes [`Input::Bytes`] announced.
    pub fn decode(&mut self, n: usize) -> Frames<'_> {
        match self {
            Self::Stream(s) => s.decode(n),
            Self::Vhost(_) => Frames::empty(),
        }
    }

    /// Drops the current connection: its stream went out of step.
    pub fn desync(&mut self) {
        if let Self::Stream(s) = self {
            s.desync();
        }
    }

    /// Stops serving: the listening socket is removed.
    pub fn shutdown(&mut self) {
        match self {
            Self::Stream(s) => s.shutdown(),
            Self::Vhost(v) => v.shutdown(),
        }
    }

    /// For logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Stream(_) => "stream",
            Self::Vhost(_) => "vhost-user",
        }
    }

    /// Counters, for `status`.
    pub fn status(&self) -> control_proto::Counts {
        match self {
            Self::Stream(s) => s.status(),
            Self::Vhost(v) => v.status(),
        }
    }
}

impl Output {
    /// Queues a frame for the guest; never blocks. Dropped and counted when there is no link
    /// or the backlog is full.
    pub fn send_frame(&mut self, frame: &[u8]) {
        match self {
            Self::Stream(s) => s.send_frame(frame),
            Self::Vhost(v) => v.send_frame(frame),
        }
    }

    /// Whether queued bytes wait for the socket.
    pub fn has_pending(&self) -> bool {
        match self {
            Self::Stream(s) => s.has_pending(),
            Self::Vhost(_) => false,
        }
    }

    /// Resolves when the socket can take more (only while [`Output::has_pending`]).
    pub async fn writable(&self) {
        match self {
            Self::Stream(s) => s.writable().await,
            Self::Vhost(_) => std::future::pending().await,
        }
    }

    /// Writes what the socket takes now.
    pub fn flush(&mut self) {
        if let Self::Stream(s) = self {
            s.flush();
        }
    }

    /// A new connection's sending half.
    pub fn attach(&mut self, writer: Option<OwnedWriteHalf>) {
        if let (Self::Stream(s), Some(w)) = (self, writer) {
            s.attach(w);
        }
    }

    /// The connection is gone: queued frames are dropped.
    pub fn detach(&mut self) {
        if let Self::Stream(s) = self {
            s.detach();
        }
    }

    /// Counters, for `status`.
    pub fn status(&self) -> control_proto::Counts {
        match self {
            Self::Stream(s) => s.status(),
            Self::Vhost(v) => v.status(),
        }
    }
}
