//! In-band probing of every tunnel, path health, and path selection.
//!
//! - [`wire`]: the probe message (versioned, 32 bytes) carried in UDP inside each tunnel to the
//!   gateway's inner address, which echoes it and acts on the client's intent;
//! - [`packet`]: building and recognising the inner IPv4/IPv6 packets that carry probes (UDP to
//!   a gateway, or ICMP echo to a plain WireGuard server's inner target);
//! - [`health`]: per-tunnel RTT (SRTT/RTTVAR), loss over a sliding window, and the health state
//!   machine (up / suspect / down / recovering) with a hold-down and flap damping;
//! - [`select`]: which tunnel carries traffic, with hysteresis; every switch is an event;
//! - [`echo`]: the gateway's side: validate, echo, and decide claims and releases.
//!
//! Sans-IO and clock-free: fed packets and `Instant`s, it returns what to send and what changed.
//! Untrusted bytes never panic it; every refused message has a reason.

#![forbid(unsafe_code)]

pub mod echo;
pub mod health;
pub mod packet;
pub mod select;
pub mod wire;

pub use health::{PathHealth, PathMonitor, ProbeConfig};
pub use select::{Policy, Selector, SwitchEvent, SwitchReason};
pub use wire::{Intent, ProbeKind, ProbeMessage};
