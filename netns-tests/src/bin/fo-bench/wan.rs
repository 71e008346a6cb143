//! Wide area: the failover injections again at each lab profile's distances, through the
//! impairment relay (`fo-relay`), beside the watchdog baseline under the same profile and the
//! original paper's figures; a soak of verified streams per profile for false switches; and
//! what the relay itself sustains, so no figure here is the relay's limit.

use super::*;

/// The original testbed's published figures (~15 ms RTT between Tokyo and Yokohama).
const PAPER: &str = "recovery within ~3 s at ~15 ms RTT; throughput back at 3.9 s";

/// The profiles the section runs, in order.
const PROFILES: [Profile; 3] = [Profile::Seed, Profile::Wifi, Profile::Intercontinental];

impl Bench {
    pub(crate) fn wan(&mut self) -> Result<()> {
        let bytes = self.opts.stream_bytes;
        let mut rng = (unix_millis() ^ 0x5157_4e41_4d45_2121) | 1;
        let mut block = serde_json::Map::new();
        self.command("fo-relay --client-if c0 --wan-if w0 --control relay.sock --dc dcN=198.18.0.(10+N)=<profile spec>  (in <relay>, between the client's up0 and brwan)");
        block.insert("relay".into(), self.relay_capacity()?);
        for profile in PROFILES {
            let label = profile.label();
            eprintln!("fo-bench: wan {label} ...");
            let mut fl = FailoverLab::with_profile(
                &format!("bench-wan-{label}"),
                2,
                "failback = false\n",
                profile,
            )?;
            let relay = fl.relay()?.clone();
            let cpu0 = relay_cpu_ms(&relay);
            let mut ours = Vec::new();
            for i in 0..self.opts.wan_injections * Kind::ALL.len() {
                let kind = Kind::ALL
                    .get(i % Kind::ALL.len())
                    .copied()
                    .unwrap_or(Kind::Blackhole);
                let inj = inject_ours(&mut fl, kind, i, bytes, &mut rng).map_err(|e| {
                    other(format!("{label}: injection {i} ({}): {e}", kind.label()))
                })?;
                eprintln!("  {label:<16} failoverd {}", inj.line());
                ours.push(inj);
            }
            let (false_switches, soak) = wan_soak(&fl, self.opts.wan_soak_secs)?;
            let relay_stats = relay.stats()?;
            let relay_cpu_s = (relay_cpu_ms(&relay) - cpu0) as f64 / 1000.0;
            drop(fl);

            let mut theirs = Vec::new();
            if self.opts.wan_baseline_injections > 0 {
                let mut b = Baseline::build(profile)?;
                for i in 0..self.opts.wan_baseline_injections {
                    let kind = Kind::ALL
                        .get(i % Kind::ALL.len())
                        .copied()
                        .unwrap_or(Kind::Blackhole);
                    let inj = b.inject(kind, i, bytes, &mut rng).map_err(|e| {
                        other(format!(
                            "{label}: baseline injection {i} ({}): {e}",
                            kind.label()
                        ))
                    })?;
                    eprintln!("  {label:<16} watchdog  {}", inj.line());
                    theirs.push(inj);
                }
            }

            let rtts: Vec<f64> = (1..=2)
                .map(|i| profile.rtt(i).as_secs_f64() * 1e3)
                .collect();
            let ours_block = injections_block(&ours);
            let detect_p99 = ours_block
                .pointer("/detect_ms/p99")
                .unwrap_or(&Value::Null)
                .as_f64();
            let stall_p99 = ours_block
                .pointer("/stall_ms/p99")
                .unwrap_or(&Value::Null)
                .as_f64();
            // stall p99 <= detection p99 + 2 x the new datacenter's RTT + 50 ms; the new
            // datacenter is either one, so the larger RTT of the two
            let new_rtt = rtts.iter().copied().fold(0.0, f64::max);
            let bound = detect_p99.map(|d| d + 2.0 * new_rtt + 50.0);
            block.insert(
                label.into(),
                json!({
                    "rtt_ms": {"dc1": rtts.first(), "dc2": rtts.get(1)},
                    "spec": {"dc1": profile.spec(1), "dc2": profile.spec(2)},
                    "failoverd": ours_block,
                    "watchdog": injections_block(&theirs),
                    "soak": {"secs": self.opts.wan_soak_secs, "false_switches": false_switches, "streams": soak},
                    "target": {
                        "what": "stall p99 <= detection p99 + 2 x the new datacenter's RTT + 50 ms",
                        "bound_ms": round(bound),
                        "stall_p99_ms": round(stall_p99),
                        "met": bound.zip(stall_p99).map(|(b, s)| s <= b),
                    },
                    "relay_cpu_s": rounded(relay_cpu_s),
                    "relay_stats": relay_stats,
                }),
            );
        }
        block.insert("paper".into(), json!(PAPER));
        block.insert(
            "stall_definition".into(),
            json!("as in failover: the longest gap between reads that brought data, per direction, at the receiver"),
        );
        self.results.insert("wan".into(), Value::Object(block));
        Ok(())
    }

