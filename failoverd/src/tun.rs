//! The TUN device with the kernel's offloads: reads and writes many packets per system call.
//!
//! The device is opened with `IFF_VNET_HDR` and TSO/checksum offload (USO where the kernel has
//! it), so one read returns a TCP stream's 64 KiB super-packet, which tun-rs splits into
//! MTU-sized packets with their checksums filled in (`gso_split`, wireguard-go's code), and
//! packets written in one batch are coalesced back into super-packets (`GROTable`) so the
//! kernel's stack sees a few large packets instead of many small ones. tun-rs is used rather
//! than our own because it is that offload code, maintained, with its parsing tested; we add
//! only the buffers, the counters and the batching around it.

use std::io;

use tun_rs::{AsyncDevice, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Packets one read may split into. The device's `gso_max_segs` is set to this
/// (`net::configure_interface`), so no TCP super-packet has more segments than a read has
/// buffers (64 KiB at an MSS of 536 is 123 of them).
pub const MAX_SEGMENTS: u32 = IDEAL_BATCH_SIZE as u32;

/// Where a packet starts in an outgoing buffer: room for the virtio header in front.
const OFFSET: usize = VIRTIO_NET_HDR_LEN;

/// The most a read can return: the virtio header and a 64 KiB super-packet.
const READ_LEN: usize = VIRTIO_NET_HDR_LEN + 65_535;

/// The room of an outgoing buffer: a packet may grow into a coalesced super-packet of 64 KiB,
/// and tun-rs asks for twice the offset around it.
const WRITE_LEN: usize = 2 * OFFSET + 65_535;

/// Packets decrypted before they are written: a coalesced write is one super-packet, so 64
/// buffers are a few writes. Each may grow to 64 KiB as a coalesced head, so this also bounds
/// what they hold resident (4 MiB).
const WRITE_BATCH: usize = 64;

/// A TUN device with offloads and its buffers. See the module docs.
pub struct TunIo {
    dev: AsyncDevice,
    /// a raw read: virtio header and (super-)packet
    raw: Vec<u8>,
    /// the packets the last read was split into
    segments: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// packets waiting to be written, each at [`OFFSET`]
    pending: Vec<Vec<u8>>,
    filled: usize,
    gro: GROTable,
    /// reads the offload code could not split (a malformed virtio header or packet)
    malformed: u64,
}

impl std::fmt::Debug for TunIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunIo")
            .field("pending", &self.filled)
            .field("malformed", &self.malformed)
            .finish()
    }
}

impl TunIo {
    /// Buffers for a device whose MTU is `mtu`. The allocator zeroes them lazily: what no
    /// traffic touched never becomes resident.
    pub fn new(dev: AsyncDevice, mtu: u16) -> Self {
        // a device without offloads reads one packet of up to the MTU into the first segment
        let segment = usize::from(mtu).max(1500);
        Self {
            dev,
            raw: vec![0; READ_LEN],
            segments: vec![vec![0; segment]; IDEAL_BATCH_SIZE],
            sizes: vec![0; IDEAL_BATCH_SIZE],
            pending: (0..WRITE_BATCH)
                .map(|_| Vec::with_capacity(WRITE_LEN))
                .collect(),
            filled: 0,
            gro: GROTable::default(),
            malformed: 0,
        }
    }

    /// Waits for the next read and splits it: the number of packets now in
    /// [`TunIo::packets_mut`]. A read the offload code refuses is counted and yields none; an
    /// error from the device itself is returned. Cancel-safe: the only wait is the read.
    pub async fn recv(&mut self) -> io::Result<usize> {
        match self
            .dev
            .recv_multiple(&mut self.raw, &mut self.segments, &mut self.sizes, 0)
            .await
        {
            Ok(n) => Ok(n.min(self.segments.len())),
            // the device's own errors carry an errno; the splitter's are about the bytes
            Err(e) if e.raw_os_error().is_none() => {
                self.malformed += 1;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// The first `n` packets of the last read, each writable in place.
    pub fn packets_mut(&mut self, n: usize) -> impl Iterator<Item = &mut [u8]> + '_ {
        self.segments
            .iter_mut()
            .zip(&self.sizes)
            .take(n)
            .filter_map(|(buf, &size)| buf.get_mut(..size))
    }

    /// The next outgoing buffer, `room` bytes for a packet to be written at its start (the
    /// batch is written first when every buffer is taken). [`TunIo::commit`] keeps what was
    /// written; without it the buffer is offered again.
    pub async fn buffer(&mut self, room: usize) -> io::Result<&mut [u8]> {
        if self.filled >= self.pending.len() {
            self.flush().await?;
        }
        let filled = self.filled;
        let Some(buf) = self.pending.get_mut(filled) else {
            return Ok(&mut []);
        };
        buf.resize(OFFSET + room.min(WRITE_LEN - 2 * OFFSET), 0);
        Ok(buf.get_mut(OFFSET..).unwrap_or_default())
    }

    /// Keeps the packet of `len` bytes written `start` bytes into the last
    /// [`TunIo::buffer`] for the next [`TunIo::flush`].
    pub fn commit(&mut self, start: usize, len: usize) {
        let Some(buf) = self.pending.get_mut(self.filled) else {
            return;
        };
        let from = OFFSET.saturating_add(start);
        if buf.get(from..from.saturating_add(len)).is_none() {
            return;
        }
        if start != 0 {
            buf.copy_within(from..from + len, OFFSET);
        }
        buf.truncate(OFFSET + len);
        self.filled += 1;
    }

    /// Writes every queued packet, coalesced where the offloads allow.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let n = self.filled;
        self.filled = 0;
        let Some(pending) = self.pending.get_mut(..n) else {
            return Ok(());
        };
        self.dev
            .send_multiple(&mut self.gro, pending, OFFSET)
            .await
            .map(drop)
    }

    /// Reads the offload code could not split.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}
