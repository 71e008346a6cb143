//! Failover: faults injected at random phases during a verified stream both ways; detection,
//! stall per direction, survival; the soak at random loss.

use super::*;

impl Bench {
    // -------------------------------------------------------------------------- failover

    pub(crate) fn failover(&mut self) -> Result<()> {
        let bytes = self.opts.stream_bytes;
        let per_kind = self.opts.injections;
        let base_total = if self.opts.runs("baseline") {
            self.opts.baseline_injections
        } else {
            0
        };
        // no failback: each injection moves traffic from the active datacenter to the other
        let mut fl = FailoverLab::new("bench-fo2", 2, "failback = false\n")?;
        self.command(format!(
            "ip netns exec <client> fo-lab stream-send --connect {}:{STREAM_PORT} --up {bytes} --down {bytes} --seed N --timeout-secs 240",
            Topology::SERVER_IP4
        ));
        self.command("nft -f (in the active dc) table inet fo_fault { chain in { type filter hook input priority 0; udp dport 51820 drop; } chain out { type filter hook output priority 0; udp sport 51820 drop; } }  (blackhole: both chains; one-way loss: one of them)");
        self.command("kill -KILL <active gateway>; ip -n <dc> neigh del proxy 100.96.0.2 dev in0; failoverd gateway --config dcN.toml  (gateway SIGKILL, then restart)");
        let mut baseline = if base_total > 0 {
            match Baseline::build(Profile::None) {
                Ok(b) => {
                    self.command(
                        "bash watchdog.sh (in <client>): ping -n -q -c 1 -W 1 -I <active wg> <its dc's inner address> every 1 s; after 3 misses: ip route replace 198.19.0.0/16 dev <other wg>; ip -n <server> route replace 100.96.0.0/16 via <other dc's inside address>"
                    );
                    Some(b)
                }
                Err(e) => {
                    self.errors.push(format!("baseline: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let mut rng = (unix_millis() ^ 0x9e37_79b9_7f4a_7c15) | 1;
        let mut ours: Vec<Injection> = Vec::new();
        let mut theirs: Vec<Injection> = Vec::new();
        let total = per_kind * Kind::ALL.len();
        let mut next_base = 0usize;
        for i in 0..total.max(base_total) {
            let kind = Kind::ALL
                .get(i % Kind::ALL.len())
                .copied()
                .unwrap_or(Kind::Blackhole);
            if i < total {
                match inject_ours(&mut fl, kind, i, bytes, &mut rng) {
                    Ok(inj) => {
                        eprintln!("  failoverd {}", inj.line());
                        ours.push(inj);
                    }
                    Err(e) => {
                        self.errors
                            .push(format!("failover: injection {i} ({}): {e}", kind.label()));
                        // the lab may be in any state now: give up on the rest
                        break;
                    }
                }
            }
            // the baseline's injections spread over the run, kinds in turn
            let due = if total == 0 {
                base_total
            } else {
                (i + 1) * base_total / total.max(1)
            };
            while next_base < due.min(base_total) {
                let bkind = Kind::ALL
                    .get(next_base % Kind::ALL.len())
                    .copied()
                    .unwrap_or(Kind::Blackhole);
                if let Some(b) = baseline.as_mut() {
                    match b.inject(bkind, next_base, bytes, &mut rng) {
                        Ok(inj) => {
                            eprintln!("  watchdog  {}", inj.line());
                            theirs.push(inj);
                        }
                        Err(e) => {
                            self.errors.push(format!(
                                "baseline: injection {next_base} ({}): {e}",
                                bkind.label()
                            ));
                            baseline = None;
                        }
                    }
                }
                next_base += 1;
            }
        }
        let mut block = injections_block(&ours);
        if let Some(m) = block.as_object_mut() {
            m.insert("probe_interval_ms".into(), json!(20));
            m.insert("detect_multiplier".into(), json!(4));
            m.insert("stream_bytes_each_way".into(), json!(bytes));
            m.insert(
                "random_phase".into(),
                json!(
                    "0-40 ms after the stream reached a quarter, against the 20 ms probe cadence"
                ),
            );
        }
        self.results.insert("failover".into(), block);
        let mut bblock = injections_block(&theirs);
        if let Some(m) = bblock.as_object_mut() {
            m.insert("ping_interval_s".into(), json!(1));
            m.insert("misses_before_switch".into(), json!(3));
            m.insert(
                "what".into(),
                json!("two wireguard-go tunnels; a bash ping watchdog in the client namespace swaps the client's route to 198.19.0.0/16 and, at the same moment (its best case), the server's return route"),
            );
            m.insert(
                "random_phase".into(),
                json!("a 0-1000 ms pause before each stream starts, against the watchdog's free-running 1 s ping cadence; the fault lands once a quarter of the stream has arrived"),
            );
        }
        self.results.insert("baseline_watchdog".into(), bblock);
        if self.opts.long {
            eprintln!("fo-bench: soak {} s at 5 % loss ...", self.opts.soak_secs);
            self.command(format!(
                "nft (in the active dc): udp dport/sport 51820 numgen random mod 100 < 5 drop, for {} s",
                self.opts.soak_secs
            ));
            let (n, switches) = soak(&fl, self.opts.soak_secs)?;
            self.results.insert("false_switches".into(), json!(n));
            self.results.insert(
                "soak".into(),
                json!({"secs": self.opts.soak_secs, "loss_percent": 5, "switches": switches}),
            );
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ failover

/// A fault injected at the active datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Blackhole,
    LossToDc,
    LossToClient,
    GatewayKill,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [
        Kind::Blackhole,
        Kind::LossToDc,
        Kind::LossToClient,
        Kind::GatewayKill,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Blackhole => "blackhole",
            Self::LossToDc => "oneway_loss_to_dc",
            Self::LossToClient => "oneway_loss_to_client",
            Self::GatewayKill => "gateway_sigkill",
        }
    }

    pub(crate) fn direction(self) -> Option<Direction> {
        match self {
            Self::Blackhole => Some(Direction::Both),
            Self::LossToDc => Some(Direction::ToDatacenter),
            Self::LossToClient => Some(Direction::ToClient),
            Self::GatewayKill => None,
        }
    }
}

/// What one injection measured.
#[derive(Debug, Clone)]
pub(crate) struct Injection {
    pub(crate) kind: Kind,
    pub(crate) n: usize,
    pub(crate) from: String,
    pub(crate) to: String,
    /// ms from the fault taking effect to the switch (None: no switch within the wait)
    pub(crate) detect_ms: Option<f64>,
    /// how long the old tunnel had been silent when declared down (failoverd only)
    pub(crate) silent_ms: Option<f64>,
    pub(crate) stall_down_ms: f64,
    pub(crate) stall_up_ms: f64,
    pub(crate) survived: bool,
    pub(crate) verified: u64,
    pub(crate) corrupted_bytes: u64,
    pub(crate) corrupted: bool,
    pub(crate) phase_ms: u64,
    pub(crate) mid_stream: bool,
    /// when the client switched (Unix ms), failoverd only
    pub(crate) switch_unix_ms: Option<u64>,
}

impl Injection {
    pub(crate) fn line(&self) -> String {
        format!(
            "#{:<3} {:<22} {}->{} detect {:>7} ms, stall down {:>7.1} ms up {:>7.1} ms, {}",
            self.n,
            self.kind.label(),
            self.from,
            self.to,
            self.detect_ms.map_or("none".into(), |d| format!("{d:.0}")),
            self.stall_down_ms,
            self.stall_up_ms,
            if self.survived { "survived" } else { "BROKEN" }
        ) + if self.mid_stream {
            ""
        } else {
            " (the stream had ended before the fault)"
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "n": self.n, "kind": self.kind.label(), "from": self.from, "to": self.to,
            "detect_ms": round(self.detect_ms), "silent_ms": round(self.silent_ms),
            "stall_down_ms": rounded(self.stall_down_ms), "stall_up_ms": rounded(self.stall_up_ms),
            "survived": self.survived, "corrupted": self.corrupted, "phase_ms": self.phase_ms,
            "fault_mid_stream": self.mid_stream,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_report(
        kind: Kind,
        n: usize,
        (from, to): (String, String),
        detect_ms: Option<f64>,
        silent_ms: Option<f64>,
        report: &netns_tests::stream::SendReport,
        bytes: u64,
        phase_ms: u64,
        (started, applied): (u64, u64),
    ) -> Self {
        let corrupted = report.down.corrupt_at.is_some() || report.up.corrupt_at.is_some();
        let corrupted_bytes = if report.down.corrupt_at.is_some() {
            report.down.bytes.saturating_sub(report.down.verified)
        } else {
            0
        } + if report.up.corrupt_at.is_some() {
            report
                .up
                .bytes_sent
                .saturating_sub(report.up.verified_by_server)
        } else {
            0
        };
        Self {
            kind,
            n,
            from,
            to,
            detect_ms,
            silent_ms,
            stall_down_ms: report.down.longest_stall_ms,
            stall_up_ms: report.up.server_longest_stall_ms.unwrap_or(f64::NAN),
            survived: report.ok
                && report.down.verified == bytes
                && report.up.verified_by_server == bytes,
            verified: report.down.verified + report.up.verified_by_server,
            corrupted_bytes,
            corrupted,
            phase_ms,
            // the stream was still running when the fault took effect: the injection counts
            mid_stream: started as f64 + report.elapsed_ms > applied as f64,
            switch_unix_ms: None,
        }
    }
}

/// The figures of a set of injections (all kinds together, and by kind).
pub(crate) fn injections_block(v: &[Injection]) -> Value {
    pub(crate) fn figures(v: &[&Injection]) -> Value {
        let detect: Vec<f64> = v.iter().filter_map(|i| i.detect_ms).collect();
        let silent: Vec<f64> = v.iter().filter_map(|i| i.silent_ms).collect();
        let down: Vec<f64> = v.iter().map(|i| i.stall_down_ms).collect();
        let up: Vec<f64> = v.iter().map(|i| i.stall_up_ms).collect();
        let worst: Vec<f64> = v
            .iter()
            .map(|i| i.stall_down_ms.max(i.stall_up_ms))
            .collect();
        json!({
            "injections": v.len(),
            "switched": detect.len(),
            "detect_ms": p50_p99(&detect),
            "silent_at_declaration_ms": p50_p99(&silent),
            "stall_ms": p50_p99(&worst),
            "stall_down_ms": p50_p99(&down),
            "stall_up_ms": p50_p99(&up),
            "survived": v.iter().filter(|i| i.survived).count(),
            "bytes_verified": v.iter().map(|i| i.verified).sum::<u64>(),
            "bytes_corrupted": v.iter().map(|i| i.corrupted_bytes).sum::<u64>(),
            "streams_corrupted": v.iter().filter(|i| i.corrupted).count(),
            "faults_after_the_stream_ended": v.iter().filter(|i| !i.mid_stream).count(),
        })
    }
    let all: Vec<&Injection> = v.iter().collect();
    let mut block = figures(&all);
    let mut by_kind = serde_json::Map::new();
    for k in Kind::ALL {
        let these: Vec<&Injection> = v.iter().filter(|i| i.kind == k).collect();
        if !these.is_empty() {
            by_kind.insert(k.label().into(), figures(&these));
        }
    }
    if let Some(m) = block.as_object_mut() {
        m.insert("by_kind".into(), Value::Object(by_kind));
        m.insert(
            "per_injection".into(),
            json!(v.iter().map(Injection::json).collect::<Vec<_>>()),
        );
        m.insert(
            "stall_definition".into(),
            json!("longest gap between reads that brought data at the receiver; stall_ms is the worse of the two directions per injection (down: the client receives, up: the server receives)"),
        );
        m.insert(
            "bytes_corrupted_definition".into(),
            json!("bytes received from the first corrupt byte on (the verifier stops verifying there), summed over streams"),
        );
    }
    block
}

/// One injection into the failoverd lab: a verified stream, the fault at a random phase, the
/// switch, the stream's verdict, then the datacenter healed and alive again.
pub(crate) fn inject_ours(
    fl: &mut FailoverLab,
    kind: Kind,
    n: usize,
    bytes: u64,
    rng: &mut u64,
) -> Result<Injection> {
    let active = fl.active()?;
    let (from_i, to) = if active == "dc1" {
        (1, "dc2")
    } else {
        (2, "dc1")
    };
    let from_ns = fl.dc(from_i)?.clone();
    let started = unix_millis();
    let stream = spawn_stream(
        &fl.lab,
        &fl.topo.client,
        &format!("fo{n}"),
        bytes,
        n as u64 + 1,
    )?;
    fl.wait_flowing(bytes / 4)?;
    let phase_ms = next_rand(rng) % 40;
    sleep_ms(phase_ms);
    // The client keeps its last 64 switches only: the switch is found by time, not by index.
    let fault_at = unix_millis();
    match kind.direction() {
        Some(dir) => blackhole(&fl.lab, &from_ns, dir)?,
        None => {
            let gw = fl
                .gateways
                .get(from_i - 1)
                .ok_or_else(|| other("no gateway"))?;
            gw.daemon.kill()?;
        }
    }
    let applied = unix_millis();
    let switched = fl.wait_active(to, Duration::from_secs(10)).is_ok();
    let report = stream.finish()?;
    let sw = fl
        .switches()?
        .into_iter()
        .find(|s| s.unix_ms >= fault_at && s.from == active);
    let detect_ms = sw
        .as_ref()
        .filter(|_| switched)
        .map(|s| s.unix_ms.saturating_sub(applied) as f64);
    let silent_ms = sw.as_ref().and_then(|s| s.detection_ms);
    let mut inj = Injection::from_report(
        kind,
        n,
        (active.clone(), to.to_owned()),
        detect_ms,
        silent_ms,
        &report,
        bytes,
        phase_ms,
        (started, applied),
    );
    inj.switch_unix_ms = sw.as_ref().filter(|_| switched).map(|s| s.unix_ms);
    // heal
    match kind.direction() {
        Some(_) => heal(&fl.lab, &from_ns)?,
        None => {
            let old = fl
                .gateways
                .get(from_i - 1)
                .ok_or_else(|| other("no gateway"))?;
            let new = restart_gateway(&fl.lab, &from_ns, old, &format!("dc{from_i}-restart{n}"))?;
            if let Some(slot) = fl.gateways.get_mut(from_i - 1) {
                *slot = new;
            }
        }
    }
    // Alive again is enough: after many failures in a row, damping keeps a datacenter
    // recovering (suppressed) for a while, and the selector still uses it when nothing better
    // is left.
    wait_until(
        Duration::from_secs(30),
        "the healed datacenter to be alive again",
        || matches!(dc_health(&fl.client, &active).as_str(), "up" | "recovering"),
    )?;
    Ok(inj)
}

/// 5 % random loss both ways on the active path for `secs`; the switches it caused.
pub(crate) fn soak(fl: &FailoverLab, secs: u64) -> Result<(usize, Vec<String>)> {
    // start from datacenters that are fully up, not one still in its hold-down
    let _ = wait_until(Duration::from_secs(120), "both datacenters up", || {
        dc_health(&fl.client, "dc1") == "up" && dc_health(&fl.client, "dc2") == "up"
    });
    let active = fl.active()?;
    let i = if active == "dc1" { 1 } else { 2 };
    let ns = fl.dc(i)?.clone();
    let start = unix_millis();
    random_loss(&fl.lab, &ns, 5)?;
    std::thread::sleep(Duration::from_secs(secs));
    heal(&fl.lab, &ns)?;
    // the client keeps its last 64 switches: those since the start are the soak's (64 means
    // "at least 64")
    let during: Vec<String> = fl
        .switches()?
        .iter()
        .filter(|s| s.unix_ms >= start)
        .map(|s| format!("{} -> {} ({}) at {}", s.from, s.to, s.reason, s.unix_ms))
        .collect();
    Ok((during.len(), during))
}
