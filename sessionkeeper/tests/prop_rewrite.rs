#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Property tests of the local ⇄ stable rewrite.
//!
//! Packets are generated from a structured description ([`Pkt`]) by a builder that computes
//! every checksum from scratch ([`build_ip`]); the builder knows where every checksum field
//! is and what it covers, including the parts a fragment or a truncated ICMP quote leaves
//! out. A translated packet is then held to:
//! - the same description built with the translated addresses, byte for byte outside the
//!   checksum fields ([`compare`]);
//! - every checksum field recomputed from scratch over the actual bytes ([`verify`]);
//! - the UDP rules: 0 (no checksum) stays 0, nonzero never becomes 0.
//!
//! `Zero` forces a checksum to compute to zero before or after the translation (a payload
//! word, or the IPv4 identification, is chosen so), optionally written as 0xFFFF (−0): the
//! corners of one's-complement arithmetic and of the UDP 0 → 0xFFFF rule.

use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use sessionkeeper::fuzzing::{self, LOCAL_V4, LOCAL_V6, STABLE_V4, STABLE_V6};
use sessionkeeper::parse::{self, Malformed};
use sessionkeeper::rewrite::{self, flags, Direction};
use sessionkeeper::{Keeper, KeeperConfig, KeeperDrop, KeeperStats, StableAddresses};
use wire::checksum::{add, fold, pseudo_header, sum};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

// ---------------------------------------------------------------------------------------------
// Packet descriptions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Before,
    After,
}

impl Side {
    fn i(self) -> usize {
        match self {
            Side::Before => 0,
            Side::After => 1,
        }
    }
}

/// Force a checksum to compute to zero with the addresses of `side`; `neg` writes such a zero
/// as 0xFFFF (UDP always does).
#[derive(Debug, Clone, Copy)]
struct Zero {
    side: Option<Side>,
    neg: bool,
}

const NO_ZERO: Zero = Zero {
    side: None,
    neg: false,
};

#[derive(Debug, Clone)]
struct Tcp {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    ns: bool,
    window: u16,
    urg: u16,
    /// serialized, padded to a multiple of 4
    options: Vec<u8>,
    /// where the MSS option starts in `options`
    mss_at: Option<usize>,
    payload: Vec<u8>,
    zero: Zero,
}

#[derive(Debug, Clone)]
struct Udp {
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
    no_checksum: bool,
    zero: Zero,
}

#[derive(Debug, Clone)]
struct Echo {
    reply: bool,
    id: u16,
    seq: u16,
    payload: Vec<u8>,
    zero: Zero,
}

/// How much of the quoted packet an ICMP error carries: all of it, or its IP header and this
/// many bytes of its transport (`Frac`: a fraction of it).
#[derive(Debug, Clone, Copy)]
enum Cut {
    Whole,
    L4(usize),
    Frac(Index),
}

#[derive(Debug, Clone)]
struct IcmpError {
    typ: u8,
    code: u8,
    rest: u32,
    quoted: Pkt,
    cut: Cut,
}

#[derive(Debug, Clone)]
enum L4 {
    Tcp(Tcp),
    Udp(Udp),
    Echo(Echo),
    Error(Box<IcmpError>),
    /// a protocol whose checksum (if any) covers no IP address
    Other(u8, Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
enum Frag {
    Whole,
    /// first fragment: the transport header (and an ICMP error's quoted IP header) rounded up
    /// to 8 bytes, plus this many 8-byte blocks
    First(usize),
    /// a later fragment at this offset (8-byte blocks)
    Later {
        blocks: u16,
        more: bool,
    },
}

#[derive(Debug, Clone)]
struct Pkt {
    fam: Fam,
    /// TOS / traffic class, ECN bits included
    tos: u8,
    ident: u16,
    flow: u32,
    ttl: u8,
    df: bool,
    /// IPv4 options (a multiple of 4 bytes)
    options: Vec<u8>,
    /// IPv6 extension headers before the fragment header: (0 hop-by-hop | 60 destination
    /// options, length in 8-byte units)
    ext: Vec<(u8, usize)>,
    frag: Frag,
    /// the IPv4 header checksum (forced through the identification)
    zero: Zero,
    l4: L4,
}

impl Pkt {
    fn proto(&self) -> u8 {
        match &self.l4 {
            L4::Tcp(_) => TCP,
            L4::Udp(_) => UDP,
            L4::Echo(_) | L4::Error(_) => match self.fam {
                Fam::V4 => ICMP,
                Fam::V6 => ICMPV6,
            },
            L4::Other(p, _) => *p,
        }
    }

    fn header_len(&self) -> usize {
        match self.fam {
            Fam::V4 => 20 + self.options.len(),
            Fam::V6 => {
                let frag = if matches!(self.frag, Frag::Whole) {
                    0
                } else {
                    8
                };
                40 + self.ext.iter().map(|(_, u)| 8 * u).sum::<usize>() + frag
            }
        }
    }

    fn later(&self) -> bool {
        matches!(self.frag, Frag::Later { .. })
    }

    fn tcp_mut(&mut self) -> Option<&mut Tcp> {
        match &mut self.l4 {
            L4::Tcp(t) => Some(t),
            _ => None,
        }
    }

    /// Lowers the MSS as `clamp_mss` should; whether it did.
    fn clamp(&mut self, max: u16) -> bool {
        if self.later() {
            return false;
        }
        let Some(t) = self.tcp_mut() else {
            return false;
        };
        let (true, Some(at)) = (t.flags & flags::SYN != 0, t.mss_at) else {
            return false;
        };
        let mss = u16::from_be_bytes([t.options[at + 2], t.options[at + 3]]);
        if mss <= max {
            return false;
        }
        t.options[at + 2..at + 4].copy_from_slice(&max.to_be_bytes());
        true
    }
}

fn local(fam: Fam) -> Vec<u8> {
    match fam {
        Fam::V4 => LOCAL_V4.octets().to_vec(),
        Fam::V6 => LOCAL_V6.octets().to_vec(),
    }
}

fn stable(fam: Fam) -> Vec<u8> {
    match fam {
        Fam::V4 => STABLE_V4.octets().to_vec(),
        Fam::V6 => STABLE_V6.octets().to_vec(),
    }
}

/// The addresses of one IP header, before and after the translation.
#[derive(Debug, Clone)]
struct Addrs {
    src: [Vec<u8>; 2],
    dst: [Vec<u8>; 2],
}

/// A packet in a direction, with its far ends.
#[derive(Debug, Clone)]
struct Case {
    dir: Direction,
    pkt: Pkt,
    /// the far end of the packet
    remote: Vec<u8>,
    /// the far end of an ICMP error's quoted packet
    remote2: Vec<u8>,
    /// link padding after the packet
    pad: Vec<u8>,
    /// the local address is the stable one
    identity: bool,
}

impl Case {
    fn local(&self) -> Vec<u8> {
        if self.identity {
            stable(self.pkt.fam)
        } else {
            local(self.pkt.fam)
        }
    }

    /// Outbound the source (and the quoted destination) goes local → stable; inbound the
    /// destination (and the quoted source) stable → local.
    fn addrs(&self) -> (Addrs, Addrs) {
        let (l, s) = (self.local(), stable(self.pkt.fam));
        let (r, r2) = (self.remote.clone(), self.remote2.clone());
        match self.dir {
            Direction::Outbound => (
                Addrs {
                    src: [l.clone(), s.clone()],
                    dst: [r.clone(), r],
                },
                Addrs {
                    src: [r2.clone(), r2],
                    dst: [l, s],
                },
            ),
            Direction::Inbound => (
                Addrs {
                    src: [r.clone(), r],
                    dst: [s.clone(), l.clone()],
                },
                Addrs {
                    src: [s, l],
                    dst: [r2.clone(), r2],
                },
            ),
        }
    }

    fn translation(&self) -> (Vec<u8>, Vec<u8>) {
        let (l, s) = (self.local(), stable(self.pkt.fam));
        match self.dir {
            Direction::Outbound => (l, s),
            Direction::Inbound => (s, l),
        }
    }

    fn build(&self, side: Side) -> Seg {
        let (outer, quoted) = self.addrs();
        let mut seg = build_ip(&self.pkt, &outer, &quoted, side);
        seg.bytes.extend_from_slice(&self.pad);
        seg
    }

    /// Whether translate must rewrite an ICMP error's quote.
    fn quotes(&self) -> bool {
        matches!(self.pkt.l4, L4::Error(_)) && !self.pkt.later()
    }

    /// Whether translate must report an IPv6 UDP datagram without checksum.
    fn udp6_zero(&self) -> bool {
        self.pkt.fam == Fam::V6
            && !self.pkt.later()
            && matches!(&self.pkt.l4, L4::Udp(u) if u.no_checksum)
    }

    /// Lowers the MSS as `clamp_mss` should (whether it did), keeping the payload: a word
    /// chosen to force a checksum to zero stays what it was.
    fn clamp(&mut self, max: u16) -> bool {
        let (outer, quoted) = self.addrs();
        let full = build_l4(&self.pkt, &outer, &quoted, Side::Before).seg.bytes;
        if let Some(t) = self.pkt.tcp_mut() {
            let doff = 20 + t.options.len();
            if t.zero.side.is_some() && t.payload.len() >= 2 {
                t.payload[..2].copy_from_slice(&full[doff..doff + 2]);
                t.zero.side = None;
            }
        }
        self.pkt.clamp(max)
    }

    fn len(&self) -> usize {
        self.build(Side::Before).bytes.len() - self.pad.len()
    }
}

// ---------------------------------------------------------------------------------------------
// The builder: bytes, where the checksum fields are, and what each checksum covers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Header,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    at: usize,
    kind: Kind,
    /// whether an address change moves it (an ICMPv4 echo checksum covers no address)
    adjusts: bool,
}

#[derive(Debug, Clone)]
enum Check {
    /// an IPv4 header: its sum verifies
    Header { start: usize, end: usize },
    /// a transport checksum over `bytes[start..end] ++ tail` (the tail: what a fragment or a
    /// quote leaves out), with the pseudo-header of the IP header at `ip`
    L4 {
        ip: usize,
        fam: Fam,
        proto: u8,
        start: usize,
        end: usize,
        tail: Vec<u8>,
        pseudo: bool,
        field: usize,
    },
}

#[derive(Debug, Clone, Default)]
struct Seg {
    bytes: Vec<u8>,
    fields: Vec<Field>,
    /// byte ranges a translation must leave as they were: a later fragment's payload, the
    /// half of a checksum field a cut left
    frozen: Vec<(usize, usize)>,
    checks: Vec<Check>,
}

impl Seg {
    fn shift(&mut self, by: usize) {
        for f in &mut self.fields {
            f.at += by;
        }
        for r in &mut self.frozen {
            *r = (r.0 + by, r.1 + by);
        }
        for c in &mut self.checks {
            match c {
                Check::Header { start, end } => {
                    *start += by;
                    *end += by;
                }
                Check::L4 {
                    ip,
                    start,
                    end,
                    field,
                    ..
                } => {
                    *ip += by;
                    *start += by;
                    *end += by;
                    *field += by;
                }
            }
        }
    }

