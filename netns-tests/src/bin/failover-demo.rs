//! The live demo: a client with tunnels to three datacenters at once, a verified TCP stream
//! running through it, and the datacenters failing one after another. One line per switch: what
//! failed, where traffic went, how long detection took, the longest stall the stream saw, and
//! whether every byte arrived intact.
//!
//! Run as root: `scripts/demo` (which builds everything first).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use netns_tests::scenario::*;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "failover-demo",
    version = netns_tests::VERSION,
    about = "The live failover demo (as root)"
)]
struct Cli {
    /// Wide-area distances between the client and the datacenters, through the lab's
    /// impairment relay: none, seed (15/15/35 ms RTT), wifi (10 ms, jitter, 1 % bursty loss)
    /// or intercontinental (40/90/150 ms) [default: FO_PROFILE, else none]
    #[arg(long, value_parser = parse_profile)]
    profile: Option<Profile>,
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    // a bad argument is a usage error: clap says which, exit 2
    let cli = Cli::parse();
    let profile = match cli.profile.map_or_else(Profile::from_env, Ok) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("demo: FO_PROFILE: {e}");
            return ExitCode::from(2);
        }
    };
    match run(profile) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(profile: Profile) -> std::io::Result<bool> {
    let bytes = stream_bytes().min(150_000_000);
    println!("== building the lab: client, wan, dc1..dc3 (failoverd gateways on one inside segment), server");
    if profile != Profile::None {
        println!(
            "   profile {}: dc1 {} ms, dc2 {} ms, dc3 {} ms RTT through the impairment relay ({})",
            profile.label(),
            profile.rtt(1).as_millis(),
            profile.rtt(2).as_millis(),
            profile.rtt(3).as_millis(),
            profile.spec(1)
        );
    }
    let fl = FailoverLab::with_profile("demo", 3, "", profile)?;
    println!("   client tunnels established to dc1, dc2, dc3; dc1 active and claiming {STABLE_V4} / {STABLE_V6}");
    let mut all_ok = true;
    for (round, (failing, next)) in [("dc1", "dc2"), ("dc2", "dc3")].into_iter().enumerate() {
        let i: usize = failing.trim_start_matches("dc").parse().unwrap_or(1);
        println!("== verified TCP stream, {bytes} B each way; blackholing {failing} mid-stream");
        let stream = spawn_stream(
            &fl.lab,
            &fl.topo.client,
            &format!("stream{round}"),
            bytes,
            round as u64 + 1,
        )?;
        fl.wait_flowing(20_000_000)?;
        let injected = unix_millis();
        blackhole(&fl.lab, fl.dc(i)?, Direction::Both)?;
        fl.wait_active(next, Duration::from_secs(5))?;
        let report = stream.finish()?;
        let switch = fl.switches()?.into_iter().rev().find(|s| s.to == next);
        let (at, reason, detection) = switch.map_or((0, String::new(), None), |s| {
            (s.unix_ms, s.reason, s.detection_ms)
        });
        println!(
            "   switch {failing} -> {next} ({reason}): {} ms after the fault (silent {:.0} ms when declared down); \
             longest stall: {:.0} ms to the client, {:.0} ms to the server",
            at.saturating_sub(injected),
            detection.unwrap_or(f64::NAN),
            report.down.longest_stall_ms,
            report.up.server_longest_stall_ms.unwrap_or(f64::NAN),
        );
        println!(
            "   stream: {} B verified up, {} B verified down, connection {}",
            report.up.verified_by_server,
            report.down.verified,
            if report.ok { "survived" } else { "FAILED" }
        );
        all_ok &=
            report.ok && report.down.verified == bytes && report.up.verified_by_server == bytes;
    }
    println!(
        "== active now: {}; {}",
        fl.active()?,
        if all_ok {
            "every byte verified"
        } else {
            "FAILED"
        }
    );
    Ok(all_ok)
}
