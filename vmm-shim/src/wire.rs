//! Ethernet, ARP and the few IP/UDP/ICMPv6 headers the shim writes itself, as typed views over
//! byte buffers.
//!
//! Parsing follows smoltcp's promise: a `parse` function checks every length it will read and
//! returns a typed value; after that nothing indexes past the buffer. Builders write into a
//! caller's buffer and return the length written, or `None` when it is too small; every
//! checksum they write is computed over the bytes written.

use std::net::{Ipv4Addr, Ipv6Addr};

use ::wire::checksum;

/// Ethernet header length (no 802.1Q tag: tagged frames are refused).
pub const ETH_HLEN: usize = 14;
/// EtherType IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType 802.1ad (QinQ) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// IP protocol numbers the shim looks at.
pub const PROTO_UDP: u8 = 17;
/// ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Group (multicast or broadcast) address: the I/G bit.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    /// 00:00:00:00:00:00
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }

    /// A unicast address a NIC may use as its own.
    pub fn is_unicast(self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The Ethernet address IPv6 multicast `group` maps to (RFC 2464: 33:33 + last 32 bits).
    pub fn ipv6_multicast(group: Ipv6Addr) -> Mac {
        let o = group.octets();
        Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }

    /// The IPv6 link-local address with this MAC's modified EUI-64 interface identifier.
    pub fn link_local(self) -> Ipv6Addr {
        let m = self.0;
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            m[0] ^ 0x02,
            m[1],
            m[2],
            0xff,
            0xfe,
            m[3],
            m[4],
            m[5],
        ])
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next().ok_or("has fewer than six octets")?;
            if p.len() != 2 {
                return Err("needs two hex digits per octet");
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| "is not hexadecimal")?;
        }
        if parts.next().is_some() {
            return Err("has more than six octets");
        }
        Ok(Mac(out))
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn mac_at(b: &[u8], at: usize) -> Option<Mac> {
    Some(Mac(b.get(at..at + 6)?.try_into().ok()?))
}

fn v4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

fn v6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let a: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

/// An Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthHeader {
    /// destination
    pub dst: Mac,
    /// source
    pub src: Mac,
    /// EtherType (a tag's type when tagged: the caller refuses those)
    pub ethertype: u16,
}

impl EthHeader {
    /// Parses the first 14 bytes of `frame`.
    pub fn parse(frame: &[u8]) -> Option<EthHeader> {
        Some(EthHeader {
            dst: mac_at(frame, 0)?,
            src: mac_at(frame, 6)?,
            ethertype: be16(frame, 12)?,
        })
    }

    /// Writes the header into `out[..14]`.
    pub fn write(&self, out: &mut [u8]) -> Option<()> {
        let h: &mut [u8; ETH_HLEN] = out.get_mut(..ETH_HLEN)?.try_into().ok()?;
        h[..6].copy_from_slice(&self.dst.0);
        h[6..12].copy_from_slice(&self.src.0);
        h[12..14].copy_from_slice(&self.ethertype.to_be_bytes());
        Some(())
    }
}

/// An ARP packet for IPv4 over Ethernet (the only kind answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply
    pub op: u16,
    /// sender hardware address
    pub sha: Mac,
    /// sender protocol address
    pub spa: Ipv4Addr,
    /// target hardware address
    pub tha: Mac,
    /// target protocol address
    pub tpa: Ipv4Addr,
}

/// ARP request.
pub const ARP_REQUEST: u16 = 1;
/// ARP reply.
pub const ARP_REPLY: u16 = 2;
/// Length of an Ethernet/IPv4 ARP body.
pub const ARP_LEN: usize = 28;

