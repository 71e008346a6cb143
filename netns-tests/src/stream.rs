//! The stream verifier's pure core: a deterministic byte pattern, its checker, the per-direction
//! receive bookkeeping, and the wire and JSON formats `fo-lab stream-serve` / `stream-send` use.
//!
//! This module owns *what* a correct stream looks like and how a received stream is judged
//! (bytes, bytes verified, first corrupt offset, longest stall, goodput in 10 ms bins). It never
//! does IO and never reads a clock: the caller passes `now` to [`Receiver::on_data`], which is
//! what makes the stall and bin arithmetic unit-testable.
//!
//! Pattern: the stream is a sequence of 8-byte blocks; block `k` is
//! `splitmix64(seed.wrapping_add(k)).to_le_bytes()`, so the byte at stream offset `o` is byte
//! `o % 8` of block `o / 8`. Any window of the stream can be produced or checked from
//! `(seed, offset)` alone, at several GB/s.
//!
//! Wire format of one verifier connection (all integers big-endian):
//! - client → server header, 32 bytes: `b"FOSTRM01"`, seed, up_bytes, down_bytes;
//! - then the client sends `up_bytes` of pattern `seed` while the server sends `down_bytes` of
//!   pattern `seed ^ DOWN_SEED_XOR`;
//! - server → client trailer, 32 bytes, after both directions are done: `b"FOSTRMOK"` (every up
//!   byte verified) or `b"FOSTRMBD"`, verified up bytes, the server's longest receive stall in
//!   microseconds, first corrupt offset (`u64::MAX` if none).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Golden-ratio increment of splitmix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Width of one goodput bin.
pub const BIN: Duration = Duration::from_millis(10);

/// Default cap on the number of goodput bins a [`Receiver`] keeps (one hour of 10 ms bins).
pub const DEFAULT_MAX_BINS: usize = 360_000;

/// The download direction's pattern seed is the header seed XOR this.
pub const DOWN_SEED_XOR: u64 = 0x5_DEEC_E66D;

/// Magic that opens a stream header.
pub const HEADER_MAGIC: [u8; 8] = *b"FOSTRM01";
/// Trailer magic: the server verified every up byte.
pub const TRAILER_OK: [u8; 8] = *b"FOSTRMOK";
/// Trailer magic: the server did not verify every up byte (short or corrupt).
pub const TRAILER_BAD: [u8; 8] = *b"FOSTRMBD";
/// Length of the header and of the trailer on the wire.
pub const WIRE_LEN: usize = 32;

/// The splitmix64 output function for state `x`: `x + GAMMA`, then the splitmix64 finaliser.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Block `k` of the pattern with `seed`.
#[inline]
fn block(seed: u64, k: u64) -> [u8; 8] {
    splitmix64(seed.wrapping_add(k)).to_le_bytes()
}

/// Number of bytes from `offset` up to the next 8-byte block boundary (0 if aligned), at most
/// `len`.
#[inline]
fn head_len(offset: u64, len: usize) -> usize {
    let to_boundary = ((8 - offset % 8) % 8) as usize;
    to_boundary.min(len)
}

/// Fills `buf` with the pattern bytes at stream offsets `offset .. offset + buf.len()`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let head = head_len(offset, buf.len());
    let (head_buf, rest) = buf.split_at_mut(head);
    if head > 0 {
        let b = block(seed, offset / 8);
        let start = (offset % 8) as usize;
        for (dst, src) in head_buf.iter_mut().zip(b.iter().skip(start)) {
            *dst = *src;
        }
    }
    // `rest` starts on a block boundary.
    let mut k = (offset + head as u64) / 8;
    let mut chunks = rest.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&block(seed, k));
        k = k.wrapping_add(1);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let b = block(seed, k);
        for (dst, src) in tail.iter_mut().zip(b.iter()) {
            *dst = *src;
        }
    }
}

