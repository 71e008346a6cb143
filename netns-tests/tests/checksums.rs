//! Inbound checksums are still verified, so a corrupt packet is never laundered.
//!
//! Both ends of the tunnel write decrypted packets to their TUN with `IFF_VNET_HDR` offloads:
//! runs of one TCP flow are coalesced into a super-packet marked `NEEDS_CSUM`, whose checksum the
//! kernel then trusts. A segment whose checksum is wrong must therefore never be coalesced: the
//! offload code verifies each one first and writes a bad one on its own, unmarked, so the kernel
//! checks it and drops it (`TcpInCsumErrors`). This test sends such segments through the real
//! binaries, both ways, over IPv4 and IPv6 inner, and fails if one is accepted.
//!
//! ```text
//!  client [failoverd] ─up0─ wan ─wan0─ dc1 [failoverd gateway] ─in0─ core ─ server
//!   failover0: 100.96.0.2, fd00:96::2      fogw0 (coalesces up)      198.19.0.100, fd00:19::100
//!   (coalesces down)
//! ```
//!
//! How: a real TCP connection is opened from the sending side to a listener on the receiving
//! side (the client's stable address, or the server); the sender's own socket then stays idle,
//! and its sequence numbers, read from the SYN-ACK it received, are used by a raw socket in the
//! same namespace to send the stream itself: full-size segments, all alike (no options, one ACK
//! number), so the receiving TUN can coalesce them. In each round of 16, some go out first as
//! *corrupt* copies (the payload overwritten after the checksum was computed, like a bit flip in
//! transit): a burst of eight back to back, some sprinkled through valid ones, some at the head
//! and some at the tail of the batch. While a round's first pass is sent, the daemon whose TUN
//! writes it is stopped (SIGSTOP), so the whole round waits in its UDP socket and is decrypted
//! and written as one batch: coalescing is certain to be tried, not left to timing. The valid
//! copies of the corrupt segments follow in a second pass once the first has reached the
//! receiver. The receiving application must read exactly the valid stream (a corrupt payload
//! is upper case, the valid one lower case), and the receiver's `TcpInCsumErrors` must count
//! every corrupt segment.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use netns_tests::lab::{wait_until, Daemon, Lab, Ns, Topology};
use netns_tests::measure::{counter_delta, net_counters};
use netns_tests::scenario::*;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use wire::{checksum, Ipv4Packet, Ipv4Repr, Ipv6Repr, TcpPacket};

/// The receiver's counter of TCP segments dropped for a bad checksum (IPv4 and IPv6 alike).
const CSUM_ERRORS: &str = "TcpInCsumErrors";
/// The tunnel MTU of the lab: every crafted packet is this long (full-size segments).
const INNER_MTU: usize = DEFAULT_MTU as usize;
/// TCP header without options.
const TCP_HEADER: usize = 20;
/// Segments per round.
const ROUND: usize = 16;
/// Which of a round's segments go out corrupt first; each plan is run [`CYCLES`] times.
const PLANS: [(&str, &[usize]); 4] = [
    (
        "a burst of 8 corrupt segments mid-stream",
        &[4, 5, 6, 7, 8, 9, 10, 11],
    ),
    (
        "corrupt segments sprinkled through valid ones",
        &[1, 4, 8, 13],
    ),
    ("corrupt segments at the head of the batch", &[0, 1]),
    ("corrupt segments at the tail of the batch", &[14, 15]),
];
const CYCLES: usize = 2;
/// What a corrupt segment carries: upper case, which the valid stream never holds.
const MARKER: &[u8] = b"LAUNDERED ";
/// How long a round may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long a stopped daemon's socket may take to collect a round.
const COLLECT: Duration = Duration::from_secs(2);

/// The valid stream's byte at `offset`: lower case only.
fn stream_byte(offset: u64) -> u8 {
    b'a' + ((offset.wrapping_mul(2_654_435_761) >> 11) % 26) as u8
}

