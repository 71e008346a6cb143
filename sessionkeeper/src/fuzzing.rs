//! The body of the `rewrite` fuzz target (`fuzz/fuzz_targets/rewrite.rs`). It lives in the
//! library so that `tests/fuzz_corpus.rs` replays the corpus through exactly the same code.
//!
//! Input: a config byte (bits in [`config`]), an MTU byte (MTU 1280..=1500), then one packet.
//! The packet goes, for each direction, through [`parse::parse`], [`rewrite::translate`] (and
//! back), [`rewrite::clamp_mss`] and [`Keeper::outbound`] / [`Keeper::inbound`]; then a switch
//! and the recovery it queues. Nothing may panic, and these must hold (the oracle):
//! - a checksum that verified before a translation or an MSS clamp still verifies after it
//!   (IPv4 header, transport, and in ICMP errors the quoted IPv4 header and the quoted
//!   transport when the quote holds all of it);
//! - a UDP checksum that was 0 stays 0, and one that was not does not become 0;
//! - nothing past the packet's own length (link padding) is written;
//! - a refused packet is left as it was, a clamped one clamps to the same bytes again;
//! - every recovery packet parses, and a pure ACK's checksums verify.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use wire::{checksum, field};

use crate::keeper::{Keeper, KeeperConfig, MAX_RECOVERY_FLOWS};
use crate::parse::{self, Family, Fragment, Ip, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::rewrite::{self, Direction};
use crate::StableAddresses;

/// The stable IPv4 address the target uses.
pub const STABLE_V4: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);
/// The stable IPv6 address the target uses.
pub const STABLE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 2);
/// The local IPv4 address the target uses (unless [`config::IDENTITY_V4`]).
pub const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The local IPv6 address the target uses (unless [`config::IDENTITY_V6`]).
pub const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2);

/// Bits of the config byte.
pub mod config {
    /// the keeper's IPv4 local address is the stable one (no IPv4 translation in the keeper)
    pub const IDENTITY_V4: u8 = 0x01;
    /// the keeper's IPv6 local address is the stable one
    pub const IDENTITY_V6: u8 = 0x02;
    /// write the addresses each direction translates into the packet (outbound: source and an
    /// ICMP error's quoted destination = local; inbound: destination and quoted source =
    /// stable), so that random packets reach the rewrite
    pub const STEER: u8 = 0x04;
    /// recompute every checksum before use, so that random packets reach the oracle
    pub const REPAIR: u8 = 0x08;
    /// switch-over recovery off
    pub const NO_RECOVERY: u8 = 0x10;
    /// a flow table of two flows
    pub const SMALL_TABLE: u8 = 0x20;
}

/// One fuzz input; see the module docs. Panics only when the oracle fails. `now` is the base
/// of the run's virtual clock: the caller (the fuzz target, a test) reads it.
pub fn fuzz_one(data: &[u8], now: Instant) {
    let (&cfg, rest) = data.split_first().unwrap_or((&0, &[]));
    let (&mtu, packet) = rest.split_first().unwrap_or((&0, &[]));
    let mut keeper = Keeper::new(keeper_config(cfg, mtu));
    for dir in [Direction::Outbound, Direction::Inbound] {
        let mut p = packet.to_vec();
        if cfg & config::STEER != 0 {
            steer(&mut p, dir);
        }
        if cfg & config::REPAIR != 0 {
            repair(&mut p);
        }
        if let Ok(ip) = parse::parse(&p) {
            translate_checked(&p, &ip, dir);
            clamp_checked(&p, &ip, keeper.max_mss(ip.family));
        }
        keeper_checked(&mut keeper, now, &p, dir);
    }
    let later = now.checked_add(Duration::from_millis(100)).unwrap_or(now);
    keeper.on_switch(later, 0);
    let mut out = Vec::new();
    for _ in 0..2 * MAX_RECOVERY_FLOWS + 2 {
        if !keeper.poll_recovery(&mut out) {
            break;
        }
        recovered_checked(&out);
    }
}

