//! The inner packets that carry probes: UDP to a gateway's probe port, or ICMP echo to a plain
//! WireGuard server's inner target (which echoes the payload back).
//!
//! Recognising a reply is strict: a complete, unfragmented IPv4 packet (IHL, total length and
//! header checksum checked) or an IPv6 packet whose next header is the transport itself, a valid
//! transport checksum, the expected addresses and ports or echo identifier, and a payload that
//! parses as a [`ProbeMessage`]. Anything else is not a probe and goes on as ordinary traffic.

use std::net::IpAddr;

// `::wire` is the workspace's header crate; `crate::wire` is this crate's probe message format.
use ::wire::icmp::{self, Icmpv4Packet, Icmpv6Packet};
use ::wire::ip::{PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP};
use ::wire::{checksum, udp, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket};

use crate::wire::{self, ProbeMessage, PROBE_PORT};

const TTL: u8 = 64;

/// How a tunnel is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeTarget {
    /// a failoverd gateway's probe responder (UDP [`PROBE_PORT`] on its inner address)
    Gateway(IpAddr),
    /// a host that answers ICMP echo, behind a plain WireGuard server; `id` tags our echoes
    Icmp {
        /// the target
        addr: IpAddr,
        /// ICMP echo identifier
        id: u16,
    },
}

impl ProbeTarget {
    /// The address probes go to.
    pub fn addr(&self) -> IpAddr {
        match self {
            ProbeTarget::Gateway(a) | ProbeTarget::Icmp { addr: a, .. } => *a,
        }
    }
}

/// Builds an IP packet from `src` to `dst` with `proto` and `l4` (whose checksum, if any, is
/// already set) into `out`; `out` is left empty for a pair of mixed families.
fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let emitted = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.resize(::wire::ipv4::MIN_HEADER_LEN, 0);
            Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                protocol: proto,
                payload_len: l4.len(),
                ttl: TTL,
                dont_frag: true,
            }
            .emit(out)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.resize(::wire::ipv6::HEADER_LEN, 0);
            Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: l4.len(),
                hop_limit: TTL,
            }
            .emit(out)
        }
        _ => return,
    };
    if emitted.is_err() {
        out.clear();
        return;
    }
    out.extend_from_slice(l4);
}

/// A UDP datagram inside an IP packet, checksum computed.
pub fn udp_packet(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let mut l4 = Vec::with_capacity(udp::HEADER_LEN + payload.len());
    l4.resize(udp::HEADER_LEN, 0);
    l4.extend_from_slice(payload);
    if udp::emit_header(&mut l4, (src, sport), (dst, dport), payload.len()).is_err() {
        out.clear();
        return;
    }
    ip_packet(src, dst, PROTO_UDP, &l4, out);
}

fn icmp_echo(
    src: IpAddr,
    dst: IpAddr,
    request: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let (proto, ty) = match (dst, request) {
        (IpAddr::V4(_), true) => (PROTO_ICMP, icmp::V4_ECHO_REQUEST),
        (IpAddr::V4(_), false) => (PROTO_ICMP, icmp::V4_ECHO_REPLY),
        (IpAddr::V6(_), true) => (PROTO_ICMPV6, icmp::V6_ECHO_REQUEST),
        (IpAddr::V6(_), false) => (PROTO_ICMPV6, icmp::V6_ECHO_REPLY),
    };
    let mut l4 = Vec::with_capacity(icmp::HEADER_LEN + payload.len());
    l4.extend_from_slice(&[ty, 0, 0, 0]);
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(payload);
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            Icmpv6Packet::new_unchecked(&mut l4[..]).fill_checksum(s, d)
        }
        _ => Icmpv4Packet::new_unchecked(&mut l4[..]).fill_checksum(),
    }
    ip_packet(src, dst, proto, &l4, out);
}

/// The packet that carries probe `msg` from `src` (a stable address) to `target`.
pub fn probe_request(src: IpAddr, target: ProbeTarget, msg: &ProbeMessage, out: &mut Vec<u8>) {
    let payload = msg.encode();
    match target {
        ProbeTarget::Gateway(dst) => udp_packet(src, dst, PROBE_PORT, PROBE_PORT, &payload, out),
        ProbeTarget::Icmp { addr, id } => {
            icmp_echo(src, addr, true, id, msg.seq as u16, &payload, out)
        }
    }
}

