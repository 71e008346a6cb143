//! The gateway's claim of a client's stable inner address on the datacenter's inside segment.
//!
//! When a client makes this gateway its active one, hosts on the shared inside Ethernet segment
//! must send the return traffic for the client's stable address here and nowhere else. A
//! [`Takeover`] owns the three things that make that happen, for each claimed address:
//!
//! 1. a host route `addr/32` (or `/128`) through the gateway's TUN, so the kernel forwards what
//!    arrives for the address into the daemon (and so proxy ARP applies: the kernel answers for
//!    an IPv4 proxy entry only when the route to it leaves through another device);
//! 2. a proxy neighbour entry (`NTF_PROXY`, like `ip neigh add proxy ADDR dev in0`), so this
//!    gateway answers ARP requests and neighbour solicitations for the address;
//! 3. an announcement (gratuitous ARP, unsolicited neighbour advertisement with Override set),
//!    so hosts that cached another gateway's MAC for the address switch to ours at once.
//!
//! Why the announcement lands despite the neighbour-cache `locktime` trap (DESIGN.md, "Known
//! traps"): in `arp_process` (net/ipv4/arp.c) an ARP packet whose sender and target protocol
//! addresses are equal is a gratuitous ARP (`arp_is_garp`), and for an existing entry
//! `override = time_after(jiffies, n->updated + LOCKTIME) || is_garp` — a GARP *request*
//! overrides regardless of locktime (a GARP *reply* would also need target MAC == sender MAC;
//! kernels before 2017 computed `is_garp` only with `arp_accept=1`). The receiving host must
//! route the address as unicast (`arp_is_garp` checks it), which its on-link route for the VPN
//! range does.
//! The entry lands in STALE, so the host confirms it with a unicast probe later, which our proxy
//! entry answers at once. IPv6 has no locktime at all: `ndisc_recv_na` updates an existing entry
//! with `NEIGH_UPDATE_F_OVERRIDE` when the advertisement's O flag is set; it ignores entries in
//! state FAILED, which then resolve afresh through our proxy entry.
//!
//! Calling contract:
//! - [`Takeover::claim`] when this gateway becomes a client's active gateway, and
//!   [`Takeover::release`] when it stops being so (or before the daemon exits): [`Drop`] cannot
//!   talk netlink, so routes and proxy entries outlive a `Takeover` that was never released.
//! - The caller enables forwarding (`net.ipv4.ip_forward=1`, `net.ipv6.conf.all.forwarding=1`);
//!   `claim` refuses to claim without it, because neither proxying nor forwarding into the TUN
//!   works then. `claim` itself sets, on the inside interface only: `proxy_ndp=1` (IPv6) and the
//!   neighbour tables' `proxy_delay=0` (so a broadcast ARP request or multicast solicitation for
//!   a claimed address is answered at once instead of after up to 0.8 s).
//! - The host route is the same one `net::configure_interface` adds when a client's allowed IPs
//!   are exactly `addr/32` (or `/128`): `claim` replaces it and `release` deletes it.
//! - One announcement is one frame. A caller that wants to survive its loss calls
//!   [`Takeover::announce`] again (it is cheap and idempotent).
//!
//! **Claim backends** ([`Backends`], chosen per gateway): `neighbour` is all of the above, for
//! a datacenter whose gateways and servers share the inside segment. `route` is the host
//! route alone, marked with routing protocol [`ROUTE_PROTOCOL`] (`failover` in `rt_protos`)
//! and metric [`route_metric`] of the client's switch generation, for a routing daemon (BIRD,
//! FRR) to export exactly these routes and let the newest claim win; nothing is proxied or
//! announced on the segment. Both may be on. Every host route of ours carries the protocol,
//! so [`Takeover::clean_up`] finds what a crashed gateway left behind.
//!
//! It must never: run `ip` or any other program; touch neighbour entries, routes or sysctls
//! other than those named above (in particular never another host's addresses, and never the
//! inside interface's own addresses); block the runtime (its sockets are non-blocking); read
//! from its raw sockets (they are filtered to receive nothing).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use futures::TryStreamExt as _;
use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use wire::arp::{self, ArpRepr};
use wire::ethernet::{self, EthernetRepr, ETHERTYPE_ARP};

/// A MAC address.
type Mac = [u8; 6];

/// The Ethernet broadcast address, destination of a gratuitous ARP.
const BROADCAST: Mac = [0xff; 6];
/// A gratuitous ARP padded to the minimum Ethernet frame (without FCS); the ARP part is 42 bytes.
const GARP_FRAME_LEN: usize = 60;