    fn append(&mut self, mut other: Seg) {
        other.shift(self.bytes.len());
        self.bytes.extend_from_slice(&other.bytes);
        self.fields.extend(other.fields);
        self.frozen.extend(other.frozen);
        self.checks.extend(other.checks);
    }

    /// Keeps the first `n` bytes; checks that reach past them take the rest as their tail.
    fn cut(&mut self, n: usize) {
        if n >= self.bytes.len() {
            return;
        }
        let full = std::mem::take(&mut self.bytes);
        self.bytes = full[..n].to_vec();
        let mut fields = Vec::new();
        for f in self.fields.drain(..) {
            if f.at + 2 <= n {
                fields.push(f);
            } else if f.at < n {
                self.frozen.push((f.at, n));
            }
        }
        self.fields = fields;
        self.frozen = self
            .frozen
            .iter()
            .filter(|r| r.0 < n)
            .map(|r| (r.0, r.1.min(n)))
            .collect();
        let mut checks = Vec::new();
        for c in self.checks.drain(..) {
            match c {
                Check::Header { end, .. } if end <= n => checks.push(c),
                Check::Header { .. } => {}
                Check::L4 { end, .. } if end <= n => checks.push(c),
                Check::L4 {
                    ip,
                    fam,
                    proto,
                    start,
                    end,
                    tail,
                    pseudo,
                    field,
                } if field + 2 <= n => {
                    let mut t = full[n..end].to_vec();
                    t.extend_from_slice(&tail);
                    checks.push(Check::L4 {
                        ip,
                        fam,
                        proto,
                        start,
                        end: n,
                        tail: t,
                        pseudo,
                        field,
                    });
                }
                Check::L4 { .. } => {}
            }
        }
        self.checks = checks;
    }

