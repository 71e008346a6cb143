//! The bounded flow table.
//!
//! Flows live in a slab with two intrusive LRU lists (a segmented LRU): new flows enter
//! *probation*; a flow that has carried traffic both ways is promoted to *protected*. When the
//! table is full the least recently used probation flow goes first — expired or not — so a
//! scan of a million one-way 5-tuples churns probation and never reaches the long-lived,
//! active, two-way flows. Only with probation empty does the protected list give up its least
//! recently used entry. Idle timeouts evict on access and from the LRU tails.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long an idle flow is kept, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP with traffic both ways and not closing
    pub tcp_established: Duration,
    /// TCP half-open, or closing (FIN or RST seen)
    pub tcp_transitory: Duration,
    /// UDP, ICMP echo and anything else
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_established: Duration::from_secs(2 * 60 * 60),
            tcp_transitory: Duration::from_secs(30),
            other: Duration::from_secs(120),
        }
    }
}

/// A flow as seen from the client: the remote end and the ports, with the stable address
/// implied (one per family). ICMP echo uses its identifier as the local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// the far end
    pub remote: IpAddr,
    /// IP protocol
    pub protocol: u8,
    /// port (or echo identifier) on the client's side
    pub local_port: u16,
    /// port on the far side
    pub remote_port: u16,
}

/// TCP state of a flow, as the packets show it.
#[derive(Debug, Clone, Default)]
pub struct TcpState {
    /// SYN/FIN/RST seen, by direction ([`Self::SYN_OUT`] …)
    pub seen: u8,
    /// highest sequence number sent by the local side, plus its length (snd_nxt as seen)
    pub snd_nxt: Option<u32>,
    /// highest acknowledgement the local side sent (what it has received)
    pub ack_out: Option<u32>,
    /// highest acknowledgement the far end sent (what it has received)
    pub ack_in: Option<u32>,
    /// highest sequence number sent by the far end, plus its length
    pub rcv_nxt: Option<u32>,
    /// last window advertised by the local side (unscaled)
    pub window_out: u16,
    /// last window advertised by the far end (unscaled)
    pub window_in: u16,
    /// headers (IP + TCP, options included) of the newest segment the local side sent, and the
    /// length of its payload: what a pure ACK at switch-over is made from
    pub(crate) last_headers: Vec<u8>,
    pub(crate) last_payload: u32,
    pub(crate) last_l4: usize,
    /// the newest data segment the local side sent, whole, while unacknowledged
    pub(crate) unacked: Vec<u8>,
}

impl TcpState {
    /// SYN sent by the local side
    pub const SYN_OUT: u8 = 1;
    /// SYN sent by the far end
    pub const SYN_IN: u8 = 2;
    /// FIN sent by the local side
    pub const FIN_OUT: u8 = 4;
    /// FIN sent by the far end
    pub const FIN_IN: u8 = 8;
    /// RST either way
    pub const RST: u8 = 16;

    /// Whether the connection is closing or closed.
    pub fn closing(&self) -> bool {
        self.seen & (Self::FIN_OUT | Self::FIN_IN | Self::RST) != 0
    }

    pub(crate) fn buffer_bytes(&self) -> usize {
        self.last_headers.capacity() + self.unacked.capacity()
    }
}

/// One tracked flow.
#[derive(Debug, Clone)]
pub struct Flow {
    /// its key
    pub key: FlowKey,
    /// when it was first seen
    pub created: Instant,
    /// when it last carried a packet
    pub last_seen: Instant,
    /// packets from the local side
    pub packets_out: u64,
    /// packets from the far end
    pub packets_in: u64,
    /// the tunnel (datacenter index) its last outbound packet took
    pub last_tunnel: usize,
    /// TCP only
    pub tcp: Option<Box<TcpState>>,
}

impl Flow {
    fn two_way(&self) -> bool {
        self.packets_out > 0 && self.packets_in > 0
    }

    fn timeout(&self, t: &Timeouts) -> Duration {
        match &self.tcp {
            Some(tcp) if self.two_way() && !tcp.closing() => t.tcp_established,
            Some(_) => t.tcp_transitory,
            None => t.other,
        }
    }
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    Probation,
    Protected,
}

#[derive(Debug)]
struct Slot {
    flow: Option<Flow>,
    prev: u32,
    next: u32,
    list: List,
}

#[derive(Debug, Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
    len: usize,
}