/// ICMPv6 type Neighbor Advertisement (RFC 4861 4.4).
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Neighbor Advertisement flag Override: receivers replace a cached link-layer address.
const NA_FLAG_OVERRIDE: u8 = 0x20;
/// Neighbor Discovery option Target Link-Layer Address.
const ND_OPT_TARGET_LINK_LAYER_ADDRESS: u8 = 2;
/// An advertisement with one Target Link-Layer Address option for an Ethernet MAC.
const NA_MESSAGE_LEN: usize = 32;
/// Receivers drop Neighbor Discovery messages with any other hop limit (RFC 4861 7.1.2).
const ND_HOP_LIMIT: u32 = 255;

/// `ip_route_del` / `fib_table_delete`: no such route.
const ESRCH: i32 = libc::ESRCH;
/// `pneigh_delete`: no such proxy entry.
const ENOENT: i32 = libc::ENOENT;
/// The interface went away (and took its routes and proxy entries with it).
const ENODEV: i32 = libc::ENODEV;
/// `ICMP6_FILTER` from `<netinet/icmp6.h>` (`ICMPV6_FILTER` in `<linux/icmpv6.h>`), level
/// `IPPROTO_ICMPV6`; the libc crate does not export it.
const ICMP6_FILTER: libc::c_int = 1;

/// The routing protocol number of failoverd's host routes (`209 failover` in
/// `/etc/iproute2/rt_protos.d/failover.conf`, shipped in `dist/bird/`): a routing daemon exports
/// routes of this protocol and nothing else.
pub const ROUTE_PROTOCOL: u8 = 209;

/// The kernel route metric of a claim made for switch generation `generation`: the newer the
/// claim, the lower the metric (BIRD's filter in `dist/bird/gateway.conf` makes it the BGP
/// MED, and the lowest MED wins at the backbone).
pub fn route_metric(generation: u32) -> u32 {
    u32::MAX - generation
}

/// How a gateway claims a client's addresses (its configuration's `claim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backends {
    /// proxy ARP/NDP and announcements on a shared inside segment
    pub neighbour: bool,
    /// a kernel route of [`ROUTE_PROTOCOL`] with the generation's metric, for a routing daemon
    pub route: bool,
}

impl Backends {
    /// The names, as in the configuration.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.neighbour {
            v.push("neighbour");
        }
        if self.route {
            v.push("route");
        }
        v
    }
}

/// This gateway's claim on client stable addresses on the inside segment. See the module docs.
pub struct Takeover {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
    tun: Interface,
    inside: Interface,
    backends: Backends,
    /// the inside MAC, with the neighbour backend
    inside_mac: Mac,
    /// AF_PACKET socket bound to `inside`, protocol 0 so it never receives; sends GARPs. With
    /// the neighbour backend only.
    arp_socket: Option<Socket>,
    /// Raw ICMPv6 socket bound to `inside`; `None` where the kernel has no IPv6, or without the
    /// neighbour backend.
    ndp_socket: Option<Socket>,
    /// claimed addresses and the metric of their host route
    claimed: BTreeMap<IpAddr, u32>,
    /// Whether the inside interface's IPv4 / IPv6 proxy sysctls were set by this `Takeover`.
    v4_sysctls_done: bool,
    v6_sysctls_done: bool,
}

/// An interface as looked up once in [`Takeover::new`].
#[derive(Clone, Debug)]
struct Interface {
    name: String,
    index: u32,
}

impl fmt::Debug for Takeover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Takeover")
            .field("tun", &self.tun)
            .field("inside", &self.inside)
            .field("backends", &self.backends)
            .field("inside_mac", &format_mac(self.inside_mac))
            .field("claimed", &self.claimed)
            .finish_non_exhaustive()
    }
}