    /// What the relay sustains: iperf3 TCP from the client to dc1's underlay address through
    /// the relay at seed distance with the rate limit off, and the relay's CPU time for it.
    fn relay_capacity(&mut self) -> Result<Value> {
        let mut lab = Lab::new("bench-wan-relay")?;
        let topo = Topology::build_with(&mut lab, 1, Profile::Seed)?;
        let relay = topo.relay()?.clone();
        relay.set(1, None, "rate=0")?;
        let dc1 = topo.dc(1).ok_or_else(|| other("no dc1"))?.clone();
        let _server = start_iperf_server(&lab, &dc1)?;
        lab.wait_tcp_listening(&dc1, IPERF_PORT)?;
        let secs = if self.opts.quick { 2 } else { 10 };
        self.command(format!(
            "ip netns exec <client> iperf3 -c {} -p {IPERF_PORT} -t {secs} -J  (underlay, through the relay, seed delay, no rate limit)",
            Topology::dc_underlay_ip(1)
        ));
        let cpu0 = relay_cpu_ms(&relay);
        let out = lab.exec(
            &topo.client,
            &[
                "iperf3",
                "-c",
                &Topology::dc_underlay_ip(1).to_string(),
                "-p",
                &IPERF_PORT.to_string(),
                "-t",
                &secs.to_string(),
                "-J",
            ],
        )?;
        let cpu_s = (relay_cpu_ms(&relay) - cpu0) as f64 / 1000.0;
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| other(format!("iperf3 output is not JSON: {e}")))?;
        let bps = v
            .pointer("/end/sum_received/bits_per_second")
            .unwrap_or(&Value::Null)
            .as_f64()
            .ok_or_else(|| other("iperf3: no sum_received"))?;
        let gbit = bps * secs as f64 / 1e9;
        let stats = relay.stats()?;
        Ok(json!({
            "what": "iperf3 TCP client -> dc1 underlay through fo-relay (7.5 ms each way, no rate limit)",
            "mbit_s": rounded(bps / 1e6),
            "relay_cpu_s": rounded(cpu_s),
            "relay_cpu_share_of_one_core": rounded(cpu_s / secs as f64),
            "relay_cpu_s_per_gbit": rounded(cpu_s / gbit.max(1e-9)),
            "kernel_drops": stats.pointer("/relay/kernel_drops").unwrap_or(&Value::Null),
        }))
    }
}

/// The relay's CPU time so far (0 if it cannot say).
fn relay_cpu_ms(relay: &netns_tests::lab::Relay) -> u64 {
    relay
        .stats()
        .ok()
        .and_then(|s| s.pointer("/cpu_ms").unwrap_or(&Value::Null).as_u64())
        .unwrap_or(0)
}

/// Verified streams back to back for `secs` with no fault: switches seen (false switches) and
/// streams run.
fn wan_soak(fl: &FailoverLab, secs: u64) -> Result<(usize, u64)> {
    let _ = wait_until(Duration::from_secs(120), "both datacenters up", || {
        dc_health(&fl.client, "dc1") == "up" && dc_health(&fl.client, "dc2") == "up"
    });
    let start = unix_millis();
    let streams = soak_streams(fl, secs, 7000)?;
    let switches = fl.switches()?.iter().filter(|s| s.unix_ms >= start).count();
    Ok((switches, streams))
}
