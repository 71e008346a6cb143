//! The gateway's probe responder: validates requests, echoes them, and decides when to claim
//! and release each client's stable address.
//!
//! A client claims by probing with intent Active, and releases by probing with intent Standby
//! or by falling silent for `claim_timeout`. Every request from a client is echoed, but only a
//! *fresh* one may move its claim. A request is stale when
//! - its sequence number is not above the last fresh one for the same nonce (reordered, or
//!   replayed: WireGuard already refuses replayed datagrams, so this is reordering), or
//! - it is older than the client's freshest requests by more than [`STALE_AFTER`]: the gateway
//!   tracks the smallest (local clock − client send time) seen, and a backlog read after the
//!   gateway was frozen (SIGSTOP, a stall) lags it by the length of the freeze. Acting on such a
//!   backlog would claim for a client that has long moved to another gateway.
//!
//! Claim changes are debounced per client ([`MIN_CHANGE_INTERVAL`]): a client toggling its
//! intent on every probe cannot make the gateway churn routes and announcements. A new nonce
//! means the client restarted: its sequence and clock start over.

use std::time::{Duration, Instant};

use crate::wire::{Intent, ProbeKind, ProbeMessage};

/// A request lagging the client's freshest by more than this is stale.
pub const STALE_AFTER: Duration = Duration::from_millis(500);
/// Least time between two claim changes of one client.
pub const MIN_CHANGE_INTERVAL: Duration = Duration::from_millis(100);
/// How fast the freshest-offset reference may creep up (clock drift), per unit of time.
const DRIFT_ALLOWANCE: f64 = 1e-3;

/// What to do with a client's stable address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimChange {
    /// claim it on the inside network
    Claim,
    /// release it
    Release,
}

/// Why a request was refused (not echoed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoError {
    /// a reply, not a request
    NotRequest,
    /// no such client
    UnknownClient,
}

/// The answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// the reply to send back
    pub reply: ProbeMessage,
    /// the claim change to make, if any
    pub change: Option<ClaimChange>,
    /// whether the request was stale (echoed, intent ignored)
    pub stale: bool,
}

#[derive(Debug, Clone, Default)]
struct ClientState {
    nonce: Option<u64>,
    last_seq: u64,
    last_heard: Option<Instant>,
    /// smoothed time between fresh requests
    spacing: Option<Duration>,
    claimed: bool,
    /// the switch generation the claim was made for (0: a version 1 client, which has none)
    generation: u32,
    /// smallest (local µs − sent µs) seen for this nonce
    min_offset_us: Option<i128>,
    last_change: Option<Instant>,
}

/// Per-client claim state for one gateway.
#[derive(Debug)]
pub struct EchoResponder {
    clients: Vec<ClientState>,
    claim_timeout: Duration,
    epoch: Option<Instant>,
}

impl EchoResponder {
    /// State for `clients` clients, none claimed.
    pub fn new(clients: usize, claim_timeout: Duration) -> Self {
        Self {
            clients: vec![ClientState::default(); clients],
            claim_timeout,
            epoch: None,
        }
    }

    /// Adds a client (a gateway's reload); returns its index.
    pub fn add_client(&mut self) -> usize {
        self.clients.push(ClientState::default());
        self.clients.len() - 1
    }

    /// Forgets client `i` (removed by a reload): not claimed, never released by timeout.
    pub fn forget(&mut self, client: usize) {
        if let Some(c) = self.clients.get_mut(client) {
            *c = ClientState::default();
        }
    }

    /// Whether client `i` is claimed.
    pub fn claimed(&self, client: usize) -> bool {
        self.clients.get(client).is_some_and(|c| c.claimed)
    }

    /// The switch generation client `i`'s claim was made for: the network prefers the claim
    /// with the highest (0 for clients that send none).
    pub fn generation(&self, client: usize) -> u32 {
        self.clients.get(client).map_or(0, |c| c.generation)
    }

    /// When client `i` last sent a fresh request.
    pub fn last_heard(&self, client: usize) -> Option<Instant> {
        self.clients.get(client).and_then(|c| c.last_heard)
    }

    /// Whether client `i` is still probing at its usual pace: heard within three of its
    /// smoothed request spacings (at least 15 ms, at most 200 ms). A gateway that has lost its
    /// client (the path broke, the client moved on) stops re-announcing at once, instead of
    /// pulling the return path back from the gateway the client moved to.
    pub fn still_probing(&self, client: usize, now: Instant) -> bool {
        let Some(c) = self.clients.get(client) else {
            return false;
        };
        let window = c
            .spacing
            .map_or(Duration::from_millis(200), |s| s * 3)
            .clamp(Duration::from_millis(15), Duration::from_millis(200));
        c.last_heard
            .is_some_and(|h| now.saturating_duration_since(h) <= window)
    }