impl Arp {
    /// Parses an ARP body (after the Ethernet header). Refuses anything but Ethernet/IPv4
    /// addresses (htype 1, ptype 0x0800, hlen 6, plen 4) and unknown operations.
    pub fn parse(body: &[u8]) -> Option<Arp> {
        if be16(body, 0)? != 1
            || be16(body, 2)? != ETHERTYPE_IPV4
            || *body.get(4)? != 6
            || *body.get(5)? != 4
        {
            return None;
        }
        let op = be16(body, 6)?;
        if op != ARP_REQUEST && op != ARP_REPLY {
            return None;
        }
        Some(Arp {
            op,
            sha: mac_at(body, 8)?,
            spa: v4_at(body, 14)?,
            tha: mac_at(body, 18)?,
            tpa: v4_at(body, 24)?,
        })
    }

    /// Writes the body into `out[..28]`.
    pub fn write(&self, out: &mut [u8]) -> Option<()> {
        let b: &mut [u8; ARP_LEN] = out.get_mut(..ARP_LEN)?.try_into().ok()?;
        b[0..2].copy_from_slice(&1u16.to_be_bytes());
        b[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&self.op.to_be_bytes());
        b[8..14].copy_from_slice(&self.sha.0);
        b[14..18].copy_from_slice(&self.spa.octets());
        b[18..24].copy_from_slice(&self.tha.0);
        b[24..28].copy_from_slice(&self.tpa.octets());
        Some(())
    }
}

/// The fields of an IPv4 header the shim's classification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Summary {
    /// source
    pub src: Ipv4Addr,
    /// destination
    pub dst: Ipv4Addr,
    /// protocol
    pub protocol: u8,
    /// header length in bytes
    pub header_len: usize,
    /// total length (checked against the buffer)
    pub total_len: usize,
    /// a non-first fragment (no transport header)
    pub later_fragment: bool,
}

impl Ipv4Summary {
    /// Reads an IPv4 header: version 4, IHL ≥ 5, total length within the buffer and not
    /// shorter than the header.
    pub fn parse(packet: &[u8]) -> Option<Ipv4Summary> {
        let first = *packet.first()?;
        let header_len = usize::from(first & 0x0f) * 4;
        let total_len = usize::from(be16(packet, 2)?);
        if first >> 4 != 4 || header_len < 20 || total_len < header_len || total_len > packet.len()
        {
            return None;
        }
        let frag = be16(packet, 6)?;
        Some(Ipv4Summary {
            src: v4_at(packet, 12)?,
            dst: v4_at(packet, 16)?,
            protocol: *packet.get(9)?,
            header_len,
            total_len,
            later_fragment: frag & 0x1fff != 0,
        })
    }
}

/// The fields of an IPv6 fixed header the shim's classification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Summary {
    /// source
    pub src: Ipv6Addr,
    /// destination
    pub dst: Ipv6Addr,
    /// next header of the fixed header
    pub next_header: u8,
    /// hop limit
    pub hop_limit: u8,
    /// 40 + payload length (checked against the buffer)
    pub total_len: usize,
}

/// IPv6 fixed header length.
pub const IPV6_HLEN: usize = 40;

impl Ipv6Summary {
    /// Reads an IPv6 fixed header whose payload length fits the buffer.
    pub fn parse(packet: &[u8]) -> Option<Ipv6Summary> {
        if *packet.first()? >> 4 != 6 {
            return None;
        }
        let total_len = IPV6_HLEN + usize::from(be16(packet, 4)?);
        if total_len > packet.len() {
            return None;
        }
        Some(Ipv6Summary {
            src: v6_at(packet, 8)?,
            dst: v6_at(packet, 24)?,
            next_header: *packet.get(6)?,
            hop_limit: *packet.get(7)?,
            total_len,
        })
    }
}

