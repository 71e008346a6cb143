//! Wide-area impairment, sans-IO: what the lab's relay (`fo-relay`) does to each datagram.
//!
//! This kernel has neither netem nor the fq qdisc, so nothing in the kernel can delay a packet.
//! The relay bridges two interfaces in userspace and asks a [`Pipe`] — one per datacenter and
//! direction — when each frame may leave. A pipe models, in this order:
//!
//! 1. **loss**: independent (`loss`) and bursty ([`GilbertElliott`], per packet, as netem's
//!    `gemodel`);
//! 2. **the bottleneck**: a rate limit with a drop-tail buffer measured in time (`buffer`):
//!    a packet that would wait longer than that for the link is dropped;
//! 3. **propagation**: `delay` plus a jitter sample from [`Jitter`]; departures stay in order
//!    (a later packet never overtakes an earlier one through jitter alone);
//! 4. **reordering**: a share of packets (`reorder`) skips the delay and so overtakes what is
//!    in flight, as netem's `reorder` does;
//! 5. **duplication**: a share (`duplicate`) leaves twice.
//!
//! Everything is bounded: a pipe holds at most `limit` packets; the caller counts what it holds
//! and asks [`Pipe::admit`] with that count.
//!
//! The text form of [`Params`] (`delay=7.5ms,jitter=1ms,dist=normal,loss=0.5%,...`) is what
//! the relay's command line and control socket take; [`Params::parse`] rejects anything it
//! does not know, naming the key.

use std::fmt;
use std::time::{Duration, Instant};

/// Distribution of the jitter added to `delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// uniform in `[-jitter, +jitter]`
    Uniform,
    /// normal with standard deviation `jitter`, cut at ±4σ
    Normal,
    /// one-sided, heavy-tailed: Pareto (shape 3) with mean `jitter`, cut at 20× the mean.
    /// Wi-Fi's occasional long waits (retries, power save) look like this.
    Pareto,
}

impl Jitter {
    fn label(self) -> &'static str {
        match self {
            Jitter::Uniform => "uniform",
            Jitter::Normal => "normal",
            Jitter::Pareto => "pareto",
        }
    }
}

/// Gilbert–Elliott loss: a Good and a Bad state, switched per packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// chance per packet of moving Good → Bad
    pub p: f64,
    /// chance per packet of moving Bad → Good (mean burst length 1/r packets)
    pub r: f64,
    /// loss share while Bad
    pub loss_bad: f64,
    /// loss share while Good
    pub loss_good: f64,
}

impl GilbertElliott {
    /// Long-run loss share: π_B·loss_bad + π_G·loss_good with π_B = p / (p + r).
    pub fn mean_loss(&self) -> f64 {
        let sum = self.p + self.r;
        if sum <= 0.0 {
            return self.loss_good;
        }
        let bad = self.p / sum;
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }
}

/// One direction of one path.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// one-way propagation delay
    pub delay: Duration,
    /// jitter scale (see [`Jitter`])
    pub jitter: Duration,
    /// jitter distribution
    pub dist: Jitter,
    /// independent loss share (0..=1)
    pub loss: f64,
    /// bursty loss on top of `loss`
    pub ge: Option<GilbertElliott>,
    /// share of packets that skip the delay (and so overtake those in flight)
    pub reorder: f64,
    /// share of packets sent twice
    pub duplicate: f64,
    /// bottleneck rate in bits per second; `None`: unlimited
    pub rate: Option<u64>,
    /// longest a packet may wait for the bottleneck before it is dropped
    pub buffer: Duration,
    /// most packets the pipe holds
    pub limit: usize,
}

impl Default for Params {
    /// A wire: no delay, no loss, unlimited.
    fn default() -> Self {
        Params {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            dist: Jitter::Normal,
            loss: 0.0,
            ge: None,
            reorder: 0.0,
            duplicate: 0.0,
            rate: None,
            buffer: Duration::from_millis(50),
            limit: 20_000,
        }
    }
}

