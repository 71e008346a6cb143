//! The probe message.
//!
//! ```text
//!  0      4    5    6      7    8            16           24            32           36    40
//!  | FOPB | v  |kind|intent| 0  |   nonce    |    seq     |  sent_us    | generation | 0   |
//! ```
//! All integers big-endian. `nonce` is random per client process and tunnel, so replies to
//! another client's probes (or to an earlier run's) are recognised; `seq` increases per probe;
//! `sent_us` is the client's own clock, echoed verbatim and checked against what was recorded.
//! Version 2 adds `generation`, the client's switch generation: it grows with every switch
//! and across restarts (it is taken from the client's wall clock), so the network can prefer
//! the newest claim of a client that moved while an older datacenter still announces it.
//! Version 1 (32 bytes, no generation) is still understood and answered in kind, so gateways
//! can be upgraded before their clients.

/// Magic bytes at the start of every probe message.
pub const MAGIC: [u8; 4] = *b"FOPB";
/// The version sent.
pub const VERSION: u8 = 2;
/// Encoded length of version 2.
pub const LEN: usize = 40;
/// Encoded length of version 1.
pub const LEN_V1: usize = 32;
/// UDP port of the gateway's probe responder on its inner address.
pub const PROBE_PORT: u16 = 51821;

/// Request (client → gateway) or reply (gateway → client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// sent by the client
    Request,
    /// echoed by the gateway
    Reply,
}

/// What the client wants this tunnel's gateway to do with its stable address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// not carrying traffic: do not claim the address (release it if claimed)
    Standby,
    /// carrying traffic: claim the address so return traffic comes here
    Active,
}

/// Why bytes are not a probe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// shorter or longer than a probe message
    #[error("wrong length")]
    Length,
    /// not our magic
    #[error("bad magic")]
    Magic,
    /// another version
    #[error("unsupported version")]
    Version,
    /// unknown kind, intent, or non-zero reserved byte
    #[error("bad field")]
    Field,
}

/// A parsed probe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeMessage {
    /// request or reply
    pub kind: ProbeKind,
    /// the client's intent for this tunnel
    pub intent: Intent,
    /// per client process and tunnel
    pub nonce: u64,
    /// sequence number
    pub seq: u64,
    /// client clock at sending, microseconds since its own epoch
    pub sent_us: u64,
    /// the client's switch generation; `None`: a version 1 message, which has none
    pub generation: Option<u32>,
}

/// An encoded message: version 1 or 2, as long as its version says.
#[derive(Debug, Clone, Copy)]
pub struct Encoded {
    buf: [u8; LEN],
    len: usize,
}

impl std::ops::Deref for Encoded {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

impl ProbeMessage {
    /// Encodes: version 2 (40 bytes) with a generation, version 1 (32 bytes) without.
    pub fn encode(&self) -> Encoded {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = if self.generation.is_some() {
            VERSION
        } else {
            1
        };
        b[5] = match self.kind {
            ProbeKind::Request => 1,
            ProbeKind::Reply => 2,
        };
        b[6] = match self.intent {
            Intent::Standby => 0,
            Intent::Active => 1,
        };
        b[8..16].copy_from_slice(&self.nonce.to_be_bytes());
        b[16..24].copy_from_slice(&self.seq.to_be_bytes());
        b[24..32].copy_from_slice(&self.sent_us.to_be_bytes());
        let len = match self.generation {
            Some(g) => {
                b[32..36].copy_from_slice(&g.to_be_bytes());
                LEN
            }
            None => LEN_V1,
        };
        Encoded { buf: b, len }
    }

    /// Parses exactly one message of version 1 or 2; trailing bytes are refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < LEN_V1 {
            return Err(WireError::Length);
        }
        let mut b = [0u8; LEN];
        if bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(WireError::Magic);
        }
        let generation = match (bytes.get(4), bytes.len()) {
            (Some(1), LEN_V1) => None,
            (Some(2), LEN) => {
                b.copy_from_slice(bytes);
                if b[36..40] != [0; 4] {
                    return Err(WireError::Field);
                }
                Some(u32::from_be_bytes([b[32], b[33], b[34], b[35]]))
            }
            (Some(1 | 2), _) => return Err(WireError::Length),
            _ => return Err(WireError::Version),
        };
        if let (Some(dst), Some(src)) = (b.get_mut(..LEN_V1), bytes.get(..LEN_V1)) {
            dst.copy_from_slice(src);
        }
        let kind = match b[5] {
            1 => ProbeKind::Request,
            2 => ProbeKind::Reply,
            _ => return Err(WireError::Field),
        };
        let intent = match b[6] {
            0 => Intent::Standby,
            1 => Intent::Active,
            _ => return Err(WireError::Field),
        };
        if b[7] != 0 {
            return Err(WireError::Field);
        }
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            if let Some(src) = b.get(i..i + 8) {
                x.copy_from_slice(src);
            }
            u64::from_be_bytes(x)
        };
        Ok(Self {
            kind,
            intent,
            nonce: u64_at(8),
            seq: u64_at(16),
            sent_us: u64_at(24),
            generation,
        })
    }

    /// The reply a gateway sends for this request: same fields (and version), kind Reply.
    pub fn reply(&self) -> Self {
        Self {
            kind: ProbeKind::Reply,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_refusals() {
        let m = ProbeMessage {
            kind: ProbeKind::Request,
            intent: Intent::Active,
            nonce: 0x0102_0304_0506_0708,
            seq: 42,
            sent_us: 1_000_000,
            generation: Some(0x0a0b_0c0d),
        };
        let b: Vec<u8> = m.encode().to_vec();
        assert_eq!(b.len(), LEN);
        assert_eq!(b[4], 2);
        assert_eq!(ProbeMessage::parse(&b), Ok(m));
        assert_eq!(ProbeMessage::parse(&b[..31]), Err(WireError::Length));
        assert_eq!(ProbeMessage::parse(&b[..39]), Err(WireError::Length));
        let mut bad = b.clone();
        bad[0] = b'X';
        assert_eq!(ProbeMessage::parse(&bad), Err(WireError::Magic));
        let mut bad = b.clone();
        bad[4] = 3;
        assert_eq!(ProbeMessage::parse(&bad), Err(WireError::Version));
        for (i, v) in [(5, 0), (5, 3), (6, 2), (7, 1), (36, 1), (39, 1)] {
            let mut bad = b.clone();
            bad[i] = v;
            assert_eq!(ProbeMessage::parse(&bad), Err(WireError::Field), "byte {i}");
        }
        assert_eq!(m.reply().kind, ProbeKind::Reply);
        assert_eq!(m.reply().generation, m.generation);
        // version 1: no generation, 32 bytes, answered in kind
        let v1 = ProbeMessage {
            generation: None,
            ..m
        };
        let b1: Vec<u8> = v1.encode().to_vec();
        assert_eq!((b1.len(), b1[4]), (LEN_V1, 1));
        assert_eq!(ProbeMessage::parse(&b1), Ok(v1));
        assert_eq!(v1.reply().encode().len(), LEN_V1);
        // a version 1 header on 40 bytes, or version 2 on 32, is refused
        let mut mixed = b.clone();
        mixed[4] = 1;
        assert_eq!(ProbeMessage::parse(&mixed), Err(WireError::Length));
        let mut short = b1.clone();
        short[4] = 2;
        assert_eq!(ProbeMessage::parse(&short), Err(WireError::Length));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = ProbeMessage::parse(&bytes);
        }
    }
}
