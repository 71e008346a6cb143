//! IPv6 neighbour discovery for the guest's link (RFC 4861): the shim is the guest's router
//! and its only neighbour.
//!
//! - A router solicitation is answered with a router advertisement: the shim's link-local
//!   address as the default router, the MTU, and the configured prefix for SLAAC.
//! - A neighbour solicitation for any address but the guest's own is answered with the shim's
//!   MAC (every destination is reached through it).
//! - Duplicate address detection (a solicitation from `::`) tells the shim the global address
//!   the guest is about to use; the caller maps that one to the stable address.
//! - Advertisements and redirects from the guest are refused (RA guard).
//!
//! Every message is checked as RFC 4861 asks: hop limit 255, code 0, a valid checksum, the
//! minimum length, and options of non-zero length that fit.

use std::net::Ipv6Addr;

use wire::ethernet::{self, EthernetRepr, Mac, ETHERTYPE_IPV6};
use wire::icmp::Icmpv6Packet;
use wire::ip::PROTO_ICMPV6;
use wire::ipv6::{Ipv6Repr, HEADER_LEN as IPV6_HLEN};

/// ICMPv6 types.
pub const ROUTER_SOLICITATION: u8 = 133;
/// Router advertisement.
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// Neighbour solicitation.
pub const NEIGHBOR_SOLICITATION: u8 = 135;
/// Neighbour advertisement.
pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Redirect.
pub const REDIRECT: u8 = 137;

/// All-nodes multicast.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Router lifetime advertised, seconds.
pub const ROUTER_LIFETIME: u16 = 1800;
/// Prefix lifetimes advertised, seconds.
const VALID_LIFETIME: u32 = 86_400;
const PREFERRED_LIFETIME: u32 = 14_400;

/// A neighbour discovery message from the guest, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// a router solicitation
    RouterSolicitation,
    /// a neighbour solicitation for `target`
    NeighborSolicitation {
        /// the address asked about
        target: Ipv6Addr,
    },
    /// a neighbour advertisement (the guest's, for its own address)
    NeighborAdvertisement,
    /// an advertisement or redirect no guest may send
    RouterOnly,
}

/// Why a neighbour discovery message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// length, hop limit, code, checksum or options wrong
    Malformed,
    /// not a neighbour discovery type
    NotNdp,
}

/// Whether `icmp_type` is one of the neighbour discovery types the shim handles.
pub fn is_ndp(icmp_type: u8) -> bool {
    (ROUTER_SOLICITATION..=REDIRECT).contains(&icmp_type)
}

/// Checks the ICMPv6 message `msg` (the IPv6 payload) sent from `src` to `dst` with
/// `hop_limit`.
pub fn parse(msg: &[u8], src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Result<Message, Invalid> {
    let (&kind, &code) = (
        msg.first().ok_or(Invalid::Malformed)?,
        msg.get(1).ok_or(Invalid::Malformed)?,
    );
    if !is_ndp(kind) {
        return Err(Invalid::NotNdp);
    }
    let (fixed, min) = match kind {
        ROUTER_SOLICITATION => (8, 8),
        ROUTER_ADVERTISEMENT => (16, 16),
        NEIGHBOR_SOLICITATION | NEIGHBOR_ADVERTISEMENT => (24, 24),
        _ => (40, 40),
    };
    if hop_limit != 255
        || code != 0
        || msg.len() < min
        || !Icmpv6Packet::new_checked(msg).is_ok_and(|m| m.verify_checksum(src, dst))
    {
        return Err(Invalid::Malformed);
    }
    // options: each at least 8 bytes, a multiple of 8, inside the message
    let mut opts = msg.get(fixed..).unwrap_or_default();
    while !opts.is_empty() {
        let len = usize::from(*opts.get(1).ok_or(Invalid::Malformed)?) * 8;
        if len == 0 || len > opts.len() {
            return Err(Invalid::Malformed);
        }
        opts = opts.get(len..).unwrap_or_default();
    }
    Ok(match kind {
        ROUTER_SOLICITATION => Message::RouterSolicitation,
        NEIGHBOR_SOLICITATION => {
            let t: [u8; 16] = msg
                .get(8..24)
                .and_then(|t| t.try_into().ok())
                .ok_or(Invalid::Malformed)?;
            let target = Ipv6Addr::from(t);
            if target.is_multicast() {
                return Err(Invalid::Malformed);
            }
            Message::NeighborSolicitation { target }
        }
        NEIGHBOR_ADVERTISEMENT => Message::NeighborAdvertisement,
        _ => Message::RouterOnly,
    })
}

/// Whether `a` is an address a guest may use as its global unicast address.
pub fn is_global_unicast(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || first & 0xffc0 == 0xfe80
        || a.to_ipv4_mapped().is_some())
}

/// The prefix the router advertisement carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix6 {
    /// the /64
    pub prefix: Ipv6Addr,
}

impl Prefix6 {
    /// Whether `a` is inside the /64.
    pub fn contains(&self, a: Ipv6Addr) -> bool {
        a.segments()[..4] == self.prefix.segments()[..4]
    }
}

