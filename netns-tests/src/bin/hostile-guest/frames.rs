//! Frame builders: the Ethernet, ARP, IP, DHCP and NDP frames the corpora send.

use super::*;

pub(crate) const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub(crate) const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
pub(crate) const SHIM_MAC: [u8; 6] = [0x02, 0xfa, 0x11, 0x0e, 0x00, 0x01];
pub(crate) const BROADCAST: [u8; 6] = [0xff; 6];
pub(crate) const GUEST_IP: [u8; 4] = [10, 200, 0, 2];
pub(crate) const GATEWAY_IP: [u8; 4] = [10, 200, 0, 1];
pub(crate) const ETH_IPV4: u16 = 0x0800;
pub(crate) const ETH_ARP: u16 = 0x0806;
pub(crate) const ETH_IPV6: u16 = 0x86dd;
pub(crate) const ETH_VLAN: u16 = 0x8100;
pub(crate) const ETH_QINQ: u16 = 0x88a8;
/// An EtherType for local experiments: the shim does not know it.
pub(crate) const ETH_EXPERIMENTAL: u16 = 0x88b5;
/// The largest frame the shim accepts: 65 535 bytes of IP and the Ethernet header.
pub(crate) const MAX_FRAME: usize = 14 + 65_535;

pub(crate) fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + body.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

pub(crate) fn arp_body(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    b.extend_from_slice(&op.to_be_bytes());
    b.extend_from_slice(&sha);
    b.extend_from_slice(&spa);
    b.extend_from_slice(&tha);
    b.extend_from_slice(&tpa);
    b
}

/// A broadcast ARP request from `mac` / `spa` for `tpa`.
pub(crate) fn arp_request(mac: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    ether(BROADCAST, mac, ETH_ARP, &arp_body(1, mac, spa, [0; 6], tpa))
}

/// The valid question: the guest asks for its gateway.
pub(crate) fn probe() -> Vec<u8> {
    arp_request(GUEST_MAC, GUEST_IP, GATEWAY_IP)
}

/// The sender address of `frame` if it is an ARP reply from the shim to the guest.
pub(crate) fn arp_reply_spa(frame: &[u8]) -> Option<[u8; 4]> {
    let f = frame.get(..42)?;
    let fields_ok = f.get(0..6) == Some(GUEST_MAC.as_slice())
        && f.get(6..12) == Some(SHIM_MAC.as_slice())
        && f.get(12..14) == Some(ETH_ARP.to_be_bytes().as_slice())
        && f.get(14..22) == Some([0, 1, 0x08, 0x00, 6, 4, 0, 2].as_slice())
        && f.get(22..28) == Some(SHIM_MAC.as_slice())
        && f.get(32..38) == Some(GUEST_MAC.as_slice())
        && f.get(38..42) == Some(GUEST_IP.as_slice());
    if !fields_ok {
        return None;
    }
    f.get(28..32)?.try_into().ok()
}

