//! The session keeper: every packet between the local side and the tunnels goes through it.
//!
//! Outbound it validates the packet, maps the local source to the stable address, clamps a
//! SYN's MSS, and tracks the flow; inbound the same in reverse. At a switch it recovers the
//! live TCP flows (see [`Keeper::on_switch`]).
//!
//! # Switch-over recovery
//!
//! Packets lost while a failure was being detected leave both TCP ends waiting for their
//! retransmission timers (200 ms minimum on Linux, then doubling). At a switch, for every TCP
//! flow that was active on the old tunnel within [`RECENT`], the keeper sends through the new
//! tunnel:
//! 1. the newest data segment the local side sent, if the far end has not acknowledged it. The
//!    far end either acknowledges it (its ACKs had been lost), or sees a hole before it and
//!    answers with a SACK, which makes the local sender retransmit the hole at once (fast
//!    recovery / RACK) instead of on its RTO.
//! 2. a pure ACK carrying the newest acknowledgement the local side sent. The far end's ACKs
//!    before the failure were lost with the tunnel, so its send window is stuck behind data the
//!    local side already has; this ACK frees it, the far end sends new data, which arrives
//!    after the hole and draws a SACK from the local receiver: again a fast retransmission
//!    instead of an RTO.
//!
//! Both are verbatim copies of what the local side sent (the ACK is the newest segment's
//! headers with the payload cut off), so ECN bits and every TCP option pass untouched; it is at
//! most two packets per flow per switch, at most [`MAX_RECOVERY_FLOWS`] flows, and the data
//! segment buffers share a byte budget.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use wire::{checksum, field};

use crate::flows::{FlowKey, FlowStats, FlowTable, TcpState, Timeouts};
use crate::parse::{self, Family, Ip, Malformed, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::rewrite::{self, flags, Direction};
use crate::StableAddresses;

/// Flows that carried a packet this recently on the old tunnel are recovered at a switch.
pub const RECENT: Duration = Duration::from_secs(1);
/// At most this many flows are recovered per switch (the most recently used).
pub const MAX_RECOVERY_FLOWS: usize = 1024;
/// Stored headers beyond this length (IPv6 extension chains) are not kept for recovery.
const MAX_HEADERS: usize = 200;

/// Configuration.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// the client's stable addresses: the only sources that enter a tunnel
    pub stable: StableAddresses,
    /// the addresses the local side uses; a family left `None` uses the stable address itself
    /// (the identity: a laptop whose TUN carries the stable address)
    pub local: StableAddresses,
    /// the smallest MTU among all tunnels: SYN MSS is clamped to fit it
    pub mtu: u16,
    /// flow table cap
    pub max_flows: usize,
    /// idle timeouts
    pub timeouts: Timeouts,
    /// whether switch-over recovery runs
    pub recovery: bool,
    /// bytes the per-flow data segment copies may hold together
    pub recovery_budget: usize,
}