/// Checks `buf` against the pattern at stream offsets `offset ..`; returns the absolute stream
/// offset of the first byte that differs, or `None` if all match.
pub fn first_mismatch(seed: u64, offset: u64, buf: &[u8]) -> Option<u64> {
    let head = head_len(offset, buf.len());
    let (head_buf, rest) = buf.split_at(head);
    if head > 0 {
        let b = block(seed, offset / 8);
        let start = (offset % 8) as usize;
        if let Some(i) = head_buf
            .iter()
            .zip(b.iter().skip(start))
            .position(|(x, y)| x != y)
        {
            return Some(offset + i as u64);
        }
    }
    let base = offset + head as u64;
    let mut k = base / 8;
    let mut chunks = rest.chunks_exact(8);
    for (n, chunk) in (&mut chunks).enumerate() {
        let want = block(seed, k);
        if chunk != want {
            let i = chunk
                .iter()
                .zip(want.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            return Some(base + (n as u64) * 8 + i as u64);
        }
        k = k.wrapping_add(1);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let want = block(seed, k);
        if let Some(i) = tail.iter().zip(want.iter()).position(|(x, y)| x != y) {
            return Some(k * 8 + i as u64);
        }
    }
    None
}

/// One direction of a verified stream, judged at the receiver.
///
/// Feed every read that brought data to [`Receiver::on_data`] in order, with the time it
/// completed. Bytes after the first corrupt byte are counted as received but not verified.
#[derive(Debug, Clone)]
pub struct Receiver {
    seed: u64,
    received: u64,
    verified: u64,
    corrupt_at: Option<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
    longest_stall: Duration,
    bins: Vec<u64>,
    max_bins: usize,
    bins_truncated: bool,
}

impl Receiver {
    /// A receiver expecting the pattern `seed` from stream offset 0, keeping at most
    /// [`DEFAULT_MAX_BINS`] goodput bins.
    pub fn new(seed: u64) -> Self {
        Self::with_max_bins(seed, DEFAULT_MAX_BINS)
    }

    /// Like [`Receiver::new`] with an explicit cap on the number of 10 ms bins; data arriving
    /// after the cap is still verified and counted, only not binned.
    pub fn with_max_bins(seed: u64, max_bins: usize) -> Self {
        Self {
            seed,
            received: 0,
            verified: 0,
            corrupt_at: None,
            first: None,
            last: None,
            longest_stall: Duration::ZERO,
            bins: Vec::new(),
            max_bins,
            bins_truncated: false,
        }
    }

    /// Call after every read that returned data, with the time the read completed. Empty `data`
    /// is ignored (it is not progress).
    pub fn on_data(&mut self, now: Instant, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.corrupt_at.is_none() {
            match first_mismatch(self.seed, self.received, data) {
                Some(bad) => {
                    self.verified = bad;
                    self.corrupt_at = Some(bad);
                }
                None => self.verified = self.received + data.len() as u64,
            }
        }
        self.received += data.len() as u64;

        let first = *self.first.get_or_insert(now);
        if let Some(last) = self.last {
            self.longest_stall = self.longest_stall.max(now.saturating_duration_since(last));
        }
        self.last = Some(now);

        let idx = now.saturating_duration_since(first).as_nanos() / BIN.as_nanos();
        match usize::try_from(idx) {
            Ok(i) if i < self.max_bins => {
                if self.bins.len() <= i {
                    self.bins.resize(i + 1, 0);
                }
                if let Some(bin) = self.bins.get_mut(i) {
                    *bin += data.len() as u64;
                }
            }
            _ => self.bins_truncated = true,
        }
    }

    /// Bytes received so far (verified or not).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes verified so far: the length of the correct prefix of the stream.
    pub fn verified(&self) -> u64 {
        self.verified
    }

    /// Stream offset of the first corrupt byte, if any.
    pub fn corrupt_at(&self) -> Option<u64> {
        self.corrupt_at
    }

    /// Longest gap between two consecutive reads that brought data (zero before the second).
    pub fn longest_stall(&self) -> Duration {
        self.longest_stall
    }

    /// Time from the first to the last byte (zero before any data).
    pub fn duration(&self) -> Duration {
        match (self.first, self.last) {
            (Some(f), Some(l)) => l.saturating_duration_since(f),
            _ => Duration::ZERO,
        }
    }

    /// Bytes per 10 ms bin, bin 0 starting at the first byte.
    pub fn bins(&self) -> &[u64] {
        &self.bins
    }

    /// Whether data arrived after the bin cap and so is missing from [`Receiver::bins`].
    pub fn bins_truncated(&self) -> bool {
        self.bins_truncated
    }

    /// The summary of this direction (without bins; see [`Receiver::goodput_bins`]).
    pub fn report(&self) -> DirectionReport {
        let duration = self.duration();
        let secs = duration.as_secs_f64();
        let goodput_mbps = if secs > 0.0 {
            self.verified as f64 * 8.0 / secs / 1e6
        } else {
            0.0
        };
        DirectionReport {
            bytes: self.received,
            verified: self.verified,
            corrupt_at: self.corrupt_at,
            longest_stall_ms: self.longest_stall.as_secs_f64() * 1e3,
            duration_ms: secs * 1e3,
            goodput_mbps,
            bins_file: None,
        }
    }

    /// The goodput bins in their JSON file form.
    pub fn goodput_bins(&self) -> GoodputBins {
        GoodputBins {
            bin_ms: BIN.as_millis() as u64,
            truncated: self.bins_truncated,
            bytes: self.bins.clone(),
        }
    }
}

/// Summary of one received direction, as printed in `fo-lab` JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionReport {
    /// Bytes received.
    pub bytes: u64,
    /// Bytes verified (length of the correct prefix).
    pub verified: u64,
    /// Stream offset of the first corrupt byte, if any.
    pub corrupt_at: Option<u64>,
    /// Longest gap between consecutive reads that brought data, in milliseconds.
    pub longest_stall_ms: f64,
    /// Time from first to last byte, in milliseconds.
    pub duration_ms: f64,
    /// Verified bytes over `duration_ms`, in Mbit/s.
    pub goodput_mbps: f64,
    /// Where the 10 ms goodput bins were written, if they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins_file: Option<String>,
}