impl Takeover {
    /// `tun`: the gateway's TUN interface name; `inside`: the datacenter-side interface.
    ///
    /// Looks both up over rtnetlink, reads the inside MAC, opens an AF_PACKET socket bound to
    /// `inside` (for ARP) and a raw ICMPv6 socket bound to `inside` with hop limit 255 (for
    /// neighbour advertisements). Needs CAP_NET_ADMIN (netlink changes, sysctls) and CAP_NET_RAW
    /// (the raw sockets); errors say which one is missing. Must be called inside a tokio
    /// runtime (it spawns the netlink connection task, aborted on drop).
    pub async fn new(tun: &str, inside: &str, backends: Backends) -> anyhow::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .context("opening a netlink socket (needs CAP_NET_ADMIN for the takeover)")?;
        let connection = tokio::spawn(connection);
        // From here on a failure must abort the connection task, which `Drop` does once the
        // struct exists; until then do it by hand.
        let looked_up = async {
            let (tun_index, _) = lookup_link(&handle, tun).await?;
            let (inside_index, inside_mac) = lookup_link(&handle, inside).await?;
            let inside_mac = match (inside_mac, backends.neighbour) {
                (Some(mac), _) => Some(mac),
                // routed: nothing is answered or announced on the inside link
                (None, false) => Some([0; 6]),
                (None, true) => None,
            };
            let inside_mac = inside_mac.ok_or_else(|| {
                anyhow!(
                    "inside interface {inside} is not an Ethernet interface with a MAC address: \
                     the takeover answers ARP/NDP, so it needs an Ethernet segment (a NIC, a \
                     veth, a bridge)"
                )
            })?;
            if tun_index == inside_index {
                bail!("the TUN interface and the inside interface are both {tun}: use two");
            }
            anyhow::Ok((tun_index, inside_index, inside_mac))
        }
        .await;
        let (tun_index, inside_index, inside_mac) = match looked_up {
            Ok(found) => found,
            Err(e) => {
                connection.abort();
                return Err(e);
            }
        };
        let sockets = (|| {
            if !backends.neighbour {
                return anyhow::Ok((None, None));
            }
            let arp_socket = arp_socket(inside, inside_index)?;
            let ndp_socket = ndp_socket(inside, inside_index)?;
            anyhow::Ok((Some(arp_socket), ndp_socket))
        })();
        let (arp_socket, ndp_socket) = match sockets {
            Ok(sockets) => sockets,
            Err(e) => {
                connection.abort();
                return Err(e);
            }
        };
        tracing::debug!(
            tun,
            tun_index,
            inside,
            inside_index,
            inside_mac = %format_mac(inside_mac),
            ipv6 = ndp_socket.is_some(),
            backends = ?backends.names(),
            "takeover ready"
        );
        Ok(Self {
            handle,
            connection,
            tun: Interface {
                name: tun.to_owned(),
                index: tun_index,
            },
            inside: Interface {
                name: inside.to_owned(),
                index: inside_index,
            },
            backends,
            inside_mac,
            arp_socket,
            ndp_socket,
            claimed: BTreeMap::new(),
            v4_sysctls_done: false,
            v6_sysctls_done: false,
        })
    }

    /// Claims `addr` for this gateway: (1) host route `addr/32` or `/128` via the TUN (replacing
    /// an identical one), (2) a proxy neighbour entry for `addr` on the inside interface, (3)
    /// [`announce`](Self::announce). Idempotent: claiming a claimed address re-asserts all three.
    ///
    /// Call it when this gateway becomes the client's active gateway. Fails, changing nothing,
    /// if forwarding is off on the inside interface. On a failure after the route is in place
    /// the address counts as claimed, so [`release`](Self::release) cleans up.
    ///
    /// `generation` is the client's switch generation: with the route backend it sets the
    /// route's metric ([`route_metric`]); claiming a claimed address with another generation
    /// adds the new route before it deletes the old one.
    pub async fn claim(&mut self, addr: IpAddr, generation: u32) -> anyhow::Result<()> {
        check_claimable(addr)?;
        match addr {
            IpAddr::V4(_) if !self.v4_sysctls_done => {
                self.prepare_ipv4()?;
                self.v4_sysctls_done = true;
            }
            IpAddr::V6(_) if !self.v6_sysctls_done => {
                if self.backends.neighbour && self.ndp_socket.is_none() {
                    bail!(
                        "cannot claim {addr}: this kernel has no IPv6 (opening an ICMPv6 socket \
                         failed)"
                    );
                }
                self.prepare_ipv6()?;
                self.v6_sysctls_done = true;
            }
            _ => {}
        }

        let metric = if self.backends.route {
            route_metric(generation)
        } else {
            0
        };
        let route = self.host_route(addr, metric)?;
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                netlink_error(
                    e,
                    format!(
                        "adding route {addr}/{} dev {} proto {ROUTE_PROTOCOL} metric {metric}",
                        host_len(addr),
                        self.tun.name
                    ),
                )
            })?;
        if let Some(old) = self.claimed.insert(addr, metric).filter(|m| *m != metric) {
            // the route of the older generation goes once the newer is in place
            self.delete_route(addr, old).await?;
        }
        if !self.backends.neighbour {
            tracing::info!(%addr, tun = %self.tun.name, metric, "address claimed (route)");
            return Ok(());
        }

        // NTF_PROXY makes the kernel create a proxy (pneigh) entry: no link-layer address, and
        // it answers for `addr` with the interface's own MAC.
        let proxy = self
            .handle
            .neighbours()
            .add(self.inside.index, addr)
            .flags(NeighbourFlags::Proxy)
            .replace();
        proxy.execute().await.map_err(|e| {
            netlink_error(
                e,
                format!(
                    "adding proxy neighbour entry {addr} dev {}",
                    self.inside.name
                ),
            )
        })?;

        self.announce(addr)?;
        tracing::info!(%addr, tun = %self.tun.name, inside = %self.inside.name, "address claimed");
        Ok(())
    }

    /// Sends the announcement for `addr` on the inside segment, and only that: for IPv4 a
    /// gratuitous ARP request (sender IP == target IP == `addr`, sender MAC the inside MAC,
    /// broadcast); for IPv6 an unsolicited Neighbor Advertisement to ff02::1 with Override set,
    /// target `addr`, Target Link-Layer Address option the inside MAC, hop limit 255, from the
    /// inside interface's link-local address (the kernel picks it and computes the checksum).
    ///
    /// Does not check that `addr` is claimed; announcing an address this gateway does not route
    /// would blackhole it. Non-blocking: a full socket buffer is reported as an error.
    ///
    /// Without the neighbour backend there is nothing to announce: it does nothing.
    pub fn announce(&self, addr: IpAddr) -> anyhow::Result<()> {
        if !self.backends.neighbour {
            return Ok(());
        }
        match addr {
            IpAddr::V4(v4) => {
                let frame = garp_frame(self.inside_mac, v4);
                let to = link_layer_address(self.inside.index, ETHERTYPE_ARP, BROADCAST);
                let socket = self
                    .arp_socket
                    .as_ref()
                    .ok_or_else(|| anyhow!("cannot announce {v4}: no ARP socket"))?;
                socket.send_to(&frame, &to).with_context(|| {
                    format!("sending gratuitous ARP for {v4} on {}", self.inside.name)
                })?;
            }
            IpAddr::V6(v6) => {
                let socket = self
                    .ndp_socket
                    .as_ref()
                    .ok_or_else(|| anyhow!("cannot announce {v6}: this kernel has no IPv6"))?;
                let message = unsolicited_na(self.inside_mac, v6);
                let all_nodes = SocketAddrV6::new(
                    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                    0,
                    0,
                    self.inside.index,
                );
                socket
                    .send_to(&message, &SockAddr::from(all_nodes))
                    .with_context(|| {
                        format!(
                            "sending unsolicited neighbour advertisement for {v6} on {} (does it \
                             have an IPv6 link-local address? is IPv6 disabled on it?)",
                            self.inside.name
                        )
                    })?;
            }
        }
        tracing::debug!(%addr, inside = %self.inside.name, "announced");
        Ok(())
    }

    /// Releases `addr`: deletes its host route and its proxy neighbour entry. Idempotent:
    /// entries already gone (or whose interface is gone) are fine. Sends nothing: the gateway
    /// taking over announces itself.
    pub async fn release(&mut self, addr: IpAddr) -> anyhow::Result<()> {
        // The proxy entry first: once it is gone this gateway stops answering for the address
        // even if deleting the route fails.
        if self.backends.neighbour {
            self.delete_proxy(addr).await?;
        }
        let metric = self.claimed.get(&addr).copied().unwrap_or(0);
        self.delete_route(addr, metric).await?;
        let was_claimed = self.claimed.remove(&addr).is_some();
        tracing::info!(%addr, was_claimed, "address released");
        Ok(())
    }

    /// Deletes the proxy neighbour entry for `addr` on the inside interface, if there is one.
    async fn delete_proxy(&self, addr: IpAddr) -> anyhow::Result<()> {
        let mut proxy = NeighbourMessage::default();
        proxy.header.family = address_family(addr);
        proxy.header.ifindex = self.inside.index;
        proxy.header.flags = NeighbourFlags::Proxy;
        proxy
            .attributes
            .push(NeighbourAttribute::Destination(match addr {
                IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
            }));
        let proxy_result = self.handle.neighbours().del(proxy).execute().await;
        ignore_missing(proxy_result, &[ENOENT, ENODEV]).map_err(|e| {
            netlink_error(
                e,
                format!(
                    "deleting proxy neighbour entry {addr} dev {}",
                    self.inside.name
                ),
            )
        })?;

        Ok(())
    }

    /// Deletes the host route of `addr` with `metric`, if it is there.
    async fn delete_route(&self, addr: IpAddr, metric: u32) -> anyhow::Result<()> {
        let route = self.host_route(addr, metric)?;
        let route_result = self.handle.route().del(route).execute().await;
        ignore_missing(route_result, &[ESRCH, ENOENT, ENODEV]).map_err(|e| {
            netlink_error(
                e,
                format!(
                    "deleting route {addr}/{} dev {} metric {metric}",
                    host_len(addr),
                    self.tun.name
                ),
            )
        })
    }

    /// Removes what a gateway that died without releasing left behind, before anything is
    /// claimed: every route of [`ROUTE_PROTOCOL`] (in the main tables of both families) and,
    /// with the neighbour backend, the proxy entries for `addresses` (the configured clients')
    /// on the inside interface. Returns how many routes and proxy entries it removed.
    pub async fn clean_up(&mut self, addresses: &[IpAddr]) -> anyhow::Result<(usize, usize)> {
        let mut stale = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessageBuilder::<IpAddr>::new().build();
            query.header.address_family = family;
            let mut dump = self.handle.route().get(query).execute();
            while let Some(route) = dump
                .try_next()
                .await
                .map_err(|e| netlink_error(e, "listing routes".into()))?
            {
                if route.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) {
                    stale.push(route);
                }
            }
        }
        let routes = stale.len();
        for route in stale {
            let result = self.handle.route().del(route).execute().await;
            ignore_missing(result, &[ESRCH, ENOENT, ENODEV])
                .map_err(|e| netlink_error(e, "deleting a stale route of ours".into()))?;
        }
        let mut proxies = 0;
        if self.backends.neighbour {
            for addr in addresses {
                let existed = self.proxy_exists(*addr).await;
                self.delete_proxy(*addr).await?;
                proxies += usize::from(existed);
            }
        }
        self.claimed.clear();
        if routes + proxies > 0 {
            tracing::warn!(
                routes,
                proxies,
                "removed claims a previous run left behind (it did not shut down cleanly)"
            );
        }
        Ok((routes, proxies))
    }

    /// Whether a proxy neighbour entry for `addr` exists on the inside interface.
    async fn proxy_exists(&self, addr: IpAddr) -> bool {
        let mut dump = self.handle.neighbours().get().proxies().execute();
        while let Ok(Some(n)) = dump.try_next().await {
            if n.header.ifindex != self.inside.index {
                continue;
            }
            let matches = n.attributes.iter().any(|a| match (a, addr) {
                (NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)), IpAddr::V4(x)) => {
                    *v4 == x
                }
                (NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)), IpAddr::V6(x)) => {
                    *v6 == x
                }
                _ => false,
            });
            if matches {
                return true;
            }
        }
        false
    }

    /// Whether `addr` is currently claimed by this `Takeover` (claimed, not released since).
    pub fn is_claimed(&self, addr: IpAddr) -> bool {
        self.claimed.contains_key(&addr)
    }

    /// The backends in use.
    pub fn backends(&self) -> Backends {
        self.backends
    }

    /// The host route `addr/32` or `addr/128` through the TUN, as added and as deleted: ours
    /// ([`ROUTE_PROTOCOL`]), with `metric` unless it is 0.
    fn host_route(&self, addr: IpAddr, metric: u32) -> anyhow::Result<RouteMessage> {
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(addr, host_len(addr))
            .map_err(|e| anyhow!("host route for {addr}: {e:?}"))?
            .output_interface(self.tun.index)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        let builder = if metric == 0 {
            builder
        } else {
            builder.priority(metric)
        };
        // Like `ip route add ADDR dev TUN`: an on-link IPv4 route has link scope. IPv6 routes
        // have no scope of their own.
        let builder = match addr {
            IpAddr::V4(_) => builder.scope(RouteScope::Link),
            IpAddr::V6(_) => builder,
        };
        Ok(builder.build())
    }

    /// Checks IPv4 forwarding on the inside interface; sets its ARP proxy_delay to 0 (with the
    /// neighbour backend).
    fn prepare_ipv4(&self) -> anyhow::Result<()> {
        let name = &self.inside.name;
        require_sysctl_one(
            sysctl_path(&["ipv4", "conf", name, "forwarding"]),
            "IPv4 forwarding",
            &format!("`sysctl -w net.ipv4.conf.{name}.forwarding=1` (or net.ipv4.ip_forward=1)"),
        )?;
        if !self.backends.neighbour {
            return Ok(());
        }
        write_sysctl(sysctl_path(&["ipv4", "neigh", name, "proxy_delay"]), "0")
    }

    /// Checks IPv6 forwarding on the inside interface; sets proxy_ndp=1 and proxy_delay=0.
    fn prepare_ipv6(&self) -> anyhow::Result<()> {
        let name = &self.inside.name;
        require_sysctl_one(
            sysctl_path(&["ipv6", "conf", name, "forwarding"]),
            "IPv6 forwarding",
            &format!(
                "`sysctl -w net.ipv6.conf.{name}.forwarding=1` \
                 (or net.ipv6.conf.all.forwarding=1)"
            ),
        )?;
        if !self.backends.neighbour {
            return Ok(());
        }
        write_sysctl(sysctl_path(&["ipv6", "conf", name, "proxy_ndp"]), "1")?;
        write_sysctl(sysctl_path(&["ipv6", "neigh", name, "proxy_delay"]), "0")
    }
}