/// Writes an IPv4 header (20 bytes, no options, DF clear, TTL 64) with its checksum, for a
/// payload of `payload_len` bytes. Returns 20.
pub fn write_ipv4_header(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
) -> Option<usize> {
    let total = u16::try_from(20 + payload_len).ok()?;
    let h: &mut [u8; 20] = out.get_mut(..20)?.try_into().ok()?;
    h.fill(0);
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum::finish(checksum::sum(h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    Some(20)
}

/// Writes a UDP header over IPv4 at `out[..8]` for the payload already at `out[8..8+len]`,
/// with its checksum (0 computed is sent as 0xFFFF). Returns 8 + len.
pub fn finish_udp_v4(
    out: &mut [u8],
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload_len: usize,
) -> Option<usize> {
    let len = 8 + payload_len;
    let len16 = u16::try_from(len).ok()?;
    let seg = out.get_mut(..len)?;
    let h: &mut [u8; 8] = seg.first_chunk_mut()?;
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&len16.to_be_bytes());
    h[6..8].fill(0);
    let acc = checksum::pseudo_header(&src.octets(), &dst.octets(), PROTO_UDP, len);
    let mut c = checksum::finish(checksum::fold(checksum::add(acc, seg)));
    if c == 0 {
        c = 0xffff;
    }
    seg.get_mut(6..8)?.copy_from_slice(&c.to_be_bytes());
    Some(len)
}

/// Writes an IPv6 header (hop limit `hop_limit`) for a payload of `payload_len` bytes.
/// Returns 40.
pub fn write_ipv6_header(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload_len: usize,
) -> Option<usize> {
    let plen = u16::try_from(payload_len).ok()?;
    let h: &mut [u8; IPV6_HLEN] = out.get_mut(..IPV6_HLEN)?.try_into().ok()?;
    h.fill(0);
    h[0] = 0x60;
    h[4..6].copy_from_slice(&plen.to_be_bytes());
    h[6] = next_header;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    Some(IPV6_HLEN)
}

/// Fills in the checksum of the ICMPv6 message at `msg` (its checksum field zeroed first).
pub fn finish_icmpv6(msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Option<()> {
    msg.get_mut(2..4)?.fill(0);
    let acc = checksum::pseudo_header(&src.octets(), &dst.octets(), PROTO_ICMPV6, msg.len());
    let c = checksum::finish(checksum::fold(checksum::add(acc, msg)));
    msg.get_mut(2..4)?.copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// Whether the ICMPv6 message `msg` between `src` and `dst` carries a valid checksum.
pub fn icmpv6_verifies(msg: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> bool {
    let acc = checksum::pseudo_header(&src.octets(), &dst.octets(), PROTO_ICMPV6, msg.len());
    checksum::verifies(checksum::add(acc, msg))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let m: Mac = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:12:34:56");
        assert!(m.is_unicast());
        assert!("52:54:00:12:34".parse::<Mac>().is_err());
        assert!("52:54:00:12:34:56:78".parse::<Mac>().is_err());
        assert!("52:54:00:12:34:5g".parse::<Mac>().is_err());
        assert!(Mac::BROADCAST.is_multicast());
        assert_eq!(
            m.link_local(),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn arp_round_trips_and_refuses_other_hardware() {
        let a = Arp {
            op: ARP_REQUEST,
            sha: Mac([2, 0, 0, 0, 0, 1]),
            spa: Ipv4Addr::new(10, 0, 0, 2),
            tha: Mac::default(),
            tpa: Ipv4Addr::new(10, 0, 0, 1),
        };
        let mut b = [0u8; ARP_LEN];
        a.write(&mut b).unwrap();
        assert_eq!(Arp::parse(&b), Some(a));
        assert_eq!(Arp::parse(&b[..27]), None);
        let mut bad = b;
        bad[4] = 8;
        assert_eq!(Arp::parse(&bad), None);
        let mut bad = b;
        bad[7] = 3;
        assert_eq!(Arp::parse(&bad), None);
    }

    #[test]
    fn ipv4_headers_are_checked() {
        let mut p = [0u8; 28];
        write_ipv4_header(&mut p, [1, 2, 3, 4].into(), [5, 6, 7, 8].into(), 17, 8).unwrap();
        assert!(checksum::verifies(checksum::add(0, &p[..20])));
        assert!(Ipv4Summary::parse(&p).is_some());
        assert!(Ipv4Summary::parse(&p[..27]).is_none());
        p[0] = 0x44;
        assert!(Ipv4Summary::parse(&p).is_none());
    }
}