/// The keeper configuration a config byte and an MTU byte select.
pub fn keeper_config(cfg: u8, mtu: u8) -> KeeperConfig {
    let stable = StableAddresses {
        v4: Some(STABLE_V4),
        v6: Some(STABLE_V6),
    };
    let mut c = KeeperConfig::new(stable, 1280 + u16::from(mtu) % 221);
    c.local = StableAddresses {
        v4: (cfg & config::IDENTITY_V4 == 0).then_some(LOCAL_V4),
        v6: (cfg & config::IDENTITY_V6 == 0).then_some(LOCAL_V6),
    };
    c.recovery = cfg & config::NO_RECOVERY == 0;
    if cfg & config::SMALL_TABLE != 0 {
        c.max_flows = 2;
    }
    c
}

fn local(family: Family) -> Vec<u8> {
    match family {
        Family::V4 => LOCAL_V4.octets().to_vec(),
        Family::V6 => LOCAL_V6.octets().to_vec(),
    }
}

fn stable(family: Family) -> Vec<u8> {
    match family {
        Family::V4 => STABLE_V4.octets().to_vec(),
        Family::V6 => STABLE_V6.octets().to_vec(),
    }
}

/// Checksum state of a packet: `Some(valid)` where a checksum applies, `udp_zero` where a UDP
/// checksum field is present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sums {
    ip: Option<bool>,
    l4: Option<bool>,
    udp_zero: Option<bool>,
    quoted_ip: Option<bool>,
    quoted_l4: Option<bool>,
    quoted_udp_zero: Option<bool>,
}

fn sums(p: &[u8]) -> Sums {
    let mut s = Sums::default();
    let Ok(ip) = parse::parse(p) else {
        return s;
    };
    s.ip = header_ok(p, &ip);
    if !ip.has_transport_header() {
        return s;
    }
    s.udp_zero = udp_zero(p, &ip);
    if ip.fragment == Fragment::Whole {
        s.l4 = transport_ok(p, &ip);
    }
    if let Some((quote, q)) = quote(p, &ip) {
        s.quoted_ip = header_ok(quote, &q);
        if q.has_transport_header() {
            s.quoted_udp_zero = udp_zero(quote, &q);
        }
        if q.fragment == Fragment::Whole && complete(quote, &q) {
            s.quoted_l4 = transport_ok(quote, &q);
        }
    }
    s
}

fn header_ok(p: &[u8], ip: &Ip) -> Option<bool> {
    let header = p.get(..ip.l4)?;
    (ip.family == Family::V4).then(|| checksum::verifies(checksum::add(0, header)))
}

/// The transport checksum's offset in the transport header, and whether it covers a
/// pseudo-header.
fn transport_checksum(ip: &Ip) -> Option<(usize, bool)> {
    match (ip.protocol, ip.family) {
        (PROTO_TCP, _) => Some((16, true)),
        (PROTO_UDP, _) => Some((6, true)),
        (PROTO_ICMP, Family::V4) => Some((2, false)),
        (PROTO_ICMPV6, Family::V6) => Some((2, true)),
        _ => None,
    }
}

/// The sum over the transport segment `l4..len` (and its pseudo-header).
fn transport_acc(p: &[u8], ip: &Ip, pseudo: bool) -> Option<u64> {
    let seg = p.get(ip.l4..ip.len)?;
    let acc = if pseudo {
        let (n, s, d) = (
            ip.family.addr_len(),
            ip.family.src_offset(),
            ip.family.dst_offset(),
        );
        checksum::pseudo_header(p.get(s..s + n)?, p.get(d..d + n)?, ip.protocol, seg.len())
    } else {
        0
    };
    Some(checksum::add(acc, seg))
}

fn transport_ok(p: &[u8], ip: &Ip) -> Option<bool> {
    let (at, pseudo) = transport_checksum(ip)?;
    let at = ip.l4 + at;
    if at + 2 > ip.len {
        return None;
    }
    if ip.protocol == PROTO_UDP && field::be16(p, at) == Some(0) {
        return None;
    }
    Some(checksum::verifies(transport_acc(p, ip, pseudo)?))
}

