//! The guest's whole network, at the Ethernet level, over the client [`Engine`].
//!
//! The guest sees one link with one neighbour, the shim, which is its router for everything:
//! ARP and IPv6 neighbour solicitations for any address but the guest's own are answered with
//! the shim's MAC; DHCP hands out the configured address; router advertisements give IPv6
//! guests a default route, the MTU and a prefix. Every other IP packet goes to the engine,
//! whose session keeper maps the guest's address to the client's stable address, and back.
//!
//! Sans-IO and clock-free like the engine: frames, datagrams and `now` in, frames and datagrams
//! out, in caller-owned buffers. The guest is hostile: a frame of any length or content is
//! parsed before anything is trusted, and every frame that is not used has a [`GuestDrop`]
//! reason and a counter. Memory is bounded: the only queue is [`MAX_QUEUED_FRAMES`] frames
//! the shim originates itself.
//!
//! Calling contract, on top of the engine's (see [`engine`]):
//! - [`GuestNet::handle_guest_frame`] for every frame from the guest;
//! - [`GuestNet::handle_datagram`] for every underlay datagram;
//! - [`GuestNet::handle_timeout`] no later than [`GuestNet::poll_timeout`];
//! - [`GuestNet::poll_transmit`] after any of them, until it adds nothing;
//! - [`GuestNet::poll_guest_frame`] after any of them, until `None`;
//! - [`GuestNet::link_reset`] when the guest's link goes down and up (a new connection).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use engine::Engine;
use sessionkeeper::StableAddresses;
use tunnel::{Outcome, Transmit};

use crate::dhcp::{self, Lease};
use crate::ndp::{self, Prefix6};
use wire::arp::{ArpRepr, OP_REPLY, OP_REQUEST, PACKET_LEN as ARP_LEN};
use wire::ethernet::{
    EthernetRepr, Mac, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ,
    ETHERTYPE_VLAN, HEADER_LEN as ETH_HLEN,
};
use wire::ip::{PROTO_ICMPV6, PROTO_UDP};
use wire::ipv6::HEADER_LEN as IPV6_HLEN;
use wire::{field, udp, Ipv4Packet, Ipv4Repr, Ipv6Packet};

/// The shim's own MAC on the guest link (locally administered).
pub const SHIM_MAC: Mac = Mac([0x02, 0xfa, 0x11, 0x0e, 0x00, 0x01]);

/// Largest frame accepted from the guest: a 64 KiB IP packet and its Ethernet header.
pub const MAX_FRAME: usize = ETH_HLEN + 65_535;

/// Frames the shim originates (router advertisements) waiting for the front end.
pub const MAX_QUEUED_FRAMES: usize = 16;

/// Unsolicited router advertisements are repeated this often (the router lifetime is 30 min).
const RA_INTERVAL: Duration = Duration::from_secs(600);

/// The size every output buffer handed to this module must have at least.
pub const OUT_LEN: usize = ETH_HLEN + tunnel::min_buffer_len(tunnel::MAX_DATAGRAM);