impl Drop for Takeover {
    /// Stops the netlink connection task. Claims are *not* released (that needs netlink round
    /// trips, which `drop` cannot await): the caller must [`release`](Takeover::release) every
    /// claimed address first, or the routes and proxy entries stay until the interfaces go.
    fn drop(&mut self) {
        if !self.claimed.is_empty() {
            tracing::warn!(
                claimed = ?self.claimed,
                "takeover dropped with addresses still claimed; their routes and proxy entries \
                 remain"
            );
        }
        self.connection.abort();
    }
}

/// Looks `name` up: its index and, if it is an Ethernet link, its MAC address.
async fn lookup_link(handle: &rtnetlink::Handle, name: &str) -> anyhow::Result<(u32, Option<Mac>)> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(|e| match netlink_code(&e) {
            Some(ENODEV) => anyhow!("interface {name} does not exist (create it first)"),
            _ => netlink_error(e, format!("looking up interface {name}")),
        })?
        .ok_or_else(|| anyhow!("interface {name} does not exist (create it first)"))?;
    // Only an Ethernet link has neighbours to announce to; loopback, too, has a 6-byte (zero)
    // "MAC".
    let mac = (link.header.link_layer_type == LinkLayerType::Ether)
        .then(|| {
            link.attributes
                .iter()
                .find_map(|attribute| match attribute {
                    LinkAttribute::Address(bytes) => Mac::try_from(bytes.as_slice()).ok(),
                    _ => None,
                })
        })
        .flatten()
        .filter(|mac| *mac != [0; 6]);
    Ok((link.header.index, mac))
}

