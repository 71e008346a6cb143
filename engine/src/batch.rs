//! Datagrams for the underlay, handed out many at a time.
//!
//! A [`Batch`] is caller-owned memory the engine writes finished WireGuard datagrams into,
//! packed back to back in one allocation, each with its destination and length. The front end
//! sends what a batch holds and clears it: consecutive datagrams to one destination with one
//! length lie next to each other, so a [`Run`] of them goes out in one UDP GSO system call
//! ([`Batch::runs`]). Nothing here allocates after [`Batch::new`], and a full batch refuses more
//! instead of growing: the engine keeps what it could not hand out for the next call.

use std::net::SocketAddr;

use tunnel::Transmit;

/// Caller-owned room for outgoing datagrams. See the module docs.
pub struct Batch {
    data: Vec<u8>,
    /// the most one datagram may take (the room a writer is offered)
    slot_len: usize,
    /// destination, start and length of each datagram, in order; the next starts at `used`
    items: Vec<(SocketAddr, usize, usize)>,
    used: usize,
    slots: usize,
}

/// Datagrams of a [`Batch`] that one UDP GSO send can carry: consecutive, to one destination,
/// every one `segment` bytes long except possibly the last, which may be shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run<'a> {
    /// where they go
    pub to: SocketAddr,
    /// the datagrams back to back
    pub contents: &'a [u8],
    /// the length of each (the last may be shorter)
    pub segment: usize,
    /// how many
    pub count: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("slots", &self.slots)
            .field("slot_len", &self.slot_len)
            .field("filled", &self.items.len())
            .field("bytes", &self.used)
            .finish()
    }
}

impl Batch {
    /// Room for `slots` datagrams of up to `slot_len` bytes each (at least one slot). The
    /// memory is zeroed lazily by the allocator and datagrams are packed, so only the bytes
    /// written ever become resident.
    pub fn new(slots: usize, slot_len: usize) -> Self {
        let slots = slots.max(1);
        Self {
            data: vec![0; slots.saturating_mul(slot_len)],
            slot_len,
            items: Vec::with_capacity(slots),
            used: 0,
            slots,
        }
    }

    /// A batch whose slots hold any datagram the engine can produce (a whole
    /// [`tunnel::MAX_DATAGRAM`] plus WireGuard's overhead).
    pub fn for_datagrams(slots: usize) -> Self {
        Self::new(slots, tunnel::min_buffer_len(tunnel::MAX_DATAGRAM))
    }

    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.slots
    }

    /// Forgets every datagram (after they were sent).
    pub fn clear(&mut self) {
        self.items.clear();
        self.used = 0;
    }

    /// The datagrams held, in order.
    pub fn iter(&self) -> impl Iterator<Item = Transmit<'_>> + '_ {
        self.items.iter().filter_map(|&(to, start, len)| {
            self.data
                .get(start..start.saturating_add(len))
                .map(|datagram| Transmit { to, datagram })
        })
    }

    /// The datagrams held, in order, grouped into [`Run`]s of at most `max_segments` datagrams
    /// and `max_bytes` bytes (a GSO send's limits; 1 and any size send them one by one).
    pub fn runs(&self, max_segments: usize, max_bytes: usize) -> Runs<'_> {
        Runs {
            batch: self,
            next: 0,
            max_segments: max_segments.max(1),
            max_bytes,
        }
    }

    /// Copies `datagram` into the next slot; `false` (nothing kept) when the batch is full or
    /// the datagram longer than a slot.
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        self.fill(|slot| {
            let dst = slot.get_mut(..datagram.len())?;
            dst.copy_from_slice(datagram);
            Some((to, datagram.len()))
        })
    }

    /// Lets `write` produce a datagram in the next free slot (`slot_len` bytes of room); it
    /// returns the destination and the length it wrote at the slot's start, or `None` for
    /// nothing. `false` when the batch is full (`write` is not called) or `write` produced
    /// nothing.
    pub fn fill(&mut self, write: impl FnOnce(&mut [u8]) -> Option<(SocketAddr, usize)>) -> bool {
        if self.is_full() {
            return false;
        }
        // every datagram so far took at most slot_len: a whole slot is always left
        let start = self.used;
        let Some(slot) = self
            .data
            .get_mut(start..start.saturating_add(self.slot_len))
        else {
            return false;
        };
        match write(slot) {
            Some((to, len)) if len <= self.slot_len => {
                self.items.push((to, start, len));
                self.used = start.saturating_add(len);
                true
            }
            _ => false,
        }
    }

    /// Moves every datagram of `self` that fits into `into`, keeping the rest in order.
    pub(crate) fn drain_into(&mut self, into: &mut Batch) {
        let mut moved = 0;
        for t in self.iter() {
            if !into.push(t.to, t.datagram) {
                break;
            }
            moved += 1;
        }
        if moved == self.items.len() {
            self.clear();
            return;
        }
        // keep the rest: shift them to the front (rare: only when the caller's batch filled up)
        let rest: Vec<(SocketAddr, usize, usize)> = self.items.drain(moved..).collect();
        self.clear();
        for (to, start, len) in rest {
            let at = self.used;
            self.data.copy_within(start..start.saturating_add(len), at);
            self.items.push((to, at, len));
            self.used = at.saturating_add(len);
        }
    }
}

