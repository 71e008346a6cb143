//! One WireGuard peer session per datacenter (or per client, on a gateway), wrapping
//! boringtun's `noise::Tunn`.
//!
//! This crate owns: key encoding ([`key`]), cryptokey routing ([`prefix::AllowedIps`], checked on
//! every decrypted packet), validation of inner packets ([`inner`]), one session ([`Tunnel`]) and
//! the gateway's demultiplexer of many sessions on one port ([`Responder`]).
//!
//! It is sans-IO: callers pass datagrams, packets, caller-owned buffers and `now` in, and get an
//! [`Outcome`] back that says what to do. It never opens a socket and never reads a clock of its
//! own — with one documented exception it cannot avoid: boringtun's timers read boringtun's own
//! CLOCK_BOOTTIME clock (`sleepyinstant`) inside `update_timers`. Our `now` drives *when* those
//! timers are checked and everything this crate measures itself.
//!
//! The contract boringtun leaves to its caller is kept here, once:
//! - `decapsulate` must be called again with an empty datagram until it returns `Done` after a
//!   `WriteToNetwork`: hidden behind [`Tunnel::poll_transmit`];
//! - `encapsulate`/`decapsulate` panic on a destination buffer smaller than the input + 32 and
//!   148 bytes: every entry point checks [`min_buffer_len`] first and drops instead;
//! - `stats()` is an unnamed tuple: [`TunnelStats`] names it;
//! - endpoints are never learnt from unauthenticated datagrams (cookie replies included).

#![forbid(unsafe_code)]

pub mod inner;
pub mod key;
pub mod prefix;
mod responder;
mod session;

pub use key::{KeyError, PresharedKey, PrivateKey, PublicKey};
pub use prefix::{AllowedIps, Prefix, PrefixError};
pub use responder::{PeerConfig, PeerId, Responder};
pub use session::{EndpointPolicy, Tunnel, TunnelConfig, TunnelStats};

use std::net::SocketAddr;

/// WireGuard's data-message overhead: 16-byte header plus 16-byte AEAD tag.
pub const DATA_OVERHEAD: usize = 32;
/// The size of a handshake initiation, the largest message that is not data.
pub const HANDSHAKE_INIT_LEN: usize = 148;
/// The largest UDP payload; a buffer this large (plus overhead) fits anything.
pub const MAX_DATAGRAM: usize = 65_535;

/// The smallest output buffer that can never trip boringtun's panicking preconditions for an
/// input of `input_len` bytes.
pub const fn min_buffer_len(input_len: usize) -> usize {
    let needed = input_len + DATA_OVERHEAD;
    if needed > HANDSHAKE_INIT_LEN {
        needed
    } else {
        HANDSHAKE_INIT_LEN
    }
}

/// A datagram to send on the underlay.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// where to send it
    pub to: SocketAddr,
    /// the WireGuard message
    pub datagram: &'a [u8],
}

/// What the caller must do after handing the tunnel a packet, a datagram or a timeout.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Nothing to send or deliver.
    Done,
    /// Send this datagram; then drain [`Tunnel::poll_transmit`].
    Transmit(Transmit<'a>),
    /// Deliver this validated inner packet to the local side (TUN or guest).
    Deliver(&'a mut [u8]),
    /// The input was dropped for this reason, and counted.
    Dropped(DropReason),
}

/// Defines a drop-reason enum and its counters: every reason gets a stable snake_case label
/// (for metrics and logs) and one counter, so every drop has a name and a count. Used for the
/// tunnel's [`DropReason`] and, in `vmm-shim`, the guest link's drops.
///
/// ```
/// tunnel::drop_reasons! {
///     /// Why a thing was dropped.
///     pub enum ThingDrop, counted by ThingDrops {
///         /// too short
///         Short => "short",
///     }
/// }
/// let mut c = ThingDrops::default();
/// c.add(ThingDrop::Short);
/// assert_eq!(c.nonzero().collect::<Vec<_>>(), [("short", 1)]);
/// ```
#[macro_export]
macro_rules! drop_reasons {
    (
        $(#[doc = $enum_doc:literal])*
        pub enum $reason:ident, counted by $counters:ident {
            $( $(#[doc = $doc:literal])* $name:ident => $label:literal, )*
        }
    ) => {
        $(#[doc = $enum_doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $reason { $( $(#[doc = $doc])* $name, )* }

        impl $reason {
            /// Every reason, in counter order.
            pub const ALL: &'static [$reason] = &[$($reason::$name,)*];

            /// A stable snake_case label, for metrics and logs.
            pub const fn label(self) -> &'static str {
                match self { $($reason::$name => $label,)* }
            }
        }

        #[doc = concat!("One counter per [`", stringify!($reason), "`].")]
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $counters {
            counts: [u64; $reason::ALL.len()],
        }

        impl $counters {
            /// Counts one drop.
            pub fn add(&mut self, reason: $reason) {
                if let Some(c) = self.counts.get_mut(reason as usize) {
                    *c = c.saturating_add(1);
                }
            }

            /// The count for one reason.
            pub fn get(&self, reason: $reason) -> u64 {
                self.counts.get(reason as usize).copied().unwrap_or(0)
            }

            /// All drops.
            pub fn total(&self) -> u64 {
                self.counts.iter().sum()
            }

            /// Adds another set of counters into this one.
            pub fn merge(&mut self, other: &$counters) {
                for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
                    *a = a.saturating_add(*b);
                }
            }

            /// `(label, count)` for every reason with a non-zero count.
            pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                $reason::ALL
                    .iter()
                    .map(|r| (r.label(), self.get(*r)))
                    .filter(|(_, c)| *c > 0)
            }
        }
    };
}

drop_reasons! {
    /// Why a datagram or packet was dropped. Every drop has one, and a counter.
    pub enum DropReason, counted by DropCounters {
    /// not a WireGuard message: bad type, reserved bytes or size
    Malformed => "malformed",
    /// from an address other than the configured endpoint
    UnexpectedSource => "unexpected_source",
    /// a handshake message whose MAC1 does not verify
    InvalidMac => "invalid_mac",
    /// a handshake refused because the responder is under load; a cookie was sent instead
    UnderLoad => "under_load",
    /// a handshake from a key that is not configured, or an index that belongs to no peer
    UnknownPeer => "unknown_peer",
    /// a data message for a session this peer does not have
    NoSession => "no_session",
    /// a counter seen before or too old for the replay window
    Replay => "replay",
    /// a data message that does not authenticate
    DecryptFailed => "decrypt_failed",
    /// a handshake message that is authentic-looking but refused (wrong key, old timestamp, …)
    HandshakeRejected => "handshake_rejected",
    /// the session expired
    Expired => "expired",
    /// a decrypted packet that is not a well-formed IPv4/IPv6 packet
    InnerMalformed => "inner_malformed",
    /// a decrypted packet whose source is outside the peer's allowed IPs (cryptokey routing)
    InnerSourceNotAllowed => "inner_source_not_allowed",
    /// a packet for a peer whose endpoint is not known yet
    NoEndpoint => "no_endpoint",
    /// a packet to the tunnel whose destination no peer's allowed IPs cover
    NoRoute => "no_route",
    /// an output buffer too small for the input (a caller bug, caught before boringtun panics)
    BufferTooSmall => "buffer_too_small",
    }
}

/// Errors building a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// our own public key configured as the peer's
    #[error("the peer's public key is our own public key; configure the other side's key")]
    PeerIsSelf,
    /// more peers than the 24-bit session index space can number
    #[error("too many peers: at most {max} are supported on one port")]
    TooManyPeers {
        /// the limit
        max: usize,
    },
}
