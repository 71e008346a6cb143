//! The guest's link on a virtual clock: [`GuestNet`] over a client [`Engine`] with one or two
//! simulated datacenters ([`Gateway`] engines), the approach of `engine/tests/failover_sim.rs`.
//!
//! Every frame the shim sends the guest is taken apart here with parsers and checksums written
//! from scratch (nothing from the `wire` crate checks the code
//! that uses them): Ethernet addresses, IPv4 header checksums, UDP/TCP/ICMPv6 checksums over
//! their pseudo-headers, DHCP options, router advertisement options.
//!
//! - DHCP, ARP, IPv6 router and neighbour discovery against the configured link;
//! - hostile frames: every short length, oversize, tagged, foreign, and a property test of
//!   random and mutated frames: nothing panics, every frame is answered or counted;
//! - end to end: a guest TCP connection through a gateway and back, then a failover under it;
//! - QEMU stream framing in random pieces.
//!
//! Deterministic: one `Instant::now()` per test is the base of a virtual clock, keys come from
//! a seed, the property tests run on a fixed seed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use engine::gateway::{Gateway, GatewayClient, GatewayConfig, ReturnPath};
use engine::testkit::{Net, Simulation};
use engine::{DatacenterConfig, DcId, Engine, EngineConfig, Event};
use probe::{Policy, ProbeConfig};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sessionkeeper::StableAddresses;
use tunnel::{AllowedIps, PeerConfig, PrivateKey};
use vmm_shim::framing::{self, Decoder};
use vmm_shim::guest::{MAX_FRAME, OUT_LEN, SHIM_MAC};
use vmm_shim::{Action, GuestConfig, GuestDrop, GuestNet};
use wire::Mac;

// ---------------------------------------------------------------------------------------------
// The network

const GUEST_MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const OTHER_MAC: Mac = Mac([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
const GUEST_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const STABLE_V4: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);
const GW_INNER: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 1);
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);
const DNS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 19, 0, 53), Ipv4Addr::new(198, 19, 0, 54)];
const STABLE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 2);
const PREFIX6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0);
const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 5);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// fe80:: + modified EUI-64 of 52:54:00:12:34:56, written out by hand
const GUEST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0x00ff, 0xfe12, 0x3456);
/// fe80:: + modified EUI-64 of the shim's 02:fa:11:0e:00:01, written out by hand
const SHIM_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x00fa, 0x11ff, 0xfe0e, 0x0001);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// the datacenters' MTUs; the engine's (the guest's) is the smallest of those configured
const MTUS: [u16; 2] = [1420, 1380];
const LEASE_SECS: u32 = 3600;
const CLIENT: &str = "198.18.0.1:40000";

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_IPV6: u16 = 0x86dd;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

// ---------------------------------------------------------------------------------------------
// Checksums, from scratch

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// RFC 1071: the one's-complement sum of 16-bit big-endian words, odd byte padded.
fn ones_sum(bytes: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    for pair in bytes.chunks(2) {
        let hi = u64::from(pair[0]);
        let lo = u64::from(pair.get(1).copied().unwrap_or(0));
        acc += (hi << 8) | lo;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    !ones_sum(bytes)
}

fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend(s.octets());
            p.extend(d.octets());
            p.extend([0, proto]);
            p.extend((len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend(s.octets());
            p.extend(d.octets());
            p.extend((len as u32).to_be_bytes());
            p.extend([0, 0, 0, proto]);
        }
        _ => panic!("a pseudo-header of mixed families"),
    }
    p
}

/// Where a transport's checksum field is, and whether it covers a pseudo-header.
fn checksum_field(proto: u8) -> Option<(usize, bool)> {
    match proto {
        TCP => Some((16, true)),
        UDP => Some((6, true)),
        ICMPV6 => Some((2, true)),
        ICMP => Some((2, false)),
        _ => None,
    }
}

/// The checksum `seg` must carry (its own checksum field ignored).
fn transport_checksum(src: IpAddr, dst: IpAddr, proto: u8, seg: &[u8]) -> u16 {
    let (at, pseudo) = checksum_field(proto).expect("a transport with a checksum");
    let mut data = if pseudo {
        pseudo_header(src, dst, proto, seg.len())
    } else {
        Vec::new()
    };
    let start = data.len();
    data.extend_from_slice(seg);
    data[start + at..start + at + 2].fill(0);
    let c = internet_checksum(&data);
    if proto == UDP && c == 0 {
        0xffff
    } else {
        c
    }
}

// ---------------------------------------------------------------------------------------------
// Building frames

fn eth(dst: Mac, src: Mac, ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + body.len());
    f.extend(dst.0);
    f.extend(src.0);
    f.extend(ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// Pads a frame to the Ethernet minimum of 60 bytes (without FCS), as a NIC would.
fn padded(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = vec![0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            h[6] = 0x40; // DF
            h[8] = hop;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = internet_checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            h[6] = proto;
            h[7] = hop;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            h
        }
        _ => panic!("mixed families"),
    };
    p.extend_from_slice(payload);
    p
}

/// An IP packet carrying `seg`, whose checksum is filled in.
fn with_transport(src: IpAddr, dst: IpAddr, proto: u8, hop: u8, mut seg: Vec<u8>) -> Vec<u8> {
    let (at, _) = checksum_field(proto).unwrap();
    let c = transport_checksum(src, dst, proto, &seg);
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    ip_packet(src, dst, proto, hop, &seg)
}

fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut seg = Vec::with_capacity(8 + payload.len());
    seg.extend(sport.to_be_bytes());
    seg.extend(dport.to_be_bytes());
    seg.extend(((8 + payload.len()) as u16).to_be_bytes());
    seg.extend([0, 0]);
    seg.extend_from_slice(payload);
    with_transport(src, dst, UDP, 64, seg)
}

#[derive(Debug, Clone)]
struct Seg {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    options: Vec<u8>,
    payload: Vec<u8>,
}

impl Seg {
    fn new(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> Self {
        Self {
            sport,
            dport,
            seq,
            ack,
            flags,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    fn options(mut self, options: &[u8]) -> Self {
        assert_eq!(options.len() % 4, 0);
        self.options = options.to_vec();
        self
    }

    fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }
}

/// MSS 1460, NOP, NOP, SACK permitted
const SYN_OPTIONS: [u8; 8] = [2, 4, 0x05, 0xb4, 1, 1, 4, 2];

fn tcp(src: IpAddr, dst: IpAddr, s: &Seg) -> Vec<u8> {
    let hlen = 20 + s.options.len();
    let mut seg = vec![0u8; hlen];
    seg[0..2].copy_from_slice(&s.sport.to_be_bytes());
    seg[2..4].copy_from_slice(&s.dport.to_be_bytes());
    seg[4..8].copy_from_slice(&s.seq.to_be_bytes());
    seg[8..12].copy_from_slice(&s.ack.to_be_bytes());
    seg[12] = ((hlen / 4) as u8) << 4;
    seg[13] = s.flags;
    seg[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    seg[20..].copy_from_slice(&s.options);
    seg.extend_from_slice(&s.payload);
    with_transport(src, dst, TCP, 64, seg)
}

/// An ICMPv6 message in an IPv6 packet, checksum filled in.
fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, msg: &[u8]) -> Vec<u8> {
    with_transport(src.into(), dst.into(), ICMPV6, hop, msg.to_vec())
}

/// An ICMP error from `from` to `to` quoting `quote`; `mtu` is the next-hop MTU field.
fn icmp4_error(
    from: Ipv4Addr,
    to: Ipv4Addr,
    kind: u8,
    code: u8,
    mtu: u16,
    quote: &[u8],
) -> Vec<u8> {
    let mut msg = vec![kind, code, 0, 0, 0, 0];
    msg.extend(mtu.to_be_bytes());
    msg.extend_from_slice(quote);
    with_transport(from.into(), to.into(), ICMP, 64, msg)
}

/// An ICMPv6 error (Packet Too Big: type 2) quoting `quote`.
fn icmp6_error(from: Ipv6Addr, to: Ipv6Addr, kind: u8, mtu: u32, quote: &[u8]) -> Vec<u8> {
    let mut msg = vec![kind, 0, 0, 0];
    msg.extend(mtu.to_be_bytes());
    msg.extend_from_slice(quote);
    icmpv6(from, to, 64, &msg)
}

fn ethertype_of(ip: &[u8]) -> u16 {
    match ip[0] >> 4 {
        4 => ETH_IPV4,
        _ => ETH_IPV6,
    }
}

/// An IP packet from the guest to its router.
fn to_shim(ip: &[u8]) -> Vec<u8> {
    padded(eth(SHIM_MAC, GUEST_MAC, ethertype_of(ip), ip))
}

fn arp_body(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0, 1, 0x08, 0x00, 6, 4];
    b.extend(op.to_be_bytes());
    b.extend(sha.0);
    b.extend(spa.octets());
    b.extend(tha.0);
    b.extend(tpa.octets());
    b
}

/// A broadcast ARP request from the guest, padded as a NIC sends it.
fn arp_request(spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    padded(eth(
        Mac::BROADCAST,
        GUEST_MAC,
        ETH_ARP,
        &arp_body(1, GUEST_MAC, spa, Mac::default(), tpa),
    ))
}

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const DHCPACK: u8 = 5;
const NAK: u8 = 6;
const RELEASE: u8 = 7;
const INFORM: u8 = 8;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// A DHCP client message (the UDP payload).
fn dhcp_message(
    kind: u8,
    xid: u32,
    chaddr: Mac,
    ciaddr: Ipv4Addr,
    broadcast: bool,
    options: &[u8],
) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[0] = 1;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    if broadcast {
        m[10] = 0x80;
    }
    m[12..16].copy_from_slice(&ciaddr.octets());
    m[28..34].copy_from_slice(&chaddr.0);
    m[236..240].copy_from_slice(&MAGIC);
    m.extend([53, 1, kind]);
    // client identifier, parameter request list
    m.extend([61, 7, 1]);
    m.extend(chaddr.0);
    m.extend([55, 5, 1, 3, 6, 26, 51]);
    m.extend_from_slice(options);
    m.push(255);
    m
}

/// A DHCP message in a frame from the guest: from 0.0.0.0 broadcast unless renewing.
fn dhcp_frame(msg: &[u8], src: Ipv4Addr, dst: Ipv4Addr, dst_mac: Mac) -> Vec<u8> {
    eth(
        dst_mac,
        GUEST_MAC,
        ETH_IPV4,
        &udp(src.into(), 68, dst.into(), 67, msg),
    )
}

fn broadcast_dhcp(msg: &[u8]) -> Vec<u8> {
    dhcp_frame(
        msg,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Mac::BROADCAST,
    )
}

fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

fn slla(mac: Mac) -> Vec<u8> {
    let mut o = vec![1, 1];
    o.extend(mac.0);
    o
}

/// A router solicitation from `src` (with the guest's link-layer address unless from ::).
fn rs_frame(src: Ipv6Addr, hop: u8) -> Vec<u8> {
    let mut msg = vec![133, 0, 0, 0, 0, 0, 0, 0];
    if !src.is_unspecified() {
        msg.extend(slla(GUEST_MAC));
    }
    eth(
        multicast_mac(ALL_ROUTERS),
        GUEST_MAC,
        ETH_IPV6,
        &icmpv6(src, ALL_ROUTERS, hop, &msg),
    )
}

/// A neighbour solicitation for `target` from `src` to its solicited-node group (a DAD probe
/// when `src` is ::).
fn ns_frame(src: Ipv6Addr, target: Ipv6Addr, hop: u8) -> Vec<u8> {
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend(target.octets());
    if !src.is_unspecified() {
        msg.extend(slla(GUEST_MAC));
    }
    let group = solicited_node(target);
    eth(
        multicast_mac(group),
        GUEST_MAC,
        ETH_IPV6,
        &icmpv6(src, group, hop, &msg),
    )
}

/// A router advertisement as a rogue guest would send it (valid in every other respect).
fn rogue_ra_frame() -> Vec<u8> {
    let mut msg = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    msg.extend(slla(GUEST_MAC));
    eth(
        multicast_mac(ALL_NODES),
        GUEST_MAC,
        ETH_IPV6,
        &icmpv6(GUEST_LL, ALL_NODES, 255, &msg),
    )
}

fn redirect_frame() -> Vec<u8> {
    let mut msg = vec![137, 0, 0, 0, 0, 0, 0, 0];
    msg.extend(SHIM_LL.octets());
    msg.extend(SERVER_V6.octets());
    eth(
        SHIM_MAC,
        GUEST_MAC,
        ETH_IPV6,
        &icmpv6(GUEST_LL, SHIM_LL, 255, &msg),
    )
}

