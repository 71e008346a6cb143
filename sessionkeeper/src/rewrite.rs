//! Address translation between the local address and the stable one, and MSS clamping; every
//! checksum the change touches is updated incrementally.
//!
//! Outbound (local side → tunnel) the source becomes the stable address; inbound the
//! destination goes back. An ICMP or ICMPv6 error quotes the packet that caused it, so there
//! the quoted address changes too (the quoted *destination* outbound: it quotes a packet sent to
//! us; the quoted *source* inbound), with the quoted IPv4 header checksum, the quoted transport
//! checksum when the quote reaches it, and the error's own checksum.
//!
//! Checksum corners:
//! - IPv4 UDP with checksum 0 carries none and keeps none; an updated UDP checksum that comes
//!   out 0 is sent as 0xFFFF (RFC 768).
//! - IPv6 UDP with checksum 0 is invalid (RFC 8200) except on tunnels that opted in
//!   (RFC 6935). It is passed on as 0 — no checksum is invented for a packet that had none,
//!   and the receiver applies its own policy — and counted.
//! - A non-first fragment carries no transport header: only the IP header changes. A first
//!   fragment's transport checksum covers the pseudo-header of the whole datagram, so it gets
//!   the same update as an unfragmented packet.
//! - The TUN is opened without offloads (no `virtio_net_hdr`), so every packet carries complete
//!   checksums; partial checksums belong to the guest path (vmm-shim).

use wire::{checksum, field};

use crate::parse::{
    is_icmp_error, parse_quoted, walk_tcp_options, Family, Ip, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// from the local side (host or guest) into a tunnel
    Outbound,
    /// from a tunnel to the local side
    Inbound,
}

/// What [`translate`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Translated {
    /// the outer address matched and was replaced
    pub outer: bool,
    /// an ICMP error's quoted address was replaced too
    pub quoted: bool,
    /// an IPv6 UDP datagram without checksum passed as it was
    pub udp6_zero_checksum: bool,
}

/// Applies a data change (sum `old` → `new`) to the checksum at `at`.
fn adjust(p: &mut [u8], at: usize, old: u16, new: u16) {
    if let Some(c) = field::be16(p, at) {
        field::set_be16(p, at, checksum::update(c, old, new));
    }
}

/// Like [`adjust`] for a UDP checksum: 0 means none and stays 0; a result of 0 is sent as
/// 0xFFFF. Returns false when there was no checksum.
fn adjust_udp(p: &mut [u8], at: usize, old: u16, new: u16) -> bool {
    match field::be16(p, at) {
        None | Some(0) => false,
        Some(c) => {
            let c = checksum::update(c, old, new);
            field::set_be16(p, at, if c == 0 { 0xffff } else { c });
            true
        }
    }
}

/// Replaces the address `from` with `to` (both of the packet's family) at the place `dir`
/// says, if it is there; see the module docs. `ip` must come from [`crate::parse::parse`] of
/// this packet.
pub fn translate(packet: &mut [u8], ip: &Ip, dir: Direction, from: &[u8], to: &[u8]) -> Translated {
    let n = ip.family.addr_len();
    let mut done = Translated::default();
    if from.len() != n || to.len() != n {
        return done;
    }
    let at = match dir {
        Direction::Outbound => ip.family.src_offset(),
        Direction::Inbound => ip.family.dst_offset(),
    };
    if packet.get(at..at + n) != Some(from) {
        return done;
    }
    let (old, new) = (checksum::sum(from), checksum::sum(to));
    if ip.family == Family::V4 {
        adjust(packet, 10, old, new);
    }
    let mut icmp_error = false;
    if ip.has_transport_header() {
        match ip.protocol {
            PROTO_TCP => adjust(packet, ip.l4 + 16, old, new),
            PROTO_UDP => {
                let had = adjust_udp(packet, ip.l4 + 6, old, new);
                done.udp6_zero_checksum = !had && ip.family == Family::V6;
            }
            PROTO_ICMPV6 if ip.family == Family::V6 => adjust(packet, ip.l4 + 2, old, new),
            _ => {}
        }
        icmp_error = packet.get(ip.l4).is_some_and(|&t| is_icmp_error(ip, t));
    }
    if let Some(f) = packet.get_mut(at..at + n) {
        f.copy_from_slice(to);
    }
    done.outer = true;
    if icmp_error {
        done.quoted = translate_quoted(packet, ip, dir, from, to);
    }
    done
}

/// The quoted half of an ICMP error; the quote starts 8 bytes into the message.
fn translate_quoted(packet: &mut [u8], ip: &Ip, dir: Direction, from: &[u8], to: &[u8]) -> bool {
    let check_at = ip.l4 + 2;
    let Some(quote) = packet.get_mut(ip.l4 + 8..ip.len) else {
        return false;
    };
    let Ok(q) = parse_quoted(quote) else {
        return false;
    };
    let n = q.family.addr_len();
    let at = match dir {
        Direction::Outbound => q.family.dst_offset(),
        Direction::Inbound => q.family.src_offset(),
    };
    if n != from.len() || quote.get(at..at + n) != Some(from) {
        return false;
    }
    // The quote begins at an even offset of the ICMP message, so its word sums line up.
    let before = checksum::sum(quote);
    let (old, new) = (checksum::sum(from), checksum::sum(to));
    if q.family == Family::V4 {
        adjust(quote, 10, old, new);
    }
    if q.has_transport_header() {
        // a quoted transport checksum is adjusted only when the quote reaches it
        match q.protocol {
            PROTO_TCP if q.l4 + 18 <= q.len => adjust(quote, q.l4 + 16, old, new),
            PROTO_UDP if q.l4 + 8 <= q.len => {
                adjust_udp(quote, q.l4 + 6, old, new);
            }
            PROTO_ICMPV6 if q.family == Family::V6 && q.l4 + 4 <= q.len => {
                adjust(quote, q.l4 + 2, old, new);
            }
            _ => {}
        }
    }
    if let Some(f) = quote.get_mut(at..at + n) {
        f.copy_from_slice(to);
    }
    let after = checksum::sum(quote);
    adjust(packet, check_at, before, after);
    true
}

