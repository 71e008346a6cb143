//! The probe message.
//!
//! ```text
//!  0      4    5    6      7    8            16           24            32
//!  | FOPB | v1 |kind|intent| 0  |   nonce    |    seq     |  sent_us    |
//! ```
//! All integers big-endian. `nonce` is random per client process and tunnel, so replies to
//! another client's probes (or to an earlier run's) are recognised; `seq` increases per probe;
//! `sent_us` is the client's own clock, echoed verbatim and checked against what was recorded.

/// Magic bytes at the start of every probe message.
pub const MAGIC: [u8; 4] = *b"FOPB";
/// The only version spoken.
pub const VERSION: u8 = 1;
/// Encoded length.
pub const LEN: usize = 32;
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
}

impl ProbeMessage {
    /// Encodes into 32 bytes.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
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
        b
    }

    /// Parses exactly one message; trailing bytes are refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let b: &[u8; LEN] = bytes.try_into().map_err(|_| WireError::Length)?;
        if b[..4] != MAGIC {
            return Err(WireError::Magic);
        }
        if b[4] != VERSION {
            return Err(WireError::Version);
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
        })
    }

    /// The reply a gateway sends for this request: same fields, kind Reply.
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
        };
        let b = m.encode();
        assert_eq!(ProbeMessage::parse(&b), Ok(m));
        assert_eq!(ProbeMessage::parse(&b[..31]), Err(WireError::Length));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(ProbeMessage::parse(&bad), Err(WireError::Magic));
        let mut bad = b;
        bad[4] = 2;
        assert_eq!(ProbeMessage::parse(&bad), Err(WireError::Version));
        for (i, v) in [(5, 0), (5, 3), (6, 2), (7, 1)] {
            let mut bad = b;
            bad[i] = v;
            assert_eq!(ProbeMessage::parse(&bad), Err(WireError::Field));
        }
        assert_eq!(m.reply().kind, ProbeKind::Reply);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = ProbeMessage::parse(&bytes);
        }
    }
}
