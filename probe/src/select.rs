//! Which tunnel carries traffic.
//!
//! Usable tunnels are those Up and not suppressed. The active tunnel is kept while it is Up,
//! Suspect or Recovering (hysteresis: a suspect tunnel is not abandoned, its probes speed up
//! instead). When it goes Down, the best usable tunnel takes over; if none is usable, the best
//! Recovering or Suspect one does (anything alive beats nothing). Policies:
//! - [`Policy::Priority`]: configuration order; with `failback`, traffic returns to a
//!   higher-priority tunnel once it is Up again (after its hold-down);
//! - [`Policy::LowestRtt`]: the lowest base RTT (the lowest sample of the last few seconds,
//!   so a tunnel is not judged by the queue its own traffic builds), switching only for a gain of at least `ratio` and
//!   `min_gain`, and at most once per `min_dwell`.
//!
//! The operator's word: a *drained* tunnel is never chosen, and traffic leaves it for any
//! other live tunnel (it stays only while nothing else is alive); a *manual* switch pins its
//! tunnel, which then keeps traffic against failback and RTT policy until it goes down.

use std::time::{Duration, Instant};

use crate::health::{DownReason, PathHealth};

/// Selection policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// configuration order
    Priority {
        /// return to a higher-priority tunnel once it is trusted again
        failback: bool,
    },
    /// lowest base RTT, with hysteresis
    LowestRtt {
        /// required relative gain (0.2: the other must be 20 % faster)
        ratio: f64,
        /// required absolute gain
        min_gain: Duration,
        /// least time between two RTT-driven switches
        min_dwell: Duration,
    },
}

/// Why traffic moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    /// the active tunnel went silent
    ProbeTimeout,
    /// the active tunnel's loss crossed the threshold
    Loss,
    /// a higher-priority tunnel is trusted again
    Failback,
    /// another tunnel is enough faster
    LowerRtt,
    /// a healthy tunnel replaced one that was only recovering
    Healthier,
    /// the operator asked
    Manual,
    /// the operator drained the active tunnel
    Drain,
}

impl SwitchReason {
    /// Every reason.
    pub const ALL: [SwitchReason; 7] = [
        SwitchReason::ProbeTimeout,
        SwitchReason::Loss,
        SwitchReason::Failback,
        SwitchReason::LowerRtt,
        SwitchReason::Healthier,
        SwitchReason::Manual,
        SwitchReason::Drain,
    ];

    /// snake_case label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            SwitchReason::ProbeTimeout => "probe_timeout",
            SwitchReason::Loss => "loss",
            SwitchReason::Failback => "failback",
            SwitchReason::LowerRtt => "lower_rtt",
            SwitchReason::Healthier => "healthier",
            SwitchReason::Manual => "manual",
            SwitchReason::Drain => "drain",
        }
    }
}

/// A switch decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchEvent {
    /// from this tunnel
    pub from: usize,
    /// to this tunnel
    pub to: usize,
    /// why
    pub reason: SwitchReason,
    /// for a failure: how long the old tunnel had been silent when it was declared down
    pub detection: Option<Duration>,
}

/// What the selector needs to know about one tunnel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathView {
    /// health
    pub health: PathHealth,
    /// damped out
    pub suppressed: bool,
    /// smoothed RTT
    pub srtt: Option<Duration>,
    /// the lowest RTT of the last few seconds (the path's delay without queueing), which
    /// [`Policy::LowestRtt`] compares; `srtt` where it is missing
    pub base_rtt: Option<Duration>,
    /// why it last went down, and how long it had been silent then
    pub down: Option<(DownReason, Duration)>,
    /// taken out of service by the operator
    pub drained: bool,
}

impl PathView {
    /// The RTT the lowest-RTT policy compares.
    fn rtt(&self) -> Option<Duration> {
        self.base_rtt.or(self.srtt)
    }

    fn usable(&self) -> bool {
        self.health == PathHealth::Up && !self.suppressed && !self.drained
    }

    fn alive(&self) -> bool {
        !self.drained
            && matches!(
                self.health,
                PathHealth::Up | PathHealth::Suspect | PathHealth::Recovering
            )
    }
}

/// The selector.
#[derive(Debug, Clone)]
pub struct Selector {
    policy: Policy,
    active: usize,
    /// set by a manual switch: this tunnel keeps traffic while it is alive
    pinned: Option<usize>,
    last_rtt_switch: Option<Instant>,
    grace_until: Instant,
}

impl Selector {
    /// Starts with tunnel 0 active. Until `now + startup_grace`, a first tunnel that has not
    /// answered yet is not abandoned for one that answered a few milliseconds sooner (all
    /// tunnels start at once; that race is no failure). After it, a first tunnel that never
    /// came up is left like any failed one.
    pub fn new(policy: Policy, now: Instant, startup_grace: Duration) -> Self {
        Self {
            policy,
            active: 0,
            pinned: None,
            last_rtt_switch: None,
            grace_until: now + startup_grace,
        }
    }