/// Most packets one pipe may be configured to hold.
pub const MAX_LIMIT: usize = 1 << 20;
/// Longest delay, jitter or buffer accepted.
pub const MAX_TIME: Duration = Duration::from_secs(10);

/// A parse error naming the key and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParamError {}

fn err<T>(msg: String) -> Result<T, ParamError> {
    Err(ParamError(msg))
}

/// `12ms`, `7.5ms`, `1s`, `250us`, `0`.
pub fn parse_time(key: &str, v: &str) -> Result<Duration, ParamError> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if v == "0" {
        ("0", 1.0)
    } else {
        return err(format!(
            "{key}={v}: a time needs a unit (us, ms or s), e.g. {key}=7.5ms"
        ));
    };
    let x: f64 = num
        .parse()
        .map_err(|_| ParamError(format!("{key}={v}: not a number before the unit")))?;
    let secs = x * scale;
    if !secs.is_finite() || secs < 0.0 || secs > MAX_TIME.as_secs_f64() {
        return err(format!(
            "{key}={v}: must be between 0 and {}s",
            MAX_TIME.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `1%`, `0.5%` or a share `0.01`.
pub fn parse_share(key: &str, v: &str) -> Result<f64, ParamError> {
    let x = match v.strip_suffix('%') {
        Some(p) => p.parse::<f64>().map(|p| p / 100.0),
        None => v.parse::<f64>(),
    }
    .map_err(|_| ParamError(format!("{key}={v}: not a share (e.g. 1% or 0.01)")))?;
    if !(0.0..=1.0).contains(&x) {
        return err(format!("{key}={v}: a share must be between 0% and 100%"));
    }
    Ok(x)
}

/// `100mbit`, `1gbit`, `500kbit`, `0` (unlimited).
pub fn parse_rate(key: &str, v: &str) -> Result<Option<u64>, ParamError> {
    if v == "0" || v == "none" {
        return Ok(None);
    }
    let (num, scale) = if let Some(n) = v.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = v.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = v.strip_suffix("kbit") {
        (n, 1e3)
    } else {
        return err(format!(
            "{key}={v}: a rate needs a unit (kbit, mbit, gbit), e.g. {key}=100mbit"
        ));
    };
    let x: f64 = num
        .parse()
        .map_err(|_| ParamError(format!("{key}={v}: not a number before the unit")))?;
    let bps = x * scale;
    if !bps.is_finite() || !(8e3..=1e12).contains(&bps) {
        return err(format!("{key}={v}: must be between 8kbit and 1000gbit"));
    }
    Ok(Some(bps as u64))
}

impl Params {
    /// Parses `key=value,...` on top of `self` (keys not named keep their value). Keys:
    /// `delay`, `jitter`, `dist` (uniform|normal|pareto), `loss`, `ge` (`p/r/loss_bad/loss_good`
    /// as shares, e.g. `ge=0.3%/30%/100%/0%`, or `off`), `reorder`, `dup`, `rate`, `buffer`,
    /// `limit`; `reset` first sets everything back to a plain wire.
    pub fn apply(&mut self, spec: &str) -> Result<(), ParamError> {
        let mut next = self.clone();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "reset" {
                next = Params::default();
                continue;
            }
            let Some((key, v)) = item.split_once('=') else {
                return err(format!("{item}: expected key=value"));
            };
            match key {
                "delay" => next.delay = parse_time(key, v)?,
                "jitter" => next.jitter = parse_time(key, v)?,
                "dist" => {
                    next.dist = match v {
                        "uniform" => Jitter::Uniform,
                        "normal" => Jitter::Normal,
                        "pareto" => Jitter::Pareto,
                        _ => return err(format!("dist={v}: one of uniform, normal, pareto")),
                    }
                }
                "loss" => next.loss = parse_share(key, v)?,
                "ge" => next.ge = parse_ge(v)?,
                "reorder" => next.reorder = parse_share(key, v)?,
                "dup" => next.duplicate = parse_share(key, v)?,
                "rate" => next.rate = parse_rate(key, v)?,
                "buffer" => next.buffer = parse_time(key, v)?,
                "limit" => {
                    next.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ParamError(format!("limit={v}: a packet count, 1..={MAX_LIMIT}"))
                        })?
                }
                _ => {
                    return err(format!(
                        "unknown key {key:?}: expected delay, jitter, dist, loss, ge, reorder, \
                         dup, rate, buffer, limit or reset"
                    ))
                }
            }
        }
        *self = next;
        Ok(())
    }

    /// A plain wire with `spec` applied.
    pub fn parse(spec: &str) -> Result<Params, ParamError> {
        let mut p = Params::default();
        p.apply(spec)?;
        Ok(p)
    }

    /// Long-run loss share of this direction (independent and bursty combined).
    pub fn mean_loss(&self) -> f64 {
        let ge = self.ge.map_or(0.0, |g| g.mean_loss());
        1.0 - (1.0 - self.loss) * (1.0 - ge)
    }
}

