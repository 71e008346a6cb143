//! Big-endian fields at an offset into a byte buffer.
//!
//! Every read returns `None` and every write does nothing (and returns `None`) when the field
//! does not fit the buffer: no caller indexes a packet directly, and none can panic through
//! these. They compile to a bounds check and a load; they are the hot path's byte access.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The big-endian `u16` at `at`.
#[inline]
pub fn be16(b: &[u8], at: usize) -> Option<u16> {
    let f = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(f.try_into().ok()?))
}

/// The big-endian `u32` at `at`.
#[inline]
pub fn be32(b: &[u8], at: usize) -> Option<u32> {
    let f = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(f.try_into().ok()?))
}

/// Writes `v` big-endian at `at`; `None` (and nothing written) when it does not fit.
#[inline]
pub fn set_be16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    put(b, at, &v.to_be_bytes())
}

/// Writes `v` big-endian at `at`; `None` (and nothing written) when it does not fit.
#[inline]
pub fn set_be32(b: &mut [u8], at: usize, v: u32) -> Option<()> {
    put(b, at, &v.to_be_bytes())
}

/// Copies `bytes` to `at`; `None` (and nothing written) when they do not fit.
#[inline]
pub fn put(b: &mut [u8], at: usize, bytes: &[u8]) -> Option<()> {
    b.get_mut(at..at.checked_add(bytes.len())?)?
        .copy_from_slice(bytes);
    Some(())
}

/// The IPv4 address at `at`.
#[inline]
pub fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

/// The IPv6 address at `at`.
#[inline]
pub fn ipv6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let a: [u8; 16] = b.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_in_bounds_only() {
        let mut b = [0x12, 0x34, 0x56, 0x78, 0x9a];
        assert_eq!(be16(&b, 0), Some(0x1234));
        assert_eq!(be16(&b, 3), Some(0x789a));
        assert_eq!(be16(&b, 4), None);
        assert_eq!(be16(&b, usize::MAX), None);
        assert_eq!(be32(&b, 1), Some(0x3456_789a));
        assert_eq!(be32(&b, 2), None);
        assert_eq!(set_be16(&mut b, 4, 1), None);
        assert_eq!(b, [0x12, 0x34, 0x56, 0x78, 0x9a]);
        assert_eq!(set_be32(&mut b, 0, 0xdead_beef), Some(()));
        assert_eq!(b, [0xde, 0xad, 0xbe, 0xef, 0x9a]);
        assert_eq!(ipv4_at(&b, 1), Some(Ipv4Addr::new(0xad, 0xbe, 0xef, 0x9a)));
        assert_eq!(ipv6_at(&b, 0), None);
    }
}