/// The AF_PACKET socket that sends gratuitous ARPs out of `inside`. Protocol 0: it is bound to
/// the interface but receives nothing.
fn arp_socket(inside: &str, index: u32) -> anyhow::Result<Socket> {
    let socket = Socket::new(Domain::PACKET, Type::RAW, None).map_err(|e| {
        privilege_hint(
            e,
            "opening an AF_PACKET socket for gratuitous ARP",
            "CAP_NET_RAW",
        )
    })?;
    socket
        .bind(&link_layer_address(index, 0, [0; 6]))
        .with_context(|| format!("binding the ARP socket to {inside}"))?;
    socket
        .set_nonblocking(true)
        .context("making the ARP socket non-blocking")?;
    Ok(socket)
}

/// The raw ICMPv6 socket that sends neighbour advertisements out of `inside`, or `None` if the
/// kernel has no IPv6.
fn ndp_socket(inside: &str, index: u32) -> anyhow::Result<Option<Socket>> {
    let socket = match Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)) {
        Ok(socket) => socket,
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            tracing::warn!("no IPv6 in this kernel: IPv6 addresses cannot be claimed");
            return Ok(None);
        }
        Err(e) => {
            return Err(privilege_hint(
                e,
                "opening a raw ICMPv6 socket for neighbour advertisements",
                "CAP_NET_RAW",
            ))
        }
    };
    socket.bind_device(Some(inside.as_bytes())).map_err(|e| {
        privilege_hint(
            e,
            &format!("binding the ICMPv6 socket to {inside}"),
            "CAP_NET_RAW",
        )
    })?;
    socket
        .set_multicast_if_v6(index)
        .with_context(|| format!("sending ICMPv6 multicast out of {inside}"))?;
    socket
        .set_multicast_hops_v6(ND_HOP_LIMIT)
        .context("setting the ICMPv6 multicast hop limit to 255")?;
    socket
        .set_unicast_hops_v6(ND_HOP_LIMIT)
        .context("setting the ICMPv6 unicast hop limit to 255")?;
    // Our own advertisement need not come back to us.
    socket
        .set_multicast_loop_v6(false)
        .context("disabling ICMPv6 multicast loopback")?;
    block_all_icmpv6(&socket).context("filtering all incoming ICMPv6 off the send-only socket")?;
    socket
        .set_nonblocking(true)
        .context("making the ICMPv6 socket non-blocking")?;
    Ok(Some(socket))
}

