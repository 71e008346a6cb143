//! Failover figures in the namespace lab, with the real binaries: detection and receiver stall
//! over many injections at random phases, and false switches during a soak with random loss on
//! the active path. Prints one JSON line per injection and a JSON summary; `scripts/bench` will
//! collect these into its results file.
//!
//! ```text
//! failover-bench [--injections N (20)] [--soak-secs S (0)] [--bytes B (60000000)]
//! ```
//! Run as root after `cargo build --release --workspace`.

use std::process::ExitCode;
use std::time::Duration;

use netns_tests::lab::wait_until;
use netns_tests::scenario::*;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failover-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn health(fl: &FailoverLab, dc: &str) -> String {
    fl.client
        .status()
        .ok()
        .and_then(|s| {
            s.get("datacenters")?
                .as_array()?
                .iter()
                .find(|d| d.get("name").and_then(|n| n.as_str()) == Some(dc))?
                .get("health")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn run() -> std::io::Result<()> {
    let injections = arg("--injections", 20);
    let soak = arg("--soak-secs", 0);
    let bytes = arg("--bytes", 60_000_000);
    // no failback: each injection moves traffic from the active datacenter to the other one
    let fl = FailoverLab::new("bench", 2, "failback = false\n")?;
    let mut rng = unix_millis() | 1;
    let (mut detections, mut silences, mut stalls_down, mut stalls_up) =
        (vec![], vec![], vec![], vec![]);
    let (mut survived, mut verified, mut corrupted) = (0u64, 0u64, 0u64);
    for n in 0..injections {
        let active = fl.active()?;
        let (from_i, to) = if active == "dc1" {
            (1, "dc2")
        } else {
            (2, "dc1")
        };
        let stream = spawn_stream(&fl.lab, &fl.topo.client, &format!("bench{n}"), bytes, n + 1)?;
        fl.wait_flowing(10_000_000)?;
        // a random phase against the 20 ms probe cadence
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 40_000));
        let before = fl.switches()?.len();
        let injected = unix_millis();
        blackhole(&fl.lab, fl.dc(from_i)?, Direction::Both)?;
        let applied = unix_millis();
        fl.wait_active(to, Duration::from_secs(10))?;
        let report = stream.finish()?;
        let sw = fl.switches()?.get(before).cloned();
        let silent = sw.as_ref().and_then(|s| s.detection_ms).unwrap_or(f64::NAN);
        let after_fault = sw
            .as_ref()
            .map_or(f64::NAN, |s| s.unix_ms.saturating_sub(applied) as f64);
        let ok =
            report.ok && report.down.verified == bytes && report.up.verified_by_server == bytes;
        survived += u64::from(ok);
        verified += report.down.verified + report.up.verified_by_server;
        corrupted += u64::from(report.down.corrupt_at.is_some() || report.up.corrupt_at.is_some());
        let down = report.down.longest_stall_ms;
        let up = report.up.server_longest_stall_ms.unwrap_or(f64::NAN);
        println!(
            "{}",
            serde_json::json!({"injection": n, "from": active, "to": to, "silent_ms": silent,
                "switch_after_rule_applied_ms": after_fault, "nft_apply_ms": applied - injected,
                "stall_down_ms": down, "stall_up_ms": up, "survived": ok})
        );
        silences.push(silent);
        detections.push(after_fault);
        stalls_down.push(down);
        stalls_up.push(up);
        heal(&fl.lab, fl.dc(from_i)?)?;
        // Alive again is enough: after several failures in a row damping keeps it recovering
        // (suppressed) for a while, and the selector still uses it when nothing better exists.
        wait_until(
            Duration::from_secs(15),
            "the healed datacenter to be alive again",
            || matches!(health(&fl, &active).as_str(), "up" | "recovering"),
        )?;
    }
    let mut false_switches = None;
    if soak > 0 {
        let active = fl.active()?;
        let i = if active == "dc1" { 1 } else { 2 };
        let before = fl.switches()?.len();
        fl.lab.nft(
            fl.dc(i)?,
            &format!(
                "table inet fo_fault {{\n chain in {{ type filter hook input priority 0; udp dport {WG_PORT} numgen random mod 100 < 5 drop; }}\n chain out {{ type filter hook output priority 0; udp sport {WG_PORT} numgen random mod 100 < 5 drop; }}\n}}\n"
            ),
        )?;
        std::thread::sleep(Duration::from_secs(soak));
        heal(&fl.lab, fl.dc(i)?)?;
        let during = fl.switches()?;
        for sw in during.iter().skip(before) {
            eprintln!("soak switch: {sw:?}");
        }
        false_switches = Some(during.len().saturating_sub(before));
    }
    for v in [
        &mut silences,
        &mut detections,
        &mut stalls_down,
        &mut stalls_up,
    ] {
        v.sort_by(f64::total_cmp);
    }
    let stall_worst: Vec<f64> = {
        let mut w: Vec<f64> = stalls_down
            .iter()
            .zip(&stalls_up)
            .map(|(a, b)| a.max(*b))
            .collect();
        w.sort_by(f64::total_cmp);
        w
    };
    println!(
        "{}",
        serde_json::json!({
            "summary": true,
            "injections": injections,
            "probe_interval_ms": 20,
            "silent_at_declaration_ms": {"p50": percentile(&silences, 0.5), "p99": percentile(&silences, 0.99)},
            "switch_after_rule_applied_ms": {"p50": percentile(&detections, 0.5), "p99": percentile(&detections, 0.99)},
            "stall_down_ms": {"p50": percentile(&stalls_down, 0.5), "p99": percentile(&stalls_down, 0.99)},
            "stall_up_ms": {"p50": percentile(&stalls_up, 0.5), "p99": percentile(&stalls_up, 0.99)},
            "stall_worst_direction_ms": {"p50": percentile(&stall_worst, 0.5), "p99": percentile(&stall_worst, 0.99)},
            "survived": survived,
            "bytes_verified": verified,
            "streams_corrupted": corrupted,
            "soak_secs": soak,
            "false_switches": false_switches,
        })
    );
    Ok(())
}
