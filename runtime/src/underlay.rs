//! The underlay UDP socket: dual-stack where IPv6 exists, large buffers, IPv4 destinations
//! mapped for it, sources reported canonical, failed sends counted, and batched both ways.
//!
//! Batching is quinn-udp's: a [`Batch`]'s runs of equal-length datagrams to one destination go
//! out in one `sendmsg` with UDP GSO (`UDP_SEGMENT`), and [`Underlay::recv`] takes up to
//! [`RECV_BUFFERS`] messages per `recvmmsg`, each holding what UDP GRO coalesced. Where the
//! kernel or the NIC refuses GSO (`EIO`/`EINVAL`), quinn-udp turns it off for the socket and the
//! refused run is sent again one datagram per call: nothing is lost to the fallback.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd as _;

use anyhow::Context as _;
use engine::Batch;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;

/// Socket buffer size asked for on the underlay socket. The reference implementations lose
/// 10-17 % of datagrams at 0.4 Gbit/s with default buffers on these machines.
const SOCKET_BUFFER: usize = 8 << 20;

/// Messages one [`Underlay::recv`] can return (one `recvmmsg`).
pub const RECV_BUFFERS: usize = 8;

/// The room of each receive message: what UDP GRO hands up at most (64 KiB of coalesced
/// datagrams; one datagram is never longer).
const RECV_BUFFER_LEN: usize = 1 << 16;

/// The most one GSO send may carry: an IPv4 packet's 64 KiB less the IP and UDP headers.
const GSO_MAX_BYTES: usize = 65_535 - 8 - 40;

/// The underlay UDP socket: dual-stack where IPv6 exists, large buffers, non-blocking.
pub fn underlay_socket(port: u16) -> anyhow::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (socket, bind): (Socket, SocketAddr) =
        match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) => {
                s.set_only_v6(false)
                    .context("making the UDP socket dual-stack")?;
                (s, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
            }
            Err(_) => (
                Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                    .context("creating the UDP socket")?,
                SocketAddr::from(([0, 0, 0, 0], port)),
            ),
        };
    // Best effort: as root SO_*BUFFORCE passes the sysctl cap; otherwise the cap applies.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket
        .set_nonblocking(true)
        .context("making the UDP socket non-blocking")?;
    socket
        .bind(&bind.into())
        .with_context(|| format!("binding UDP port {port}"))?;
    tokio::net::UdpSocket::from_std(socket.into()).context("registering the UDP socket")
}

/// Sets an integer socket option, best effort (the option is an optimisation or a default
/// restored; a kernel without it keeps working).
#[allow(unsafe_code)]
fn set_int_option(socket: &tokio::net::UdpSocket, level: i32, name: i32, value: i32) {
    // SAFETY: the descriptor is open for as long as `socket` is borrowed, and the option value
    // points at a live c_int whose size is passed with it.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
}

/// The underlay socket and its send path: IPv4 destinations mapped for a dual-stack socket,
/// sources reported canonical, failed sends counted (a full socket buffer drops a datagram the
/// way the network would; the protocol above recovers).
#[derive(Debug)]
pub struct Underlay {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    dual_stack: bool,
    send_errors: u64,
    gso_fallbacks: u64,
}

