//! The fuzz corpus (`fuzz/corpus/<target>/`): replayed through the fuzz targets' own bodies,
//! `vmm_shim::fuzzing::*`, so that a crash the fuzzer found stays fixed once its input is
//! added there; and written (`cargo test -p vmm-shim --test fuzz_corpus -- --ignored
//! write_fuzz_corpus`) from the seeds below.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // a test fails by panicking

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use vmm_shim::fuzzing::{self, config, ndp_config, GATEWAY_V4, GUEST_MAC, GUEST_V4};
use vmm_shim::guest::SHIM_MAC;

/// A fuzz target's body.
type Body = fn(&[u8]);

/// `fuzzing::guest_frames` on a virtual clock based at the moment of the call.
fn guest_frames(data: &[u8]) {
    #[allow(clippy::disallowed_methods)] // the base of the run's virtual clock
    let now = std::time::Instant::now();
    fuzzing::guest_frames(data, now);
}

/// The fuzz targets and their bodies.
const TARGETS: &[(&str, Body)] = &[
    ("guest_frames", guest_frames),
    ("stream_framing", fuzzing::stream_framing),
    ("dhcp_message", fuzzing::dhcp_message),
    ("ndp_message", fuzzing::ndp_message),
    ("virtio_header", fuzzing::virtio_header),
];

/// Seeds each target's corpus must hold at least.
const MIN_SEEDS: usize = 15;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn fuzz_corpus_replays() {
    let mut failed = Vec::new();
    for &(target, body) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        assert!(
            files.len() >= MIN_SEEDS,
            "{} holds {} seeds",
            dir.display(),
            files.len()
        );
        for path in files {
            let data = std::fs::read(&path).unwrap_or_default();
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "these inputs fail: {failed:#?}");
}

