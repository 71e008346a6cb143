//! Interface setup over rtnetlink (never by running `ip`): MTU, link up, addresses, routes; and
//! the UDP socket of the underlay.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use anyhow::{anyhow, Context as _};
use futures::TryStreamExt as _;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
use tunnel::Prefix;

/// Socket buffer size asked for on the underlay socket. The reference implementations lose
/// 10-17 % of datagrams at 0.4 Gbit/s with default buffers on these machines.
const SOCKET_BUFFER: usize = 8 << 20;

/// Sets the MTU, brings `ifname` up, adds `addresses` and routes `routes` through it.
pub async fn configure_interface(
    ifname: &str,
    mtu: u16,
    addresses: &[(IpAddr, u8)],
    routes: &[Prefix],
) -> anyhow::Result<()> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("opening a netlink socket (needs CAP_NET_ADMIN)")?;
    let task = tokio::spawn(connection);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(ifname.to_owned())
            .execute()
            .try_next()
            .await
            .with_context(|| format!("looking up interface {ifname}"))?
            .ok_or_else(|| anyhow!("interface {ifname} vanished after it was created"))?;
        let index = link.header.index;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(u32::from(mtu))
                    .up()
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("setting {ifname} up with MTU {mtu}"))?;
        for (addr, len) in addresses {
            handle
                .address()
                .add(index, *addr, *len)
                .replace()
                .execute()
                .await
                .with_context(|| format!("adding address {addr}/{len} to {ifname}"))?;
        }
        for route in routes {
            let message = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(route.addr(), route.len())
                .map_err(|e| anyhow!("route {route}: {e:?}"))?
                .output_interface(index)
                .build();
            handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .with_context(|| format!("adding route {route} dev {ifname}"))?;
        }
        anyhow::Ok(())
    }
    .await;
    task.abort();
    result
}

/// The metric of the fail-closed blackhole routes: far behind the TUN's routes, so they only
/// matter once those are gone.
const BLACKHOLE_METRIC: u32 = 4_000_000;

/// What [`set_routes`] installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// through the TUN device with this index
    Tun(u32),
    /// blackhole (fail closed): what the TUN's routes carried is dropped, never sent out the
    /// uplink, also after the daemon (and with it the TUN) is gone
    Blackhole,
}

fn route_message(
    route: &Prefix,
    kind: RouteKind,
) -> anyhow::Result<rtnetlink::packet_route::route::RouteMessage> {
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.addr(), route.len())
        .map_err(|e| anyhow!("route {route}: {e:?}"))?;
    Ok(match kind {
        RouteKind::Tun(index) => builder.output_interface(index).build(),
        RouteKind::Blackhole => builder
            .kind(rtnetlink::packet_route::route::RouteType::BlackHole)
            .priority(BLACKHOLE_METRIC)
            .build(),
    })
}

/// Adds (`present`) or deletes `routes` of `kind`. Deleting a route that is not there is no
/// error.
pub async fn set_routes(routes: &[Prefix], kind: RouteKind, present: bool) -> anyhow::Result<()> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("opening a netlink socket (needs CAP_NET_ADMIN)")?;
    let task = tokio::spawn(connection);
    let result = async {
        for route in routes {
            let message = route_message(route, kind)?;
            if present {
                handle
                    .route()
                    .add(message)
                    .replace()
                    .execute()
                    .await
                    .with_context(|| format!("adding route {route} ({kind:?})"))?;
            } else if let Err(e) = handle.route().del(message).execute().await {
                let gone = matches!(&e, rtnetlink::Error::NetlinkError(m)
                    if m.raw_code() == -libc::ESRCH);
                if !gone {
                    return Err(anyhow!("deleting route {route} ({kind:?}): {e}"));
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    task.abort();
    result
}

/// The index of interface `name`.
#[allow(unsafe_code)]
pub fn ifindex(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads the NUL-terminated string we own and returns an integer.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The underlay UDP socket: dual-stack where IPv6 exists, large buffers, non-blocking.
pub fn underlay_socket(port: u16) -> anyhow::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (socket, bind): (Socket, SocketAddr) =
        match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) => {
                s.set_only_v6(false)
                    .context("making the UDP socket dual-stack")?;
                (s, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
            }
            Err(_) => (
                Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                    .context("creating the UDP socket")?,
                SocketAddr::from(([0, 0, 0, 0], port)),
            ),
        };
    // Best effort: as root SO_*BUFFORCE passes the sysctl cap; otherwise the cap applies.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket
        .set_nonblocking(true)
        .context("making the UDP socket non-blocking")?;
    socket
        .bind(&bind.into())
        .with_context(|| format!("binding UDP port {port}"))?;
    tokio::net::UdpSocket::from_std(socket.into()).context("registering the UDP socket")
}

/// The underlay socket and its send path: IPv4 destinations mapped for a dual-stack socket,
/// sources reported canonical, failed sends counted (a full socket buffer drops a datagram the
/// way the network would; the protocol above recovers).
#[derive(Debug)]
pub struct Underlay {
    socket: tokio::net::UdpSocket,
    dual_stack: bool,
    send_errors: u64,
}

impl Underlay {
    /// Binds [`underlay_socket`] on `port` (0: any).
    pub fn bind(port: u16) -> anyhow::Result<Self> {
        let socket = underlay_socket(port)?;
        let dual_stack = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        Ok(Self {
            socket,
            dual_stack,
            send_errors: 0,
        })
    }

    /// Sends one datagram; a failure is counted, not returned.
    pub async fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self
            .socket
            .send_to(datagram, for_socket(to, self.dual_stack))
            .await
            .is_err()
        {
            self.send_errors += 1;
        }
    }

    /// Receives one datagram; its source is [`canonical`].
    pub async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        let (n, from) = self.socket.recv_from(buf).await?;
        Ok((n, canonical(from)))
    }

    /// Counts a failed write elsewhere on the data path (the TUN device, the guest link).
    pub fn count_send_error(&mut self) {
        self.send_errors += 1;
    }

    /// Sends that failed.
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }
}

/// An address as the socket reports it, with IPv4-mapped IPv6 turned back into IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Creates the TUN device.
pub fn create_tun(ifname: &str, mtu: u16) -> anyhow::Result<tun_rs::AsyncDevice> {
    tun_rs::DeviceBuilder::new()
        .name(ifname)
        .mtu(mtu)
        .build_async()
        .with_context(|| {
            format!(
                "creating TUN device {ifname} (needs root or CAP_NET_ADMIN and /dev/net/tun; \
             is another failoverd using this interface name?)"
            )
        })
}

/// The address to pass to `send_to` on our socket: IPv4 destinations become IPv4-mapped IPv6
/// on a dual-stack socket.
pub fn for_socket(addr: SocketAddr, dual_stack: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if dual_stack => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}
