//! IP protocol numbers (IANA "Assigned Internet Protocol Numbers") and the version nibble.
//!
//! Owns: the numbers every crate names. Never: parsing (see [`crate::ipv4`], [`crate::ipv6`]).

/// ICMP (IPv4).
pub const PROTO_ICMP: u8 = 1;
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;
/// ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// The IP version of `packet` from its first nibble, if it has a first byte.
pub fn version(packet: &[u8]) -> Option<u8> {
    packet.first().map(|b| b >> 4)
}
