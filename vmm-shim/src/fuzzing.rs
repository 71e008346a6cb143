//! The bodies of the fuzz targets in `fuzz/fuzz_targets/`, one function each. They live in the
//! library so that `tests/fuzz_corpus.rs` replays the corpus through exactly the same code, on
//! stable.
//!
//! | target | function | what it parses |
//! |---|---|---|
//! | `guest_frames` | [`guest_frames`] | a run of guest frames through [`GuestNet`] over an [`Engine`] |
//! | `stream_framing` | [`stream_framing`] | a QEMU stream in pieces through [`framing::Decoder`] |
//! | `dhcp_message` | [`dhcp_message`] | [`dhcp::ClientMessage::parse`], answered and written |
//! | `ndp_message` | [`ndp_message`] | [`ndp::parse`], answered and written |
//! | `virtio_header` | [`virtio_header`] | [`virtio::NetHeader::parse_tx`], then the `wire` crate's parsers on the frame |
//!
//! Each function panics only when its oracle fails (see its docs). The oracles check what the
//! shim sends with code written here from scratch: the Internet checksum, the pseudo-headers,
//! the option walks (nothing from the `wire` crate checks the code that uses them).

#![allow(clippy::indexing_slicing)] // the oracles index only after asserting the length

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use engine::{DatacenterConfig, Engine, EngineConfig};
use probe::{Policy, ProbeConfig};
use sessionkeeper::StableAddresses;
use tunnel::{AllowedIps, Prefix, PrivateKey};

use crate::dhcp::{self, ClientMessage, Lease, MessageType, Refusal};
use crate::framing::{self, DecodeError, Decoder, DecoderStats, MAX_WIRE_FRAME, PREFIX_LEN};
use crate::guest::{MAX_FRAME, OUT_LEN, SHIM_MAC};
use crate::ndp::{self, Invalid, Prefix6};
use crate::virtio::{self, HeaderError, NetHeader, NET_HDR_LEN};
use crate::{Action, GuestConfig, GuestDrop, GuestNet, GuestStats};
use wire::{ArpRepr, EthernetRepr, Ipv4Packet, Ipv6Packet, Mac};

/// The guest's MAC (configured, or sent first when learned).
pub const GUEST_MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
/// The guest's IPv4 address.
pub const GUEST_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The shim's address on the guest link.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The /64 advertised to the guest.
pub const PREFIX6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0);
/// The client's stable IPv4 address.
pub const STABLE_V4: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);
/// The client's stable IPv6 address.
pub const STABLE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 2);
/// The datacenter's gateway inner address (its probe target).
pub const GATEWAY_INNER: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 1);
/// The datacenter's endpoint.
pub const ENDPOINT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)), 51820);
/// The DNS server DHCP hands out (unless [`config::HOST_ROUTE`]).
pub const DNS: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 53);
/// The tunnel MTU, so the guest's.
pub const MTU: u16 = 1420;
/// The DHCP lease time.
pub const LEASE_SECS: u32 = 3600;

/// The client's fixed test key (32 bytes of 0x11).
const CLIENT_KEY: &str = "ERERERERERERERERERERERERERERERERERERERERERE=";
/// The gateway's fixed test key (32 bytes of 0x22); only its public half is used.
const GATEWAY_KEY: &str = "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=";

/// In [`guest_frames`], a frame length prefix meaning "[`MAX_FRAME`] + 1 bytes": the rest of
/// the input, zero-padded.
pub const OVERSIZE: u16 = 0xffff;

/// The clock step between two frames with [`config::TIMERS`].
pub const TIMER_STEP: Duration = Duration::from_secs(97);

/// Bits of [`guest_frames`]'s config byte.
pub mod config {
    /// the guest's MAC is learned from its first frame (else configured: [`super::GUEST_MAC`])
    pub const LEARN_MAC: u8 = 0x01;
    /// no IPv6 for the guest (router solicitations ignored)
    pub const NO_IPV6: u8 = 0x02;
    /// router advertisements carry no prefix (any global address is learned)
    pub const NO_PREFIX6: u8 = 0x04;
    /// every frame's source MAC, ARP sender and DHCP client hardware address become
    /// [`super::GUEST_MAC`], and a unicast destination MAC the shim's, so that random frames
    /// get past the MAC checks
    pub const STEER: u8 = 0x08;
    /// the IPv4 header, UDP, TCP and ICMPv6 checksums of every frame are recomputed, so that
    /// random neighbour discovery messages get past the checksum check
    pub const REPAIR: u8 = 0x10;
    /// the link resets before every frame (a learned MAC is forgotten)
    pub const RESET: u8 = 0x20;
    /// the clock advances [`super::TIMER_STEP`] before every frame; after it the timers run
    /// and the frames the shim queued are drained (and checked)
    pub const TIMERS: u8 = 0x40;
    /// the guest's prefix is a /32 and DHCP hands out no DNS server
    pub const HOST_ROUTE: u8 = 0x80;
}

// ---------------------------------------------------------------------------------------------
// From scratch: the Internet checksum

/// The ones' complement sum of `parts` as one byte string (every part but the last must have
/// an even length), folded to 16 bits.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut acc: u64 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for w in &mut words {
            if let [a, b] = w {
                acc += u64::from(u16::from_be_bytes([*a, *b]));
            }
        }
        if let [last] = words.remainder() {
            acc += u64::from(*last) << 8;
        }
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pseudo_v6(src: &[u8], dst: &[u8], next: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    p
}