/// The [`Run`]s of a [`Batch`], in order (see [`Batch::runs`]).
#[derive(Debug)]
pub struct Runs<'a> {
    batch: &'a Batch,
    next: usize,
    max_segments: usize,
    max_bytes: usize,
}

impl<'a> Iterator for Runs<'a> {
    type Item = Run<'a>;

    fn next(&mut self) -> Option<Run<'a>> {
        let items = self.batch.items.get(self.next..)?;
        let &(to, start, segment) = items.first()?;
        let mut count = 1;
        let mut bytes = segment;
        for &(t, s, len) in items.iter().skip(1) {
            let contiguous = s == start.saturating_add(bytes);
            let fits = count < self.max_segments && bytes.saturating_add(len) <= self.max_bytes;
            if t != to || !contiguous || !fits || len > segment {
                break;
            }
            count += 1;
            bytes += len;
            if len < segment {
                // a shorter datagram ends a run
                break;
            }
        }
        self.next += count;
        let contents = self.batch.data.get(start..start.saturating_add(bytes))?;
        Some(Run {
            to,
            contents,
            segment,
            count,
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], port))
    }

    #[test]
    fn holds_what_fits_and_refuses_the_rest() {
        let mut b = Batch::new(2, 4);
        assert!(b.push(addr(1), b"ab"));
        assert!(!b.push(addr(2), b"too long"), "longer than a slot");
        assert!(b.push(addr(3), b"cdef"));
        assert!(b.is_full());
        assert!(!b.push(addr(4), b"x"));
        let got: Vec<(u16, Vec<u8>)> = b
            .iter()
            .map(|t| (t.to.port(), t.datagram.to_vec()))
            .collect();
        assert_eq!(got, vec![(1, b"ab".to_vec()), (3, b"cdef".to_vec())]);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn a_partial_drain_keeps_the_rest_in_order() {
        let mut from = Batch::new(4, 8);
        for (i, d) in [&b"one"[..], b"two", b"three"].iter().enumerate() {
            assert!(from.push(addr(i as u16), d));
        }
        let mut into = Batch::new(1, 8);
        from.drain_into(&mut into);
        assert_eq!(into.len(), 1);
        let rest: Vec<Vec<u8>> = from.iter().map(|t| t.datagram.to_vec()).collect();
        assert_eq!(rest, vec![b"two".to_vec(), b"three".to_vec()]);
        let mut into = Batch::new(4, 8);
        from.drain_into(&mut into);
        assert!(from.is_empty());
        assert_eq!(into.len(), 2);
    }

    #[test]
    fn runs_group_what_one_gso_send_can_carry() {
        let mut b = Batch::new(8, 8);
        for (port, d) in [
            (1, &b"aaaa"[..]),
            (1, b"bbbb"),
            (1, b"cc"), // shorter: ends the run
            (1, b"dddd"),
            (2, b"eeee"),   // another destination
            (2, b"ffffff"), // longer than the run's segment: a new run
            (2, b"gggggg"),
        ] {
            assert!(b.push(addr(port), d));
        }
        let runs: Vec<(u16, Vec<u8>, usize, usize)> = b
            .runs(64, 1 << 16)
            .map(|r| (r.to.port(), r.contents.to_vec(), r.segment, r.count))
            .collect();
        assert_eq!(
            runs,
            vec![
                (1, b"aaaabbbbcc".to_vec(), 4, 3),
                (1, b"dddd".to_vec(), 4, 1),
                (2, b"eeee".to_vec(), 4, 1),
                (2, b"ffffffgggggg".to_vec(), 6, 2),
            ]
        );
        let limited: Vec<usize> = b.runs(2, 1 << 16).map(|r| r.count).collect();
        assert_eq!(limited, vec![2, 1, 1, 1, 2]);
        let by_bytes: Vec<usize> = b.runs(64, 8).map(|r| r.count).collect();
        assert_eq!(by_bytes, vec![2, 1, 1, 1, 1, 1]);
    }

    proptest::proptest! {
        #[test]
        fn runs_cover_every_datagram_in_order_within_limits(
            items in proptest::collection::vec((0u16..3, 1usize..9), 0..40),
            max_segments in 1usize..6,
            max_bytes in 8usize..40,
        ) {
            let mut b = Batch::new(40, 8);
            for (i, &(port, len)) in items.iter().enumerate() {
                let d = vec![i as u8; len];
                proptest::prop_assert!(b.push(addr(port), &d));
            }
            let mut seen: Vec<(u16, Vec<u8>)> = Vec::new();
            for r in b.runs(max_segments, max_bytes) {
                proptest::prop_assert!(r.count >= 1 && r.count <= max_segments);
                proptest::prop_assert!(r.count == 1 || r.contents.len() <= max_bytes);
                let chunks: Vec<&[u8]> = r.contents.chunks(r.segment).collect();
                proptest::prop_assert_eq!(chunks.len(), r.count);
                for c in chunks {
                    seen.push((r.to.port(), c.to_vec()));
                }
            }
            let want: Vec<(u16, Vec<u8>)> = b.iter().map(|t| (t.to.port(), t.datagram.to_vec())).collect();
            proptest::prop_assert_eq!(seen, want);
        }
    }
}
