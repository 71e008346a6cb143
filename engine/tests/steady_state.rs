//! The data path allocates nothing in steady state: once a flow is tracked and the session is
//! up, a packet out (session keeper, seal) and a packet in (open, session keeper) through the
//! client engine and the gateway engine cost no heap allocation. A counting allocator counts
//! only while the calls under test run, on this thread.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking
#![allow(unsafe_code)] // a global allocator is unsafe to implement

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use engine::gateway::{Gateway, GatewayClient, GatewayConfig, GatewayEvent, ReturnPath};
use engine::{DatacenterConfig, Engine, EngineConfig};
use probe::{Policy, ProbeConfig};
use sessionkeeper::StableAddresses;
use tunnel::{AllowedIps, Outcome, PeerConfig, PrivateKey};
use wire::checksum;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

fn count() {
    // try_with: the allocator also runs while thread-locals are torn down
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed on as is
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

const CLIENT: &str = "198.18.0.1:40000";
const GATEWAY: &str = "198.18.0.11:51820";
const STABLE: [u8; 4] = [100, 96, 0, 2];
const SERVER: [u8; 4] = [198, 19, 0, 100];
const GW_INNER: [u8; 4] = [100, 96, 0, 1];

/// A full-size IPv4 TCP segment with both checksums right.
fn segment(src: [u8; 4], dst: [u8; 4], ports: (u16, u16), seq: u32, ack: u32) -> Vec<u8> {
    let payload = 1380;
    let len = 40 + payload;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&ports.0.to_be_bytes());
    p[22..24].copy_from_slice(&ports.1.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10; // ACK
    p[34..36].copy_from_slice(&4000u16.to_be_bytes());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = checksum::finish(checksum::sum(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let acc = checksum::pseudo_header(&src, &dst, 6, len - 20);
    let c = checksum::finish(checksum::fold(checksum::add(acc, &p[20..])));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn a_packet_each_way_allocates_nothing_once_the_flow_is_known() {
    #[allow(clippy::disallowed_methods)] // the base of the virtual clock
    let t0 = Instant::now();
    let client_key = PrivateKey::generate();
    let gw_key = PrivateKey::generate();
    let (client_addr, gw_addr): (SocketAddr, SocketAddr) =
        (CLIENT.parse().unwrap(), GATEWAY.parse().unwrap());
    let mut client = Engine::new(
        EngineConfig {
            private_key: client_key.clone(),
            stable: StableAddresses {
                v4: Some(STABLE.into()),
                v6: None,
            },
            local: StableAddresses::default(),
            datacenters: vec![DatacenterConfig {
                name: "dc1".into(),
                endpoint: engine::Endpoint::Addr(gw_addr),
                public_key: gw_key.public_key(),
                allowed_ips: AllowedIps::new(vec!["0.0.0.0/0".parse().unwrap()]),
                persistent_keepalive: None,
                preshared_key: None,
                probe: engine::Probe::Gateway(IpAddr::from(GW_INNER)),
            }],
            probe: ProbeConfig::default(),
            policy: Policy::Priority { failback: false },
            mtu: 1420,
            max_flows: 65_536,
            switch_recovery: true,
            routes: Vec::new(),
            seed: 7,
            unix_time: Duration::from_secs(1_800_000_000),
        },
        t0,
    )
    .unwrap();
    let mut gateway = Gateway::new(GatewayConfig {
        private_key: gw_key,
        handshake_rate_limit: 100,
        inner_addresses: vec![IpAddr::from(GW_INNER)],
        claim_timeout: Duration::from_secs(2),
        clients: vec![GatewayClient {
            peer: PeerConfig {
                public_key: client_key.public_key(),
                allowed_ips: AllowedIps::new(vec!["100.96.0.2/32".parse().unwrap()]),
                persistent_keepalive: None,
                preshared_key: None,
            },
            return_path: ReturnPath::Claim,
        }],
    })
    .unwrap();

    // the handshake, and the first probes and claims, until both sides are quiet
    let mut out = vec![0u8; 70_000];
    let mut gout = vec![0u8; 70_000];
    let mut batch = engine::Batch::for_datagrams(16);
    let mut now = t0;
    client.handle_timeout(now);
    for _ in 0..50 {
        now += Duration::from_millis(10);
        client.handle_timeout(now);
        gateway.handle_timeout(now);
        client.poll_transmit(now, &mut batch);
        let up: Vec<Vec<u8>> = batch.iter().map(|t| t.datagram.to_vec()).collect();
        batch.clear();
        let mut down: Vec<Vec<u8>> = Vec::new();
        for d in up {
            if let Outcome::Transmit(t) = gateway.handle_datagram(now, client_addr, &d, &mut gout) {
                down.push(t.datagram.to_vec());
            }
            while let Some(e) = gateway.poll_event() {
                if let GatewayEvent::Claim(peer) = e {
                    gateway.claim_done(now, peer, true);
                }
            }
        }
        gateway.poll_transmit(&mut batch);
        down.extend(batch.iter().map(|t| t.datagram.to_vec()));
        batch.clear();
        for d in down {
            if let Outcome::Transmit(t) = client.handle_datagram(now, gw_addr, &d, &mut out) {
                let reply = t.datagram.to_vec();
                let _ = gateway.handle_datagram(now, client_addr, &reply, &mut gout);
            }
        }
        while client.poll_event().is_some() {}
    }

    // one flow, a data segment up and one down per round
    let up = segment(STABLE, SERVER, (40_000, 5201), 1, 1);
    let down = segment(SERVER, STABLE, (5201, 40_000), 1, 1);
    let mut packet = up.clone();
    let mut round = |now: Instant, seq: u32| -> (bool, bool) {
        packet.copy_from_slice(&up);
        packet[24..28].copy_from_slice(&seq.to_be_bytes());
        // (a wrong TCP checksum now, but the keeper only rewrites it incrementally)
        let sent = match client.handle_local(now, &mut packet, &mut out) {
            Ok(Some(t)) => matches!(
                gateway.handle_datagram(now, client_addr, t.datagram, &mut gout),
                Outcome::Deliver(_)
            ),
            _ => false,
        };
        let received = match gateway.handle_inside_packet(&down, &mut gout) {
            Some(t) => matches!(
                client.handle_datagram(now, gw_addr, t.datagram, &mut out),
                Outcome::Deliver(_)
            ),
            None => false,
        };
        (sent, received)
    };
    for i in 0..1_000 {
        now += Duration::from_micros(100);
        assert_eq!(round(now, 1 + i * 1380), (true, true), "warm-up round {i}");
    }
    // the counter counts: one allocation is seen as one
    let (v, n) = allocations(|| Vec::<u8>::with_capacity(64));
    assert_eq!(
        (v.capacity() >= 64, n),
        (true, 1),
        "the counting allocator counts"
    );
    let mut total = 0;
    for i in 1_000..11_000 {
        now += Duration::from_micros(100);
        let (result, n) = allocations(|| round(now, 1 + i * 1380));
        assert_eq!(result, (true, true), "round {i}");
        total += n;
    }
    eprintln!("10,000 rounds (a segment up, a segment down): {total} allocations");
    assert_eq!(total, 0, "the steady-state data path allocated");
}
