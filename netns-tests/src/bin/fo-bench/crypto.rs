//! The crypto ceiling: what sealing and opening a 1,400-byte packet costs on this machine, in
//! one thread, with nothing else in the way (DESIGN.md: "seal + open of a 1,400-byte packet on
//! this machine sets the ceiling").
//!
//! Two `tunnel` sessions complete a handshake with each other in memory; then, per round, one
//! seals (encapsulates) N valid IPv4 packets in batches and the other opens (decapsulates) each
//! batch, every call timed around the batch. Only `tunnel`'s public API is used, so the figure
//! follows whatever crypto library `tunnel` is built on. The ceiling for one flow through a
//! tunnel on this 2-core machine is both cores doing nothing but crypto: 2 / (seal + open
//! ns per byte). The data-path section reports every path's throughput as a share of it.

use std::net::{Ipv4Addr, SocketAddr};

use tunnel::{AllowedIps, EndpointPolicy, Outcome, PrivateKey, Tunnel, TunnelConfig};
use wire::Ipv4Repr;

use super::*;

/// The inner packet the ceiling is measured with: a full-size packet of a 1,420-byte tunnel MTU
/// less a little, as TCP fills it.
pub(crate) const PACKET_BYTES: usize = 1400;
/// The cores the ceiling assumes (this project's machines; one flow's seal and open).
pub(crate) const CEILING_CORES: f64 = 2.0;
/// Packets sealed, then opened, per timed batch: small enough (about 0.4 MB of datagrams) to
/// stay in cache as a data path's batch would.
const BATCH: usize = 256;

const SEALER: &str = "198.18.0.1:40000";
const OPENER: &str = "198.18.0.11:51820";

/// What one round measured: nanoseconds spent sealing and opening `packets` packets.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    seal_ns: f64,
    open_ns: f64,
    packets: usize,
}

/// Two sessions that completed a handshake with each other, and the buffers to use them.
struct SessionPair {
    sealer: Tunnel,
    opener: Tunnel,
    sealer_addr: SocketAddr,
    opener_addr: SocketAddr,
}

impl std::fmt::Debug for SessionPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPair").finish_non_exhaustive()
    }
}

fn addr(s: &str) -> Result<SocketAddr> {
    s.parse()
        .map_err(|e| other(format!("crypto: address {s}: {e}")))
}

impl SessionPair {
    /// Builds both sessions and runs the handshake in memory: initiation, response, the
    /// initiator's first keepalive.
    fn new() -> Result<Self> {
        let sealer_addr = addr(SEALER)?;
        let opener_addr = addr(OPENER)?;
        let everything = || -> Result<AllowedIps> {
            let all = "0.0.0.0/0"
                .parse()
                .map_err(|e| other(format!("crypto: prefix: {e:?}")))?;
            Ok(AllowedIps::new(vec![all]))
        };
        let sealer_key = PrivateKey::generate();
        let opener_key = PrivateKey::generate();
        let session = |key: &PrivateKey, peer: &PrivateKey, index, to, keep| -> Result<Tunnel> {
            Tunnel::new(TunnelConfig {
                private_key: key.clone(),
                peer_public_key: peer.public_key(),
                persistent_keepalive: None,
                preshared_key: None,
                index,
                allowed_ips: everything()?,
                endpoint: EndpointPolicy::Fixed(to),
                keep_established: keep,
            })
            .map_err(|e| other(format!("crypto: session: {e}")))
        };
        let sealer = session(&sealer_key, &opener_key, 1, opener_addr, true)?;
        let opener = session(&opener_key, &sealer_key, 2, sealer_addr, false)?;
        let mut pair = Self {
            sealer,
            opener,
            sealer_addr,
            opener_addr,
        };
        pair.handshake()?;
        Ok(pair)
    }

