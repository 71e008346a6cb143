//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624): the only copy in the
//! workspace.
//!
//! A sum is carried wide (`u64`, never overflowing for any packet) through [`add`] and the
//! pseudo-header functions, folded once with [`fold`], and complemented into a checksum field
//! with [`finish`]. Data that includes its own checksum field [`verifies`] when its folded sum is
//! `0xffff`.
//!
//! Every rewrite updates checksums incrementally: `HC' = ~(~HC + ~m + m')` (RFC 1624, eqn. 3),
//! where `m` and `m'` are the one's-complement sums of the 16-bit words that changed. An
//! incremental update carries a bad checksum over as bad — a corrupt packet stays corrupt for
//! its receiver to drop — where a full recompute would launder it. The full computation is for
//! synthesized packets and for the tests that hold the two equal.
//!
//! Nothing here allocates or makes more than one pass over the bytes; no input panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Adds `bytes`, as big-endian 16-bit words (an odd last byte padded with zero), to `acc`.
/// Fold with [`fold`]. `bytes` must start on an even offset of the checksummed data.
#[inline]
pub fn add(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        if let [a, b] = w {
            acc += u64::from(u16::from_be_bytes([*a, *b]));
        }
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a wide sum to 16 bits with end-around carry.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // the loop leaves at most 0xffff
    u16::try_from(acc).unwrap_or(0xffff)
}

/// The one's-complement sum of `bytes`, folded (RFC 1071).
#[inline]
pub fn sum(bytes: &[u8]) -> u16 {
    fold(add(0, bytes))
}

/// The checksum field value for data whose sum (with the field zeroed) is `sum`.
#[inline]
pub fn finish(sum: u16) -> u16 {
    !sum
}

/// RFC 1624 eqn. 3: the checksum after the covered data's sum changed from `old` to `new`.
#[inline]
pub fn update(check: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// Like [`update`] for a checksum field that holds an uncomplemented partial sum (a
/// pseudo-header sum left for the NIC to finish: `VIRTIO_NET_HDR_F_NEEDS_CSUM`,
/// `CHECKSUM_PARTIAL`).
#[inline]
pub fn update_partial(partial: u16, old: u16, new: u16) -> u16 {
    fold(u64::from(partial) + u64::from(!old) + u64::from(new))
}

/// The pseudo-header sum of TCP/UDP/ICMPv6 over IPv4 or IPv6, from the address bytes as they
/// lie in the packet (4 or 16 each), the protocol (next header) and the upper-layer length.
#[inline]
pub fn pseudo_header(src: &[u8], dst: &[u8], protocol: u8, len: usize) -> u64 {
    let mut acc = add(add(0, src), dst);
    acc += u64::from(protocol);
    // lengths come from 16-bit (IPv4) or 32-bit (IPv6) fields
    let len = u64::try_from(len).unwrap_or(0);
    acc += len & 0xffff;
    acc += (len >> 16) & 0xffff;
    acc
}

/// The IPv4 pseudo-header sum (RFC 768, RFC 9293): addresses, zero, protocol, length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: usize) -> u64 {
    pseudo_header(&src.octets(), &dst.octets(), protocol, len)
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1): addresses, 32-bit length, next header.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: usize) -> u64 {
    pseudo_header(&src.octets(), &dst.octets(), next_header, len)
}

/// The pseudo-header sum for a pair of addresses of one family; `None` when the families
/// differ (no packet has such a pair).
pub fn pseudo_header_ip(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> Option<u64> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(pseudo_header_v4(s, d, protocol, len)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(pseudo_header_v6(s, d, protocol, len)),
        _ => None,
    }
}

/// Whether data including its checksum field, summed into `acc`, verifies.
#[inline]
pub fn verifies(acc: u64) -> bool {
    fold(acc) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(finish(sum(&data)), 0x220d);
        // a word-aligned split sums the same (RFC 1071 §2(B), associativity)
        assert_eq!(fold(add(add(0, &data[..2]), &data[2..])), 0xddf2);
    }

    #[test]
    fn ipv4_header_vector() {
        // the classic example header (Wikipedia, "IPv4 header checksum"): checksum 0xb861
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = finish(sum(&h));
        assert_eq!(c, 0xb861);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(add(0, &h)));
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC 0xdd2f, m 0x5555 -> m' 0x3285 gives HC' 0x0000 (eqn. 3), not 0xffff
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn incremental_equals_full() {
        let mut data = [
            0x45u8, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = finish(sum(&data));
        let old = sum(&data[12..16]);
        data[12..16].copy_from_slice(&[100, 96, 0, 2]);
        let new = sum(&data[12..16]);
        assert_eq!(update(c, old, new), finish(sum(&data)));
    }

    #[test]
    fn odd_length_pads() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn pseudo_headers_by_family() {
        let v4 = pseudo_header_v4([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 17, 8);
        assert_eq!(fold(v4), 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 8);
        let (s, d) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        // the 32-bit IPv6 length contributes both halves
        assert_eq!(
            fold(pseudo_header_v6(s, d, 58, 0x1_0002)),
            fold(1 + 58 + 1 + 2)
        );
        assert_eq!(
            pseudo_header_ip(s.into(), Ipv4Addr::LOCALHOST.into(), 6, 0),
            None
        );
    }

    proptest::proptest! {
        /// RFC 1624: changing any aligned run of words and updating incrementally gives what a
        /// full recompute gives, for any data, any change, anywhere.
        #[test]
        fn incremental_update_equals_full_recompute(
            data in proptest::collection::vec(proptest::num::u8::ANY, 2..200),
            start in 0usize..100,
            words in 1usize..8,
            fill in proptest::collection::vec(proptest::num::u8::ANY, 16),
        ) {
            let mut data = data;
            let start = (start % data.len()) & !1;
            let end = (start + 2 * words).min(data.len() & !1);
            proptest::prop_assume!(start < end);
            let check = finish(sum(&data));
            let old = sum(&data[start..end]);
            data[start..end].copy_from_slice(&fill[..end - start]);
            let new = sum(&data[start..end]);
            let full = finish(sum(&data));
            let incremental = update(check, old, new);
            // 0x0000 and 0xffff are both one's-complement zero: the same value
            let zero = |c: u16| if c == 0xffff { 0 } else { c };
            proptest::prop_assert_eq!(zero(incremental), zero(full));
            let mut with = data.clone();
            with.extend_from_slice(&incremental.to_be_bytes());
            if data.len() % 2 == 0 {
                proptest::prop_assert!(verifies(add(0, &with)));
            }
        }

        /// The partial (uncomplemented) form tracks the sum itself.
        #[test]
        fn partial_update_tracks_the_sum(
            data in proptest::collection::vec(proptest::num::u8::ANY, 4..64),
            fill in proptest::num::u16::ANY,
        ) {
            let mut data = data;
            let before = sum(&data);
            let old = sum(&data[..2]);
            data[..2].copy_from_slice(&fill.to_be_bytes());
            let after = sum(&data);
            let tracked = update_partial(before, old, sum(&data[..2]));
            let zero = |c: u16| if c == 0xffff { 0 } else { c };
            proptest::prop_assert_eq!(zero(tracked), zero(after));
        }
    }
}