/// Installs an ICMP6_FILTER that blocks every type: the socket only sends, and an unfiltered
/// raw ICMPv6 socket would queue a copy of every ICMPv6 message arriving on the interface.
#[allow(unsafe_code)]
fn block_all_icmpv6(socket: &Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // `struct icmp6_filter` is eight 32-bit words; a set bit blocks that type (Linux).
    let filter: [u32; 8] = [u32::MAX; 8];
    let len = libc::socklen_t::try_from(std::mem::size_of_val(&filter))
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: the fd is a valid open socket borrowed from `socket` for the call; the option
    // value pointer and length describe `filter`, which lives on the stack across the call and
    // has the layout of `struct icmp6_filter`. The kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            filter.as_ptr().cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A `sockaddr_ll` for interface `index`, EtherType `protocol` and link-layer address `mac`.
#[allow(unsafe_code)]
fn link_layer_address(index: u32, protocol: u16, mac: Mac) -> SockAddr {
    let [m0, m1, m2, m3, m4, m5] = mac;
    let ll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: protocol.to_be(),
        // Interface indexes are positive `int`s in the kernel; u32 only in netlink's type.
        sll_ifindex: i32::try_from(index).unwrap_or(0),
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [m0, m1, m2, m3, m4, m5, 0, 0],
    };
    // SAFETY: `sockaddr_storage` is plain old data; all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: `sockaddr_storage` is larger than and at least as aligned as `sockaddr_ll` (it is
    // made to hold any socket address), so writing one `sockaddr_ll` at its start stays in
    // bounds and aligned.
    unsafe {
        std::ptr::write(
            std::ptr::addr_of_mut!(storage).cast::<libc::sockaddr_ll>(),
            ll,
        );
    }
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised `sockaddr_ll` whose family is AF_PACKET, and
    // `len` is exactly its size.
    unsafe { SockAddr::new(storage, len) }
}