impl KeeperConfig {
    /// Defaults for everything but the addresses and the MTU.
    pub fn new(stable: StableAddresses, mtu: u16) -> Self {
        Self {
            stable,
            local: StableAddresses::default(),
            mtu,
            max_flows: 65_536,
            timeouts: Timeouts::default(),
            recovery: true,
            recovery_budget: 4 << 20,
        }
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeeperDrop {
    /// it did not parse
    Malformed(Malformed),
    /// outbound, its source is not the local address of its family
    SourceNotLocal,
    /// inbound, its destination is not a stable address
    NotForUs,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeeperStats {
    /// drops by parse error, in [`Malformed::ALL`] order
    pub malformed: [u64; 9],
    /// outbound drops: source not local
    pub source_not_local: u64,
    /// inbound drops: not for a stable address
    pub not_for_us: u64,
    /// SYNs whose MSS was lowered
    pub mss_clamped: u64,
    /// ICMP errors whose quoted packet was rewritten
    pub quoted_rewritten: u64,
    /// IPv6 UDP datagrams without checksum passed on as they were
    pub udp6_zero_checksum: u64,
    /// switches that triggered recovery
    pub recoveries: u64,
    /// data segments resent at switches
    pub recovery_segments: u64,
    /// ACKs resent at switches
    pub recovery_acks: u64,
    /// data segments not kept because the budget was spent
    pub recovery_over_budget: u64,
    /// flow table counters
    pub flows: FlowStats,
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Segment,
    Ack,
}

/// The session keeper. See the module docs.
#[derive(Debug)]
pub struct Keeper {
    config: KeeperConfig,
    flows: FlowTable,
    stats: KeeperStats,
    /// flows to recover, and what to send next for each
    recovery_queue: VecDeque<(FlowKey, Stage)>,
}

/// Sequence-space comparison: `a` is after `b`.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn max_seq(cur: Option<u32>, v: u32) -> Option<u32> {
    Some(match cur {
        Some(c) if !after(v, c) => c,
        _ => v,
    })
}

/// The TCP header fields tracking needs.
#[derive(Debug, Clone, Copy)]
struct Segment {
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
    header_end: usize,
    payload: u32,
}

impl Segment {
    fn read(p: &[u8], ip: &Ip) -> Self {
        let l4 = ip.l4;
        let header_end = l4 + usize::from(p.get(l4 + 12).copied().unwrap_or(0) >> 4) * 4;
        Self {
            flags: p.get(l4 + 13).copied().unwrap_or(0),
            seq: field::be32(p, l4 + 4).unwrap_or(0),
            ack: field::be32(p, l4 + 8).unwrap_or(0),
            window: field::be16(p, l4 + 14).unwrap_or(0),
            header_end,
            payload: u32::try_from(ip.len.saturating_sub(header_end)).unwrap_or(0),
        }
    }

    /// Sequence space consumed: payload plus SYN and FIN.
    fn end(&self) -> u32 {
        let syn = u32::from(self.flags & flags::SYN != 0);
        let fin = u32::from(self.flags & flags::FIN != 0);
        self.seq
            .wrapping_add(self.payload)
            .wrapping_add(syn)
            .wrapping_add(fin)
    }
}

impl Keeper {
    /// A keeper with an empty flow table.
    pub fn new(config: KeeperConfig) -> Self {
        Self {
            flows: FlowTable::new(config.max_flows, config.timeouts),
            config,
            stats: KeeperStats::default(),
            recovery_queue: VecDeque::new(),
        }
    }

    /// Changes the local addresses (a guest that took a new address). Tracked flows stay: they
    /// are keyed by the stable address, which does not change.
    pub fn set_local(&mut self, local: StableAddresses) {
        self.config.local = local;
    }

    /// The local addresses (a family left `None` uses the stable address).
    pub fn local(&self) -> StableAddresses {
        self.config.local
    }

    /// The stable addresses.
    pub fn stable(&self) -> StableAddresses {
        self.config.stable
    }

    /// Applies a reloaded configuration: local addresses, MTU, recovery and its budget. The
    /// stable addresses and the flow table's cap and timeouts stay as they were (the table is
    /// not rebuilt under live flows).
    pub fn reconfigure(&mut self, config: &KeeperConfig) {
        self.config.local = config.local;
        self.config.mtu = config.mtu;
        self.config.recovery = config.recovery;
        self.config.recovery_budget = config.recovery_budget;
    }

    /// The smallest tunnel MTU, which SYNs are clamped to fit.
    pub fn mtu(&self) -> u16 {
        self.config.mtu
    }

    /// The flow table.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Counters.
    pub fn stats(&self) -> KeeperStats {
        KeeperStats {
            flows: self.flows.stats(),
            ..self.stats
        }
    }

    /// The MSS that fits the smallest tunnel MTU, for a family.
    pub fn max_mss(&self, family: Family) -> u16 {
        let headers = match family {
            Family::V4 => 40,
            Family::V6 => 60,
        };
        self.config.mtu.saturating_sub(headers).max(536)
    }

    fn refuse(&mut self, d: KeeperDrop) -> KeeperDrop {
        match d {
            KeeperDrop::Malformed(m) => {
                if let Some(i) = Malformed::ALL.iter().position(|x| *x == m) {
                    if let Some(c) = self.stats.malformed.get_mut(i) {
                        *c += 1;
                    }
                }
            }
            KeeperDrop::SourceNotLocal => self.stats.source_not_local += 1,
            KeeperDrop::NotForUs => self.stats.not_for_us += 1,
        }
        d
    }

    fn addresses(&self, family: Family) -> Option<(IpAddr, IpAddr)> {
        let (stable, local) = match family {
            Family::V4 => (
                IpAddr::V4(self.config.stable.v4?),
                self.config.local.v4.map(IpAddr::V4),
            ),
            Family::V6 => (
                IpAddr::V6(self.config.stable.v6?),
                self.config.local.v6.map(IpAddr::V6),
            ),
        };
        Some((local.unwrap_or(stable), stable))
    }

    /// A packet from the local side, about to enter tunnel `tunnel`: validated, rewritten in
    /// place, tracked. Returns the packet's length (link padding after it is not sent).
    pub fn outbound(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        tunnel: usize,
    ) -> Result<usize, KeeperDrop> {
        self.outbound_segment(now, packet, tunnel, false)
    }

    /// [`Keeper::outbound`] for one segment of a TCP super-packet the TUN split: `followed`
    /// says another segment of the same super-packet (the same flow, newer data) comes next,
    /// so this one's payload is not copied for switch-over recovery; only the last segment's
    /// is. Its headers are still taken (they are what a pure ACK is made from).
    pub fn outbound_segment(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        tunnel: usize,
        followed: bool,
    ) -> Result<usize, KeeperDrop> {
        let ip = parse::parse(packet).map_err(|m| self.refuse(KeeperDrop::Malformed(m)))?;
        let Some((local, stable)) = self.addresses(ip.family) else {
            return Err(self.refuse(KeeperDrop::SourceNotLocal));
        };
        if ip.src(packet) != Some(local) {
            return Err(self.refuse(KeeperDrop::SourceNotLocal));
        }
        if local != stable {
            let (from, to) = (Octets::of(local), Octets::of(stable));
            let t = rewrite::translate(packet, &ip, Direction::Outbound, from.get(), to.get());
            self.count_translation(t);
        }
        self.clamp(packet, &ip);
        self.track(now, packet, &ip, Direction::Outbound, tunnel, followed);
        Ok(ip.len)
    }

    /// A packet from a tunnel for the local side: validated, rewritten in place, tracked.
    /// Returns the packet's length.
    pub fn inbound(&mut self, now: Instant, packet: &mut [u8]) -> Result<usize, KeeperDrop> {
        let ip = parse::parse(packet).map_err(|m| self.refuse(KeeperDrop::Malformed(m)))?;
        let Some((local, stable)) = self.addresses(ip.family) else {
            return Err(self.refuse(KeeperDrop::NotForUs));
        };
        if ip.dst(packet) != Some(stable) {
            return Err(self.refuse(KeeperDrop::NotForUs));
        }
        if local != stable {
            let (from, to) = (Octets::of(stable), Octets::of(local));
            let t = rewrite::translate(packet, &ip, Direction::Inbound, from.get(), to.get());
            self.count_translation(t);
        }
        self.clamp(packet, &ip);
        self.track(now, packet, &ip, Direction::Inbound, usize::MAX, false);
        Ok(ip.len)
    }

    fn count_translation(&mut self, t: rewrite::Translated) {
        self.stats.quoted_rewritten += u64::from(t.quoted);
        self.stats.udp6_zero_checksum += u64::from(t.udp6_zero_checksum);
    }

    fn clamp(&mut self, packet: &mut [u8], ip: &Ip) {
        let max = self.max_mss(ip.family);
        if rewrite::clamp_mss(packet, ip, max).is_some_and(|mss| mss > max) {
            self.stats.mss_clamped += 1;
        }
    }

    /// The flow a packet belongs to, seen from the client; `None` for what starts no flow
    /// (non-first fragments, ICMP errors, ICMP other than echo).
    fn key(packet: &[u8], ip: &Ip, dir: Direction) -> Option<FlowKey> {
        if !ip.has_transport_header() {
            return None;
        }
        let remote = match dir {
            Direction::Outbound => ip.dst(packet)?,
            Direction::Inbound => ip.src(packet)?,
        };
        let (a, b) = (
            field::be16(packet, ip.l4).unwrap_or(0),
            field::be16(packet, ip.l4 + 2).unwrap_or(0),
        );
        let (local_port, remote_port) = match ip.protocol {
            PROTO_TCP | PROTO_UDP => match dir {
                Direction::Outbound => (a, b),
                Direction::Inbound => (b, a),
            },
            PROTO_ICMP | PROTO_ICMPV6 => {
                let t = *packet.get(ip.l4)?;
                // echo request / reply, v4 and v6: the identifier names the flow
                if !matches!(
                    (ip.protocol, t),
                    (PROTO_ICMP, 0 | 8) | (PROTO_ICMPV6, 128 | 129)
                ) {
                    return None;
                }
                (field::be16(packet, ip.l4 + 4).unwrap_or(0), 0)
            }
            _ => (0, 0),
        };
        Some(FlowKey {
            remote,
            protocol: ip.protocol,
            local_port,
            remote_port,
        })
    }

    fn track(
        &mut self,
        now: Instant,
        packet: &[u8],
        ip: &Ip,
        dir: Direction,
        tunnel: usize,
        followed: bool,
    ) {
        let Some(key) = Self::key(packet, ip, dir) else {
            return;
        };
        let is_tcp = ip.protocol == PROTO_TCP;
        let keep = self.config.recovery && self.flows.buffer_bytes() < self.config.recovery_budget;
        let Some(flow) = self.flows.touch(now, key, is_tcp) else {
            return;
        };
        let (Some(tcp), true) = (flow.tcp.as_mut(), is_tcp) else {
            match dir {
                Direction::Outbound => {
                    flow.packets_out += 1;
                    flow.last_tunnel = tunnel;
                }
                Direction::Inbound => flow.packets_in += 1,
            }
            return;
        };
        let seg = Segment::read(packet, ip);
        let before = tcp.buffer_bytes();
        let mut over_budget = false;
        match dir {
            Direction::Outbound => {
                flow.packets_out += 1;
                flow.last_tunnel = tunnel;
                over_budget =
                    self.config.recovery && Self::track_out(tcp, &seg, packet, ip, keep, followed);
            }
            Direction::Inbound => {
                flow.packets_in += 1;
                Self::track_in(tcp, &seg);
            }
        }
        let after_bytes = tcp.buffer_bytes();
        self.flows.account(before, after_bytes);
        self.stats.recovery_over_budget += u64::from(over_budget);
    }

    /// Returns true when a data segment was not kept for lack of budget.
    fn track_out(
        tcp: &mut TcpState,
        seg: &Segment,
        packet: &[u8],
        ip: &Ip,
        keep: bool,
        followed: bool,
    ) -> bool {
        if seg.flags & flags::SYN != 0 {
            tcp.seen |= TcpState::SYN_OUT;
        }
        if seg.flags & flags::FIN != 0 {
            tcp.seen |= TcpState::FIN_OUT;
        }
        if seg.flags & flags::RST != 0 {
            tcp.seen |= TcpState::RST;
        }
        tcp.snd_nxt = max_seq(tcp.snd_nxt, seg.end());
        if seg.flags & flags::ACK != 0 {
            tcp.ack_out = max_seq(tcp.ack_out, seg.ack);
        }
        tcp.window_out = seg.window;
        let plain =
            seg.flags & (flags::SYN | flags::RST) == 0 && ip.fragment == parse::Fragment::Whole;
        if !plain || seg.header_end > MAX_HEADERS {
            return false;
        }
        // a retransmission of older data does not replace the newest segment
        if !tcp.last_headers.is_empty()
            && after(
                field::be32(&tcp.last_headers, tcp.last_l4 + 4).unwrap_or(0),
                seg.seq,
            )
        {
            return false;
        }
        tcp.last_headers.clear();
        tcp.last_headers
            .extend_from_slice(packet.get(..seg.header_end).unwrap_or_default());
        tcp.last_payload = seg.payload;
        tcp.last_l4 = ip.l4;
        if seg.payload == 0 || followed {
            // a newer segment of the same super-packet follows: its copy will do
            return false;
        }
        if !keep && tcp.unacked.capacity() < ip.len {
            tcp.unacked.clear();
            return true;
        }
        tcp.unacked.clear();
        tcp.unacked
            .extend_from_slice(packet.get(..ip.len).unwrap_or_default());
        false
    }

    fn track_in(tcp: &mut TcpState, seg: &Segment) {
        if seg.flags & flags::SYN != 0 {
            tcp.seen |= TcpState::SYN_IN;
        }
        if seg.flags & flags::FIN != 0 {
            tcp.seen |= TcpState::FIN_IN;
        }
        if seg.flags & flags::RST != 0 {
            tcp.seen |= TcpState::RST;
        }
        tcp.rcv_nxt = max_seq(tcp.rcv_nxt, seg.end());
        tcp.window_in = seg.window;
        if seg.flags & flags::ACK != 0 {
            tcp.ack_in = max_seq(tcp.ack_in, seg.ack);
            if let (Some(end), Some(ack)) = (unacked_end(tcp), tcp.ack_in) {
                if !after(end, ack) {
                    tcp.unacked.clear();
                }
            }
        }
    }

    /// Traffic moved from tunnel `from` to tunnel `to`: queues recovery for the TCP flows
    /// recently active on `from`; drain it with [`Keeper::poll_recovery`] once the new path
    /// is ready. Returns how many flows were queued. A newer switch replaces an undrained queue.
    pub fn on_switch(&mut self, now: Instant, from: usize) -> usize {
        self.recovery_queue.clear();
        if !self.config.recovery {
            return 0;
        }
        let queue = &mut self.recovery_queue;
        for flow in self.flows.iter() {
            if queue.len() >= MAX_RECOVERY_FLOWS {
                break;
            }
            let Some(tcp) = &flow.tcp else { continue };
            let recent = now.saturating_duration_since(flow.last_seen) <= RECENT;
            if recent && flow.last_tunnel == from && !tcp.closing() && !tcp.last_headers.is_empty()
            {
                queue.push_back((flow.key, Stage::Segment));
            }
        }
        if !queue.is_empty() {
            self.stats.recoveries += 1;
        }
        queue.len()
    }

    /// Whether recovery packets are waiting.
    pub fn recovery_pending(&self) -> bool {
        !self.recovery_queue.is_empty()
    }

    /// Writes the next recovery packet into `out` (replacing its contents). `false` when there
    /// are no more.
    pub fn poll_recovery(&mut self, out: &mut Vec<u8>) -> bool {
        while let Some((key, stage)) = self.recovery_queue.pop_front() {
            let Some(tcp) = self.flows.get(&key).and_then(|f| f.tcp.as_ref()) else {
                continue;
            };
            match stage {
                Stage::Segment => {
                    self.recovery_queue.push_front((key, Stage::Ack));
                    let unacked = match (unacked_end(tcp), tcp.ack_in) {
                        (Some(end), Some(ack)) => after(end, ack),
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    if unacked {
                        out.clear();
                        out.extend_from_slice(&tcp.unacked);
                        self.stats.recovery_segments += 1;
                        return true;
                    }
                }
                Stage::Ack => {
                    if pure_ack(tcp, out) {
                        self.stats.recovery_acks += 1;
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// End of the stored data segment's sequence space.
fn unacked_end(tcp: &TcpState) -> Option<u32> {
    if tcp.unacked.is_empty() {
        return None;
    }
    let ip = parse::parse(&tcp.unacked).ok()?;
    Some(Segment::read(&tcp.unacked, &ip).end())
}

/// A pure ACK from the newest segment's headers: sequence number moved past its payload,
/// lengths and checksums made to fit. Not for SYN, FIN or RST segments.
fn pure_ack(tcp: &TcpState, out: &mut Vec<u8>) -> bool {
    let h = &tcp.last_headers;
    let l4 = tcp.last_l4;
    let Some(&fl) = h.get(l4 + 13) else {
        return false;
    };
    if fl & (flags::SYN | flags::FIN | flags::RST) != 0 || fl & flags::ACK == 0 {
        return false;
    }
    out.clear();
    out.extend_from_slice(h);
    let len = out.len();
    let Ok(len16) = u16::try_from(len) else {
        return false;
    };
    let seq = field::be32(out, l4 + 4)
        .unwrap_or(0)
        .wrapping_add(tcp.last_payload);
    field::put(out, l4 + 4, &seq.to_be_bytes());
    let v4 = out.first().is_some_and(|b| b >> 4 == 4);
    let (src, dst) = if v4 {
        field::put(out, 2, &len16.to_be_bytes());
        field::put(out, 10, &[0, 0]);
        let c = checksum::finish(checksum::sum(out.get(..l4).unwrap_or_default()));
        field::put(out, 10, &c.to_be_bytes());
        (12..16, 16..20)
    } else {
        field::put(out, 4, &len16.saturating_sub(40).to_be_bytes());
        (8..24, 24..40)
    };
    field::put(out, l4 + 16, &[0, 0]);
    let acc = checksum::pseudo_header(
        out.get(src).unwrap_or_default(),
        out.get(dst).unwrap_or_default(),
        PROTO_TCP,
        len - l4,
    );
    let c = checksum::finish(checksum::fold(checksum::add(
        acc,
        out.get(l4..).unwrap_or_default(),
    )));
    field::put(out, l4 + 16, &c.to_be_bytes());
    true
}

/// An address's octets on the stack.
struct Octets([u8; 16], usize);

impl Octets {
    fn of(a: IpAddr) -> Self {
        match a {
            IpAddr::V4(a) => {
                let mut o = [0; 16];
                o[..4].copy_from_slice(&a.octets());
                Self(o, 4)
            }
            IpAddr::V6(a) => Self(a.octets(), 16),
        }
    }

    fn get(&self) -> &[u8] {
        self.0.get(..self.1).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: [u8; 4] = [10, 200, 0, 2];
    const STABLE: [u8; 4] = [100, 96, 0, 2];
    const SERVER: [u8; 4] = [198, 19, 0, 100];

    /// An IPv4 TCP segment with a timestamp option, checksums computed from scratch.
    fn tcp(
        src: [u8; 4],
        dst: [u8; 4],
        ports: (u16, u16),
        seq: u32,
        ack: u32,
        fl: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let hl = 20 + 32;
        let len = hl + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[1] = 0x02; // ECT(0)
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&ports.0.to_be_bytes());
        p[22..24].copy_from_slice(&ports.1.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&ack.to_be_bytes());
        p[32] = 8 << 4;
        p[33] = fl;
        p[34..36].copy_from_slice(&501u16.to_be_bytes());
        p[40..52].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        p[52..].copy_from_slice(payload);
        let c = checksum::finish(checksum::sum(&p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let acc = checksum::pseudo_header(&src, &dst, PROTO_TCP, len - 20);
        let c = checksum::finish(checksum::fold(checksum::add(acc, &p[20..])));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn valid(p: &[u8]) -> bool {
        let acc = checksum::pseudo_header(&p[12..16], &p[16..20], PROTO_TCP, p.len() - 20);
        checksum::verifies(checksum::add(0, &p[..20]))
            && checksum::verifies(checksum::add(acc, &p[20..]))
    }

    fn keeper(recovery: bool) -> Keeper {
        let stable = StableAddresses {
            v4: Some(Ipv4Addr::from(STABLE)),
            v6: None,
        };
        let mut c = KeeperConfig::new(stable, 1420);
        c.local = StableAddresses {
            v4: Some(Ipv4Addr::from(LOCAL)),
            v6: None,
        };
        c.recovery = recovery;
        Keeper::new(c)
    }

    #[test]
    fn a_super_packet_keeps_a_copy_of_its_last_segment_only() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let mut k = keeper(true);
        let ports = (40000, 5201);
        let mut segments: Vec<Vec<u8>> = (0..3u32)
            .map(|i| {
                tcp(
                    LOCAL,
                    SERVER,
                    ports,
                    1000 + 100 * i,
                    5000,
                    flags::ACK,
                    &[i as u8; 100],
                )
            })
            .collect();
        let n = segments.len();
        for (i, s) in segments.iter_mut().enumerate() {
            let followed = i + 1 < n;
            assert_eq!(k.outbound_segment(t0, s, 0, followed), Ok(s.len()));
            assert!(valid(s), "segment {i} rewritten and still valid");
            let kept = k
                .flows
                .iter()
                .find_map(|f| f.tcp.as_ref().map(|t| t.unacked.clone()))
                .unwrap();
            if followed {
                assert!(kept.is_empty(), "segment {i}: no copy while more follow");
            } else {
                assert_eq!(kept, *s, "the last segment, verbatim");
            }
        }
        assert_eq!(k.on_switch(t0 + Duration::from_millis(90), 0), 1);
        let mut buf = Vec::new();
        assert!(k.poll_recovery(&mut buf));
        assert_eq!(buf, segments[2], "recovery resends the newest segment");
        assert!(k.poll_recovery(&mut buf));
        assert_eq!(
            &buf[24..28],
            &1300u32.to_be_bytes(),
            "the ACK follows the newest"
        );
    }

    #[test]
    fn a_switch_resends_the_newest_unacked_segment_then_an_ack() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let mut k = keeper(true);
        let ports = (40000, 5201);
        let mut out = tcp(
            LOCAL,
            SERVER,
            ports,
            1000,
            5000,
            flags::ACK | flags::PSH,
            &[7; 100],
        );
        assert_eq!(k.outbound(t0, &mut out, 0), Ok(out.len()));
        assert_eq!(&out[12..16], &STABLE);
        assert!(valid(&out));
        let mut newest = tcp(
            LOCAL,
            SERVER,
            ports,
            1100,
            5000,
            flags::ACK | flags::PSH,
            &[8; 100],
        );
        k.outbound(t0, &mut newest, 0).unwrap();
        // the server acknowledged the first segment only
        let mut ack = tcp(SERVER, STABLE, (5201, 40000), 5000, 1100, flags::ACK, &[]);
        k.inbound(t0, &mut ack).unwrap();
        assert_eq!(&ack[16..20], &LOCAL);
        assert!(valid(&ack));

        assert_eq!(k.on_switch(t0 + Duration::from_millis(90), 0), 1);
        let mut buf = Vec::new();
        assert!(k.poll_recovery(&mut buf));
        assert_eq!(buf, newest, "the newest segment, verbatim");
        assert!(k.poll_recovery(&mut buf));
        assert_eq!(buf.len(), 52, "a pure ACK");
        assert!(valid(&buf));
        assert_eq!(
            &buf[24..28],
            &1200u32.to_be_bytes(),
            "sequence past the payload"
        );
        assert_eq!(&buf[28..32], &5000u32.to_be_bytes());
        assert_eq!(buf[1], 0x02, "ECN bits untouched");
        assert_eq!(&buf[40..52], &newest[40..52], "options untouched");
        assert!(!k.poll_recovery(&mut buf));
        let s = k.stats();
        assert_eq!((s.recovery_segments, s.recovery_acks), (1, 1));
    }

    #[test]
    fn acknowledged_idle_or_closed_flows_are_not_resent() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let mut k = keeper(true);
        let mut seg = tcp(LOCAL, SERVER, (1, 2), 1000, 5000, flags::ACK, &[7; 10]);
        k.outbound(t0, &mut seg, 0).unwrap();
        let mut ack = tcp(SERVER, STABLE, (2, 1), 5000, 1010, flags::ACK, &[]);
        k.inbound(t0, &mut ack).unwrap();
        assert_eq!(k.on_switch(t0, 0), 1);
        let mut buf = Vec::new();
        assert!(k.poll_recovery(&mut buf));
        assert_eq!(buf.len(), 52, "only the ACK: the data was acknowledged");
        assert!(!k.poll_recovery(&mut buf));
        // idle for longer than RECENT, or on another tunnel: nothing
        assert_eq!(k.on_switch(t0 + RECENT + Duration::from_millis(1), 0), 0);
        assert_eq!(k.on_switch(t0, 1), 0);
        // closing: nothing
        let mut fin = tcp(
            LOCAL,
            SERVER,
            (1, 2),
            1010,
            5000,
            flags::ACK | flags::FIN,
            &[],
        );
        k.outbound(t0, &mut fin, 0).unwrap();
        assert_eq!(k.on_switch(t0, 0), 0);
        // recovery off: nothing
        let mut off = keeper(false);
        let mut seg = tcp(LOCAL, SERVER, (1, 2), 1000, 5000, flags::ACK, &[7; 10]);
        off.outbound(t0, &mut seg, 0).unwrap();
        assert_eq!(off.on_switch(t0, 0), 0);
    }

    #[test]
    fn a_retransmission_does_not_replace_the_newest_segment() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let mut k = keeper(true);
        let mut a = tcp(LOCAL, SERVER, (1, 2), 1000, 5000, flags::ACK, &[1; 10]);
        let mut b = tcp(LOCAL, SERVER, (1, 2), 1010, 5000, flags::ACK, &[2; 10]);
        let mut again = a.clone();
        k.outbound(t0, &mut a, 0).unwrap();
        k.outbound(t0, &mut b, 0).unwrap();
        k.outbound(t0, &mut again, 0).unwrap();
        k.on_switch(t0, 0);
        let mut buf = Vec::new();
        assert!(k.poll_recovery(&mut buf));
        assert_eq!(buf, b);
    }

    #[test]
    fn foreign_sources_and_destinations_are_refused_and_counted() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let mut k = keeper(true);
        let mut p = tcp([10, 200, 0, 3], SERVER, (1, 2), 0, 0, flags::ACK, &[]);
        assert_eq!(k.outbound(t0, &mut p, 0), Err(KeeperDrop::SourceNotLocal));
        let mut p = tcp(SERVER, [100, 96, 0, 3], (1, 2), 0, 0, flags::ACK, &[]);
        assert_eq!(k.inbound(t0, &mut p), Err(KeeperDrop::NotForUs));
        let mut p = tcp(LOCAL, SERVER, (1, 2), 0, 0, flags::ACK, &[]);
        p[32] = 0x40; // data offset 16
        assert_eq!(
            k.outbound(t0, &mut p, 0),
            Err(KeeperDrop::Malformed(Malformed::BadTcpOffset))
        );
        let s = k.stats();
        assert_eq!((s.source_not_local, s.not_for_us), (1, 1));
        assert_eq!(s.malformed.iter().sum::<u64>(), 1);
    }
}
