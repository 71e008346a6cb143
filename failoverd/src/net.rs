//! Interface setup over rtnetlink (never by running `ip`): MTU, link up, addresses, routes; and
//! the TUN device.

use std::net::IpAddr;

use anyhow::{anyhow, Context as _};
use futures::TryStreamExt as _;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
use tunnel::Prefix;

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
        // A super-packet must split into no more segments than a read has buffers
        // (crate::tun): the kernel's TCP then builds none larger. Best effort: a kernel that
        // refuses keeps working, but a flow with a tiny MSS may lose its largest bursts.
        if let Err(e) = handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .append_extra_attribute(
                        rtnetlink::packet_route::link::LinkAttribute::GsoMaxSegs(
                            crate::tun::MAX_SEGMENTS,
                        ),
                    )
                    .build(),
            )
            .execute()
            .await
        {
            tracing::warn!(
                "{ifname}: cannot limit GSO to {} segments ({e}); super-packets of flows with a \
                 very small MSS will be dropped",
                crate::tun::MAX_SEGMENTS
            );
        }
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

/// Creates the TUN device.
pub fn create_tun(ifname: &str, mtu: u16) -> anyhow::Result<tun_rs::AsyncDevice> {
    tun_rs::DeviceBuilder::new()
        .name(ifname)
        .mtu(mtu)
        // IFF_VNET_HDR with TSO and checksum offload: super-packets in, coalesced writes out
        .offload(true)
        .build_async()
        .with_context(|| {
            format!(
                "creating TUN device {ifname} (needs root or CAP_NET_ADMIN and /dev/net/tun; \
             is another failoverd using this interface name?)"
            )
        })
}