/// A gratuitous ARP request as a complete Ethernet frame, padded to 60 bytes.
///
/// Layout: Ethernet dst ff:ff:ff:ff:ff:ff [0..6], src `mac` [6..12], type 0x0806 [12..14];
/// ARP htype 1 [14..16], ptype 0x0800 [16..18], hlen 6 [18], plen 4 [19], op 1 (request)
/// [20..22], sender MAC `mac` [22..28], sender IP `addr` [28..32], target MAC zero [32..38],
/// target IP `addr` [38..42]; zero padding [42..60].
/// Linux treats a request with sender IP == target IP as a GARP.
fn garp_frame(mac: Mac, addr: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut frame = [0u8; GARP_FRAME_LEN];
    let eth = EthernetRepr {
        dst: wire::Mac(BROADCAST),
        src: wire::Mac(mac),
        ethertype: ETHERTYPE_ARP,
    };
    let garp = ArpRepr {
        op: arp::OP_REQUEST,
        sha: wire::Mac(mac),
        spa: addr,
        tha: wire::Mac::default(),
        tpa: addr,
    };
    // 60 bytes hold the 14-byte header and the 28-byte body: neither emit can fail
    let (header, body) = frame.split_at_mut(ethernet::HEADER_LEN);
    let _ = eth.emit(header);
    let _ = garp.emit(body);
    frame
}

/// An unsolicited Neighbor Advertisement for `target` (ICMPv6 message, checksum left zero for
/// the kernel to fill in).
///
/// Layout: type 136 [0], code 0 [1], checksum [2..4], flags R=0 S=0 O=1 [4], reserved [5..8],
/// target [8..24]; option Target Link-Layer Address: type 2 [24], length 1 (8 bytes) [25],
/// `mac` [26..32].
fn unsolicited_na(mac: Mac, target: Ipv6Addr) -> [u8; NA_MESSAGE_LEN] {
    let mut message = [0u8; NA_MESSAGE_LEN];
    fill(
        &mut message,
        &[
            &[ICMPV6_NEIGHBOR_ADVERTISEMENT, 0],
            &[0, 0],
            &[NA_FLAG_OVERRIDE, 0, 0, 0],
            &target.octets(),
            &[ND_OPT_TARGET_LINK_LAYER_ADDRESS, 1],
            &mac,
        ],
    );
    message
}

/// Writes `parts` one after another from the start of `buf`. The callers' parts add up to
/// exactly their buffer's length (the unit tests check every offset); zipping makes an
/// overlong part truncate instead of panic.
fn fill(buf: &mut [u8], parts: &[&[u8]]) {
    for (slot, byte) in buf
        .iter_mut()
        .zip(parts.iter().flat_map(|part| part.iter()))
    {
        *slot = *byte;
    }
}

/// Refuses addresses no client can have as its stable address.
fn check_claimable(addr: IpAddr) -> anyhow::Result<()> {
    let bad = match addr {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.to_ipv4_mapped().is_some()
        }
    };
    if bad {
        bail!(
            "{addr} cannot be a client's stable address (unspecified, loopback, multicast, \
             broadcast or IPv4-mapped)"
        );
    }
    Ok(())
}

fn host_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn address_family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `/proc/sys/net/<parts...>`. Interface names cannot contain '/', so a looked-up name is safe.
fn sysctl_path(parts: &[&str]) -> PathBuf {
    let mut path = PathBuf::from("/proc/sys/net");
    path.extend(parts);
    path
}

