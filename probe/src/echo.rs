//! The gateway's probe responder: validates requests, echoes them, and decides when to claim
//! and release each client's stable address.
//!
//! A client claims by probing with intent Active, and releases by probing with intent Standby
//! or by falling silent for `claim_timeout`. Requests are refused (counted, never echoed, never
//! acted on) when they are malformed, replayed (a sequence number not above the last one seen
//! for the same nonce), or not requests. A new nonce means the client restarted: its sequence
//! starts over.

use std::time::{Duration, Instant};

use crate::wire::{Intent, ProbeKind, ProbeMessage};

/// What to do with a client's stable address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimChange {
    /// claim it on the inside network
    Claim,
    /// release it
    Release,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoError {
    /// a reply, not a request
    NotRequest,
    /// a sequence number not above the last one for this nonce
    Replayed,
    /// no such client
    UnknownClient,
}

#[derive(Debug, Clone, Default)]
struct ClientState {
    nonce: Option<u64>,
    last_seq: u64,
    last_heard: Option<Instant>,
    claimed: bool,
}

/// Per-client claim state for one gateway.
#[derive(Debug)]
pub struct EchoResponder {
    clients: Vec<ClientState>,
    claim_timeout: Duration,
}

impl EchoResponder {
    /// State for `clients` clients, none claimed.
    pub fn new(clients: usize, claim_timeout: Duration) -> Self {
        Self {
            clients: vec![ClientState::default(); clients],
            claim_timeout,
        }
    }

    /// Whether client `i` is claimed.
    pub fn claimed(&self, client: usize) -> bool {
        self.clients.get(client).is_some_and(|c| c.claimed)
    }

    /// When client `i` was last heard from.
    pub fn last_heard(&self, client: usize) -> Option<Instant> {
        self.clients.get(client).and_then(|c| c.last_heard)
    }

    /// Handles a request from client `client` (identified by the tunnel it came through).
    /// Returns the reply to send and the claim change to make, if any.
    pub fn handle_request(
        &mut self,
        now: Instant,
        client: usize,
        msg: &ProbeMessage,
    ) -> Result<(ProbeMessage, Option<ClaimChange>), EchoError> {
        if msg.kind != ProbeKind::Request {
            return Err(EchoError::NotRequest);
        }
        let c = self
            .clients
            .get_mut(client)
            .ok_or(EchoError::UnknownClient)?;
        if c.nonce == Some(msg.nonce) && msg.seq <= c.last_seq {
            return Err(EchoError::Replayed);
        }
        c.nonce = Some(msg.nonce);
        c.last_seq = msg.seq;
        c.last_heard = Some(now);
        let change = match (msg.intent, c.claimed) {
            (Intent::Active, false) => {
                c.claimed = true;
                Some(ClaimChange::Claim)
            }
            (Intent::Standby, true) => {
                c.claimed = false;
                Some(ClaimChange::Release)
            }
            _ => None,
        };
        Ok((msg.reply(), change))
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
                release(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(intent: Intent, nonce: u64, seq: u64) -> ProbeMessage {
        ProbeMessage {
            kind: ProbeKind::Request,
            intent,
            nonce,
            seq,
            sent_us: 5,
        }
    }

    #[test]
    fn claims_releases_and_refuses_replays() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut e = EchoResponder::new(2, Duration::from_secs(2));
        let (reply, change) = e.handle_request(t0, 0, &req(Intent::Active, 1, 1)).unwrap();
        assert_eq!(reply.kind, ProbeKind::Reply);
        assert_eq!(change, Some(ClaimChange::Claim));
        assert_eq!(
            e.handle_request(t0, 0, &req(Intent::Active, 1, 2))
                .unwrap()
                .1,
            None
        );
        assert_eq!(
            e.handle_request(t0, 0, &req(Intent::Standby, 1, 2)),
            Err(EchoError::Replayed)
        );
        assert!(e.claimed(0), "a replay moves nothing");
        assert_eq!(
            e.handle_request(t0, 0, &req(Intent::Standby, 1, 3))
                .unwrap()
                .1,
            Some(ClaimChange::Release)
        );
        assert_eq!(
            e.handle_request(t0, 0, &req(Intent::Active, 9, 1))
                .unwrap()
                .1,
            Some(ClaimChange::Claim),
            "restart: new nonce"
        );
        assert_eq!(
            e.handle_request(t0, 5, &req(Intent::Active, 9, 1)),
            Err(EchoError::UnknownClient)
        );
        assert_eq!(
            e.handle_request(t0, 1, &req(Intent::Active, 3, 1).reply()),
            Err(EchoError::NotRequest)
        );
        let mut released = Vec::new();
        e.handle_timeout(t0 + Duration::from_secs(1), |i| released.push(i));
        assert!(released.is_empty());
        e.handle_timeout(t0 + Duration::from_secs(2), |i| released.push(i));
        assert_eq!(released, vec![0]);
        assert!(!e.claimed(0));
    }
}
