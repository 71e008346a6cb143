//! IP packets parsed into offsets, without trusting a byte: every length is checked against the
//! buffer and against every other length before anything is read or written through it.

use std::net::IpAddr;

use wire::field::{self, be16};

/// IP protocol numbers this crate looks into.
pub use wire::ip::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// At most this many IPv6 extension headers are walked; more is refused.
const MAX_EXTENSION_HEADERS: usize = 8;

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// neither IPv4 nor IPv6
    NotIp,
    /// shorter than a header it announces
    Truncated,
    /// IPv4 IHL below 5
    BadHeaderLength,
    /// the IP length field disagrees with the buffer or the header
    BadLength,
    /// an IPv6 extension header chain that is too long or runs past the end
    BadExtension,
    /// TCP data offset below 5 or past the end
    BadTcpOffset,
    /// TCP options running past the header
    BadTcpOptions,
    /// a UDP length that disagrees with the IP length
    BadUdpLength,
    /// an ICMP message too short for its header
    BadIcmp,
}

impl Malformed {
    /// Every reason, for counters.
    pub const ALL: [Malformed; 9] = [
        Malformed::NotIp,
        Malformed::Truncated,
        Malformed::BadHeaderLength,
        Malformed::BadLength,
        Malformed::BadExtension,
        Malformed::BadTcpOffset,
        Malformed::BadTcpOptions,
        Malformed::BadUdpLength,
        Malformed::BadIcmp,
    ];

    /// A stable name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Malformed::NotIp => "not_ip",
            Malformed::Truncated => "truncated",
            Malformed::BadHeaderLength => "bad_header_length",
            Malformed::BadLength => "bad_length",
            Malformed::BadExtension => "bad_extension",
            Malformed::BadTcpOffset => "bad_tcp_offset",
            Malformed::BadTcpOptions => "bad_tcp_options",
            Malformed::BadUdpLength => "bad_udp_length",
            Malformed::BadIcmp => "bad_icmp",
        }
    }
}

/// IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4
    V4,
    /// IPv6
    V6,
}

impl Family {
    /// Offset of the source address in the fixed header.
    pub fn src_offset(self) -> usize {
        match self {
            Family::V4 => 12,
            Family::V6 => 8,
        }
    }

    /// Offset of the destination address in the fixed header.
    pub fn dst_offset(self) -> usize {
        self.src_offset() + self.addr_len()
    }

    /// Address length in bytes.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// Where a packet sits in a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// not fragmented
    Whole,
    /// offset 0, more to come: it carries the transport header
    First,
    /// offset above 0: transport payload only, left alone
    Later,
}

/// Offsets into a parsed IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip {
    /// version
    pub family: Family,
    /// the packet's length by its own header (may be less than the buffer: link padding)
    pub len: usize,
    /// the upper-layer protocol after any IPv6 extension headers
    pub protocol: u8,
    /// offset of the upper-layer header
    pub l4: usize,
    /// fragment position
    pub fragment: Fragment,
}

impl Ip {
    /// Whether the transport header is present (whole packet or first fragment).
    pub fn has_transport_header(&self) -> bool {
        self.fragment != Fragment::Later
    }

    /// Source address.
    pub fn src(&self, packet: &[u8]) -> Option<IpAddr> {
        read_addr(packet, self.family, self.family.src_offset())
    }

    /// Destination address.
    pub fn dst(&self, packet: &[u8]) -> Option<IpAddr> {
        read_addr(packet, self.family, self.family.dst_offset())
    }
}

fn read_addr(packet: &[u8], family: Family, at: usize) -> Option<IpAddr> {
    Some(match family {
        Family::V4 => IpAddr::V4(field::ipv4_at(packet, at)?),
        Family::V6 => IpAddr::V6(field::ipv6_at(packet, at)?),
    })
}

/// How strictly lengths are held to the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// a packet on the wire: its length field must fit the buffer
    Packet,
    /// the header quoted in an ICMP error: the quote is usually cut short
    Quoted,
}

/// Parses an IP packet and validates its transport header (TCP data offset and options, UDP
/// length, ICMP minimum).
pub fn parse(packet: &[u8]) -> Result<Ip, Malformed> {
    let ip = parse_ip(packet, Mode::Packet)?;
    let l4 = packet.get(ip.l4..ip.len).ok_or(Malformed::Truncated)?;
    if ip.has_transport_header() {
        validate_transport(&ip, l4)?;
    }
    Ok(ip)
}