tunnel::drop_reasons! {
    /// Why a frame from the guest (or a packet for it) was not used. Every drop has one, and
    /// a counter.
    pub enum GuestDrop, counted by GuestDrops {
    /// shorter than an Ethernet header
    FrameTooShort => "frame_too_short",
    /// longer than [`MAX_FRAME`]
    FrameTooLong => "frame_too_long",
    /// an 802.1Q or 802.1ad tag: the guest link is untagged
    VlanTagged => "vlan_tagged",
    /// an EtherType other than IPv4, IPv6 and ARP
    UnknownEthertype => "unknown_ethertype",
    /// a multicast or all-zero source MAC
    BadSourceMac => "bad_source_mac",
    /// a source MAC other than the guest's
    ForeignSourceMac => "foreign_source_mac",
    /// unicast to a MAC that is not the shim's
    NotForShim => "not_for_shim",
    /// an ARP packet that is not Ethernet/IPv4, or is cut short
    ArpMalformed => "arp_malformed",
    /// an ARP reply, probe or announcement, or a request for the guest's own address
    ArpIgnored => "arp_ignored",
    /// a DHCP message that does not parse
    DhcpMalformed => "dhcp_malformed",
    /// a DHCP message from another hardware address
    DhcpForeignClient => "dhcp_foreign_client",
    /// a DHCP message that needs no answer (DECLINE, RELEASE, for another server)
    DhcpIgnored => "dhcp_ignored",
    /// an IP header that does not parse (the session keeper never saw it)
    IpMalformed => "ip_malformed",
    /// a neighbour discovery message with a bad length, hop limit, checksum or option
    NdpMalformed => "ndp_malformed",
    /// a router advertisement or redirect from the guest (RA guard)
    NdpRouterOnly => "ndp_router_only",
    /// a neighbour advertisement, or a solicitation for the guest's own address
    NdpIgnored => "ndp_ignored",
    /// broadcast, multicast or link-local traffic that leaves the link nowhere
    LinkLocalOnly => "link_local_only",
    /// refused by the session keeper (its counters say why)
    KeeperRefused => "keeper_refused",
    /// a packet for the guest before the guest's MAC is known
    NoGuestMac => "no_guest_mac",
    /// a frame the shim originates, with its queue full
    QueueFull => "queue_full",
    }
}

/// Counters of the guest link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestStats {
    /// frames from the guest
    pub rx_frames: u64,
    /// frames to the guest
    pub tx_frames: u64,
    /// IP packets from the guest into the engine
    pub to_engine: u64,
    /// ARP requests answered
    pub arp_replies: u64,
    /// DHCP answers sent (OFFER, ACK, NAK)
    pub dhcp_replies: u64,
    /// router advertisements sent
    pub router_advertisements: u64,
    /// neighbour advertisements sent
    pub neighbor_advertisements: u64,
    /// times the guest's IPv6 address was learned or changed
    pub ipv6_address_changes: u64,
    /// drops by reason
    pub drops: GuestDrops,
}

/// The guest link's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// the guest NIC's MAC; `None`: learned from the guest's first frame and kept until the
    /// link resets
    pub mac: Option<Mac>,
    /// the guest's IPv4 address: DHCP hands it out, the session keeper maps it
    pub address: Ipv4Addr,
    /// its prefix length
    pub prefix_len: u8,
    /// the shim's address on the link: the guest's router and DHCP server
    pub gateway: Ipv4Addr,
    /// DNS servers handed out by DHCP
    pub dns: Vec<Ipv4Addr>,
    /// the /64 advertised to IPv6 guests for SLAAC (`None`: router advertisements carry no
    /// prefix; a guest's static address is learned all the same)
    pub prefix6: Option<Ipv6Addr>,
    /// DHCP lease time, seconds
    pub lease_secs: u32,
    /// whether the guest gets IPv6 (router advertisements): only when the client has a
    /// stable IPv6 address to map it to
    pub ipv6: bool,
}

