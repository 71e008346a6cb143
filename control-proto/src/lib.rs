//! The control protocol of the failover daemons (`failoverd`, `failoverd gateway`, `vmm-shim`)
//! and `failoverctl`: one line of JSON each way on a unix socket, as typed values.
//!
//! This crate owns the wire form and nothing else: no IO, no clock, no daemon state. The
//! daemons build the answer types from their engines and [`Answer::to_line`] them; the server
//! turns a request line into a checked [`Command`] with [`Request::command`]; `failoverctl`
//! sends [`Request::of`] and reads an answer back with [`decode`], which refuses an answer that
//! does not match these types (a daemon of another version) instead of guessing.
//!
//! # Wire form
//!
//! Request: `{"v":1,"cmd":"status"}`; `switch`, `drain` and `undrain` take `"datacenter"`,
//! `flows` takes `"limit"`. Answer: `{"v":1,"ok":true,...}` with the fields of the command's
//! answer type at the top level, or `{"v":1,"ok":false,"error":"..."}`.
//!
//! # Names and units
//!
//! One name and one unit per fact, across every answer:
//!
//! - a duration is in milliseconds and its name ends in `_ms` (`rtt_ms`, `detection_ms`,
//!   `age_ms`); the time since something happened ends in `_ms_ago`
//!   (`last_handshake_ms_ago`, `last_probe_ms_ago`); a wall-clock time is `unix_ms`
//!   (milliseconds since the Unix epoch);
//! - a size in bytes ends in `_bytes`;
//! - a share is a ratio from 0 to 1 (`loss`);
//! - every other number is a count since the daemon started;
//! - a datacenter's state is `health` ([`Health`]) wherever it appears: `status` and `tunnels`
//!   list the very same [`Datacenter`];
//! - `null` (an `Option` here) means "not known yet" or "never", as each field says.
//!
//! Answers may gain fields within a version (readers ignore fields they do not know); a
//! renamed, removed or retyped field, or a new command semantics, is a new
//! [`PROTOCOL_VERSION`].

#![forbid(unsafe_code)]

mod answer;
mod request;

pub use answer::*;
pub use request::*;

/// The protocol version this crate speaks: the `v` of every request and answer.
pub const PROTOCOL_VERSION: u32 = 1;