/// An unsolicited neighbour advertisement of the guest's own address.
fn na_frame() -> Vec<u8> {
    let mut msg = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    msg.extend(GUEST_V6.octets());
    msg.extend([2, 1]);
    msg.extend(GUEST_MAC.0);
    eth(
        multicast_mac(ALL_NODES),
        GUEST_MAC,
        ETH_IPV6,
        &icmpv6(GUEST_V6, ALL_NODES, 255, &msg),
    )
}

// ---------------------------------------------------------------------------------------------
// Taking frames apart, from scratch

#[derive(Debug)]
struct EthView<'a> {
    dst: Mac,
    src: Mac,
    ethertype: u16,
    body: &'a [u8],
}

fn eth_view(f: &[u8]) -> EthView<'_> {
    assert!(f.len() >= 14, "a frame of {} bytes", f.len());
    EthView {
        dst: Mac(f[0..6].try_into().unwrap()),
        src: Mac(f[6..12].try_into().unwrap()),
        ethertype: be16(f, 12),
        body: &f[14..],
    }
}

#[derive(Debug)]
struct IpView {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// TTL or hop limit
    hop: u8,
    payload: Vec<u8>,
}

/// Parses an IP packet that must be exactly `packet` long, checking the IPv4 header checksum
/// and the transport checksum from scratch.
fn check_ip(packet: &[u8]) -> IpView {
    let view = match packet[0] >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            assert!(ihl >= 20 && packet.len() >= ihl, "IPv4 header length {ihl}");
            assert_eq!(
                usize::from(be16(packet, 2)),
                packet.len(),
                "IPv4 total length"
            );
            let mut h = packet[..ihl].to_vec();
            h[10..12].fill(0);
            assert_eq!(
                be16(packet, 10),
                internet_checksum(&h),
                "IPv4 header checksum"
            );
            assert_eq!(be16(packet, 6) & 0x3fff, 0, "not a fragment");
            IpView {
                src: Ipv4Addr::from(be32(packet, 12)).into(),
                dst: Ipv4Addr::from(be32(packet, 16)).into(),
                proto: packet[9],
                hop: packet[8],
                payload: packet[ihl..].to_vec(),
            }
        }
        6 => {
            assert!(packet.len() >= 40);
            assert_eq!(
                40 + usize::from(be16(packet, 4)),
                packet.len(),
                "IPv6 payload length"
            );
            let a = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&packet[at..at + 16]).unwrap());
            IpView {
                src: a(8).into(),
                dst: a(24).into(),
                proto: packet[6],
                hop: packet[7],
                payload: packet[40..].to_vec(),
            }
        }
        v => panic!("IP version {v}"),
    };
    if let Some((at, _)) = checksum_field(view.proto) {
        let seg = &view.payload;
        assert!(seg.len() >= at + 2, "transport {} cut short", view.proto);
        let expect = transport_checksum(view.src, view.dst, view.proto, seg);
        assert_eq!(
            be16(seg, at),
            expect,
            "checksum of protocol {} from {} to {}",
            view.proto,
            view.src,
            view.dst
        );
        if view.proto == UDP {
            assert_eq!(usize::from(be16(seg, 4)), seg.len(), "UDP length");
        }
    }
    view
}

#[derive(Debug)]
struct TcpView {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    mss: Option<u16>,
    payload: Vec<u8>,
}

fn tcp_view(ip: &IpView) -> TcpView {
    assert_eq!(ip.proto, TCP);
    let s = &ip.payload;
    let hlen = usize::from(s[12] >> 4) * 4;
    let mut mss = None;
    let mut opts = &s[20..hlen];
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(opts[1]);
                if kind == 2 {
                    mss = Some(be16(opts, 2));
                }
                opts = &opts[len..];
            }
        }
    }
    TcpView {
        sport: be16(s, 0),
        dport: be16(s, 2),
        seq: be32(s, 4),
        ack: be32(s, 8),
        flags: s[13],
        mss,
        payload: s[hlen..].to_vec(),
    }
}

/// The TCP view of an IP packet, if it is TCP (checksums checked).
fn tcp_in(packet: &[u8]) -> Option<TcpView> {
    let ip = check_ip(packet);
    (ip.proto == TCP).then(|| tcp_view(&ip))
}

#[derive(Debug)]
struct DhcpView {
    op: u8,
    xid: u32,
    flags: u16,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    chaddr: Mac,
    options: BTreeMap<u8, Vec<u8>>,
}

impl DhcpView {
    fn kind(&self) -> u8 {
        self.options[&53][0]
    }

    fn addr(&self, code: u8) -> Ipv4Addr {
        let o = &self.options[&code];
        assert_eq!(o.len(), 4, "option {code}");
        Ipv4Addr::from(be32(o, 0))
    }

    fn u32(&self, code: u8) -> u32 {
        let o = &self.options[&code];
        assert_eq!(o.len(), 4, "option {code}");
        be32(o, 0)
    }
}

/// A DHCP reply frame from the shim: Ethernet and IP addresses as given, UDP 67 → 68, every
/// checksum verified.
fn check_dhcp_reply(frame: &[u8], eth_dst: Mac, ip_dst: Ipv4Addr) -> DhcpView {
    let e = eth_view(frame);
    assert_eq!(e.src, SHIM_MAC, "from the shim");
    assert_eq!(e.dst, eth_dst, "Ethernet destination");
    assert_eq!(e.ethertype, ETH_IPV4);
    let ip = check_ip(e.body);
    assert_eq!(ip.src, IpAddr::V4(GATEWAY_V4), "from the router");
    assert_eq!(ip.dst, IpAddr::V4(ip_dst), "IP destination");
    assert_eq!(ip.proto, UDP);
    assert!(ip.hop > 0);
    let u = &ip.payload;
    assert_eq!(
        (be16(u, 0), be16(u, 2)),
        (67, 68),
        "server port to client port"
    );
    let m = &u[8..];
    assert!(m.len() >= 300, "BOOTP minimum length, got {}", m.len());
    assert_eq!(&m[236..240], &MAGIC);
    assert_eq!((m[1], m[2]), (1, 6), "Ethernet hardware addresses");
    let mut options = BTreeMap::new();
    let mut at = 240;
    loop {
        match m[at] {
            255 => break,
            0 => at += 1,
            code => {
                let len = usize::from(m[at + 1]);
                assert!(
                    options
                        .insert(code, m[at + 2..at + 2 + len].to_vec())
                        .is_none(),
                    "option {code} twice"
                );
                at += 2 + len;
            }
        }
    }
    DhcpView {
        op: m[0],
        xid: be32(m, 4),
        flags: be16(m, 10),
        ciaddr: Ipv4Addr::from(be32(m, 12)),
        yiaddr: Ipv4Addr::from(be32(m, 16)),
        chaddr: Mac(m[28..34].try_into().unwrap()),
        options,
    }
}

/// The lease options of an OFFER or ACK.
fn check_lease(v: &DhcpView, mtu: u16, with_times: bool) {
    assert_eq!(v.op, 2, "BOOTREPLY");
    assert_eq!(v.chaddr, GUEST_MAC);
    assert_eq!(v.addr(54), GATEWAY_V4, "server identifier");
    assert_eq!(
        v.addr(1),
        Ipv4Addr::new(255, 255, 255, 0),
        "subnet mask of a /24"
    );
    assert_eq!(v.addr(3), GATEWAY_V4, "router");
    let dns: Vec<u8> = DNS.iter().flat_map(|a| a.octets()).collect();
    assert_eq!(v.options[&6], dns, "DNS servers");
    assert_eq!(v.options[&26], mtu.to_be_bytes().to_vec(), "interface MTU");
    if with_times {
        assert_eq!(v.u32(51), LEASE_SECS, "lease time");
        let (t1, t2) = (v.u32(58), v.u32(59));
        assert!(t1 < t2 && t2 < LEASE_SECS, "T1 {t1} < T2 {t2} < lease");
    } else {
        for code in [51, 58, 59] {
            assert!(!v.options.contains_key(&code), "option {code}");
        }
    }
}

/// An NDP message from the shim: addresses, hop limit 255 and the ICMPv6 checksum checked;
/// returns the message and its options.
fn check_ndp_reply(
    frame: &[u8],
    eth_dst: Mac,
    ip_dst: Ipv6Addr,
    kind: u8,
) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
    let e = eth_view(frame);
    assert_eq!(e.src, SHIM_MAC);
    assert_eq!(e.dst, eth_dst, "Ethernet destination");
    assert_eq!(e.ethertype, ETH_IPV6);
    let ip = check_ip(e.body);
    assert_eq!(
        ip.src,
        IpAddr::V6(SHIM_LL),
        "from the shim's link-local address"
    );
    assert_eq!(ip.dst, IpAddr::V6(ip_dst));
    assert_eq!(ip.proto, ICMPV6);
    assert_eq!(ip.hop, 255, "neighbour discovery hop limit");
    let m = ip.payload;
    assert_eq!((m[0], m[1]), (kind, 0));
    let fixed = if kind == 134 { 16 } else { 24 };
    let mut options = Vec::new();
    let mut at = fixed;
    while at < m.len() {
        let len = usize::from(m[at + 1]) * 8;
        assert!(len > 0 && at + len <= m.len(), "option at {at}");
        options.push((m[at], m[at + 2..at + len].to_vec()));
        at += len;
    }
    (m, options)
}

/// A router advertisement: router lifetime, source link-layer address, MTU, and the prefix if
/// one is configured.
fn check_ra(frame: &[u8], eth_dst: Mac, ip_dst: Ipv6Addr, mtu: u16, prefix: Option<Ipv6Addr>) {
    let (m, options) = check_ndp_reply(frame, eth_dst, ip_dst, 134);
    assert!(be16(&m, 6) > 0, "a default router");
    let find = |t: u8| -> Vec<&Vec<u8>> {
        options
            .iter()
            .filter(|(k, _)| *k == t)
            .map(|(_, b)| b)
            .collect()
    };
    let sll = find(1);
    assert_eq!(sll.len(), 1);
    assert_eq!(sll[0], &SHIM_MAC.0.to_vec(), "source link-layer address");
    let mtu_opt = find(5);
    assert_eq!(mtu_opt.len(), 1);
    assert_eq!(be32(mtu_opt[0], 2), u32::from(mtu), "MTU option");
    let pi = find(3);
    match prefix {
        Some(p) => {
            assert_eq!(pi.len(), 1);
            let b = pi[0];
            assert_eq!(b[0], 64, "a /64");
            assert_eq!(b[1] & 0xc0, 0xc0, "on-link and autonomous");
            let (valid, preferred) = (be32(b, 2), be32(b, 6));
            assert!(preferred > 0 && preferred <= valid);
            assert_eq!(&b[14..30], &p.octets());
        }
        None => assert!(pi.is_empty()),
    }
}

/// A neighbour advertisement for `target` with the shim's MAC.
fn check_na(frame: &[u8], ip_dst: Ipv6Addr, target: Ipv6Addr) {
    let (m, options) = check_ndp_reply(frame, GUEST_MAC, ip_dst, 136);
    assert_eq!(m[4] & 0xe0, 0xe0, "router, solicited, override");
    assert_eq!(&m[8..24], &target.octets());
    assert_eq!(
        options,
        vec![(2, SHIM_MAC.0.to_vec())],
        "target link-layer address"
    );
}

