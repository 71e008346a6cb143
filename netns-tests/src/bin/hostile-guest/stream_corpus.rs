//! The stream front end's corpus: what a hostile VMM sends on QEMU's stream socket.

use super::*;

/// `frame` with its length prefix.
pub(super) fn framed(frame: &[u8]) -> Vec<u8> {
    let mut v = prefix(u32::try_from(frame.len()).unwrap_or(u32::MAX)).to_vec();
    v.extend_from_slice(frame);
    v
}

fn prefix(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}

/// What came back on one connection.
#[derive(Debug, Default, Clone)]
struct Received {
    frames: u64,
    arp_replies: u64,
    gateway_replies: u64,
    other: u64,
    /// the shim ended the connection (EOF or reset) before we did
    closed_by_shim: bool,
    error: Option<String>,
}

impl Received {
    fn json(&self) -> Value {
        json!({
            "frames": self.frames,
            "arp_replies": self.arp_replies,
            "gateway_replies": self.gateway_replies,
            "other_frames": self.other,
            "closed_by_shim": self.closed_by_shim,
            "read_error": self.error,
        })
    }
}

/// One connection to the shim, with a thread reading what it sends.
struct Conn {
    stream: UnixStream,
    /// the reader reads only once this is set
    go: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    arp: Arc<AtomicU64>,
    gateway: Arc<AtomicU64>,
    reader: Option<thread::JoinHandle<Received>>,
}

impl Conn {
    fn open(path: &Path, t: &mut Tally) -> Res<Conn> {
        let c = Self::open_paused(path, t)?;
        c.go.store(true, Ordering::SeqCst);
        Ok(c)
    }

