//! Failover figures in the namespace lab, with the real binaries: detection and receiver stall
//! over many injections at random phases, and false switches during a soak with random loss on
//! the active path. Prints one JSON line per injection and a JSON summary; `scripts/bench` will
//! collect these into its results file.
//!
//! ```text
//! failover-bench [--injections N (20)] [--soak-secs S (0)] [--bytes B (60000000)]
//!                [--recovery on|off|both (both)]
//! ```
//! With `both`, two labs run side by side — switch-over recovery on in one, off in the other —
//! and injections alternate between them, so both see the same machine at the same time.
//! Run as root after `cargo build --release --workspace`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use netns_tests::lab::wait_until;
use netns_tests::measure::percentile;
use netns_tests::scenario::*;

/// Which labs run: switch-over recovery on, off, or both side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Recovery {
    On,
    Off,
    Both,
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "failover-bench",
    version = netns_tests::VERSION,
    about = "Failover figures in the namespace lab (as root, after a release build)"
)]
struct Opts {
    /// Injections of a blackholed active datacenter
    #[arg(long, value_name = "N", default_value_t = 20)]
    injections: u64,
    /// Seconds of soak at random loss on the active path (0: none)
    #[arg(long = "soak-secs", value_name = "S", default_value_t = 0)]
    soak: u64,
    /// Bytes each way of the verified stream per injection
    #[arg(long, value_name = "B", default_value_t = 60_000_000)]
    bytes: u64,
    /// Switch-over recovery in the lab: on, off, or both (two labs side by side)
    #[arg(long, value_enum, default_value_t = Recovery::Both)]
    recovery: Recovery,
}