    /// A later fragment: keeps `..keep` and `from..`; what follows `keep` is frozen payload.
    fn later(&mut self, keep: usize, from: usize) {
        let full = std::mem::take(&mut self.bytes);
        self.bytes = full[..keep].to_vec();
        self.bytes.extend_from_slice(&full[from..]);
        self.fields.retain(|f| f.at < keep);
        self.checks.clear();
        self.frozen = vec![(keep, self.bytes.len())];
    }
}

fn be(v: u32, n: usize) -> Vec<u8> {
    v.to_be_bytes()[4 - n..].to_vec()
}

/// The transport checksum over `b` (its field zero) with the pseudo-header, if any.
fn l4_sum(b: &[u8], pseudo: Option<(&[u8], &[u8], u8)>) -> u16 {
    let acc = match pseudo {
        Some((s, d, proto)) => pseudo_header(s, d, proto, b.len()),
        None => 0,
    };
    fold(add(acc, b))
}

/// Writes the checksum of `b` at `at`: forcing it to zero first if asked (through the word at
/// `word`), then computing it with the addresses of `side`.
#[allow(clippy::too_many_arguments)]
fn finish_l4(
    b: &mut [u8],
    at: usize,
    word: usize,
    zero: Zero,
    udp: bool,
    pseudo: Option<(&Addrs, u8)>,
    side: Side,
) {
    let ph = |s: Side| pseudo.map(|(a, p)| (a.src[s.i()].as_slice(), a.dst[s.i()].as_slice(), p));
    b[at..at + 2].copy_from_slice(&[0, 0]);
    if let Some(fs) = zero.side {
        if b.len() >= word + 2 {
            b[word..word + 2].copy_from_slice(&[0, 0]);
            let r = l4_sum(b, ph(fs));
            b[word..word + 2].copy_from_slice(&(!r).to_be_bytes());
        }
    }
    let c = !l4_sum(b, ph(side));
    let c = if c == 0 && (udp || zero.neg) {
        0xffff
    } else {
        c
    };
    b[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

struct L4Built {
    seg: Seg,
    /// the transport checksum field and whether a pseudo-header is covered (none for UDP
    /// without checksum and protocols without one)
    sum: Option<(usize, bool)>,
    /// the least a first fragment carries
    min_first: usize,
}

fn build_l4(p: &Pkt, a: &Addrs, q: &Addrs, side: Side) -> L4Built {
    let fam = p.fam;
    let icmp_kind = match fam {
        Fam::V4 => Kind::Icmp,
        Fam::V6 => Kind::Icmpv6,
    };
    let icmp_pseudo = (fam == Fam::V6).then_some((a, ICMPV6));
    match &p.l4 {
        L4::Tcp(t) => {
            let doff = 20 + t.options.len();
            let mut b = Vec::new();
            b.extend(be(t.sport.into(), 2));
            b.extend(be(t.dport.into(), 2));
            b.extend(be(t.seq, 4));
            b.extend(be(t.ack, 4));
            b.push(u8::try_from(doff / 4).unwrap() << 4 | u8::from(t.ns));
            b.push(t.flags);
            b.extend(be(t.window.into(), 2));
            b.extend([0, 0]);
            b.extend(be(t.urg.into(), 2));
            b.extend(&t.options);
            b.extend(&t.payload);
            finish_l4(&mut b, 16, doff, t.zero, false, Some((a, TCP)), side);
            L4Built {
                seg: Seg {
                    bytes: b,
                    fields: vec![Field {
                        at: 16,
                        kind: Kind::Tcp,
                        adjusts: true,
                    }],
                    ..Seg::default()
                },
                sum: Some((16, true)),
                min_first: doff,
            }
        }
        L4::Udp(u) => {
            let mut b = Vec::new();
            b.extend(be(u.sport.into(), 2));
            b.extend(be(u.dport.into(), 2));
            b.extend(be(u32::try_from(8 + u.payload.len()).unwrap(), 2));
            b.extend([0, 0]);
            b.extend(&u.payload);
            if !u.no_checksum {
                finish_l4(&mut b, 6, 8, u.zero, true, Some((a, UDP)), side);
            }
            L4Built {
                seg: Seg {
                    bytes: b,
                    fields: vec![Field {
                        at: 6,
                        kind: Kind::Udp,
                        adjusts: true,
                    }],
                    ..Seg::default()
                },
                sum: (!u.no_checksum).then_some((6, true)),
                min_first: 8,
            }
        }
        L4::Echo(e) => {
            let typ = match (fam, e.reply) {
                (Fam::V4, false) => 8,
                (Fam::V4, true) => 0,
                (Fam::V6, false) => 128,
                (Fam::V6, true) => 129,
            };
            let mut b = vec![typ, 0, 0, 0];
            b.extend(be(e.id.into(), 2));
            b.extend(be(e.seq.into(), 2));
            b.extend(&e.payload);
            finish_l4(&mut b, 2, 8, e.zero, false, icmp_pseudo, side);
            L4Built {
                seg: Seg {
                    bytes: b,
                    fields: vec![Field {
                        at: 2,
                        kind: icmp_kind,
                        adjusts: fam == Fam::V6,
                    }],
                    ..Seg::default()
                },
                sum: Some((2, fam == Fam::V6)),
                min_first: 8,
            }
        }
        L4::Error(e) => {
            let mut quote = build_ip(&e.quoted, q, q, side);
            let qhdr = e.quoted.header_len();
            let ql4 = quote.bytes.len() - qhdr;
            let keep = match e.cut {
                Cut::Whole => ql4,
                Cut::L4(n) => n.min(ql4),
                Cut::Frac(i) => i.index(ql4 + 1),
            };
            quote.cut(qhdr + keep);
            let mut seg = Seg {
                bytes: vec![e.typ, e.code, 0, 0],
                ..Seg::default()
            };
            seg.bytes.extend(be(e.rest, 4));
            seg.append(quote);
            finish_l4(&mut seg.bytes, 2, 0, NO_ZERO, false, icmp_pseudo, side);
            seg.fields.push(Field {
                at: 2,
                kind: icmp_kind,
                adjusts: true,
            });
            L4Built {
                seg,
                sum: Some((2, fam == Fam::V6)),
                min_first: 8 + qhdr,
            }
        }
        L4::Other(_, payload) => L4Built {
            seg: Seg {
                bytes: payload.clone(),
                ..Seg::default()
            },
            sum: None,
            min_first: 8,
        },
    }
}

/// Builds a packet with the addresses of `side` (`q`: those of an ICMP error's quote).
fn build_ip(p: &Pkt, a: &Addrs, q: &Addrs, side: Side) -> Seg {
    let (s, hdr) = (side.i(), p.header_len());
    let proto = p.proto();
    let l4 = build_l4(p, a, q, side);
    let full = l4.seg.bytes.len();
    let mut seg = Seg {
        bytes: vec![0; hdr],
        ..Seg::default()
    };
    seg.append(l4.seg);
    if let Some((field, pseudo)) = l4.sum {
        seg.checks.push(Check::L4 {
            ip: 0,
            fam: p.fam,
            proto,
            start: hdr,
            end: hdr + full,
            tail: Vec::new(),
            pseudo,
            field: hdr + field,
        });
    }
    let (more, blocks) = match p.frag {
        Frag::Whole => (false, 0),
        Frag::First(extra) => {
            let n = (l4.min_first.max(8).div_ceil(8) + extra) * 8;
            seg.cut(hdr + n.min(full));
            (true, 0)
        }
        Frag::Later { blocks, more } => {
            let off = (8 * usize::from(blocks)).min(full / 8 * 8);
            seg.later(hdr, hdr + off);
            (more, blocks)
        }
    };
    let total = seg.bytes.len();
    let h = &mut seg.bytes[..hdr];
    match p.fam {
        Fam::V4 => {
            h[0] = 0x40 | u8::try_from(hdr / 4).unwrap();
            h[1] = p.tos;
            h[2..4].copy_from_slice(&be(u32::try_from(total).unwrap(), 2));
            let frag = u16::from(p.df) << 14 | u16::from(more) << 13 | (blocks & 0x1fff);
            h[6..8].copy_from_slice(&frag.to_be_bytes());
            h[8] = p.ttl;
            h[9] = proto;
            h[20..].copy_from_slice(&p.options);
            let mut ident = p.ident;
            if let Some(fs) = p.zero.side {
                h[12..16].copy_from_slice(&a.src[fs.i()]);
                h[16..20].copy_from_slice(&a.dst[fs.i()]);
                ident = !sum(h);
            }
            h[4..6].copy_from_slice(&ident.to_be_bytes());
            h[12..16].copy_from_slice(&a.src[s]);
            h[16..20].copy_from_slice(&a.dst[s]);
            let c = !sum(h);
            let c = if c == 0 && p.zero.neg { 0xffff } else { c };
            h[10..12].copy_from_slice(&c.to_be_bytes());
            seg.fields.push(Field {
                at: 10,
                kind: Kind::Header,
                adjusts: true,
            });
            seg.checks.push(Check::Header { start: 0, end: hdr });
        }
        Fam::V6 => {
            let first = u32::from(p.tos) << 20 | (p.flow & 0xfffff) | 6 << 28;
            h[0..4].copy_from_slice(&first.to_be_bytes());
            h[4..6].copy_from_slice(&be(u32::try_from(total - 40).unwrap(), 2));
            h[7] = p.ttl;
            h[8..24].copy_from_slice(&a.src[s]);
            h[24..40].copy_from_slice(&a.dst[s]);
            let mut next_at = 6;
            let mut at = 40;
            for &(kind, units) in &p.ext {
                h[next_at] = kind;
                h[at + 1] = u8::try_from(units - 1).unwrap();
                // one PadN option filling the header
                h[at + 2] = 1;
                h[at + 3] = u8::try_from(8 * units - 4).unwrap();
                next_at = at;
                at += 8 * units;
            }
            if !matches!(p.frag, Frag::Whole) {
                h[next_at] = 44;
                let off = blocks << 3 | u16::from(more);
                h[at + 2..at + 4].copy_from_slice(&off.to_be_bytes());
                h[at + 4..at + 8]
                    .copy_from_slice(&(u32::from(p.ident) << 8 ^ p.flow).to_be_bytes());
                next_at = at;
            }
            h[next_at] = proto;
        }
    }
    seg
}

// ---------------------------------------------------------------------------------------------
// Verification

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn addr_ranges(fam: Fam, ip: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    match fam {
        Fam::V4 => (ip + 12..ip + 16, ip + 16..ip + 20),
        Fam::V6 => (ip + 8..ip + 24, ip + 24..ip + 40),
    }
}

/// Every checksum `layout` knows of, recomputed from scratch over `out`.
fn verify(out: &[u8], layout: &Seg) -> Result<(), String> {
    for c in &layout.checks {
        match c {
            Check::Header { start, end } => {
                if fold(add(0, &out[*start..*end])) != 0xffff {
                    return Err(format!("IPv4 header at {start} does not verify"));
                }
            }
            Check::L4 {
                ip,
                fam,
                proto,
                start,
                end,
                tail,
                pseudo,
                field,
            } => {
                let mut data = out[*start..*end].to_vec();
                data.extend_from_slice(tail);
                let acc = if *pseudo {
                    let (s, d) = addr_ranges(*fam, *ip);
                    pseudo_header(&out[s], &out[d], *proto, data.len())
                } else {
                    0
                };
                let udp = *proto == UDP;
                let value = u16::from_be_bytes([out[*field], out[*field + 1]]);
                if !(udp && value == 0) && fold(add(acc, &data)) != 0xffff {
                    return Err(format!(
                        "protocol {proto} checksum at {field} ({value:04x}) does not verify"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn field_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// `out` (translated from `before`) against `expected` (built translated): equal outside the
/// checksum fields, frozen bytes as they were, the UDP rules, and every checksum verifying.
fn compare(before: &[u8], out: &[u8], expected: &[u8], layout: &Seg) -> Result<(), String> {
    if out.len() != expected.len() || before.len() != out.len() {
        return Err("lengths differ".into());
    }
    let mut role = vec![0u8; out.len()]; // 0 plain, 1 checksum field, 2 frozen
    for f in &layout.fields {
        role[f.at] = 1;
        role[f.at + 1] = 1;
    }
    for &(s, e) in &layout.frozen {
        role[s..e].fill(2);
    }
    for i in 0..out.len() {
        match role[i] {
            0 if out[i] != expected[i] => {
                return Err(format!(
                    "byte {i}: {:02x}, expected {:02x}",
                    out[i], expected[i]
                ))
            }
            2 if out[i] != before[i] => {
                return Err(format!(
                    "byte {i} (must not change): {:02x}, was {:02x}",
                    out[i], before[i]
                ))
            }
            _ => {}
        }
    }
    for f in layout.fields.iter().filter(|f| f.kind == Kind::Udp) {
        let (b, o) = (field_at(before, f.at), field_at(out, f.at));
        if (b == 0) != (o == 0) {
            return Err(format!("UDP checksum at {}: {b:04x} became {o:04x}", f.at));
        }
    }
    verify(out, layout)
}

/// `back` (translated there and back from `before`) is `before`, but for a −0 (0xFFFF) in a
/// checksum the address change moves, which comes back as +0; UDP has no −0.
fn compare_round_trip(before: &[u8], back: &[u8], layout: &Seg) -> Result<(), String> {
    let mut field = vec![None; before.len()];
    for f in &layout.fields {
        field[f.at] = Some(*f);
    }
    let mut i = 0;
    while i < before.len() {
        if let Some(f) = field[i] {
            let (b, o) = (field_at(before, i), field_at(back, i));
            let want = if b == 0xffff && f.adjusts && f.kind != Kind::Udp {
                0
            } else {
                b
            };
            if o != want {
                return Err(format!(
                    "{:?} checksum at {i}: {b:04x} came back {o:04x}",
                    f.kind
                ));
            }
            i += 2;
        } else {
            if before[i] != back[i] {
                return Err(format!(
                    "byte {i}: {:02x} came back {:02x}",
                    before[i], back[i]
                ));
            }
            i += 1;
        }
    }
    Ok(())
}

fn fail(what: impl std::fmt::Display, before: &[u8], out: &[u8], case: &Case) -> TestCaseError {
    TestCaseError::fail(format!(
        "{what}\n before {}\n after  {}\n {case:?}",
        hex(before),
        hex(out)
    ))
}

#[allow(clippy::disallowed_methods)] // base of a virtual clock
fn now() -> Instant {
    Instant::now()
}

// ---------------------------------------------------------------------------------------------
// Strategies

fn fam_s() -> impl Strategy<Value = Fam> {
    prop_oneof![Just(Fam::V4), Just(Fam::V6)]
}

fn zero_s() -> impl Strategy<Value = Zero> {
    (
        prop_oneof![
            4 => Just(None),
            1 => Just(Some(Side::Before)),
            1 => Just(Some(Side::After)),
        ],
        any::<bool>(),
    )
        .prop_map(|(side, neg)| Zero { side, neg })
}

#[derive(Debug, Clone)]
enum Opt {
    Nop,
    Ws(u8),
    SackOk,
    Ts(u32, u32),
    Sack(u32, u32),
    Unknown(u8, Vec<u8>),
}

impl Opt {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Opt::Nop => vec![1],
            Opt::Ws(s) => vec![3, 3, *s],
            Opt::SackOk => vec![4, 2],
            Opt::Ts(a, b) => [vec![8, 10], be(*a, 4), be(*b, 4)].concat(),
            Opt::Sack(a, b) => [vec![5, 10], be(*a, 4), be(*b, 4)].concat(),
            Opt::Unknown(k, body) => [
                vec![*k, u8::try_from(2 + body.len()).unwrap()],
                body.clone(),
            ]
            .concat(),
        }
    }
}

fn opt_s() -> impl Strategy<Value = Opt> {
    prop_oneof![
        4 => Just(Opt::Nop),
        1 => any::<u8>().prop_map(Opt::Ws),
        1 => Just(Opt::SackOk),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Opt::Ts(a, b)),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Opt::Sack(a, b)),
        1 => (6u8..=254, vec(any::<u8>(), 0..5)).prop_map(|(k, b)| Opt::Unknown(k, b)),
    ]
}

fn mss_s() -> impl Strategy<Value = u16> {
    prop_oneof![any::<u16>(), 500u16..1500, 1200u16..1480]
}

/// TCP options with at most one MSS option, placed after random NOPs and other options (so
/// at odd offsets too).
/// Without MSS, sometimes an MSS option of a wrong length (2, 3, 5 or 6), which is no MSS.
fn options_s(
    mss: impl Strategy<Value = Option<u16>>,
) -> impl Strategy<Value = (Vec<u8>, Option<usize>)> {
    let bad = prop::option::weighted(0.3, prop::sample::select(vec![2u8, 3, 5, 6]));
    (
        vec(opt_s(), 0..5),
        mss,
        vec(opt_s(), 0..4),
        any::<bool>(),
        bad,
    )
        .prop_map(|(pre, mss, post, eol, bad)| {
            let mut b = Vec::new();
            for o in pre {
                let o = o.bytes();
                if b.len() + o.len() + 4 <= 40 {
                    b.extend(o);
                }
            }
            let mss_at = mss.map(|v| {
                let at = b.len();
                b.extend([2, 4]);
                b.extend(v.to_be_bytes());
                at
            });
            if let (None, Some(len), true) = (mss_at, bad, b.len() + 6 <= 40) {
                b.push(2);
                b.push(len);
                b.extend(vec![0x05; usize::from(len) - 2]);
            }
            for o in post {
                let o = o.bytes();
                if b.len() + o.len() <= 40 {
                    b.extend(o);
                }
            }
            if eol && b.len() < 40 {
                b.push(0);
            }
            while b.len() % 4 != 0 {
                b.push(0);
            }
            (b, mss_at)
        })
}

fn tcp_s(
    syn: impl Strategy<Value = bool>,
    mss: impl Strategy<Value = Option<u16>>,
) -> impl Strategy<Value = Tcp> {
    (
        (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()),
        (any::<u8>(), syn, any::<bool>(), any::<u16>(), any::<u16>()),
        options_s(mss),
        vec(any::<u8>(), 0..48),
        zero_s(),
    )
        .prop_map(
            |(
                (sport, dport, seq, ack),
                (fl, syn, ns, window, urg),
                (options, mss_at),
                payload,
                zero,
            )| Tcp {
                sport,
                dport,
                seq,
                ack,
                flags: if syn {
                    fl | flags::SYN
                } else {
                    fl & !flags::SYN
                },
                ns,
                window,
                urg,
                options,
                mss_at,
                payload,
                zero,
            },
        )
}

fn any_tcp_s() -> impl Strategy<Value = Tcp> {
    tcp_s(any::<bool>(), prop::option::weighted(0.7, mss_s()))
}

fn udp_s() -> impl Strategy<Value = Udp> {
    (
        any::<u16>(),
        any::<u16>(),
        vec(any::<u8>(), 0..48),
        prop::bool::weighted(0.15),
        zero_s(),
    )
        .prop_map(|(sport, dport, payload, no_checksum, zero)| Udp {
            sport,
            dport,
            payload,
            no_checksum,
            zero,
        })
}

fn echo_s() -> impl Strategy<Value = Echo> {
    (
        any::<bool>(),
        any::<u16>(),
        any::<u16>(),
        vec(any::<u8>(), 0..40),
        zero_s(),
    )
        .prop_map(|(reply, id, seq, payload, zero)| Echo {
            reply,
            id,
            seq,
            payload,
            zero,
        })
}

fn cut_s() -> impl Strategy<Value = Cut> {
    prop_oneof![
        Just(Cut::Whole),
        Just(Cut::L4(8)),
        any::<Index>().prop_map(Cut::Frac),
    ]
}

/// (type, code, rest of header): v4 destination unreachable (code 4: fragmentation needed,
/// with the MTU), time exceeded, parameter problem; v6 destination unreachable, packet too
/// big, time exceeded, parameter problem.
fn error_type_s(fam: Fam) -> BoxedStrategy<(u8, u8, u32)> {
    match fam {
        Fam::V4 => prop_oneof![
            (0u8..16, any::<u16>()).prop_map(|(c, mtu)| (
                3,
                c,
                if c == 4 { u32::from(mtu) } else { 0 }
            )),
            (0u8..2).prop_map(|c| (11, c, 0)),
            (0u8..3, any::<u8>()).prop_map(|(c, ptr)| (12, c, u32::from(ptr) << 24)),
        ]
        .boxed(),
        Fam::V6 => prop_oneof![
            (0u8..7).prop_map(|c| (1, c, 0)),
            (1280u32..9000).prop_map(|mtu| (2, 0, mtu)),
            (0u8..2).prop_map(|c| (3, c, 0)),
            (0u8..3, 0u32..1280).prop_map(|(c, ptr)| (4, c, ptr)),
        ]
        .boxed(),
    }
}

fn error_s(fam: Fam) -> impl Strategy<Value = IcmpError> {
    (error_type_s(fam), pkt_s(fam, false, false), cut_s()).prop_map(
        |((typ, code, rest), quoted, cut)| IcmpError {
            typ,
            code,
            rest,
            quoted,
            cut,
        },
    )
}

fn l4_s(fam: Fam, errors: bool) -> BoxedStrategy<L4> {
    let plain = prop_oneof![
        3 => any_tcp_s().prop_map(L4::Tcp),
        3 => udp_s().prop_map(L4::Udp),
        2 => echo_s().prop_map(L4::Echo),
        1 => (prop::sample::select(vec![4u8, 47, 50, 89, 132]), vec(any::<u8>(), 0..32))
            .prop_map(|(p, b)| L4::Other(p, b)),
    ];
    if errors {
        prop_oneof![
            3 => plain,
            2 => error_s(fam).prop_map(|e| L4::Error(Box::new(e))),
        ]
        .boxed()
    } else {
        plain.boxed()
    }
}

fn frag_s() -> impl Strategy<Value = Frag> {
    prop_oneof![
        6 => Just(Frag::Whole),
        1 => (0usize..4).prop_map(Frag::First),
        1 => (1u16..24, any::<bool>()).prop_map(|(blocks, more)| Frag::Later { blocks, more }),
    ]
}

fn later_s() -> impl Strategy<Value = Frag> {
    (1u16..0x1fff, any::<bool>()).prop_map(|(blocks, more)| Frag::Later {
        blocks: if blocks % 4 == 0 {
            blocks
        } else {
            blocks % 16 + 1
        },
        more,
    })
}

fn pkt_with(
    fam: Fam,
    l4: impl Strategy<Value = L4>,
    frag: impl Strategy<Value = Frag>,
) -> impl Strategy<Value = Pkt> {
    let options = prop_oneof![
        4 => Just(Vec::new()),
        1 => (1usize..=10).prop_flat_map(|k| vec(any::<u8>(), 4 * k)),
    ];
    let ext = (
        prop::option::weighted(0.3, 1usize..=2),
        prop::option::weighted(0.3, 1usize..=2),
    )
        .prop_map(|(hbh, dst)| {
            hbh.map(|u| (0u8, u))
                .into_iter()
                .chain(dst.map(|u| (60u8, u)))
                .collect::<Vec<_>>()
        });
    (
        (
            any::<u8>(),
            any::<u16>(),
            any::<u32>(),
            any::<u8>(),
            any::<bool>(),
        ),
        options,
        ext,
        frag,
        zero_s(),
        l4,
    )
        .prop_map(
            move |((tos, ident, flow, ttl, df), options, ext, frag, zero, l4)| {
                let v4 = fam == Fam::V4;
                Pkt {
                    fam,
                    tos,
                    ident,
                    flow,
                    ttl,
                    df,
                    options: if v4 { options } else { Vec::new() },
                    ext: if v4 { Vec::new() } else { ext },
                    frag,
                    zero: if v4 { zero } else { NO_ZERO },
                    l4,
                }
            },
        )
}

fn pkt_s(fam: Fam, errors: bool, frags: bool) -> BoxedStrategy<Pkt> {
    let frag = if frags {
        frag_s().boxed()
    } else {
        Just(Frag::Whole).boxed()
    };
    pkt_with(fam, l4_s(fam, errors), frag).boxed()
}

fn addr_s(fam: Fam) -> BoxedStrategy<Vec<u8>> {
    match fam {
        Fam::V4 => any::<[u8; 4]>().prop_map(|a| a.to_vec()).boxed(),
        Fam::V6 => any::<[u8; 16]>().prop_map(|a| a.to_vec()).boxed(),
    }
}

fn dir_s() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Outbound), Just(Direction::Inbound)]
}

fn pad_s() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![5 => Just(Vec::new()), 1 => vec(any::<u8>(), 1..6)]
}

fn case_with(fam: Fam, pkt: impl Strategy<Value = Pkt>) -> impl Strategy<Value = Case> {
    (dir_s(), pkt, addr_s(fam), addr_s(fam), pad_s()).prop_map(
        |(dir, pkt, remote, remote2, pad)| Case {
            dir,
            pkt,
            remote,
            remote2,
            pad,
            identity: false,
        },
    )
}

/// Any packet of any kind, either way.
fn case_s() -> impl Strategy<Value = Case> {
    fam_s().prop_flat_map(|fam| case_with(fam, pkt_s(fam, true, true)))
}

/// An ICMP error, either way.
fn error_case_s() -> impl Strategy<Value = Case> {
    fam_s().prop_flat_map(|fam| {
        let l4 = error_s(fam).prop_map(|e| L4::Error(Box::new(e)));
        case_with(
            fam,
            pkt_with(
                fam,
                l4,
                prop_oneof![6 => Just(Frag::Whole), 1 => (0usize..4).prop_map(Frag::First)],
            ),
        )
    })
}

/// A UDP datagram whose checksum is 0 (none) or computes to 0 before or after.
fn udp_case_s() -> impl Strategy<Value = Case> {
    fam_s().prop_flat_map(|fam| {
        let udp = (udp_s(), 0u8..3).prop_map(|(mut u, k)| {
            u.zero.side = match k {
                0 => Some(Side::Before),
                1 => Some(Side::After),
                _ => None,
            };
            u.no_checksum = k == 2;
            if u.payload.len() < 2 {
                u.payload.extend([0x55, 0xaa]);
            }
            L4::Udp(u)
        });
        case_with(fam, pkt_with(fam, udp, frag_s()))
    })
}

/// A later fragment of anything.
fn later_case_s() -> impl Strategy<Value = Case> {
    fam_s().prop_flat_map(|fam| case_with(fam, pkt_with(fam, l4_s(fam, true), later_s())))
}

// ---------------------------------------------------------------------------------------------
// Properties

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Property 1 (translate): every checksum recomputed from scratch matches; nothing else but
/// the addresses changed; the UDP rules hold.
fn check_translate(case: &Case) -> Result<(), TestCaseError> {
    let before = case.build(Side::Before);
    let expected = case.build(Side::After);
    verify(&before.bytes, &before)
        .map_err(|e| fail(format!("generator: {e}"), &before.bytes, &[], case))?;
    verify(&expected.bytes, &expected)
        .map_err(|e| fail(format!("generator: {e}"), &expected.bytes, &[], case))?;
    let ip = parse::parse(&before.bytes)
        .map_err(|e| fail(format!("does not parse: {e:?}"), &before.bytes, &[], case))?;
    let (from, to) = case.translation();
    let mut out = before.bytes.clone();
    let t = rewrite::translate(&mut out, &ip, case.dir, &from, &to);
    let flags_ok = t.outer && t.quoted == case.quotes() && t.udp6_zero_checksum == case.udp6_zero();
    if !flags_ok {
        return Err(fail(
            format!("translate returned {t:?}"),
            &before.bytes,
            &out,
            case,
        ));
    }
    compare(&before.bytes, &out, &expected.bytes, &before)
        .map_err(|e| fail(e, &before.bytes, &out, case))
}

/// Property 1 (keeper): the same through `Keeper::outbound` / `inbound`, which also clamps the
/// MSS; and the counters.
fn check_keeper(case: &Case, mtu: u16) -> Result<(), TestCaseError> {
    let fam = case.pkt.fam;
    let before = case.build(Side::Before);
    let stable = StableAddresses {
        v4: Some(STABLE_V4),
        v6: Some(STABLE_V6),
    };
    let mut config = KeeperConfig::new(stable, mtu);
    if !case.identity {
        config.local = StableAddresses {
            v4: Some(LOCAL_V4),
            v6: Some(LOCAL_V6),
        };
    }
    let mut keeper = Keeper::new(config);
    let max = keeper.max_mss(match fam {
        Fam::V4 => parse::Family::V4,
        Fam::V6 => parse::Family::V6,
    });
    let mut clamped = case.clone();
    let clamps = clamped.clamp(max);
    let expected = clamped.build(Side::After);
    let mut out = before.bytes.clone();
    let r = match case.dir {
        Direction::Outbound => keeper.outbound(now(), &mut out, 3),
        Direction::Inbound => keeper.inbound(now(), &mut out),
    };
    if r != Ok(case.len()) {
        return Err(fail(
            format!("keeper returned {r:?}"),
            &before.bytes,
            &out,
            case,
        ));
    }
    compare(&before.bytes, &out, &expected.bytes, &before)
        .map_err(|e| fail(e, &before.bytes, &out, case))?;
    let s = keeper.stats();
    let translated = !case.identity;
    let want = (
        u64::from(clamps),
        u64::from(translated && case.quotes()),
        u64::from(translated && case.udp6_zero()),
    );
    let got = (s.mss_clamped, s.quoted_rewritten, s.udp6_zero_checksum);
    if got != want || drops(&s) != drops(&KeeperStats::default()) {
        return Err(fail(
            format!("counters (clamped, quoted, udp6 zero) {got:?}, expected {want:?}; {s:?}"),
            &before.bytes,
            &out,
            case,
        ));
    }
    Ok(())
}

/// Property 3: there and back is the identity (see `compare_round_trip` for −0).
fn check_round_trip(case: &Case) -> Result<(), TestCaseError> {
    let before = case.build(Side::Before);
    let ip = parse::parse(&before.bytes)
        .map_err(|e| fail(format!("does not parse: {e:?}"), &before.bytes, &[], case))?;
    let (from, to) = case.translation();
    let mut out = before.bytes.clone();
    let there = rewrite::translate(&mut out, &ip, case.dir, &from, &to);
    let back = rewrite::translate(&mut out, &ip, case.dir, &to, &from);
    if !there.outer || there != back {
        return Err(fail(
            format!("{there:?} then {back:?}"),
            &before.bytes,
            &out,
            case,
        ));
    }
    compare_round_trip(&before.bytes, &out, &before).map_err(|e| fail(e, &before.bytes, &out, case))
}

fn drops(s: &KeeperStats) -> ([u64; 9], u64, u64) {
    (s.malformed, s.source_not_local, s.not_for_us)
}

/// Property 5: one packet through the keeper: no panic; a refusal leaves the packet as it was
/// and counts exactly its reason; an acceptance counts no refusal and writes nothing past the
/// packet.
fn check_any_bytes(keeper: &mut Keeper, bytes: &[u8], outbound: bool) -> Result<(), TestCaseError> {
    let before = keeper.stats();
    let mut p = bytes.to_vec();
    let r = if outbound {
        keeper.outbound(now(), &mut p, 0)
    } else {
        keeper.inbound(now(), &mut p)
    };
    let after = keeper.stats();
    let mut want = drops(&before);
    let parsed = parse::parse(bytes);
    match r {
        Ok(len) => {
            prop_assert_eq!(parsed.map(|ip| ip.len), Ok(len));
            prop_assert_eq!(
                &p[len..],
                &bytes[len..],
                "wrote past the packet: {}",
                hex(bytes)
            );
        }
        Err(d) => {
            prop_assert_eq!(&p, &bytes, "a refused packet changed");
            match d {
                KeeperDrop::Malformed(m) => {
                    prop_assert_eq!(parsed, Err(m));
                    let i = Malformed::ALL.iter().position(|x| *x == m).unwrap();
                    want.0[i] += 1;
                }
                KeeperDrop::SourceNotLocal => {
                    prop_assert!(outbound);
                    want.1 += 1;
                }
                KeeperDrop::NotForUs => {
                    prop_assert!(!outbound);
                    want.2 += 1;
                }
            }
        }
    }
    prop_assert_eq!(drops(&after), want, "{:?} for {}", r, hex(bytes));
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(Index, u8),
    Flip(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    /// rewrite a 16-bit field (lengths, offsets) with a random value
    Word(Index, u16),
}

fn mutation_s() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, 1 << b)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..8).prop_map(Mutation::Extend),
        2 => (any::<Index>(), any::<u16>()).prop_map(|(i, v)| Mutation::Word(i, v)),
    ]
}

