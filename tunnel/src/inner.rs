//! Validation of decrypted inner packets, beyond what boringtun checks.
//!
//! boringtun checks the version nibble, a 20/40-byte minimum and `total_len <= len`. It does not
//! check the IPv4 IHL, the header checksum, or that `total_len` covers the header (an IPv4
//! `total_len` of 5 yields a 5-byte "packet"). [`InnerPacket::parse`] checks all of that, so the
//! local side (the kernel via TUN, or a guest) only ever sees well-formed IP headers, and the
//! source address used for cryptokey routing is the one the kernel will see.

use std::net::IpAddr;

use wire::{Ipv4Packet, Ipv6Packet};

/// Why an inner packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerError {
    /// shorter than the fixed header, or an IP version other than 4 or 6
    NotIp,
    /// IPv4 IHL below 5, or a header longer than the packet
    BadHeaderLength,
    /// the length field disagrees with the bytes present
    BadTotalLength,
    /// the IPv4 header checksum does not verify
    BadHeaderChecksum,
}

/// A validated inner IP packet: its header is well formed and its length field is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerPacket {
    /// source address from the header
    pub src: IpAddr,
    /// destination address from the header
    pub dst: IpAddr,
    /// bytes the header says the packet has (trailing padding beyond it is not part of it)
    pub len: usize,
}

impl InnerPacket {
    /// Parses and validates `packet` (which may carry trailing padding, as WireGuard pads to 16).
    pub fn parse(packet: &[u8]) -> Result<Self, InnerError> {
        match wire::ip::version(packet) {
            Some(4) => Self::parse_v4(packet),
            Some(6) => Self::parse_v6(packet),
            _ => Err(InnerError::NotIp),
        }
    }

    fn parse_v4(packet: &[u8]) -> Result<Self, InnerError> {
        let ip = Ipv4Packet::new_checked(packet).map_err(|e| match e {
            wire::Error::BadHeaderLength => InnerError::BadHeaderLength,
            wire::Error::BadLength => InnerError::BadTotalLength,
            wire::Error::Truncated | wire::Error::Unsupported => InnerError::NotIp,
        })?;
        if !ip.verify_checksum() {
            return Err(InnerError::BadHeaderChecksum);
        }
        Ok(Self {
            src: ip.src_addr().into(),
            dst: ip.dst_addr().into(),
            len: ip.total_len(),
        })
    }

    fn parse_v6(packet: &[u8]) -> Result<Self, InnerError> {
        // A payload length of 0 with a hop-by-hop next header would be a jumbogram, which
        // cannot fit a WireGuard datagram; 0 otherwise is a legal empty payload.
        let ip = Ipv6Packet::new_checked(packet).map_err(|e| match e {
            wire::Error::BadLength => InnerError::BadTotalLength,
            _ => InnerError::NotIp,
        })?;
        Ok(Self {
            src: ip.src_addr().into(),
            dst: ip.dst_addr().into(),
            len: ip.total_len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(total_len: u16, ihl: u8) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(total_len).max(20)];
        p[0] = 0x40 | ihl;
        p[2..4].copy_from_slice(&total_len.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[100, 96, 0, 2]);
        p[16..20].copy_from_slice(&[198, 19, 0, 100]);
        let hl = usize::from(ihl) * 4;
        if hl >= 20 && hl <= p.len() {
            let c = wire::checksum::finish(wire::checksum::sum(&p[..hl]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        p
    }

    #[test]
    fn accepts_valid_v4_and_trims_padding() {
        let mut p = v4(28, 5);
        p.extend_from_slice(&[0; 4]);
        let parsed = InnerPacket::parse(&p).unwrap();
        assert_eq!(parsed.len, 28);
        assert_eq!(parsed.src, IpAddr::from([100, 96, 0, 2]));
    }

    #[test]
    fn refuses_what_boringtun_lets_through() {
        // total_len 5: boringtun would hand back a 5-byte "packet"
        let mut p = v4(20, 5);
        p[2..4].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(InnerPacket::parse(&p), Err(InnerError::BadTotalLength));
        assert_eq!(
            InnerPacket::parse(&v4(20, 4)),
            Err(InnerError::BadHeaderLength)
        );
        assert_eq!(
            InnerPacket::parse(&v4(40, 15)),
            Err(InnerError::BadHeaderLength)
        );
        let mut bad = v4(20, 5);
        bad[10] ^= 1;
        assert_eq!(InnerPacket::parse(&bad), Err(InnerError::BadHeaderChecksum));
        assert_eq!(InnerPacket::parse(&[0x50; 40]), Err(InnerError::NotIp));
        assert_eq!(InnerPacket::parse(&[]), Err(InnerError::NotIp));
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(InnerPacket::parse(&v6), Err(InnerError::BadTotalLength));
        v6.extend_from_slice(&[0; 8]);
        assert_eq!(InnerPacket::parse(&v6).unwrap().len, 48);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = InnerPacket::parse(&bytes);
        }
    }
}
