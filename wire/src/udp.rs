//! UDP headers (RFC 768).
//!
//! Owns: the 8-byte header's layout, its length check, its checksum over a pseudo-header.
//! Never: the zero-checksum policy (IPv4 "no checksum", IPv6's RFC 6935 exception): callers
//! read [`UdpPacket::checksum`] and decide.

use std::net::IpAddr;

use crate::ip::PROTO_UDP;
use crate::{checksum, field, Error};

/// Header length.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram (header and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// A view without checks; for datagrams this process wrote. See the crate's promise.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view of untrusted bytes; see [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks: 8 bytes at least ([`Error::Truncated`]), a length field of 8 or more and within
    /// the buffer ([`Error::BadLength`]). Whether it must equal the IP payload's length is the
    /// caller's to hold (a first fragment carries less).
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = self.len();
        if len < HEADER_LEN || len > b.len() {
            return Err(Error::BadLength);
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

    /// Length field: header and payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        usize::from(field::be16(self.buffer.as_ref(), 4).unwrap_or(0))
    }

    /// Checksum field (0: none sent, over IPv4).
    pub fn checksum(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 6).unwrap_or(0)
    }

    /// Whether the checksum verifies over the pseudo-header of `src` and `dst` (false when
    /// their families differ). A zero field is not special here: see the module docs.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let len = self.len();
        let Some(acc) = checksum::pseudo_header_ip(src, dst, PROTO_UDP, len) else {
            return false;
        };
        let datagram = self.buffer.as_ref().get(..len).unwrap_or_default();
        checksum::verifies(checksum::add(acc, datagram))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload, to the length field.
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a T = self.buffer;
        b.as_ref().get(HEADER_LEN..self.len()).unwrap_or_default()
    }
}

/// Writes a UDP header at `out[..8]` for the `payload_len` bytes already at `out[8..]`, with its
/// checksum over the pseudo-header of `src` and `dst` (a computed 0 is sent as 0xffff, RFC 768).
/// Returns 8 + `payload_len`.
pub fn emit_header(
    out: &mut [u8],
    (src, src_port): (IpAddr, u16),
    (dst, dst_port): (IpAddr, u16),
    payload_len: usize,
) -> Result<usize, Error> {
    let len = HEADER_LEN + payload_len;
    let len16 = u16::try_from(len).map_err(|_| Error::BadLength)?;
    let seg = out.get_mut(..len).ok_or(Error::Truncated)?;
    let acc = checksum::pseudo_header_ip(src, dst, PROTO_UDP, len).ok_or(Error::Unsupported)?;
    for (at, v) in [(0, src_port), (2, dst_port), (4, len16), (6, 0)] {
        field::set_be16(seg, at, v).ok_or(Error::Truncated)?;
    }
    let c = match checksum::finish(checksum::fold(checksum::add(acc, seg))) {
        0 => 0xffff,
        c => c,
    };
    field::set_be16(seg, 6, c).ok_or(Error::Truncated)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn emitted_datagrams_verify() {
        let (s, d) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let mut b = [0u8; 12];
        b[8..].copy_from_slice(b"ping");
        assert_eq!(emit_header(&mut b, (s, 67), (d, 68), 4), Ok(12));
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (67, 68, 12));
        assert_eq!(u.payload(), b"ping");
        assert!(u.verify_checksum(s, d));
        assert!(!u.verify_checksum(d, IpAddr::from(Ipv4Addr::LOCALHOST)));
        assert!(!u.verify_checksum(s, "::1".parse().unwrap()));
        assert_eq!(UdpPacket::new_checked(&b[..7]), Err(Error::Truncated));
        assert_eq!(UdpPacket::new_checked(&b[..11]), Err(Error::BadLength));
        assert_eq!(
            emit_header(&mut b, (s, 1), (d, 2), 5),
            Err(Error::Truncated)
        );
    }
}