/// Any frame the shim sends the guest is well formed: from the shim, to the guest (or
/// broadcast), every checksum right, and one of the kinds the shim answers with.
fn check_any_reply(frame: &[u8], guest: Mac) {
    let e = eth_view(frame);
    assert_eq!(e.src, SHIM_MAC);
    assert!(
        e.dst == guest || e.dst == Mac::BROADCAST,
        "to {} (guest {guest})",
        e.dst
    );
    match e.ethertype {
        ETH_ARP => {
            assert_eq!(e.body.len(), 28);
            assert_eq!(&e.body[..8], &[0, 1, 8, 0, 6, 4, 0, 2], "an ARP reply");
            assert_eq!(&e.body[8..14], &SHIM_MAC.0);
            assert_eq!(&e.body[18..24], &guest.0);
        }
        ETH_IPV4 => {
            let ip = check_ip(e.body);
            assert_eq!(ip.proto, UDP);
            assert_eq!((be16(&ip.payload, 0), be16(&ip.payload, 2)), (67, 68));
        }
        ETH_IPV6 => {
            let ip = check_ip(e.body);
            assert_eq!(ip.proto, ICMPV6);
            assert_eq!(ip.hop, 255);
            assert_eq!(ip.src, IpAddr::V6(SHIM_LL));
            assert!(matches!(ip.payload[0], 134 | 136));
        }
        t => panic!("the shim sent EtherType {t:#06x}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The simulation

#[derive(Debug, Clone, Copy)]
struct Opts {
    dcs: usize,
    ipv6: bool,
    mac: Option<Mac>,
    seed: u64,
}

impl Opts {
    fn new(dcs: usize) -> Self {
        Self {
            dcs,
            ipv6: false,
            mac: Some(GUEST_MAC),
            seed: 1,
        }
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A private key drawn from the seed: runs are reproducible.
fn key(seed: u64, who: u64) -> PrivateKey {
    let mut state = seed ^ who.wrapping_mul(0xA076_1D64_78BD_642F);
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    PrivateKey::from_base64(&base64::engine::general_purpose::STANDARD.encode(bytes)).unwrap()
}

fn gateway_addr(i: usize) -> SocketAddr {
    format!("198.18.0.{}:51820", 11 + i).parse().unwrap()
}

fn guest_config(opts: Opts) -> GuestConfig {
    GuestConfig {
        mac: opts.mac,
        address: GUEST_V4,
        prefix_len: 24,
        gateway: GATEWAY_V4,
        dns: DNS.to_vec(),
        prefix6: Some(PREFIX6),
        lease_secs: LEASE_SECS,
        ipv6: opts.ipv6,
    }
}

/// The guest link over a client engine with `opts.dcs` datacenters, and their gateways.
fn build(opts: Opts, t0: Instant) -> (GuestNet, Vec<(SocketAddr, Gateway)>) {
    let client_key = key(opts.seed, 0);
    let stable = StableAddresses {
        v4: Some(STABLE_V4),
        v6: opts.ipv6.then_some(STABLE_V6),
    };
    let mut dcs = Vec::new();
    let mut gateways = Vec::new();
    for i in 0..opts.dcs {
        let gw_key = key(opts.seed, 1 + i as u64);
        let addr = gateway_addr(i);
        dcs.push(DatacenterConfig {
            name: format!("dc{}", i + 1),
            endpoint: engine::Endpoint::Addr(addr),
            public_key: gw_key.public_key(),
            allowed_ips: AllowedIps::new(vec![
                "0.0.0.0/0".parse().unwrap(),
                "::/0".parse().unwrap(),
            ]),
            persistent_keepalive: None,
            preshared_key: None,
            probe: engine::Probe::Gateway(GW_INNER.into()),
        });
        let gw = Gateway::new(GatewayConfig {
            private_key: gw_key,
            handshake_rate_limit: 100,
            inner_addresses: vec![GW_INNER.into()],
            claim_timeout: Duration::from_secs(2),
            clients: vec![GatewayClient {
                peer: PeerConfig {
                    public_key: client_key.public_key(),
                    allowed_ips: AllowedIps::new(vec![
                        "100.96.0.2/32".parse().unwrap(),
                        "fd00:100::2/128".parse().unwrap(),
                    ]),
                    persistent_keepalive: None,
                    preshared_key: None,
                },
                return_path: ReturnPath::Claim,
            }],
        })
        .unwrap();
        gateways.push((addr, gw));
    }
    // as failoverd does: the local side's MTU is the smallest datacenter MTU
    let mtu = *MTUS[..opts.dcs].iter().min().unwrap();
    let engine = Engine::new(
        EngineConfig {
            private_key: client_key.clone(),
            stable,
            local: StableAddresses::default(),
            datacenters: dcs,
            probe: ProbeConfig::default(),
            policy: Policy::Priority { failback: true },
            mtu,
            max_flows: 4096,
            switch_recovery: true,
            routes: Vec::new(),
            seed: opts.seed,
            unix_time: std::time::Duration::from_secs(1_800_000_000),
        },
        t0,
    )
    .unwrap();
    (GuestNet::new(guest_config(opts), engine, t0), gateways)
}

/// What a call into the guest link gave.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Frame(Vec<u8>),
    Datagram(SocketAddr, Vec<u8>),
    Nothing,
}

fn got(action: Action<'_>) -> Got {
    match action {
        Action::ToGuest(f) => Got::Frame(f.to_vec()),
        Action::ToUnderlay(t) => Got::Datagram(t.to, t.datagram.to_vec()),
        Action::None => Got::Nothing,
    }
}

struct Sim {
    /// the datacenters, their links, what is in flight, the virtual clock
    net: Net,
    guest: GuestNet,
    switches: Vec<(Duration, usize, usize)>,
    /// frames the guest received from the underlay side and the shim's timers
    to_guest: Vec<Vec<u8>>,
    out: Vec<u8>,
    batch: engine::Batch,
}

impl Sim {
    fn new(opts: Opts) -> Self {
        #[allow(clippy::disallowed_methods)] // the base of the virtual clock
        let t0 = Instant::now();
        let (guest, gateways) = build(opts, t0);
        Self {
            net: Net::new(
                t0,
                gateways,
                CLIENT.parse().unwrap(),
                Duration::from_millis(1),
                opts.seed,
            ),
            guest,
            switches: Vec::new(),
            to_guest: Vec::new(),
            out: vec![0; OUT_LEN],
            batch: engine::Batch::for_datagrams(4),
        }
    }

    /// Every tunnel up, dc1 active and claimed.
    fn warm(opts: Opts) -> Self {
        let mut sim = Self::new(opts);
        sim.run_until(Duration::from_secs(2));
        assert!(sim.switches.is_empty(), "{:?}", sim.switches);
        assert_eq!(sim.guest.engine().active(), DcId::new(0));
        assert!(sim
            .guest
            .engine()
            .status()
            .iter()
            .all(|d| d.established && d.health == probe::PathHealth::Up));
        assert!(sim.net.gateways[0].1.claimed(tunnel::PeerId(0)));
        sim
    }

    fn elapsed(&self) -> Duration {
        self.net.elapsed()
    }

    /// Everything lost both ways on datacenter `dc`'s link, or nothing.
    fn black(&mut self, dc: usize, black: bool) {
        let link = &mut self.net.links[dc];
        link.black_up = black;
        link.black_down = black;
    }

    fn collect_all(&mut self) {
        while let Some(e) = self.guest.engine_mut().poll_event() {
            if let Event::Switched { from, to, .. } = e {
                self.switches
                    .push((self.elapsed(), from.index(), to.index()));
            }
        }
        self.net.collect();
        while let Some(f) = self.guest.poll_guest_frame() {
            self.to_guest.push(f);
        }
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.elapsed() + d);
    }

    /// Sends everything the shim's `poll_transmit` hands out, batch after batch.
    fn guest_transmits(&mut self) {
        loop {
            self.guest.poll_transmit(self.net.now, &mut self.batch);
            if self.batch.is_empty() {
                return;
            }
            self.net.send_batch_up(&mut self.batch);
        }
    }

    /// A datagram for the client.
    fn deliver(&mut self, from: SocketAddr, bytes: &[u8]) {
        let now = self.net.now;
        match self.guest.handle_datagram(now, from, bytes, &mut self.out) {
            Action::ToGuest(frame) => self.to_guest.push(frame.to_vec()),
            Action::ToUnderlay(t) => {
                let (to, reply) = (t.to, t.datagram.to_vec());
                self.net.send_up(to, reply);
            }
            Action::None => {}
        }
        self.guest_transmits();
        self.collect_all();
    }

    /// A frame from the guest; a datagram it causes goes on the wire.
    fn frame(&mut self, frame: &[u8]) -> Got {
        let mut f = frame.to_vec();
        let now = self.net.now;
        let g = got(self.guest.handle_guest_frame(now, &mut f, &mut self.out));
        if let Got::Datagram(to, d) = &g {
            self.net.send_up(*to, d.clone());
        }
        self.collect_all();
        g
    }

    /// A frame that must be dropped, and counted under `reason` only.
    fn expect_drop(&mut self, frame: &[u8], reason: GuestDrop) {
        let before = self.guest.stats().clone();
        let g = self.frame(frame);
        let after = self.guest.stats().clone();
        assert_eq!(g, Got::Nothing, "{}: no answer", reason.label());
        assert_eq!(
            after.drops.get(reason) - before.drops.get(reason),
            1,
            "counted under {}; instead: into the engine +{}, drops now {:?}; frame {:02x?}",
            reason.label(),
            after.to_engine - before.to_engine,
            after.drops.nonzero().collect::<Vec<_>>(),
            &frame[..frame.len().min(80)]
        );
        assert_eq!(after.drops.total() - before.drops.total(), 1);
        assert_eq!(after.rx_frames - before.rx_frames, 1);
        assert_eq!(after.to_engine, before.to_engine);
        assert_eq!(after.tx_frames, before.tx_frames);
    }

    /// A frame the shim must answer; the answer.
    fn expect_reply(&mut self, frame: &[u8]) -> Vec<u8> {
        let before = self.guest.stats().clone();
        let g = self.frame(frame);
        let after = self.guest.stats().clone();
        let Got::Frame(reply) = g else {
            panic!(
                "no answer ({g:?}); drops {:?}",
                after.drops.nonzero().collect::<Vec<_>>()
            );
        };
        assert_eq!(after.drops.total(), before.drops.total());
        assert_eq!(after.tx_frames - before.tx_frames, 1);
        assert_eq!(after.to_engine, before.to_engine);
        reply
    }

    /// A frame that must go to the engine (and into a tunnel).
    fn expect_engine(&mut self, frame: &[u8]) -> Got {
        let before = self.guest.stats().clone();
        let g = self.frame(frame);
        let after = self.guest.stats().clone();
        assert_eq!(
            after.to_engine - before.to_engine,
            1,
            "into the engine; drops {:?}",
            after.drops.nonzero().collect::<Vec<_>>()
        );
        assert_eq!(after.drops.total(), before.drops.total());
        assert!(!matches!(g, Got::Frame(_)));
        g
    }

    /// A packet from the inside network at datacenter `dc`, into the tunnel to the client.
    fn inject(&mut self, dc: usize, packet: &[u8]) {
        self.net.inject(dc, packet);
    }

    /// Packets that reached datacenter `dc`'s inside network since index `from`.
    fn inside_since(&self, from: usize, dc: usize) -> Vec<Vec<u8>> {
        self.net.inside[from..]
            .iter()
            .filter(|(_, d, _)| *d == dc)
            .map(|(_, _, p)| p.clone())
            .collect()
    }
}

impl Simulation for Sim {
    fn net(&mut self) -> &mut Net {
        &mut self.net
    }
    fn client_timeout(&self) -> Option<Instant> {
        self.guest.poll_timeout()
    }
    fn client_timers(&mut self) {
        self.guest.handle_timeout(self.net.now);
        self.guest_transmits();
    }
    fn client_receive(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.deliver(from, bytes);
    }
    fn collect(&mut self) {
        self.collect_all();
    }
}

// ---------------------------------------------------------------------------------------------
// 1. DHCP

#[test]
fn dhcp_offers_acks_and_naks_the_configured_lease() {
    let mut sim = Sim::new(Opts {
        mac: None,
        ..Opts::new(2)
    });
    let mtu = sim.guest.engine().mtu();
    assert_eq!(mtu, 1380, "the engine's MTU is the smallest datacenter MTU");

    // DISCOVER without the broadcast flag: the OFFER goes to the offered address and the MAC
    let discover = dhcp_message(
        DISCOVER,
        0x1111_2222,
        GUEST_MAC,
        Ipv4Addr::UNSPECIFIED,
        false,
        &[],
    );
    let offer = sim.expect_reply(&broadcast_dhcp(&discover));
    assert_eq!(
        sim.guest.guest_mac(),
        Some(GUEST_MAC),
        "learned from the first frame"
    );
    let v = check_dhcp_reply(&offer, GUEST_MAC, GUEST_V4);
    assert_eq!(v.kind(), OFFER);
    assert_eq!(v.xid, 0x1111_2222);
    assert_eq!(v.yiaddr, GUEST_V4, "the configured address");
    assert_eq!(v.flags, 0);
    check_lease(&v, mtu, true);

    // with the broadcast flag: broadcast, both layers
    let discover_b = dhcp_message(
        DISCOVER,
        0x3333_4444,
        GUEST_MAC,
        Ipv4Addr::UNSPECIFIED,
        true,
        &[],
    );
    let offer_b = sim.expect_reply(&broadcast_dhcp(&discover_b));
    let v = check_dhcp_reply(&offer_b, Mac::BROADCAST, Ipv4Addr::BROADCAST);
    assert_eq!((v.kind(), v.xid, v.yiaddr), (OFFER, 0x3333_4444, GUEST_V4));
    assert_eq!(v.flags & 0x8000, 0x8000, "the flag is echoed");
    check_lease(&v, mtu, true);

    // REQUEST (SELECTING): the offered address from this server → ACK
    let mut sel = vec![50, 4];
    sel.extend(GUEST_V4.octets());
    sel.extend([54, 4]);
    sel.extend(GATEWAY_V4.octets());
    let request = dhcp_message(
        REQUEST,
        0x5555_6666,
        GUEST_MAC,
        Ipv4Addr::UNSPECIFIED,
        false,
        &sel,
    );
    let ack = sim.expect_reply(&broadcast_dhcp(&request));
    let v = check_dhcp_reply(&ack, GUEST_MAC, GUEST_V4);
    assert_eq!(
        (v.kind(), v.xid, v.yiaddr),
        (DHCPACK, 0x5555_6666, GUEST_V4)
    );
    check_lease(&v, mtu, true);

    // REQUEST (INIT-REBOOT) for another address → NAK, broadcast, nothing leased
    let other = Ipv4Addr::new(10, 200, 0, 9);
    let mut opt = vec![50, 4];
    opt.extend(other.octets());
    let request = dhcp_message(
        REQUEST,
        0x7777_8888,
        GUEST_MAC,
        Ipv4Addr::UNSPECIFIED,
        false,
        &opt,
    );
    let nak = sim.expect_reply(&broadcast_dhcp(&request));
    let v = check_dhcp_reply(&nak, Mac::BROADCAST, Ipv4Addr::BROADCAST);
    assert_eq!((v.kind(), v.xid), (NAK, 0x7777_8888));
    assert_eq!(v.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(v.addr(54), GATEWAY_V4);
    for code in [1, 3, 6, 26, 51] {
        assert!(
            !v.options.contains_key(&code),
            "a NAK carries no option {code}"
        );
    }

    // RENEWING: unicast to the server from the leased address, ciaddr set → ACK to ciaddr
    let renew = dhcp_message(REQUEST, 0x9999_aaaa, GUEST_MAC, GUEST_V4, false, &[]);
    let ack = sim.expect_reply(&dhcp_frame(&renew, GUEST_V4, GATEWAY_V4, SHIM_MAC));
    let v = check_dhcp_reply(&ack, GUEST_MAC, GUEST_V4);
    assert_eq!(
        (v.kind(), v.ciaddr, v.yiaddr),
        (DHCPACK, GUEST_V4, GUEST_V4)
    );
    check_lease(&v, mtu, true);

    // RENEWING another address → NAK
    let renew = dhcp_message(REQUEST, 0x9999_bbbb, GUEST_MAC, other, false, &[]);
    let nak = sim.expect_reply(&dhcp_frame(&renew, other, GATEWAY_V4, SHIM_MAC));
    assert_eq!(
        check_dhcp_reply(&nak, Mac::BROADCAST, Ipv4Addr::BROADCAST).kind(),
        NAK
    );

    // INFORM: the configuration without a lease
    let inform = dhcp_message(INFORM, 0xaaaa_0001, GUEST_MAC, GUEST_V4, false, &[]);
    let ack = sim.expect_reply(&dhcp_frame(&inform, GUEST_V4, GATEWAY_V4, SHIM_MAC));
    let v = check_dhcp_reply(&ack, GUEST_MAC, GUEST_V4);
    assert_eq!((v.kind(), v.yiaddr), (DHCPACK, Ipv4Addr::UNSPECIFIED));
    check_lease(&v, mtu, false);

    assert_eq!(sim.guest.stats().dhcp_replies, 7);

    // what is not answered, and why
    let mut elsewhere = vec![54, 4, 10, 200, 0, 254, 50, 4];
    elsewhere.extend(GUEST_V4.octets());
    let m = dhcp_message(
        REQUEST,
        1,
        GUEST_MAC,
        Ipv4Addr::UNSPECIFIED,
        false,
        &elsewhere,
    );
    sim.expect_drop(&broadcast_dhcp(&m), GuestDrop::DhcpIgnored);
    for kind in [DECLINE, RELEASE] {
        let m = dhcp_message(kind, 2, GUEST_MAC, GUEST_V4, false, &[]);
        sim.expect_drop(
            &dhcp_frame(&m, GUEST_V4, GATEWAY_V4, SHIM_MAC),
            GuestDrop::DhcpIgnored,
        );
    }
    let m = dhcp_message(DISCOVER, 3, OTHER_MAC, Ipv4Addr::UNSPECIFIED, false, &[]);
    sim.expect_drop(&broadcast_dhcp(&m), GuestDrop::DhcpForeignClient);
    let mut m = dhcp_message(DISCOVER, 4, GUEST_MAC, Ipv4Addr::UNSPECIFIED, false, &[]);
    m[236] = 0;
    sim.expect_drop(&broadcast_dhcp(&m), GuestDrop::DhcpMalformed);
    let m = dhcp_message(DISCOVER, 5, GUEST_MAC, Ipv4Addr::UNSPECIFIED, false, &[]);
    sim.expect_drop(&broadcast_dhcp(&m[..239]), GuestDrop::DhcpMalformed);
    assert_eq!(sim.guest.stats().dhcp_replies, 7);
}

// ---------------------------------------------------------------------------------------------
// 2. ARP

#[test]
fn arp_answers_for_every_address_but_the_guests_own() {
    let mut sim = Sim::new(Opts::new(1));
    for target in [GATEWAY_V4, SERVER_V4, Ipv4Addr::new(10, 200, 0, 77)] {
        let reply = sim.expect_reply(&arp_request(GUEST_V4, target));
        let e = eth_view(&reply);
        assert_eq!((e.dst, e.src, e.ethertype), (GUEST_MAC, SHIM_MAC, ETH_ARP));
        assert_eq!(
            e.body,
            &arp_body(2, SHIM_MAC, target, GUEST_MAC, GUEST_V4)[..],
            "{target} is at the shim's MAC"
        );
    }
    // unpadded, and unicast to the shim (a refresh): answered the same
    let unicast = eth(
        SHIM_MAC,
        GUEST_MAC,
        ETH_ARP,
        &arp_body(1, GUEST_MAC, GUEST_V4, SHIM_MAC, GATEWAY_V4),
    );
    sim.expect_reply(&unicast);
    assert_eq!(sim.guest.stats().arp_replies, 4);

    // the guest's own address: nothing else may claim it
    let own = padded(eth(
        Mac::BROADCAST,
        GUEST_MAC,
        ETH_ARP,
        &arp_body(
            1,
            GUEST_MAC,
            Ipv4Addr::new(10, 200, 0, 3),
            Mac::default(),
            GUEST_V4,
        ),
    ));
    sim.expect_drop(&own, GuestDrop::ArpIgnored);
    // a probe (sender 0.0.0.0) and a gratuitous ARP (sender = target)
    sim.expect_drop(
        &arp_request(Ipv4Addr::UNSPECIFIED, GUEST_V4),
        GuestDrop::ArpIgnored,
    );
    sim.expect_drop(
        &arp_request(Ipv4Addr::UNSPECIFIED, GATEWAY_V4),
        GuestDrop::ArpIgnored,
    );
    sim.expect_drop(&arp_request(GUEST_V4, GUEST_V4), GuestDrop::ArpIgnored);
    // … of another address the guest takes (an alias): answering it would be a conflict
    let alias = Ipv4Addr::new(10, 200, 0, 50);
    sim.expect_drop(&arp_request(alias, alias), GuestDrop::ArpIgnored);
    sim.expect_drop(
        &arp_request(Ipv4Addr::UNSPECIFIED, alias),
        GuestDrop::ArpIgnored,
    );
    // a reply, and a gratuitous reply
    let reply = padded(eth(
        SHIM_MAC,
        GUEST_MAC,
        ETH_ARP,
        &arp_body(2, GUEST_MAC, GUEST_V4, SHIM_MAC, GATEWAY_V4),
    ));
    sim.expect_drop(&reply, GuestDrop::ArpIgnored);
    let garp = padded(eth(
        Mac::BROADCAST,
        GUEST_MAC,
        ETH_ARP,
        &arp_body(2, GUEST_MAC, GUEST_V4, Mac::BROADCAST, GUEST_V4),
    ));
    sim.expect_drop(&garp, GuestDrop::ArpIgnored);
    // a sender hardware address that is not the frame's
    let spoof = padded(eth(
        Mac::BROADCAST,
        GUEST_MAC,
        ETH_ARP,
        &arp_body(1, OTHER_MAC, GUEST_V4, Mac::default(), GATEWAY_V4),
    ));
    sim.expect_drop(&spoof, GuestDrop::ArpIgnored);
    // not Ethernet/IPv4, an unknown operation, cut short
    let mut bad = arp_request(GUEST_V4, GATEWAY_V4);
    bad[14 + 4] = 8;
    sim.expect_drop(&bad, GuestDrop::ArpMalformed);
    let mut bad = arp_request(GUEST_V4, GATEWAY_V4);
    bad[14 + 7] = 3;
    sim.expect_drop(&bad, GuestDrop::ArpMalformed);
    let short = arp_request(GUEST_V4, GATEWAY_V4);
    sim.expect_drop(&short[..14 + 27], GuestDrop::ArpMalformed);

    let s = sim.guest.stats();
    assert_eq!(s.arp_replies, 4);
    assert_eq!(s.drops.get(GuestDrop::ArpIgnored), 9);
    assert_eq!(s.drops.get(GuestDrop::ArpMalformed), 3);
}

// ---------------------------------------------------------------------------------------------
// 3. IPv6

#[test]
fn ipv6_router_and_neighbour_discovery() {
    let mut sim = Sim::new(Opts {
        ipv6: true,
        ..Opts::new(2)
    });
    let mtu = sim.guest.engine().mtu();

    // a router solicitation from the guest's link-local address: an RA back to it
    let ra = sim.expect_reply(&rs_frame(GUEST_LL, 255));
    check_ra(&ra, GUEST_MAC, GUEST_LL, mtu, Some(PREFIX6));
    // from :: (before the guest has an address): to all nodes
    let ra = sim.expect_reply(&rs_frame(Ipv6Addr::UNSPECIFIED, 255));
    check_ra(&ra, GUEST_MAC, ALL_NODES, mtu, Some(PREFIX6));
    assert_eq!(sim.guest.stats().router_advertisements, 2);

    // duplicate address detection tells the shim the guest's address
    assert_eq!(sim.guest.guest_ipv6(), None);
    sim.expect_drop(
        &ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_V6, 255),
        GuestDrop::NdpIgnored,
    );
    assert_eq!(sim.guest.guest_ipv6(), Some(GUEST_V6));
    assert_eq!(sim.guest.engine().local_addresses().v6, Some(GUEST_V6));
    assert_eq!(sim.guest.stats().ipv6_address_changes, 1);
    assert_eq!(
        sim.guest.guest_addresses(),
        vec![IpAddr::V4(GUEST_V4), IpAddr::V6(GUEST_V6)]
    );
    // DAD for a link-local address or one outside the prefix changes nothing
    sim.expect_drop(
        &ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_LL, 255),
        GuestDrop::NdpIgnored,
    );
    sim.expect_drop(
        &ns_frame(Ipv6Addr::UNSPECIFIED, "2001:db8:1::5".parse().unwrap(), 255),
        GuestDrop::NdpIgnored,
    );
    assert_eq!(sim.guest.guest_ipv6(), Some(GUEST_V6));
    assert_eq!(sim.guest.stats().ipv6_address_changes, 1);

    // neighbour solicitations for any other address: the shim's MAC
    for (src, target) in [
        (GUEST_V6, "fd00:200::1".parse().unwrap()),
        (GUEST_V6, SERVER_V6),
        (GUEST_LL, SHIM_LL),
    ] {
        let na = sim.expect_reply(&ns_frame(src, target, 255));
        check_na(&na, src, target);
    }
    // neighbour unreachability detection: unicast to the router
    let mut nud = vec![135, 0, 0, 0, 0, 0, 0, 0];
    nud.extend(SHIM_LL.octets());
    nud.extend(slla(GUEST_MAC));
    let nud = eth(
        SHIM_MAC,
        GUEST_MAC,
        ETH_IPV6,
        &icmpv6(GUEST_LL, SHIM_LL, 255, &nud),
    );
    check_na(&sim.expect_reply(&nud), GUEST_LL, SHIM_LL);
    assert_eq!(sim.guest.stats().neighbor_advertisements, 4);
    // … but not for the guest's own
    sim.expect_drop(&ns_frame(GUEST_LL, GUEST_V6, 255), GuestDrop::NdpIgnored);

    // RFC 4861 validity: hop limit 255 and the checksum
    sim.expect_drop(&ns_frame(GUEST_V6, SHIM_LL, 64), GuestDrop::NdpMalformed);
    sim.expect_drop(&rs_frame(GUEST_LL, 254), GuestDrop::NdpMalformed);
    for at in [14 + 40 + 2, 14 + 40 + 10, 14 + 8] {
        let mut bad = ns_frame(GUEST_V6, SHIM_LL, 255);
        bad[at] ^= 0x40;
        sim.expect_drop(&bad, GuestDrop::NdpMalformed);
    }
    let mut bad = rs_frame(GUEST_LL, 255);
    bad[14 + 40 + 3] ^= 1;
    sim.expect_drop(&bad, GuestDrop::NdpMalformed);
    // RA guard
    sim.expect_drop(&rogue_ra_frame(), GuestDrop::NdpRouterOnly);
    sim.expect_drop(&redirect_frame(), GuestDrop::NdpRouterOnly);
    // the guest's own advertisements need no answer
    sim.expect_drop(&na_frame(), GuestDrop::NdpIgnored);
    assert_eq!(sim.guest.guest_ipv6(), Some(GUEST_V6), "unchanged");
}

#[test]
fn ipv6_router_advertisements_are_periodic_and_follow_link_resets() {
    let mut sim = Sim::new(Opts {
        ipv6: true,
        ..Opts::new(1)
    });
    let mtu = sim.guest.engine().mtu();
    // the guest's MAC is configured: an unsolicited RA goes out at once
    assert!(sim.guest.poll_timeout().unwrap() <= sim.net.t0);
    sim.run_until(Duration::from_millis(1));
    let ras: Vec<_> = sim.to_guest.drain(..).collect();
    assert_eq!(ras.len(), 1, "one RA at start");
    check_ra(
        &ras[0],
        multicast_mac(ALL_NODES),
        ALL_NODES,
        mtu,
        Some(PREFIX6),
    );
    // then every 10 minutes
    sim.run_until(Duration::from_secs(1199));
    assert_eq!(sim.to_guest.len(), 1, "{} RAs", sim.to_guest.len());
    sim.to_guest.clear();
    // a solicited RA restarts the interval
    sim.expect_reply(&rs_frame(GUEST_LL, 255));
    sim.run_until(Duration::from_secs(1798));
    assert!(
        sim.to_guest.is_empty(),
        "the next RA 10 minutes after the solicited one"
    );
    sim.run_until(Duration::from_secs(1800));
    assert_eq!(sim.to_guest.len(), 1);
    sim.to_guest.clear();
    // a new connection from the VMM: another at once
    let now = sim.net.now;
    sim.guest.link_reset(now);
    sim.run_for(Duration::from_millis(1));
    assert_eq!(sim.to_guest.len(), 1);
    let s = sim.guest.stats();
    assert_eq!(s.router_advertisements, 5);
    assert_eq!(s.tx_frames, 5);
}

#[test]
fn undrained_router_advertisements_are_bounded() {
    #[allow(clippy::disallowed_methods)] // the base of the virtual clock
    let t0 = Instant::now();
    let (mut guest, _) = build(
        Opts {
            ipv6: true,
            ..Opts::new(1)
        },
        t0,
    );
    // a front end that never drains: one RA per interval, at most 16 of them kept
    for k in 0..20u32 {
        let now = t0 + Duration::from_secs(600) * k;
        assert!(guest.poll_timeout().unwrap() <= now);
        guest.handle_timeout(now);
    }
    let s = guest.stats().clone();
    assert_eq!(s.router_advertisements, 16);
    assert_eq!(s.drops.get(GuestDrop::QueueFull), 4);
    let mut n = 0;
    while let Some(f) = guest.poll_guest_frame() {
        check_ra(&f, multicast_mac(ALL_NODES), ALL_NODES, 1420, Some(PREFIX6));
        n += 1;
    }
    assert_eq!(n, 16);
    assert_eq!(guest.stats().tx_frames, 16);
    // a link reset drops what is queued
    let now = t0 + Duration::from_secs(600) * 20;
    guest.handle_timeout(now);
    guest.link_reset(now);
    assert_eq!(guest.poll_guest_frame(), None);
}

#[test]
fn without_ipv6_router_solicitations_are_not_answered() {
    let mut sim = Sim::new(Opts::new(1));
    sim.expect_drop(&rs_frame(GUEST_LL, 255), GuestDrop::NdpIgnored);
    sim.expect_drop(&rs_frame(Ipv6Addr::UNSPECIFIED, 255), GuestDrop::NdpIgnored);
    sim.run_until(Duration::from_secs(700));
    assert!(sim.to_guest.is_empty(), "no unsolicited RA either");
    assert_eq!(sim.guest.stats().router_advertisements, 0);
    // with no IPv6 stable address, guest IPv6 traffic has nowhere to go
    let syn = tcp(
        GUEST_V6.into(),
        SERVER_V6.into(),
        &Seg::new(40_001, 443, 1, 0, SYN),
    );
    sim.expect_drop(&to_shim(&syn), GuestDrop::KeeperRefused);
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile frames

#[test]
fn hostile_frames_are_counted_under_their_reasons() {
    let mut sim = Sim::new(Opts {
        mac: None,
        ..Opts::new(1)
    });
    // nothing learns the guest's MAC but a frame with a usable source
    for len in 0..14 {
        sim.expect_drop(&vec![0x52; len], GuestDrop::FrameTooShort);
    }
    let mut mcast = arp_request(GUEST_V4, GATEWAY_V4);
    mcast[6..12].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
    sim.expect_drop(&mcast, GuestDrop::BadSourceMac);
    let mut bcast = arp_request(GUEST_V4, GATEWAY_V4);
    bcast[6..12].copy_from_slice(&[0xff; 6]);
    sim.expect_drop(&bcast, GuestDrop::BadSourceMac);
    let mut zero = arp_request(GUEST_V4, GATEWAY_V4);
    zero[6..12].fill(0);
    sim.expect_drop(&zero, GuestDrop::BadSourceMac);
    sim.expect_drop(&vec![0; MAX_FRAME + 1], GuestDrop::FrameTooLong);
    assert_eq!(sim.guest.guest_mac(), None);

    // the guest's first usable frame makes its MAC the guest's
    sim.expect_reply(&arp_request(GUEST_V4, GATEWAY_V4));
    assert_eq!(sim.guest.guest_mac(), Some(GUEST_MAC));

    // every length from 0 to 60 of frames of every kind
    let arp = arp_request(GUEST_V4, GATEWAY_V4);
    let syn = to_shim(&tcp(
        GUEST_V4.into(),
        SERVER_V4.into(),
        &Seg::new(40_000, 80, 1, 0, SYN).options(&SYN_OPTIONS[..4]),
    ));
    assert_eq!(syn.len(), 60, "14 + 20 + 24 + padding");
    let discover = broadcast_dhcp(&dhcp_message(
        DISCOVER,
        1,
        GUEST_MAC,
        Ipv4Addr::UNSPECIFIED,
        false,
        &[],
    ));
    let ns = ns_frame(GUEST_V6, SHIM_LL, 255);
    let v6 = to_shim(&tcp(
        GUEST_V6.into(),
        SERVER_V6.into(),
        &Seg::new(1, 2, 3, 4, SYN),
    ));
    let mut vlan = arp.clone();
    vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    let mut qinq = arp.clone();
    qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    let mut lldp = arp.clone();
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    let mut rarp = arp.clone();
    rarp[12..14].copy_from_slice(&0x8035u16.to_be_bytes());
    let mut other_src = arp.clone();
    other_src[6..12].copy_from_slice(&OTHER_MAC.0);
    let mut other_dst = syn.clone();
    other_dst[0..6].copy_from_slice(&OTHER_MAC.0);
    let mut cases = 0;
    for len in 0..=60usize {
        let short = |f: &[u8]| f[..len.min(f.len())].to_vec();
        let too_short = len < 14;
        let expect = |kind: GuestDrop| {
            if too_short {
                GuestDrop::FrameTooShort
            } else {
                kind
            }
        };
        if len >= 42 {
            sim.expect_reply(&short(&arp));
        } else {
            sim.expect_drop(&short(&arp), expect(GuestDrop::ArpMalformed));
        }
        if len >= 58 {
            sim.expect_engine(&short(&syn));
        } else {
            sim.expect_drop(&short(&syn), expect(GuestDrop::IpMalformed));
        }
        sim.expect_drop(&short(&discover), expect(GuestDrop::IpMalformed));
        sim.expect_drop(&short(&ns), expect(GuestDrop::IpMalformed));
        sim.expect_drop(&short(&v6), expect(GuestDrop::IpMalformed));
        sim.expect_drop(&short(&vlan), expect(GuestDrop::VlanTagged));
        sim.expect_drop(&short(&qinq), expect(GuestDrop::VlanTagged));
        sim.expect_drop(&short(&lldp), expect(GuestDrop::UnknownEthertype));
        sim.expect_drop(&short(&rarp), expect(GuestDrop::UnknownEthertype));
        sim.expect_drop(&short(&other_src), expect(GuestDrop::ForeignSourceMac));
        sim.expect_drop(&short(&other_dst), expect(GuestDrop::NotForShim));
        cases += 11;
    }
    assert_eq!(cases, 61 * 11);

    // oversize: one byte past the largest frame, and the largest frame itself
    let mut huge = to_shim(&udp(
        GUEST_V4.into(),
        5353,
        SERVER_V4.into(),
        9,
        &vec![0xab; 65_535 - 28],
    ));
    assert_eq!(huge.len(), MAX_FRAME);
    sim.expect_engine(&huge);
    huge.push(0);
    assert_eq!(huge.len(), 65_550);
    sim.expect_drop(&huge, GuestDrop::FrameTooLong);

    // traffic that leaves the link nowhere
    let local = |dst: Ipv4Addr, mac: Mac| {
        eth(
            mac,
            GUEST_MAC,
            ETH_IPV4,
            &udp(GUEST_V4.into(), 5353, dst.into(), 5353, b"x"),
        )
    };
    for (dst, mac) in [
        (Ipv4Addr::BROADCAST, Mac::BROADCAST),
        (Ipv4Addr::new(10, 200, 0, 255), Mac::BROADCAST),
        (Ipv4Addr::new(224, 0, 0, 251), Mac([1, 0, 0x5e, 0, 0, 0xfb])),
        (GATEWAY_V4, SHIM_MAC),
        (Ipv4Addr::new(10, 200, 0, 255), SHIM_MAC),
        (SERVER_V4, Mac::BROADCAST),
    ] {
        sim.expect_drop(&local(dst, mac), GuestDrop::LinkLocalOnly);
    }
    let ll = tcp(GUEST_LL.into(), SHIM_LL.into(), &Seg::new(1, 22, 1, 0, SYN));
    sim.expect_drop(&to_shim(&ll), GuestDrop::LinkLocalOnly);
    let mdns = udp(
        GUEST_V6.into(),
        5353,
        "ff02::fb".parse::<Ipv6Addr>().unwrap().into(),
        5353,
        b"q",
    );
    sim.expect_drop(
        &eth(
            multicast_mac("ff02::fb".parse().unwrap()),
            GUEST_MAC,
            ETH_IPV6,
            &mdns,
        ),
        GuestDrop::LinkLocalOnly,
    );
    // headers that lie: version, header length, total length
    let good = udp(GUEST_V4.into(), 1, SERVER_V4.into(), 2, b"abc");
    for (at, v) in [(0, 0x65), (0, 0x44), (2, 0xff), (3, 19)] {
        let mut p = good.clone();
        p[at] = v;
        sim.expect_drop(
            &eth(SHIM_MAC, GUEST_MAC, ETH_IPV4, &p),
            GuestDrop::IpMalformed,
        );
    }
    // a link reset forgets the learned MAC: another guest may come
    let now = sim.net.now;
    sim.guest.link_reset(now);
    let other_guest = padded(eth(
        Mac::BROADCAST,
        OTHER_MAC,
        ETH_ARP,
        &arp_body(1, OTHER_MAC, GUEST_V4, Mac::default(), GATEWAY_V4),
    ));
    let reply = sim.expect_reply(&other_guest);
    assert_eq!(eth_view(&reply).dst, OTHER_MAC);
    assert_eq!(sim.guest.guest_mac(), Some(OTHER_MAC));
    sim.expect_drop(&arp, GuestDrop::ForeignSourceMac);

    let s = sim.guest.stats();
    assert_eq!(
        s.rx_frames,
        s.tx_frames + s.drops.total() + s.to_engine,
        "every frame answered, dropped or sent on: {s:?}"
    );
    eprintln!(
        "hostile frames: {} frames, drops {:?}",
        s.rx_frames,
        s.drops.nonzero().collect::<Vec<_>>()
    );
}

/// A change to a valid frame.
#[derive(Debug, Clone)]
enum Mutation {
    /// xor a byte anywhere
    Xor(Index, u8),
    /// set one of the first 100 bytes (the headers)
    Set(usize, u8),
    /// cut the frame
    Truncate(Index),
    /// add bytes at the end
    Extend(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Input {
    /// random bytes
    Random(Vec<u8>),
    /// a random body behind an Ethernet header of the guest's
    Body {
        dst: u8,
        ethertype: u16,
        body: Vec<u8>,
    },
    /// a valid frame, changed; its checksums recomputed after the change if `fix`
    Mutated {
        template: Index,
        mutations: Vec<Mutation>,
        fix: bool,
    },
    /// a random datagram from a gateway's address
    Datagram(Vec<u8>),
}

fn templates() -> Vec<Vec<u8>> {
    let mut sel = vec![50, 4];
    sel.extend(GUEST_V4.octets());
    let dns_query =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    let mut echo = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    echo.extend_from_slice(b"ping");
    let mut frag = udp(GUEST_V4.into(), 1000, SERVER_V4.into(), 67, &[7; 64]);
    frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes()); // a later fragment
    let c = {
        let mut h = frag[..20].to_vec();
        h[10..12].fill(0);
        internet_checksum(&h)
    };
    frag[10..12].copy_from_slice(&c.to_be_bytes());
    vec![
        arp_request(GUEST_V4, GATEWAY_V4),
        arp_request(GUEST_V4, SERVER_V4),
        broadcast_dhcp(&dhcp_message(
            DISCOVER,
            1,
            GUEST_MAC,
            Ipv4Addr::UNSPECIFIED,
            true,
            &[],
        )),
        broadcast_dhcp(&dhcp_message(
            REQUEST,
            2,
            GUEST_MAC,
            Ipv4Addr::UNSPECIFIED,
            false,
            &sel,
        )),
        dhcp_frame(
            &dhcp_message(REQUEST, 3, GUEST_MAC, GUEST_V4, false, &[]),
            GUEST_V4,
            GATEWAY_V4,
            SHIM_MAC,
        ),
        dhcp_frame(
            &dhcp_message(RELEASE, 4, GUEST_MAC, GUEST_V4, false, &[]),
            GUEST_V4,
            GATEWAY_V4,
            SHIM_MAC,
        ),
        to_shim(&tcp(
            GUEST_V4.into(),
            SERVER_V4.into(),
            &Seg::new(40_000, 80, 1, 0, SYN).options(&SYN_OPTIONS),
        )),
        to_shim(&tcp(
            GUEST_V4.into(),
            SERVER_V4.into(),
            &Seg::new(40_000, 80, 2, 9, ACK | PSH).payload(b"GET / HTTP/1.1\r\n\r\n"),
        )),
        to_shim(&udp(GUEST_V4.into(), 5300, DNS[0].into(), 53, dns_query)),
        to_shim(&with_transport(
            GUEST_V4.into(),
            SERVER_V4.into(),
            ICMP,
            64,
            echo,
        )),
        to_shim(&frag),
        to_shim(&tcp(
            GUEST_V6.into(),
            SERVER_V6.into(),
            &Seg::new(40_001, 443, 1, 0, SYN).options(&SYN_OPTIONS),
        )),
        to_shim(&udp(GUEST_V6.into(), 5300, SERVER_V6.into(), 53, dns_query)),
        rs_frame(GUEST_LL, 255),
        rs_frame(Ipv6Addr::UNSPECIFIED, 255),
        ns_frame(GUEST_LL, SHIM_LL, 255),
        ns_frame(GUEST_V6, SERVER_V6, 255),
        ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_V6, 255),
        na_frame(),
        rogue_ra_frame(),
        redirect_frame(),
    ]
}

/// Recomputes the IPv4 header checksum and the transport checksum of a frame where its
/// headers still say where they are.
fn fix_checksums(f: &mut [u8]) {
    if f.len() < 14 {
        return;
    }
    let ethertype = be16(f, 12);
    let p = &mut f[14..];
    match ethertype {
        ETH_IPV4 => {
            if p.len() < 20 {
                return;
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl {
                return;
            }
            p[10..12].fill(0);
            let c = internet_checksum(&p[..ihl]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let total = usize::from(be16(p, 2));
            if total < ihl || total > p.len() || be16(p, 6) & 0x1fff != 0 {
                return;
            }
            let (src, dst) = (
                IpAddr::V4(Ipv4Addr::from(be32(p, 12))),
                IpAddr::V4(Ipv4Addr::from(be32(p, 16))),
            );
            let proto = p[9];
            fix_transport(src, dst, proto, &mut p[ihl..total]);
        }
        ETH_IPV6 => {
            if p.len() < 40 {
                return;
            }
            let total = 40 + usize::from(be16(p, 4));
            if total > p.len() {
                return;
            }
            let a = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&p[at..at + 16]).unwrap());
            let (src, dst) = (IpAddr::V6(a(8)), IpAddr::V6(a(24)));
            let proto = p[6];
            fix_transport(src, dst, proto, &mut p[40..total]);
        }
        _ => {}
    }
}

fn fix_transport(src: IpAddr, dst: IpAddr, proto: u8, seg: &mut [u8]) {
    if let Some((at, _)) = checksum_field(proto) {
        if seg.len() >= at + 2 {
            let c = transport_checksum(src, dst, proto, seg);
            seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
}

fn materialize(input: &Input, templates: &[Vec<u8>]) -> Vec<u8> {
    match input {
        Input::Random(b) | Input::Datagram(b) => b.clone(),
        Input::Body {
            dst,
            ethertype,
            body,
        } => {
            let dst = match dst % 4 {
                0 => SHIM_MAC,
                1 => Mac::BROADCAST,
                2 => multicast_mac(ALL_ROUTERS),
                _ => OTHER_MAC,
            };
            eth(dst, GUEST_MAC, *ethertype, body)
        }
        Input::Mutated {
            template,
            mutations,
            fix,
        } => {
            let mut f = template.get(templates).clone();
            for m in mutations {
                match m {
                    Mutation::Xor(at, x) if !f.is_empty() => {
                        let i = at.index(f.len());
                        f[i] ^= x;
                    }
                    Mutation::Set(at, v) if *at < f.len() => f[*at] = *v,
                    Mutation::Truncate(at) => {
                        let n = at.index(f.len() + 1);
                        f.truncate(n);
                    }
                    Mutation::Extend(b) => f.extend_from_slice(b),
                    _ => {}
                }
            }
            if *fix {
                fix_checksums(&mut f);
            }
            f
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Xor(i, x)),
        3 => (0usize..100, any::<u8>()).prop_map(|(at, v)| Mutation::Set(at, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..40).prop_map(Mutation::Extend),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    let ethertype = prop_oneof![
        Just(ETH_IPV4),
        Just(ETH_IPV6),
        Just(ETH_ARP),
        Just(0x8100),
        any::<u16>(),
    ];
    prop_oneof![
        2 => vec(any::<u8>(), 0..160).prop_map(Input::Random),
        3 => (any::<u8>(), ethertype, vec(any::<u8>(), 0..400))
            .prop_map(|(dst, ethertype, body)| Input::Body { dst, ethertype, body }),
        12 => (any::<Index>(), vec(mutation(), 0..4), any::<bool>())
            .prop_map(|(template, mutations, fix)| Input::Mutated { template, mutations, fix }),
        1 => vec(any::<u8>(), 0..200).prop_map(Input::Datagram),
    ]
}

/// A deterministic runner: a fixed seed, no failure files.
fn runner(cases: u32, seed: u8) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

#[test]
fn random_and_mutated_frames_never_panic_and_are_all_accounted_for() {
    const CASES: u32 = 20_000;
    #[allow(clippy::disallowed_methods)] // the base of the virtual clock
    let t0 = Instant::now();
    let templates = templates();
    let strategy = (any::<bool>(), any::<bool>(), vec(input(), 1..8));
    let frames = Cell::new(0u64);
    let answered = Cell::new(0u64);
    let to_engine = Cell::new(0u64);
    let drops = RefCell::new(BTreeMap::<&'static str, u64>::new());
    let out = RefCell::new(vec![0u8; OUT_LEN]);
    let result = runner(CASES, 42).run(&strategy, |(mac_known, ipv6, inputs)| {
        let opts = Opts {
            dcs: 1,
            ipv6,
            mac: mac_known.then_some(GUEST_MAC),
            seed: 7,
        };
        let (mut guest, _) = build(opts, t0);
        let mut out = out.borrow_mut();
        let mut now = t0;
        for input in &inputs {
            now += Duration::from_millis(1);
            let mut f = materialize(input, &templates);
            if let Input::Datagram(d) = input {
                let before = guest.stats().clone();
                let a = got(guest.handle_datagram(now, gateway_addr(0), d, &mut out));
                prop_assert_eq!(a, Got::Nothing, "a random datagram is nothing");
                prop_assert_eq!(guest.stats().rx_frames, before.rx_frames);
                continue;
            }
            let before = guest.stats().clone();
            let a = got(guest.handle_guest_frame(now, &mut f, &mut out));
            let after = guest.stats().clone();
            let replied = matches!(a, Got::Frame(_));
            if let Got::Frame(reply) = &a {
                check_any_reply(reply, guest.guest_mac().unwrap());
            }
            if let Got::Datagram(to, _) = &a {
                prop_assert_eq!(*to, gateway_addr(0));
            }
            prop_assert_eq!(after.rx_frames, before.rx_frames + 1);
            prop_assert_eq!(after.tx_frames, before.tx_frames + u64::from(replied));
            let dropped = after.drops.total() - before.drops.total();
            let sent = after.to_engine - before.to_engine;
            prop_assert_eq!(
                u64::from(replied) + dropped + sent,
                1,
                "exactly one of answered ({}), dropped ({}), to the engine ({}): {:?}",
                replied,
                dropped,
                sent,
                after.drops.nonzero().collect::<Vec<_>>()
            );
            if sent == 1 {
                prop_assert!(!matches!(a, Got::Frame(_)));
            } else {
                prop_assert!(!matches!(a, Got::Datagram(..)));
            }
        }
        let s = guest.stats();
        prop_assert_eq!(s.rx_frames, s.tx_frames + s.drops.total() + s.to_engine);
        frames.set(frames.get() + s.rx_frames);
        answered.set(answered.get() + s.tx_frames);
        to_engine.set(to_engine.get() + s.to_engine);
        let mut drops = drops.borrow_mut();
        for (label, n) in s.drops.nonzero() {
            *drops.entry(label).or_default() += n;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (frames, answered, to_engine) = (frames.get(), answered.get(), to_engine.get());
    let drops: Vec<_> = drops.into_inner().into_iter().collect();
    eprintln!(
        "{CASES} cases, {frames} frames: {answered} answered, {to_engine} to the engine, drops {drops:?}"
    );
    // the mix reaches every outcome that a single frame can have
    assert!(answered > 1000 && to_engine > 1000);
    for reason in GuestDrop::ALL {
        if matches!(
            reason,
            GuestDrop::FrameTooLong | GuestDrop::NoGuestMac | GuestDrop::QueueFull
        ) {
            continue;
        }
        assert!(
            drops.iter().any(|(l, n)| *l == reason.label() && *n > 0),
            "no frame reached {}",
            reason.label()
        );
    }
}

/// IPv4 link-local destinations (169.254.0.0/16, RFC 3927) must stay on the link like IPv6
/// link-local ones (fe80::/10) do: RFC 3927 section 7 says a router MUST NOT forward them, and
/// `GuestDrop::LinkLocalOnly` is "broadcast, multicast or link-local traffic that leaves the
/// link nowhere". The shim is the guest's router.
#[test]
fn ipv4_link_local_destinations_stay_on_the_link() {
    let mut sim = Sim::new(Opts::new(1));
    // the control: the same datagram to a server goes into the tunnel
    let to_server = udp(GUEST_V4.into(), 40_002, SERVER_V4.into(), 80, b"GET /");
    sim.expect_engine(&to_shim(&to_server));
    // IPv6 link-local: kept on the link
    let v6 = udp(GUEST_V6.into(), 40_002, SHIM_LL.into(), 80, b"GET /");
    sim.expect_drop(&to_shim(&v6), GuestDrop::LinkLocalOnly);
    // IPv4 link-local, e.g. a cloud guest's metadata query: must be kept on the link too
    for dst in [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(169, 254, 0, 1),
    ] {
        let p = udp(GUEST_V4.into(), 40_002, dst.into(), 80, b"GET /");
        sim.expect_drop(&to_shim(&p), GuestDrop::LinkLocalOnly);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. End to end

#[test]
fn guest_tcp_goes_through_the_gateway_and_follows_a_failover() {
    let mut sim = Sim::warm(Opts {
        mac: None,
        ..Opts::new(2)
    });
    let mtu = sim.guest.engine().mtu();
    let max_mss = mtu - 40;

    // before the guest has said anything, a packet for it has no MAC to go to
    let early = tcp(
        SERVER_V4.into(),
        STABLE_V4.into(),
        &Seg::new(80, 40_000, 1, 1, ACK),
    );
    sim.inject(0, &early);
    sim.run_for(Duration::from_millis(5));
    assert!(sim.to_guest.is_empty());
    assert_eq!(sim.guest.stats().drops.get(GuestDrop::NoGuestMac), 1);

    // the guest comes up: DHCP, then ARP for its router
    let d = dhcp_message(DISCOVER, 1, GUEST_MAC, Ipv4Addr::UNSPECIFIED, false, &[]);
    let offer = check_dhcp_reply(&sim.expect_reply(&broadcast_dhcp(&d)), GUEST_MAC, GUEST_V4);
    let mut o = vec![50, 4];
    o.extend(offer.yiaddr.octets());
    o.extend([54, 4]);
    o.extend(offer.addr(54).octets());
    let r = dhcp_message(REQUEST, 2, GUEST_MAC, Ipv4Addr::UNSPECIFIED, false, &o);
    let ack = check_dhcp_reply(&sim.expect_reply(&broadcast_dhcp(&r)), GUEST_MAC, GUEST_V4);
    assert_eq!(ack.kind(), DHCPACK);
    let (addr, router) = (ack.yiaddr, ack.addr(3));
    assert_eq!((addr, router), (GUEST_V4, GATEWAY_V4));
    let arp = sim.expect_reply(&arp_request(addr, router));
    let router_mac = eth_view(&arp).src;
    assert_eq!(router_mac, SHIM_MAC);

    // a SYN from the guest reaches the inside of dc1 from the stable address
    let isn = 0x1000_0000u32;
    let syn = tcp(
        addr.into(),
        SERVER_V4.into(),
        &Seg::new(40_000, 80, isn, 0, SYN).options(&SYN_OPTIONS),
    );
    let mark = sim.net.inside.len();
    let g = sim.expect_engine(&eth(router_mac, GUEST_MAC, ETH_IPV4, &syn));
    assert!(
        matches!(g, Got::Datagram(to, _) if to == gateway_addr(0)),
        "into dc1's tunnel: {g:?}"
    );
    sim.run_for(Duration::from_millis(5));
    let at_dc1 = sim.inside_since(mark, 0);
    assert_eq!(at_dc1.len(), 1, "the SYN, once");
    let ip = check_ip(&at_dc1[0]);
    assert_eq!(
        ip.src,
        IpAddr::V4(STABLE_V4),
        "mapped to the stable address"
    );
    assert_eq!(ip.dst, IpAddr::V4(SERVER_V4));
    let t = tcp_view(&ip);
    assert_eq!((t.sport, t.dport, t.seq, t.flags), (40_000, 80, isn, SYN));
    assert_eq!(t.mss, Some(max_mss), "MSS clamped to the tunnels' MTU");
    assert!(sim.inside_since(mark, 1).is_empty());
    let syn_seen = at_dc1[0].clone();

    // the SYN-ACK from the server comes back to the guest
    let server_isn = 0x5000_0000u32;
    let synack = tcp(
        SERVER_V4.into(),
        STABLE_V4.into(),
        &Seg::new(80, 40_000, server_isn, isn + 1, SYN | ACK).options(&SYN_OPTIONS),
    );
    sim.inject(0, &synack);
    sim.run_for(Duration::from_millis(5));
    let frames: Vec<_> = sim.to_guest.drain(..).collect();
    assert_eq!(frames.len(), 1, "the SYN-ACK, once");
    let e = eth_view(&frames[0]);
    assert_eq!((e.dst, e.src, e.ethertype), (GUEST_MAC, SHIM_MAC, ETH_IPV4));
    let ip = check_ip(e.body);
    assert_eq!(
        (ip.src, ip.dst),
        (IpAddr::V4(SERVER_V4), IpAddr::V4(GUEST_V4))
    );
    let t = tcp_view(&ip);
    assert_eq!(
        (t.sport, t.dport, t.seq, t.ack, t.flags),
        (80, 40_000, server_isn, isn + 1, SYN | ACK)
    );
    assert!(t.mss.is_some_and(|m| m <= max_mss));

    // path MTU discovery: "fragmentation needed" quoting the SYN as the far side saw it comes
    // to the guest quoting the guest's own SYN, every checksum (the quoted ones too) right
    let router = Ipv4Addr::new(198, 19, 0, 1);
    sim.inject(0, &icmp4_error(router, STABLE_V4, 3, 4, 1280, &syn_seen));
    sim.run_for(Duration::from_millis(5));
    let frames: Vec<_> = sim.to_guest.drain(..).collect();
    assert_eq!(frames.len(), 1, "the ICMP error, once");
    let e = eth_view(&frames[0]);
    assert_eq!((e.dst, e.src, e.ethertype), (GUEST_MAC, SHIM_MAC, ETH_IPV4));
    let ip = check_ip(e.body);
    assert_eq!(
        (ip.src, ip.dst, ip.proto),
        (router.into(), GUEST_V4.into(), ICMP)
    );
    assert_eq!(&ip.payload[..2], &[3, 4]);
    assert_eq!(be16(&ip.payload, 6), 1280, "next-hop MTU");
    let quoted = check_ip(&ip.payload[8..]);
    assert_eq!(
        (quoted.src, quoted.dst),
        (GUEST_V4.into(), SERVER_V4.into())
    );
    let t = tcp_view(&quoted);
    assert_eq!((t.sport, t.dport, t.seq, t.flags), (40_000, 80, isn, SYN));

    // the guest's ACK and request
    let request = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
    let seg = tcp(
        GUEST_V4.into(),
        SERVER_V4.into(),
        &Seg::new(40_000, 80, isn + 1, server_isn + 1, ACK | PSH).payload(request),
    );
    let mark = sim.net.inside.len();
    sim.expect_engine(&to_shim(&seg));
    sim.run_for(Duration::from_millis(5));
    let at_dc1 = sim.inside_since(mark, 0);
    assert_eq!(at_dc1.len(), 1);
    let t = tcp_in(&at_dc1[0]).unwrap();
    assert_eq!(t.payload, request);

    // a source other than the guest's address is refused
    let spoofed = tcp(
        Ipv4Addr::new(10, 200, 0, 99).into(),
        SERVER_V4.into(),
        &Seg::new(40_000, 80, isn + 1, 0, ACK),
    );
    let refused_before = sim.guest.engine().keeper_stats().source_not_local;
    sim.expect_drop(&to_shim(&spoofed), GuestDrop::KeeperRefused);
    let stable_src = tcp(
        STABLE_V4.into(),
        SERVER_V4.into(),
        &Seg::new(40_000, 80, isn + 1, 0, ACK),
    );
    sim.expect_drop(&to_shim(&stable_src), GuestDrop::KeeperRefused);
    assert_eq!(
        sim.guest.engine().keeper_stats().source_not_local,
        refused_before + 2
    );

    // dc1 goes dark; the engine switches under the guest
    let fail_at = sim.elapsed();
    sim.black(0, true);
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.switches.len(), 1, "{:?}", sim.switches);
    let (at, from, to) = sim.switches[0];
    assert_eq!((from, to), (0, 1));
    assert!(
        at - fail_at <= Duration::from_millis(150),
        "switched {:?} after the failure",
        at - fail_at
    );
    assert!(sim.net.gateways[1].1.claimed(tunnel::PeerId(0)));

    // the guest's next packet, exactly as before the failure, reaches dc2
    let more = b"and another request";
    let next = tcp(
        GUEST_V4.into(),
        SERVER_V4.into(),
        &Seg::new(
            40_000,
            80,
            isn + 1 + request.len() as u32,
            server_isn + 1,
            ACK | PSH,
        )
        .payload(more),
    );
    let mark = sim.net.inside.len();
    let g = sim.expect_engine(&to_shim(&next));
    assert!(
        matches!(g, Got::Datagram(to, _) if to == gateway_addr(1)),
        "into dc2's tunnel: {g:?}"
    );
    sim.run_for(Duration::from_millis(5));
    let arrived: Vec<_> = sim
        .inside_since(mark, 1)
        .into_iter()
        .filter_map(|p| tcp_in(&p))
        .filter(|t| t.payload == more)
        .collect();
    assert_eq!(arrived.len(), 1, "through dc2");
    let at_dc2 = sim.inside_since(mark, 1);
    let ip = check_ip(at_dc2.last().unwrap());
    assert_eq!(ip.src, IpAddr::V4(STABLE_V4));
    assert!(sim.inside_since(mark, 0).is_empty(), "nothing through dc1");

    // and the server's answer comes back through dc2
    let answer = b"HTTP/1.1 200 OK\r\n\r\n";
    let reply = tcp(
        SERVER_V4.into(),
        STABLE_V4.into(),
        &Seg::new(
            80,
            40_000,
            server_isn + 1,
            isn + 1 + (request.len() + more.len()) as u32,
            ACK | PSH,
        )
        .payload(answer),
    );
    sim.to_guest.clear();
    sim.inject(1, &reply);
    sim.run_for(Duration::from_millis(5));
    let frames: Vec<_> = sim.to_guest.drain(..).collect();
    assert_eq!(frames.len(), 1);
    let e = eth_view(&frames[0]);
    assert_eq!((e.dst, e.src), (GUEST_MAC, SHIM_MAC));
    let ip = check_ip(e.body);
    assert_eq!(ip.dst, IpAddr::V4(GUEST_V4));
    assert_eq!(tcp_view(&ip).payload, answer);

    // frames from the guest: answered, dropped or sent on; frames to the guest from the
    // tunnels (3) and drops of packets for it (1, before its MAC was known) aside
    let s = sim.guest.stats();
    assert_eq!(s.drops.get(GuestDrop::NoGuestMac), 1);
    assert_eq!(
        s.rx_frames,
        (s.tx_frames - 3) + (s.drops.total() - 1) + s.to_engine
    );
    eprintln!(
        "end to end: switch {:?} after the failure; guest stats {s:?}",
        at - fail_at
    );
}

#[test]
fn ipv6_guest_tcp_goes_through_the_gateway() {
    let mut sim = Sim::warm(Opts {
        ipv6: true,
        ..Opts::new(1)
    });
    let mtu = sim.guest.engine().mtu();
    // SLAAC: RS, RA, DAD
    let ra = sim.expect_reply(&rs_frame(GUEST_LL, 255));
    check_ra(&ra, GUEST_MAC, GUEST_LL, mtu, Some(PREFIX6));
    sim.expect_drop(
        &ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_V6, 255),
        GuestDrop::NdpIgnored,
    );
    assert_eq!(sim.guest.guest_ipv6(), Some(GUEST_V6));
    let na = sim.expect_reply(&ns_frame(GUEST_LL, SHIM_LL, 255));
    check_na(&na, GUEST_LL, SHIM_LL);

    let syn = tcp(
        GUEST_V6.into(),
        SERVER_V6.into(),
        &Seg::new(40_001, 443, 77, 0, SYN).options(&SYN_OPTIONS),
    );
    let mark = sim.net.inside.len();
    sim.expect_engine(&to_shim(&syn));
    sim.run_for(Duration::from_millis(5));
    let at_dc1 = sim.inside_since(mark, 0);
    assert_eq!(at_dc1.len(), 1);
    let ip = check_ip(&at_dc1[0]);
    assert_eq!(
        (ip.src, ip.dst),
        (IpAddr::V6(STABLE_V6), IpAddr::V6(SERVER_V6))
    );
    let t = tcp_view(&ip);
    assert_eq!((t.sport, t.dport, t.seq, t.flags), (40_001, 443, 77, SYN));
    assert_eq!(t.mss, Some(mtu - 60));

    // Packet Too Big quoting the SYN as the far side saw it: the guest sees its own SYN quoted
    let router = "2001:db8::1".parse::<Ipv6Addr>().unwrap();
    sim.to_guest.clear();
    sim.inject(0, &icmp6_error(router, STABLE_V6, 2, 1280, &at_dc1[0]));
    sim.run_for(Duration::from_millis(5));
    let frames: Vec<_> = sim.to_guest.drain(..).collect();
    assert_eq!(frames.len(), 1);
    let e = eth_view(&frames[0]);
    assert_eq!((e.dst, e.src, e.ethertype), (GUEST_MAC, SHIM_MAC, ETH_IPV6));
    let ip = check_ip(e.body);
    assert_eq!(
        (ip.src, ip.dst, ip.proto),
        (router.into(), GUEST_V6.into(), ICMPV6)
    );
    assert_eq!((ip.payload[0], be32(&ip.payload, 4)), (2, 1280));
    let quoted = check_ip(&ip.payload[8..]);
    assert_eq!(
        (quoted.src, quoted.dst),
        (GUEST_V6.into(), SERVER_V6.into())
    );
    assert_eq!(tcp_view(&quoted).seq, 77);

    let synack = tcp(
        SERVER_V6.into(),
        STABLE_V6.into(),
        &Seg::new(443, 40_001, 1000, 78, SYN | ACK).options(&SYN_OPTIONS),
    );
    sim.to_guest.clear();
    sim.inject(0, &synack);
    sim.run_for(Duration::from_millis(5));
    let frames: Vec<_> = sim.to_guest.drain(..).collect();
    assert_eq!(frames.len(), 1);
    let e = eth_view(&frames[0]);
    assert_eq!((e.dst, e.src, e.ethertype), (GUEST_MAC, SHIM_MAC, ETH_IPV6));
    let ip = check_ip(e.body);
    assert_eq!(
        (ip.src, ip.dst),
        (IpAddr::V6(SERVER_V6), IpAddr::V6(GUEST_V6))
    );
    let t = tcp_view(&ip);
    assert_eq!((t.ack, t.flags), (78, SYN | ACK));
    assert!(t.mss.is_some_and(|m| m <= mtu - 60));
}

/// A packet from the inside network to the client, described.
#[derive(Debug, Clone)]
struct InsidePacket {
    v6: bool,
    proto: u8,
    src_host: u8,
    sport: u16,
    dport: u16,
    flags: u8,
    mss: Option<u16>,
    payload: Vec<u8>,
    /// a byte to corrupt after the checksums are computed
    corrupt: Option<(Index, u8)>,
}

fn inside_packet() -> impl Strategy<Value = InsidePacket> {
    (
        any::<bool>(),
        prop_oneof![Just(TCP), Just(UDP), Just(ICMP), Just(47u8)],
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        proptest::option::of(any::<u16>()),
        vec(any::<u8>(), 0..1200),
        proptest::option::weighted(0.2, (any::<Index>(), 1..=255u8)),
    )
        .prop_map(
            |(v6, proto, src_host, sport, dport, flags, mss, payload, corrupt)| InsidePacket {
                v6,
                proto,
                src_host,
                sport,
                dport,
                flags,
                mss,
                payload,
                corrupt,
            },
        )
}

impl InsidePacket {
    /// The packet, sent to `dst` (an address of the client's, stable or local).
    fn build(&self, dst: IpAddr) -> Vec<u8> {
        let src: IpAddr = if self.v6 {
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(self.src_host)).into()
        } else {
            Ipv4Addr::new(198, 19, 0, self.src_host).into()
        };
        let mut p = match self.proto {
            TCP => {
                let mut s =
                    Seg::new(self.sport, self.dport, 1, 2, self.flags).payload(&self.payload);
                if let Some(m) = self.mss {
                    s = s.options(&[2, 4, (m >> 8) as u8, m as u8]);
                }
                tcp(src, dst, &s)
            }
            UDP => udp(src, self.sport, dst, self.dport, &self.payload),
            ICMP if self.v6 => {
                let mut m = vec![129, 0, 0, 0];
                m.extend_from_slice(&self.payload);
                with_transport(src, dst, ICMPV6, 64, m)
            }
            ICMP => {
                let mut m = vec![0, 0, 0, 0];
                m.extend_from_slice(&self.payload);
                with_transport(src, dst, ICMP, 64, m)
            }
            other => ip_packet(src, dst, other, 64, &self.payload),
        };
        if let Some((at, x)) = self.corrupt {
            let i = at.index(p.len());
            p[i] ^= x;
        }
        p
    }
}

/// Whether the IPv4 header checksum and the transport checksum of an IP packet (whose lengths
/// are consistent) are right, from scratch.
fn checksums_ok(p: &[u8]) -> bool {
    let (src, dst, proto, seg): (IpAddr, IpAddr, u8, &[u8]) = match p.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let mut h = p[..ihl].to_vec();
            h[10..12].fill(0);
            if internet_checksum(&h) != be16(p, 10) {
                return false;
            }
            let a = |at: usize| IpAddr::V4(Ipv4Addr::from(be32(p, at)));
            (a(12), a(16), p[9], &p[ihl..])
        }
        Some(6) => {
            let a = |at: usize| {
                IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&p[at..at + 16]).unwrap(),
                ))
            };
            (a(8), a(24), p[6], &p[40..])
        }
        _ => return false,
    };
    match checksum_field(proto) {
        Some((at, _)) if seg.len() >= at + 2 => {
            let c = be16(seg, at);
            (proto == UDP && c == 0 && src.is_ipv4())
                || c == transport_checksum(src, dst, proto, seg)
        }
        Some(_) => false,
        None => true,
    }
}

#[test]
fn random_packets_from_the_inside_reach_the_guest_well_formed() {
    const CASES: u32 = 1_500;
    let sim = RefCell::new(Sim::warm(Opts {
        ipv6: true,
        ..Opts::new(1)
    }));
    {
        let mut s = sim.borrow_mut();
        s.expect_drop(
            &ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_V6, 255),
            GuestDrop::NdpIgnored,
        );
        s.to_guest.clear();
    }
    let delivered = Cell::new(0u32);
    let result = runner(CASES, 9).run(&inside_packet(), |desc| {
        let mut sim = sim.borrow_mut();
        let (stable, local): (IpAddr, IpAddr) = if desc.v6 {
            (STABLE_V6.into(), GUEST_V6.into())
        } else {
            (STABLE_V4.into(), GUEST_V4.into())
        };
        let sent = desc.build(stable);
        if sessionkeeper::addresses(&sent).map(|(_, d)| d) != Some(stable) {
            return Ok(()); // a corrupted destination: the gateway has no route for it
        }
        let sent_ok = checksums_ok(&sent);
        sim.inject(0, &sent);
        sim.run_for(Duration::from_millis(3));
        let frames: Vec<_> = sim.to_guest.drain(..).collect();
        prop_assert!(frames.len() <= 1);
        let Some(frame) = frames.first() else {
            return Ok(());
        };
        delivered.set(delivered.get() + 1);
        let e = eth_view(frame);
        prop_assert_eq!((e.dst, e.src), (GUEST_MAC, SHIM_MAC));
        prop_assert_eq!(e.ethertype, if desc.v6 { ETH_IPV6 } else { ETH_IPV4 });
        // the packet as sent, with the local address for the stable one
        let got = e.body;
        prop_assert_eq!(got.len(), sent.len(), "nothing added or cut");
        let mut expect = sent.clone();
        let (at, a) = match local {
            IpAddr::V4(a) => (16, a.octets().to_vec()),
            IpAddr::V6(a) => (24, a.octets().to_vec()),
        };
        expect[at..at + a.len()].copy_from_slice(&a);
        // everything but checksum fields and a clamped MSS is as sent
        let mut diff: Vec<usize> = (0..got.len()).filter(|&i| got[i] != expect[i]).collect();
        let hl = if desc.v6 {
            40
        } else {
            usize::from(got[0] & 0x0f) * 4
        };
        let allowed = |i: usize| {
            (!desc.v6 && (10..12).contains(&i))
                || checksum_field(got[if desc.v6 { 6 } else { 9 }])
                    .is_some_and(|(f, _)| (hl + f..hl + f + 2).contains(&i))
                || (desc.proto == TCP && (hl + 20..hl + 24).contains(&i))
        };
        diff.retain(|&i| !allowed(i));
        prop_assert!(diff.is_empty(), "changed at {:?}", diff);
        if sent_ok {
            prop_assert!(
                checksums_ok(got),
                "checksums broken on the way: {:02x?}",
                got
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let n = delivered.get();
    eprintln!("inside → guest: {CASES} cases, {n} delivered");
    assert!(n > CASES / 2, "{n} delivered");
}

// ---------------------------------------------------------------------------------------------
// 6. Stream framing

#[test]
fn stream_framing_decodes_random_frames_split_anywhere() {
    const CASES: u32 = 3_000;
    let strategy = (
        vec(
            prop_oneof![
                1 => Just(Vec::new()),
                8 => vec(any::<u8>(), 1..200),
                2 => vec(any::<u8>(), 200..3000),
            ],
            0..12,
        ),
        vec(1usize..700, 1..30),
        any::<bool>(),
    );
    let total_frames = Cell::new(0u64);
    let result = runner(CASES, 6).run(&strategy, |(frames, cuts, small)| {
        let max = if small { 1514 } else { MAX_FRAME };
        let mut wire = Vec::new();
        for f in &frames {
            framing::encode(f, &mut wire);
        }
        prop_assert_eq!(
            wire.len(),
            frames.iter().map(|f| f.len() + 4).sum::<usize>()
        );
        let mut d = Decoder::new(max);
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            i += 1;
            let (mut piece, tail) = rest.split_at(n);
            rest = tail;
            while let Some(f) = d.next_frame(&mut piece).unwrap() {
                got.push(f.to_vec());
            }
            prop_assert!(piece.is_empty(), "a piece not consumed");
        }
        let expect: Vec<Vec<u8>> = frames
            .iter()
            .filter(|f| !f.is_empty() && f.len() <= max)
            .cloned()
            .collect();
        prop_assert_eq!(&got, &expect);
        let s = d.stats();
        prop_assert_eq!(s.frames, expect.len() as u64);
        prop_assert_eq!(
            s.empty,
            frames.iter().filter(|f| f.is_empty()).count() as u64
        );
        prop_assert_eq!(
            s.oversize,
            frames.iter().filter(|f| f.len() > max).count() as u64
        );
        total_frames.set(total_frames.get() + s.frames);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "framing: {CASES} cases, {} frames decoded",
        total_frames.get()
    );
}

#[test]
fn stream_framing_feeds_the_guest_link() {
    // what the QEMU stream front end does: frames through the framing, one byte at a time
    let mut sim = Sim::new(Opts::new(1));
    let frames = [
        arp_request(GUEST_V4, GATEWAY_V4),
        broadcast_dhcp(&dhcp_message(
            DISCOVER,
            9,
            GUEST_MAC,
            Ipv4Addr::UNSPECIFIED,
            false,
            &[],
        )),
        vec![],
        arp_request(GUEST_V4, SERVER_V4),
    ];
    let mut wire = Vec::new();
    for f in &frames {
        framing::encode(f, &mut wire);
    }
    let mut d = Decoder::new(MAX_FRAME);
    let mut replies = Vec::new();
    for b in wire.chunks(1) {
        let mut input = b;
        while let Some(f) = d.next_frame(&mut input).unwrap() {
            let f = f.to_vec();
            if let Got::Frame(r) = sim.frame(&f) {
                let mut back = Vec::new();
                framing::encode(&r, &mut back);
                replies.push(back);
            }
        }
    }
    assert_eq!(replies.len(), 3);
    for r in &replies {
        let mut dec = Decoder::new(MAX_FRAME);
        let mut input = &r[..];
        let f = dec.next_frame(&mut input).unwrap().unwrap().to_vec();
        check_any_reply(&f, GUEST_MAC);
    }
    // a length no QEMU sends stops the stream
    let mut d = Decoder::new(MAX_FRAME);
    let mut input = &[0x00u8, 0x10, 0x00, 0x01][..];
    assert!(d.next_frame(&mut input).is_err());
}

/// Fail closed below a guest: with every datacenter down the guest's packets go into a tunnel
/// or nowhere (the sim refuses a datagram to any address but a gateway's), none reaches any
/// inside network, and the first datacenter back carries them again.
#[test]
fn with_every_datacenter_down_the_guest_fails_closed() {
    let mut sim = Sim::warm(Opts::new(2));
    let syn = |seq: u32| {
        tcp(
            GUEST_V4.into(),
            SERVER_V4.into(),
            &Seg::new(40_001, 80, seq, 0, SYN),
        )
    };
    sim.black(0, true);
    sim.black(1, true);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.guest.engine().all_down());
    let mark = sim.net.inside.len();
    for seq in 0..20 {
        let g = sim.frame(&eth(SHIM_MAC, GUEST_MAC, ETH_IPV4, &syn(seq)));
        assert!(
            matches!(&g, Got::Nothing)
                || matches!(&g, Got::Datagram(to, _) if sim.net.gateways.iter().any(|(a, _)| a == to)),
            "into a tunnel or nowhere: {g:?}"
        );
        sim.run_for(Duration::from_millis(50));
    }
    assert_eq!(sim.net.inside.len(), mark, "nothing reached any datacenter");
    // dc2 comes back: the guest's next packet goes through it
    sim.black(1, false);
    sim.run_for(Duration::from_secs(1));
    assert!(!sim.guest.engine().all_down());
    assert_eq!(sim.guest.engine().active(), DcId::new(1));
    sim.frame(&eth(SHIM_MAC, GUEST_MAC, ETH_IPV4, &syn(100)));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.inside_since(mark, 1).len(), 1, "the SYN through dc2");
}
