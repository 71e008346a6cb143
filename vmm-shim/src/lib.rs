//! `vmm-shim`: the client engine as the backend of a guest's NIC, so an unmodified guest OS
//! keeps its TCP connections when a datacenter fails, without knowing.
//!
//! The guest's Ethernet frames come to [`guest::GuestNet`], which plays the guest's whole
//! network (ARP, DHCP, IPv6 neighbour discovery and router advertisements) and hands every
//! other packet to the same [`engine::Engine`] `failoverd` drives: its session keeper maps the
//! guest's own address to the client's stable inner address, and back. Two front ends move
//! the frames (see the `vmm-shim` binary): QEMU's `-netdev stream` socket ([`framing`]) and
//! vhost-user-net ([`virtio`] holds the sans-IO part of the virtio-net header).
//!
//! Everything in this library is sans-IO and clock-free, and treats the guest as hostile:
//! every frame is parsed into types before use, every refusal has a counter, and memory is
//! bounded.

#![forbid(unsafe_code)]

pub mod dhcp;
pub mod framing;
/// Fuzz bodies and their fixed test keys: built only with the `fuzzing` feature (the fuzz
/// targets and this crate's own corpus tests turn it on), never into a shipped binary.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod guest;
pub mod ndp;
pub mod virtio;

pub use guest::{Action, GuestConfig, GuestDrop, GuestNet, GuestStats};