impl Ends {
    const EMPTY: Ends = Ends {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// Table counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// flows created
    pub created: u64,
    /// evicted for idleness
    pub expired: u64,
    /// evicted from probation because the table was full
    pub evicted_probation: u64,
    /// evicted from protected because the table was full and probation empty
    pub evicted_protected: u64,
}

/// The bounded flow table.
#[derive(Debug)]
pub struct FlowTable {
    map: HashMap<FlowKey, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    probation: Ends,
    protected: Ends,
    cap: usize,
    timeouts: Timeouts,
    stats: FlowStats,
    /// bytes held by live flows' recovery buffers
    pub(crate) buffered: usize,
}

impl FlowTable {
    /// A table of at most `cap` flows (at least 1). Nothing is allocated up front.
    pub fn new(cap: usize, timeouts: Timeouts) -> Self {
        // slot indices are u32 with one value reserved
        let cap = cap.clamp(1, (NIL - 1) as usize);
        Self {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            probation: Ends::EMPTY,
            protected: Ends::EMPTY,
            cap,
            timeouts,
            stats: FlowStats::default(),
            buffered: 0,
        }
    }

    /// Flows tracked now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The configured cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Counters.
    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// Flows in the protected segment.
    pub fn protected_len(&self) -> usize {
        self.ends(List::Protected).len
    }

    /// Heap bytes held by the table and its flows' buffers: an estimate from capacities (walks
    /// the table: for status, not per packet).
    pub fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(FlowKey, u32)>() + std::mem::size_of::<u64>();
        let tcp_flows = self
            .slots
            .iter()
            .filter(|s| s.flow.as_ref().is_some_and(|f| f.tcp.is_some()))
            .count();
        self.map.capacity() * entry
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + tcp_flows * std::mem::size_of::<TcpState>()
            + self.free.capacity() * std::mem::size_of::<u32>()
            + self.buffer_bytes()
    }

    /// Bytes held in per-flow recovery buffers.
    pub fn buffer_bytes(&self) -> usize {
        self.buffered
    }

    /// Records a flow's buffers changing capacity from `before` to `after` bytes.
    pub(crate) fn account(&mut self, before: usize, after: usize) {
        self.buffered = self.buffered.saturating_sub(before) + after;
    }

    /// The flow for `key`, created if new (evicting as needed), marked used at `now`.
    /// `is_tcp` decides whether TCP state is kept. `None` only if the table's own bookkeeping
    /// were inconsistent, which no input can cause.
    pub fn touch(&mut self, now: Instant, key: FlowKey, is_tcp: bool) -> Option<&mut Flow> {
        let idx = match self.map.get(&key).copied() {
            Some(i) if self.expired(i, now) => {
                self.remove(i);
                self.stats.expired += 1;
                self.insert(now, key, is_tcp)
            }
            Some(i) => {
                self.unlink(i);
                let promote = self.flow(i).is_some_and(Flow::two_way);
                self.push_front(
                    i,
                    if promote {
                        List::Protected
                    } else {
                        List::Probation
                    },
                );
                i
            }
            None => self.insert(now, key, is_tcp),
        };
        let f = self.slots.get_mut(idx as usize)?.flow.as_mut()?;
        f.last_seen = now;
        Some(f)
    }

