//! Datagrams for the underlay, handed out many at a time.
//!
//! A [`Batch`] is caller-owned memory the engine writes finished WireGuard datagrams into:
//! fixed-size slots in one allocation, each with its destination and length. The front end
//! sends what a batch holds (one system call per datagram today; `sendmmsg`/GSO later) and
//! clears it. Nothing here allocates after [`Batch::new`], and a full batch refuses more
//! instead of growing: the engine keeps what it could not hand out for the next call.

use std::net::SocketAddr;

use tunnel::Transmit;

/// Caller-owned slots for outgoing datagrams. See the module docs.
pub struct Batch {
    data: Vec<u8>,
    slot_len: usize,
    /// destination and length of each filled slot, in order
    items: Vec<(SocketAddr, usize)>,
    slots: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("slots", &self.slots)
            .field("slot_len", &self.slot_len)
            .field("filled", &self.items.len())
            .finish()
    }
}

impl Batch {
    /// Room for `slots` datagrams of up to `slot_len` bytes each (at least one slot). The
    /// memory is zeroed lazily by the allocator: untouched slot tails cost no resident pages.
    pub fn new(slots: usize, slot_len: usize) -> Self {
        let slots = slots.max(1);
        Self {
            data: vec![0; slots.saturating_mul(slot_len)],
            slot_len,
            items: Vec::with_capacity(slots),
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
    }

    /// The datagrams held, in order.
    pub fn iter(&self) -> impl Iterator<Item = Transmit<'_>> + '_ {
        self.data
            .chunks(self.slot_len.max(1))
            .zip(&self.items)
            .filter_map(|(slot, &(to, len))| {
                slot.get(..len).map(|datagram| Transmit { to, datagram })
            })
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

    /// Lets `write` produce a datagram in the next free slot; it returns the destination and
    /// the length it wrote at the slot's start, or `None` for nothing. `false` when the batch
    /// is full (`write` is not called) or `write` produced nothing.
    pub fn fill(&mut self, write: impl FnOnce(&mut [u8]) -> Option<(SocketAddr, usize)>) -> bool {
        if self.is_full() {
            return false;
        }
        let start = self.items.len().saturating_mul(self.slot_len);
        let Some(slot) = self
            .data
            .get_mut(start..start.saturating_add(self.slot_len))
        else {
            return false;
        };
        match write(slot) {
            Some((to, len)) if len <= self.slot_len => {
                self.items.push((to, len));
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
            self.items.clear();
            return;
        }
        // keep the rest: shift them to the front (rare: only when the caller's batch filled up)
        let rest: Vec<(SocketAddr, usize)> = self.items.drain(moved..).collect();
        self.items.clear();
        let slot_len = self.slot_len;
        for (i, (to, len)) in rest.into_iter().enumerate() {
            let from = (i + moved).saturating_mul(slot_len);
            self.data
                .copy_within(from..from.saturating_add(len), i.saturating_mul(slot_len));
            self.items.push((to, len));
        }
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
}