/// What the front end must do with the result of a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'o> {
    /// nothing
    None,
    /// write this Ethernet frame to the guest
    ToGuest(&'o [u8]),
    /// send this datagram on the underlay; then drain [`GuestNet::poll_transmit`]
    ToUnderlay(Transmit<'o>),
}

/// The guest link and the engine behind it. See the module docs.
#[derive(Debug)]
pub struct GuestNet {
    engine: Engine,
    config: GuestConfig,
    guest_mac: Option<Mac>,
    guest_v6: Option<Ipv6Addr>,
    stats: GuestStats,
    queued: VecDeque<Vec<u8>>,
    next_ra: Option<Instant>,
}

impl GuestNet {
    /// The guest link over `engine`; the engine's local IPv4 address becomes the guest's.
    pub fn new(config: GuestConfig, mut engine: Engine, now: Instant) -> Self {
        engine.set_local_addresses(StableAddresses {
            v4: Some(config.address),
            v6: None,
        });
        Self {
            guest_mac: config.mac,
            engine,
            guest_v6: None,
            stats: GuestStats::default(),
            queued: VecDeque::new(),
            next_ra: Some(now),
            config,
        }
    }

    /// The engine (status, events).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, for operator commands (a forced switch).
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The guest's MAC, once known.
    pub fn guest_mac(&self) -> Option<Mac> {
        self.guest_mac
    }

    /// The guest's IPv6 address, once learned.
    pub fn guest_ipv6(&self) -> Option<Ipv6Addr> {
        self.guest_v6
    }

    /// The configuration.
    pub fn config(&self) -> &GuestConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &GuestStats {
        &self.stats
    }

    /// The guest's link went down and up (a new connection from the VMM): a learned MAC is
    /// forgotten, and a router advertisement goes out at once.
    pub fn link_reset(&mut self, now: Instant) {
        self.guest_mac = self.config.mac;
        self.queued.clear();
        self.next_ra = Some(now);
    }

    fn drop(&mut self, reason: GuestDrop) -> Action<'static> {
        self.stats.drops.add(reason);
        Action::None
    }

    fn emit<'o>(&mut self, out: &'o [u8], len: usize) -> Action<'o> {
        match out.get(..len) {
            Some(frame) => {
                self.stats.tx_frames += 1;
                Action::ToGuest(frame)
            }
            None => Action::None,
        }
    }

    /// Handles one frame from the guest. `frame` is rewritten in place when it goes to the
    /// engine; `out` must hold [`OUT_LEN`] bytes.
    pub fn handle_guest_frame<'o>(
        &mut self,
        now: Instant,
        frame: &mut [u8],
        out: &'o mut [u8],
    ) -> Action<'o> {
        self.stats.rx_frames += 1;
        if frame.len() > MAX_FRAME {
            return self.drop(GuestDrop::FrameTooLong);
        }
        let Ok(eth) = EthernetRepr::parse(frame) else {
            return self.drop(GuestDrop::FrameTooShort);
        };
        if !eth.src.is_unicast() {
            return self.drop(GuestDrop::BadSourceMac);
        }
        match self.guest_mac {
            Some(mac) if mac != eth.src => return self.drop(GuestDrop::ForeignSourceMac),
            Some(_) => {}
            None => self.guest_mac = Some(eth.src),
        }
        if eth.dst != SHIM_MAC && !eth.dst.is_multicast() {
            return self.drop(GuestDrop::NotForShim);
        }
        let guest = eth.src;
        let to_shim = eth.dst == SHIM_MAC;
        let Some(body) = frame.get_mut(ETH_HLEN..) else {
            return self.drop(GuestDrop::FrameTooShort);
        };
        match eth.ethertype {
            ETHERTYPE_ARP => self.arp(guest, body, out),
            ETHERTYPE_IPV4 => self.ipv4(now, guest, to_shim, body, out),
            ETHERTYPE_IPV6 => self.ipv6(now, guest, to_shim, body, out),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => self.drop(GuestDrop::VlanTagged),
            _ => self.drop(GuestDrop::UnknownEthertype),
        }
    }

    fn arp<'o>(&mut self, guest: Mac, body: &[u8], out: &'o mut [u8]) -> Action<'o> {
        let Ok(req) = ArpRepr::parse(body) else {
            return self.drop(GuestDrop::ArpMalformed);
        };
        // Requests only; not the guest's probes (sender 0.0.0.0) or announcements (sender =
        // target), and not for its own address (nothing else may answer for it).
        if req.op != OP_REQUEST
            || req.sha != guest
            || req.spa.is_unspecified()
            || req.spa == req.tpa
            || req.tpa == self.config.address
            || req.tpa.is_unspecified()
            || req.tpa.is_broadcast()
            || req.tpa.is_multicast()
        {
            return self.drop(GuestDrop::ArpIgnored);
        }
        let reply = ArpRepr {
            op: OP_REPLY,
            sha: SHIM_MAC,
            spa: req.tpa,
            tha: guest,
            tpa: req.spa,
        };
        let eth = EthernetRepr {
            dst: guest,
            src: SHIM_MAC,
            ethertype: ETHERTYPE_ARP,
        };
        if eth.emit(out).is_err()
            || out
                .get_mut(ETH_HLEN..)
                .and_then(|b| reply.emit(b).ok())
                .is_none()
        {
            return Action::None;
        }
        self.stats.arp_replies += 1;
        self.emit(out, ETH_HLEN + ARP_LEN)
    }

    fn ipv4<'o>(
        &mut self,
        now: Instant,
        guest: Mac,
        to_shim: bool,
        packet: &mut [u8],
        out: &'o mut [u8],
    ) -> Action<'o> {
        let Ok(ip) = Ipv4Packet::new_checked(&*packet) else {
            return self.drop(GuestDrop::IpMalformed);
        };
        let dst = ip.dst_addr();
        // a later fragment carries no UDP header; the DHCP path reads only its ports
        let udp_dport = (ip.protocol() == PROTO_UDP && ip.frag_offset() == 0)
            .then(|| field::be16(ip.payload(), 2))
            .flatten();
        if udp_dport == Some(dhcp::SERVER_PORT)
            && (dst == self.config.gateway || dst == Ipv4Addr::BROADCAST)
        {
            let payload = ip.payload().get(udp::HEADER_LEN..).unwrap_or_default();
            return self.dhcp(guest, payload, out);
        }
        // A router forwards none of these (RFC 3927 §7 for 169.254/16, RFC 1122 for 0/8 and
        // 127/8): a guest's metadata query to 169.254.169.254 must not reach a datacenter.
        if !to_shim
            || dst.is_broadcast()
            || dst.is_multicast()
            || dst.is_link_local()
            || dst.is_loopback()
            || dst.octets()[0] == 0
            || dst == self.subnet_broadcast()
            || dst == self.config.gateway
        {
            return self.drop(GuestDrop::LinkLocalOnly);
        }
        self.send_to_engine(now, packet, out)
    }

    fn subnet_broadcast(&self) -> Ipv4Addr {
        let host_bits = 32 - u32::from(self.config.prefix_len.min(32));
        let mask = u32::MAX.checked_shr(32 - host_bits).unwrap_or(0);
        Ipv4Addr::from(u32::from(self.config.address) | mask)
    }

    fn lease(&self) -> Lease {
        Lease {
            address: self.config.address,
            prefix_len: self.config.prefix_len,
            router: self.config.gateway,
            dns: self.config.dns.clone(),
            mtu: self.engine.mtu(),
            lease_secs: self.config.lease_secs,
        }
    }

    fn dhcp<'o>(&mut self, guest: Mac, payload: &[u8], out: &'o mut [u8]) -> Action<'o> {
        let lease = self.lease();
        let answer = dhcp::ClientMessage::parse(payload)
            .and_then(|msg| dhcp::answer(&msg, guest, &lease).map(|r| (msg, r)));
        let (msg, reply) = match answer {
            Ok(a) => a,
            Err(dhcp::Refusal::Malformed) => return self.drop(GuestDrop::DhcpMalformed),
            Err(dhcp::Refusal::ForeignClient) => return self.drop(GuestDrop::DhcpForeignClient),
            Err(dhcp::Refusal::Ignored) => return self.drop(GuestDrop::DhcpIgnored),
        };
        let udp_at = ETH_HLEN + 20;
        let Some(len) = out
            .get_mut(udp_at + 8..)
            .and_then(|b| dhcp::write_reply(b, &msg, &reply, &lease))
            .and_then(|n| {
                udp::emit_header(
                    out.get_mut(udp_at..)?,
                    (lease.router.into(), dhcp::SERVER_PORT),
                    (reply.dst.into(), dhcp::CLIENT_PORT),
                    n,
                )
                .ok()
            })
            .and_then(|udp_len| {
                Ipv4Repr {
                    src_addr: lease.router,
                    dst_addr: reply.dst,
                    protocol: PROTO_UDP,
                    payload_len: udp_len,
                    ttl: 64,
                    dont_frag: false,
                }
                .emit(out.get_mut(ETH_HLEN..)?)
                .ok()?;
                EthernetRepr {
                    dst: if reply.broadcast {
                        Mac::BROADCAST
                    } else {
                        guest
                    },
                    src: SHIM_MAC,
                    ethertype: ETHERTYPE_IPV4,
                }
                .emit(out)
                .ok()?;
                Some(udp_at + udp_len)
            })
        else {
            return Action::None;
        };
        self.stats.dhcp_replies += 1;
        self.emit(out, len)
    }

    fn ipv6<'o>(
        &mut self,
        now: Instant,
        guest: Mac,
        to_shim: bool,
        packet: &mut [u8],
        out: &'o mut [u8],
    ) -> Action<'o> {
        let Ok(ip) = Ipv6Packet::new_checked(&*packet) else {
            return self.drop(GuestDrop::IpMalformed);
        };
        if ip.next_header() == PROTO_ICMPV6 {
            if let Some(&kind) = packet.get(IPV6_HLEN) {
                if ndp::is_ndp(kind) {
                    return self.ndp(now, guest, &ip, out);
                }
            }
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let link_scope = |a: Ipv6Addr| {
            a.is_multicast()
                || a.is_loopback()
                || a.is_unspecified()
                || a.segments()[0] & 0xffc0 == 0xfe80
        };
        if !to_shim || link_scope(dst) || link_scope(src) {
            return self.drop(GuestDrop::LinkLocalOnly);
        }
        self.send_to_engine(now, packet, out)
    }

    fn ndp<'o>(
        &mut self,
        now: Instant,
        guest: Mac,
        ip: &Ipv6Packet<&[u8]>,
        out: &'o mut [u8],
    ) -> Action<'o> {
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let parsed = match ndp::parse(ip.payload(), src, dst, ip.hop_limit()) {
            Ok(m) => m,
            Err(_) => return self.drop(GuestDrop::NdpMalformed),
        };
        match parsed {
            ndp::Message::RouterSolicitation if !self.config.ipv6 => {
                self.drop(GuestDrop::NdpIgnored)
            }
            ndp::Message::RouterSolicitation => {
                let dst = if src.is_unspecified() {
                    ndp::ALL_NODES
                } else {
                    src
                };
                self.next_ra = Some(now + RA_INTERVAL);
                let Some(n) = ndp::write_router_advertisement(
                    out,
                    SHIM_MAC,
                    guest,
                    dst,
                    self.engine.mtu(),
                    self.prefix6(),
                ) else {
                    return Action::None;
                };
                self.stats.router_advertisements += 1;
                self.emit(out, n)
            }
            ndp::Message::NeighborSolicitation { target } if src.is_unspecified() => {
                // duplicate address detection: the guest is about to use `target`
                if ndp::is_global_unicast(target)
                    && self.prefix6().is_none_or(|p| p.contains(target))
                {
                    self.learn_ipv6(target);
                }
                self.drop(GuestDrop::NdpIgnored)
            }
            ndp::Message::NeighborSolicitation { target } => {
                if Some(target) == self.guest_v6 {
                    return self.drop(GuestDrop::NdpIgnored);
                }
                let Some(n) = ndp::write_neighbor_advertisement(out, SHIM_MAC, guest, src, target)
                else {
                    return Action::None;
                };
                self.stats.neighbor_advertisements += 1;
                self.emit(out, n)
            }
            ndp::Message::NeighborAdvertisement => self.drop(GuestDrop::NdpIgnored),
            ndp::Message::RouterOnly => self.drop(GuestDrop::NdpRouterOnly),
        }
    }

    fn prefix6(&self) -> Option<Prefix6> {
        self.config.prefix6.map(|prefix| Prefix6 { prefix })
    }

    fn learn_ipv6(&mut self, addr: Ipv6Addr) {
        if self.guest_v6 == Some(addr) {
            return;
        }
        self.guest_v6 = Some(addr);
        self.stats.ipv6_address_changes += 1;
        self.engine.set_local_addresses(StableAddresses {
            v4: Some(self.config.address),
            v6: Some(addr),
        });
    }

    fn send_to_engine<'o>(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        out: &'o mut [u8],
    ) -> Action<'o> {
        match self.engine.handle_local(now, packet, out) {
            Ok(Some(t)) => {
                self.stats.to_engine += 1;
                Action::ToUnderlay(t)
            }
            Ok(None) => {
                self.stats.to_engine += 1;
                Action::None
            }
            Err(_) => self.drop(GuestDrop::KeeperRefused),
        }
    }

    /// Handles a datagram from the underlay: a packet for the guest comes back as a frame,
    /// a handshake answer as a datagram. `out` must hold [`OUT_LEN`] bytes.
    pub fn handle_datagram<'o>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &'o mut [u8],
    ) -> Action<'o> {
        let base = out.as_ptr() as usize;
        let Some(inner) = out.get_mut(ETH_HLEN..) else {
            return Action::None;
        };
        // Either a packet for the guest (its place in `out`, its length, its EtherType) or a
        // datagram to send (its place and length, its destination).
        let (at, len, what) = match self.engine.handle_datagram(now, from, datagram, inner) {
            Outcome::Deliver(p) => {
                let ethertype = match p.first().map(|b| b >> 4) {
                    Some(4) => ETHERTYPE_IPV4,
                    _ => ETHERTYPE_IPV6,
                };
                (p.as_ptr() as usize - base, p.len(), Ok(ethertype))
            }
            Outcome::Transmit(t) => (
                t.datagram.as_ptr() as usize - base,
                t.datagram.len(),
                Err(t.to),
            ),
            Outcome::Done | Outcome::Dropped(_) => return Action::None,
        };
        match what {
            Err(to) => match out.get(at..at + len) {
                Some(datagram) => Action::ToUnderlay(Transmit { to, datagram }),
                None => Action::None,
            },
            Ok(ethertype) => {
                let Some(guest) = self.guest_mac else {
                    return self.drop(GuestDrop::NoGuestMac);
                };
                // the engine writes at the start of the buffer it is given; move it if not
                if at != ETH_HLEN {
                    out.copy_within(at..at + len, ETH_HLEN);
                }
                let eth = EthernetRepr {
                    dst: guest,
                    src: SHIM_MAC,
                    ethertype,
                };
                if eth.emit(out).is_err() {
                    return Action::None;
                }
                self.emit(out, ETH_HLEN + len)
            }
        }
    }

    /// The engine's datagrams due now (see [`Engine::poll_transmit`]).
    pub fn poll_transmit(&mut self, now: Instant, batch: &mut engine::Batch) {
        self.engine.poll_transmit(now, batch)
    }

    /// When [`GuestNet::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ra = self
            .next_ra
            .filter(|_| self.guest_mac.is_some() && self.config.ipv6);
        self.engine.poll_timeout().into_iter().chain(ra).min()
    }

    /// Runs the engine's timers (their datagrams wait for [`GuestNet::poll_transmit`]) and
    /// queues the periodic router advertisement (drain [`GuestNet::poll_guest_frame`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        let (Some(_), Some(due), true) = (self.guest_mac, self.next_ra, self.config.ipv6) else {
            return;
        };
        if now < due {
            return;
        }
        self.next_ra = Some(now + RA_INTERVAL);
        let mut frame = vec![0u8; 256];
        if let Some(n) = ndp::write_router_advertisement(
            &mut frame,
            SHIM_MAC,
            Mac::ipv6_multicast(ndp::ALL_NODES),
            ndp::ALL_NODES,
            self.engine.mtu(),
            self.prefix6(),
        ) {
            frame.truncate(n);
            if self.queued.len() >= MAX_QUEUED_FRAMES {
                self.stats.drops.add(GuestDrop::QueueFull);
                return;
            }
            self.stats.router_advertisements += 1;
            self.queued.push_back(frame);
        }
    }

    /// A frame the shim originated for the guest, if any.
    pub fn poll_guest_frame(&mut self) -> Option<Vec<u8>> {
        let f = self.queued.pop_front()?;
        self.stats.tx_frames += 1;
        Some(f)
    }

    /// Maps a status query: the guest's addresses as the session keeper uses them.
    pub fn guest_addresses(&self) -> Vec<IpAddr> {
        std::iter::once(IpAddr::V4(self.config.address))
            .chain(self.guest_v6.map(IpAddr::V6))
            .collect()
    }
}