/// Parses the IP header quoted in an ICMP error. The quote may be cut anywhere after the IP
/// header; `len` is then the quote's length.
pub fn parse_quoted(quote: &[u8]) -> Result<Ip, Malformed> {
    parse_ip(quote, Mode::Quoted)
}

fn parse_ip(packet: &[u8], mode: Mode) -> Result<Ip, Malformed> {
    let first = *packet.first().ok_or(Malformed::Truncated)?;
    match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 {
                return Err(Malformed::BadHeaderLength);
            }
            if packet.len() < ihl {
                return Err(Malformed::Truncated);
            }
            let total = usize::from(be16(packet, 2).ok_or(Malformed::Truncated)?);
            if total < ihl {
                return Err(Malformed::BadLength);
            }
            let len = match mode {
                Mode::Packet if total > packet.len() => return Err(Malformed::BadLength),
                Mode::Packet => total,
                Mode::Quoted => total.min(packet.len()),
            };
            let frag = be16(packet, 6).ok_or(Malformed::Truncated)?;
            let fragment = match (frag & 0x1fff, frag & 0x2000 != 0) {
                (0, false) => Fragment::Whole,
                (0, true) => Fragment::First,
                _ => Fragment::Later,
            };
            Ok(Ip {
                family: Family::V4,
                len,
                protocol: *packet.get(9).ok_or(Malformed::Truncated)?,
                l4: ihl,
                fragment,
            })
        }
        6 => {
            if packet.len() < 40 {
                return Err(Malformed::Truncated);
            }
            let payload = usize::from(be16(packet, 4).ok_or(Malformed::Truncated)?);
            let len = match mode {
                Mode::Packet if 40 + payload > packet.len() => return Err(Malformed::BadLength),
                Mode::Packet => 40 + payload,
                Mode::Quoted => (40 + payload).min(packet.len()),
            };
            let mut next = *packet.get(6).ok_or(Malformed::Truncated)?;
            let mut at = 40;
            let mut fragment = Fragment::Whole;
            for _ in 0..=MAX_EXTENSION_HEADERS {
                let ext_len = match next {
                    // hop-by-hop, routing, destination options
                    0 | 43 | 60 => {
                        (usize::from(*packet.get(at + 1).ok_or(Malformed::Truncated)?) + 1) * 8
                    }
                    44 => {
                        let off = be16(packet, at + 2).ok_or(Malformed::Truncated)?;
                        fragment = match (off >> 3, off & 1 != 0) {
                            (0, false) => Fragment::Whole,
                            (0, true) => Fragment::First,
                            _ => Fragment::Later,
                        };
                        8
                    }
                    _ => {
                        if at > len {
                            return Err(Malformed::BadExtension);
                        }
                        return Ok(Ip {
                            family: Family::V6,
                            len,
                            protocol: next,
                            l4: at,
                            fragment,
                        });
                    }
                };
                if fragment == Fragment::Later {
                    // what follows a non-first fragment header is payload, not headers
                    if at + ext_len > len {
                        return Err(Malformed::BadExtension);
                    }
                    next = *packet.get(at).ok_or(Malformed::Truncated)?;
                    return Ok(Ip {
                        family: Family::V6,
                        len,
                        protocol: next,
                        l4: at + ext_len,
                        fragment,
                    });
                }
                next = *packet.get(at).ok_or(Malformed::Truncated)?;
                at += ext_len;
                if at > len {
                    return Err(Malformed::BadExtension);
                }
            }
            Err(Malformed::BadExtension)
        }
        _ => Err(Malformed::NotIp),
    }
}