fn udp_zero(p: &[u8], ip: &Ip) -> Option<bool> {
    if ip.protocol != PROTO_UDP || ip.l4 + 8 > ip.len {
        return None;
    }
    Some(field::be16(p, ip.l4 + 6) == Some(0))
}

/// An ICMP error's quote and its parse.
fn quote<'a>(p: &'a [u8], ip: &Ip) -> Option<(&'a [u8], Ip)> {
    if !parse::is_icmp_error(ip, *p.get(ip.l4)?) {
        return None;
    }
    let quote = p.get(ip.l4 + 8..ip.len)?;
    let q = parse::parse_quoted(quote).ok()?;
    Some((quote, q))
}

/// Whether a quote holds the whole quoted packet.
fn complete(quote: &[u8], q: &Ip) -> bool {
    let total = match q.family {
        Family::V4 => field::be16(quote, 2).map(usize::from),
        Family::V6 => field::be16(quote, 4).map(|l| 40 + usize::from(l)),
    };
    total == Some(q.len)
}

/// Recomputes every checksum that can be: the quoted transport (when complete) and IPv4
/// header, the transport (unfragmented), the IPv4 header. A UDP checksum of 0 is kept.
fn repair(p: &mut [u8]) {
    let Ok(ip) = parse::parse(p) else {
        return;
    };
    if ip.has_transport_header() {
        let error = p.get(ip.l4).is_some_and(|&t| parse::is_icmp_error(&ip, t));
        if let Some(quote) = p.get_mut(ip.l4 + 8..ip.len).filter(|_| error) {
            if let Ok(q) = parse::parse_quoted(quote) {
                if q.fragment == Fragment::Whole && complete(quote, &q) {
                    fix_transport(quote, &q);
                }
                fix_header(quote, &q);
            }
        }
        if ip.fragment == Fragment::Whole {
            fix_transport(p, &ip);
        }
    }
    fix_header(p, &ip);
}

fn fix_header(p: &mut [u8], ip: &Ip) {
    if ip.family != Family::V4 {
        return;
    }
    field::set_be16(p, 10, 0);
    let c = checksum::finish(checksum::sum(p.get(..ip.l4).unwrap_or_default()));
    field::set_be16(p, 10, c);
}

fn fix_transport(p: &mut [u8], ip: &Ip) {
    let Some((at, pseudo)) = transport_checksum(ip) else {
        return;
    };
    let at = ip.l4 + at;
    let udp = ip.protocol == PROTO_UDP;
    if at + 2 > ip.len || (udp && field::be16(p, at) == Some(0)) {
        return;
    }
    field::set_be16(p, at, 0);
    let Some(acc) = transport_acc(p, ip, pseudo) else {
        return;
    };
    let c = checksum::finish(checksum::fold(acc));
    field::set_be16(p, at, if udp && c == 0 { 0xffff } else { c });
}

/// Writes the addresses `dir` translates into the packet; see [`config::STEER`].
fn steer(p: &mut [u8], dir: Direction) {
    let family = match p.first().map(|b| b >> 4) {
        Some(4) => Family::V4,
        Some(6) => Family::V6,
        _ => return,
    };
    let (outer, addr) = match dir {
        Direction::Outbound => (family.src_offset(), local(family)),
        Direction::Inbound => (family.dst_offset(), stable(family)),
    };
    field::put(p, outer, &addr);
    let Ok(ip) = parse::parse(p) else {
        return;
    };
    if !ip.has_transport_header() || !p.get(ip.l4).is_some_and(|&t| parse::is_icmp_error(&ip, t)) {
        return;
    }
    let Some(quote) = p.get_mut(ip.l4 + 8..ip.len) else {
        return;
    };
    let Ok(q) = parse::parse_quoted(quote) else {
        return;
    };
    if q.family == family {
        let at = match dir {
            Direction::Outbound => family.dst_offset(),
            Direction::Inbound => family.src_offset(),
        };
        field::put(quote, at, &addr);
    }
}

