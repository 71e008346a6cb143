//! The `failoverd` binaries' own code: the client's TUN link ([`client`]), the gateway, its
//! configuration and its claims on the datacenter side ([`gateway`], [`config`],
//! [`takeover`]), and interface setup ([`net`]).
//! What the client shares with `vmm-shim` — the loop, configuration, control socket, metrics —
//! is the `runtime` crate's.

pub mod client;
pub mod config;
pub mod gateway;
pub mod net;
pub mod routing_daemon;
pub mod takeover;
pub mod tun;