fn parse_ge(v: &str) -> Result<Option<GilbertElliott>, ParamError> {
    if v == "off" {
        return Ok(None);
    }
    let parts: Vec<&str> = v.split('/').collect();
    let [p, r, bad, good] = parts.as_slice() else {
        return err(format!(
            "ge={v}: expected p/r/loss_bad/loss_good, e.g. ge=0.3%/30%/100%/0%, or ge=off"
        ));
    };
    Ok(Some(GilbertElliott {
        p: parse_share("ge p", p)?,
        r: parse_share("ge r", r)?,
        loss_bad: parse_share("ge loss_bad", bad)?,
        loss_good: parse_share("ge loss_good", good)?,
    }))
}

impl fmt::Display for Params {
    /// The text form, accepted back by [`Params::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay={}us,jitter={}us,dist={},loss={}",
            self.delay.as_micros(),
            self.jitter.as_micros(),
            self.dist.label(),
            self.loss
        )?;
        match self.ge {
            Some(g) => write!(f, ",ge={}/{}/{}/{}", g.p, g.r, g.loss_bad, g.loss_good)?,
            None => write!(f, ",ge=off")?,
        }
        write!(f, ",reorder={},dup={}", self.reorder, self.duplicate)?;
        match self.rate {
            Some(r) => write!(f, ",rate={}kbit", r / 1000)?,
            None => write!(f, ",rate=0")?,
        }
        write!(
            f,
            ",buffer={}us,limit={}",
            self.buffer.as_micros(),
            self.limit
        )
    }
}

/// Why a packet was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// independent loss
    Random,
    /// Gilbert–Elliott loss
    Burst,
    /// it would have waited longer than `buffer` for the bottleneck
    Buffer,
    /// the pipe already holds `limit` packets
    Limit,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// drop it
    Drop(Drop),
    /// send it at `at`, and a second copy at `dup` if duplicated
    Send {
        /// departure
        at: Instant,
        /// the duplicate's departure
        dup: Option<Instant>,
    },
}

/// Counters of one pipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PipeStats {
    /// packets offered
    pub offered: u64,
    /// packets let through (duplicates not counted)
    pub passed: u64,
    /// bytes let through
    pub bytes: u64,
    /// independent losses
    pub lost_random: u64,
    /// bursty losses
    pub lost_burst: u64,
    /// drops at the bottleneck buffer
    pub dropped_buffer: u64,
    /// drops at the packet limit
    pub dropped_limit: u64,
    /// packets sent ahead of the delay
    pub reordered: u64,
    /// extra copies
    pub duplicated: u64,
}

/// One direction of one path: the state behind [`Params`].
#[derive(Debug, Clone)]
pub struct Pipe {
    params: Params,
    rng: u64,
    ge_bad: bool,
    /// when the bottleneck is free again
    link_free: Option<Instant>,
    /// the latest in-order departure handed out
    last_departure: Option<Instant>,
    stats: PipeStats,
}

