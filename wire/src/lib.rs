//! `wire`: typed views over the packet headers this project reads and writes, and the one
//! Internet checksum (RFC 1071, with RFC 1624's incremental update).
//!
//! # What this crate owns
//!
//! - [`checksum`]: the one's-complement sum, its folding, the IPv4 and IPv6 pseudo-headers, and
//!   the incremental update every in-place rewrite uses. No other crate carries a copy.
//! - [`field`]: big-endian reads and writes at an offset that return `None` instead of panicking.
//! - Views in smoltcp's manner: [`EthernetFrame`], [`ArpPacket`], [`Ipv4Packet`],
//!   [`Ipv6Packet`], [`UdpPacket`], [`TcpPacket`], [`Icmpv4Packet`], [`Icmpv6Packet`]; each wraps
//!   a buffer (`&[u8]`, `&mut [u8]`, `Vec<u8>`) and reads fields where they lie, without copying.
//!   Small `Repr` values and `emit` functions write the headers the project originates.
//!
//! # The promise
//!
//! `new_checked` checks, once, every length the view's accessors will read (fixed header,
//! header-length fields, length fields against the buffer). **After `new_checked` succeeds no
//! accessor panics and none reads past the buffer.** Accessors are written with `get` rather
//! than indexing (the workspace lints deny unchecked indexing), so even a view made with
//! `new_unchecked` over a short buffer cannot panic: it reads zeros where bytes are missing.
//! Untrusted bytes go through `new_checked`; `new_unchecked` is for buffers this process just
//! wrote.
//!
//! # What this crate must never do
//!
//! IO of any kind, clocks, allocation on a parse path, or policy: whether a packet is *wanted*
//! (addresses, ports, fragments, zero UDP checksums) is the caller's decision. The session
//! keeper's in-place rewrites keep their own offset-based parser (`sessionkeeper::parse`, one
//! pass, IPv6 extension headers, ICMP quotes) and call this crate's checksum and field helpers.

#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod field;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use arp::{ArpPacket, ArpRepr};
pub use ethernet::{EthernetFrame, EthernetRepr, Mac};
pub use icmp::{Icmpv4Packet, Icmpv6Packet};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

/// Why bytes were refused by a view's `new_checked` or a `Repr`'s `parse` or `emit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the fixed header (or, for `emit`, than what is written).
    Truncated,
    /// A version, hardware type, protocol type or operation this view does not read.
    Unsupported,
    /// A header-length field (IPv4 IHL, TCP data offset) below its minimum or past the buffer.
    BadHeaderLength,
    /// A length field (IPv4 total length, IPv6 payload length, UDP length) shorter than the
    /// header or longer than the buffer.
    BadLength,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "buffer shorter than the header",
            Error::Unsupported => "unsupported version, type or operation",
            Error::BadHeaderLength => "header length field below its minimum or past the buffer",
            Error::BadLength => "length field shorter than the header or past the buffer",
        })
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;

    proptest::proptest! {
        /// The crate's promise, for every view: `new_checked` on any bytes returns, and every
        /// accessor of a checked view (and of an unchecked one) returns without panicking.
        #[test]
        fn no_view_panics_on_any_bytes(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..96),
        ) {
            let b = &bytes[..];
            let (s, d) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from(Ipv6Addr::LOCALHOST));
            let e = EthernetFrame::new_unchecked(b);
            let _ = (EthernetFrame::new_checked(b), EthernetRepr::parse(b));
            let _ = (e.dst_addr(), e.src_addr(), e.ethertype(), e.payload());
            let a = ArpPacket::new_unchecked(b);
            let _ = (ArpPacket::new_checked(b), ArpRepr::parse(b));
            let _ = (a.operation(), a.sender_hardware_addr(), a.sender_protocol_addr());
            let _ = (a.target_hardware_addr(), a.target_protocol_addr());
            let u = UdpPacket::new_unchecked(b);
            let _ = UdpPacket::new_checked(b);
            let _ = (u.src_port(), u.dst_port(), u.len(), u.checksum(), u.payload());
            let _ = (u.verify_checksum(s, s), u.verify_checksum(s, d));
            let t = TcpPacket::new_unchecked(b);
            let _ = TcpPacket::new_checked(b);
            let _ = (t.src_port(), t.seq_number(), t.ack_number(), t.flags(), t.window_len());
            let _ = (t.options(), t.payload(), t.verify_checksum(s, s), t.checksum());
            let i = Icmpv4Packet::new_unchecked(b);
            let _ = Icmpv4Packet::new_checked(b);
            let _ = (i.msg_type(), i.msg_code(), i.echo_ident(), i.echo_seq_no(), i.payload());
            let _ = i.verify_checksum();
            let i = Icmpv6Packet::new_unchecked(b);
            let _ = Icmpv6Packet::new_checked(b);
            let _ = (i.payload(), i.verify_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST));
            if let Ok(t) = TcpPacket::new_checked(b) {
                proptest::prop_assert_eq!(t.options().len() + 20, t.header_len());
            }
            if let Ok(u) = UdpPacket::new_checked(b) {
                proptest::prop_assert_eq!(u.payload().len() + 8, u.len());
            }
            let mut m = bytes.clone();
            Icmpv4Packet::new_unchecked(&mut m[..]).fill_checksum();
            Icmpv6Packet::new_unchecked(&mut m[..]).fill_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
            Ipv4Packet::new_unchecked(&mut m[..]).fill_checksum();
            let _ = Ipv6Packet::new_unchecked(&mut m[..]).payload_mut();
        }
    }
}