    /// The flow for `key`, if tracked.
    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.flow(*self.map.get(key)?)
    }

    /// The flow for `key`, mutably, if tracked.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        let i = *self.map.get(key)?;
        self.slots.get_mut(i as usize)?.flow.as_mut()
    }

    /// Every tracked flow, most recently used first within each segment (protected first).
    pub fn iter(&self) -> impl Iterator<Item = &Flow> + '_ {
        self.walk(List::Protected).chain(self.walk(List::Probation))
    }

    fn walk(&self, list: List) -> impl Iterator<Item = &Flow> + '_ {
        let mut at = self.ends(list).head;
        std::iter::from_fn(move || {
            let slot = self.slots.get(at as usize)?;
            at = slot.next;
            slot.flow.as_ref()
        })
    }

    fn flow(&self, i: u32) -> Option<&Flow> {
        self.slots.get(i as usize)?.flow.as_ref()
    }

    fn expired(&self, i: u32, now: Instant) -> bool {
        self.flow(i)
            .is_some_and(|f| now.saturating_duration_since(f.last_seen) > f.timeout(&self.timeouts))
    }

    fn insert(&mut self, now: Instant, key: FlowKey, is_tcp: bool) -> u32 {
        while self.map.len() >= self.cap {
            if !self.evict_one(now) {
                break;
            }
        }
        let flow = Flow {
            key,
            created: now,
            last_seen: now,
            packets_out: 0,
            packets_in: 0,
            last_tunnel: 0,
            tcp: is_tcp.then(Box::default),
        };
        let idx = match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.slots.get_mut(i as usize) {
                    s.flow = Some(flow);
                }
                i
            }
            None => {
                // cap < NIL - 1 bounds the slab
                let i = u32::try_from(self.slots.len()).unwrap_or(NIL - 1);
                self.slots.push(Slot {
                    flow: Some(flow),
                    prev: NIL,
                    next: NIL,
                    list: List::Probation,
                });
                i
            }
        };
        self.push_front(idx, List::Probation);
        self.map.insert(key, idx);
        self.stats.created += 1;
        idx
    }

    /// Evicts one flow; false if there was none to evict.
    fn evict_one(&mut self, now: Instant) -> bool {
        // an expired flow at either tail goes first; then probation's LRU; then protected's
        for list in [List::Probation, List::Protected] {
            let tail = self.ends(list).tail;
            if tail != NIL && self.expired(tail, now) {
                self.remove(tail);
                self.stats.expired += 1;
                return true;
            }
        }
        let probation = self.ends(List::Probation).tail;
        let protected = self.ends(List::Protected).tail;
        if probation != NIL {
            self.stats.evicted_probation += 1;
            self.remove(probation);
        } else if protected != NIL {
            self.stats.evicted_protected += 1;
            self.remove(protected);
        } else {
            return false;
        }
        true
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i);
        if let Some(flow) = self.slots.get_mut(i as usize).and_then(|s| s.flow.take()) {
            let held = flow.tcp.as_ref().map_or(0, |t| t.buffer_bytes());
            self.buffered = self.buffered.saturating_sub(held);
            self.map.remove(&flow.key);
            self.free.push(i);
        }
    }

    fn ends(&self, list: List) -> Ends {
        match list {
            List::Probation => self.probation,
            List::Protected => self.protected,
        }
    }

    fn ends_mut(&mut self, list: List) -> &mut Ends {
        match list {
            List::Probation => &mut self.probation,
            List::Protected => &mut self.protected,
        }
    }

    fn unlink(&mut self, i: u32) {
        let Some(s) = self.slots.get(i as usize) else {
            return;
        };
        let (prev, next, list) = (s.prev, s.next, s.list);
        match self.slots.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.ends_mut(list).head = next,
        }
        match self.slots.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.ends_mut(list).tail = prev,
        }
        let ends = self.ends_mut(list);
        ends.len = ends.len.saturating_sub(1);
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.prev = NIL;
            s.next = NIL;
        }
    }

    fn push_front(&mut self, i: u32, list: List) {
        let head = self.ends(list).head;
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.prev = NIL;
            s.next = head;
            s.list = list;
        }
        match self.slots.get_mut(head as usize) {
            Some(h) => h.prev = i,
            None => self.ends_mut(list).tail = i,
        }
        let ends = self.ends_mut(list);
        ends.head = i;
        ends.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            remote: IpAddr::from([198, 19, 0, 100]),
            protocol: 17,
            local_port: port,
            remote_port: 53,
        }
    }

    #[test]
    fn a_scan_does_not_evict_two_way_flows() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let mut t = FlowTable::new(100, Timeouts::default());
        let long = key(1);
        let f = t.touch(t0, long, false).unwrap();
        f.packets_out += 1;
        f.packets_in += 1;
        t.touch(t0, long, false); // promoted on its next packet
        assert_eq!(t.protected_len(), 1);
        for p in 2..50_000u16 {
            t.touch(t0, key(p), false).unwrap().packets_out += 1;
            assert!(t.len() <= 100);
        }
        assert!(t.get(&long).is_some());
        assert_eq!(t.stats().evicted_protected, 0);
        assert!(t.stats().evicted_probation > 49_000);
    }

    #[test]
    fn idle_flows_expire() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let mut t = FlowTable::new(2, Timeouts::default());
        t.touch(t0, key(1), false);
        t.touch(t0 + Duration::from_secs(1), key(2), false);
        // full: the expired one goes, though it is not the only candidate
        t.touch(t0 + Duration::from_secs(121), key(3), false);
        assert!(t.get(&key(1)).is_none());
        assert!(t.get(&key(2)).is_some());
        assert_eq!(t.stats().expired, 1);
        // touching an expired flow starts it over
        let f = t
            .touch(t0 + Duration::from_secs(500), key(3), false)
            .unwrap();
        assert_eq!(f.created, t0 + Duration::from_secs(500));
    }

    #[test]
    fn protected_gives_way_only_when_probation_is_empty() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let mut t = FlowTable::new(2, Timeouts::default());
        for p in [1, 2] {
            let f = t.touch(t0, key(p), false).unwrap();
            f.packets_out = 1;
            f.packets_in = 1;
            t.touch(t0, key(p), false);
        }
        assert_eq!(t.protected_len(), 2);
        t.touch(t0, key(3), false);
        assert!(
            t.get(&key(1)).is_none(),
            "the least recently used protected flow goes"
        );
        assert_eq!(t.stats().evicted_protected, 1);
        assert_eq!(t.len(), 2);
    }
}