/// splitmix64 step: a small, fast, seedable generator (not for secrets).
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Pipe {
    /// A pipe with its own random stream.
    pub fn new(params: Params, seed: u64) -> Pipe {
        Pipe {
            params,
            rng: seed,
            ge_bad: false,
            link_free: None,
            last_departure: None,
            stats: PipeStats::default(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// New parameters from now on; what is in flight keeps its departure.
    pub fn set_params(&mut self, params: Params) {
        if params.ge.is_none() {
            self.ge_bad = false;
        }
        self.params = params;
    }

    /// Counters.
    pub fn stats(&self) -> PipeStats {
        self.stats
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (next_u64(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, share: f64) -> bool {
        share > 0.0 && self.uniform() < share
    }

    /// A jitter sample in seconds (may be negative).
    fn jitter(&mut self) -> f64 {
        let j = self.params.jitter.as_secs_f64();
        if j <= 0.0 {
            return 0.0;
        }
        match self.params.dist {
            Jitter::Uniform => (self.uniform() * 2.0 - 1.0) * j,
            Jitter::Normal => {
                // Box–Muller
                let u1 = self.uniform().max(f64::MIN_POSITIVE);
                let u2 = self.uniform();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                z.clamp(-4.0, 4.0) * j
            }
            Jitter::Pareto => {
                // shape 3, scale so that the mean is j: x_m = j·(a−1)/a
                let a = 3.0;
                let xm = j * (a - 1.0) / a;
                let u = (1.0 - self.uniform()).max(f64::MIN_POSITIVE);
                (xm / u.powf(1.0 / a)).min(20.0 * j)
            }
        }
    }

    /// Decides the fate of a packet of `len` bytes arriving at `now`, while the pipe holds
    /// `held` packets.
    pub fn admit(&mut self, now: Instant, len: usize, held: usize) -> Verdict {
        self.stats.offered += 1;
        if held >= self.params.limit {
            self.stats.dropped_limit += 1;
            return Verdict::Drop(Drop::Limit);
        }
        // the Gilbert–Elliott chain moves once per packet, whatever happens to it
        if let Some(ge) = self.params.ge {
            let flip = if self.ge_bad { ge.r } else { ge.p };
            if self.chance(flip) {
                self.ge_bad = !self.ge_bad;
            }
            let loss = if self.ge_bad {
                ge.loss_bad
            } else {
                ge.loss_good
            };
            if self.chance(loss) {
                self.stats.lost_burst += 1;
                return Verdict::Drop(Drop::Burst);
            }
        }
        if self.chance(self.params.loss) {
            self.stats.lost_random += 1;
            return Verdict::Drop(Drop::Random);
        }
        // the bottleneck: serialisation after whatever is queued
        let sent = match self.params.rate {
            Some(bps) => {
                let start = self.link_free.map_or(now, |f| f.max(now));
                if start.saturating_duration_since(now) > self.params.buffer {
                    self.stats.dropped_buffer += 1;
                    return Verdict::Drop(Drop::Buffer);
                }
                let ser = Duration::from_secs_f64(len as f64 * 8.0 / bps as f64);
                let done = start + ser;
                self.link_free = Some(done);
                done
            }
            None => now,
        };
        let at = if self.chance(self.params.reorder) {
            // ahead of everything in flight; the in-order clock is left alone
            self.stats.reordered += 1;
            sent
        } else {
            let d = (self.params.delay.as_secs_f64() + self.jitter()).max(0.0);
            let t = sent + Duration::from_secs_f64(d);
            let t = self.last_departure.map_or(t, |l| t.max(l));
            self.last_departure = Some(t);
            t
        };
        self.stats.passed += 1;
        self.stats.bytes += len as u64;
        let dup = if self.chance(self.params.duplicate) && held + 1 < self.params.limit {
            self.stats.duplicated += 1;
            Some(at)
        } else {
            None
        };
        Verdict::Send { at, dup }
    }
}

/// The lab's named profiles: per datacenter, both directions. RTTs are split evenly between
/// the two directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// no relay at all
    None,
    /// the original testbed: dc1 15 ms, dc2 15 ms, dc3 35 ms RTT (Tokyo, Yokohama, Fukuoka)
    Seed,
    /// a laptop on Wi-Fi: 10 ms RTT to every datacenter, jitter, 1 % bursty loss
    Wifi,
    /// datacenters on other continents: 40, 90, 150 ms RTT
    Intercontinental,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 4] = [
        Profile::None,
        Profile::Seed,
        Profile::Wifi,
        Profile::Intercontinental,
    ];

    /// Name as on command lines.
    pub fn label(self) -> &'static str {
        match self {
            Profile::None => "none",
            Profile::Seed => "seed",
            Profile::Wifi => "wifi",
            Profile::Intercontinental => "intercontinental",
        }
    }

    /// By name.
    pub fn parse(s: &str) -> Result<Profile, ParamError> {
        Profile::ALL
            .into_iter()
            .find(|p| p.label() == s)
            .ok_or_else(|| {
                ParamError(format!(
                    "unknown profile {s:?}: one of none, seed, wifi, intercontinental"
                ))
            })
    }

    /// The profile named by `FO_PROFILE`, else `None`; an unknown name is an error.
    pub fn from_env() -> Result<Profile, ParamError> {
        match std::env::var("FO_PROFILE") {
            Ok(s) if !s.is_empty() => Profile::parse(&s),
            _ => Ok(Profile::None),
        }
    }

    /// Round-trip time the profile puts on datacenter `i` (1-based), before jitter.
    pub fn rtt(self, i: usize) -> Duration {
        let ms = match self {
            Profile::None => 0,
            Profile::Seed => [15, 15, 35].get(i.wrapping_sub(1)).copied().unwrap_or(35),
            Profile::Wifi => 10,
            Profile::Intercontinental => {
                [40, 90, 150].get(i.wrapping_sub(1)).copied().unwrap_or(150)
            }
        };
        Duration::from_millis(ms)
    }

    /// The spec of datacenter `i`'s pipes (the same in both directions).
    pub fn spec(self, i: usize) -> String {
        let one_way_us = self.rtt(i).as_micros() / 2;
        match self {
            Profile::None => "reset".to_string(),
            // wide-area fibre: little jitter, a little random loss
            Profile::Seed | Profile::Intercontinental => {
                format!(
                    "reset,delay={one_way_us}us,jitter=300us,dist=normal,rate=1gbit,buffer=50ms"
                )
            }
            // Wi-Fi: heavy-tailed jitter (mean 2 ms each way) and 1 % loss in short bursts
            // (mean burst 2 packets: r = 50 %, p ≈ 1.01 %·r/(1 − 1.01 %))
            Profile::Wifi => format!(
                "reset,delay={}us,jitter=2ms,dist=pareto,ge=0.505%/50%/100%/0%,rate=200mbit,\
                 buffer=50ms",
                one_way_us.saturating_sub(2000)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn run(p: &Params, n: usize, gap: Duration) -> (Pipe, Vec<Option<Instant>>, Instant) {
        let start = t0();
        let mut pipe = Pipe::new(p.clone(), 7);
        let mut out = Vec::new();
        for k in 0..n {
            let now = start + gap * k as u32;
            out.push(match pipe.admit(now, 1000, 0) {
                Verdict::Send { at, .. } => Some(at),
                Verdict::Drop(_) => None,
            });
        }
        (pipe, out, start)
    }

    #[test]
    fn parses_and_prints_back() {
        let p = Params::parse(
            "delay=7.5ms,jitter=300us,dist=pareto,loss=1%,ge=0.5%/50%/100%/0%,reorder=5%,\
             dup=0.05,rate=100mbit,buffer=20ms,limit=500",
        )
        .unwrap();
        assert_eq!(p.delay, Duration::from_micros(7500));
        assert_eq!(p.dist, Jitter::Pareto);
        assert_eq!(p.rate, Some(100_000_000));
        assert_eq!(p.limit, 500);
        assert!((p.duplicate - 0.05).abs() < 1e-12);
        assert_eq!(Params::parse(&p.to_string()).unwrap(), p);
        // a later spec changes only what it names
        let mut q = p.clone();
        q.apply("delay=100ms").unwrap();
        assert_eq!(q.delay, Duration::from_millis(100));
        assert_eq!(q.rate, p.rate);
        q.apply("reset").unwrap();
        assert_eq!(q, Params::default());
    }

    #[test]
    fn rejects_with_the_key_named() {
        for (spec, needle) in [
            ("delay=7", "delay=7"),
            ("delay=-1ms", "delay"),
            ("delay=11s", "between"),
            ("loss=101%", "loss"),
            ("ge=1%/2%", "ge="),
            ("rate=100", "rate"),
            ("limit=0", "limit"),
            ("wobble=1", "wobble"),
            ("delay", "key=value"),
            ("dist=cauchy", "dist"),
        ] {
            let e = Params::parse(spec).unwrap_err();
            assert!(e.0.contains(needle), "{spec}: {e}");
        }
        // a failed apply leaves the pipe as it was
        let mut p = Params::parse("delay=5ms").unwrap();
        assert!(p.apply("delay=9ms,bogus=1").is_err());
        assert_eq!(p.delay, Duration::from_millis(5));
    }

    #[test]
    fn delay_and_jitter_keep_order() {
        let p = Params::parse("delay=20ms,jitter=5ms,dist=normal").unwrap();
        let (_, out, start) = run(&p, 5000, Duration::from_micros(100));
        let mut last = start;
        let mut sum = 0.0;
        for (k, at) in out.iter().enumerate() {
            let at = at.unwrap();
            assert!(at >= last, "packet {k} overtook its predecessor");
            last = at;
            sum += (at - (start + Duration::from_micros(100) * k as u32)).as_secs_f64();
        }
        // order is kept by holding packets back, so the mean sits a little above the delay
        let mean = sum / out.len() as f64;
        assert!((0.020..0.030).contains(&mean), "mean delay {mean}");
    }

    #[test]
    fn jitter_distributions_have_their_scale() {
        for (dist, lo, hi) in [
            ("uniform", 0.0, 0.01),
            ("normal", 0.0, 0.01),
            ("pareto", 0.0, 0.2),
        ] {
            let p = Params::parse(&format!("delay=50ms,jitter=10ms,dist={dist}")).unwrap();
            let mut pipe = Pipe::new(p, 3);
            let samples: Vec<f64> = (0..20_000).map(|_| pipe.jitter()).collect();
            let mean = samples.iter().sum::<f64>() / samples.len() as f64;
            let max = samples.iter().cloned().fold(f64::MIN, f64::max);
            let min = samples.iter().cloned().fold(f64::MAX, f64::min);
            match dist {
                "pareto" => {
                    assert!((mean - 0.010).abs() < 0.001, "{dist}: mean {mean}");
                    assert!(min > 0.0 && max <= hi + 1e-9, "{dist}: {min}..{max}");
                }
                _ => {
                    assert!(mean.abs() < 0.0005, "{dist}: mean {mean}");
                    assert!(
                        max > 0.005 && min < -0.005 && max <= 0.04,
                        "{dist}: {min}..{max}"
                    );
                    let _ = (lo, hi);
                }
            }
        }
    }

    #[test]
    fn gilbert_elliott_loss_comes_in_bursts_at_its_mean_rate() {
        let p = Params::parse("ge=0.505%/50%/100%/0%").unwrap();
        let expect = p.mean_loss();
        assert!((expect - 0.01).abs() < 0.0002, "{expect}");
        let (pipe, out, _) = run(&p, 400_000, Duration::from_micros(10));
        let lost = out.iter().filter(|o| o.is_none()).count();
        let share = lost as f64 / out.len() as f64;
        assert!((share - 0.01).abs() < 0.002, "loss {share}");
        assert_eq!(pipe.stats().lost_burst, lost as u64);
        // mean burst length 1/r = 2 packets
        let mut bursts = 0;
        let mut prev = false;
        for o in &out {
            let l = o.is_none();
            if l && !prev {
                bursts += 1;
            }
            prev = l;
        }
        let mean_burst = lost as f64 / bursts as f64;
        assert!((1.8..2.2).contains(&mean_burst), "mean burst {mean_burst}");
    }

    #[test]
    fn independent_loss_has_its_rate() {
        let p = Params::parse("loss=5%").unwrap();
        let (pipe, out, _) = run(&p, 100_000, Duration::from_micros(10));
        let share = out.iter().filter(|o| o.is_none()).count() as f64 / out.len() as f64;
        assert!((share - 0.05).abs() < 0.003, "{share}");
        assert_eq!(pipe.stats().lost_random + pipe.stats().passed, 100_000);
    }

    #[test]
    fn the_rate_limit_paces_and_its_buffer_drops() {
        // 8 Mbit/s: a 1000-byte packet takes 1 ms; offered every 0.5 ms
        let p = Params::parse("rate=8mbit,buffer=10ms").unwrap();
        let (pipe, out, start) = run(&p, 1000, Duration::from_micros(500));
        let sent: Vec<Instant> = out.iter().flatten().copied().collect();
        for w in sent.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= Duration::from_micros(999), "{gap:?}");
        }
        // about half gets through; the queue never exceeds the buffer
        let s = pipe.stats();
        assert!((450..=560).contains(&s.passed), "{s:?}");
        assert_eq!(s.dropped_buffer + s.passed, 1000);
        let last_offer = start + Duration::from_micros(500) * 999;
        assert!(*sent.last().unwrap() <= last_offer + Duration::from_millis(12));
    }

    #[test]
    fn the_limit_bounds_what_a_pipe_holds() {
        let mut pipe = Pipe::new(Params::parse("delay=1s,limit=3").unwrap(), 1);
        let now = t0();
        assert!(matches!(pipe.admit(now, 100, 2), Verdict::Send { .. }));
        assert_eq!(pipe.admit(now, 100, 3), Verdict::Drop(Drop::Limit));
        assert_eq!(pipe.stats().dropped_limit, 1);
    }

    #[test]
    fn reordered_packets_overtake_and_duplicates_leave_twice() {
        let p = Params::parse("delay=10ms,reorder=5%,dup=5%").unwrap();
        let start = t0();
        let mut pipe = Pipe::new(p, 11);
        let mut departures = Vec::new();
        for k in 0..10_000u32 {
            let now = start + Duration::from_micros(100) * k;
            if let Verdict::Send { at, dup } = pipe.admit(now, 100, 0) {
                departures.push((at, k));
                if let Some(d) = dup {
                    departures.push((d, k));
                }
            }
        }
        let s = pipe.stats();
        assert!((400..600).contains(&s.reordered), "{s:?}");
        assert!((400..600).contains(&s.duplicated), "{s:?}");
        departures.sort();
        let out_of_order = departures.windows(2).filter(|w| w[1].1 < w[0].1).count();
        assert!(out_of_order > 300, "{out_of_order}");
    }

    #[test]
    fn profiles_name_their_rtts() {
        assert_eq!(Profile::parse("seed").unwrap(), Profile::Seed);
        assert!(Profile::parse("mars").is_err());
        assert_eq!(Profile::Seed.rtt(3), Duration::from_millis(35));
        assert_eq!(Profile::Intercontinental.rtt(2), Duration::from_millis(90));
        for profile in Profile::ALL {
            for i in 1..=3 {
                let p = Params::parse(&profile.spec(i)).unwrap();
                let one_way = p.delay
                    + match p.dist {
                        Jitter::Pareto => p.jitter,
                        _ => Duration::ZERO,
                    };
                assert_eq!(one_way * 2, profile.rtt(i), "{profile:?} dc{i}");
            }
        }
        let wifi = Params::parse(&Profile::Wifi.spec(1)).unwrap();
        assert!((wifi.mean_loss() - 0.01).abs() < 0.0005);
    }
}
