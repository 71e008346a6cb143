//! IPv4 headers (RFC 791).
//!
//! Owns: the header's layout, its length checks and its checksum. Never: policy on fragments,
//! options or addresses; reassembly.

use std::net::Ipv4Addr;

use crate::{checksum, field, Error};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// A view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view without checks; for packets this process wrote. See the crate's promise.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view of untrusted bytes; see [`check_len`](Self::check_len). The header checksum is
    /// not checked here: [`verify_checksum`](Self::verify_checksum).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks, in this order: 20 bytes at least ([`Error::Truncated`]), version 4
    /// ([`Error::Unsupported`]), an IHL of 5 or more within the buffer
    /// ([`Error::BadHeaderLength`]), a total length not below the header and within the buffer
    /// ([`Error::BadLength`]). Bytes past the total length (link padding) are allowed.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Unsupported);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN || header_len > b.len() {
            return Err(Error::BadHeaderLength);
        }
        let total_len = self.total_len();
        if total_len < header_len || total_len > b.len() {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.byte(0) >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.byte(0) & 0x0f) * 4
    }

    /// Total length in bytes, from the header.
    pub fn total_len(&self) -> usize {
        usize::from(field::be16(self.buffer.as_ref(), 2).unwrap_or(0))
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 4).unwrap_or(0)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.byte(6) & 0x40 != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.byte(6) & 0x20 != 0
    }

    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 6).unwrap_or(0) & 0x1fff
    }

    /// Part of a fragmented datagram (more fragments, or an offset above 0).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.byte(8)
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.byte(9)
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 10).unwrap_or(0)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        field::ipv4_at(self.buffer.as_ref(), 12).unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        field::ipv4_at(self.buffer.as_ref(), 16).unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        let header = self.buffer.as_ref().get(..self.header_len());
        checksum::verifies(checksum::add(0, header.unwrap_or_default()))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The header, options included.
    pub fn header(&self) -> &'a [u8] {
        let b: &'a T = self.buffer;
        b.as_ref().get(..self.header_len()).unwrap_or_default()
    }

    /// The payload: from the header's end to the total length (padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a T = self.buffer;
        b.as_ref()
            .get(self.header_len()..self.total_len())
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Recomputes and writes the header checksum.
    pub fn fill_checksum(&mut self) {
        let header_len = self.header_len();
        let b = self.buffer.as_mut();
        if field::set_be16(b, 10, 0).is_some() {
            let c = checksum::finish(checksum::sum(b.get(..header_len).unwrap_or_default()));
            let _ = field::set_be16(b, 10, c);
        }
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.total_len());
        self.buffer.as_mut().get_mut(start..end).unwrap_or_default()
    }
}

/// The fields of a 20-byte IPv4 header this project originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// source
    pub src_addr: Ipv4Addr,
    /// destination
    pub dst_addr: Ipv4Addr,
    /// payload protocol
    pub protocol: u8,
    /// payload length in bytes
    pub payload_len: usize,
    /// time to live
    pub ttl: u8,
    /// the don't-fragment flag
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Writes the header (no options, identification 0) with its checksum into `out[..20]`.
    /// Returns 20. [`Error::BadLength`] when the total length does not fit 16 bits.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        let total =
            u16::try_from(MIN_HEADER_LEN + self.payload_len).map_err(|_| Error::BadLength)?;
        let h: &mut [u8; MIN_HEADER_LEN] = out
            .get_mut(..MIN_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Truncated)?;
        h.fill(0);
        let flags: u8 = if self.dont_frag { 0x40 } else { 0 };
        let fields: [(usize, &[u8]); 5] = [
            (0, &[0x45]),
            (2, &total.to_be_bytes()),
            (6, &[flags]),
            (8, &[self.ttl, self.protocol]),
            (12, &self.src_addr.octets()),
        ];
        for (at, bytes) in fields {
            field::put(h, at, bytes).ok_or(Error::Truncated)?;
        }
        field::put(h, 16, &self.dst_addr.octets()).ok_or(Error::Truncated)?;
        let c = checksum::finish(checksum::sum(h));
        field::set_be16(h, 10, c).ok_or(Error::Truncated)?;
        Ok(MIN_HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> [u8; 28] {
        let mut p = [0u8; 28];
        Ipv4Repr {
            src_addr: [1, 2, 3, 4].into(),
            dst_addr: [5, 6, 7, 8].into(),
            protocol: 17,
            payload_len: 8,
            ttl: 64,
            dont_frag: true,
        }
        .emit(&mut p)
        .unwrap();
        p
    }

    #[test]
    fn emitted_headers_read_back_and_verify() {
        let p = packet();
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(v.verify_checksum());
        assert_eq!(v.src_addr(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(v.dst_addr(), Ipv4Addr::new(5, 6, 7, 8));
        assert_eq!((v.protocol(), v.ttl(), v.total_len()), (17, 64, 28));
        assert!(v.dont_frag() && !v.is_fragment());
        assert_eq!(v.payload().len(), 8);
    }

    #[test]
    fn lengths_are_checked_in_order() {
        let p = packet();
        let check = |b: &[u8]| Ipv4Packet::new_checked(b).map(|_| ());
        assert_eq!(check(&p[..19]), Err(Error::Truncated));
        assert_eq!(check(&p[..27]), Err(Error::BadLength));
        let mut q = p;
        q[0] = 0x65;
        assert_eq!(check(&q), Err(Error::Unsupported));
        q[0] = 0x44;
        assert_eq!(check(&q), Err(Error::BadHeaderLength));
        q[0] = 0x48;
        assert_eq!(check(&q), Err(Error::BadHeaderLength));
        q[0] = 0x46;
        assert_eq!(check(&q), Ok(()));
        q[0] = 0x45;
        q[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(check(&q), Err(Error::BadLength));
        let mut bad = p;
        bad[10] ^= 1;
        assert!(!Ipv4Packet::new_checked(&bad[..]).unwrap().verify_checksum());
        Ipv4Packet::new_unchecked(&mut bad[..]).fill_checksum();
        assert_eq!(bad, p);
    }

    proptest::proptest! {
        #[test]
        fn no_accessor_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let v = Ipv4Packet::new_unchecked(&bytes[..]);
            let _ = (v.header_len(), v.total_len(), v.src_addr(), v.dst_addr(), v.ident());
            let _ = (v.payload(), v.header(), v.verify_checksum(), v.is_fragment());
            if let Ok(v) = Ipv4Packet::new_checked(&bytes[..]) {
                proptest::prop_assert_eq!(v.header().len(), v.header_len());
                proptest::prop_assert_eq!(v.payload().len(), v.total_len() - v.header_len());
            }
        }
    }
}