fn main() -> ExitCode {
    // usage errors: clap names the argument and exits 2
    let opts = Opts::parse();
    match run(&opts) {
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

/// One lab and what was measured in it.
struct Run {
    mode: &'static str,
    fl: FailoverLab,
    detections: Vec<f64>,
    silences: Vec<f64>,
    stalls_down: Vec<f64>,
    stalls_up: Vec<f64>,
    survived: u64,
    verified: u64,
    corrupted: u64,
    recovery_packets: u64,
}

fn recovery_packets(fl: &FailoverLab) -> u64 {
    fl.client
        .status()
        .ok()
        .and_then(|s| {
            let k = s.get("sessionkeeper")?;
            Some(k.get("recovery_segments")?.as_u64()? + k.get("recovery_acks")?.as_u64()?)
        })
        .unwrap_or(0)
}

fn inject(run: &mut Run, n: u64, bytes: u64, rng: &mut u64) -> std::io::Result<()> {
    let fl = &run.fl;
    let active = fl.active()?;
    let (from_i, to) = if active == "dc1" {
        (1, "dc2")
    } else {
        (2, "dc1")
    };
    let stream = spawn_stream(&fl.lab, &fl.topo.client, &format!("bench{n}"), bytes, n + 1)?;
    fl.wait_flowing(10_000_000)?;
    // a random phase against the 20 ms probe cadence
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    std::thread::sleep(Duration::from_micros(*rng % 40_000));
    let injected = unix_millis();
    blackhole(&fl.lab, fl.dc(from_i)?, Direction::Both)?;
    let applied = unix_millis();
    fl.wait_active(to, Duration::from_secs(10))?;
    let report = stream.finish()?;
    // by time, not by position: the client keeps only its last 64 switches
    let sw = fl.switches()?.into_iter().find(|s| s.unix_ms >= injected);
    let silent = sw.as_ref().and_then(|s| s.detection_ms).unwrap_or(f64::NAN);
    let after_fault = sw
        .as_ref()
        .map_or(f64::NAN, |s| s.unix_ms.saturating_sub(applied) as f64);
    let ok = report.ok && report.down.verified == bytes && report.up.verified_by_server == bytes;
    run.survived += u64::from(ok);
    run.verified += report.down.verified + report.up.verified_by_server;
    run.corrupted += u64::from(report.down.corrupt_at.is_some() || report.up.corrupt_at.is_some());
    let down = report.down.longest_stall_ms;
    let up = report.up.server_longest_stall_ms.unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::json!({"injection": n, "recovery": run.mode, "from": active, "to": to,
            "silent_ms": silent, "switch_after_rule_applied_ms": after_fault,
            "nft_apply_ms": applied - injected, "stall_down_ms": down, "stall_up_ms": up,
            "survived": ok})
    );
    run.silences.push(silent);
    run.detections.push(after_fault);
    run.stalls_down.push(down);
    run.stalls_up.push(up);
    heal(&fl.lab, fl.dc(from_i)?)?;
    // Alive again is enough: after several failures in a row damping keeps it recovering
    // (suppressed) for a while, and the selector still uses it when nothing better exists.
    wait_until(
        Duration::from_secs(15),
        "the healed datacenter to be alive again",
        || matches!(health(fl, &active).as_str(), "up" | "recovering"),
    )
}

fn soak_run(fl: &FailoverLab, soak: u64) -> std::io::Result<usize> {
    let active = fl.active()?;
    let i = if active == "dc1" { 1 } else { 2 };
    let started = unix_millis();
    fl.lab.nft(
        fl.dc(i)?,
        &format!(
            "table inet fo_fault {{\n chain in {{ type filter hook input priority 0; udp dport {WG_PORT} numgen random mod 100 < 5 drop; }}\n chain out {{ type filter hook output priority 0; udp sport {WG_PORT} numgen random mod 100 < 5 drop; }}\n}}\n"
        ),
    )?;
    std::thread::sleep(Duration::from_secs(soak));
    heal(&fl.lab, fl.dc(i)?)?;
    let during: Vec<_> = fl
        .switches()?
        .into_iter()
        .filter(|s| s.unix_ms >= started)
        .collect();
    for sw in &during {
        eprintln!("soak switch: {sw:?}");
    }
    Ok(during.len())
}

fn summary(run: &mut Run, soak: u64, false_switches: Option<usize>) -> serde_json::Value {
    for v in [
        &mut run.silences,
        &mut run.detections,
        &mut run.stalls_down,
        &mut run.stalls_up,
    ] {
        v.sort_by(f64::total_cmp);
    }
    let mut worst: Vec<f64> = run
        .stalls_down
        .iter()
        .zip(&run.stalls_up)
        .map(|(a, b)| a.max(*b))
        .collect();
    worst.sort_by(f64::total_cmp);
    let p = |v: &[f64]| serde_json::json!({"p50": percentile(v, 0.5), "p99": percentile(v, 0.99)});
    serde_json::json!({
        "summary": true,
        "recovery": run.mode,
        "injections": run.detections.len(),
        "probe_interval_ms": 20,
        "silent_at_declaration_ms": p(&run.silences),
        "switch_after_rule_applied_ms": p(&run.detections),
        "stall_down_ms": p(&run.stalls_down),
        "stall_up_ms": p(&run.stalls_up),
        "stall_worst_direction_ms": p(&worst),
        "survived": run.survived,
        "bytes_verified": run.verified,
        "streams_corrupted": run.corrupted,
        "recovery_packets_sent": recovery_packets(&run.fl).saturating_sub(run.recovery_packets),
        "soak_secs": soak,
        "false_switches": false_switches,
    })
}

fn run(opts: &Opts) -> std::io::Result<()> {
    let (injections, soak, bytes) = (opts.injections, opts.soak, opts.bytes);
    let modes: &[&'static str] = match opts.recovery {
        Recovery::On => &["on"],
        Recovery::Off => &["off"],
        Recovery::Both => &["on", "off"],
    };
    let mut runs = Vec::new();
    for mode in modes {
        // no failback: each injection moves traffic from the active datacenter to the other one
        let cfg = format!("failback = false\nswitch_recovery = {}\n", *mode == "on");
        let fl = FailoverLab::new(&format!("bench{mode}"), 2, &cfg)?;
        let recovery_packets = recovery_packets(&fl);
        runs.push(Run {
            mode,
            fl,
            detections: vec![],
            silences: vec![],
            stalls_down: vec![],
            stalls_up: vec![],
            survived: 0,
            verified: 0,
            corrupted: 0,
            recovery_packets,
        });
    }
    let mut rng = unix_millis() | 1;
    for n in 0..injections {
        for run in &mut runs {
            inject(run, n, bytes, &mut rng)?;
        }
    }
    // the soak runs in the first lab (recovery on when it runs)
    let mut false_switches = None;
    if let (true, Some(first)) = (soak > 0, runs.first()) {
        false_switches = Some(soak_run(&first.fl, soak)?);
    }
    for (i, run) in runs.iter_mut().enumerate() {
        let fs = if i == 0 { false_switches } else { None };
        println!("{}", summary(run, soak, fs));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn options() {
        Opts::command().debug_assert();
        let o = Opts::try_parse_from(["failover-bench"]).unwrap();
        assert_eq!((o.injections, o.soak, o.bytes), (20, 0, 60_000_000));
        assert_eq!(o.recovery, Recovery::Both);
        let o = Opts::try_parse_from(["failover-bench", "--recovery", "off", "--soak-secs", "5"])
            .unwrap();
        assert_eq!((o.recovery, o.soak), (Recovery::Off, 5));
        assert!(Opts::try_parse_from(["failover-bench", "--recovery", "maybe"]).is_err());
        assert!(Opts::try_parse_from(["failover-bench", "--bogus"]).is_err());
    }
}