fn mutate(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        match m {
            Mutation::Set(i, v) if !b.is_empty() => {
                let i = i.index(b.len());
                b[i] = *v;
            }
            Mutation::Flip(i, v) if !b.is_empty() => {
                let i = i.index(b.len());
                b[i] ^= *v;
            }
            Mutation::Truncate(i) => b.truncate(i.index(b.len() + 1)),
            Mutation::Extend(x) => b.extend_from_slice(x),
            Mutation::Word(i, v) if b.len() >= 2 => {
                let i = i.index(b.len() - 1);
                b[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
    b
}

/// Any bytes: random, or a valid packet with mutations.
fn junk_s() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..120),
        1 => (prop_oneof![Just(0x45u8), Just(0x60u8), any::<u8>()], vec(any::<u8>(), 0..100))
            .prop_map(|(v, rest)| [vec![v], rest].concat()),
        4 => (case_s(), vec(mutation_s(), 1..4)).prop_map(|(c, ms)| mutate(c.build(Side::Before).bytes, &ms)),
    ]
}

fn keeper_for(identity: u8, mtu: u16) -> Keeper {
    let cfg = fuzzing::keeper_config(identity & 3, 0);
    Keeper::new(KeeperConfig { mtu, ..cfg })
}

proptest! {
    #![proptest_config(config(150_000))]

    /// Property 1 through `rewrite::translate`: any packet, either way.
    #[test]
    fn translate_keeps_every_checksum(case in case_s()) {
        check_translate(&case)?;
    }
}