/// Fails unless the sysctl at `path` reads 1, saying how to fix it.
fn require_sysctl_one(path: PathBuf, what: &str, fix: &str) -> anyhow::Result<()> {
    let value = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} ({what})", path.display()))?;
    if value.trim() != "1" {
        bail!(
            "{what} is off ({} = {}): the gateway must forward to claim addresses; run {fix}",
            path.display(),
            value.trim()
        );
    }
    Ok(())
}

fn write_sysctl(path: PathBuf, value: &str) -> anyhow::Result<()> {
    std::fs::write(&path, value).map_err(|e| {
        privilege_hint(
            e,
            &format!("writing {value} to {}", path.display()),
            "root or CAP_NET_ADMIN",
        )
    })
}

/// The errno of a netlink error reply, positive.
fn netlink_code(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| code.get().abs()),
        _ => None,
    }
}

/// `Ok` for a reply that says the thing to delete is already gone.
fn ignore_missing(
    result: Result<(), rtnetlink::Error>,
    missing: &[i32],
) -> Result<(), rtnetlink::Error> {
    match result {
        Err(e) if netlink_code(&e).is_some_and(|code| missing.contains(&code)) => Ok(()),
        other => other,
    }
}

/// A netlink failure while `doing`, naming the missing capability when that is the cause.
fn netlink_error(e: rtnetlink::Error, doing: String) -> anyhow::Error {
    match netlink_code(&e) {
        Some(libc::EPERM | libc::EACCES) => {
            anyhow!("{doing}: permission denied (needs CAP_NET_ADMIN)")
        }
        _ => anyhow!("{doing}: {e}"),
    }
}

/// An IO failure while `doing`, naming `privilege` when permission was the cause.
fn privilege_hint(e: std::io::Error, doing: &str, privilege: &str) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => anyhow!("{doing}: {e} (needs {privilege})"),
        _ => anyhow::Error::new(e).context(doing.to_owned()),
    }
}

fn format_mac(mac: Mac) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn garp_frame_layout() {
        let frame = garp_frame(MAC, Ipv4Addr::new(100, 96, 0, 2));
        let expected: [u8; 60] = [
            // Ethernet: broadcast destination, our source, EtherType ARP.
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, //
            0x08, 0x06, //
            // ARP: Ethernet / IPv4, hlen 6, plen 4, op request.
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, //
            // Sender MAC and IP.
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, 100, 96, 0, 2, //
            // Target MAC zero, target IP == sender IP.
            0, 0, 0, 0, 0, 0, 100, 96, 0, 2, //
            // Padding to 60 bytes.
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(frame, expected);
        // The fields the kernel's arp_is_garp and arp_process read, by offset.
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(
            &frame[20..22],
            &[0, 1],
            "a request, so no target-MAC rule applies"
        );
        assert_eq!(&frame[28..32], &frame[38..42], "sender IP == target IP");
        assert_eq!(
            &frame[6..12],
            &frame[22..28],
            "Ethernet source == sender MAC"
        );
    }

    #[test]
    fn unsolicited_na_layout() {
        let target: Ipv6Addr = "fd00:96::2".parse().unwrap();
        let message = unsolicited_na(MAC, target);
        let expected: [u8; 32] = [
            136, 0, 0, 0, // type, code, checksum (kernel fills it)
            0x20, 0, 0, 0, // R=0 S=0 O=1, reserved
            0xfd, 0x00, 0x00, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // target
            2, 1, // option Target Link-Layer Address, 1 x 8 bytes
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,
        ];
        assert_eq!(message, expected);
        assert_eq!(message[4] & 0x80, 0, "router flag clear");
        assert_eq!(
            message[4] & 0x40,
            0,
            "solicited flag clear (unsolicited to ff02::1)"
        );
        assert_eq!(message[4] & 0x20, 0x20, "override flag set");
    }

    #[test]
    fn odd_addresses_are_refused() {
        for addr in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
        ] {
            assert!(check_claimable(addr.parse().unwrap()).is_err(), "{addr}");
        }
        assert!(check_claimable("::ffff:100.96.0.2".parse().unwrap()).is_err());
        assert!(check_claimable("ff02::1".parse().unwrap()).is_err());
        assert!(check_claimable("100.96.0.2".parse().unwrap()).is_ok());
        assert!(check_claimable("fd00:96::2".parse().unwrap()).is_ok());
    }

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path(&["ipv6", "conf", "in0", "proxy_ndp"]),
            PathBuf::from("/proc/sys/net/ipv6/conf/in0/proxy_ndp")
        );
    }
}