    /// The active tunnel.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn best(&self, paths: &[PathView], pick: impl Fn(&PathView) -> bool) -> Option<usize> {
        let candidates = paths.iter().enumerate().filter(|(_, p)| pick(p));
        match self.policy {
            Policy::Priority { .. } => candidates.map(|(i, _)| i).next(),
            Policy::LowestRtt { .. } => candidates
                .min_by_key(|(i, p)| (p.rtt().unwrap_or(Duration::MAX), *i))
                .map(|(i, _)| i),
        }
    }

    fn switch(
        &mut self,
        to: usize,
        reason: SwitchReason,
        detection: Option<Duration>,
    ) -> Option<SwitchEvent> {
        let from = self.active;
        if from == to {
            return None;
        }
        self.active = to;
        Some(SwitchEvent {
            from,
            to,
            reason,
            detection,
        })
    }

    /// Moves traffic by operator request, and pins it there: failback and the RTT policy
    /// leave it alone until it goes down.
    pub fn force(&mut self, to: usize) -> Option<SwitchEvent> {
        self.pinned = Some(to);
        self.switch(to, SwitchReason::Manual, None)
    }

    /// The tunnel a manual switch pinned, while the pin holds.
    pub fn pinned(&self) -> Option<usize> {
        self.pinned
    }

    /// Forgets a pin (the operator drained or undrained a tunnel: policy decides again).
    pub fn unpin(&mut self) {
        self.pinned = None;
    }

    /// A selector that continues another after a reload: `active` (and the pin) at their new
    /// positions, no startup grace, and `policy` (which may have changed).
    pub fn renumbered(policy: Policy, now: Instant, active: usize, pinned: Option<usize>) -> Self {
        Self {
            policy,
            active,
            pinned,
            last_rtt_switch: None,
            grace_until: now,
        }
    }

    /// Re-evaluates after any health change; returns the switch to make, if any.
    pub fn evaluate(&mut self, now: Instant, paths: &[PathView]) -> Option<SwitchEvent> {
        let current = *paths.get(self.active)?;
        let never_up = current.health == PathHealth::Down && current.down.is_none();
        if never_up && now < self.grace_until {
            return None;
        }
        if current.drained {
            let to = self
                .best(paths, PathView::usable)
                .or_else(|| self.best(paths, PathView::alive))?;
            self.pinned = None;
            return self.switch(to, SwitchReason::Drain, None);
        }
        if current.health == PathHealth::Down {
            self.pinned = None;
            let (reason, detection) = match current.down {
                Some((DownReason::Loss, d)) => (SwitchReason::Loss, Some(d)),
                Some((DownReason::Silence, d)) => (SwitchReason::ProbeTimeout, Some(d)),
                None => (SwitchReason::ProbeTimeout, None),
            };
            let to = self
                .best(paths, PathView::usable)
                .or_else(|| self.best(paths, PathView::alive))?;
            return self.switch(to, reason, detection);
        }
        if !current.usable() && current.health != PathHealth::Suspect {
            // active only recovering (or suppressed): a trusted tunnel is better
            if let Some(to) = self.best(paths, PathView::usable) {
                return self.switch(to, SwitchReason::Healthier, None);
            }
            return None;
        }
        if self.pinned == Some(self.active) {
            return None;
        }
        match self.policy {
            Policy::Priority { failback: true } => {
                let to = self.best(paths, PathView::usable)?;
                (to < self.active).then_some(())?;
                self.switch(to, SwitchReason::Failback, None)
            }
            Policy::Priority { failback: false } => None,
            Policy::LowestRtt {
                ratio,
                min_gain,
                min_dwell,
            } => {
                if current.health != PathHealth::Up
                    || self
                        .last_rtt_switch
                        .is_some_and(|t| now.saturating_duration_since(t) < min_dwell)
                {
                    return None;
                }
                let to = self.best(paths, PathView::usable)?;
                let (cur, best) = (current.rtt()?, paths.get(to)?.rtt()?);
                let gain = cur.saturating_sub(best);
                if gain >= min_gain && best.as_secs_f64() <= cur.as_secs_f64() * (1.0 - ratio) {
                    self.last_rtt_switch = Some(now);
                    return self.switch(to, SwitchReason::LowerRtt, None);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_first_answer_at_startup_is_no_failure() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let grace = Duration::from_millis(100);
        let mut s = Selector::new(Policy::Priority { failback: true }, t0, grace);
        let never = PathView {
            health: PathHealth::Down,
            suppressed: false,
            srtt: None,
            base_rtt: None,
            down: None,
            drained: false,
        };
        let mut paths = vec![never, view(PathHealth::Up, 3)];
        assert_eq!(
            s.evaluate(t0 + Duration::from_millis(5), &paths),
            None,
            "dc2 answered first"
        );
        paths[0] = view(PathHealth::Up, 4);
        assert_eq!(s.evaluate(t0 + Duration::from_millis(6), &paths), None);
        // a first tunnel that never answers is left once the grace is over
        let mut s = Selector::new(Policy::Priority { failback: true }, t0, grace);
        paths[0] = never;
        assert_eq!(s.evaluate(t0 + grace, &paths).unwrap().to, 1);
    }

    fn view(health: PathHealth, srtt_ms: u64) -> PathView {
        PathView {
            health,
            suppressed: false,
            srtt: Some(Duration::from_millis(srtt_ms)),
            base_rtt: None,
            down: None,
            drained: false,
        }
    }

    #[test]
    fn priority_moves_off_a_down_tunnel_and_fails_back() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut s = Selector::new(Policy::Priority { failback: true }, now, Duration::ZERO);
        let mut paths = vec![
            view(PathHealth::Up, 10),
            view(PathHealth::Up, 10),
            view(PathHealth::Up, 10),
        ];
        assert_eq!(s.evaluate(now, &paths), None);
        paths[0].health = PathHealth::Suspect;
        assert_eq!(s.evaluate(now, &paths), None, "a suspect tunnel is kept");
        paths[0].health = PathHealth::Down;
        paths[0].down = Some((DownReason::Silence, Duration::from_millis(81)));
        let e = s.evaluate(now, &paths).unwrap();
        assert_eq!((e.from, e.to, e.reason), (0, 1, SwitchReason::ProbeTimeout));
        assert_eq!(e.detection, Some(Duration::from_millis(81)));
        paths[0].health = PathHealth::Recovering;
        assert_eq!(
            s.evaluate(now, &paths),
            None,
            "no failback inside the hold-down"
        );
        paths[0].health = PathHealth::Up;
        assert_eq!(
            s.evaluate(now, &paths).unwrap().reason,
            SwitchReason::Failback
        );
    }

    #[test]
    fn lowest_rtt_needs_a_real_gain() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let policy = Policy::LowestRtt {
            ratio: 0.2,
            min_gain: Duration::from_millis(5),
            min_dwell: Duration::from_secs(10),
        };
        let mut s = Selector::new(policy, now, Duration::ZERO);
        let mut paths = vec![view(PathHealth::Up, 50), view(PathHealth::Up, 45)];
        assert_eq!(s.evaluate(now, &paths), None, "10 % faster is not enough");
        paths[1].srtt = Some(Duration::from_millis(20));
        assert_eq!(
            s.evaluate(now, &paths).unwrap().reason,
            SwitchReason::LowerRtt
        );
        paths[0].srtt = Some(Duration::from_millis(5));
        assert_eq!(s.evaluate(now, &paths), None, "dwell time");
    }

    #[test]
    fn all_down_then_anything_alive() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut s = Selector::new(Policy::Priority { failback: true }, now, Duration::ZERO);
        let mut paths = vec![view(PathHealth::Down, 10), view(PathHealth::Down, 10)];
        assert_eq!(s.evaluate(now, &paths), None);
        paths[1].health = PathHealth::Recovering;
        assert_eq!(
            s.evaluate(now, &paths).unwrap().to,
            1,
            "a recovering tunnel beats none"
        );
    }

    #[test]
    fn a_drained_tunnel_is_left_and_a_manual_switch_holds() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut s = Selector::new(Policy::Priority { failback: true }, now, Duration::ZERO);
        let mut paths = vec![view(PathHealth::Up, 10), view(PathHealth::Up, 10)];
        paths[0].drained = true;
        let e = s.evaluate(now, &paths).unwrap();
        assert_eq!((e.to, e.reason), (1, SwitchReason::Drain));
        assert_eq!(
            s.evaluate(now, &paths),
            None,
            "no failback onto a drained tunnel"
        );
        paths[0].drained = false;
        assert_eq!(
            s.evaluate(now, &paths).unwrap().reason,
            SwitchReason::Failback
        );
        // a manual switch to the lower priority holds against failback ...
        assert_eq!(s.force(1).unwrap().reason, SwitchReason::Manual);
        assert_eq!(s.evaluate(now, &paths), None);
        // ... until it goes down
        paths[1].health = PathHealth::Down;
        assert_eq!(s.evaluate(now, &paths).unwrap().to, 0);
        assert_eq!(s.pinned(), None);
        // draining the only live tunnel keeps traffic where it is
        paths[0].drained = true;
        assert_eq!(s.evaluate(now, &paths), None);
    }
}