proptest! {
    #![proptest_config(config(60_000))]

    /// Property 1 for ICMP errors: complete, truncated to 8 bytes of transport, cut anywhere.
    #[test]
    fn translate_keeps_icmp_error_checksums(case in error_case_s()) {
        check_translate(&case)?;
    }

    /// Property 1 for UDP: no checksum stays none; a checksum computing to 0 before or after.
    #[test]
    fn translate_keeps_udp_zero_rules(case in udp_case_s()) {
        check_translate(&case)?;
        check_round_trip(&case)?;
    }
}

proptest! {
    #![proptest_config(config(60_000))]

    /// Property 1 through the keeper (which clamps the MSS too), translating or not.
    #[test]
    fn keeper_keeps_every_checksum(case in case_s(), identity in prop::bool::weighted(0.2), mtu in 1280u16..=1500) {
        let case = Case { identity, ..case };
        check_keeper(&case, mtu)?;
    }
}

proptest! {
    #![proptest_config(config(40_000))]

    /// Property 2: a later fragment's payload is left alone; only the IP header changes.
    #[test]
    fn later_fragments_change_only_the_ip_header(case in later_case_s()) {
        check_translate(&case)?;
        let before = case.build(Side::Before).bytes;
        let ip = parse::parse(&before).unwrap();
        prop_assert_eq!(ip.fragment, parse::Fragment::Later);
        let (from, to) = case.translation();
        let mut out = before.clone();
        rewrite::translate(&mut out, &ip, case.dir, &from, &to);
        let hdr = case.pkt.header_len();
        prop_assert_eq!(&out[hdr..], &before[hdr..]);
        let (addr, check) = match case.pkt.fam {
            Fam::V4 => (if case.dir == Direction::Outbound { 12..16 } else { 16..20 }, 10..12),
            Fam::V6 => (if case.dir == Direction::Outbound { 8..24 } else { 24..40 }, 0..0),
        };
        for i in 0..hdr {
            prop_assert!(out[i] == before[i] || addr.contains(&i) || check.contains(&i), "byte {}", i);
        }
    }
}

