//! TCP headers (RFC 9293).
//!
//! Owns: the header's layout, its data-offset check, its checksum over a pseudo-header. Never:
//! option rewriting or connection state (the session keeper clamps MSS in place and tracks
//! flows itself).

use std::net::IpAddr;

use crate::ip::PROTO_TCP;
use crate::{checksum, field, Error};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// Flag bits of the flags byte (offset 13).
pub mod flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
}

/// A view of a TCP segment (header and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// A view without checks; for segments this process wrote. See the crate's promise.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view of untrusted bytes; see [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks: 20 bytes at least ([`Error::Truncated`]), a data offset of 5 or more whose
    /// header fits the buffer ([`Error::BadHeaderLength`]).
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN || header_len > b.len() {
            return Err(Error::BadHeaderLength);
        }
        Ok(())
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 0).unwrap_or(0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 2).unwrap_or(0)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        field::be32(self.buffer.as_ref(), 4).unwrap_or(0)
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        field::be32(self.buffer.as_ref(), 8).unwrap_or(0)
    }

    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref().get(12).copied().unwrap_or(0) >> 4) * 4
    }

    /// The flags byte; see [`flags`].
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref().get(13).copied().unwrap_or(0)
    }

    /// Window.
    pub fn window_len(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 14).unwrap_or(0)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 16).unwrap_or(0)
    }

    /// Whether the checksum over the whole buffer verifies with the pseudo-header of `src`
    /// and `dst` (false when their families differ).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let b = self.buffer.as_ref();
        checksum::pseudo_header_ip(src, dst, PROTO_TCP, b.len())
            .is_some_and(|acc| checksum::verifies(checksum::add(acc, b)))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The options (between the fixed header and the data offset).
    pub fn options(&self) -> &'a [u8] {
        let b: &'a T = self.buffer;
        b.as_ref()
            .get(MIN_HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    /// The payload: everything after the header.
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a T = self.buffer;
        b.as_ref().get(self.header_len()..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_checks_the_offset() {
        let mut t = [0u8; 28];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&443u16.to_be_bytes());
        t[4..8].copy_from_slice(&7u32.to_be_bytes());
        t[12] = 6 << 4;
        t[13] = flags::SYN | flags::ACK;
        t[20..24].copy_from_slice(&[2, 4, 5, 0xb4]);
        let (s, d) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let acc = checksum::pseudo_header_ip(s, d, PROTO_TCP, t.len()).unwrap();
        let c = checksum::finish(checksum::fold(checksum::add(acc, &t)));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        let v = TcpPacket::new_checked(&t[..]).unwrap();
        assert_eq!(
            (v.src_port(), v.dst_port(), v.seq_number()),
            (40000, 443, 7)
        );
        assert_eq!(
            (v.header_len(), v.options().len(), v.payload().len()),
            (24, 4, 4)
        );
        assert_eq!(v.flags(), flags::SYN | flags::ACK);
        assert!(v.verify_checksum(s, d));
        assert_eq!(TcpPacket::new_checked(&t[..19]), Err(Error::Truncated));
        assert_eq!(
            TcpPacket::new_checked(&t[..23]),
            Err(Error::BadHeaderLength)
        );
        t[12] = 4 << 4;
        assert_eq!(TcpPacket::new_checked(&t[..]), Err(Error::BadHeaderLength));
    }
}