/// TCP flag bits.
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

/// Lowers the MSS option of a SYN (or SYN-ACK) to `max_mss`. Returns the MSS it found before
/// clamping, if any. A SYN without the option already implies the protocol minimum.
pub fn clamp_mss(packet: &mut [u8], ip: &Ip, max_mss: u16) -> Option<u16> {
    if ip.protocol != PROTO_TCP || !ip.has_transport_header() {
        return None;
    }
    let l4 = ip.l4;
    if packet.get(l4 + 13).is_none_or(|f| f & flags::SYN == 0) {
        return None;
    }
    let doff = usize::from(packet.get(l4 + 12)? >> 4) * 4;
    let mut mss_at = None;
    walk_tcp_options(packet.get(l4 + 20..l4 + doff)?, |kind, off| {
        if kind == 2 && mss_at.is_none() {
            mss_at = Some(off);
        }
    })
    .ok()?;
    let opt = l4 + 20 + mss_at?;
    if packet.get(opt + 1) != Some(&4) {
        return None;
    }
    let value_at = opt + 2;
    let mss = field::be16(packet, value_at)?;
    if mss > max_mss {
        // the value may sit at an odd offset: sum the aligned words around it
        let span = (value_at & !1)..((value_at + 3) & !1);
        let old = checksum::sum(packet.get(span.clone())?);
        field::set_be16(packet, value_at, max_mss);
        let new = checksum::sum(packet.get(span)?);
        adjust(packet, l4 + 16, old, new);
    }
    Some(mss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    /// A minimal IPv4 TCP SYN with an MSS option placed after one NOP (odd offset).
    fn syn_v4() -> Vec<u8> {
        let mut p = vec![0u8; 20 + 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&48u16.to_be_bytes());
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[10, 0, 0, 2]);
        p[16..20].copy_from_slice(&[198, 19, 0, 100]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[32] = 7 << 4;
        p[33] = flags::SYN;
        p[40..48].copy_from_slice(&[1, 2, 4, 0x05, 0xb4, 1, 1, 0]);
        fix_v4_tcp(&mut p);
        p
    }

    fn fix_v4_tcp(p: &mut [u8]) {
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::finish(checksum::sum(&p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[36..38].copy_from_slice(&[0, 0]);
        let acc = checksum::pseudo_header(&p[12..16], &p[16..20], PROTO_TCP, p.len() - 20);
        let c = checksum::finish(checksum::fold(checksum::add(acc, &p[20..])));
        p[36..38].copy_from_slice(&c.to_be_bytes());
    }

    fn tcp_ok(p: &[u8]) -> bool {
        let acc = checksum::pseudo_header(&p[12..16], &p[16..20], PROTO_TCP, p.len() - 20);
        checksum::verifies(checksum::add(acc, &p[20..]))
            && checksum::verifies(checksum::add(0, &p[..20]))
    }

    #[test]
    fn translate_and_back_is_identity() {
        let orig = syn_v4();
        let mut p = orig.clone();
        let ip = parse(&p).unwrap();
        let t = translate(
            &mut p,
            &ip,
            Direction::Outbound,
            &[10, 0, 0, 2],
            &[100, 96, 0, 2],
        );
        assert!(t.outer);
        assert_eq!(&p[12..16], &[100, 96, 0, 2]);
        assert!(tcp_ok(&p));
        // the reply comes back to the stable address: swap addresses as the server would
        let mut back = p.clone();
        let ip = parse(&back).unwrap();
        translate(
            &mut back,
            &ip,
            Direction::Outbound,
            &[100, 96, 0, 2],
            &[10, 0, 0, 2],
        );
        assert_eq!(back, orig);
    }

    #[test]
    fn mss_at_an_odd_offset_is_clamped_with_a_valid_checksum() {
        let mut p = syn_v4();
        let ip = parse(&p).unwrap();
        assert_eq!(clamp_mss(&mut p, &ip, 1240), Some(1460));
        assert_eq!(&p[43..45], &1240u16.to_be_bytes());
        assert!(tcp_ok(&p));
        // below the clamp: untouched
        let before = p.clone();
        assert_eq!(clamp_mss(&mut p, &ip, 1300), Some(1240));
        assert_eq!(p, before);
    }

    #[test]
    fn a_non_matching_address_is_left_alone() {
        let mut p = syn_v4();
        let before = p.clone();
        let ip = parse(&p).unwrap();
        let t = translate(
            &mut p,
            &ip,
            Direction::Outbound,
            &[10, 0, 0, 3],
            &[100, 96, 0, 2],
        );
        assert_eq!(t, Translated::default());
        assert_eq!(p, before);
    }
}