/// A parsed transport segment of a well-formed, unfragmented packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// IP source
    pub src: IpAddr,
    /// IP destination
    pub dst: IpAddr,
    /// transport protocol
    pub proto: u8,
    /// transport header and payload
    pub l4: &'a [u8],
}

/// Parses the IP layer strictly; `None` for anything malformed, fragmented, or with IPv6
/// extension headers.
pub fn segment(packet: &[u8]) -> Option<Segment<'_>> {
    match ::wire::ip::version(packet)? {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if !ip.verify_checksum() || ip.is_fragment() {
                return None; // probes are never fragmented
            }
            Some(Segment {
                src: ip.src_addr().into(),
                dst: ip.dst_addr().into(),
                proto: ip.protocol(),
                l4: ip.payload(),
            })
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            Some(Segment {
                src: ip.src_addr().into(),
                dst: ip.dst_addr().into(),
                proto: ip.next_header(),
                l4: ip.payload(),
            })
        }
        _ => None,
    }
}

fn l4_checksum_ok(seg: &Segment<'_>) -> bool {
    if seg.proto == PROTO_UDP && seg.src.is_ipv4() && seg.l4.get(6..8) == Some(&[0, 0]) {
        return true; // IPv4 UDP without a checksum
    }
    let pseudo = match seg.proto {
        PROTO_ICMP => Some(0),
        p => checksum::pseudo_header_ip(seg.src, seg.dst, p, seg.l4.len()),
    };
    pseudo.is_some_and(|acc| checksum::verifies(checksum::add(acc, seg.l4)))
}

/// A UDP datagram's ports and payload, checksum verified.
pub fn udp<'a>(seg: &Segment<'a>) -> Option<(u16, u16, &'a [u8])> {
    if seg.proto != PROTO_UDP {
        return None;
    }
    let u = UdpPacket::new_checked(seg.l4).ok()?;
    if u.len() != seg.l4.len() || !l4_checksum_ok(seg) {
        return None;
    }
    Some((u.src_port(), u.dst_port(), u.payload()))
}

/// If `packet` is a reply to a probe sent to `target` from `stable`, the echoed message.
/// Returns `Some(Err(..))` when it is addressed like a probe reply but does not parse (to be
/// counted), `None` when it is not a probe packet at all.
pub fn probe_reply(
    packet: &[u8],
    target: ProbeTarget,
) -> Option<Result<ProbeMessage, wire::WireError>> {
    let seg = segment(packet)?;
    if seg.src != target.addr() {
        return None;
    }
    match target {
        ProbeTarget::Gateway(_) => {
            let (sport, dport, payload) = udp(&seg)?;
            (sport == PROBE_PORT && dport == PROBE_PORT).then(|| ProbeMessage::parse(payload))
        }
        ProbeTarget::Icmp { id, .. } => {
            let reply_type = if seg.proto == PROTO_ICMPV6 {
                icmp::V6_ECHO_REPLY
            } else {
                icmp::V4_ECHO_REPLY
            };
            if !(seg.proto == PROTO_ICMP || seg.proto == PROTO_ICMPV6) || !l4_checksum_ok(&seg) {
                return None;
            }
            // ICMP and ICMPv6 share the echo layout; the checksum was checked above
            let echo = Icmpv4Packet::new_checked(seg.l4).ok()?;
            if echo.msg_type() != reply_type || echo.echo_ident() != id {
                return None;
            }
            // An echo returns our request verbatim: it is the reply to it. An echo reply that
            // carries our identifier but no probe is someone else's ping with a colliding
            // identifier: not ours, so it goes on to the local side.
            match ProbeMessage::parse(echo.payload()) {
                Ok(m) if m.kind == wire::ProbeKind::Request => Some(Ok(m.reply())),
                Ok(_) => Some(Err(wire::WireError::Field)),
                Err(wire::WireError::Magic | wire::WireError::Length) => None,
                Err(e) => Some(Err(e)),
            }
        }
    }
}