fn validate_transport(ip: &Ip, l4: &[u8]) -> Result<(), Malformed> {
    match ip.protocol {
        PROTO_TCP => {
            let doff = usize::from(*l4.get(12).ok_or(Malformed::Truncated)? >> 4) * 4;
            if doff < 20 || doff > l4.len() {
                return Err(Malformed::BadTcpOffset);
            }
            walk_tcp_options(l4.get(20..doff).unwrap_or_default(), |_, _| {})
        }
        PROTO_UDP => {
            // The 8-byte header must be here whole (its checksum is rewritten in place), also
            // in a first fragment, and the UDP length can never be shorter than it.
            if l4.len() < 8 {
                return Err(Malformed::Truncated);
            }
            let udp_len = usize::from(be16(l4, 4).ok_or(Malformed::Truncated)?);
            let ok = udp_len >= 8
                && match ip.fragment {
                    Fragment::Whole => udp_len == l4.len(),
                    _ => udp_len >= l4.len(),
                };
            if ok {
                Ok(())
            } else {
                Err(Malformed::BadUdpLength)
            }
        }
        PROTO_ICMP if ip.family == Family::V4 => {
            if l4.len() < 8 {
                Err(Malformed::BadIcmp)
            } else {
                Ok(())
            }
        }
        PROTO_ICMPV6 if ip.family == Family::V6 => {
            if l4.len() < 8 {
                Err(Malformed::BadIcmp)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// Walks TCP options, calling `each(kind, offset_of_option_within_options)` for every option
/// with a body. Options that run past the end are refused.
pub fn walk_tcp_options(options: &[u8], mut each: impl FnMut(u8, usize)) -> Result<(), Malformed> {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => return Ok(()),
            1 => at += 1,
            _ => {
                let len = usize::from(*options.get(at + 1).ok_or(Malformed::BadTcpOptions)?);
                if len < 2 || at + len > options.len() {
                    return Err(Malformed::BadTcpOptions);
                }
                each(kind, at);
                at += len;
            }
        }
    }
    Ok(())
}

/// Whether an ICMP (v4) or ICMPv6 message of this type quotes the packet that caused it.
pub fn is_icmp_error(ip: &Ip, icmp_type: u8) -> bool {
    match (ip.family, ip.protocol) {
        // destination unreachable, source quench, redirect, time exceeded, parameter problem
        (Family::V4, PROTO_ICMP) => matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
        // destination unreachable, packet too big, time exceeded, parameter problem
        (Family::V6, PROTO_ICMPV6) => matches!(icmp_type, 1..=4),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(total: u16, proto: u8) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(total)];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[9] = proto;
        p
    }

    #[test]
    fn ipv4_lengths_are_checked() {
        let p = v4(28, PROTO_UDP);
        assert_eq!(parse(&p), Err(Malformed::BadUdpLength));
        let mut p = v4(28, PROTO_UDP);
        p[24..26].copy_from_slice(&8u16.to_be_bytes());
        let ip = parse(&p).unwrap();
        assert_eq!((ip.len, ip.l4, ip.fragment), (28, 20, Fragment::Whole));
        // padding after the packet is allowed, a length past the buffer is not
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 18]);
        assert_eq!(parse(&padded).unwrap().len, 28);
        assert_eq!(parse(&p[..27]), Err(Malformed::BadLength));
        let mut bad = p.clone();
        bad[0] = 0x44;
        assert_eq!(parse(&bad), Err(Malformed::BadHeaderLength));
        bad[0] = 0x4f;
        assert_eq!(parse(&bad), Err(Malformed::Truncated));
    }

    #[test]
    fn tcp_offsets_and_options_are_checked() {
        let mut p = v4(44, PROTO_TCP);
        p[32] = 6 << 4; // data offset 24: 4 bytes of options
        p[40..44].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        assert!(parse(&p).is_ok());
        p[41] = 5; // MSS option running past the header
        assert_eq!(parse(&p), Err(Malformed::BadTcpOptions));
        p[32] = 7 << 4;
        assert_eq!(parse(&p), Err(Malformed::BadTcpOffset));
        p[32] = 4 << 4;
        assert_eq!(parse(&p), Err(Malformed::BadTcpOffset));
    }

    #[test]
    fn ipv6_extension_chains_are_walked() {
        let mut p = vec![0u8; 40 + 8 + 8];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&16u16.to_be_bytes());
        p[6] = 44; // fragment header
        p[40] = PROTO_UDP;
        p[42..44].copy_from_slice(&1u16.to_be_bytes()); // offset 0, more fragments
        p[52..54].copy_from_slice(&100u16.to_be_bytes());
        let ip = parse(&p).unwrap();
        assert_eq!(
            (ip.protocol, ip.l4, ip.fragment),
            (PROTO_UDP, 48, Fragment::First)
        );
        p[42..44].copy_from_slice(&(8u16 << 3).to_be_bytes());
        let ip = parse(&p).unwrap();
        assert_eq!(ip.fragment, Fragment::Later);
        // a hop-by-hop header claiming more than there is
        p[6] = 0;
        p[40] = PROTO_UDP;
        p[41] = 9;
        assert_eq!(parse(&p), Err(Malformed::BadExtension));
    }
}