/// An IPv4 header (`total_len` as given, checksum right) and a UDP header (checksum 0).
pub(crate) fn ipv4_udp(
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    payload: &[u8],
    total: u16,
) -> Vec<u8> {
    let mut ip = Vec::with_capacity(28 + payload.len());
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let sum = wire::checksum::finish(wire::checksum::sum(&ip));
    if let Some(slot) = ip.get_mut(10..12) {
        slot.copy_from_slice(&sum.to_be_bytes());
    }
    let udp_len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    ip.extend_from_slice(&ports.0.to_be_bytes());
    ip.extend_from_slice(&ports.1.to_be_bytes());
    ip.extend_from_slice(&udp_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ip
}

/// A BOOTP request: op, htype, hlen, magic cookie as given, then `options`.
pub(crate) fn bootp(op: u8, chaddr: [u8; 6], magic: [u8; 4], options: &[u8]) -> Vec<u8> {
    let mut b = vec![op, 1, 6, 0];
    b.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // xid
    b.extend_from_slice(&[0, 0, 0x80, 0]); // secs, flags: broadcast
    b.extend_from_slice(&[0; 16]); // ciaddr, yiaddr, siaddr, giaddr
    b.extend_from_slice(&chaddr);
    b.resize(236, 0); // rest of chaddr, sname, file
    b.extend_from_slice(&magic);
    b.extend_from_slice(options);
    b
}

pub(crate) const DHCP_MAGIC: [u8; 4] = [99, 130, 83, 99];

/// A DHCP message from the guest, broadcast, with the IP total length given or right.
pub(crate) fn dhcp_frame(src: [u8; 6], payload: &[u8], total: Option<u16>) -> Vec<u8> {
    let right = u16::try_from(28 + payload.len()).unwrap_or(u16::MAX);
    ether(
        BROADCAST,
        src,
        ETH_IPV4,
        &ipv4_udp([0; 4], [255; 4], (68, 67), payload, total.unwrap_or(right)),
    )
}

/// DHCP messages with broken options and headers: (kind, frame, the drop it must count).
pub(crate) fn dhcp_corpus(rng: &mut Rng) -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let discover = |opts: &[u8]| bootp(1, GUEST_MAC, DHCP_MAGIC, opts);
    let malformed = Some("drops.dhcp_malformed");
    let mut v = vec![
        (
            "dhcp_option_overruns_message",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1, 12, 200, b'a', b'b']), None),
            malformed,
        ),
        (
            "dhcp_option_code_without_length",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1, 61]), None),
            malformed,
        ),
        (
            "dhcp_message_type_length_2",
            dhcp_frame(GUEST_MAC, &discover(&[53, 2, 1, 1, 255]), None),
            malformed,
        ),
        (
            "dhcp_unknown_message_type",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 99, 255]), None),
            malformed,
        ),
        (
            "dhcp_no_message_type",
            dhcp_frame(GUEST_MAC, &discover(&[12, 3, b'a', b'b', b'c', 255]), None),
            malformed,
        ),
        (
            "dhcp_requested_address_3_bytes",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 3, 50, 3, 1, 2, 3, 255]), None),
            malformed,
        ),
        (
            "dhcp_server_id_5_bytes",
            dhcp_frame(
                GUEST_MAC,
                &discover(&[53, 1, 3, 54, 5, 10, 200, 0, 1, 9, 255]),
                None,
            ),
            malformed,
        ),
        (
            "dhcp_bootp_truncated",
            dhcp_frame(
                GUEST_MAC,
                discover(&[]).get(..100).unwrap_or_default(),
                None,
            ),
            malformed,
        ),
        (
            "dhcp_bad_magic",
            dhcp_frame(
                GUEST_MAC,
                &bootp(1, GUEST_MAC, [1, 2, 3, 4], &[53, 1, 1, 255]),
                None,
            ),
            malformed,
        ),
        (
            "dhcp_bootreply_from_guest",
            dhcp_frame(
                GUEST_MAC,
                &bootp(2, GUEST_MAC, DHCP_MAGIC, &[53, 1, 1, 255]),
                None,
            ),
            malformed,
        ),
        (
            "dhcp_udp_header_cut",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1, 255]), Some(24)),
            malformed,
        ),
        (
            "dhcp_ip_total_length_beyond_frame",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1, 255]), Some(4000)),
            Some("drops.ip_malformed"),
        ),
        (
            "dhcp_foreign_client_hardware_address",
            dhcp_frame(
                GUEST_MAC,
                &bootp(1, OTHER_MAC, DHCP_MAGIC, &[53, 1, 1, 255]),
                None,
            ),
            Some("drops.dhcp_foreign_client"),
        ),
        // Well formed under the garbage: each must be answered (an OFFER).
        (
            "dhcp_pad_flood_then_discover",
            dhcp_frame(
                GUEST_MAC,
                &discover(&[vec![0u8; 1000], vec![53, 1, 1, 255]].concat()),
                None,
            ),
            Some("dhcp_replies"),
        ),
        (
            "dhcp_discover_without_end_option",
            dhcp_frame(GUEST_MAC, &discover(&[53, 1, 1]), None),
            Some("dhcp_replies"),
        ),
        (
            "dhcp_option_overload_with_garbage",
            dhcp_frame(
                GUEST_MAC,
                &{
                    let mut m = discover(&[52, 1, 3, 53, 1, 1, 255]);
                    if let Some(sname_file) = m.get_mut(44..236) {
                        sname_file.copy_from_slice(&rng.bytes(192));
                    }
                    m
                },
                None,
            ),
            Some("dhcp_replies"),
        ),
        (
            "dhcp_60k_of_unknown_options",
            dhcp_frame(
                GUEST_MAC,
                &discover(&{
                    let mut o = Vec::new();
                    for _ in 0..235 {
                        o.extend_from_slice(&[224, 255]);
                        o.extend_from_slice(&rng.bytes(255));
                    }
                    o.extend_from_slice(&[53, 1, 1, 255]);
                    o
                }),
                None,
            ),
            Some("dhcp_replies"),
        ),
    ];
    for _ in 0..20 {
        let len = usize::try_from(rng.range(1, 300)).unwrap_or(1);
        let mut opts = rng.bytes(len);
        // usually with a message type first, so the parser walks the garbage after it
        if rng.next() & 1 == 0 {
            opts.splice(0..0, [53, 1, 1]);
        }
        v.push((
            "dhcp_random_options",
            dhcp_frame(GUEST_MAC, &discover(&opts), None),
            None,
        ));
    }
    v
}