/// The file `fo-lab stream-send --bins-file` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodputBins {
    /// Width of one bin in milliseconds (10).
    pub bin_ms: u64,
    /// Whether data arrived after the bin cap and is missing here.
    pub truncated: bool,
    /// Bytes received in each bin; bin 0 starts at the first byte.
    pub bytes: Vec<u64>,
}

/// The 32-byte header a verifier client sends first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// Pattern seed of the up direction (the down direction uses `seed ^ DOWN_SEED_XOR`).
    pub seed: u64,
    /// Bytes the client will send.
    pub up_bytes: u64,
    /// Bytes the server must send.
    pub down_bytes: u64,
}

impl StreamHeader {
    /// Encodes the header for the wire.
    pub fn encode(&self) -> [u8; WIRE_LEN] {
        encode_wire(HEADER_MAGIC, [self.seed, self.up_bytes, self.down_bytes])
    }

    /// Parses a header; `None` if the magic is wrong.
    pub fn decode(buf: &[u8; WIRE_LEN]) -> Option<Self> {
        let (magic, [seed, up_bytes, down_bytes]) = decode_wire(buf);
        (magic == HEADER_MAGIC).then_some(Self {
            seed,
            up_bytes,
            down_bytes,
        })
    }

    /// Pattern seed of the down direction.
    pub fn down_seed(&self) -> u64 {
        self.seed ^ DOWN_SEED_XOR
    }
}

/// The 32-byte trailer the server sends after both directions are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTrailer {
    /// Every up byte arrived and verified (`FOSTRMOK`), else `FOSTRMBD`.
    pub ok: bool,
    /// Up bytes the server verified.
    pub verified: u64,
    /// The server's longest receive stall, in microseconds.
    pub longest_stall_us: u64,
    /// First corrupt up offset, if any (`u64::MAX` on the wire for none).
    pub corrupt_at: Option<u64>,
}

impl StreamTrailer {
    /// Encodes the trailer for the wire.
    pub fn encode(&self) -> [u8; WIRE_LEN] {
        let magic = if self.ok { TRAILER_OK } else { TRAILER_BAD };
        let corrupt = self.corrupt_at.unwrap_or(u64::MAX);
        encode_wire(magic, [self.verified, self.longest_stall_us, corrupt])
    }

    /// Parses a trailer; `None` if the magic is neither `FOSTRMOK` nor `FOSTRMBD`.
    pub fn decode(buf: &[u8; WIRE_LEN]) -> Option<Self> {
        let (magic, [verified, longest_stall_us, corrupt]) = decode_wire(buf);
        let ok = match magic {
            TRAILER_OK => true,
            TRAILER_BAD => false,
            _ => return None,
        };
        let corrupt_at = (corrupt != u64::MAX).then_some(corrupt);
        Some(Self {
            ok,
            verified,
            longest_stall_us,
            corrupt_at,
        })
    }
}

fn encode_wire(magic: [u8; 8], words: [u64; 3]) -> [u8; WIRE_LEN] {
    let mut out = [0u8; WIRE_LEN];
    for (chunk, bytes) in out
        .chunks_exact_mut(8)
        .zip(std::iter::once(magic).chain(words.iter().map(|w| w.to_be_bytes())))
    {
        chunk.copy_from_slice(&bytes);
    }
    out
}

