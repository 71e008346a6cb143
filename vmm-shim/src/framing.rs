//! QEMU's `-netdev stream` framing: every Ethernet frame (no FCS, no virtio header) is preceded
//! by its length as a 4-byte big-endian integer.
//!
//! [`Decoder`] is sans-IO: the front end pushes whatever bytes a read returned, in any pieces
//! (a length arriving one byte at a time, thousands of frames in one read), and pulls whole
//! frames. Memory is bounded by one frame: a frame longer than the largest accepted is skipped
//! byte by byte without being buffered and counted; a length beyond anything QEMU can send
//! means the stream is not QEMU's framing, and the decoder stops ([`DecodeError::Desync`]):
//! the front end closes the connection.

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// A length above this is not a frame QEMU sends (its largest is 64 KiB plus headers): the
/// stream is out of step.
pub const MAX_WIRE_FRAME: usize = 256 * 1024;

/// Counters of the decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// frames returned
    pub frames: u64,
    /// zero-length frames skipped
    pub empty: u64,
    /// frames longer than the accepted maximum, skipped
    pub oversize: u64,
}

/// The stream stopped making sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// a length prefix beyond [`MAX_WIRE_FRAME`]: not QEMU's framing, or out of step; close
    /// the connection
    #[error("a frame length of {0} bytes: the stream is out of step; closing it")]
    Desync(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// collecting the length prefix (this many bytes of it so far)
    Prefix,
    /// collecting a frame of this length
    Frame(usize),
    /// discarding this many more bytes of an oversize frame
    Skip(usize),
    /// stopped
    Failed(u32),
}

/// Turns a byte stream into frames. See the module docs.
#[derive(Debug)]
pub struct Decoder {
    max_frame: usize,
    state: State,
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    frame: Vec<u8>,
    stats: DecoderStats,
}

impl Decoder {
    /// A decoder that returns frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.min(MAX_WIRE_FRAME),
            state: State::Prefix,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            frame: Vec::new(),
            stats: DecoderStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Consumes bytes from `input` until a whole frame is ready (returned, valid until the
    /// next call) or `input` is used up (`None`). Advances `input` past what it consumed.
    pub fn next_frame<'s>(
        &'s mut self,
        input: &mut &[u8],
    ) -> Result<Option<&'s mut [u8]>, DecodeError> {
        loop {
            match self.state {
                State::Failed(len) => return Err(DecodeError::Desync(len)),
                State::Prefix => {
                    let Some((&b, rest)) = input.split_first() else {
                        return Ok(None);
                    };
                    *input = rest;
                    if let Some(slot) = self.prefix.get_mut(self.prefix_len) {
                        *slot = b;
                    }
                    self.prefix_len += 1;
                    if self.prefix_len < PREFIX_LEN {
                        continue;
                    }
                    self.prefix_len = 0;
                    let len32 = u32::from_be_bytes(self.prefix);
                    let len = len32 as usize;
                    self.state = if len == 0 {
                        self.stats.empty += 1;
                        State::Prefix
                    } else if len > MAX_WIRE_FRAME {
                        State::Failed(len32)
                    } else if len > self.max_frame {
                        self.stats.oversize += 1;
                        State::Skip(len)
                    } else {
                        self.frame.clear();
                        self.frame.reserve(len);
                        State::Frame(len)
                    };
                }
                State::Skip(left) => {
                    let n = left.min(input.len());
                    *input = input.get(n..).unwrap_or_default();
                    self.state = if n == left {
                        State::Prefix
                    } else {
                        State::Skip(left - n)
                    };
                    if n < left {
                        return Ok(None);
                    }
                }
                State::Frame(len) => {
                    let want = len - self.frame.len();
                    let n = want.min(input.len());
                    let (take, rest) = input.split_at(n);
                    self.frame.extend_from_slice(take);
                    *input = rest;
                    if self.frame.len() < len {
                        return Ok(None);
                    }
                    self.state = State::Prefix;
                    self.stats.frames += 1;
                    return Ok(Some(&mut self.frame));
                }
            }
        }
    }
}

/// Writes `frame` with its length prefix to `out` (appends).
pub fn encode(frame: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn all_frames(d: &mut Decoder, mut input: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame(&mut input)? {
            out.push(f.to_vec());
        }
        assert!(input.is_empty());
        Ok(out)
    }

    #[test]
    fn frames_come_out_whatever_the_pieces() {
        let mut wire = Vec::new();
        for len in [60usize, 1514, 14, 0, 3000] {
            encode(&vec![len as u8; len], &mut wire);
        }
        let whole = all_frames(&mut Decoder::new(1514), &wire).unwrap();
        assert_eq!(
            whole.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![60, 1514, 14]
        );
        let mut d = Decoder::new(1514);
        let mut bytewise = Vec::new();
        for b in wire.chunks(1) {
            bytewise.extend(all_frames(&mut d, b).unwrap());
        }
        assert_eq!(bytewise, whole);
        assert_eq!(d.stats().empty, 1);
        assert_eq!(d.stats().oversize, 1);
    }

    #[test]
    fn an_impossible_length_stops_the_stream() {
        let mut d = Decoder::new(1514);
        let wire = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert_eq!(
            all_frames(&mut d, &wire[..4]),
            Err(DecodeError::Desync(u32::MAX))
        );
        assert_eq!(
            d.next_frame(&mut &wire[4..]).map(|f| f.map(|f| f.len())),
            Err(DecodeError::Desync(u32::MAX))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_in_any_pieces_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000),
            cut in 1usize..64,
        ) {
            let mut d = Decoder::new(512);
            for piece in bytes.chunks(cut) {
                let mut input = piece;
                while let Ok(Some(f)) = d.next_frame(&mut input) {
                    proptest::prop_assert!(f.len() <= 512 && !f.is_empty());
                }
            }
        }
    }
}