proptest! {
    #![proptest_config(config(80_000))]

    /// Property 3: local → stable then stable → local (the same field back) is the identity.
    #[test]
    fn translate_there_and_back_is_identity(case in case_s()) {
        check_round_trip(&case)?;
    }
}

/// A TCP packet for MSS clamping: SYN or not, MSS option or not, whole or first fragment.
fn clamp_case_s() -> impl Strategy<Value = Case> {
    fam_s().prop_flat_map(|fam| {
        let tcp = tcp_s(prop::bool::weighted(0.8), prop::option::weighted(0.9, mss_s())).prop_map(L4::Tcp);
        let frag = prop_oneof![4 => Just(Frag::Whole), 1 => (0usize..3).prop_map(Frag::First), 1 => later_s()];
        (case_with(fam, pkt_with(fam, tcp, frag))).prop_map(|c| Case { identity: true, ..c })
    })
}

proptest! {
    #![proptest_config(config(60_000))]

    /// Property 4: a SYN's MSS above the clamp becomes the clamp with a valid checksum; at or
    /// below it, or without SYN, the packet is untouched.
    #[test]
    fn clamp_mss_lowers_only_what_it_must(case in clamp_case_s(), max in prop_oneof![any::<u16>(), 536u16..1460]) {
        let before = case.build(Side::Before);
        let ip = parse::parse(&before.bytes).unwrap();
        let mut out = before.bytes.clone();
        let found = rewrite::clamp_mss(&mut out, &ip, max);
        let L4::Tcp(t) = &case.pkt.l4 else { unreachable!() };
        let syn = t.flags & flags::SYN != 0 && !case.pkt.later();
        let mss = t.mss_at.map(|at| u16::from_be_bytes([t.options[at + 2], t.options[at + 3]]));
        prop_assert_eq!(found, if syn { mss } else { None });
        let mut clamped = case.clone();
        if clamped.clamp(max) {
            let expected = clamped.build(Side::Before);
            compare(&before.bytes, &out, &expected.bytes, &before).map_err(|e| fail(e, &before.bytes, &out, &case))?;
            let at = ip.l4 + 20 + t.mss_at.unwrap() + 2;
            prop_assert_eq!(&out[at..at + 2], &max.to_be_bytes());
        } else {
            prop_assert_eq!(&out, &before.bytes);
        }
    }
}

proptest! {
    #![proptest_config(config(40_000))]

    /// Property 5: any bytes, either way, through a keeper translating or not.
    #[test]
    fn keeper_counts_every_refusal(
        packets in vec((junk_s(), any::<bool>()), 1..4),
        identity in 0u8..4,
        mtu in 1280u16..=1500,
    ) {
        let mut keeper = keeper_for(identity, mtu);
        for (p, outbound) in &packets {
            check_any_bytes(&mut keeper, p, *outbound)?;
        }
        keeper.on_switch(now() + Duration::from_millis(50), 0);
        let mut out = Vec::new();
        while keeper.poll_recovery(&mut out) {
            prop_assert!(parse::parse(&out).is_ok(), "recovery packet {}", hex(&out));
        }
    }

    /// Property 5, with the steering a valid packet has: mutated packets that still carry the
    /// addresses; and the fuzz target's body (with its oracle) on them.
    #[test]
    fn corrupted_packets_are_refused_or_kept_valid(
        case in case_s(),
        ms in vec(mutation_s(), 0..3),
        cfg in any::<u8>(),
        mtu in any::<u8>(),
    ) {
        let outbound = case.dir == Direction::Outbound;
        let bytes = mutate(case.build(Side::Before).bytes, &ms);
        let mut keeper = Keeper::new(fuzzing::keeper_config(cfg, mtu));
        check_any_bytes(&mut keeper, &bytes, outbound)?;
        #[allow(clippy::disallowed_methods)] // the base of the run's virtual clock
        let now = std::time::Instant::now();
        fuzzing::fuzz_one(&[&[cfg, mtu][..], &bytes[..]].concat(), now);
    }
}