fn decode_wire(buf: &[u8; WIRE_LEN]) -> ([u8; 8], [u64; 3]) {
    let mut parts = [[0u8; 8]; 4];
    for (part, chunk) in parts.iter_mut().zip(buf.chunks_exact(8)) {
        part.copy_from_slice(chunk);
    }
    let [magic, a, b, c] = parts;
    (
        magic,
        [
            u64::from_be_bytes(a),
            u64::from_be_bytes(b),
            u64::from_be_bytes(c),
        ],
    )
}

/// The up direction as `fo-lab stream-send` reports it (the server's view, from the trailer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpReport {
    /// Bytes the client wrote into the socket.
    pub bytes_sent: u64,
    /// Bytes the server verified (0 if no trailer arrived).
    pub verified_by_server: u64,
    /// The server's longest receive stall in milliseconds (`None` if no trailer arrived).
    pub server_longest_stall_ms: Option<f64>,
    /// First corrupt offset the server saw, if any.
    pub corrupt_at: Option<u64>,
}

/// The one JSON line `fo-lab stream-send` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    /// Every byte verified in both directions, and the connection was never reset.
    pub ok: bool,
    /// The up direction, judged by the server.
    pub up: UpReport,
    /// The down direction, judged by this client.
    pub down: DirectionReport,
    /// Wall time from the start of the connect to the end, in milliseconds.
    pub elapsed_ms: f64,
    /// The header seed used.
    #[serde(default)]
    pub seed: u64,
    /// What went wrong, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SendReport {
    /// Parses `fo-lab stream-send`'s stdout (the last non-empty line).
    pub fn parse(stdout: &str) -> Result<Self, serde_json::Error> {
        let line = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        serde_json::from_str(line)
    }
}