/// Writes a router advertisement frame from the shim to `dst` (`dst_mac` on the link);
/// returns its length.
pub fn write_router_advertisement(
    out: &mut [u8],
    shim_mac: Mac,
    dst_mac: Mac,
    dst: Ipv6Addr,
    mtu: u16,
    prefix: Option<Prefix6>,
) -> Option<usize> {
    let src = shim_mac.link_local();
    let mut msg = Vec::with_capacity(64);
    // type, code, checksum, cur hop limit 64, flags M=0 O=0, router lifetime, reachable and
    // retrans timers unspecified
    msg.extend_from_slice(&[ROUTER_ADVERTISEMENT, 0, 0, 0, 64, 0]);
    msg.extend_from_slice(&ROUTER_LIFETIME.to_be_bytes());
    msg.extend_from_slice(&[0; 8]);
    // source link-layer address
    msg.extend_from_slice(&[1, 1]);
    msg.extend_from_slice(&shim_mac.0);
    // MTU
    msg.extend_from_slice(&[5, 1, 0, 0]);
    msg.extend_from_slice(&u32::from(mtu).to_be_bytes());
    if let Some(p) = prefix {
        // prefix information: /64, on-link and autonomous
        msg.extend_from_slice(&[3, 4, 64, 0xc0]);
        msg.extend_from_slice(&VALID_LIFETIME.to_be_bytes());
        msg.extend_from_slice(&PREFERRED_LIFETIME.to_be_bytes());
        msg.extend_from_slice(&[0; 4]);
        let mut net = p.prefix.octets();
        net[8..].fill(0);
        msg.extend_from_slice(&net);
    }
    write_frame(out, shim_mac, dst_mac, src, dst, &mut msg)
}

/// Writes a solicited neighbour advertisement for `target` (answered with the shim's MAC,
/// router flag set) to `dst`; returns the frame's length.
pub fn write_neighbor_advertisement(
    out: &mut [u8],
    shim_mac: Mac,
    dst_mac: Mac,
    dst: Ipv6Addr,
    target: Ipv6Addr,
) -> Option<usize> {
    let mut msg = Vec::with_capacity(32);
    // router, solicited, override
    msg.extend_from_slice(&[NEIGHBOR_ADVERTISEMENT, 0, 0, 0, 0xe0, 0, 0, 0]);
    msg.extend_from_slice(&target.octets());
    // target link-layer address
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&shim_mac.0);
    write_frame(out, shim_mac, dst_mac, shim_mac.link_local(), dst, &mut msg)
}

fn write_frame(
    out: &mut [u8],
    shim_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg: &mut [u8],
) -> Option<usize> {
    Icmpv6Packet::new_checked(&mut *msg)
        .ok()?
        .fill_checksum(src, dst);
    EthernetRepr {
        dst: dst_mac,
        src: shim_mac,
        ethertype: ETHERTYPE_IPV6,
    }
    .emit(out)
    .ok()?;
    let ip = out.get_mut(ethernet::HEADER_LEN..)?;
    Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: PROTO_ICMPV6,
        payload_len: msg.len(),
        hop_limit: 255,
    }
    .emit(ip)
    .ok()?;
    ip.get_mut(IPV6_HLEN..IPV6_HLEN + msg.len())?
        .copy_from_slice(msg);
    Some(ethernet::HEADER_LEN + IPV6_HLEN + msg.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const SHIM: Mac = Mac([0x02, 0xfa, 0x11, 0, 0, 1]);
    const GUEST: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    fn ns(target: Ipv6Addr, src: Ipv6Addr) -> Vec<u8> {
        let mut m = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        Icmpv6Packet::new_unchecked(&mut m[..]).fill_checksum(src, ALL_NODES);
        m
    }

    #[test]
    fn solicitations_are_checked() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let t: Ipv6Addr = "fd00:200::1".parse().unwrap();
        let m = ns(t, src);
        assert_eq!(
            parse(&m, src, ALL_NODES, 255),
            Ok(Message::NeighborSolicitation { target: t })
        );
        assert_eq!(parse(&m, src, ALL_NODES, 64), Err(Invalid::Malformed));
        let mut bad = m.clone();
        bad[20] ^= 1;
        assert_eq!(parse(&bad, src, ALL_NODES, 255), Err(Invalid::Malformed));
        // an option of length 0
        let mut m = ns(t, src);
        m.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        Icmpv6Packet::new_unchecked(&mut m[..]).fill_checksum(src, ALL_NODES);
        assert_eq!(parse(&m, src, ALL_NODES, 255), Err(Invalid::Malformed));
    }

    #[test]
    fn advertisements_carry_valid_checksums() {
        let mut out = [0u8; 256];
        let prefix = Prefix6 {
            prefix: "fd00:200::".parse().unwrap(),
        };
        let n = write_router_advertisement(&mut out, SHIM, GUEST, ALL_NODES, 1420, Some(prefix))
            .unwrap();
        let ip = wire::Ipv6Packet::new_checked(&out[14..n]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        assert_eq!(ip.hop_limit(), 255);
        let msg = Icmpv6Packet::new_checked(&out[14 + 40..n]).unwrap();
        assert!(msg.verify_checksum(src, dst));
        let n = write_neighbor_advertisement(&mut out, SHIM, GUEST, src, src).unwrap();
        let ip = wire::Ipv6Packet::new_checked(&out[14..n]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let msg = Icmpv6Packet::new_checked(&out[14 + 40..n]).unwrap();
        assert!(msg.verify_checksum(src, dst));
        assert_eq!(
            parse(&out[14 + 40..n], src, dst, 255),
            Ok(Message::NeighborAdvertisement)
        );
    }

    #[test]
    fn global_unicast_excludes_the_special_ranges() {
        for a in ["::", "::1", "fe80::1", "ff02::1", "::ffff:1.2.3.4"] {
            assert!(!is_global_unicast(a.parse().unwrap()), "{a}");
        }
        assert!(is_global_unicast("fd00:200::5".parse().unwrap()));
    }
}