/// An interface's receive counters (bytes, packets) inside a namespace, from
/// `/proc/thread-self/net/dev`.
fn rx_stats(lab: &Lab, ns: &Ns, ifname: &str) -> (u64, u64) {
    let text = lab
        .run_in(ns, || std::fs::read_to_string("/proc/thread-self/net/dev"))
        .unwrap()
        .unwrap();
    text.lines()
        .find_map(|line| {
            let (name, rest) = line.split_once(':')?;
            if name.trim() != ifname {
                return None;
            }
            let mut fields = rest.split_whitespace().map(|f| f.parse::<u64>().ok());
            Some((fields.next()??, fields.next()??))
        })
        .unwrap_or_else(|| panic!("no interface {ifname} in ns {}", ns.name()))
}

/// One direction of the test and where to watch it.
struct Direction<'a> {
    name: String,
    /// crafts the stream (its own socket stays idle)
    sender: &'a Ns,
    /// the application reading the stream, and the kernel that must drop corrupt segments
    receiver: &'a Ns,
    /// the receiver's listening address
    listen: IpAddr,
    /// the daemon that decrypts the stream and writes it, coalesced, to its TUN
    coalescer: &'a Daemon,
    /// where that daemon's encrypted datagrams arrive (its namespace, its underlay interface)
    underlay: (&'a Ns, &'static str),
    /// its TUN (its namespace, the interface): one received packet per write
    tun: (&'a Ns, &'static str),
    /// the receiver's interface the stream arrives on
    arrival: (&'a Ns, &'static str),
}

/// The crafted flow: addresses, ports and the sender's sequence numbers.
#[derive(Debug, Clone, Copy)]
struct Flow {
    src: SocketAddr,
    dst: SocketAddr,
    /// the sender's next sequence number when the stream starts
    seq: u32,
    /// what the sender acknowledges (the receiver's next sequence number)
    ack: u32,
    /// payload bytes of a full-size segment
    payload: usize,
}

impl Flow {
    /// Segment `index` of the stream as bytes for an `IPPROTO_RAW` socket: IP header, TCP header
    /// (ACK, no options) and a full-size payload; `corrupt`: the payload is overwritten after
    /// the checksum was computed over the valid one.
    fn segment(&self, index: usize, corrupt: bool) -> Vec<u8> {
        let offset = (index * self.payload) as u64;
        let mut tcp = vec![0u8; TCP_HEADER + self.payload];
        tcp[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        let seq = self.seq.wrapping_add(offset as u32);
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&self.ack.to_be_bytes());
        tcp[12] = ((TCP_HEADER / 4) as u8) << 4;
        tcp[13] = wire::tcp::flags::ACK;
        tcp[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        for (i, b) in tcp[TCP_HEADER..].iter_mut().enumerate() {
            *b = stream_byte(offset + i as u64);
        }
        let (src, dst) = (self.src.ip(), self.dst.ip());
        let pseudo = checksum::pseudo_header_ip(src, dst, wire::ip::PROTO_TCP, tcp.len()).unwrap();
        let sum = checksum::finish(checksum::fold(checksum::add(pseudo, &tcp)));
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        assert!(TcpPacket::new_unchecked(&tcp[..]).verify_checksum(src, dst));
        if corrupt {
            for (b, m) in tcp[TCP_HEADER..].iter_mut().zip(MARKER.iter().cycle()) {
                *b = *m;
            }
            assert!(
                !TcpPacket::new_unchecked(&tcp[..]).verify_checksum(src, dst),
                "a corrupt segment must fail its checksum"
            );
        }
        let mut packet = vec![0u8; INNER_MTU];
        let ip_len = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                protocol: wire::ip::PROTO_TCP,
                payload_len: tcp.len(),
                ttl: 64,
                dont_frag: true,
            }
            .emit(&mut packet),
            (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: wire::ip::PROTO_TCP,
                payload_len: tcp.len(),
                hop_limit: 64,
            }
            .emit(&mut packet),
            _ => unreachable!("one family"),
        }
        .unwrap();
        packet.truncate(ip_len);
        packet.extend_from_slice(&tcp);
        assert_eq!(packet.len(), INNER_MTU);
        packet
    }
}

