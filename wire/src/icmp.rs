//! ICMP (RFC 792) and ICMPv6 (RFC 4443) message headers: type, code, checksum and the 4-byte
//! rest of header, which every message of both has.
//!
//! Owns: the layout and the checksums (ICMPv6's covers a pseudo-header, ICMP's does not).
//! Never: the meaning of a message body (neighbour discovery lives in `vmm-shim::ndp`, probe
//! echoes in `probe`, quoted packets of errors in `sessionkeeper`).

use std::net::Ipv6Addr;

use crate::ip::PROTO_ICMPV6;
use crate::{checksum, field, Error};

/// Type, code, checksum and the rest of header.
pub const HEADER_LEN: usize = 8;
/// ICMP echo reply.
pub const V4_ECHO_REPLY: u8 = 0;
/// ICMP echo request.
pub const V4_ECHO_REQUEST: u8 = 8;
/// ICMPv6 echo request.
pub const V6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const V6_ECHO_REPLY: u8 = 129;

fn check_len(b: &[u8]) -> Result<(), Error> {
    if b.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    Ok(())
}

macro_rules! common_accessors {
    () => {
        /// A view without checks; for messages this process wrote. See the crate's promise.
        pub fn new_unchecked(buffer: T) -> Self {
            Self { buffer }
        }

        /// A view of untrusted bytes: 8 at least ([`Error::Truncated`]).
        pub fn new_checked(buffer: T) -> Result<Self, Error> {
            let p = Self::new_unchecked(buffer);
            p.check_len()?;
            Ok(p)
        }

        /// The check of [`new_checked`](Self::new_checked).
        pub fn check_len(&self) -> Result<(), Error> {
            check_len(self.buffer.as_ref())
        }

        /// The buffer back.
        pub fn into_inner(self) -> T {
            self.buffer
        }

        /// Message type.
        pub fn msg_type(&self) -> u8 {
            self.buffer.as_ref().first().copied().unwrap_or(0)
        }

        /// Message code.
        pub fn msg_code(&self) -> u8 {
            self.buffer.as_ref().get(1).copied().unwrap_or(0)
        }

        /// Checksum field.
        pub fn checksum(&self) -> u16 {
            field::be16(self.buffer.as_ref(), 2).unwrap_or(0)
        }

        /// Identifier of an echo request or reply (the rest of header's first half).
        pub fn echo_ident(&self) -> u16 {
            field::be16(self.buffer.as_ref(), 4).unwrap_or(0)
        }

        /// Sequence number of an echo request or reply (the rest of header's second half).
        pub fn echo_seq_no(&self) -> u16 {
            field::be16(self.buffer.as_ref(), 6).unwrap_or(0)
        }
    };
}

/// A view of an ICMP (IPv4) message: the whole buffer is the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    common_accessors!();

    /// Whether the checksum over the message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(checksum::add(0, self.buffer.as_ref()))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv4Packet<&'a T> {
    /// Everything after the 8-byte header (an echo's data, an error's quoted packet).
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a T = self.buffer;
        b.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Recomputes and writes the checksum.
    pub fn fill_checksum(&mut self) {
        let b = self.buffer.as_mut();
        if field::set_be16(b, 2, 0).is_some() {
            let _ = field::set_be16(b, 2, checksum::finish(checksum::sum(b)));
        }
    }
}

/// A view of an ICMPv6 message: the whole buffer is the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    common_accessors!();

    /// Whether the checksum verifies over the message and the pseudo-header of `src` and
    /// `dst`.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, PROTO_ICMPV6, b.len());
        checksum::verifies(checksum::add(acc, b))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv6Packet<&'a T> {
    /// Everything after the 8-byte header (an echo's data, an error's quoted packet).
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a T = self.buffer;
        b.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Recomputes and writes the checksum over the message and the pseudo-header.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let b = self.buffer.as_mut();
        if field::set_be16(b, 2, 0).is_some() {
            let acc = checksum::pseudo_header_v6(src, dst, PROTO_ICMPV6, b.len());
            let c = checksum::finish(checksum::fold(checksum::add(acc, b)));
            let _ = field::set_be16(b, 2, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_fields_and_checksums() {
        let mut m = [V4_ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 7, b'h', b'i'];
        Icmpv4Packet::new_unchecked(&mut m[..]).fill_checksum();
        let v = Icmpv4Packet::new_checked(&m[..]).unwrap();
        assert!(v.verify_checksum());
        assert_eq!(
            (v.msg_type(), v.echo_ident(), v.echo_seq_no()),
            (8, 0x1234, 7)
        );
        assert_eq!(v.payload(), b"hi");
        assert_eq!(Icmpv4Packet::new_checked(&m[..7]), Err(Error::Truncated));

        let (s, d) = ("fe80::1".parse().unwrap(), "ff02::1".parse().unwrap());
        m[0] = V6_ECHO_REQUEST;
        Icmpv6Packet::new_unchecked(&mut m[..]).fill_checksum(s, d);
        let v = Icmpv6Packet::new_checked(&m[..]).unwrap();
        assert!(v.verify_checksum(s, d));
        assert!(!v.verify_checksum(d, d));
        // a short buffer is left alone, never indexed past
        let mut short = [1u8];
        Icmpv6Packet::new_unchecked(&mut short[..]).fill_checksum(s, d);
        assert_eq!(short, [1]);
    }
}
