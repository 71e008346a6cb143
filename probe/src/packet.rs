//! The inner packets that carry probes: UDP to a gateway's probe port, or ICMP echo to a plain
//! WireGuard server's inner target (which echoes the payload back).
//!
//! Recognising a reply is strict: a complete, unfragmented IPv4 packet (IHL, total length and
//! header checksum checked) or an IPv6 packet whose next header is the transport itself, a valid
//! transport checksum, the expected addresses and ports or echo identifier, and a payload that
//! parses as a [`ProbeMessage`]. Anything else is not a probe and goes on as ordinary traffic.

use std::net::IpAddr;

use crate::wire::{self, ProbeMessage, PROBE_PORT};

const PROTO_ICMP: u8 = 1;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
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

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn sum_bytes(bytes: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        if let [hi, lo] = c {
            sum += u32::from(u16::from_be_bytes([*hi, *lo]));
        }
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum_bytes(&s.octets()) + sum_bytes(&d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum_bytes(&s.octets()) + sum_bytes(&d.octets()),
        _ => 0,
    };
    sum += u32::from(proto);
    sum += (len as u32) & 0xffff;
    sum += (len as u32) >> 16;
    sum
}

/// Builds an IP packet from `src` to `dst` with `proto` and `l4` (whose checksum, if any, is
/// already set) into `out`.
fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8], out: &mut Vec<u8>) {
    out.clear();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + l4.len()) as u16;
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[6] = 0x40; // don't fragment
            h[8] = TTL;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = !fold(sum_bytes(&h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            h[6] = proto;
            h[7] = TTL;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            out.extend_from_slice(&h);
        }
        _ => return,
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
    let len = 8 + payload.len();
    let mut l4 = Vec::with_capacity(len);
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&(len as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    let mut c = !fold(pseudo_header_sum(src, dst, PROTO_UDP, len) + sum_bytes(&l4));
    if c == 0 {
        c = 0xffff; // 0 means "no checksum" in UDP
    }
    if let Some(slot) = l4.get_mut(6..8) {
        slot.copy_from_slice(&c.to_be_bytes());
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
        (IpAddr::V4(_), true) => (PROTO_ICMP, 8),
        (IpAddr::V4(_), false) => (PROTO_ICMP, 0),
        (IpAddr::V6(_), true) => (PROTO_ICMPV6, 128),
        (IpAddr::V6(_), false) => (PROTO_ICMPV6, 129),
    };
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&[ty, 0, 0, 0]);
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(payload);
    let pseudo = if proto == PROTO_ICMPV6 {
        pseudo_header_sum(src, dst, proto, l4.len())
    } else {
        0
    };
    let c = !fold(pseudo + sum_bytes(&l4));
    if let Some(slot) = l4.get_mut(2..4) {
        slot.copy_from_slice(&c.to_be_bytes());
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
    match packet.first()? >> 4 {
        4 => {
            let h: &[u8; 20] = packet.get(..20)?.try_into().ok()?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if ihl < 20 || total < ihl || total > packet.len() {
                return None;
            }
            if fold(sum_bytes(packet.get(..ihl)?)) != 0xffff {
                return None;
            }
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if frag & 0x3fff != 0 {
                return None; // a fragment: probes are never fragmented
            }
            let src = IpAddr::from([h[12], h[13], h[14], h[15]]);
            let dst = IpAddr::from([h[16], h[17], h[18], h[19]]);
            Some(Segment {
                src,
                dst,
                proto: h[9],
                l4: packet.get(ihl..total)?,
            })
        }
        6 => {
            let h: &[u8; 40] = packet.get(..40)?.try_into().ok()?;
            let total = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
            let mut s = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&h[24..40]);
            Some(Segment {
                src: IpAddr::from(s),
                dst: IpAddr::from(d),
                proto: h[6],
                l4: packet.get(40..total)?,
            })
        }
        _ => None,
    }
}

fn l4_checksum_ok(seg: &Segment<'_>) -> bool {
    let pseudo = match seg.proto {
        PROTO_ICMP => 0,
        p => pseudo_header_sum(seg.src, seg.dst, p, seg.l4.len()),
    };
    if seg.proto == PROTO_UDP && seg.src.is_ipv4() && seg.l4.get(6..8) == Some(&[0, 0]) {
        return true; // IPv4 UDP without a checksum
    }
    fold(pseudo + sum_bytes(seg.l4)) == 0xffff
}

/// A UDP datagram's ports and payload, checksum verified.
pub fn udp<'a>(seg: &Segment<'a>) -> Option<(u16, u16, &'a [u8])> {
    if seg.proto != PROTO_UDP {
        return None;
    }
    let h: &[u8; 8] = seg.l4.get(..8)?.try_into().ok()?;
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if len < 8 || len != seg.l4.len() || !l4_checksum_ok(seg) {
        return None;
    }
    Some((
        u16::from_be_bytes([h[0], h[1]]),
        u16::from_be_bytes([h[2], h[3]]),
        seg.l4.get(8..)?,
    ))
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
            let reply_type = if seg.proto == PROTO_ICMPV6 { 129 } else { 0 };
            if !(seg.proto == PROTO_ICMP || seg.proto == PROTO_ICMPV6) || !l4_checksum_ok(&seg) {
                return None;
            }
            let h: &[u8; 8] = seg.l4.get(..8)?.try_into().ok()?;
            if h[0] != reply_type || u16::from_be_bytes([h[4], h[5]]) != id {
                return None;
            }
            // An echo returns our request verbatim: it is the reply to it. An echo reply that
            // carries our identifier but no probe is someone else's ping with a colliding
            // identifier: not ours, so it goes on to the local side.
            match ProbeMessage::parse(seg.l4.get(8..)?) {
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
    let h = seg.l4.get(2..4)?;
    if h != PROBE_PORT.to_be_bytes() {
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