    fn handshake(&mut self) -> Result<()> {
        let mut a = vec![0u8; tunnel::min_buffer_len(tunnel::MAX_DATAGRAM)];
        let mut b = vec![0u8; tunnel::min_buffer_len(tunnel::MAX_DATAGRAM)];
        let t = now();
        let init = match self.sealer.handle_timeout(t, &mut a) {
            Outcome::Transmit(tx) => tx.datagram.to_vec(),
            o => return Err(other(format!("crypto: no handshake initiation: {o:?}"))),
        };
        let response = match self.opener.decapsulate(t, self.sealer_addr, &init, &mut b) {
            Outcome::Transmit(tx) => tx.datagram.to_vec(),
            o => return Err(other(format!("crypto: no handshake response: {o:?}"))),
        };
        let keepalive = match self
            .sealer
            .decapsulate(t, self.opener_addr, &response, &mut a)
        {
            Outcome::Transmit(tx) => tx.datagram.to_vec(),
            o => return Err(other(format!("crypto: no first keepalive: {o:?}"))),
        };
        match self
            .opener
            .decapsulate(t, self.sealer_addr, &keepalive, &mut b)
        {
            Outcome::Done => {}
            o => return Err(other(format!("crypto: keepalive not accepted: {o:?}"))),
        }
        if !(self.sealer.is_established() && self.opener.is_established()) {
            return Err(other(
                "crypto: the handshake did not establish both sessions",
            ));
        }
        Ok(())
    }

    /// Seals `packets` copies of `packet` and opens them again, `BATCH` at a time, timing each
    /// batch's seal and open loops. Every packet must come out as it went in.
    fn round(&mut self, packet: &[u8], packets: usize, slab: &mut Slab) -> Result<Round> {
        let mut r = Round::default();
        let mut left = packets;
        while left > 0 {
            let n = left.min(BATCH);
            let t0 = now();
            for (i, (slot, len)) in slab
                .datagrams
                .chunks_exact_mut(slab.stride)
                .zip(slab.lens.iter_mut())
                .take(n)
                .enumerate()
            {
                *len = match self.sealer.encapsulate(packet, slot) {
                    Outcome::Transmit(tx) => tx.datagram.len(),
                    o => return Err(other(format!("crypto: seal {i}: {o:?}"))),
                };
            }
            let t1 = now();
            for (i, (slot, len)) in slab
                .datagrams
                .chunks_exact(slab.stride)
                .zip(slab.lens.iter())
                .take(n)
                .enumerate()
            {
                let datagram = slot.get(..*len).unwrap_or_default();
                match self
                    .opener
                    .decapsulate(t1, self.sealer_addr, datagram, &mut slab.opened)
                {
                    Outcome::Deliver(p) if p.len() == packet.len() => {}
                    o => return Err(other(format!("crypto: open {i}: {o:?}"))),
                }
            }
            let t2 = now();
            r.seal_ns += t1.duration_since(t0).as_nanos() as f64;
            r.open_ns += t2.duration_since(t1).as_nanos() as f64;
            r.packets += n;
            left -= n;
        }
        Ok(r)
    }
}

/// A batch's sealed datagrams, one slot each, and the buffer opened packets land in.
#[derive(Debug)]
struct Slab {
    stride: usize,
    datagrams: Vec<u8>,
    lens: Vec<usize>,
    opened: Vec<u8>,
}

impl Slab {
    fn new(packet_len: usize) -> Self {
        let stride = tunnel::min_buffer_len(packet_len).next_multiple_of(64);
        Self {
            stride,
            datagrams: vec![0; stride * BATCH],
            lens: vec![0; BATCH],
            opened: vec![0; stride],
        }
    }
}

/// A valid IPv4/UDP packet of `len` bytes (header checksum right; the UDP checksum 0, which
/// IPv4 allows), from the client's stable address to the server, filled with varied bytes.
fn inner_packet(len: usize) -> Result<Vec<u8>> {
    let mut p = vec![0u8; len];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for b in p.iter_mut() {
        *b = next_rand(&mut state) as u8;
    }
    Ipv4Repr {
        src_addr: Ipv4Addr::new(100, 96, 0, 2),
        dst_addr: Topology::SERVER_IP4,
        protocol: 17,
        payload_len: len - 20,
        ttl: 64,
        dont_frag: true,
    }
    .emit(&mut p)
    .map_err(|e| other(format!("crypto: inner packet: {e:?}")))?;
    let udp_len = u16::try_from(len - 20).map_err(|_| other("crypto: packet too long"))?;
    let udp = p
        .get_mut(20..28)
        .ok_or_else(|| other("crypto: packet too short"))?;
    udp.copy_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 0]);
    if let Some(l) = udp.get_mut(4..6) {
        l.copy_from_slice(&udp_len.to_be_bytes());
    }
    Ok(p)
}