/// Not a test: writes the seeds into `fuzz/corpus/<target>/` (files of other names, such as
/// crashes added by hand, are left alone).
#[test]
#[ignore = "writes the fuzz corpus"]
fn write_fuzz_corpus() {
    for (target, seeds) in [
        ("guest_frames", seeds::guest_frames()),
        ("stream_framing", seeds::stream_framing()),
        ("dhcp_message", seeds::dhcp_message()),
        ("ndp_message", seeds::ndp_message()),
        ("virtio_header", seeds::virtio_header()),
    ] {
        assert!(seeds.len() >= MIN_SEEDS, "{target}: {} seeds", seeds.len());
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// Builders for well-formed frames, with checksums computed here.
mod build {
    use super::*;

    pub const ETH_IPV4: u16 = 0x0800;
    pub const ETH_ARP: u16 = 0x0806;
    pub const ETH_IPV6: u16 = 0x86dd;
    pub const BROADCAST: [u8; 6] = [0xff; 6];
    pub const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
    pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);
    pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    pub const GUEST_V6: Ipv6Addr = fuzzing::GUEST_V6;
    pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
    /// the solicited-node group of fd00:200::5
    pub const SOLICITED: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 5);
    /// fe80:: + modified EUI-64 of 52:54:00:12:34:56
    pub const GUEST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0x00ff, 0xfe12, 0x3456);
    /// fe80:: + modified EUI-64 of 02:fa:11:0e:00:01
    pub const SHIM_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x00fa, 0x11ff, 0xfe0e, 0x0001);

    pub fn sum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut acc: u32 = 0;
        for w in bytes.chunks(2) {
            acc += u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut b = vec![0, 1, 8, 0, 6, 4];
        b.extend_from_slice(&op.to_be_bytes());
        b.extend_from_slice(&sha);
        b.extend_from_slice(&spa.octets());
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&tpa.octets());
        b
    }

    pub fn ipv4_frag(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        frag: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]);
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        let c = sum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_frag(src, dst, proto, 0x4000, payload)
    }

    fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
        let mut p = src.octets().to_vec();
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p
    }

    fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: usize) -> Vec<u8> {
        let mut p = src.octets().to_vec();
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, next]);
        p
    }

    pub fn udp(sport: u16, dport: u16, payload: &[u8], pseudo: &[u8]) -> Vec<u8> {
        let mut u = sport.to_be_bytes().to_vec();
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        let c = match sum(&[pseudo, &u]) {
            0 => 0xffff,
            c => c,
        };
        u[6..8].copy_from_slice(&c.to_be_bytes());
        u
    }

    pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let ph = pseudo4(src, dst, 17, 8 + payload.len());
        ipv4(src, dst, 17, &udp(sport, dport, payload, &ph))
    }

    /// A SYN with an MSS option; its checksum over `pseudo(len)`.
    pub fn tcp_syn(pseudo: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
        let mut t = 40000u16.to_be_bytes().to_vec();
        t.extend_from_slice(&443u16.to_be_bytes());
        t.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        t.extend_from_slice(&[0; 4]);
        t.extend_from_slice(&[0x60, 0x02]); // 24 bytes, SYN
        t.extend_from_slice(&64240u16.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        let c = sum(&[&pseudo(t.len()), &t]);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }

    pub fn tcp4_syn(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        ipv4(src, dst, 6, &tcp_syn(|n| pseudo4(src, dst, 6, n)))
    }

    pub fn icmp4_echo(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut m = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
        m.extend_from_slice(b"ping ping ping!!");
        let c = sum(&[&m]);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        ipv4(src, dst, 1, &m)
    }

    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, hop]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(payload);
        h
    }

    pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let ph = pseudo6(src, dst, 17, 8 + payload.len());
        ipv6(src, dst, 17, 64, &udp(sport, dport, payload, &ph))
    }

    pub fn tcp6_syn(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        ipv6(src, dst, 6, 64, &tcp_syn(|n| pseudo6(src, dst, 6, n)))
    }

    /// An ICMPv6 message with its checksum.
    pub fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, mut msg: Vec<u8>) -> Vec<u8> {
        msg[2] = 0;
        msg[3] = 0;
        let c = sum(&[&pseudo6(src, dst, 58, msg.len()), &msg]);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        msg
    }

    pub fn rs_msg(slla: Option<[u8; 6]>) -> Vec<u8> {
        let mut m = vec![133, 0, 0, 0, 0, 0, 0, 0];
        if let Some(mac) = slla {
            m.extend_from_slice(&[1, 1]);
            m.extend_from_slice(&mac);
        }
        m
    }

    pub fn ns_msg(target: Ipv6Addr, slla: Option<[u8; 6]>) -> Vec<u8> {
        let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        if let Some(mac) = slla {
            m.extend_from_slice(&[1, 1]);
            m.extend_from_slice(&mac);
        }
        m
    }

    pub fn na_msg(target: Ipv6Addr) -> Vec<u8> {
        let mut m = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[2, 1]);
        m.extend_from_slice(&GUEST_MAC.0);
        m
    }

    pub fn ra_msg() -> Vec<u8> {
        let mut m = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08];
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&GUEST_MAC.0);
        m
    }

    pub fn redirect_msg() -> Vec<u8> {
        let mut m = vec![137, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&GUEST_LL.octets());
        m.extend_from_slice(&SERVER_V6.octets());
        m
    }

    /// An ICMPv6 frame from the guest.
    pub fn ndp_frame(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, msg: Vec<u8>) -> Vec<u8> {
        let msg = icmpv6(src, dst, msg);
        eth(
            dst_mac,
            GUEST_MAC.0,
            ETH_IPV6,
            &ipv6(src, dst, 58, 255, &msg),
        )
    }

    pub fn mcast6(group: Ipv6Addr) -> [u8; 6] {
        let o = group.octets();
        [0x33, 0x33, o[12], o[13], o[14], o[15]]
    }

    /// A DHCP client message (the UDP payload).
    pub fn dhcp(
        kind: u8,
        flags: u16,
        ciaddr: Ipv4Addr,
        chaddr: [u8; 6],
        options: &[u8],
    ) -> Vec<u8> {
        let mut m = vec![0u8; 240];
        m[0] = 1;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&0x3903_f326u32.to_be_bytes());
        m[10..12].copy_from_slice(&flags.to_be_bytes());
        m[12..16].copy_from_slice(&ciaddr.octets());
        m[28..34].copy_from_slice(&chaddr);
        m[236..240].copy_from_slice(&[99, 130, 83, 99]);
        m.extend_from_slice(&[53, 1, kind]);
        m.extend_from_slice(options);
        // parameter request list, as clients send it
        m.extend_from_slice(&[55, 4, 1, 3, 6, 26]);
        m.push(255);
        m
    }

    /// A DHCP message in a broadcast frame from the guest.
    pub fn dhcp_frame(payload: &[u8]) -> Vec<u8> {
        eth(
            BROADCAST,
            GUEST_MAC.0,
            ETH_IPV4,
            &udp4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, payload),
        )
    }

    pub fn requested(a: Ipv4Addr) -> Vec<u8> {
        let mut o = vec![50, 4];
        o.extend_from_slice(&a.octets());
        o
    }

    pub fn server_id(a: Ipv4Addr) -> Vec<u8> {
        let mut o = vec![54, 4];
        o.extend_from_slice(&a.octets());
        o
    }

    /// QEMU stream framing.
    pub fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }
}

