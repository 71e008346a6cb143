//! IPv6 fixed headers (RFC 8200).
//!
//! Owns: the 40-byte fixed header's layout and length check. Never: walking extension headers
//! (the session keeper does that, bounded, in `sessionkeeper::parse`), jumbograms.

use std::net::Ipv6Addr;

use crate::{field, Error};

/// Fixed header length.
pub const HEADER_LEN: usize = 40;

/// A view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A view without checks; for packets this process wrote. See the crate's promise.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view of untrusted bytes; see [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks: 40 bytes at least ([`Error::Truncated`]), version 6 ([`Error::Unsupported`]),
    /// 40 + payload length within the buffer ([`Error::BadLength`]). Trailing padding is
    /// allowed.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Unsupported);
        }
        if self.total_len() > b.len() {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref().first().copied().unwrap_or(0) >> 4
    }

    /// Payload length field.
    pub fn payload_len(&self) -> usize {
        usize::from(field::be16(self.buffer.as_ref(), 4).unwrap_or(0))
    }

    /// 40 + payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref().get(6).copied().unwrap_or(0)
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref().get(7).copied().unwrap_or(0)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        field::ipv6_at(self.buffer.as_ref(), 8).unwrap_or(Ipv6Addr::UNSPECIFIED)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        field::ipv6_at(self.buffer.as_ref(), 24).unwrap_or(Ipv6Addr::UNSPECIFIED)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// The payload after the fixed header, to the payload length (padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a T = self.buffer;
        b.as_ref()
            .get(HEADER_LEN..self.total_len())
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or_default()
    }
}

/// The fields of an IPv6 fixed header this project originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// source
    pub src_addr: Ipv6Addr,
    /// destination
    pub dst_addr: Ipv6Addr,
    /// next header
    pub next_header: u8,
    /// payload length in bytes
    pub payload_len: usize,
    /// hop limit
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// Writes the fixed header (traffic class and flow label 0) into `out[..40]`. Returns 40.
    /// [`Error::BadLength`] when the payload length does not fit 16 bits.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        let plen = u16::try_from(self.payload_len).map_err(|_| Error::BadLength)?;
        let h = out.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        h.fill(0);
        let fields: [(usize, &[u8]); 4] = [
            (0, &[0x60]),
            (4, &plen.to_be_bytes()),
            (6, &[self.next_header, self.hop_limit]),
            (8, &self.src_addr.octets()),
        ];
        for (at, bytes) in fields {
            field::put(h, at, bytes).ok_or(Error::Truncated)?;
        }
        field::put(h, 24, &self.dst_addr.octets()).ok_or(Error::Truncated)?;
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_lengths() {
        let mut p = [0u8; 48];
        let r = Ipv6Repr {
            src_addr: "fd00::1".parse().unwrap(),
            dst_addr: "fd00::2".parse().unwrap(),
            next_header: 17,
            payload_len: 8,
            hop_limit: 255,
        };
        assert_eq!(r.emit(&mut p), Ok(40));
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!((v.src_addr(), v.dst_addr()), (r.src_addr, r.dst_addr));
        assert_eq!(
            (v.next_header(), v.hop_limit(), v.total_len()),
            (17, 255, 48)
        );
        assert_eq!(v.payload().len(), 8);
        let check = |b: &[u8]| Ipv6Packet::new_checked(b).map(|_| ());
        assert_eq!(check(&p[..39]), Err(Error::Truncated));
        assert_eq!(check(&p[..47]), Err(Error::BadLength));
        p[0] = 0x40;
        assert_eq!(check(&p), Err(Error::Unsupported));
    }

    proptest::proptest! {
        #[test]
        fn no_accessor_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let v = Ipv6Packet::new_unchecked(&bytes[..]);
            let _ = (v.payload_len(), v.src_addr(), v.dst_addr(), v.payload(), v.hop_limit());
            if let Ok(v) = Ipv6Packet::new_checked(&bytes[..]) {
                proptest::prop_assert_eq!(v.payload().len(), v.payload_len());
            }
        }
    }
}