/// A TCP flow's segments: (outbound, payload length, pure ACK's acknowledgement back in
/// 8-byte steps) — outbound data or pure ACKs, inbound ACKs of some of what was sent.
type Flow = (Fam, Vec<u8>, Vec<(bool, usize, u32)>, Tcp, Vec<u8>);

fn flow_s() -> impl Strategy<Value = Flow> {
    fam_s().prop_flat_map(|fam| {
        (
            Just(fam),
            addr_s(fam),
            vec(
                (
                    any::<bool>(),
                    prop_oneof![Just(0usize), 1usize..200],
                    0u32..40,
                ),
                1..12,
            ),
            tcp_s(Just(false), Just(None)),
            vec(any::<u8>(), 200),
        )
    })
}

proptest! {
    #![proptest_config(config(10_000))]

    /// Switch-over recovery resends the newest unacknowledged data segment as translated and
    /// a pure ACK made from the newest segment's headers, both with valid checksums.
    #[test]
    fn recovery_resends_valid_packets((fam, remote, steps, tcp, data) in flow_s()) {
        let stable_addrs = StableAddresses { v4: Some(STABLE_V4), v6: Some(STABLE_V6) };
        let mut config = KeeperConfig::new(stable_addrs, 1400);
        config.local = StableAddresses { v4: Some(LOCAL_V4), v6: Some(LOCAL_V6) };
        let mut keeper = Keeper::new(config);
        let t0 = now();
        let (iss, irs) = (tcp.seq, tcp.ack);
        let (mut snd, mut rcv_acked) = (iss, iss);
        let mut unacked: Option<(u32, Vec<u8>)> = None;
        let mut last_out: Option<Case> = None;
        for (i, &(out, len, back)) in steps.iter().enumerate() {
            let at = t0 + Duration::from_millis(u64::try_from(i).unwrap());
            let mut seg = Tcp { flags: flags::ACK | (tcp.flags & flags::PSH), mss_at: None, options: tcp.options.clone(), zero: NO_ZERO, ..tcp.clone() };
            let dir = if out { Direction::Outbound } else { Direction::Inbound };
            if out {
                seg.seq = snd;
                seg.ack = irs;
                seg.payload = data[..len].to_vec();
            } else {
                // the far end acknowledges up to somewhere between what it had and snd
                let ack = snd.wrapping_sub(back.min(snd.wrapping_sub(rcv_acked)));
                rcv_acked = ack;
                seg = Tcp { sport: tcp.dport, dport: tcp.sport, seq: irs, ack, payload: Vec::new(), ..seg };
            }
            let case = Case {
                dir,
                pkt: Pkt { fam, tos: 0, ident: 7, flow: 0, ttl: 64, df: true, options: Vec::new(), ext: Vec::new(), frag: Frag::Whole, zero: NO_ZERO, l4: L4::Tcp(seg) },
                remote: remote.clone(),
                remote2: remote.clone(),
                pad: Vec::new(),
                identity: false,
            };
            let mut p = case.build(Side::Before).bytes;
            let r = if out { keeper.outbound(at, &mut p, 0) } else { keeper.inbound(at, &mut p) };
            prop_assert_eq!(r, Ok(p.len()));
            if out {
                prop_assert_eq!(&p, &case.build(Side::After).bytes);
                if len > 0 {
                    unacked = Some((snd.wrapping_add(u32::try_from(len).unwrap()), p.clone()));
                }
                snd = snd.wrapping_add(u32::try_from(len).unwrap());
                last_out = Some(case);
            } else if unacked.as_ref().is_some_and(|(end, _)| rcv_acked.wrapping_sub(*end) as i32 >= 0) {
                unacked = None;
            }
        }
        let queued = keeper.on_switch(t0 + Duration::from_millis(200), 0);
        prop_assert_eq!(queued, usize::from(last_out.is_some()));
        let mut got = Vec::new();
        let mut out = Vec::new();
        while keeper.poll_recovery(&mut out) {
            got.push(out.clone());
        }
        let mut want = Vec::new();
        if let Some(last) = &last_out {
            if let Some((_, p)) = &unacked {
                want.push(p.clone());
            }
            let mut ack = last.clone();
            if let L4::Tcp(t) = &mut ack.pkt.l4 {
                t.seq = t.seq.wrapping_add(u32::try_from(t.payload.len()).unwrap());
                t.payload.clear();
            }
            want.push(ack.build(Side::After).bytes);
        }
        prop_assert_eq!(got.iter().map(|p| hex(p)).collect::<Vec<_>>(), want.iter().map(|p| hex(p)).collect::<Vec<_>>());
    }
}

