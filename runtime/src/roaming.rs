//! What a client on the move lives with, for both front ends (`failoverd` and `vmm-shim`), on
//! the IO side: the local network changing under it (addresses, links, the default route) and
//! the DNS lookups of datacenter endpoints given as names. The decisions are the engine's:
//! when to ask for a name, what answer to accept ([`engine::resolve`]), and noticing that the
//! process did not run for a while ([`engine::Event::Resumed`]).
//!
//! The IO loop calls [`Roaming::before_sleep`] once per pass (the lookups the engine asks for
//! start), awaits [`Roaming::next`] in its `select!` and hands what came to
//! [`Roaming::handle`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use engine::Engine;
use rand_core::RngCore as _;
use tokio::sync::mpsc;

/// Longest a DNS lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Lookup answers waiting for the loop (there is at most one in flight per datacenter).
const ANSWERS: usize = 64;

/// Something [`Roaming::next`] produced.
#[derive(Debug)]
pub enum RoamingEvent {
    /// the local network changed
    NetworkChanged,
    /// a lookup finished: the datacenter and the addresses (or the error)
    Resolved(String, Result<Vec<SocketAddr>, String>),
}

/// See the module docs.
#[derive(Debug)]
pub struct Roaming {
    lookups_tx: mpsc::Sender<(String, Result<Vec<SocketAddr>, String>)>,
    lookups_rx: mpsc::Receiver<(String, Result<Vec<SocketAddr>, String>)>,
    changes: Option<mpsc::Receiver<()>>,
    network_changes: u64,
}

impl Roaming {
    /// `changes` are the network watcher's notifications (`None`: not watched, e.g. without
    /// CAP_NET_ADMIN).
    pub fn new(changes: Option<mpsc::Receiver<()>>) -> Self {
        let (lookups_tx, lookups_rx) = mpsc::channel(ANSWERS);
        Self {
            lookups_tx,
            lookups_rx,
            changes,
            network_changes: 0,
        }
    }

    /// Once per pass of the loop, before it sleeps: starts the lookups the engine asks for,
    /// each with a timeout, so every one is answered.
    pub fn before_sleep(&mut self, engine: &mut Engine) {
        while let Some(lookup) = engine.poll_lookup() {
            let tx = self.lookups_tx.clone();
            tokio::spawn(async move {
                let result = tokio::time::timeout(
                    LOOKUP_TIMEOUT,
                    tokio::net::lookup_host((lookup.host.as_str(), lookup.port)),
                )
                .await
                .map_err(|_| format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs()))
                .and_then(|r| r.map(Iterator::collect).map_err(|e| e.to_string()));
                let _ = tx.send((lookup.dc, result)).await;
            });
        }
    }

    /// The next network change or lookup answer. Cancel-safe.
    pub async fn next(&mut self) -> RoamingEvent {
        let changes = async {
            match self.changes.as_mut() {
                Some(c) => c.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = changes => RoamingEvent::NetworkChanged,
            Some((dc, result)) = self.lookups_rx.recv() => RoamingEvent::Resolved(dc, result),
        }
    }

    /// Hands what [`Roaming::next`] produced to the engine.
    pub fn handle(&mut self, engine: &mut Engine, event: RoamingEvent, now: Instant) {
        match event {
            RoamingEvent::NetworkChanged => {
                self.network_changes += 1;
                tracing::info!("the local network changed: probing every datacenter at once");
                engine.network_changed(now);
            }
            RoamingEvent::Resolved(dc, result) => {
                let jitter = f64::from(rand_core::OsRng.next_u32()) / f64::from(u32::MAX);
                engine.handle_resolved(now, &dc, result, jitter);
            }
        }
    }

    /// For status: the named endpoints and how resolving them goes, the engine's resumes and
    /// the network changes seen.
    pub fn status(&self, engine: &Engine) -> control_proto::RoamingStatus {
        control_proto::RoamingStatus {
            names: engine
                .endpoint_names()
                .map(
                    |(dc, host, address, failures)| control_proto::EndpointName {
                        datacenter: dc.to_owned(),
                        host: host.to_owned(),
                        address,
                        failures,
                    },
                )
                .collect(),
            resumes: engine.resumes(),
            network_changes: self.network_changes,
        }
    }
}