/// The oracle: what verified still verifies, UDP zero stays zero and nonzero stays nonzero.
fn still_valid(before: Sums, after: Sums, what: &str) {
    let checked = [
        (before.ip, after.ip, "IPv4 header"),
        (before.l4, after.l4, "transport"),
        (before.quoted_ip, after.quoted_ip, "quoted IPv4 header"),
        (before.quoted_l4, after.quoted_l4, "quoted transport"),
    ];
    for (b, a, name) in checked {
        assert!(
            b != Some(true) || a == Some(true),
            "{what}: the {name} checksum verified before and does not after"
        );
    }
    assert_eq!(before.udp_zero, after.udp_zero, "{what}: UDP checksum 0");
    assert_eq!(
        before.quoted_udp_zero, after.quoted_udp_zero,
        "{what}: quoted UDP checksum 0"
    );
}

fn translate_checked(p: &[u8], ip: &Ip, dir: Direction) {
    let (l, s) = (local(ip.family), stable(ip.family));
    let (from, to) = match dir {
        Direction::Outbound => (l, s),
        Direction::Inbound => (s, l),
    };
    let before = sums(p);
    let mut t = p.to_vec();
    let done = rewrite::translate(&mut t, ip, dir, &from, &to);
    if !done.outer {
        assert!(t == p, "translate changed a packet it did not translate");
        return;
    }
    still_valid(before, sums(&t), "translate");
    assert!(
        t.get(ip.len..) == p.get(ip.len..),
        "translate wrote past the packet"
    );
    // A quote translated there is translated back; one that already held `to` (and was left)
    // is translated on the way back only.
    let undone = rewrite::translate(&mut t, ip, dir, &to, &from);
    assert!(
        undone.outer && (undone.quoted || !done.quoted),
        "translate back: {undone:?} after {done:?}"
    );
    still_valid(before, sums(&t), "translate back");
}

fn clamp_checked(p: &[u8], ip: &Ip, max: u16) {
    let before = sums(p);
    let mut c = p.to_vec();
    match rewrite::clamp_mss(&mut c, ip, max) {
        Some(mss) if mss > max => {
            still_valid(before, sums(&c), "clamp_mss");
            let mut again = c.clone();
            assert_eq!(rewrite::clamp_mss(&mut again, ip, max), Some(max));
            assert!(again == c, "clamp_mss changed a clamped packet");
        }
        _ => assert!(c == p, "clamp_mss changed a packet it did not clamp"),
    }
}

fn keeper_checked(keeper: &mut Keeper, now: Instant, p: &[u8], dir: Direction) {
    let before = sums(p);
    let stats = keeper.stats();
    let mut k = p.to_vec();
    let result = match dir {
        Direction::Outbound => keeper.outbound(now, &mut k, 0),
        Direction::Inbound => keeper.inbound(now, &mut k),
    };
    match result {
        Ok(len) => {
            assert_eq!(parse::parse(p).map(|ip| ip.len), Ok(len));
            still_valid(before, sums(&k), "keeper");
            assert!(k.get(len..) == p.get(len..), "keeper wrote past the packet");
        }
        Err(_) => {
            assert!(k == p, "keeper changed a packet it refused");
            assert!(keeper.stats() != stats, "a refusal not counted");
        }
    }
}

fn recovered_checked(p: &[u8]) {
    let ip = parse::parse(p);
    assert!(ip.is_ok(), "a recovery packet does not parse: {ip:?}");
    let Ok(ip) = ip else { return };
    assert_eq!(ip.protocol, PROTO_TCP, "a recovery packet that is not TCP");
    let header_end = ip.l4 + usize::from(p.get(ip.l4 + 12).map_or(0, |b| b >> 4)) * 4;
    if header_end == ip.len {
        // a pure ACK, synthesized: its checksums are computed afresh
        let s = sums(p);
        assert!(s.ip != Some(false) && s.l4 == Some(true), "pure ACK: {s:?}");
    }
}
