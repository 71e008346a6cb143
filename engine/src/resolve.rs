//! Datacenter endpoints given as host names: resolved in the background, re-resolved
//! periodically and when a datacenter goes down, with the last good address kept.
//!
//! The daemon starts whatever DNS does: a datacenter whose name has not resolved yet simply has
//! no endpoint (its tunnel sends nothing) and is retried with exponential backoff and jitter,
//! 1 s up to 60 s. A good answer is kept for [`REFRESH`], then asked again; a failed refresh
//! keeps the last good address. Answers that would loop are refused: loopback, unspecified,
//! multicast, broadcast, the client's own stable and local addresses, and anything the client
//! routes into its tunnels (a tunnel's packets would be sent through itself).
//!
//! This module schedules and judges; the lookups themselves are the front end's: the engine
//! hands out due ones ([`crate::Engine::poll_lookup`]) and is told each answer
//! ([`crate::Engine::handle_resolved`]), which the front end gets with a timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tunnel::Prefix;

/// A good answer is asked again after this long.
pub const REFRESH: Duration = Duration::from_secs(60);
/// First retry after a failure ...
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// ... doubling up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A datacenter that went down is re-resolved at most this often.
const DOWN_REFRESH_MIN: Duration = Duration::from_secs(5);

/// One datacenter's name and what is known about it.
#[derive(Debug, Clone)]
struct Entry {
    dc: String,
    host: String,
    port: u16,
    current: Option<SocketAddr>,
    next_at: Instant,
    backoff: Duration,
    in_flight: bool,
    last_attempt: Option<Instant>,
    failures: u64,
}

/// A lookup to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// the datacenter
    pub dc: String,
    /// its host name and port
    pub host: String,
    /// port
    pub port: u16,
}

/// What an answer changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// use this endpoint from now on
    NewEndpoint(String, SocketAddr),
    /// the same endpoint as before
    Unchanged,
    /// no usable address (the error, for the log); the last good one stays
    Failed(String),
}

/// The schedule of every named endpoint.
#[derive(Debug, Default)]
pub struct Resolver {
    entries: Vec<Entry>,
    forbidden: Vec<Prefix>,
    own: Vec<IpAddr>,
}

impl Resolver {
    /// Endpoints `(datacenter, host, port)`, all due at `now`. `own` are the client's stable and
    /// local addresses; `routes` what it routes into its tunnels.
    pub fn new(
        names: impl IntoIterator<Item = (String, String, u16)>,
        own: Vec<IpAddr>,
        routes: Vec<Prefix>,
        now: Instant,
    ) -> Self {
        Self {
            entries: names
                .into_iter()
                .map(|(dc, host, port)| Entry {
                    dc,
                    host,
                    port,
                    current: None,
                    next_at: now,
                    backoff: BACKOFF_MIN,
                    in_flight: false,
                    last_attempt: None,
                    failures: 0,
                })
                .collect(),
            forbidden: routes,
            own,
        }
    }