/// Connects from `d.sender` to a listener on `d.receiver` and reads the sender's sequence
/// numbers from the SYN-ACK it received. Returns the flow, the sender's idle socket (kept open
/// so the sender's kernel does not reset the connection) and the receiver's socket.
fn connect(lab: &Lab, d: &Direction<'_>) -> (Flow, TcpStream, TcpStream) {
    let listener = lab
        .run_in(d.receiver, || {
            TcpListener::bind(SocketAddr::new(d.listen, 0))
        })
        .unwrap()
        .unwrap();
    let target = listener.local_addr().unwrap();
    let domain = Domain::for_address(target);
    // opened before the connection, so it holds a copy of the SYN-ACK
    let sniffer = lab
        .run_in(d.sender, || {
            Socket::new(domain, Type::RAW, Some(Protocol::TCP))
        })
        .unwrap()
        .unwrap();
    sniffer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let sender = lab
        .run_in(d.sender, || {
            TcpStream::connect_timeout(&target, Duration::from_secs(5))
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{}: connect to {target}: {e}", d.name));
    let (receiver, _) = listener.accept().unwrap();
    let local = sender.local_addr().unwrap();
    let mut buf = vec![0u8; 65_536];
    let synack = (0..1000)
        .find_map(|_| {
            let n = (&sniffer).read(&mut buf).unwrap();
            // an IPv4 raw socket reads the IP header too, an IPv6 one only the payload
            let tcp = if domain == Domain::IPV4 {
                Ipv4Packet::new_checked(&buf[..n]).ok()?.payload()
            } else {
                &buf[..n]
            };
            let tcp = TcpPacket::new_checked(tcp).ok()?;
            let syn_ack = wire::tcp::flags::SYN | wire::tcp::flags::ACK;
            (tcp.src_port() == target.port()
                && tcp.dst_port() == local.port()
                && tcp.flags() & syn_ack == syn_ack)
                .then(|| (tcp.seq_number(), tcp.ack_number()))
        })
        .expect("the SYN-ACK of the connection");
    let header = if domain == Domain::IPV4 {
        wire::ipv4::MIN_HEADER_LEN
    } else {
        wire::ipv6::HEADER_LEN
    };
    let flow = Flow {
        src: local,
        dst: target,
        seq: synack.1,
        ack: synack.0.wrapping_add(1),
        payload: INNER_MTU - header - TCP_HEADER,
    };
    (flow, sender, receiver)
}

/// Reads `stream` on a thread until `total` bytes (or EOF, or 20 s of silence); what was read so
/// far is shared.
fn reader(
    mut stream: TcpStream,
    total: usize,
) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<io::Result<()>>) {
    let read = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let shared = Arc::clone(&read);
    let handle = std::thread::spawn(move || {
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut buf = vec![0u8; 65_536];
        loop {
            if shared.lock().unwrap().len() >= total {
                return Ok(());
            }
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            shared.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (read, handle)
}

/// SIGCONTs a daemon stopped with SIGSTOP when dropped, even if the test panics meanwhile.
struct Stopped<'a>(&'a Daemon);

impl<'a> Stopped<'a> {
    fn new(daemon: &'a Daemon) -> Self {
        daemon.signal(libc::SIGSTOP).unwrap();
        Self(daemon)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let _ = self.0.signal(libc::SIGCONT);
    }
}

/// What one direction saw.
#[derive(Debug, Default)]
struct Outcome {
    segments: u64,
    corrupt: u64,
    csum_errors: u64,
    tun_writes: u64,
    /// first-pass batches the stopped daemon's socket collected whole
    collected: usize,
    /// first passes whose payload reached the receiver's interface in time
    arrived: usize,
    /// bytes of the valid stream sent
    total: usize,
    verified: usize,
    laundered_bytes: usize,
    /// the application read exactly the valid stream
    intact: bool,
    /// the plans of the rounds whose corrupt payload the application read
    laundered_in: Vec<&'static str>,
}

fn run_direction(lab: &Lab, d: &Direction<'_>) -> Outcome {
    let (flow, _idle_sender, receiver) = connect(lab, d);
    let raw = lab
        .run_in(d.sender, || {
            Socket::new(
                Domain::for_address(flow.dst),
                Type::RAW,
                Some(Protocol::from(libc::IPPROTO_RAW)),
            )
        })
        .unwrap()
        .unwrap();
    let to = SockAddr::from(SocketAddr::new(flow.dst.ip(), 0));
    let send = |packet: &[u8]| {
        let n = raw.send_to(packet, &to).unwrap();
        assert_eq!(n, packet.len());
    };
    let rounds = PLANS.len() * CYCLES;
    let total = rounds * ROUND * flow.payload;
    let (read, reading) = reader(receiver, total);
    let counters_before = net_counters(lab, d.receiver).unwrap();
    let tun_before = rx_stats(lab, d.tun.0, d.tun.1).1;
    let mut out = Outcome {
        total,
        ..Outcome::default()
    };
    for round in 0..rounds {
        let (_, corrupt) = PLANS[round % PLANS.len()];
        let first = round * ROUND;
        // the first pass, corrupt copies in place, collected whole by the stopped daemon
        let underlay_before = rx_stats(lab, d.underlay.0, d.underlay.1).0;
        let arrival_before = rx_stats(lab, d.arrival.0, d.arrival.1).0;
        {
            let _stopped = Stopped::new(d.coalescer);
            for i in 0..ROUND {
                send(&flow.segment(first + i, corrupt.contains(&i)));
            }
            let want = (ROUND * (INNER_MTU + 32)) as u64;
            if wait_until(COLLECT, "the round to reach the stopped daemon", || {
                rx_stats(lab, d.underlay.0, d.underlay.1)
                    .0
                    .saturating_sub(underlay_before)
                    >= want
            })
            .is_ok()
            {
                out.collected += 1;
            }
        }
        let payload = (ROUND * flow.payload) as u64;
        if wait_until(ARRIVAL, "the first pass to reach the receiver", || {
            rx_stats(lab, d.arrival.0, d.arrival.1)
                .0
                .saturating_sub(arrival_before)
                >= payload
        })
        .is_ok()
        {
            out.arrived += 1;
        }
        // the valid copies of the corrupt segments
        for &i in corrupt {
            send(&flow.segment(first + i, false));
        }
        out.segments += (ROUND + corrupt.len()) as u64;
        out.corrupt += corrupt.len() as u64;
        let end = (first + ROUND) * flow.payload;
        wait_until(
            ARRIVAL,
            "the receiving application to read the round",
            || read.lock().unwrap().len() >= end,
        )
        .unwrap_or_else(|e| {
            panic!(
                "{}: round {round}: {e}: read {} of {end} bytes",
                d.name,
                read.lock().unwrap().len()
            )
        });
    }
    // corrupt segments of the last round may still be on their way to the counter
    let _ = wait_until(
        Duration::from_secs(1),
        "every corrupt segment counted",
        || {
            let now = net_counters(lab, d.receiver).unwrap();
            counter_delta(&counters_before, &now, CSUM_ERRORS) >= out.corrupt
        },
    );
    let counters_after = net_counters(lab, d.receiver).unwrap();
    out.csum_errors = counter_delta(&counters_before, &counters_after, CSUM_ERRORS);
    out.tun_writes = rx_stats(lab, d.tun.0, d.tun.1).1.saturating_sub(tun_before);
    reading.join().unwrap().unwrap();
    let read = read.lock().unwrap();
    out.verified = read
        .iter()
        .enumerate()
        .take_while(|(i, b)| **b == stream_byte(*i as u64))
        .count();
    out.laundered_bytes = read.iter().filter(|b| b.is_ascii_uppercase()).count();
    out.intact = out.verified == total;
    for (round, bytes) in read.chunks(ROUND * flow.payload).enumerate() {
        let (plan, _) = PLANS[round % PLANS.len()];
        if bytes.iter().any(u8::is_ascii_uppercase) && !out.laundered_in.contains(&plan) {
            out.laundered_in.push(plan);
        }
    }
    assert_eq!(read.len(), total, "{}: the stream's length", d.name);
    out
}

#[test]
fn corrupt_segments_are_dropped_not_laundered_either_way() {
    let fl = FailoverLab::new("checksums", 1, "").unwrap();
    let (client, server) = (&fl.topo.client, &fl.topo.server);
    let dc1 = fl.dc(1).unwrap();
    // the crafted segments carry no options, so the connections must not negotiate timestamps
    for ns in [client, server] {
        fl.lab.sysctl(ns, "net.ipv4.tcp_timestamps", "0").unwrap();
    }
    let gateway = &fl.gateways[0].daemon;
    let stable: [IpAddr; 2] = [STABLE_V4.parse().unwrap(), STABLE_V6.parse().unwrap()];
    let servers: [IpAddr; 2] = [Topology::SERVER_IP4.into(), Topology::SERVER_IP6.into()];
    let mut failures = Vec::new();
    for family in 0..2 {
        let v = if family == 0 { "IPv4" } else { "IPv6" };
        let directions = [
            Direction {
                name: format!("server → gateway → client, {v}"),
                sender: server,
                receiver: client,
                listen: stable[family],
                coalescer: &fl.client.daemon,
                underlay: (client, "up0"),
                tun: (client, "failover0"),
                arrival: (client, "failover0"),
            },
            Direction {
                name: format!("client → gateway → server, {v}"),
                sender: client,
                receiver: server,
                listen: servers[family],
                coalescer: gateway,
                underlay: (dc1, "wan0"),
                tun: (dc1, "fogw0"),
                arrival: (server, "eth0"),
            },
        ];
        for d in &directions {
            let o = run_direction(&fl.lab, d);
            eprintln!(
                "{}: {} segments, {} corrupt → receiver {CSUM_ERRORS} +{}; {} bytes sent, {} \
                 verified, {} laundered (corrupt payload read); TUN writes {} for {} segments; \
                 first passes collected whole {}/{}, arrived {}/{}",
                d.name,
                o.segments,
                o.corrupt,
                o.csum_errors,
                o.total,
                o.verified,
                o.laundered_bytes,
                o.tun_writes,
                o.segments,
                o.collected,
                PLANS.len() * CYCLES,
                o.arrived,
                PLANS.len() * CYCLES,
            );
            if !o.intact || o.laundered_bytes > 0 {
                failures.push(format!(
                    "{}: the application read a corrupt payload ({} bytes, the first wrong byte at \
                     offset {}; in rounds of: {})",
                    d.name,
                    o.laundered_bytes,
                    o.verified,
                    o.laundered_in.join("; ")
                ));
            }
            if o.csum_errors < o.corrupt {
                failures.push(format!(
                    "{}: {} corrupt segments sent, the receiver counted {} checksum errors: the \
                     rest were accepted (laundered) or lost",
                    d.name, o.corrupt, o.csum_errors
                ));
            }
            if o.tun_writes >= o.segments {
                failures.push(format!(
                    "{}: {} segments took {} TUN writes: nothing was coalesced, so the test \
                     proved nothing about coalescing",
                    d.name, o.segments, o.tun_writes
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(fl.active().unwrap(), "dc1", "no switch");
}
