//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Every rewrite in this crate updates checksums incrementally: `HC' = ~(~HC + ~m + m')`
//! (RFC 1624, eqn. 3), where `m` and `m'` are the one's-complement sums of the 16-bit words that
//! changed. An incremental update carries a bad checksum over as bad — a corrupt packet stays
//! corrupt for its receiver to drop — where a full recompute would launder it. The full
//! computation is here for synthesized packets and for the tests that hold the two equal.

/// Adds `bytes`, as big-endian 16-bit words (an odd last byte padded with zero), to `acc`.
/// Fold with [`fold`].
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
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // the loop leaves at most 0xffff
    u16::try_from(acc).unwrap_or(0xffff)
}

/// The one's-complement sum of `bytes`, folded.
pub fn sum(bytes: &[u8]) -> u16 {
    fold(add(0, bytes))
}

/// The checksum field value for data whose sum (with the field zeroed) is `sum`.
pub fn finish(sum: u16) -> u16 {
    !sum
}

/// RFC 1624 eqn. 3: the checksum after the covered data's sum changed from `old` to `new`.
pub fn update(check: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// Like [`update`] for a checksum field that holds an uncomplemented partial sum (a pseudo-header
/// sum left for the NIC to finish: `VIRTIO_NET_HDR_F_NEEDS_CSUM`, `CHECKSUM_PARTIAL`).
pub fn update_partial(partial: u16, old: u16, new: u16) -> u16 {
    fold(u64::from(partial) + u64::from(!old) + u64::from(new))
}

/// The pseudo-header sum of TCP/UDP/ICMPv6 over IPv4 or IPv6 (addresses, protocol, length).
pub fn pseudo_header(src: &[u8], dst: &[u8], protocol: u8, len: usize) -> u64 {
    let mut acc = add(add(0, src), dst);
    acc += u64::from(protocol);
    // lengths come from 16-bit (IPv4) or 32-bit (IPv6) fields
    acc += u64::try_from(len).unwrap_or(0) & 0xffff;
    acc += (u64::try_from(len).unwrap_or(0) >> 16) & 0xffff;
    acc
}

/// Whether data including its checksum field verifies.
pub fn verifies(acc: u64) -> bool {
    fold(acc) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
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
    }
}