/// One JSON line `fo-lab stream-serve` prints per connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeReport {
    /// The client's address.
    pub peer: String,
    /// Header seed (0 if no header arrived).
    pub seed: u64,
    /// Up bytes announced in the header.
    pub up_expected: u64,
    /// The up direction as this server received it.
    pub up: DirectionReport,
    /// Bytes of the down direction written into the socket.
    pub down_sent: u64,
    /// Whether the trailer was written.
    pub trailer_sent: bool,
    /// Every up byte verified, every down byte written, trailer written.
    pub ok: bool,
    /// What went wrong, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any instant will do: the receiver only uses differences.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    /// Reference byte at offset `o`, the obvious slow way.
    fn byte_at(seed: u64, o: u64) -> u8 {
        block(seed, o / 8)[(o % 8) as usize]
    }

    #[test]
    fn fill_matches_reference_and_round_trips() {
        let mut rng = 0x1234_5678u64;
        let mut next = || {
            rng = rng.wrapping_add(1);
            splitmix64(rng)
        };
        for _ in 0..500 {
            let seed = next();
            let offset = next() % 1_000_000_007;
            let len = (next() % 300) as usize;
            let mut buf = vec![0u8; len];
            fill(seed, offset, &mut buf);
            for (i, b) in buf.iter().enumerate() {
                assert_eq!(
                    *b,
                    byte_at(seed, offset + i as u64),
                    "offset {offset} i {i}"
                );
            }
            assert_eq!(first_mismatch(seed, offset, &buf), None);
        }
    }

    #[test]
    fn split_fills_equal_one_fill() {
        let seed = 42;
        let mut whole = vec![0u8; 1000];
        fill(seed, 3, &mut whole);
        let mut parts = vec![0u8; 1000];
        let mut at = 0usize;
        for len in [1usize, 7, 8, 9, 13, 100, 862] {
            fill(seed, 3 + at as u64, &mut parts[at..at + len]);
            at += len;
        }
        assert_eq!(at, 1000);
        assert_eq!(whole, parts);
    }

    #[test]
    fn flipped_byte_found_at_its_offset() {
        let seed = 7;
        for offset in [0u64, 1, 5, 8, 12345, 1 << 40] {
            for len in [1usize, 2, 7, 8, 9, 64, 1000] {
                for bad in [0usize, len / 2, len - 1] {
                    let mut buf = vec![0u8; len];
                    fill(seed, offset, &mut buf);
                    buf[bad] ^= 0x40;
                    assert_eq!(
                        first_mismatch(seed, offset, &buf),
                        Some(offset + bad as u64),
                        "offset {offset} len {len} bad {bad}"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_seed_is_a_mismatch() {
        let mut buf = vec![0u8; 64];
        fill(1, 0, &mut buf);
        assert_eq!(first_mismatch(2, 0, &buf), Some(0));
        assert_eq!(first_mismatch(1 ^ DOWN_SEED_XOR, 0, &buf), Some(0));
    }

    #[test]
    fn receiver_stall_and_bins_on_synthetic_times() {
        let t0 = t0();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = Receiver::new(9);
        let mut off = 0u64;
        let mut feed = |r: &mut Receiver, at: Instant, n: usize| {
            let mut buf = vec![0u8; n];
            fill(9, off, &mut buf);
            off += n as u64;
            r.on_data(at, &buf);
        };
        feed(&mut r, ms(0), 100);
        feed(&mut r, ms(5), 100);
        feed(&mut r, ms(15), 50);
        r.on_data(ms(100), &[]); // empty reads are not progress
        feed(&mut r, ms(415), 10); // 400 ms stall
        feed(&mut r, ms(420), 10);
        assert_eq!(r.longest_stall(), Duration::from_millis(400));
        assert_eq!(r.received(), 270);
        assert_eq!(r.verified(), 270);
        assert_eq!(r.corrupt_at(), None);
        assert_eq!(r.duration(), Duration::from_millis(420));
        let bins = r.bins();
        assert_eq!(bins.len(), 43);
        assert_eq!(bins[0], 200);
        assert_eq!(bins[1], 50);
        assert_eq!(bins[41], 10);
        assert_eq!(bins[42], 10);
        assert_eq!(bins.iter().sum::<u64>(), 270);
        let rep = r.report();
        assert!((rep.longest_stall_ms - 400.0).abs() < 1e-6);
        assert!((rep.duration_ms - 420.0).abs() < 1e-6);
        let json = serde_json::to_string(&rep).unwrap();
        assert!(!json.contains("bins"));
    }

    #[test]
    fn receiver_records_first_corruption_and_stops_verifying() {
        let t0 = t0();
        let mut r = Receiver::new(3);
        let mut buf = vec![0u8; 100];
        fill(3, 0, &mut buf);
        r.on_data(t0, &buf);
        fill(3, 100, &mut buf);
        buf[37] ^= 1;
        r.on_data(t0, &buf);
        fill(3, 200, &mut buf);
        r.on_data(t0, &buf);
        assert_eq!(r.corrupt_at(), Some(137));
        assert_eq!(r.verified(), 137);
        assert_eq!(r.received(), 300);
    }

    #[test]
    fn bins_are_capped() {
        let t0 = t0();
        let mut r = Receiver::with_max_bins(0, 3);
        let mut buf = [0u8; 8];
        for (i, at) in [0u64, 10, 20, 30].iter().enumerate() {
            fill(0, i as u64 * 8, &mut buf);
            r.on_data(t0 + Duration::from_millis(*at), &buf);
        }
        assert_eq!(r.bins(), &[8, 8, 8]);
        assert!(r.bins_truncated());
        assert_eq!(r.verified(), 32);
    }

    #[test]
    fn header_and_trailer_round_trip() {
        let h = StreamHeader {
            seed: 1,
            up_bytes: 2,
            down_bytes: u64::MAX,
        };
        let wire = h.encode();
        assert_eq!(&wire[..8], b"FOSTRM01");
        assert_eq!(&wire[8..16], &1u64.to_be_bytes());
        assert_eq!(StreamHeader::decode(&wire), Some(h));
        let mut bad = wire;
        bad[0] = b'X';
        assert_eq!(StreamHeader::decode(&bad), None);

        for t in [
            StreamTrailer {
                ok: true,
                verified: 5,
                longest_stall_us: 6,
                corrupt_at: None,
            },
            StreamTrailer {
                ok: false,
                verified: 5,
                longest_stall_us: 6,
                corrupt_at: Some(5),
            },
        ] {
            let wire = t.encode();
            assert_eq!(StreamTrailer::decode(&wire), Some(t));
        }
        let wire = StreamTrailer {
            ok: true,
            verified: 0,
            longest_stall_us: 0,
            corrupt_at: None,
        }
        .encode();
        assert_eq!(&wire[..8], b"FOSTRMOK");
        assert_eq!(&wire[24..], &u64::MAX.to_be_bytes());
    }

    #[test]
    fn send_report_parses_last_line() {
        let rep = SendReport {
            ok: true,
            up: UpReport {
                bytes_sent: 1,
                verified_by_server: 1,
                server_longest_stall_ms: Some(0.5),
                corrupt_at: None,
            },
            down: Receiver::new(0).report(),
            elapsed_ms: 1.0,
            seed: 5,
            error: None,
        };
        let out = format!("noise\n{}\n\n", serde_json::to_string(&rep).unwrap());
        assert_eq!(SendReport::parse(&out).unwrap(), rep);
    }
}