    /// A connection whose replies are not read until `go` is set.
    fn open_paused(path: &Path, t: &mut Tally) -> Res<Conn> {
        let stream = UnixStream::connect(path).map_err(ctx("connecting"))?;
        t.connected(&stream);
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(ctx("write timeout"))?;
        let r = stream.try_clone().map_err(ctx("cloning the socket"))?;
        r.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(ctx("read timeout"))?;
        let go = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let arp = Arc::new(AtomicU64::new(0));
        let gateway = Arc::new(AtomicU64::new(0));
        let (go2, s2, a2, g2) = (go.clone(), stop.clone(), arp.clone(), gateway.clone());
        let reader = thread::Builder::new()
            .name("stream-reader".into())
            .spawn(move || {
                while !go2.load(Ordering::SeqCst) && !s2.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(2));
                }
                read_frames(&r, &s2, &a2, &g2)
            })
            .map_err(ctx("starting the reader"))?;
        Ok(Conn {
            stream,
            go,
            stop,
            arp,
            gateway,
            reader: Some(reader),
        })
    }

    fn send(&self, bytes: &[u8]) -> Res<()> {
        (&self.stream).write_all(bytes).map_err(ctx("writing"))
    }

    /// Waits until at least `gateway` answers for the gateway and `all` ARP replies in
    /// total came back.
    fn wait_arp(&self, gateway: u64, all: u64, timeout: Duration) -> bool {
        let deadline = now() + timeout;
        loop {
            if self.gateway.load(Ordering::SeqCst) >= gateway
                && self.arp.load(Ordering::SeqCst) >= all
            {
                return true;
            }
            if now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Ends the connection: half-closes it first if `half_close`, then waits up to `wait`
    /// for the shim to close its side, then closes ours.
    fn close(&mut self, half_close: bool, wait: Duration) -> Received {
        if half_close {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        let Some(reader) = self.reader.take() else {
            return Received::default();
        };
        let deadline = now() + wait;
        while !reader.is_finished() && now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        reader.join().unwrap_or_default()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.close(false, Duration::ZERO);
        }
    }
}

fn read_frames(s: &UnixStream, stop: &AtomicBool, arp: &AtomicU64, gw: &AtomicU64) -> Received {
    let mut r = Received::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match (&*s).read(&mut buf) {
            Ok(0) => {
                r.closed_by_shim = !stop.load(Ordering::SeqCst);
                break;
            }
            Ok(n) => {
                pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                while let Some(len) = pending.first_chunk::<4>().map(|p| u32::from_be_bytes(*p)) {
                    let len = len as usize;
                    if len > 1 << 20 {
                        r.error = Some(format!("the shim sent a frame length of {len}"));
                        return r;
                    }
                    let Some(frame) = pending.get(4..4 + len) else {
                        break;
                    };
                    r.frames += 1;
                    match arp_reply_spa(frame) {
                        Some(spa) => {
                            r.arp_replies += 1;
                            arp.fetch_add(1, Ordering::SeqCst);
                            if spa == GATEWAY_IP {
                                r.gateway_replies += 1;
                                gw.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        None => r.other += 1,
                    }
                    pending.drain(..4 + len);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                if !stop.load(Ordering::SeqCst) {
                    r.closed_by_shim = true;
                    r.error = Some(e.to_string());
                }
                break;
            }
        }
    }
    r
}

type Case = fn(&Path, &mut Rng, &mut Tally) -> Res<()>;

/// The corpus, in order. Each case opens its own connection(s).
const CASES: &[(&str, Case)] = &[
    ("zero_length", zero_length),
    ("shorter_than_ethernet", shorter_than_ethernet),
    ("oversize", oversize),
    ("desync_ffffffff", |p, r, t| {
        desync(p, r, t, "desync_ffffffff", u32::MAX)
    }),
    ("desync_300000", |p, r, t| {
        desync(p, r, t, "desync_300000", 300_000)
    }),
    ("desync_262145", |p, r, t| {
        desync(p, r, t, "desync_262145", 262_145)
    }),
    ("largest_skippable_262144", largest_skippable),
    ("prefix_byte_by_byte", prefix_byte_by_byte),
    ("eof_in_prefix", eof_in_prefix),
    ("eof_mid_frame", eof_mid_frame),
    ("tiny_frames_one_write", tiny_frames_one_write),
    ("random_garbage", random_garbage),
    ("hostile_ethernet", hostile_ethernet),
    ("replies_not_read", replies_not_read),
];

/// Runs the corpus, then the clean check; returns whether the shim served.
pub(super) fn run(args: &Args, t: &mut Tally) -> bool {
    let mut rng = Rng(args.seed);
    let started = now();
    for (name, case) in CASES {
        if args.skip.iter().any(|s| s == name) {
            t.skipped.push((*name).to_owned());
            continue;
        }
        if let Err(e) = case(&args.socket, &mut rng, t) {
            t.note(format!("{name}: {e}"));
        }
    }
    t.result("corpus_ms", elapsed_ms(started));
    served(&args.socket, t)
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Valid probes on a connection: counted, and their replies expected.
fn probes(t: &mut Tally, n: u64) {
    t.sent("valid_arp_request", n);
    t.expect("arp_replies", n);
}

/// A clean connection: one ARP request, its reply within 5 s.
fn served(path: &Path, t: &mut Tally) -> bool {
    let started = now();
    let mut c = match Conn::open(path, t) {
        Ok(c) => c,
        Err(e) => {
            t.note(format!("served_after: {e}"));
            return false;
        }
    };
    if let Err(e) = c.send(&framed(&probe())) {
        t.note(format!("served_after: {e}"));
    }
    let ok = c.wait_arp(1, 1, SERVED_TIMEOUT);
    t.result("served_after_ms", elapsed_ms(started));
    let r = c.close(true, CLOSE_WAIT);
    t.result("served_after_connection", r.json());
    t.sent("valid_arp_request", 1);
    ok
}

fn zero_length(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    let mut w = Vec::new();
    for _ in 0..100 {
        w.extend_from_slice(&prefix(0));
    }
    w.extend(framed(&probe()));
    c.send(&w)?;
    let kept = c.wait_arp(1, 1, REPLY_WAIT);
    let r = c.close(true, CLOSE_WAIT);
    t.sent("zero_length_frame", 100);
    t.expect("link.receive.empty_frames", 100);
    probes(t, 1);
    t.result(
        "zero_length",
        json!({"answered_after": kept, "connection": r.json()}),
    );
    Ok(())
}

fn shorter_than_ethernet(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    let mut w = Vec::new();
    for _ in 0..5 {
        for len in 1..=13usize {
            w.extend(framed(&rng.bytes(len)));
        }
    }
    w.extend(framed(&probe()));
    c.send(&w)?;
    let kept = c.wait_arp(1, 1, REPLY_WAIT);
    let r = c.close(true, CLOSE_WAIT);
    t.sent("frame_1_to_13_bytes", 65);
    t.expect("drops.frame_too_short", 65);
    probes(t, 1);
    t.result(
        "shorter_than_ethernet",
        json!({"answered_after": kept, "connection": r.json()}),
    );
    Ok(())
}

fn oversize(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    for len in [MAX_FRAME + 1, 200_000] {
        c.send(&framed(&rng.bytes(len)))?;
    }
    // the largest accepted frame: parsed, and dropped for its EtherType
    let mut largest = ether(SHIM_MAC, GUEST_MAC, ETH_EXPERIMENTAL, &[]);
    largest.resize(MAX_FRAME, 0);
    c.send(&framed(&largest))?;
    c.send(&framed(&probe()))?;
    let kept = c.wait_arp(1, 1, REPLY_WAIT);
    let r = c.close(true, CLOSE_WAIT);
    t.sent("frame_65550_bytes", 1);
    t.sent("frame_200000_bytes", 1);
    t.sent("frame_65549_bytes", 1);
    t.expect("link.receive.oversize_frames", 2);
    t.expect("drops.unknown_ethertype", 1);
    probes(t, 1);
    t.result(
        "oversize",
        json!({"answered_after": kept, "connection": r.json()}),
    );
    Ok(())
}

/// A length beyond anything QEMU sends: the shim must close the connection by itself.
fn desync(path: &Path, rng: &mut Rng, t: &mut Tally, name: &str, len: u32) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    let mut w = prefix(len).to_vec();
    w.extend(rng.bytes(1000));
    w.extend(framed(&probe()));
    let sent = c.send(&w);
    let answered = c.wait_arp(1, 1, Duration::from_millis(300));
    let r = c.close(false, CLOSE_WAIT);
    t.sent(&format!("length_prefix_{len}"), 1);
    t.expect("link.receive.desyncs", 1);
    t.result(
        name,
        json!({
            "closed_by_shim": r.closed_by_shim,
            "answered_after": answered,
            "write_error": sent.err(),
            "connection": r.json(),
        }),
    );
    Ok(())
}

fn largest_skippable(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    c.send(&framed(&rng.bytes(262_144)))?;
    c.send(&framed(&probe()))?;
    let kept = c.wait_arp(1, 1, REPLY_WAIT);
    let r = c.close(true, CLOSE_WAIT);
    t.sent("frame_262144_bytes", 1);
    t.expect("link.receive.oversize_frames", 1);
    probes(t, 1);
    t.result(
        "largest_skippable_262144",
        json!({"answered_after": kept, "connection": r.json()}),
    );
    Ok(())
}

fn prefix_byte_by_byte(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    for _ in 0..3 {
        let f = framed(&probe());
        let (head, body) = f.split_at(4);
        for b in head {
            c.send(&[*b])?;
            thread::sleep(Duration::from_millis(40));
        }
        let (b1, b2) = body.split_at(17);
        c.send(b1)?;
        thread::sleep(Duration::from_millis(40));
        c.send(b2)?;
    }
    let kept = c.wait_arp(3, 3, REPLY_WAIT);
    let r = c.close(true, CLOSE_WAIT);
    t.sent("prefix_one_byte_at_a_time", 3);
    probes(t, 3);
    t.result(
        "prefix_byte_by_byte",
        json!({"all_answered": kept, "connection": r.json()}),
    );
    Ok(())
}

fn eof_in_prefix(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
    for k in 1..=3usize {
        let mut c = Conn::open(path, t)?;
        c.send(prefix(42).get(..k).unwrap_or_default())?;
        let r = c.close(true, CLOSE_WAIT);
        t.sent(&format!("eof_after_{k}_length_bytes"), 1);
        t.result(
            &format!("eof_after_{k}_length_bytes"),
            json!({"closed_by_shim": r.closed_by_shim}),
        );
    }
    Ok(())
}

fn eof_mid_frame(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    let f = framed(&probe());
    c.send(f.get(..30).unwrap_or_default())?;
    let r = c.close(true, CLOSE_WAIT);
    t.sent("eof_mid_frame", 1);
    t.result("eof_mid_frame", json!({"closed_by_shim": r.closed_by_shim}));
    // and in the middle of an oversize frame being skipped
    let mut c = Conn::open(path, t)?;
    let mut w = prefix(200_000).to_vec();
    w.extend(rng.bytes(1000));
    c.send(&w)?;
    let r = c.close(true, CLOSE_WAIT);
    t.sent("eof_mid_skipped_frame", 1);
    t.expect("link.receive.oversize_frames", 1);
    t.result(
        "eof_mid_skipped_frame",
        json!({"closed_by_shim": r.closed_by_shim}),
    );
    Ok(())
}

fn tiny_frames_one_write(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    let header = ether(SHIM_MAC, GUEST_MAC, ETH_EXPERIMENTAL, &[0, 0]);
    let mut w = Vec::new();
    let (mut short, mut unknown) = (0u64, 0u64);
    for i in 0..10_000usize {
        let len = 1 + i % 16;
        w.extend(framed(header.get(..len).unwrap_or_default()));
        if len < 14 {
            short += 1;
        } else {
            unknown += 1;
        }
    }
    w.extend(framed(&probe()));
    c.send(&w)?;
    let kept = c.wait_arp(1, 1, REPLY_WAIT);
    let r = c.close(true, CLOSE_WAIT);
    t.sent("tiny_frame_burst_frames", 10_000);
    t.sent("tiny_frame_burst_bytes", w.len() as u64);
    t.expect("drops.frame_too_short", short);
    t.expect("drops.unknown_ethertype", unknown);
    probes(t, 1);
    t.result(
        "tiny_frames_one_write",
        json!({"answered_after": kept, "connection": r.json()}),
    );
    Ok(())
}

fn random_garbage(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    let mut w = Vec::new();
    let n = 2000;
    for _ in 0..n {
        let len = match rng.next() % 20 {
            0 => rng.range(1601, 9000),
            1..=5 => rng.range(129, 1600),
            _ => rng.range(1, 128),
        };
        w.extend(framed(&rng.bytes(usize::try_from(len).unwrap_or(1))));
    }
    // written in random pieces, so frames and prefixes straddle reads
    let mut rest = w.as_slice();
    while !rest.is_empty() {
        let k = usize::try_from(rng.range(1, 8192))
            .unwrap_or(1)
            .min(rest.len());
        let (piece, tail) = rest.split_at(k);
        c.send(piece)?;
        rest = tail;
    }
    let r = c.close(true, CLOSE_WAIT);
    t.sent("random_garbage_frames", n);
    t.result("random_garbage", json!({"connection": r.json()}));
    Ok(())
}

/// 30 000 ARP requests while nothing is read: the shim must drop what does not fit its
/// backlog, never block, and answer once the guest reads again.
fn replies_not_read(path: &Path, _rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open_paused(path, t)?;
    let mut w = Vec::new();
    for i in 0..30_000u32 {
        let host = 3 + (i % 250) as u8;
        w.extend(framed(&arp_request(
            GUEST_MAC,
            GUEST_IP,
            [10, 200, 0, host],
        )));
    }
    c.send(&w)?;
    t.sent("arp_requests_replies_not_read", 30_000);
    t.expect("link.send.dropped_backlog_full", 1);
    thread::sleep(Duration::from_millis(500));
    c.go.store(true, Ordering::SeqCst);
    // the backlog drains; then a probe on the same connection is answered
    thread::sleep(Duration::from_millis(500));
    c.send(&framed(&probe()))?;
    probes(t, 1);
    let kept = c.wait_arp(1, 1, REPLY_WAIT);
    let r = c.close(true, CLOSE_WAIT);
    t.result(
        "replies_not_read",
        json!({"answered_after": kept, "connection": r.json()}),
    );
    Ok(())
}

/// Well-framed frames that the Ethernet core must refuse, on one connection that keeps
/// working throughout.
fn hostile_ethernet(path: &Path, rng: &mut Rng, t: &mut Tally) -> Res<()> {
    let mut c = Conn::open(path, t)?;
    let mut replies = 0u64;
    // first frame: the guest's MAC is learned from it
    c.send(&framed(&probe()))?;
    probes(t, 1);
    replies += 1;

    let mut batch = Vec::new();
    let add = |batch: &mut Vec<u8>, t: &mut Tally, kind: &str, frame: &[u8], drop: Option<&str>| {
        batch.extend(framed(frame));
        t.sent(kind, 1);
        if let Some(d) = drop {
            t.expect(d, 1);
        }
    };
    let arp = arp_body(1, GUEST_MAC, GUEST_IP, [0; 6], GATEWAY_IP);
    for i in 0..50u16 {
        let mut tagged = (i & 0x0fff).to_be_bytes().to_vec();
        tagged.extend_from_slice(&ETH_ARP.to_be_bytes());
        tagged.extend_from_slice(&arp);
        let frame = ether(BROADCAST, GUEST_MAC, ETH_VLAN, &tagged);
        add(
            &mut batch,
            t,
            "vlan_8021q",
            &frame,
            Some("drops.vlan_tagged"),
        );
        let frame = ether(BROADCAST, GUEST_MAC, ETH_QINQ, &tagged);
        add(
            &mut batch,
            t,
            "vlan_8021ad",
            &frame,
            Some("drops.vlan_tagged"),
        );
    }
    let known = [ETH_IPV4, ETH_ARP, ETH_IPV6, ETH_VLAN, ETH_QINQ];
    let mut unknown_types = vec![0x0000u16, 0x05dc, 0xffff, 0x8847, 0x88cc];
    while unknown_types.len() < 100 {
        let et = (rng.next() & 0xffff) as u16;
        if !known.contains(&et) {
            unknown_types.push(et);
        }
    }
    for et in unknown_types {
        let frame = ether(SHIM_MAC, GUEST_MAC, et, &rng.bytes(46));
        add(
            &mut batch,
            t,
            "unknown_ethertype",
            &frame,
            Some("drops.unknown_ethertype"),
        );
    }
    for i in 0..50u8 {
        let src = match i % 5 {
            0 => BROADCAST,
            1 => [0; 6],
            2 => [0x33, 0x33, 0, 0, 0, i],
            _ => [0x01, 0x00, 0x5e, 0, 0, i],
        };
        let frame = ether(
            SHIM_MAC,
            src,
            ETH_ARP,
            &arp_body(1, src, GUEST_IP, [0; 6], GATEWAY_IP),
        );
        add(
            &mut batch,
            t,
            "multicast_or_zero_source_mac",
            &frame,
            Some("drops.bad_source_mac"),
        );
    }
    for _ in 0..50 {
        let frame = arp_request(OTHER_MAC, [10, 200, 0, 77], GATEWAY_IP);
        add(
            &mut batch,
            t,
            "foreign_source_mac",
            &frame,
            Some("drops.foreign_source_mac"),
        );
    }
    for _ in 0..20 {
        let frame = ether(OTHER_MAC, GUEST_MAC, ETH_ARP, &arp);
        add(
            &mut batch,
            t,
            "unicast_not_for_shim",
            &frame,
            Some("drops.not_for_shim"),
        );
    }
    for i in 0..20usize {
        let body = match i % 4 {
            0 => arp.get(..10).unwrap_or_default().to_vec(),
            1 => [&[0u8, 6][..], arp.get(2..).unwrap_or_default()].concat(), // htype 6
            2 => arp_body(3, GUEST_MAC, GUEST_IP, [0; 6], GATEWAY_IP),       // op 3
            _ => arp.get(..27).unwrap_or_default().to_vec(),                 // one byte short
        };
        let frame = ether(BROADCAST, GUEST_MAC, ETH_ARP, &body);
        add(
            &mut batch,
            t,
            "arp_malformed",
            &frame,
            Some("drops.arp_malformed"),
        );
    }
    for i in 0..20usize {
        let body = match i % 4 {
            0 => arp_body(1, GUEST_MAC, GUEST_IP, [0; 6], GUEST_IP), // for its own address
            1 => arp_body(1, GUEST_MAC, [0; 4], [0; 6], GATEWAY_IP), // a probe
            2 => arp_body(2, GUEST_MAC, GUEST_IP, SHIM_MAC, GATEWAY_IP), // a reply
            _ => arp_body(1, OTHER_MAC, GUEST_IP, [0; 6], GATEWAY_IP), // sha not the sender
        };
        let frame = ether(BROADCAST, GUEST_MAC, ETH_ARP, &body);
        add(
            &mut batch,
            t,
            "arp_ignored",
            &frame,
            Some("drops.arp_ignored"),
        );
    }
    c.send(&batch)?;

    // a storm of broadcast ARP requests: every one is answered
    let mut storm = Vec::new();
    for i in 0..1000u32 {
        let host = 3 + (i % 250) as u8;
        storm.extend(framed(&arp_request(
            GUEST_MAC,
            GUEST_IP,
            [10, 200, 0, host],
        )));
    }
    c.send(&storm)?;
    t.sent("arp_request_storm", 1000);
    t.expect("arp_replies", 1000);
    replies += 1000;

    let mut dhcp = Vec::new();
    for (kind, frame, drop) in dhcp_corpus(rng) {
        add(&mut dhcp, t, kind, &frame, drop);
    }
    c.send(&dhcp)?;

    c.send(&framed(&probe()))?;
    probes(t, 1);
    replies += 1;
    let all = c.wait_arp(2, replies, Duration::from_secs(10));
    let r = c.close(true, CLOSE_WAIT);
    t.result(
        "hostile_ethernet",
        json!({"all_arp_answered": all, "arp_replies_expected": replies, "connection": r.json()}),
    );
    Ok(())
}