impl Bench {
    /// The crypto section: per-packet and per-byte cost of seal and open, and the ceiling.
    pub(crate) fn crypto(&mut self) -> Result<()> {
        let packets = self.opts.crypto_packets;
        let rounds = self.opts.crypto_rounds;
        let packet = inner_packet(PACKET_BYTES)?;
        let mut pair = SessionPair::new()?;
        let mut slab = Slab::new(packet.len());
        // warm up: caches, branch predictors, the CPU's clock
        pair.round(&packet, packets.div_ceil(4).max(BATCH), &mut slab)?;
        let mut seal = Vec::new();
        let mut open = Vec::new();
        let mut both = Vec::new();
        for i in 0..rounds {
            let r = pair.round(&packet, packets, &mut slab)?;
            let per = |ns: f64| ns / r.packets.max(1) as f64;
            eprintln!(
                "  round {i}: seal {:.0} ns, open {:.0} ns per {PACKET_BYTES}-byte packet",
                per(r.seal_ns),
                per(r.open_ns)
            );
            seal.push(per(r.seal_ns));
            open.push(per(r.open_ns));
            both.push(per(r.seal_ns + r.open_ns));
        }
        let bytes = PACKET_BYTES as f64;
        let (seal_ns, open_ns, both_ns) = (median(&seal), median(&open), median(&both));
        let per_byte = |ns: Option<f64>| ns.map(|n| n / bytes);
        // bytes per ns per core is 1 / (ns per byte): Gbit/s = 8 * cores / (ns per byte)
        let ceiling = per_byte(both_ns)
            .filter(|n| *n > 0.0)
            .map(|n| 8.0 * CEILING_CORES / n);
        let gbps_one_core = |ns: Option<f64>| per_byte(ns).filter(|n| *n > 0.0).map(|n| 8.0 / n);
        let stats = pair.opener.stats();
        if stats.drops.total() > 0 {
            return Err(other(format!(
                "crypto: the opener dropped packets: {stats:?}"
            )));
        }
        self.results.insert(
            "crypto".into(),
            json!({
                "packet_bytes": PACKET_BYTES,
                "packets_per_round": packets,
                "rounds": rounds,
                "batch": BATCH,
                "seal_ns_per_packet": round(seal_ns),
                "open_ns_per_packet": round(open_ns),
                "seal_open_ns_per_packet": round(both_ns),
                "seal_ns_per_byte": round(per_byte(seal_ns)),
                "open_ns_per_byte": round(per_byte(open_ns)),
                "seal_open_ns_per_byte": round(per_byte(both_ns)),
                "seal_gbps_one_core": round(gbps_one_core(seal_ns)),
                "open_gbps_one_core": round(gbps_one_core(open_ns)),
                "ceiling_cores": CEILING_CORES,
                "two_core_ceiling_gbps": round(ceiling),
                "rounds_seal_ns_per_packet": seal.into_iter().map(rounded).collect::<Vec<_>>(),
                "rounds_open_ns_per_packet": open.into_iter().map(rounded).collect::<Vec<_>>(),
                "how": "in-process, one thread: two tunnel sessions that completed a handshake in memory; per round the sealer encapsulates N valid IPv4 packets, batch by batch, and the opener decapsulates each batch (its checks of the inner packet included); medians over the rounds after a warm-up. Ceiling = 2 cores / (seal + open ns per byte), as Gbit/s of inner packets. It is tunnel's crypto: the references use their own libraries",
            }),
        );
        self.command(format!(
            "fo-bench crypto: tunnel::Tunnel pair in memory, {rounds} rounds x {packets} packets of {PACKET_BYTES} bytes (seal, then open, {BATCH} at a time)"
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_seals_and_opens_every_packet() {
        let packet = inner_packet(PACKET_BYTES).unwrap();
        assert!(tunnel::inner::InnerPacket::parse(&packet).is_ok());
        let mut pair = SessionPair::new().unwrap();
        let mut slab = Slab::new(packet.len());
        let r = pair.round(&packet, BATCH + 3, &mut slab).unwrap();
        assert_eq!(r.packets, BATCH + 3);
        assert!(r.seal_ns > 0.0 && r.open_ns > 0.0);
        assert_eq!(pair.opener.stats().drops.total(), 0);
    }
}
