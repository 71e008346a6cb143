//! The failover namespace lab and stream verifier.
//!
//! - [`lab`]: root-only network-namespace labs (namespaces, veths, bridges, processes) that
//!   clean up after themselves, and the standard [`lab::Topology`] of DESIGN.md.
//! - [`roaming_lab`]: a client on the move: a NAT router with two uplinks, a real resolver
//!   for endpoint names, round-trip timing, leak counters and CPU time.
//! - [`stream`]: the deterministic byte stream and its verifier core (pure, no IO, no clock),
//!   plus the JSON reports of the `fo-lab` binary.
//!
//! The `fo-lab` binary (`src/bin/fo-lab.rs`) is the IO side of the verifier (`stream-serve`,
//! `stream-send`), a hostile-datagram generator (`garbage`) and a lab self-test (`selftest`).

pub mod guest;
pub mod impair;
pub mod lab;
pub mod measure;
pub mod roaming_lab;
pub mod routed;
pub mod scenario;
pub mod stream;

/// `--version` of the lab's binaries: the crate's version and the git revision it was built
/// from (set by `build.rs` through the `git-revision` crate).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("FAILOVER_GIT_REVISION"),
    ")"
);