mod seeds {
    use super::build::*;
    use super::*;

    type Seeds = Vec<(&'static str, Vec<u8>)>;

    fn to_shim(ethertype: u16, body: &[u8]) -> Vec<u8> {
        eth(SHIM_MAC.0, GUEST_MAC.0, ethertype, body)
    }

    pub fn guest_frames() -> Seeds {
        let j = fuzzing::join_frames;
        let arp_gw = eth(
            BROADCAST,
            GUEST_MAC.0,
            ETH_ARP,
            &arp(1, GUEST_MAC.0, GUEST_V4, GATEWAY_V4),
        );
        let discover = dhcp_frame(&dhcp(1, 0, Ipv4Addr::UNSPECIFIED, GUEST_MAC.0, &[]));
        let req_opts = [requested(GUEST_V4), server_id(GATEWAY_V4)].concat();
        let request = dhcp_frame(&dhcp(3, 0, Ipv4Addr::UNSPECIFIED, GUEST_MAC.0, &req_opts));
        let rs = ndp_frame(
            mcast6(ALL_ROUTERS),
            GUEST_LL,
            ALL_ROUTERS,
            rs_msg(Some(GUEST_MAC.0)),
        );
        let ns_shim = ndp_frame(
            mcast6(SHIM_LL),
            GUEST_LL,
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff0e, 0x0001),
            ns_msg(SHIM_LL, Some(GUEST_MAC.0)),
        );
        let dad = ndp_frame(
            mcast6(SOLICITED),
            Ipv6Addr::UNSPECIFIED,
            SOLICITED,
            ns_msg(GUEST_V6, None),
        );
        let syn4 = to_shim(ETH_IPV4, &tcp4_syn(GUEST_V4, SERVER_V4));
        let udp6_frame = to_shim(
            ETH_IPV6,
            &udp6(GUEST_V6, SERVER_V6, 5353, 53, b"\x12\x34 dns query"),
        );
        let syn6 = to_shim(ETH_IPV6, &tcp6_syn(GUEST_V6, SERVER_V6));
        let mut vlan = to_shim(0x8100, &[0x00, 0x0a, 0x08, 0x00]);
        vlan.extend_from_slice(&tcp4_syn(GUEST_V4, SERVER_V4));
        let cut = |f: &[u8], n: usize| f[..n].to_vec();
        let mut oversize = vec![0, 0xff, 0xff];
        oversize.extend_from_slice(&syn4);
        vec![
            ("arp-request-gateway", j(0, &[&arp_gw])),
            (
                "arp-request-server-unicast",
                j(
                    0,
                    &[&to_shim(ETH_ARP, &arp(1, GUEST_MAC.0, GUEST_V4, SERVER_V4))],
                ),
            ),
            (
                "arp-probe-announce-own",
                j(
                    0,
                    &[
                        &eth(
                            BROADCAST,
                            GUEST_MAC.0,
                            ETH_ARP,
                            &arp(1, GUEST_MAC.0, Ipv4Addr::UNSPECIFIED, GUEST_V4),
                        ),
                        &eth(
                            BROADCAST,
                            GUEST_MAC.0,
                            ETH_ARP,
                            &arp(1, GUEST_MAC.0, GUEST_V4, GUEST_V4),
                        ),
                        &eth(
                            BROADCAST,
                            GUEST_MAC.0,
                            ETH_ARP,
                            &arp(2, GUEST_MAC.0, GUEST_V4, GATEWAY_V4),
                        ),
                    ],
                ),
            ),
            (
                "arp-request-own-address",
                j(
                    0,
                    &[&eth(
                        BROADCAST,
                        GUEST_MAC.0,
                        ETH_ARP,
                        &arp(1, GUEST_MAC.0, Ipv4Addr::new(10, 200, 0, 9), GUEST_V4),
                    )],
                ),
            ),
            (
                "arp-truncated",
                j(0, &[&cut(&arp_gw, 14 + 27), &cut(&arp_gw, 14 + 5)]),
            ),
            ("dhcp-discover", j(0, &[&discover])),
            ("dhcp-discover-request", j(0, &[&discover, &request])),
            (
                "dhcp-discover-broadcast-flag-learned-mac",
                j(
                    config::LEARN_MAC,
                    &[&dhcp_frame(&dhcp(
                        1,
                        0x8000,
                        Ipv4Addr::UNSPECIFIED,
                        GUEST_MAC.0,
                        &[],
                    ))],
                ),
            ),
            (
                "dhcp-request-other-address-nak",
                j(
                    0,
                    &[&dhcp_frame(&dhcp(
                        3,
                        0,
                        Ipv4Addr::UNSPECIFIED,
                        GUEST_MAC.0,
                        &requested(Ipv4Addr::new(10, 200, 0, 77)),
                    ))],
                ),
            ),
            (
                "dhcp-renew-inform-release-unicast",
                j(
                    config::HOST_ROUTE,
                    &[
                        &to_shim(
                            ETH_IPV4,
                            &udp4(
                                GUEST_V4,
                                GATEWAY_V4,
                                68,
                                67,
                                &dhcp(3, 0, GUEST_V4, GUEST_MAC.0, &[]),
                            ),
                        ),
                        &to_shim(
                            ETH_IPV4,
                            &udp4(
                                GUEST_V4,
                                GATEWAY_V4,
                                68,
                                67,
                                &dhcp(8, 0, GUEST_V4, GUEST_MAC.0, &[]),
                            ),
                        ),
                        &to_shim(
                            ETH_IPV4,
                            &udp4(
                                GUEST_V4,
                                GATEWAY_V4,
                                68,
                                67,
                                &dhcp(7, 0, GUEST_V4, GUEST_MAC.0, &[]),
                            ),
                        ),
                    ],
                ),
            ),
            (
                "dhcp-foreign-client-and-truncated",
                j(
                    0,
                    &[
                        &dhcp_frame(&dhcp(1, 0, Ipv4Addr::UNSPECIFIED, OTHER_MAC, &[])),
                        &dhcp_frame(&dhcp(1, 0, Ipv4Addr::UNSPECIFIED, GUEST_MAC.0, &[])[..239]),
                        &cut(&discover, 14 + 20 + 4),
                    ],
                ),
            ),
            ("rs-ra", j(0, &[&rs])),
            (
                "rs-unspecified-no-prefix",
                j(
                    config::NO_PREFIX6,
                    &[&ndp_frame(
                        mcast6(ALL_ROUTERS),
                        Ipv6Addr::UNSPECIFIED,
                        ALL_ROUTERS,
                        rs_msg(None),
                    )],
                ),
            ),
            ("rs-no-ipv6", j(config::NO_IPV6, &[&rs])),
            ("ns-shim-link-local", j(0, &[&ns_shim])),
            (
                "ns-unicast-server",
                j(
                    0,
                    &[&ndp_frame(
                        SHIM_MAC.0,
                        GUEST_V6,
                        SHIM_LL,
                        ns_msg(SERVER_V6, Some(GUEST_MAC.0)),
                    )],
                ),
            ),
            ("dad-ns-then-udp6", j(0, &[&dad, &udp6_frame, &syn6])),
            (
                "dad-ns-link-local-and-outside-prefix",
                j(
                    0,
                    &[
                        &ndp_frame(
                            mcast6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff12, 0x3456)),
                            Ipv6Addr::UNSPECIFIED,
                            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff12, 0x3456),
                            ns_msg(GUEST_LL, None),
                        ),
                        &ndp_frame(
                            mcast6(SOLICITED),
                            Ipv6Addr::UNSPECIFIED,
                            SOLICITED,
                            ns_msg(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5), None),
                        ),
                    ],
                ),
            ),
            (
                "dad-ns-link-local-and-other-prefix-no-prefix6",
                j(
                    config::NO_PREFIX6,
                    &[
                        &ndp_frame(
                            mcast6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff12, 0x3456)),
                            Ipv6Addr::UNSPECIFIED,
                            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff12, 0x3456),
                            ns_msg(GUEST_LL, None),
                        ),
                        &ndp_frame(
                            mcast6(SOLICITED),
                            Ipv6Addr::UNSPECIFIED,
                            SOLICITED,
                            ns_msg(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5), None),
                        ),
                    ],
                ),
            ),
            (
                "na-ra-redirect-from-guest",
                j(
                    0,
                    &[
                        &ndp_frame(mcast6(ALL_NODES), GUEST_LL, ALL_NODES, na_msg(GUEST_LL)),
                        &ndp_frame(mcast6(ALL_NODES), GUEST_LL, ALL_NODES, ra_msg()),
                        &ndp_frame(SHIM_MAC.0, GUEST_LL, SHIM_LL, redirect_msg()),
                    ],
                ),
            ),
            (
                "ns-bad-hop-limit-and-checksum",
                j(
                    0,
                    &[
                        &{
                            let mut f = ns_shim.clone();
                            f[14 + 7] = 64;
                            f
                        },
                        &{
                            let mut f = ns_shim.clone();
                            f[14 + 40 + 20] ^= 0x55;
                            f
                        },
                    ],
                ),
            ),
            ("ipv4-tcp-syn", j(0, &[&syn4, &syn4])),
            (
                "ipv4-icmp-fragment-options",
                j(
                    0,
                    &[
                        &to_shim(ETH_IPV4, &icmp4_echo(GUEST_V4, SERVER_V4)),
                        &to_shim(
                            ETH_IPV4,
                            &ipv4_frag(GUEST_V4, SERVER_V4, 17, 0x00b9, &[0; 24]),
                        ),
                        &to_shim(ETH_IPV4, &{
                            let mut p = ipv4(GUEST_V4, SERVER_V4, 253, &[0; 8]);
                            p[0] = 0x46;
                            p
                        }),
                    ],
                ),
            ),
            (
                "ipv4-link-local-only",
                j(
                    0,
                    &[
                        &eth(
                            BROADCAST,
                            GUEST_MAC.0,
                            ETH_IPV4,
                            &udp4(GUEST_V4, Ipv4Addr::BROADCAST, 137, 137, b"netbios"),
                        ),
                        &eth(
                            [1, 0, 0x5e, 0, 0, 0xfb],
                            GUEST_MAC.0,
                            ETH_IPV4,
                            &udp4(GUEST_V4, Ipv4Addr::new(224, 0, 0, 251), 5353, 5353, b"mdns"),
                        ),
                        &to_shim(
                            ETH_IPV4,
                            &udp4(
                                GUEST_V4,
                                Ipv4Addr::new(10, 200, 0, 255),
                                9,
                                9,
                                b"subnet broadcast",
                            ),
                        ),
                        &to_shim(ETH_IPV4, &tcp4_syn(GUEST_V4, GATEWAY_V4)),
                    ],
                ),
            ),
            (
                "ipv4-keeper-refused-foreign-source",
                j(
                    0,
                    &[&to_shim(
                        ETH_IPV4,
                        &tcp4_syn(Ipv4Addr::new(10, 200, 0, 9), SERVER_V4),
                    )],
                ),
            ),
            (
                "ipv4-truncated",
                j(
                    0,
                    &[&cut(&syn4, 14 + 19), &cut(&syn4, 14 + 30), &cut(&syn4, 14)],
                ),
            ),
            (
                "ipv6-udp-stable-source",
                j(
                    0,
                    &[&to_shim(
                        ETH_IPV6,
                        &udp6(fuzzing::STABLE_V6, SERVER_V6, 4000, 53, b"query"),
                    )],
                ),
            ),
            ("vlan-tagged", j(0, &[&vlan, &to_shim(0x88a8, &[0; 40])])),
            (
                "bad-macs",
                j(
                    0,
                    &[
                        &eth(
                            SHIM_MAC.0,
                            BROADCAST,
                            ETH_IPV4,
                            &tcp4_syn(GUEST_V4, SERVER_V4),
                        ),
                        &eth(SHIM_MAC.0, [0; 6], ETH_IPV4, &tcp4_syn(GUEST_V4, SERVER_V4)),
                        &eth(
                            SHIM_MAC.0,
                            OTHER_MAC,
                            ETH_IPV4,
                            &tcp4_syn(GUEST_V4, SERVER_V4),
                        ),
                        &eth(
                            OTHER_MAC,
                            GUEST_MAC.0,
                            ETH_IPV4,
                            &tcp4_syn(GUEST_V4, SERVER_V4),
                        ),
                        &to_shim(0x88cc, &[0; 46]),
                    ],
                ),
            ),
            (
                "learned-mac-then-foreign",
                j(
                    config::LEARN_MAC,
                    &[
                        &syn4,
                        &eth(
                            SHIM_MAC.0,
                            OTHER_MAC,
                            ETH_ARP,
                            &arp(1, OTHER_MAC, GUEST_V4, GATEWAY_V4),
                        ),
                    ],
                ),
            ),
            (
                "learned-mac-reset",
                j(
                    config::LEARN_MAC | config::RESET,
                    &[
                        &eth(
                            SHIM_MAC.0,
                            OTHER_MAC,
                            ETH_ARP,
                            &arp(1, OTHER_MAC, GUEST_V4, GATEWAY_V4),
                        ),
                        &arp_gw,
                    ],
                ),
            ),
            ("runts", j(0, &[&[], &[0x02], &cut(&syn4, 13)])),
            ("oversize", oversize),
            (
                "timers-rs-arp",
                j(
                    config::TIMERS,
                    &[
                        &rs, &arp_gw, &syn4, &arp_gw, &arp_gw, &arp_gw, &arp_gw, &arp_gw, &arp_gw,
                    ],
                ),
            ),
            (
                "steer-repair-ns",
                j(
                    config::STEER | config::REPAIR,
                    &[&{
                        let mut f = ns_shim.clone();
                        f[6..12].copy_from_slice(&OTHER_MAC);
                        f[14 + 40 + 2] = 0;
                        f[14 + 40 + 3] = 0;
                        f
                    }],
                ),
            ),
        ]
    }

    /// [`fuzzing::stream_framing`]'s input.
    fn stream(max: u16, layout: u8, sizes: &[u8], stream: &[u8]) -> Vec<u8> {
        assert_eq!(usize::from(layout & 0x0f), sizes.len());
        let mut v = max.to_be_bytes().to_vec();
        v.push(layout);
        v.extend_from_slice(sizes);
        v.extend_from_slice(stream);
        v
    }

    pub fn stream_framing() -> Seeds {
        let arp = eth(
            BROADCAST,
            GUEST_MAC.0,
            ETH_ARP,
            &arp(1, GUEST_MAC.0, GUEST_V4, GATEWAY_V4),
        );
        let discover = dhcp_frame(&dhcp(1, 0, Ipv4Addr::UNSPECIFIED, GUEST_MAC.0, &[]));
        let syn = eth(
            SHIM_MAC.0,
            GUEST_MAC.0,
            ETH_IPV4,
            &tcp4_syn(GUEST_V4, SERVER_V4),
        );
        let three = framed(&[&arp, &discover, &syn]);
        let big = vec![0xab; 1600];
        let mut desync = framed(&[&arp]);
        desync.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
        desync.extend_from_slice(&framed(&[&arp]));
        let mut wire_max = 0x0004_0000u32.to_be_bytes().to_vec();
        wire_max.extend_from_slice(&[7; 100]);
        let mut wire_over = 0x0004_0001u32.to_be_bytes().to_vec();
        wire_over.extend_from_slice(&[7; 10]);
        let tiny: Vec<u8> = (0..40u8).flat_map(|i| [0, 0, 0, 1, i]).collect();
        vec![
            ("one-frame", stream(1514, 0, &[], &framed(&[&arp]))),
            ("three-frames-one-piece", stream(1514, 0, &[], &three)),
            ("three-frames-bytewise", stream(1514, 1, &[1], &three)),
            ("prefix-split", stream(1514, 2, &[3, 5], &three)),
            ("empty-pieces", stream(1514, 3, &[0, 7, 0], &three)),
            ("shifted-pieces", stream(1514, 0x32, &[1, 3], &three)),
            (
                "empty-frames",
                stream(1514, 0, &[], &framed(&[&[], &arp, &[], &[]])),
            ),
            (
                "oversize-skipped",
                stream(1514, 1, &[100], &framed(&[&big, &arp, &big])),
            ),
            (
                "exactly-max",
                stream(60, 0, &[], &framed(&[&[1; 60], &[2; 61], &[3; 59]])),
            ),
            ("max-zero", stream(0, 0, &[], &three)),
            ("max-scaled-past-wire", stream(0xffff, 0x80, &[], &three)),
            ("desync", stream(1514, 1, &[9], &desync)),
            ("wire-max-oversize-partial", stream(1514, 0, &[], &wire_max)),
            (
                "wire-max-plus-one-desync",
                stream(0xffff, 0x80, &[], &wire_over),
            ),
            (
                "partial-frame",
                stream(1514, 0, &[], &three[..three.len() - 10]),
            ),
            (
                "partial-prefix",
                stream(1514, 0, &[], &[0, 0, 0, 60, 1, 2, 3, 0, 0]),
            ),
            ("tiny-frames", stream(1, 2, &[4, 13], &tiny)),
            ("empty-stream", stream(1514, 0, &[], &[])),
            ("header-only", vec![0x05]),
        ]
    }

    pub fn dhcp_message() -> Seeds {
        let g = GUEST_MAC.0;
        let none = Ipv4Addr::UNSPECIFIED;
        let discover = dhcp(1, 0, none, g, &[]);
        let mut no_end = discover.clone();
        no_end.pop();
        let mut past_end = discover.clone();
        past_end.pop();
        past_end.extend_from_slice(&[50, 9, 1]);
        let mut bad_magic = discover.clone();
        bad_magic[239] = 0x62;
        let mut reply = discover.clone();
        reply[0] = 2;
        let mut hlen = discover.clone();
        hlen[2] = 16;
        let mut pads = discover[..240].to_vec();
        pads.extend_from_slice(&[0, 0, 0, 53, 1, 1, 0, 255, 0, 0]);
        let mut type_len = discover[..240].to_vec();
        type_len.extend_from_slice(&[53, 2, 1, 1, 255]);
        let mut no_type = discover[..240].to_vec();
        no_type.extend_from_slice(&[61, 7, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 255]);
        let mut odd_byte = discover[..240].to_vec();
        odd_byte.extend_from_slice(&[53, 1, 1, 12]);
        vec![
            ("discover", discover.clone()),
            ("discover-broadcast-flag", dhcp(1, 0x8000, none, g, &[])),
            (
                "request-selecting",
                dhcp(
                    3,
                    0,
                    none,
                    g,
                    &[requested(GUEST_V4), server_id(GATEWAY_V4)].concat(),
                ),
            ),
            (
                "request-other-address",
                dhcp(3, 0, none, g, &requested(Ipv4Addr::new(10, 200, 0, 9))),
            ),
            ("request-renewing", dhcp(3, 0, GUEST_V4, g, &[])),
            (
                "request-init-reboot",
                dhcp(3, 0, none, g, &requested(GUEST_V4)),
            ),
            (
                "request-other-server",
                dhcp(
                    3,
                    0,
                    none,
                    g,
                    &[server_id(Ipv4Addr::new(10, 0, 0, 1)), requested(GUEST_V4)].concat(),
                ),
            ),
            ("inform", dhcp(8, 0, GUEST_V4, g, &[])),
            ("decline", dhcp(4, 0, none, g, &requested(GUEST_V4))),
            ("release", dhcp(7, 0, GUEST_V4, g, &server_id(GATEWAY_V4))),
            ("offer-from-client", dhcp(2, 0, none, g, &[])),
            ("unknown-type", dhcp(9, 0, none, g, &[])),
            ("bad-truncated-239", discover[..239].to_vec()),
            ("bad-no-end-option", no_end),
            ("bad-option-past-end", past_end),
            ("bad-magic", bad_magic),
            ("bad-bootreply", reply),
            ("bad-hlen", hlen),
            ("pad-options", pads),
            ("bad-type-length", type_len),
            ("bad-no-type", no_type),
            ("bad-lone-option-byte", odd_byte),
            (
                "bad-requested-length",
                dhcp(3, 0, none, g, &[50, 3, 10, 200, 0]),
            ),
        ]
    }

    /// [`fuzzing::ndp_message`]'s input: the address byte and the message, its checksum
    /// computed for the addresses the byte selects.
    fn ndp(sel: u8, msg: Vec<u8>) -> Vec<u8> {
        let (src, dst, _) = fuzzing::ndp_addresses(sel);
        let mut v = vec![sel];
        if msg.len() >= 4 {
            v.extend_from_slice(&icmpv6(src, dst, msg));
        } else {
            v.extend_from_slice(&msg);
        }
        v
    }

    pub fn ndp_message() -> Seeds {
        // source: 0 ::, 1 guest link-local, 2 guest global, 3 fe80::1
        // destination (<< 2): 0 all routers, 1 all nodes, 2 solicited node, 3 shim link-local
        let (ll, global, unspec) = (1u8, 2u8, 0u8);
        let (routers, nodes, solicited, shim) = (0u8, 4u8, 8u8, 12u8);
        let mut bad_sum = ndp(ll | shim, ns_msg(SHIM_LL, Some(GUEST_MAC.0)));
        bad_sum[20] ^= 1;
        let mut opt_zero = ns_msg(SHIM_LL, None);
        opt_zero.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let mut opt_past = rs_msg(None);
        opt_past.extend_from_slice(&[1, 2, 0, 0, 0, 0, 0, 0]);
        let mut code1 = rs_msg(None);
        code1[1] = 1;
        let mut repair = ns_msg(GUEST_V6, None);
        repair[2] = 0xde;
        repair[3] = 0xad;
        vec![
            (
                "rs-link-local",
                ndp(ll | routers, rs_msg(Some(GUEST_MAC.0))),
            ),
            ("rs-unspecified", ndp(unspec | routers, rs_msg(None))),
            (
                "ns-shim",
                ndp(ll | shim, ns_msg(SHIM_LL, Some(GUEST_MAC.0))),
            ),
            (
                "ns-global-server",
                ndp(global | solicited, ns_msg(SERVER_V6, Some(GUEST_MAC.0))),
            ),
            ("ns-dad", ndp(unspec | solicited, ns_msg(GUEST_V6, None))),
            ("ns-from-fe80-1", ndp(3 | shim, ns_msg(SHIM_LL, None))),
            ("na", ndp(ll | nodes, na_msg(GUEST_LL))),
            ("ra-from-guest", ndp(ll | nodes, ra_msg())),
            ("redirect", ndp(ll | shim, redirect_msg())),
            (
                "bad-hop-limit",
                ndp(ll | ndp_config::HOP_64 | routers, rs_msg(None)),
            ),
            ("bad-checksum", bad_sum),
            ("bad-option-length-zero", ndp(ll | shim, opt_zero)),
            ("bad-option-past-end", ndp(ll | routers, opt_past)),
            (
                "bad-ns-multicast-target",
                ndp(ll | shim, ns_msg(ALL_NODES, None)),
            ),
            (
                "bad-ns-truncated",
                ndp(ll | shim, ns_msg(SHIM_LL, None)[..20].to_vec()),
            ),
            ("bad-code", ndp(ll | routers, code1)),
            (
                "not-ndp-echo",
                ndp(ll | shim, vec![128, 0, 0, 0, 0x12, 0x34, 0, 1]),
            ),
            ("bad-one-byte", vec![ll, 133]),
            ("bad-empty", vec![ll]),
            (
                "repair-ns",
                [vec![global | solicited | ndp_config::REPAIR], repair].concat(),
            ),
        ]
    }

    pub fn virtio_header() -> Seeds {
        let hdr = |flags: u8, gso: u8| {
            let mut h = vec![0u8; 12];
            h[0] = flags;
            h[1] = gso;
            h
        };
        let with = |h: Vec<u8>, f: &[u8]| [h, f.to_vec()].concat();
        let arp_req = eth(
            BROADCAST,
            GUEST_MAC.0,
            ETH_ARP,
            &arp(1, GUEST_MAC.0, GUEST_V4, GATEWAY_V4),
        );
        let arp_reply = eth(
            GUEST_MAC.0,
            SHIM_MAC.0,
            ETH_ARP,
            &arp(2, SHIM_MAC.0, GATEWAY_V4, GUEST_V4),
        );
        let mut arp_op3 = arp_req.clone();
        arp_op3[14 + 7] = 3;
        let syn = eth(
            SHIM_MAC.0,
            GUEST_MAC.0,
            ETH_IPV4,
            &tcp4_syn(GUEST_V4, SERVER_V4),
        );
        let mut ihl6 = syn.clone();
        ihl6[14] = 0x46;
        let mut ihl4 = syn.clone();
        ihl4[14] = 0x44;
        let mut long4 = syn.clone();
        long4[14 + 3] += 1;
        let mut short_total = syn.clone();
        short_total[14 + 2] = 0;
        short_total[14 + 3] = 16;
        let mut later = syn.clone();
        later[14 + 6] = 0x00;
        later[14 + 7] = 0x10;
        let ns = ndp_frame(
            mcast6(SOLICITED),
            Ipv6Addr::UNSPECIFIED,
            SOLICITED,
            ns_msg(GUEST_V6, None),
        );
        let mut long6 = ns.clone();
        long6[14 + 5] += 1;
        let udp6_frame = eth(
            SHIM_MAC.0,
            GUEST_MAC.0,
            ETH_IPV6,
            &udp6(GUEST_V6, SERVER_V6, 1, 2, b"x"),
        );
        let mut num_buffers = hdr(0, 0);
        num_buffers[10] = 1;
        vec![
            ("arp-request", with(hdr(0, 0), &arp_req)),
            ("arp-reply", with(hdr(0, 0), &arp_reply)),
            ("arp-op-3", with(hdr(0, 0), &arp_op3)),
            ("arp-truncated", with(hdr(0, 0), &arp_req[..14 + 27])),
            ("ipv4-tcp-syn", with(hdr(0, 0), &syn)),
            ("ipv4-ihl-6", with(hdr(0, 0), &ihl6)),
            ("ipv4-ihl-4", with(hdr(0, 0), &ihl4)),
            ("ipv4-total-past-end", with(hdr(0, 0), &long4)),
            ("ipv4-total-below-header", with(hdr(0, 0), &short_total)),
            ("ipv4-later-fragment", with(hdr(0, 0), &later)),
            ("ipv6-dad-ns", with(hdr(0, 0), &ns)),
            ("ipv6-udp", with(hdr(0, 0), &udp6_frame)),
            ("ipv6-payload-past-end", with(hdr(0, 0), &long6)),
            ("needs-csum", with(hdr(1, 0), &syn)),
            ("gso-tcpv4", with(hdr(0, 1), &syn)),
            ("data-valid-flag", with(hdr(2, 0), &syn)),
            ("num-buffers", with(num_buffers, &udp6_frame)),
            ("header-only", hdr(0, 0)),
            ("short-11", vec![0; 11]),
            ("frame-13-bytes", with(hdr(0, 0), &syn[..13])),
            ("empty", Vec::new()),
        ]
    }
}