/// A UDP datagram shorter than its own header: a UDP length of 6 (unfragmented) or a first
/// fragment carrying 7 bytes of UDP. Refusing it is right; translating it may not touch the
/// bytes after the packet (its "checksum" field would lie there).
#[test]
fn udp_shorter_than_its_header_is_refused_or_left_alone() {
    let cases = [
        // 10.200.0.2 → 198.51.100.7: IPv4 header, UDP (length 6), two bytes of link padding
        "4500001a000000004011e0ea0ac80002c6336407 138800350006 abcd",
        // a first fragment (MF, offset 0) with 7 bytes of UDP (length 48), then padding
        "4500001b123460004011d3900ac80002c6336407 14e90035003028 df0707",
    ];
    let mut wrong = Vec::new();
    for hex_packet in cases {
        let hex_packet: String = hex_packet.split_whitespace().collect();
        let packet: Vec<u8> = (0..hex_packet.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex_packet[i..i + 2], 16).unwrap())
            .collect();
        let mut keeper = keeper_for(0, 1400);
        let mut out = packet.clone();
        match keeper.outbound(now(), &mut out, 0) {
            Err(KeeperDrop::Malformed(_)) => assert_eq!(out, packet),
            Ok(len) if out[len..] != packet[len..] => wrong.push(format!(
                "{hex_packet}: the bytes after the packet became {}",
                hex(&out[len..])
            )),
            Ok(_) => {}
            Err(d) => panic!("{d:?}"),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Not a test: rewrites `fuzz/corpus/rewrite/` (`cargo test -p sessionkeeper --test
/// prop_rewrite -- --ignored write_fuzz_corpus`).
#[test]
#[ignore = "writes the fuzz corpus"]
fn write_fuzz_corpus() {
    seeds::write();
}

mod seeds {
    use super::*;
    use sessionkeeper::fuzzing::config::{IDENTITY_V4, IDENTITY_V6, REPAIR, STEER};

    fn ip(fam: Fam, l4: L4) -> Pkt {
        Pkt {
            fam,
            tos: 0,
            ident: 0x1234,
            flow: 0x12345,
            ttl: 64,
            df: true,
            options: Vec::new(),
            ext: Vec::new(),
            frag: Frag::Whole,
            zero: NO_ZERO,
            l4,
        }
    }

    fn tcp(fl: u8, options: Vec<u8>, mss_at: Option<usize>, payload: &[u8]) -> L4 {
        L4::Tcp(Tcp {
            sport: 40000,
            dport: 443,
            seq: 0x0102_0304,
            ack: 0x0a0b_0c0d,
            flags: fl,
            ns: false,
            window: 64240,
            urg: 0,
            options,
            mss_at,
            payload: payload.to_vec(),
            zero: NO_ZERO,
        })
    }

    fn syn() -> L4 {
        // NOP, MSS 1460 at an odd offset, NOP, window scale, SACK permitted, EOL
        tcp(
            flags::SYN | 0xc0,
            vec![1, 2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 0],
            Some(1),
            &[],
        )
    }

    fn udp(payload: &[u8], no_checksum: bool, zero: Option<Side>) -> L4 {
        L4::Udp(Udp {
            sport: 5353,
            dport: 53,
            payload: payload.to_vec(),
            no_checksum,
            zero: Zero {
                side: zero,
                neg: false,
            },
        })
    }

    fn echo() -> L4 {
        L4::Echo(Echo {
            reply: false,
            id: 0x4242,
            seq: 1,
            payload: b"abcdefgh".to_vec(),
            zero: NO_ZERO,
        })
    }

    fn error(fam: Fam, typ: u8, code: u8, rest: u32, quoted: L4, cut: Cut) -> L4 {
        L4::Error(Box::new(IcmpError {
            typ,
            code,
            rest,
            quoted: ip(fam, quoted),
            cut,
        }))
    }

    fn case(dir: Direction, pkt: Pkt) -> Case {
        let (remote, remote2) = match pkt.fam {
            Fam::V4 => (vec![198, 51, 100, 7], vec![203, 0, 113, 9]),
            Fam::V6 => (
                "2001:db8::7"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
                    .to_vec(),
                "2001:db8::9"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
                    .to_vec(),
            ),
        };
        Case {
            dir,
            pkt,
            remote,
            remote2,
            pad: Vec::new(),
            identity: false,
        }
    }

    fn bytes(dir: Direction, pkt: Pkt) -> Vec<u8> {
        case(dir, pkt).build(Side::Before).bytes
    }

    pub fn write() {
        use Direction::{Inbound as In, Outbound as Out};
        use Fam::{V4, V6};
        let data = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
        let mut seeds: Vec<(&str, u8, u8, Vec<u8>)> = Vec::new();
        let mut add = |name, cfg, mtu, b| seeds.push((name, cfg, mtu, b));

        add("v4-tcp-syn-mss-odd", 0, 220, bytes(Out, ip(V4, syn())));
        add("v4-tcp-synack-in", 0, 0, bytes(In, ip(V4, syn())));
        add(
            "v4-tcp-data-ecn",
            0,
            100,
            bytes(
                Out,
                Pkt {
                    tos: 0x03,
                    ..ip(V4, tcp(0x18 | 0x40, vec![], None, data))
                },
            ),
        );
        let mut opts = ip(
            V4,
            tcp(0x10, vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], None, data),
        );
        opts.options = vec![0x94, 0x04, 0, 0];
        add("v4-ipopts-tcp-ack", 0, 50, bytes(In, opts));
        add(
            "v4-udp",
            0,
            0,
            bytes(Out, ip(V4, udp(b"dns query", false, None))),
        );
        add(
            "v4-udp-no-checksum",
            0,
            0,
            bytes(In, ip(V4, udp(b"no sum", true, None))),
        );
        add(
            "v4-udp-zero-after",
            0,
            0,
            bytes(
                Out,
                ip(V4, udp(b"\0\0sum becomes 0", false, Some(Side::After))),
            ),
        );
        add("v4-icmp-echo", 0, 0, bytes(Out, ip(V4, echo())));
        add(
            "v4-unreach-quote-tcp",
            0,
            0,
            bytes(
                Out,
                ip(
                    V4,
                    error(V4, 3, 3, 0, tcp(0x18, vec![], None, data), Cut::Whole),
                ),
            ),
        );
        add(
            "v4-fragneeded-quote-tcp-8",
            0,
            0,
            bytes(
                In,
                ip(
                    V4,
                    error(V4, 3, 4, 1400, tcp(0x18, vec![], None, data), Cut::L4(8)),
                ),
            ),
        );
        add(
            "v4-ttl-quote-udp",
            0,
            0,
            bytes(
                In,
                ip(
                    V4,
                    error(V4, 11, 0, 0, udp(b"traceroute", false, None), Cut::Whole),
                ),
            ),
        );
        add(
            "v4-unreach-quote-echo-cut",
            0,
            0,
            bytes(In, ip(V4, error(V4, 3, 1, 0, echo(), Cut::L4(5)))),
        );
        add(
            "v4-frag-first-udp",
            0,
            0,
            bytes(
                Out,
                Pkt {
                    frag: Frag::First(1),
                    ..ip(V4, udp(&[7; 40], false, None))
                },
            ),
        );
        add(
            "v4-frag-later",
            0,
            0,
            bytes(
                In,
                Pkt {
                    frag: Frag::Later {
                        blocks: 2,
                        more: false,
                    },
                    ..ip(V4, udp(&[7; 40], false, None))
                },
            ),
        );
        add(
            "v4-identity-syn",
            IDENTITY_V4 | STEER,
            220,
            bytes(Out, ip(V4, syn())),
        );
        add("v6-tcp-syn-mss-odd", 0, 220, bytes(Out, ip(V6, syn())));
        add(
            "v6-tcp-data",
            0,
            10,
            bytes(
                In,
                Pkt {
                    tos: 0x02,
                    ..ip(V6, tcp(0x18, vec![], None, data))
                },
            ),
        );
        add(
            "v6-udp",
            0,
            0,
            bytes(Out, ip(V6, udp(b"quic", false, None))),
        );
        add(
            "v6-udp-zero-checksum",
            0,
            0,
            bytes(In, ip(V6, udp(b"no sum", true, None))),
        );
        add(
            "v6-udp-zero-after",
            0,
            0,
            bytes(
                Out,
                ip(V6, udp(b"\0\0sum becomes 0", false, Some(Side::After))),
            ),
        );
        add("v6-icmpv6-echo", 0, 0, bytes(Out, ip(V6, echo())));
        add(
            "v6-ptb-quote-tcp",
            0,
            0,
            bytes(
                In,
                ip(
                    V6,
                    error(V6, 2, 0, 1280, tcp(0x18, vec![], None, data), Cut::Whole),
                ),
            ),
        );
        add(
            "v6-unreach-quote-udp-8",
            0,
            0,
            bytes(
                Out,
                ip(
                    V6,
                    error(V6, 1, 4, 0, udp(b"probe", false, None), Cut::L4(8)),
                ),
            ),
        );
        add(
            "v6-ttl-quote-echo-cut",
            0,
            0,
            bytes(In, ip(V6, error(V6, 3, 0, 0, echo(), Cut::L4(3)))),
        );
        add(
            "v6-frag-first-tcp",
            0,
            0,
            bytes(
                Out,
                Pkt {
                    frag: Frag::First(0),
                    ..ip(V6, tcp(0x18, vec![], None, data))
                },
            ),
        );
        add(
            "v6-frag-later",
            0,
            0,
            bytes(
                In,
                Pkt {
                    frag: Frag::Later {
                        blocks: 1,
                        more: true,
                    },
                    ..ip(V6, tcp(0x18, vec![], None, data))
                },
            ),
        );
        add(
            "v6-hbh-dstopts-syn",
            0,
            0,
            bytes(
                Out,
                Pkt {
                    ext: vec![(0, 1), (60, 2)],
                    ..ip(V6, syn())
                },
            ),
        );
        add(
            "v6-identity-udp",
            IDENTITY_V6 | STEER,
            0,
            bytes(In, ip(V6, udp(b"x", false, None))),
        );
        // broken ones, repaired and steered so that they get as far as they can
        let good = bytes(Out, ip(V4, tcp(0x18, vec![], None, data)));
        add("bad-empty", 0, 0, Vec::new());
        add("bad-not-ip", 0, 0, vec![0x50; 24]);
        add("bad-v4-truncated", STEER, 0, good[..15].to_vec());
        add("bad-v4-length", REPAIR, 0, good[..good.len() - 3].to_vec());
        let mut ihl = good.clone();
        ihl[0] = 0x44;
        add("bad-v4-ihl", 0, 0, ihl);
        let mut doff = good.clone();
        doff[32] = 0x20;
        add("bad-tcp-offset", STEER | REPAIR, 0, doff);
        let mut options = bytes(Out, ip(V4, syn()));
        options[42] = 40; // the MSS option's length: past the header
        add("bad-tcp-options", STEER | REPAIR, 0, options);
        let mut udp_len = bytes(Out, ip(V4, udp(b"dns query", false, None)));
        udp_len[25] = 6;
        add("bad-udp-length", STEER | REPAIR, 0, udp_len);
        let mut ext = bytes(
            Out,
            Pkt {
                ext: vec![(0, 1)],
                ..ip(V6, udp(b"x", false, None))
            },
        );
        ext[41] = 9;
        add("bad-v6-extension", STEER | REPAIR, 0, ext);
        let quote = bytes(
            In,
            ip(V4, error(V4, 3, 3, 0, udp(b"x", false, None), Cut::Whole)),
        );
        let mut quote = quote[..20 + 8 + 15].to_vec();
        quote[2..4].copy_from_slice(&43u16.to_be_bytes());
        add("bad-icmp-quote-cut-in-header", STEER | REPAIR, 0, quote);
        add(
            "bad-icmp-short",
            STEER | REPAIR,
            0,
            bytes(In, ip(V4, L4::Other(ICMP, vec![3, 0, 0]))),
        );

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/rewrite");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, cfg, mtu, b) in seeds {
            std::fs::write(dir.join(name), [&[cfg, mtu][..], &b[..]].concat()).unwrap();
        }
    }
}
