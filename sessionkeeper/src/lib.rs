//! The client's identity on every tunnel — its stable inner addresses — and the flows that use
//! them.
//!
//! This crate owns the local-address ⇄ stable-address mapping, the bounded flow table, MSS
//! clamping and switch-over recovery; those grow here in the sessionkeeper work. What exists now
//! is the part the data path already needs: the set of stable addresses, and reading a packet's
//! addresses and 5-tuple without trusting a single byte of it.
//!
//! Sans-IO, no clock; never panics on any input.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The client's stable inner addresses: at most one per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StableAddresses {
    /// IPv4 stable address
    pub v4: Option<Ipv4Addr>,
    /// IPv6 stable address
    pub v6: Option<Ipv6Addr>,
}

impl StableAddresses {
    /// Whether `ip` is one of them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4 == Some(a),
            IpAddr::V6(a) => self.v6 == Some(a),
        }
    }
}

/// The IP source address of a packet, if it has a complete IPv4 or IPv6 fixed header.
pub fn source_address(packet: &[u8]) -> Option<IpAddr> {
    addresses(packet).map(|(src, _)| src)
}

/// Source and destination of a packet with a complete fixed header.
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 => {
            let h: &[u8; 20] = packet.get(..20)?.try_into().ok()?;
            let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            Some((src.into(), dst.into()))
        }
        6 => {
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into()))
        }
        _ => None,
    }
}

/// A flow's identity as the flow table will key it: addresses, protocol and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// source address
    pub src: IpAddr,
    /// destination address
    pub dst: IpAddr,
    /// IP protocol number (after IPv6 extension headers are not walked yet: the first next
    /// header)
    pub protocol: u8,
    /// source port (0 for protocols without ports, or for non-first fragments)
    pub src_port: u16,
    /// destination port (likewise)
    pub dst_port: u16,
}

impl FlowKey {
    /// Reads the 5-tuple of a TCP or UDP packet; other protocols and non-first IPv4 fragments
    /// get ports 0. `None` when the IP header itself is incomplete or inconsistent.
    pub fn from_packet(packet: &[u8]) -> Option<Self> {
        let (src, dst) = addresses(packet)?;
        let (protocol, l4, first_fragment) = match src {
            IpAddr::V4(_) => {
                let ihl = usize::from(packet.first()? & 0x0f) * 4;
                if ihl < 20 {
                    return None;
                }
                let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
                (*packet.get(9)?, packet.get(ihl..)?, frag & 0x1fff == 0)
            }
            IpAddr::V6(_) => (*packet.get(6)?, packet.get(40..)?, true),
        };
        let (src_port, dst_port) = match (protocol, first_fragment, l4) {
            (6 | 17, true, [a, b, c, d, ..]) => {
                (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))
            }
            _ => (0, 0),
        };
        Some(Self {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_udp_tuple() {
        let mut p = [0u8; 28];
        p[0] = 0x45;
        p[9] = 17;
        p[12..16].copy_from_slice(&[100, 96, 0, 2]);
        p[16..20].copy_from_slice(&[198, 19, 0, 100]);
        p[20..24].copy_from_slice(&[0x9c, 0x40, 0x00, 0x35]);
        let key = FlowKey::from_packet(&p).unwrap();
        assert_eq!(key.src, IpAddr::from([100, 96, 0, 2]));
        assert_eq!((key.protocol, key.src_port, key.dst_port), (17, 40000, 53));
        // a non-first fragment has no ports
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(FlowKey::from_packet(&p).unwrap().src_port, 0);
        // a bad IHL is refused
        p[0] = 0x44;
        assert!(FlowKey::from_packet(&p).is_none());
    }

    #[test]
    fn stable_addresses_match_per_family() {
        let s = StableAddresses {
            v4: Some(Ipv4Addr::new(100, 96, 0, 2)),
            v6: None,
        };
        assert!(s.contains(IpAddr::from([100, 96, 0, 2])));
        assert!(!s.contains(IpAddr::from([100, 96, 0, 3])));
        assert!(!s.contains("fd00:96::2".parse().unwrap()));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = FlowKey::from_packet(&bytes);
            let _ = addresses(&bytes);
        }
    }
}