    /// Forgets a claim that could not be carried out, so the client's next Active request
    /// tries again.
    pub fn claim_failed(&mut self, client: usize) {
        if let Some(c) = self.clients.get_mut(client) {
            c.claimed = false;
        }
    }

    /// Handles a request from client `client` (identified by the tunnel it came through).
    pub fn handle_request(
        &mut self,
        now: Instant,
        client: usize,
        msg: &ProbeMessage,
    ) -> Result<Answer, EchoError> {
        if msg.kind != ProbeKind::Request {
            return Err(EchoError::NotRequest);
        }
        let epoch = *self.epoch.get_or_insert(now);
        let c = self
            .clients
            .get_mut(client)
            .ok_or(EchoError::UnknownClient)?;
        if c.nonce != Some(msg.nonce) {
            c.nonce = Some(msg.nonce);
            c.last_seq = 0;
            c.min_offset_us = None;
        }
        let local_us = now.saturating_duration_since(epoch).as_micros() as i128;
        let offset = local_us - i128::from(msg.sent_us);
        let reference = c.min_offset_us.map_or(offset, |m| {
            let since = c
                .last_heard
                .map_or(Duration::ZERO, |h| now.saturating_duration_since(h));
            let creep = (since.as_secs_f64() * DRIFT_ALLOWANCE * 1e6) as i128;
            (m + creep).min(offset)
        });
        let stale = msg.seq <= c.last_seq || offset - reference > STALE_AFTER.as_micros() as i128;
        let reply = msg.reply();
        if stale {
            return Ok(Answer {
                reply,
                change: None,
                stale: true,
            });
        }
        c.min_offset_us = Some(reference);
        c.last_seq = msg.seq;
        if let Some(h) = c.last_heard {
            let gap = now.saturating_duration_since(h).min(Duration::from_secs(1));
            c.spacing = Some(c.spacing.map_or(gap, |s| (s * 7 + gap) / 8));
        }
        c.last_heard = Some(now);
        let generation = msg.generation.unwrap_or(0);
        let wanted = match (msg.intent, c.claimed) {
            (Intent::Active, false) => Some(ClaimChange::Claim),
            // claimed, but the client has switched since (away and back, unheard here): claim
            // again with the newer generation, so the network prefers this claim again
            (Intent::Active, true) if generation > c.generation => Some(ClaimChange::Claim),
            (Intent::Standby, true) => Some(ClaimChange::Release),
            _ => None,
        };
        let debounced = c
            .last_change
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_CHANGE_INTERVAL);
        let change = if debounced { None } else { wanted };
        if let Some(ch) = change {
            c.claimed = ch == ClaimChange::Claim;
            if c.claimed {
                c.generation = generation;
            }
            c.last_change = Some(now);
        }
        Ok(Answer {
            reply,
            change,
            stale: false,
        })
    }

    /// When [`EchoResponder::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clients
            .iter()
            .filter(|c| c.claimed)
            .filter_map(|c| c.last_heard.map(|t| t + self.claim_timeout))
            .min()
    }

    /// Releases every claim whose client has been silent for the claim timeout; calls
    /// `release(client)` for each.
    pub fn handle_timeout(&mut self, now: Instant, mut release: impl FnMut(usize)) {
        for (i, c) in self.clients.iter_mut().enumerate() {
            if c.claimed
                && c.last_heard
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.claim_timeout)
            {
                c.claimed = false;
                c.last_change = Some(now);
                release(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(intent: Intent, nonce: u64, seq: u64, sent_us: u64) -> ProbeMessage {
        ProbeMessage {
            kind: ProbeKind::Request,
            intent,
            nonce,
            seq,
            sent_us,
            generation: Some(1),
        }
    }

    #[test]
    fn claims_releases_and_ignores_reordered_requests() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut e = EchoResponder::new(2, Duration::from_secs(2));
        let a = e
            .handle_request(ms(0), 0, &req(Intent::Active, 1, 1, 0))
            .unwrap();
        assert_eq!(a.reply.kind, ProbeKind::Reply);
        assert_eq!(a.change, Some(ClaimChange::Claim));
        assert_eq!(
            e.handle_request(ms(20), 0, &req(Intent::Active, 1, 3, 20_000))
                .unwrap()
                .change,
            None
        );
        // seq 2 arrives after 3: echoed (so it is not counted lost), intent ignored
        let late = e
            .handle_request(ms(21), 0, &req(Intent::Standby, 1, 2, 10_000))
            .unwrap();
        assert!(late.stale && late.change.is_none());
        assert!(e.claimed(0), "a reordered request moves nothing");
        let r = e
            .handle_request(ms(200), 0, &req(Intent::Standby, 1, 4, 200_000))
            .unwrap();
        assert_eq!(r.change, Some(ClaimChange::Release));
        let r = e
            .handle_request(ms(400), 0, &req(Intent::Active, 9, 1, 7))
            .unwrap();
        assert_eq!(
            r.change,
            Some(ClaimChange::Claim),
            "restart: a new nonce starts over"
        );
        assert_eq!(
            e.handle_request(ms(400), 5, &req(Intent::Active, 9, 2, 8)),
            Err(EchoError::UnknownClient)
        );
        assert_eq!(
            e.handle_request(ms(400), 1, &req(Intent::Active, 3, 1, 0).reply()),
            Err(EchoError::NotRequest)
        );
        let mut released = Vec::new();
        e.handle_timeout(ms(1400), |i| released.push(i));
        assert!(released.is_empty());
        e.handle_timeout(ms(2400), |i| released.push(i));
        assert_eq!(released, vec![0]);
        assert!(!e.claimed(0));
    }

    #[test]
    fn a_client_that_stopped_probing_is_noticed_within_three_intervals() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut e = EchoResponder::new(1, Duration::from_secs(2));
        assert!(!e.still_probing(0, ms(0)));
        for k in 0..20u64 {
            e.handle_request(ms(k * 20), 0, &req(Intent::Active, 1, k + 1, k * 20_000))
                .unwrap();
        }
        // last request at 380 ms, every 20 ms before it
        assert!(e.still_probing(0, ms(430)));
        assert!(
            !e.still_probing(0, ms(480)),
            "100 ms of silence from a 20 ms prober: it is gone"
        );
    }

    #[test]
    fn a_backlog_read_after_a_freeze_is_stale() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut e = EchoResponder::new(1, Duration::from_secs(2));
        // in-sync probes every 20 ms, 1 ms one-way delay
        for k in 0..10u64 {
            e.handle_request(
                ms(k * 20 + 1),
                0,
                &req(Intent::Active, 1, k + 1, k * 20_000),
            )
            .unwrap();
        }
        assert!(e.claimed(0));
        // frozen from 200 ms to 3200 ms; meanwhile the claim times out on waking
        e.handle_timeout(ms(3200), |_| {});
        assert!(!e.claimed(0));
        // the backlog: Active probes sent at 200..300 ms, read at 3200 ms
        for k in 10..15u64 {
            let a = e
                .handle_request(ms(3200), 0, &req(Intent::Active, 1, k + 1, k * 20_000))
                .unwrap();
            assert!(
                a.stale && a.change.is_none(),
                "probe {k} from the backlog must not claim"
            );
        }
        assert!(!e.claimed(0));
        // a fresh probe (the client now says Standby for this gateway) is acted on normally
        let a = e
            .handle_request(ms(3201), 0, &req(Intent::Standby, 1, 200, 3_200_000))
            .unwrap();
        assert!(!a.stale);
    }

    #[test]
    fn claim_changes_are_debounced() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut e = EchoResponder::new(1, Duration::from_secs(2));
        let mut changes = 0;
        for k in 0..50u64 {
            let intent = if k % 2 == 0 {
                Intent::Active
            } else {
                Intent::Standby
            };
            let a = e
                .handle_request(ms(k * 5), 0, &req(intent, 1, k + 1, k * 5_000))
                .unwrap();
            changes += usize::from(a.change.is_some());
        }
        // 250 ms of toggling every 5 ms: at most one change per 100 ms
        assert!(changes <= 3, "{changes} changes");
    }

    #[test]
    fn a_newer_generation_claims_again_and_an_older_one_does_not() {
        #[allow(clippy::disallowed_methods)] // base of a virtual clock
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut e = EchoResponder::new(1, Duration::from_secs(2));
        let at = |gen: u32, seq: u64| ProbeMessage {
            generation: Some(gen),
            ..req(Intent::Active, 1, seq, seq * 20_000)
        };
        let a = e.handle_request(ms(20), 0, &at(7, 1)).unwrap();
        assert_eq!(a.change, Some(ClaimChange::Claim));
        assert_eq!(e.generation(0), 7);
        // the same generation: nothing to do
        let a = e.handle_request(ms(200), 0, &at(7, 10)).unwrap();
        assert_eq!(a.change, None);
        // the client went away and came back without this gateway hearing the Standby: a newer
        // generation claims again, so the network prefers this claim once more
        let a = e.handle_request(ms(400), 0, &at(9, 20)).unwrap();
        assert_eq!(a.change, Some(ClaimChange::Claim));
        assert_eq!(e.generation(0), 9);
        // an older generation never lowers it
        let a = e.handle_request(ms(600), 0, &at(8, 30)).unwrap();
        assert_eq!(a.change, None);
        assert_eq!(e.generation(0), 9);
        // a version 1 client has generation 0
        let mut e = EchoResponder::new(1, Duration::from_secs(2));
        let v1 = ProbeMessage {
            generation: None,
            ..req(Intent::Active, 1, 1, 0)
        };
        assert_eq!(
            e.handle_request(ms(20), 0, &v1).unwrap().change,
            Some(ClaimChange::Claim)
        );
        assert_eq!(e.generation(0), 0);
    }
}
