//! The client's identity on every tunnel — its stable inner addresses — and the flows that use
//! them.
//!
//! - [`parse`]: packets parsed into offsets, every length checked, every refusal named;
//! - [`rewrite`]: local ⇄ stable address translation (TCP, UDP, ICMP, ICMPv6, ICMP errors'
//!   quoted packets, fragments) and MSS clamping, with incremental checksums (`wire::checksum`);
//! - [`flows`]: the bounded flow table (segmented LRU, idle timeouts);
//! - [`keeper`]: all of it per packet, and switch-over recovery of live TCP flows.
//!
//! Sans-IO and clock-free: packets and `now` in, packets out. No input panics.

#![forbid(unsafe_code)]

pub mod flows;
/// Fuzz bodies and their fixed test keys: built only with the `fuzzing` feature (the fuzz
/// targets and this crate's own corpus tests turn it on), never into a shipped binary.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod keeper;
pub mod parse;
pub mod rewrite;

pub use flows::{FlowKey, FlowTable, Timeouts};
pub use keeper::{Keeper, KeeperConfig, KeeperDrop, KeeperStats};

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

#[cfg(test)]
mod tests {
    use super::*;

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
            let _ = addresses(&bytes);
        }
    }
}
