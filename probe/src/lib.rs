//! In-band probing of every tunnel: wire format, RTT and loss estimation, and the health state
//! machine (up / suspect / down / recovering) that drives path selection.
//!
//! Sans-IO: fed probe replies and `Instant`s, it returns probes to send and verdicts. Its
//! substance lands with the failover work; nothing here is used by the data path yet.

#![forbid(unsafe_code)]