    /// Whether there is nothing to resolve.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When [`Resolver::due`] has work next.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| !e.in_flight)
            .map(|e| e.next_at)
            .min()
    }

    /// The lookups to start now (each is then in flight until answered).
    pub fn due(&mut self, now: Instant) -> Vec<Lookup> {
        self.entries
            .iter_mut()
            .filter(|e| !e.in_flight && e.next_at <= now)
            .map(|e| {
                e.in_flight = true;
                e.last_attempt = Some(now);
                Lookup {
                    dc: e.dc.clone(),
                    host: e.host.clone(),
                    port: e.port,
                }
            })
            .collect()
    }

    /// Whether `ip` would make a tunnel loop.
    fn refused(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback()
            || ip.is_unspecified()
            || ip.is_multicast()
            || ip == IpAddr::from([255, 255, 255, 255])
            || self.own.contains(&ip)
            || self.forbidden.iter().any(|p| p.contains(ip))
    }

    /// The answer to a lookup of `dc`: the addresses found, or the error. `jitter` in [0, 1)
    /// spreads retries (the caller draws it).
    pub fn answer(
        &mut self,
        dc: &str,
        result: Result<Vec<SocketAddr>, String>,
        now: Instant,
        jitter: f64,
    ) -> Judged {
        let forbidden: Vec<bool> = match &result {
            Ok(addrs) => addrs.iter().map(|a| self.refused(a.ip())).collect(),
            Err(_) => Vec::new(),
        };
        let Some(e) = self.entries.iter_mut().find(|e| e.dc == dc) else {
            return Judged::Unchanged;
        };
        e.in_flight = false;
        let usable: Vec<SocketAddr> = match result {
            Ok(addrs) => addrs
                .into_iter()
                .zip(forbidden)
                .filter(|(_, refused)| !refused)
                .map(|(a, _)| SocketAddr::new(a.ip().to_canonical(), a.port()))
                .collect(),
            Err(why) => {
                return Self::fail(e, now, jitter, why);
            }
        };
        // keep the current address while the name still gives it (no flapping between
        // several A records), else take the first
        let chosen = e
            .current
            .filter(|c| usable.contains(c))
            .or_else(|| usable.first().copied());
        let Some(addr) = chosen else {
            return Self::fail(
                e,
                now,
                jitter,
                "no usable address (refused: loopback, our own or routed into the tunnels)".into(),
            );
        };
        e.backoff = BACKOFF_MIN;
        e.next_at = now + REFRESH;
        if e.current == Some(addr) {
            return Judged::Unchanged;
        }
        e.current = Some(addr);
        Judged::NewEndpoint(e.dc.clone(), addr)
    }

    fn fail(e: &mut Entry, now: Instant, jitter: f64, why: String) -> Judged {
        e.failures += 1;
        let wait = e.backoff.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.5);
        e.next_at = now + wait;
        e.backoff = (e.backoff * 2).min(BACKOFF_MAX);
        Judged::Failed(why)
    }

    /// `dc` went down: its name may point elsewhere now. Asks again soon (not more often
    /// than every few seconds).
    pub fn datacenter_down(&mut self, dc: &str, now: Instant) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.dc == dc) {
            // as soon as allowed: not sooner than a few seconds after the last lookup
            let allowed = e
                .last_attempt
                .map_or(now, |t| (t + DOWN_REFRESH_MIN).max(now));
            if !e.in_flight {
                e.next_at = e.next_at.min(allowed);
            }
        }
    }

    /// The local network changed (another resolver, other answers): every name is asked again
    /// now.
    pub fn network_changed(&mut self, now: Instant) {
        for e in self.entries.iter_mut().filter(|e| !e.in_flight) {
            e.next_at = now;
        }
    }

    /// `(datacenter, host, current address, failures)` of every entry, for status.
    pub fn status(&self) -> impl Iterator<Item = (&str, &str, Option<SocketAddr>, u64)> {
        self.entries
            .iter()
            .map(|e| (e.dc.as_str(), e.host.as_str(), e.current, e.failures))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn resolver(now: Instant) -> Resolver {
        Resolver::new(
            [("dc1".to_owned(), "dc1.example".to_owned(), 51820)],
            vec!["100.96.0.2".parse().unwrap()],
            vec!["198.19.0.0/16".parse().unwrap()],
            now,
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_are_judged_and_kept() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut r = resolver(t0);
        assert_eq!(r.due(t0).len(), 1);
        assert_eq!(r.next_due(), None, "in flight");
        // loopback, our own stable address and a routed address are refused
        let out = r.answer(
            "dc1",
            Ok(vec![
                addr("127.0.0.1:51820"),
                addr("100.96.0.2:51820"),
                addr("198.19.0.5:51820"),
            ]),
            t0,
            0.0,
        );
        assert!(matches!(out, Judged::Failed(_)));
        assert_eq!(r.next_due(), Some(t0 + BACKOFF_MIN));
        let t1 = t0 + BACKOFF_MIN;
        r.due(t1);
        assert_eq!(
            r.answer("dc1", Ok(vec![addr("198.18.0.11:51820")]), t1, 0.0),
            Judged::NewEndpoint("dc1".into(), addr("198.18.0.11:51820"))
        );
        assert_eq!(r.next_due(), Some(t1 + REFRESH));
        // a failed refresh keeps the address and backs off
        let t2 = t1 + REFRESH;
        r.due(t2);
        assert!(matches!(
            r.answer("dc1", Err("SERVFAIL".into()), t2, 0.0),
            Judged::Failed(_)
        ));
        assert_eq!(
            r.status().next().unwrap().2,
            Some(addr("198.18.0.11:51820"))
        );
        // the current address is kept while the name still gives it
        let t3 = t2 + BACKOFF_MIN;
        r.due(t3);
        assert_eq!(
            r.answer(
                "dc1",
                Ok(vec![addr("198.18.0.12:51820"), addr("198.18.0.11:51820")]),
                t3,
                0.0
            ),
            Judged::Unchanged
        );
    }

    #[test]
    fn failures_back_off_to_a_cap_with_jitter() {
        #[allow(clippy::disallowed_methods)]
        let mut now = Instant::now();
        let mut r = resolver(now);
        let mut waits = Vec::new();
        for i in 0..10 {
            r.due(now);
            r.answer(
                "dc1",
                Err("timeout".into()),
                now,
                if i % 2 == 0 { 0.0 } else { 0.99 },
            );
            let next = r.next_due().unwrap();
            waits.push(next - now);
            now = next;
        }
        assert_eq!(waits[0], Duration::from_secs(1));
        assert!(waits.iter().all(|w| *w <= BACKOFF_MAX.mul_f64(1.5)));
        assert!(waits[9] >= BACKOFF_MAX);
    }

    #[test]
    fn a_down_datacenter_is_asked_again_soon_but_not_in_a_loop() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut r = resolver(t0);
        r.due(t0);
        r.answer("dc1", Ok(vec![addr("198.18.0.11:51820")]), t0, 0.0);
        r.datacenter_down("dc1", t0 + Duration::from_secs(1));
        assert_eq!(
            r.next_due(),
            Some(t0 + DOWN_REFRESH_MIN),
            "asked a second ago: again once the minimum spacing allows"
        );
        r.due(t0 + DOWN_REFRESH_MIN);
        r.answer(
            "dc1",
            Ok(vec![addr("198.18.0.11:51820")]),
            t0 + DOWN_REFRESH_MIN,
            0.0,
        );
        let t = t0 + Duration::from_secs(30);
        r.datacenter_down("dc1", t);
        assert_eq!(r.next_due(), Some(t));
    }
}
