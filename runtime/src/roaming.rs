//! What a client on the move lives with, for both front ends (`failoverd` and `vmm-shim`):
//! the local network changing under it (addresses, links, the default route), and datacenter
//! endpoints given as names. (The process not running for a while — suspend, SIGSTOP — is the
//! engine's to notice: [`engine::Event::Resumed`].)
//!
//! The IO loop calls [`Roaming::before_sleep`] once per pass (due DNS lookups start; it says
//! when to wake next), awaits [`Roaming::next`] in its `select!`, hands what came to
//! [`Roaming::handle`], and shows every engine event to [`Roaming::on_event`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use engine::{Engine, Event};
use probe::PathHealth;
use rand_core::RngCore as _;
use tokio::sync::mpsc;

use crate::clock;
use crate::config::{ClientConfig, Endpoint};
use crate::resolve::{Outcome, Resolver};

/// Longest a DNS lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

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
    resolver: Resolver,
    lookups_tx: mpsc::Sender<(String, Result<Vec<SocketAddr>, String>)>,
    lookups_rx: mpsc::Receiver<(String, Result<Vec<SocketAddr>, String>)>,
    changes: Option<mpsc::Receiver<()>>,
    network_changes: u64,
}

impl Roaming {
    /// For `config`'s named endpoints; `changes` are the network watcher's notifications
    /// (`None`: not watched, e.g. without CAP_NET_ADMIN).
    pub fn new(config: &ClientConfig, changes: Option<mpsc::Receiver<()>>, now: Instant) -> Self {
        let names = config.datacenters.iter().filter_map(|d| match &d.endpoint {
            Endpoint::Name { host, port } => Some((d.name.clone(), host.clone(), *port)),
            Endpoint::Addr(_) => None,
        });
        let own: Vec<IpAddr> = [
            config.stable_v4.map(IpAddr::V4),
            config.stable_v6.map(IpAddr::V6),
            config.local_v4.map(IpAddr::V4),
            config.local_v6.map(IpAddr::V6),
        ]
        .into_iter()
        .flatten()
        .chain(config.datacenters.iter().map(|d| d.probe_address))
        .collect();
        let (lookups_tx, lookups_rx) = mpsc::channel(64);
        Self {
            resolver: Resolver::new(names, own, config.routes.clone(), now),
            lookups_tx,
            lookups_rx,
            changes,
            network_changes: 0,
        }
    }

    /// The same, for a reloaded configuration: names are resolved afresh, the network watcher
    /// and the counters stay.
    pub fn reconfigured(self, config: &ClientConfig, now: Instant) -> Self {
        let mut next = Self::new(config, self.changes, now);
        next.network_changes = self.network_changes;
        next
    }

    /// Once per pass of the loop, before it sleeps: starts due lookups; returns when to wake
    /// next for DNS.
    pub fn before_sleep(&mut self, now: Instant) -> Option<Instant> {
        for lookup in self.resolver.due(now) {
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
        self.resolver.next_due()
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

    /// Acts on what [`Roaming::next`] produced.
    pub fn handle(&mut self, engine: &mut Engine, event: RoamingEvent) {
        let now = clock::now();
        match event {
            RoamingEvent::NetworkChanged => {
                self.network_changes += 1;
                tracing::info!("the local network changed: probing every datacenter at once");
                engine.network_changed(now);
                self.resolver.network_changed(now);
            }
            RoamingEvent::Resolved(dc, result) => {
                let jitter = f64::from(rand_core::OsRng.next_u32()) / f64::from(u32::MAX);
                match self.resolver.answer(&dc, result, now, jitter) {
                    Outcome::NewEndpoint(name, addr) => {
                        tracing::info!(datacenter = %name, endpoint = %addr, "endpoint resolved");
                        if let Some(id) = engine.find(&name) {
                            let _ = engine.set_endpoint(id, addr);
                        }
                    }
                    Outcome::Unchanged => {}
                    Outcome::Failed(why) => {
                        tracing::warn!(datacenter = %dc, error = %why, "resolving the endpoint failed; the last good address stays");
                    }
                }
            }
        }
    }

    /// Sees every engine event: a datacenter that went down has its name asked again soon.
    pub fn on_event(&mut self, engine: &Engine, event: &Event) {
        if let Event::Health {
            dc,
            to: PathHealth::Down,
            ..
        } = event
        {
            self.resolver
                .datacenter_down(engine.name(*dc), clock::now());
        }
    }

    /// For status: the named endpoints and how resolving them goes, the engine's resumes and
    /// the network changes seen.
    pub fn status(&self, engine: &Engine) -> serde_json::Value {
        let names: Vec<_> = self
            .resolver
            .status()
            .map(|(dc, host, addr, failures)| {
                serde_json::json!({"datacenter": dc, "host": host,
                    "address": addr.map(|a| a.to_string()), "failures": failures})
            })
            .collect();
        serde_json::json!({
            "names": names,
            "resumes": engine.resumes(),
            "network_changes": self.network_changes,
        })
    }
}