impl Underlay {
    /// Binds [`underlay_socket`] on `port` (0: any).
    pub fn bind(port: u16) -> anyhow::Result<Self> {
        let socket = underlay_socket(port)?;
        let dual_stack = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        let state = UdpSocketState::new((&socket).into())
            .context("setting up the UDP socket for batched IO")?;
        // quinn-udp forbids fragmentation (QUIC probes its MTU itself); WireGuard does not, and
        // a path with a smaller MTU must keep working as it did: the kernel's default again.
        set_int_option(
            &socket,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_WANT,
        );
        if dual_stack {
            set_int_option(
                &socket,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_WANT,
            );
            set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0);
        }
        // nothing reads receive timestamps: no control message per datagram for them
        set_int_option(&socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0);
        Ok(Self {
            socket,
            state,
            dual_stack,
            send_errors: 0,
            gso_fallbacks: 0,
        })
    }

    /// Sends one datagram; a failure is counted, not returned.
    pub async fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.send_run(to, datagram, None).await;
    }

    /// Sends every datagram of `batch`, a GSO run per system call where the kernel allows it.
    pub async fn send_batch(&mut self, batch: &Batch) {
        let segments = self.state.max_gso_segments();
        for run in batch.runs(segments, GSO_MAX_BYTES) {
            let segment = (run.count > 1).then_some(run.segment);
            if !self.send_run(run.to, run.contents, segment).await && segment.is_some() {
                // GSO refused (quinn-udp has turned it off now) or the send failed: the run's
                // datagrams one by one, so a fallback loses nothing
                self.gso_fallbacks += 1;
                for datagram in run.contents.chunks(run.segment.max(1)) {
                    self.send_run(run.to, datagram, None).await;
                }
            }
        }
    }

    /// One `sendmsg`; `false` (and counted) when it failed.
    async fn send_run(&mut self, to: SocketAddr, contents: &[u8], segment: Option<usize>) -> bool {
        let transmit = Transmit {
            destination: for_socket(to, self.dual_stack),
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        let (socket, state) = (&self.socket, &self.state);
        let sent = socket
            .async_io(Interest::WRITABLE, || {
                state.try_send(socket.into(), &transmit)
            })
            .await;
        if sent.is_err() {
            self.send_errors += 1;
        }
        sent.is_ok()
    }

    /// Waits for datagrams and takes what one `recvmmsg` returns into `rx`. Cancel-safe.
    pub async fn recv(&self, rx: &mut RecvBatch) -> std::io::Result<()> {
        let (socket, state) = (&self.socket, &self.state);
        socket
            .async_io(Interest::READABLE, || rx.recv_from(state, socket))
            .await
    }

    /// Counts a failed write elsewhere on the data path (the TUN device, the guest link).
    pub fn count_send_error(&mut self) {
        self.send_errors += 1;
    }

    /// Sends that failed.
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// GSO sends the kernel refused and that went out one datagram per call instead.
    pub fn gso_fallbacks(&self) -> u64 {
        self.gso_fallbacks
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Receive buffers for [`Underlay::recv`] and what the last call put in them.
pub struct RecvBatch {
    /// [`RECV_BUFFERS`] buffers of [`RECV_BUFFER_LEN`] back to back
    data: Vec<u8>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("buffers", &RECV_BUFFERS)
            .field("filled", &self.filled)
            .finish()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// [`RECV_BUFFERS`] buffers of 64 KiB; the allocator zeroes them lazily, so only what
    /// traffic touched becomes resident.
    pub fn new() -> Self {
        Self {
            data: vec![0; RECV_BUFFER_LEN * RECV_BUFFERS],
            meta: vec![RecvMeta::default(); RECV_BUFFERS],
            filled: 0,
        }
    }

    fn recv_from(
        &mut self,
        state: &UdpSocketState,
        socket: &tokio::net::UdpSocket,
    ) -> std::io::Result<()> {
        self.filled = 0;
        let mut chunks = self.data.chunks_exact_mut(RECV_BUFFER_LEN);
        let mut slices: [IoSliceMut<'_>; RECV_BUFFERS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let n = state.recv(socket.into(), &mut slices, &mut self.meta)?;
        self.filled = n.min(RECV_BUFFERS);
        Ok(())
    }

    /// The datagrams received, each with its source (canonical), GRO's coalesced ones split.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        self.meta
            .iter()
            .zip(self.data.chunks_exact(RECV_BUFFER_LEN))
            .take(self.filled)
            .flat_map(|(meta, buf)| {
                let from = canonical(meta.addr);
                let data = buf.get(..meta.len).unwrap_or_default();
                data.chunks(meta.stride.max(1)).map(move |d| (from, d))
            })
    }
}

/// An address as the socket reports it, with IPv4-mapped IPv6 turned back into IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The address to pass to `send_to` on our socket: IPv4 destinations become IPv4-mapped IPv6
/// on a dual-stack socket.
pub fn for_socket(addr: SocketAddr, dual_stack: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if dual_stack => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}