/// If `packet` is a probe request to `gateway` (a failoverd gateway's inner address), its source
/// and message; `Some(Err)` when addressed to the probe port but malformed.
pub fn probe_request_to(
    packet: &[u8],
    gateway: &[IpAddr],
) -> Option<(IpAddr, Result<ProbeMessage, wire::WireError>)> {
    let seg = segment(packet)?;
    if !gateway.contains(&seg.dst) || seg.proto != PROTO_UDP {
        return None;
    }
    if ::wire::field::be16(seg.l4, 2)? != PROBE_PORT {
        return None;
    }
    match udp(&seg) {
        Some((PROBE_PORT, _, payload)) => Some((seg.src, ProbeMessage::parse(payload))),
        _ => Some((seg.src, Err(wire::WireError::Field))),
    }
}

/// The reply packet a gateway sends back for a request from `client` to `gateway`.
pub fn probe_reply_packet(gateway: IpAddr, client: IpAddr, msg: &ProbeMessage, out: &mut Vec<u8>) {
    udp_packet(
        gateway,
        client,
        PROBE_PORT,
        PROBE_PORT,
        &msg.reply().encode(),
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Intent, ProbeKind};

    fn msg(seq: u64) -> ProbeMessage {
        ProbeMessage {
            kind: ProbeKind::Request,
            intent: Intent::Active,
            nonce: 7,
            seq,
            sent_us: 99,
            generation: Some(5),
        }
    }

    #[test]
    fn gateway_probe_roundtrip_v4_and_v6() {
        for (client, gw) in [
            (IpAddr::from([100, 96, 0, 2]), IpAddr::from([100, 96, 0, 1])),
            ("fd00:96::2".parse().unwrap(), "fd00:96::1".parse().unwrap()),
        ] {
            let mut req = Vec::new();
            probe_request(client, ProbeTarget::Gateway(gw), &msg(5), &mut req);
            let (src, m) = probe_request_to(&req, &[gw]).unwrap();
            assert_eq!(src, client);
            assert_eq!(m.unwrap(), msg(5));
            let mut rep = Vec::new();
            probe_reply_packet(gw, client, &msg(5), &mut rep);
            let got = probe_reply(&rep, ProbeTarget::Gateway(gw))
                .unwrap()
                .unwrap();
            assert_eq!(got, msg(5).reply());
            // a corrupted checksum is not a probe at all
            let last = rep.len() - 1;
            rep[last] ^= 1;
            assert!(probe_reply(&rep, ProbeTarget::Gateway(gw)).is_none());
        }
    }

    #[test]
    fn icmp_echo_reply_is_recognised() {
        let client = IpAddr::from([100, 96, 0, 2]);
        let target = IpAddr::from([198, 19, 0, 100]);
        let t = ProbeTarget::Icmp {
            addr: target,
            id: 0xbeef,
        };
        let mut req = Vec::new();
        probe_request(client, t, &msg(9), &mut req);
        // what a host answers: swap addresses, type 8 -> 0, fix checksum
        let mut reply = Vec::new();
        let seg = segment(&req).unwrap();
        icmp_echo(
            target,
            client,
            false,
            0xbeef,
            9,
            seg.l4.get(8..).unwrap(),
            &mut reply,
        );
        assert_eq!(probe_reply(&reply, t).unwrap().unwrap(), msg(9).reply());
        // someone else's echo id is not ours
        assert!(probe_reply(
            &reply,
            ProbeTarget::Icmp {
                addr: target,
                id: 1
            }
        )
        .is_none());
    }

    #[test]
    fn a_ping_with_our_icmp_id_but_no_probe_is_not_ours() {
        let client = IpAddr::from([100, 96, 0, 2]);
        let target = IpAddr::from([198, 19, 0, 100]);
        let t = ProbeTarget::Icmp {
            addr: target,
            id: 0xbeef,
        };
        let mut ping = Vec::new();
        icmp_echo(
            target,
            client,
            false,
            0xbeef,
            1,
            b"an ordinary ping payload, 33 bytes",
            &mut ping,
        );
        assert!(
            probe_reply(&ping, t).is_none(),
            "delivered to the local side, not swallowed"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let gw = IpAddr::from([100, 96, 0, 1]);
            let _ = probe_reply(&bytes, ProbeTarget::Gateway(gw));
            let _ = probe_reply(&bytes, ProbeTarget::Icmp { addr: gw, id: 1 });
            let _ = probe_request_to(&bytes, &[gw]);
        }
    }
}
