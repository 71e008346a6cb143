//! Changes of the local network, from rtnetlink's multicast groups (never polled): links going
//! up or down, addresses added or removed, routes changed. A laptop moving from Wi-Fi to
//! Ethernet produces a burst of them; the watcher coalesces a burst into one notification.
//!
//! What the client does with it (see `client.rs`): probe every gateway at once, so each learns
//! the new source address from an authenticated datagram within a round trip, and re-resolve
//! named endpoints (another network may have another resolver).

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use rtnetlink::constants::{
    RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::AsyncSocket as _;
use tokio::sync::mpsc;

/// Events closer together than this are one change.
const COALESCE: Duration = Duration::from_millis(30);

/// Starts watching; a `()` arrives on the returned channel after every (coalesced) change
/// that concerns any interface but `ignore` (the daemon's own TUN, whose routes it sets).
pub fn watch(ignore: u32) -> anyhow::Result<mpsc::Receiver<()>> {
    let (mut conn, _handle, mut messages) =
        rtnetlink::new_connection().context("opening a netlink socket for network changes")?;
    let groups = RTMGRP_LINK
        | RTMGRP_IPV4_IFADDR
        | RTMGRP_IPV6_IFADDR
        | RTMGRP_IPV4_ROUTE
        | RTMGRP_IPV6_ROUTE;
    conn.socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, groups))
        .context("joining rtnetlink's link, address and route groups")?;
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let NetlinkPayload::InnerMessage(inner) = msg.payload else {
                continue;
            };
            if interface_of(&inner).is_some_and(|i| i == ignore) {
                continue;
            }
            // wait for the rest of the burst, dropping what arrives meanwhile
            let _ =
                tokio::time::timeout(COALESCE, async { while messages.next().await.is_some() {} })
                    .await;
            match tx.try_send(()) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                Err(mpsc::error::TrySendError::Closed(())) => return,
            }
        }
    });
    Ok(rx)
}

fn interface_of(msg: &RouteNetlinkMessage) -> Option<u32> {
    match msg {
        RouteNetlinkMessage::NewLink(LinkMessage { header, .. })
        | RouteNetlinkMessage::DelLink(LinkMessage { header, .. }) => Some(header.index),
        RouteNetlinkMessage::NewAddress(AddressMessage { header, .. })
        | RouteNetlinkMessage::DelAddress(AddressMessage { header, .. }) => Some(header.index),
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => route_oif(r),
        _ => None,
    }
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}