/// Whether the ICMPv6 message `msg` from `src` to `dst` carries a valid checksum.
fn icmpv6_ok(msg: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> bool {
    let ph = pseudo_v6(&src.octets(), &dst.octets(), 58, msg.len());
    ones_sum(&[&ph, msg]) == 0xffff
}

/// Writes a checksum computed over `parts` at `at` in the last part (zeroed first).
fn set_checksum(pseudo: &[u8], seg: &mut [u8], at: usize, udp: bool) {
    if seg.len() < at + 2 {
        return;
    }
    seg[at] = 0;
    seg[at + 1] = 0;
    let mut c = !ones_sum(&[pseudo, seg]);
    if udp && c == 0 {
        c = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn mac(b: &[u8]) -> Mac {
    let mut m = [0u8; 6];
    m.iter_mut().zip(b).for_each(|(d, s)| *d = *s);
    Mac(m)
}

fn v6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.iter_mut().zip(b).for_each(|(d, s)| *d = *s);
    Ipv6Addr::from(a)
}

fn v4(b: &[u8]) -> Ipv4Addr {
    let mut a = [0u8; 4];
    a.iter_mut().zip(b).for_each(|(d, s)| *d = *s);
    Ipv4Addr::from(a)
}

/// The modified EUI-64 link-local address of `m`, written out here.
fn link_local(m: Mac) -> Ipv6Addr {
    let m = m.0;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// Walks ICMPv6 options: `(type, body)` of each, or `None` if one has length 0 or runs past
/// the end.
fn ndp_options(mut opts: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !opts.is_empty() {
        let len = usize::from(*opts.get(1)?) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        out.push((opts[0], &opts[2..len]));
        opts = &opts[len..];
    }
    Some(out)
}

/// Walks DHCP options up to the end option: `(code, body)` of each; `None` if one runs past
/// the end or there is no end option.
fn dhcp_options(mut opts: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    loop {
        match opts {
            [255, ..] => return Some(out),
            [0, rest @ ..] => opts = rest,
            [code, len, rest @ ..] => {
                let body = rest.get(..usize::from(*len))?;
                out.push((*code, body));
                opts = &rest[usize::from(*len)..];
            }
            _ => return None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// guest_frames

/// The guest link's configuration for a config byte (see [`config`]).
pub fn guest_config(cfg: u8) -> GuestConfig {
    let host = cfg & config::HOST_ROUTE != 0;
    GuestConfig {
        mac: (cfg & config::LEARN_MAC == 0).then_some(GUEST_MAC),
        address: GUEST_V4,
        prefix_len: if host { 32 } else { 24 },
        gateway: GATEWAY_V4,
        dns: if host { Vec::new() } else { vec![DNS] },
        prefix6: (cfg & config::NO_PREFIX6 == 0).then_some(PREFIX6),
        lease_secs: LEASE_SECS,
        ipv6: cfg & config::NO_IPV6 == 0,
    }
}

/// The client engine: one datacenter at [`ENDPOINT`] with fixed test keys, stable addresses
/// [`STABLE_V4`] and [`STABLE_V6`], MTU [`MTU`].
pub fn engine_config() -> EngineConfig {
    let client = PrivateKey::from_base64(CLIENT_KEY);
    let gateway = PrivateKey::from_base64(GATEWAY_KEY);
    assert!(client.is_ok() && gateway.is_ok(), "the test keys");
    let (Ok(client), Ok(gateway)) = (client, gateway) else {
        unreachable!()
    };
    let everything = [
        Prefix::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        Prefix::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    ];
    EngineConfig {
        private_key: client,
        stable: StableAddresses {
            v4: Some(STABLE_V4),
            v6: Some(STABLE_V6),
        },
        local: StableAddresses::default(),
        datacenters: vec![DatacenterConfig {
            name: "dc1".to_owned(),
            endpoint: engine::Endpoint::Addr(ENDPOINT),
            public_key: gateway.public_key(),
            allowed_ips: AllowedIps::new(everything.into_iter().flatten().collect()),
            persistent_keepalive: None,
            preshared_key: None,
            probe: engine::Probe::Gateway(GATEWAY_INNER.into()),
        }],
        probe: ProbeConfig::default(),
        policy: Policy::Priority { failback: true },
        mtu: MTU,
        max_flows: 64,
        switch_recovery: true,
        routes: Vec::new(),
        seed: 0x5eed,
        unix_time: std::time::Duration::from_secs(1_800_000_000),
    }
}

/// Splits [`guest_frames`]'s input (after the config byte) into frames: each a 2-byte
/// big-endian length and that many bytes (the last one cut short if the input ends first);
/// [`OVERSIZE`] takes the rest of the input, zero-padded to [`MAX_FRAME`] + 1 bytes. A last
/// lone byte is ignored.
pub fn split_frames(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = u16::from_be_bytes(*len);
        let want = if len == OVERSIZE {
            MAX_FRAME + 1
        } else {
            usize::from(len)
        };
        let (frame, after) = tail.split_at(want.min(tail.len()));
        let mut frame = frame.to_vec();
        if len == OVERSIZE {
            frame.resize(MAX_FRAME + 1, 0);
        }
        frames.push(frame);
        rest = after;
    }
    frames
}

/// Joins frames into [`guest_frames`]'s input format (the inverse of [`split_frames`] for
/// frames shorter than [`OVERSIZE`]).
pub fn join_frames(cfg: u8, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![cfg];
    for f in frames {
        let len = u16::try_from(f.len()).unwrap_or(OVERSIZE).min(OVERSIZE - 1);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(f.get(..usize::from(len)).unwrap_or_default());
    }
    out
}

/// A run of guest frames through a fresh [`GuestNet`] over an [`Engine`].
///
/// Input: a config byte (bits in [`config`]), then frames as [`split_frames`] reads them. The
/// link is [`guest_config`] over [`engine_config`], on a clock that starts at one `Instant`.
/// Every frame goes to [`GuestNet::handle_guest_frame`]. Nothing may panic, and (the oracle):
/// - every frame is counted once in `rx_frames` and exactly once more in one of `tx_frames`
///   (answered: [`Action::ToGuest`]), `to_engine` (an [`Action::ToUnderlay`] to
///   [`ENDPOINT`], or [`Action::None`] while the tunnel's handshake is pending) or one drop
///   counter ([`Action::None`]); over the run `rx_frames == tx_frames + to_engine + drops`
///   (plus the frames polled with [`config::TIMERS`] on the `tx_frames` side);
/// - an answer bumps exactly the counter of its kind (ARP, DHCP, RA, NA); a frame that did not
///   go to the engine is left as it was; the drop reasons that depend on the frame alone
///   (length, tag, MACs) are the right ones; a configured MAC never changes and a learned one
///   is the first valid source; the guest's IPv6 address changes only on duplicate address
///   detection, to a global address inside the prefix, and is counted;
/// - every frame to the guest is Ethernet from [`SHIM_MAC`] to the guest's MAC (or broadcast,
///   for DHCP) and one of: an ARP reply to the request's sender for its target; a DHCP
///   BOOTREPLY from the gateway with the request's xid and valid IPv4 header and UDP
///   checksums; a router advertisement (to the solicitation's source, or all nodes) or a
///   neighbour advertisement (for the solicitation's target) from the shim's link-local
///   address with hop limit 255, a valid ICMPv6 checksum and valid options.
pub fn guest_frames(data: &[u8], now: Instant) {
    let (&cfg, rest) = data.split_first().unwrap_or((&0, &[]));
    let frames = split_frames(rest);
    let mut now = now;
    let engine = Engine::new(engine_config(), now);
    assert!(engine.is_ok(), "the engine: {engine:?}");
    let Ok(engine) = engine else { return };
    let config = guest_config(cfg);
    let mut net = GuestNet::new(config.clone(), engine, now);
    let mut out = vec![0u8; OUT_LEN];
    let mut polled = 0u64;
    for original in &frames {
        if cfg & config::RESET != 0 {
            net.link_reset(now);
        }
        if cfg & config::TIMERS != 0 {
            now += TIMER_STEP;
        }
        let mut frame = original.clone();
        if cfg & config::STEER != 0 {
            steer(&mut frame);
        }
        if cfg & config::REPAIR != 0 {
            repair(&mut frame);
        }
        one_frame(&mut net, now, &frame, &mut out);
        if cfg & config::TIMERS != 0 {
            net.handle_timeout(now);
            let mut batch = engine::Batch::for_datagrams(4);
            loop {
                net.poll_transmit(now, &mut batch);
                if batch.is_empty() {
                    break;
                }
                for t in batch.iter() {
                    assert_eq!(t.to, ENDPOINT, "a timer's datagram");
                }
                batch.clear();
            }
            while let Some(f) = net.poll_guest_frame() {
                let guest = net.guest_mac();
                assert_eq!(check_reply(&f, None, guest, &config), Reply::Ra);
                polled += 1;
            }
        }
    }
    assert!(net.poll_guest_frame().is_none(), "a frame left queued");
    let s = net.stats();
    assert_eq!(s.rx_frames, frames.len() as u64, "rx_frames");
    assert_eq!(s.drops.get(GuestDrop::QueueFull), 0, "queue_full");
    assert_eq!(
        s.rx_frames + polled,
        s.tx_frames + s.to_engine + s.drops.total(),
        "every frame answered, sent or dropped: {s:?}"
    );
}

/// What the shim answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Arp,
    Dhcp,
    Ra,
    Na,
}

/// What one frame did to the counters.
#[derive(Debug)]
struct Delta {
    rx: u64,
    tx: u64,
    to_engine: u64,
    drops: Vec<GuestDrop>,
    replies: Vec<Reply>,
}

fn delta(a: &GuestStats, b: &GuestStats) -> Delta {
    let mut replies = Vec::new();
    for (kind, x, y) in [
        (Reply::Arp, a.arp_replies, b.arp_replies),
        (Reply::Dhcp, a.dhcp_replies, b.dhcp_replies),
        (Reply::Ra, a.router_advertisements, b.router_advertisements),
        (
            Reply::Na,
            a.neighbor_advertisements,
            b.neighbor_advertisements,
        ),
    ] {
        for _ in x..y {
            replies.push(kind);
        }
    }
    let mut drops = Vec::new();
    for &r in GuestDrop::ALL {
        for _ in a.drops.get(r)..b.drops.get(r) {
            drops.push(r);
        }
    }
    Delta {
        rx: b.rx_frames - a.rx_frames,
        tx: b.tx_frames - a.tx_frames,
        to_engine: b.to_engine - a.to_engine,
        drops,
        replies,
    }
}

/// What a call returned, owned.
enum Got {
    Frame(Vec<u8>),
    Datagram(SocketAddr, usize),
    Nothing,
}

fn one_frame(net: &mut GuestNet, now: Instant, original: &[u8], out: &mut [u8]) {
    let before = net.stats().clone();
    let mac_before = net.guest_mac();
    let v6_before = net.guest_ipv6();
    let mut frame = original.to_vec();
    let got = match net.handle_guest_frame(now, &mut frame, out) {
        Action::ToGuest(f) => Got::Frame(f.to_vec()),
        Action::ToUnderlay(t) => Got::Datagram(t.to, t.datagram.len()),
        Action::None => Got::Nothing,
    };
    let d = delta(&before, net.stats());
    assert_eq!(d.rx, 1, "rx_frames");
    assert_eq!(
        d.tx + d.to_engine + d.drops.len() as u64,
        1,
        "a frame answered, sent to the engine or dropped, once: {d:?}"
    );
    match &got {
        Got::Frame(_) => assert_eq!(d.tx, 1, "an answer not counted: {d:?}"),
        Got::Datagram(to, len) => {
            assert_eq!(d.to_engine, 1, "a datagram not counted: {d:?}");
            assert_eq!(*to, ENDPOINT, "a datagram's destination");
            assert!(*len > 0, "an empty datagram");
        }
        Got::Nothing => assert_eq!(d.tx, 0, "no answer counted as one: {d:?}"),
    }
    assert_eq!(d.replies.len() as u64, d.tx, "reply counters: {d:?}");
    if d.to_engine == 0 {
        assert!(
            frame == original,
            "a frame not sent to the engine was changed"
        );
    }
    drop_reasons(&d.drops, original, mac_before);
    // the guest's MAC
    let src_ok =
        original.len() >= 14 && original.len() <= MAX_FRAME && mac(&original[6..12]).is_unicast();
    let expected_mac = match (net.config().mac, mac_before) {
        (Some(m), _) => Some(m),
        (None, Some(m)) => Some(m),
        (None, None) if src_ok => Some(mac(&original[6..12])),
        (None, None) => None,
    };
    assert_eq!(net.guest_mac(), expected_mac, "the guest's MAC");
    // the guest's IPv6 address
    let v6_now = net.guest_ipv6();
    let changes = net.stats().ipv6_address_changes - before.ipv6_address_changes;
    assert_eq!(
        changes,
        u64::from(v6_now != v6_before),
        "IPv6 address changes"
    );
    if let (true, Some(a)) = (v6_now != v6_before, v6_now) {
        let seg0 = a.segments()[0];
        assert!(
            !a.is_multicast() && !a.is_unspecified() && !a.is_loopback() && seg0 & 0xffc0 != 0xfe80,
            "learned a non-global address {a}"
        );
        if let Some(p) = net.config().prefix6 {
            assert_eq!(
                a.segments()[..4],
                p.segments()[..4],
                "learned {a} outside the prefix"
            );
        }
        assert!(
            is_dad(original),
            "an IPv6 address learned from something but DAD"
        );
        assert_eq!(
            d.drops,
            [GuestDrop::NdpIgnored],
            "DAD is counted as ignored"
        );
    }
    if let Got::Frame(f) = &got {
        let config = net.config().clone();
        let kind = check_reply(f, Some(original), net.guest_mac(), &config);
        assert_eq!(d.replies, [kind], "the counter of the reply");
    }
}

/// Whether `frame` is a duplicate address detection solicitation (from `::`).
fn is_dad(frame: &[u8]) -> bool {
    frame.len() >= 14 + 40 + 24
        && be16(frame, 12) == Some(0x86dd)
        && frame[14 + 6] == 58
        && frame[14 + 8..14 + 24] == [0; 16]
        && frame[14 + 40] == ndp::NEIGHBOR_SOLICITATION
}

/// The drop reasons that depend on the frame alone.
fn drop_reasons(drops: &[GuestDrop], f: &[u8], guest: Option<Mac>) {
    let Some(&r) = drops.first() else { return };
    assert_eq!(
        r == GuestDrop::FrameTooLong,
        f.len() > MAX_FRAME,
        "{r:?} for {} bytes",
        f.len()
    );
    assert_eq!(
        r == GuestDrop::FrameTooShort,
        f.len() < 14,
        "{r:?} for {} bytes",
        f.len()
    );
    assert!(
        !matches!(r, GuestDrop::NoGuestMac | GuestDrop::QueueFull),
        "{r:?} from a guest frame"
    );
    if f.len() < 14 || f.len() > MAX_FRAME {
        return;
    }
    let (dst, src, ethertype) = (mac(&f[..6]), mac(&f[6..12]), be16(f, 12).unwrap_or(0));
    match r {
        GuestDrop::BadSourceMac => assert!(!src.is_unicast(), "{r:?} from {src}"),
        GuestDrop::ForeignSourceMac => assert!(
            guest.is_some_and(|g| g != src),
            "{r:?} from {src}, guest {guest:?}"
        ),
        GuestDrop::NotForShim => assert!(dst != SHIM_MAC && !dst.is_multicast(), "{r:?} to {dst}"),
        GuestDrop::VlanTagged => assert!(
            ethertype == 0x8100 || ethertype == 0x88a8,
            "{r:?} for EtherType {ethertype:#06x}"
        ),
        GuestDrop::UnknownEthertype => assert!(
            ![0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8].contains(&ethertype),
            "{r:?} for EtherType {ethertype:#06x}"
        ),
        GuestDrop::ArpMalformed | GuestDrop::ArpIgnored => {
            assert_eq!(ethertype, 0x0806, "{r:?}");
        }
        GuestDrop::DhcpMalformed | GuestDrop::DhcpForeignClient | GuestDrop::DhcpIgnored => {
            assert_eq!(ethertype, 0x0800, "{r:?}");
        }
        GuestDrop::NdpMalformed | GuestDrop::NdpRouterOnly | GuestDrop::NdpIgnored => {
            assert_eq!(ethertype, 0x86dd, "{r:?}");
        }
        _ => {}
    }
}

/// Checks a frame to the guest (`request`: the guest's frame it answers, `None` for one the
/// shim originated); returns its kind.
fn check_reply(
    f: &[u8],
    request: Option<&[u8]>,
    guest: Option<Mac>,
    config: &GuestConfig,
) -> Reply {
    assert!(f.len() >= 14, "a frame to the guest of {} bytes", f.len());
    let (dst, src, ethertype) = (mac(&f[..6]), mac(&f[6..12]), be16(f, 12).unwrap_or(0));
    assert_eq!(src, SHIM_MAC, "a frame to the guest not from the shim");
    let Some(guest) = guest else {
        unreachable!("a frame to the guest before its MAC is known")
    };
    match ethertype {
        0x0806 => {
            assert_eq!(dst, guest, "an ARP reply's destination");
            check_arp(&f[14..], request, guest, config);
            Reply::Arp
        }
        0x0800 => {
            assert!(
                dst == guest || dst == Mac::BROADCAST,
                "a DHCP reply to {dst}"
            );
            check_dhcp(&f[14..], dst == Mac::BROADCAST, request, guest, config);
            Reply::Dhcp
        }
        0x86dd => check_ndp(&f[14..], dst, request, guest, config),
        other => unreachable!("a frame to the guest of EtherType {other:#06x}"),
    }
}

fn check_arp(b: &[u8], request: Option<&[u8]>, guest: Mac, config: &GuestConfig) {
    assert_eq!(b.len(), 28, "an ARP reply's length");
    assert_eq!(b[..8], [0, 1, 8, 0, 6, 4, 0, 2], "an ARP reply's header");
    assert_eq!(mac(&b[8..14]), SHIM_MAC, "an ARP reply's sender");
    assert_eq!(mac(&b[18..24]), guest, "an ARP reply's target");
    let Some(req) = request.and_then(|r| r.get(14..14 + 28)) else {
        unreachable!("an ARP reply to no request")
    };
    assert_eq!(be16(req, 6), Some(1), "an ARP reply to a non-request");
    assert_eq!(b[14..18], req[24..28], "an ARP reply for another address");
    assert_eq!(b[24..28], req[14..18], "an ARP reply to another address");
    assert_ne!(
        v4(&b[14..18]),
        config.address,
        "an ARP reply for the guest's own address"
    );
    assert!(!v4(&req[14..18]).is_unspecified(), "an ARP probe answered");
}

fn check_dhcp(
    ip: &[u8],
    broadcast: bool,
    request: Option<&[u8]>,
    guest: Mac,
    config: &GuestConfig,
) {
    assert!(ip.len() >= 28, "a DHCP reply of {} bytes", ip.len());
    assert_eq!(ip[0], 0x45, "a DHCP reply's IP version and header length");
    assert_eq!(
        be16(ip, 2).map(usize::from),
        Some(ip.len()),
        "IPv4 total length"
    );
    assert_eq!(ones_sum(&[&ip[..20]]), 0xffff, "IPv4 header checksum");
    assert_eq!(ip[9], 17, "a DHCP reply's protocol");
    assert_eq!(be16(ip, 6).map(|f| f & 0x1fff), Some(0), "a fragment");
    assert_eq!(v4(&ip[12..16]), config.gateway, "a DHCP reply's source");
    if broadcast {
        assert_eq!(
            v4(&ip[16..20]),
            Ipv4Addr::BROADCAST,
            "a broadcast DHCP reply's IP destination"
        );
    }
    let udp = &ip[20..];
    assert_eq!(be16(udp, 0), Some(67), "source port");
    assert_eq!(be16(udp, 2), Some(68), "destination port");
    assert_eq!(be16(udp, 4).map(usize::from), Some(udp.len()), "UDP length");
    assert_ne!(be16(udp, 6), Some(0), "UDP checksum 0");
    let ph = pseudo_v4(&ip[12..16], &ip[16..20], 17, udp.len());
    assert_eq!(ones_sum(&[&ph, udp]), 0xffff, "UDP checksum");
    let Some(req) = request else {
        unreachable!("a DHCP reply to nothing")
    };
    let ihl = usize::from(req.get(14).map_or(0, |b| b & 0x0f)) * 4;
    let Some(req) = req.get(14 + ihl + 8..) else {
        unreachable!("a DHCP reply to a frame too short for DHCP")
    };
    let kind = check_bootreply(&udp[8..], req, config.gateway);
    assert_eq!(
        mac(&udp[8 + 28..8 + 34]),
        guest,
        "a DHCP reply to another client"
    );
    if kind == 6 {
        assert!(broadcast, "a NAK not broadcast");
    }
}

/// Checks a DHCP reply against the request it answers; returns the reply's message type.
fn check_bootreply(r: &[u8], req: &[u8], server: Ipv4Addr) -> u8 {
    assert!(
        (300..=dhcp::MAX_REPLY).contains(&r.len()),
        "a DHCP reply of {} bytes",
        r.len()
    );
    assert!(req.len() >= 240, "a DHCP reply to {} bytes", req.len());
    assert_eq!(r[..3], [2, 1, 6], "BOOTREPLY, Ethernet");
    assert_eq!(r[4..8], req[4..8], "xid");
    assert_eq!(r[28..34], req[28..34], "chaddr");
    assert_eq!(r[236..240], [99, 130, 83, 99], "magic cookie");
    let opts = dhcp_options(&r[240..]);
    assert!(opts.is_some(), "a DHCP reply's options do not parse");
    let opts = opts.unwrap_or_default();
    let one = |code: u8| -> Option<&[u8]> {
        let mut it = opts.iter().filter(|(c, _)| *c == code);
        let first = it.next().map(|(_, b)| *b);
        assert!(it.next().is_none(), "option {code} twice");
        first
    };
    let kind = one(53);
    assert!(
        matches!(kind, Some([2 | 5 | 6])),
        "a DHCP reply's message type {kind:?}"
    );
    assert_eq!(one(54), Some(&server.octets()[..]), "server identifier");
    let kind = kind.and_then(|k| k.first().copied()).unwrap_or(0);
    if kind == 6 {
        assert_eq!(r[16..20], [0; 4], "a NAK with yiaddr");
        assert!(one(51).is_none() && one(1).is_none(), "a NAK with a lease");
    } else {
        assert_eq!(one(1).map(<[u8]>::len), Some(4), "subnet mask");
        assert_eq!(one(3), Some(&server.octets()[..]), "router");
        assert_eq!(one(26), Some(&MTU.to_be_bytes()[..]), "interface MTU");
    }
    kind
}

fn check_ndp(
    ip: &[u8],
    dst_mac: Mac,
    request: Option<&[u8]>,
    guest: Mac,
    config: &GuestConfig,
) -> Reply {
    assert!(ip.len() >= 40 + 8, "an IPv6 frame of {} bytes", ip.len());
    assert_eq!(ip[0] >> 4, 6, "IPv6 version");
    assert_eq!(
        be16(ip, 4).map(|l| usize::from(l) + 40),
        Some(ip.len()),
        "payload length"
    );
    assert_eq!(ip[6], 58, "next header");
    assert_eq!(ip[7], 255, "hop limit");
    let (src, dst) = (v6(&ip[8..24]), v6(&ip[24..40]));
    assert_eq!(src, link_local(SHIM_MAC), "an NDP message's source");
    let msg = &ip[40..];
    assert!(icmpv6_ok(msg, src, dst), "ICMPv6 checksum");
    assert_eq!(msg[1], 0, "ICMPv6 code");
    // the solicitation answered: its IPv6 source and its ICMPv6 message
    let req = request.map(|r| {
        assert!(r.len() >= 14 + 40 + 8, "an NDP answer to {} bytes", r.len());
        let len = 40 + usize::from(be16(r, 14 + 4).unwrap_or(0));
        (
            v6(&r[14 + 8..14 + 24]),
            &r[14 + 40..(14 + len).min(r.len())],
        )
    });
    match msg[0] {
        ndp::ROUTER_ADVERTISEMENT => {
            assert!(
                msg.len() >= 16,
                "a router advertisement of {} bytes",
                msg.len()
            );
            assert_ne!(be16(msg, 6), Some(0), "router lifetime 0");
            let opts = ndp_options(&msg[16..]);
            assert!(
                opts.is_some(),
                "a router advertisement's options do not parse"
            );
            let opts = opts.unwrap_or_default();
            let find = |t: u8| opts.iter().find(|(k, _)| *k == t).map(|(_, b)| *b);
            assert_eq!(
                find(1).map(mac),
                Some(SHIM_MAC),
                "source link-layer address"
            );
            assert_eq!(
                find(5).and_then(|b| b.get(2..6)),
                Some(&u32::from(MTU).to_be_bytes()[..]),
                "MTU option"
            );
            match (find(3), config.prefix6) {
                (Some(p), Some(want)) => {
                    assert!(
                        p.len() == 30 && p[0] == 64,
                        "a prefix option of {} bytes",
                        p.len()
                    );
                    assert_eq!(
                        v6(&p[14..30]).segments()[..4],
                        want.segments()[..4],
                        "prefix"
                    );
                    assert_eq!(p[14 + 8..30], [0; 8], "prefix host bits");
                }
                (None, None) => {}
                (got, want) => unreachable!("prefix option {got:?}, configured {want:?}"),
            }
            match req {
                Some((rs_src, rs)) => {
                    assert_eq!(
                        rs.first(),
                        Some(&ndp::ROUTER_SOLICITATION),
                        "an RA for no RS"
                    );
                    let want = if rs_src.is_unspecified() {
                        ndp::ALL_NODES
                    } else {
                        rs_src
                    };
                    assert_eq!(dst, want, "a solicited RA's destination");
                    assert_eq!(dst_mac, guest, "a solicited RA's destination MAC");
                    assert!(config.ipv6, "an RA without IPv6");
                }
                None => {
                    assert_eq!(dst, ndp::ALL_NODES, "a periodic RA's destination");
                    assert_eq!(
                        dst_mac,
                        Mac([0x33, 0x33, 0, 0, 0, 1]),
                        "a periodic RA's MAC"
                    );
                }
            }
            Reply::Ra
        }
        ndp::NEIGHBOR_ADVERTISEMENT => {
            assert!(
                msg.len() >= 24,
                "a neighbour advertisement of {} bytes",
                msg.len()
            );
            assert_eq!(msg[4], 0xe0, "router, solicited, override");
            let opts = ndp_options(&msg[24..]);
            assert!(
                opts.is_some(),
                "a neighbour advertisement's options do not parse"
            );
            let tlla = opts
                .unwrap_or_default()
                .iter()
                .find(|(k, _)| *k == 2)
                .map(|(_, b)| mac(b));
            assert_eq!(tlla, Some(SHIM_MAC), "target link-layer address");
            assert_eq!(dst_mac, guest, "an NA's destination MAC");
            let Some((ns_src, ns)) = req else {
                unreachable!("an unsolicited NA")
            };
            assert!(
                ns.len() >= 24 && ns[0] == ndp::NEIGHBOR_SOLICITATION,
                "an NA for no NS"
            );
            assert_eq!(msg[8..24], ns[8..24], "an NA's target");
            assert_eq!(dst, ns_src, "an NA's destination");
            assert!(!ns_src.is_unspecified(), "an NA answering DAD");
            Reply::Na
        }
        other => unreachable!("ICMPv6 type {other} to the guest"),
    }
}

/// Writes [`GUEST_MAC`] and the shim's MAC where the shim checks them; see [`config::STEER`].
fn steer(f: &mut [u8]) {
    if f.len() < 14 {
        return;
    }
    f[6..12].copy_from_slice(&GUEST_MAC.0);
    if !mac(&f[..6]).is_multicast() {
        f[..6].copy_from_slice(&SHIM_MAC.0);
    }
    match be16(f, 12) {
        Some(0x0806) => {
            if let Some(sha) = f.get_mut(14 + 8..14 + 14) {
                sha.copy_from_slice(&GUEST_MAC.0);
            }
        }
        Some(0x0800) => {
            let ihl = usize::from(f.get(14).map_or(0, |b| b & 0x0f)) * 4;
            if f.get(14 + 9) == Some(&17) {
                let at = 14 + ihl + 8 + 28;
                if let Some(chaddr) = f.get_mut(at..at + 6) {
                    chaddr.copy_from_slice(&GUEST_MAC.0);
                }
            }
        }
        _ => {}
    }
}

/// Recomputes the checksums the shim or the keeper may look at; see [`config::REPAIR`].
fn repair(f: &mut [u8]) {
    let Some(ethertype) = be16(f, 12) else { return };
    let Some(ip) = f.get_mut(14..) else { return };
    match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
            let total = be16(ip, 2).map_or(0, usize::from);
            if ihl < 20 || total < ihl || total > ip.len() {
                return;
            }
            let proto = ip[9];
            let later = be16(ip, 6).is_some_and(|f| f & 0x1fff != 0);
            let more = be16(ip, 6).is_some_and(|f| f & 0x2000 != 0);
            let ph = pseudo_v4(&ip[12..16], &ip[16..20], proto, total - ihl);
            if !later && !more {
                let seg = &mut ip[ihl..total];
                match proto {
                    6 => set_checksum(&ph, seg, 16, false),
                    17 if be16(seg, 6) != Some(0) => set_checksum(&ph, seg, 6, true),
                    1 => set_checksum(&[], seg, 2, false),
                    _ => {}
                }
            }
            set_checksum(&[], &mut ip[..ihl], 10, false);
        }
        0x86dd => {
            let Some(plen) = be16(ip, 4) else { return };
            let total = 40 + usize::from(plen);
            if total > ip.len() {
                return;
            }
            let next = ip[6];
            let ph = pseudo_v6(&ip[8..24], &ip[24..40], next, total - 40);
            let seg = &mut ip[40..total];
            match next {
                58 => set_checksum(&ph, seg, 2, false),
                6 => set_checksum(&ph, seg, 16, false),
                17 => set_checksum(&ph, seg, 6, true),
                _ => {}
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// stream_framing

/// A QEMU stream through [`framing::Decoder`], in pieces.
///
/// Input: the largest frame (2 bytes, big-endian); a layout byte: bit 7 multiplies the largest
/// frame by 16 (past [`MAX_WIRE_FRAME`], where it is capped), bits 4..=6 a shift `s`, bits
/// 0..=3 a count `n`; `n` piece sizes (a byte `b` each: pieces of `b << s` bytes, cycled; none:
/// one piece); then the stream. Oracle:
/// - a call that returns no frame has consumed its whole piece; every frame is non-empty and
///   at most the largest frame;
/// - the frames and counters are those of a reference decoder written here over the bytes
///   consumed; re-encoding the frames with [`framing::encode`] gives those bytes minus the
///   skipped records (empty and oversize frames) and the last, incomplete record;
/// - the same stream in one piece gives the same frames, counters and error;
/// - [`DecodeError::Desync`] comes exactly after a prefix beyond [`MAX_WIRE_FRAME`]; after it
///   every call errs the same way and consumes nothing;
/// - the re-encoded frames decode to themselves.
pub fn stream_framing(data: &[u8]) {
    let max = usize::from(be16(data, 0).unwrap_or(0));
    let layout = data.get(2).copied().unwrap_or(0);
    let max = if layout & 0x80 != 0 { max * 16 } else { max };
    let shift = (layout >> 4) & 0x07;
    let n = usize::from(layout & 0x0f);
    let sizes: Vec<usize> = data
        .get(3..3 + n)
        .unwrap_or_default()
        .iter()
        .map(|&b| usize::from(b) << shift)
        .collect();
    let stream = data.get(3 + n..).unwrap_or_default();
    let sizes = if sizes.iter().any(|&s| s > 0) {
        sizes
    } else {
        vec![stream.len().max(1)]
    };
    let effective = max.min(MAX_WIRE_FRAME);

    let (frames, stats, error, consumed) = decode_in_pieces(Decoder::new(max), stream, &sizes);
    for f in &frames {
        assert!(
            !f.is_empty() && f.len() <= effective,
            "a frame of {} bytes (max {effective})",
            f.len()
        );
    }
    // the reference
    let reference = reference_decode(&stream[..consumed], effective);
    assert_eq!(frames, reference.frames, "frames");
    assert_eq!(stats, reference.stats, "counters");
    assert_eq!(error, reference.desync.map(DecodeError::Desync), "error");
    if error.is_some() {
        assert_eq!(reference.tail, 0, "bytes consumed after the bad prefix");
    } else {
        assert_eq!(consumed, stream.len(), "the stream not consumed");
    }
    let mut encoded = Vec::new();
    for f in &frames {
        framing::encode(f, &mut encoded);
    }
    assert!(
        encoded == reference.kept,
        "re-encoded frames differ from the bytes consumed"
    );
    // in one piece
    let whole = decode_in_pieces(Decoder::new(max), stream, &[stream.len().max(1)]);
    assert_eq!(whole.0, frames, "frames in one piece");
    assert_eq!(whole.1, stats, "counters in one piece");
    assert_eq!(whole.2, error, "error in one piece");
    assert_eq!(whole.3, consumed, "bytes consumed in one piece");
    // the re-encoded frames
    let again = decode_in_pieces(Decoder::new(max), &encoded, &[encoded.len().max(1)]);
    assert_eq!(again.0, frames, "re-encoded frames");
    assert_eq!(again.2, None, "re-encoded frames desync");
    assert_eq!(again.3, encoded.len(), "re-encoded frames not consumed");
}

/// Feeds `stream` in pieces of `sizes` (cycled, at least one non-zero); returns the frames,
/// the counters, the error and how many bytes were consumed.
fn decode_in_pieces(
    mut d: Decoder,
    stream: &[u8],
    sizes: &[usize],
) -> (Vec<Vec<u8>>, DecoderStats, Option<DecodeError>, usize) {
    let mut frames = Vec::new();
    let mut error = None;
    let mut at = 0;
    'pieces: for &size in sizes.iter().cycle() {
        let piece = &stream[at..(at + size).min(stream.len())];
        let mut input = piece;
        loop {
            let left = input.len();
            match d.next_frame(&mut input) {
                Ok(Some(f)) => {
                    assert!(input.len() < left, "a frame from no input");
                    frames.push(f.to_vec());
                }
                Ok(None) => {
                    assert!(input.is_empty(), "no frame and {} bytes left", input.len());
                    break;
                }
                Err(e) => {
                    at += piece.len() - input.len();
                    error = Some(e);
                    break 'pieces;
                }
            }
        }
        at += piece.len();
        if at == stream.len() {
            break;
        }
    }
    if let Some(e) = error {
        // stopped for good: the rest of the stream, and nothing, both err and consume nothing
        for rest in [&stream[at..], &[][..]] {
            for _ in 0..2 {
                let mut input = rest;
                assert_eq!(
                    d.next_frame(&mut input).map(|f| f.map(|f| f.len())),
                    Err(e),
                    "after a desync"
                );
                assert_eq!(input.len(), rest.len(), "consumed after a desync");
            }
        }
    } else {
        let mut input: &[u8] = &[];
        assert!(
            matches!(d.next_frame(&mut input), Ok(None)),
            "a frame from no input"
        );
    }
    (frames, d.stats(), error, at)
}

#[derive(Debug, Default)]
struct Reference {
    frames: Vec<Vec<u8>>,
    stats: DecoderStats,
    desync: Option<u32>,
    /// the records of the frames returned, as they were on the wire
    kept: Vec<u8>,
    /// bytes of the last, incomplete record
    tail: usize,
}

/// QEMU's framing over a whole buffer, as its docs say.
fn reference_decode(b: &[u8], max: usize) -> Reference {
    let mut r = Reference::default();
    let mut at = 0;
    while let Some(p) = b.get(at..at + PREFIX_LEN) {
        let len32 = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        let len = len32 as usize;
        if len == 0 {
            r.stats.empty += 1;
            at += PREFIX_LEN;
            continue;
        }
        if len > MAX_WIRE_FRAME {
            r.desync = Some(len32);
            at += PREFIX_LEN;
            break;
        }
        if len > max {
            r.stats.oversize += 1;
        }
        let Some(record) = b.get(at..at + PREFIX_LEN + len) else {
            break;
        };
        if len <= max {
            r.frames.push(record[PREFIX_LEN..].to_vec());
            r.kept.extend_from_slice(record);
            r.stats.frames += 1;
        }
        at += record.len();
    }
    r.tail = b.len() - at;
    r
}

// ---------------------------------------------------------------------------------------------
// dhcp_message

/// The lease [`dhcp_message`] answers with (that of [`guest_config`] with config 0).
pub fn lease() -> Lease {
    Lease {
        address: GUEST_V4,
        prefix_len: 24,
        router: GATEWAY_V4,
        dns: vec![DNS],
        mtu: MTU,
        lease_secs: LEASE_SECS,
    }
}

fn type_code(t: MessageType) -> u8 {
    match t {
        MessageType::Discover => 1,
        MessageType::Offer => 2,
        MessageType::Request => 3,
        MessageType::Decline => 4,
        MessageType::Ack => 5,
        MessageType::Nak => 6,
        MessageType::Release => 7,
        MessageType::Inform => 8,
    }
}

/// A DHCP server-port payload through [`ClientMessage::parse`], [`dhcp::answer`] (from the
/// message's own client, and from another) and [`dhcp::write_reply`].
///
/// Oracle: a message parses only with op BOOTREQUEST, Ethernet addresses and the magic cookie,
/// and then carries the input's xid, flags, ciaddr and chaddr; another client is refused; the
/// answer is the one RFC 2131 asks for (OFFER to DISCOVER, ACK to INFORM and to a REQUEST for
/// the lease, NAK to other REQUESTs, ignored otherwise); the reply is written in
/// [`dhcp::MAX_REPLY`] bytes and not in fewer, is a BOOTREPLY with the request's xid and
/// chaddr, options that parse, the reply's type and the server identifier; turned into a
/// BOOTREQUEST it parses back with the same xid, chaddr and type.
pub fn dhcp_message(data: &[u8]) {
    let lease = lease();
    let msg = match ClientMessage::parse(data) {
        Ok(m) => m,
        Err(r) => {
            assert_eq!(r, Refusal::Malformed, "a parse refusal");
            return;
        }
    };
    assert!(
        data.len() >= 240,
        "a message of {} bytes parsed",
        data.len()
    );
    assert_eq!(data[..3], [1, 1, 6], "op, htype, hlen");
    assert_eq!(data[236..240], [99, 130, 83, 99], "magic cookie");
    assert_eq!(msg.xid.to_be_bytes(), data[4..8], "xid");
    assert_eq!(msg.broadcast, data[10] & 0x80 != 0, "broadcast flag");
    assert_eq!(msg.ciaddr, v4(&data[12..16]), "ciaddr");
    assert_eq!(msg.chaddr, mac(&data[28..34]), "chaddr");
    let mut other = msg.chaddr;
    other.0[5] ^= 1;
    assert_eq!(
        dhcp::answer(&msg, other, &lease),
        Err(Refusal::ForeignClient),
        "another client"
    );
    let reply = match dhcp::answer(&msg, msg.chaddr, &lease) {
        Ok(r) => r,
        Err(r) => {
            let ours = msg.server_id.is_none_or(|s| s == lease.router);
            let ignored = match msg.kind {
                MessageType::Discover | MessageType::Inform => false,
                MessageType::Request => !ours,
                _ => true,
            };
            assert!(
                ignored && r == Refusal::Ignored,
                "{:?} refused: {r:?}",
                msg.kind
            );
            return;
        }
    };
    let want = match msg.kind {
        MessageType::Discover => MessageType::Offer,
        MessageType::Inform => MessageType::Ack,
        MessageType::Request if msg.requested.unwrap_or(msg.ciaddr) == lease.address => {
            MessageType::Ack
        }
        MessageType::Request => MessageType::Nak,
        other => unreachable!("{other:?} answered"),
    };
    assert_eq!(reply.kind, want, "the answer to {:?}", msg.kind);
    if reply.kind == MessageType::Nak {
        assert!(
            reply.broadcast && reply.dst == Ipv4Addr::BROADCAST,
            "a NAK not broadcast"
        );
    }
    let mut small = vec![0u8; dhcp::MAX_REPLY - 1];
    assert!(
        dhcp::write_reply(&mut small, &msg, &reply, &lease).is_none(),
        "a reply written in fewer than MAX_REPLY bytes"
    );
    let mut out = vec![0u8; dhcp::MAX_REPLY + 64];
    let n = dhcp::write_reply(&mut out, &msg, &reply, &lease);
    assert!(n.is_some(), "a reply not written");
    let n = n.unwrap_or(0);
    let written = &out[..n];
    let kind = check_bootreply(written, data, lease.router);
    assert_eq!(kind, type_code(reply.kind), "the reply's type");
    let yiaddr = v4(&written[16..20]);
    if reply.kind == MessageType::Nak || msg.kind == MessageType::Inform {
        assert!(yiaddr.is_unspecified(), "yiaddr {yiaddr}");
    } else {
        assert_eq!(yiaddr, lease.address, "yiaddr");
    }
    // turned into a request, it parses back
    let mut back = written.to_vec();
    back[0] = 1;
    let parsed = ClientMessage::parse(&back);
    assert!(parsed.is_ok(), "the reply as a request: {parsed:?}");
    if let Ok(p) = parsed {
        assert_eq!(
            (p.xid, p.chaddr, p.kind, p.server_id),
            (msg.xid, msg.chaddr, reply.kind, Some(lease.router)),
            "the reply parsed back"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ndp_message

/// Bits of [`ndp_message`]'s address byte.
pub mod ndp_config {
    /// bits 0..=1: the source: `::`, the guest's link-local address, its global address,
    /// `fe80::1`
    pub const SRC: u8 = 0x03;
    /// bits 2..=3: the destination: all routers, all nodes, the solicited-node group of the
    /// guest's global address, the shim's link-local address
    pub const DST: u8 = 0x0c;
    /// hop limit 64 instead of 255
    pub const HOP_64: u8 = 0x10;
    /// the checksum is recomputed before parsing
    pub const REPAIR: u8 = 0x20;
}

/// The guest's global IPv6 address in [`ndp_message`].
pub const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 5);

/// The addresses and hop limit an address byte selects; see [`ndp_config`].
pub fn ndp_addresses(sel: u8) -> (Ipv6Addr, Ipv6Addr, u8) {
    let src = match sel & ndp_config::SRC {
        0 => Ipv6Addr::UNSPECIFIED,
        1 => link_local(GUEST_MAC),
        2 => GUEST_V6,
        _ => Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
    };
    let dst = match (sel & ndp_config::DST) >> 2 {
        0 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
        1 => ndp::ALL_NODES,
        2 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 5),
        _ => link_local(SHIM_MAC),
    };
    let hop = if sel & ndp_config::HOP_64 != 0 {
        64
    } else {
        255
    };
    (src, dst, hop)
}

/// RFC 4861's checks, written here: the expected result of [`ndp::parse`].
fn ndp_model(msg: &[u8], src: Ipv6Addr, dst: Ipv6Addr, hop: u8) -> Result<ndp::Message, Invalid> {
    let (Some(&kind), Some(&code)) = (msg.first(), msg.get(1)) else {
        return Err(Invalid::Malformed);
    };
    let min = match kind {
        133 => 8,
        134 => 16,
        135 | 136 => 24,
        137 => 40,
        _ => return Err(Invalid::NotNdp),
    };
    if hop != 255 || code != 0 || msg.len() < min || !icmpv6_ok(msg, src, dst) {
        return Err(Invalid::Malformed);
    }
    if ndp_options(&msg[min..]).is_none() {
        return Err(Invalid::Malformed);
    }
    Ok(match kind {
        133 => ndp::Message::RouterSolicitation,
        135 => {
            let target = v6(&msg[8..24]);
            if target.is_multicast() {
                return Err(Invalid::Malformed);
            }
            ndp::Message::NeighborSolicitation { target }
        }
        136 => ndp::Message::NeighborAdvertisement,
        _ => ndp::Message::RouterOnly,
    })
}

/// An ICMPv6 message through [`ndp::parse`], and the shim's answer through the writers.
///
/// Input: an address byte (bits in [`ndp_config`]), then the ICMPv6 message. Oracle: the
/// result is that of RFC 4861's checks written here (type, code, hop limit, minimum length,
/// checksum, options, a unicast target); a solicitation's answer (a router advertisement with
/// and without a prefix, a neighbour advertisement for the target) is a frame from [`SHIM_MAC`]
/// and the shim's link-local address, hop limit 255, with a valid checksum, that parses back
/// as a router-only message or a neighbour advertisement.
pub fn ndp_message(data: &[u8]) {
    let (&sel, msg) = data.split_first().unwrap_or((&0, &[]));
    let (src, dst, hop) = ndp_addresses(sel);
    let mut msg = msg.to_vec();
    if sel & ndp_config::REPAIR != 0 {
        let ph = pseudo_v6(&src.octets(), &dst.octets(), 58, msg.len());
        set_checksum(&ph, &mut msg, 2, false);
    }
    let parsed = ndp::parse(&msg, src, dst, hop);
    assert_eq!(parsed, ndp_model(&msg, src, dst, hop), "ndp::parse");
    let mut out = vec![0u8; 256];
    let shim_ll = link_local(SHIM_MAC);
    match parsed {
        Ok(ndp::Message::RouterSolicitation) => {
            let to = if src.is_unspecified() {
                ndp::ALL_NODES
            } else {
                src
            };
            for prefix in [None, Some(Prefix6 { prefix: PREFIX6 })] {
                let n =
                    ndp::write_router_advertisement(&mut out, SHIM_MAC, GUEST_MAC, to, MTU, prefix);
                assert!(n.is_some(), "a router advertisement not written");
                let reply = answer_frame(&out[..n.unwrap_or(0)], shim_ll, to);
                assert_eq!(
                    ndp::parse(reply, shim_ll, to, 255),
                    Ok(ndp::Message::RouterOnly),
                    "the router advertisement parsed back"
                );
            }
        }
        Ok(ndp::Message::NeighborSolicitation { target }) if !src.is_unspecified() => {
            let n = ndp::write_neighbor_advertisement(&mut out, SHIM_MAC, GUEST_MAC, src, target);
            assert!(n.is_some(), "a neighbour advertisement not written");
            let reply = answer_frame(&out[..n.unwrap_or(0)], shim_ll, src);
            assert_eq!(
                reply.get(8..24),
                Some(&target.octets()[..]),
                "the NA's target"
            );
            assert_eq!(
                ndp::parse(reply, shim_ll, src, 255),
                Ok(ndp::Message::NeighborAdvertisement),
                "the neighbour advertisement parsed back"
            );
        }
        _ => {}
    }
}

/// Checks the Ethernet and IPv6 headers of an answer frame; returns its ICMPv6 message.
fn answer_frame(f: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> &[u8] {
    assert!(f.len() >= 14 + 40 + 8, "an answer of {} bytes", f.len());
    assert_eq!(mac(&f[..6]), GUEST_MAC, "destination MAC");
    assert_eq!(mac(&f[6..12]), SHIM_MAC, "source MAC");
    assert_eq!(be16(f, 12), Some(0x86dd), "EtherType");
    let ip = &f[14..];
    assert_eq!(ip[0] >> 4, 6, "IPv6 version");
    assert_eq!(
        be16(ip, 4).map(|l| usize::from(l) + 40),
        Some(ip.len()),
        "payload length"
    );
    assert_eq!((ip[6], ip[7]), (58, 255), "next header, hop limit");
    assert_eq!((v6(&ip[8..24]), v6(&ip[24..40])), (src, dst), "addresses");
    assert!(icmpv6_ok(&ip[40..], src, dst), "ICMPv6 checksum");
    &ip[40..]
}

// ---------------------------------------------------------------------------------------------
// virtio_header

/// A virtio-net TX buffer: the header through [`NetHeader::parse_tx`], then the frame behind it
/// through the `wire` crate's parsers ([`EthernetRepr`], then [`ArpRepr`], [`Ipv4Packet`] and
/// [`Ipv6Packet`] on its body), as the vhost-user front end hands it to the guest link.
///
/// Oracle: each parser accepts exactly what its docs say (written out here) and reads the
/// fields from where they are; what [`EthernetRepr`] and [`ArpRepr`] parse writes back to the same
/// bytes; [`virtio::rx_header`] is all zero but `num_buffers` (little-endian) and parses as a
/// TX header without offloads.
pub fn virtio_header(data: &[u8]) {
    let want = if data.len() < NET_HDR_LEN {
        Err(HeaderError::Short)
    } else if data[0] & 1 != 0 || data[1] != 0 {
        Err(HeaderError::Offload)
    } else {
        Ok(NetHeader {
            flags: data[0],
            gso_type: 0,
        })
    };
    assert_eq!(NetHeader::parse_tx(data), want, "parse_tx");
    let num = u16::from_le_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]);
    let rx = virtio::rx_header(num);
    assert_eq!(rx[..10], [0; 10], "an RX header's fields");
    assert_eq!(rx[10..], num.to_le_bytes(), "num_buffers");
    assert_eq!(
        NetHeader::parse_tx(&rx),
        Ok(NetHeader {
            flags: 0,
            gso_type: 0
        }),
        "an RX header"
    );
    let frame = data.get(NET_HDR_LEN..).unwrap_or_default();
    wire_parsers(frame);
}

fn wire_parsers(f: &[u8]) {
    let eth = EthernetRepr::parse(f).ok();
    assert_eq!(
        eth.is_some(),
        f.len() >= 14,
        "EthernetRepr of {} bytes",
        f.len()
    );
    if let Some(h) = eth {
        assert_eq!(
            (h.dst, h.src, Some(h.ethertype)),
            (mac(&f[..6]), mac(&f[6..12]), be16(f, 12)),
            "EthernetRepr fields"
        );
        let mut back = [0u8; 14];
        assert!(
            h.emit(&mut back).is_ok() && back[..] == f[..14],
            "EthernetRepr written back"
        );
        assert!(
            h.emit(&mut [0u8; 13]).is_err(),
            "EthernetRepr written in 13 bytes"
        );
    }
    let body = f.get(14..).unwrap_or_default();
    // ARP
    let arp = ArpRepr::parse(body).ok();
    let arp_ok =
        body.len() >= 28 && body[..6] == [0, 1, 8, 0, 6, 4] && matches!(be16(body, 6), Some(1 | 2));
    assert_eq!(arp.is_some(), arp_ok, "ArpRepr::parse");
    if let Some(a) = arp {
        assert_eq!(
            (Some(a.op), a.sha, a.spa, a.tha, a.tpa),
            (
                be16(body, 6),
                mac(&body[8..14]),
                v4(&body[14..18]),
                mac(&body[18..24]),
                v4(&body[24..28])
            ),
            "Arp fields"
        );
        let mut back = [0u8; 28];
        assert!(
            a.emit(&mut back).is_ok() && back[..] == body[..28],
            "Arp written back"
        );
    }
    // IPv4
    let ip4 = Ipv4Packet::new_checked(body).ok();
    let ihl = usize::from(body.first().map_or(0, |b| b & 0x0f)) * 4;
    let total = be16(body, 2).map(usize::from);
    let ip4_ok = body.first().is_some_and(|b| b >> 4 == 4)
        && ihl >= 20
        && total.is_some_and(|t| t >= ihl && t <= body.len());
    assert_eq!(ip4.is_some(), ip4_ok, "Ipv4Packet::new_checked");
    if let Some(s) = ip4 {
        let frag = be16(body, 6).unwrap_or(0);
        assert_eq!(
            (
                s.src_addr(),
                s.dst_addr(),
                s.protocol(),
                s.header_len(),
                Some(s.total_len()),
                s.frag_offset() != 0
            ),
            (
                v4(&body[12..16]),
                v4(&body[16..20]),
                body[9],
                ihl,
                total,
                frag & 0x1fff != 0
            ),
            "Ipv4Packet fields"
        );
    }
    // IPv6
    let ip6 = Ipv6Packet::new_checked(body).ok();
    let ip6_ok = body.len() >= 40
        && body[0] >> 4 == 6
        && be16(body, 4).is_some_and(|l| 40 + usize::from(l) <= body.len());
    assert_eq!(ip6.is_some(), ip6_ok, "Ipv6Packet::new_checked");
    if let Some(s) = ip6 {
        assert_eq!(
            (
                s.src_addr(),
                s.dst_addr(),
                s.next_header(),
                s.hop_limit(),
                Some(s.total_len())
            ),
            (
                v6(&body[8..24]),
                v6(&body[24..40]),
                body[6],
                body[7],
                be16(body, 4).map(|l| 40 + usize::from(l))
            ),
            "Ipv6Packet fields"
        );
    }
    // a summary of the one family only
    assert!(!(ip4.is_some() && ip6.is_some()), "both IPv4 and IPv6");
}
