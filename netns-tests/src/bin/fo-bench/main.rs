//! `fo-bench`: the benchmark behind `scripts/bench` (DESIGN.md, "Figures that count").
//!
//! Everything it compares runs in one invocation, interleaved (A B C D, B C D A, ... never all
//! of A then all of B), because these 2-core machines are noisy and only ratios within one run
//! count. Nothing is measured in parallel with anything else.
//!
//! 0. Crypto ceiling: in-process, one thread, the cost of sealing and opening a 1,400-byte
//!    packet with the `tunnel` crate's sessions, and from it the 2-core ceiling of one flow.
//! 1. Data path: iperf3 TCP from the `client` namespace to the `server` namespace, 1 and 4
//!    flows, through plain veth routing (no tunnel), failoverd client → failoverd gateway,
//!    wireguard-go ↔ wireguard-go, boringtun-cli ↔ boringtun-cli and gotatun ↔ gotatun; the
//!    tunnel endpoints' CPU time (utime + stime from /proc/PID/stat) per Gbit; ping RTT; the
//!    out-of-order segments the receiver queued (TcpExtTCPOFOQueue); each throughput as a share
//!    of the crypto ceiling.
//! 2. Failover: injections at random phases of four kinds (blackhole of the active datacenter,
//!    one-way loss each way, gateway SIGKILL) under a verified TCP stream: detection, receiver
//!    stall both ways, survival, corruption. Beside it the baseline users script today: two
//!    wireguard-go tunnels and a ping watchdog that swaps routes (its best case: the server's
//!    return route is swapped at the same moment).
//! 3. Stability (`--long`): switches during a soak at 5 % random loss on the active path.
//! 4. Memory: the client's RSS with 3 idle tunnels and with 10 000 tracked flows.
//! 5. Guest path: a guest's TCP goodput through vmm-shim (stream and vhost-user front ends)
//!    against the same guest on QEMU's user networking.
//! 6. Profiles, when a data-path target is missed: callgrind on the failoverd client during a
//!    short iperf3 run; perf's cpu-clock sampling (and a note when the hardware instructions
//!    counter is not supported).
//!
//! Writes `OUT/latest.{json,md}` and dated copies `OUT/YYYY-MM-DDTHHMM.{json,md}`. A section
//! that fails is recorded in the results (`errors`) and the others still run; the exit status
//! is then 1. Run as root, after `cargo build --release --workspace --bins` (scripts/bench).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::builder::PossibleValuesParser;
use clap::{Parser, ValueEnum};
use netns_tests::guest::{self, Frontend, ShimLab};
use netns_tests::lab::{bin_path, is_root, wait_until, Daemon, Lab, Ns, Topology};
use netns_tests::measure::{cpu_seconds, percentile, rss_mib};
use netns_tests::scenario::*;
use serde_json::{json, Value};

mod baseline;
mod crypto;
mod datapath;
mod failover;
mod guest_path;
mod markdown;
mod memory;
mod profile;
mod routed;
mod wan;

use baseline::*;
use datapath::*;
use failover::*;
use markdown::*;

type Result<T> = io::Result<T>;

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The benchmark's clock: the one place it reads it.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// When the profiles run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProfileMode {
    /// when a data-path target is missed
    Auto,
    On,
    Off,
}

/// The sections `--skip` can leave out.
const SECTIONS: [&str; 9] = [
    "crypto", "datapath", "failover", "baseline", "routed", "wan", "memory", "guest", "profile",
];

/// The command line as clap reads it; [`Opts`] fills in the defaults, some of which depend on
/// `--quick`.
#[derive(Debug, Parser)]
#[command(
    name = "fo-bench",
    version = netns_tests::VERSION,
    about = "The benchmark behind scripts/bench: run as root, after a release build"
)]
struct Cli {
    /// Smoke run: 1 rep x 2 s, 1 injection per kind, 1 baseline injection, 1 short guest run
    /// each, no profiles
    #[arg(long)]
    quick: bool,
    /// Also the soak: --soak-secs at 5 % random loss on the active path
    #[arg(long)]
    long: bool,
    /// Data-path repetitions per implementation and flow count [default: 3; --quick 1]
    #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
    reps: Option<usize>,
    /// Seconds per iperf3 run [default: 10; --quick 2]
    #[arg(long, value_name = "S", value_parser = at_least_one::<u64>)]
    secs: Option<u64>,
    /// Failover injections per kind, 4 kinds [default: 20; --quick 1]
    #[arg(long, value_name = "N")]
    injections: Option<usize>,
    /// Watchdog-baseline injections in all, kinds in turn [default: 8; --quick 1]
    #[arg(long, value_name = "N")]
    baseline_injections: Option<usize>,
    /// Bytes each way of the verified stream under each injection [default: 40000000;
    /// --quick 10000000]
    #[arg(long, value_name = "B")]
    stream_bytes: Option<u64>,
    /// Crypto ceiling: packets sealed and opened per round, 5 rounds [default: 200000;
    /// --quick 50000, 3 rounds]
    #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
    crypto_packets: Option<usize>,
    /// Pings for the RTT, spread over the repetitions [default: 20; --quick 5]
    #[arg(long, value_name = "N")]
    pings: Option<usize>,
    /// Wide area: failover injections per kind and profile, 4 kinds, 3 profiles [default: 8;
    /// --quick 1]
    #[arg(long, value_name = "N")]
    wan_injections: Option<usize>,
    /// Wide area: watchdog-baseline injections per profile [default: 4; --quick 1]
    #[arg(long, value_name = "N")]
    wan_baseline_injections: Option<usize>,
    /// Wide area: seconds of verified streams without a fault per profile, for false switches
    /// [default: 120; --quick 10]
    #[arg(long, value_name = "S")]
    wan_soak_secs: Option<u64>,
    /// Guest runs per NIC backend [default: 3; --quick 1]
    #[arg(long, value_name = "N")]
    guest_runs: Option<usize>,
    /// Bytes the guest downloads per run [default: 200000000; --quick 10000000]
    #[arg(long, value_name = "B")]
    guest_bytes: Option<u64>,
    /// Seconds of the soak (with --long)
    #[arg(long, value_name = "S", default_value_t = 600)]
    soak_secs: u64,
    /// When callgrind and perf run [default: auto; --quick off]
    #[arg(long, value_enum)]
    profile: Option<ProfileMode>,
    /// The boringtun-cli binary (without it boringtun is left out)
    #[arg(long, value_name = "PATH")]
    boringtun: Option<PathBuf>,
    /// The gotatun binary of gotatun-cli (without it gotatun is left out)
    #[arg(long, value_name = "PATH")]
    gotatun: Option<PathBuf>,
    /// Sections to leave out, comma-separated; may be repeated
    #[arg(
        long,
        value_name = "SECTION,..",
        value_delimiter = ',',
        value_parser = PossibleValuesParser::new(SECTIONS),
    )]
    skip: Vec<String>,
    /// Where the results go
    #[arg(long, value_name = "DIR", default_value = "bench/results")]
    out: PathBuf,
}

/// A count that must not be zero (`--reps`, `--secs`).
fn at_least_one<T>(value: &str) -> std::result::Result<T, String>
where
    T: std::str::FromStr + Default + PartialEq,
{
    match value.parse::<T>() {
        Ok(n) if n != T::default() => Ok(n),
        _ => Err("give a whole number, at least 1".into()),
    }
}

/// The command line, defaults filled in.
#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    long: bool,
    reps: usize,
    secs: u64,
    injections: usize,
    baseline_injections: usize,
    stream_bytes: u64,
    crypto_packets: usize,
    crypto_rounds: usize,
    pings: usize,
    guest_runs: usize,
    guest_bytes: u64,
    soak_secs: u64,
    wan_injections: usize,
    wan_baseline_injections: usize,
    wan_soak_secs: u64,
    profile: ProfileMode,
    boringtun: Option<PathBuf>,
    gotatun: Option<PathBuf>,
    skip: Vec<String>,
    out: PathBuf,
    /// the arguments as given, for the results' record of the command
    argv: Vec<String>,
}

impl Opts {
    /// `args` without the program name; a usage error names the argument (clap).
    fn parse(args: &[String]) -> std::result::Result<Opts, clap::Error> {
        let cli = Cli::try_parse_from(
            std::iter::once("fo-bench").chain(args.iter().map(String::as_str)),
        )?;
        let quick = cli.quick;
        let pick =
            |given: Option<_>, full, smoke| given.unwrap_or(if quick { smoke } else { full });
        Ok(Opts {
            quick,
            long: cli.long,
            reps: cli.reps.unwrap_or(if quick { 1 } else { 3 }),
            secs: cli.secs.unwrap_or(if quick { 2 } else { 10 }),
            injections: pick(cli.injections, 20, 1),
            baseline_injections: pick(cli.baseline_injections, 8, 1),
            stream_bytes: cli
                .stream_bytes
                .unwrap_or(if quick { 10_000_000 } else { 40_000_000 }),
            crypto_packets: pick(cli.crypto_packets, 200_000, 50_000),
            crypto_rounds: if quick { 3 } else { 5 },
            pings: pick(cli.pings, 20, 5),
            guest_runs: pick(cli.guest_runs, 3, 1),
            guest_bytes: cli
                .guest_bytes
                .unwrap_or(if quick { 10_000_000 } else { 200_000_000 }),
            soak_secs: cli.soak_secs,
            wan_injections: pick(cli.wan_injections, 8, 1),
            wan_baseline_injections: pick(cli.wan_baseline_injections, 4, 1),
            wan_soak_secs: cli.wan_soak_secs.unwrap_or(if quick { 10 } else { 120 }),
            profile: cli.profile.unwrap_or(if quick {
                ProfileMode::Off
            } else {
                ProfileMode::Auto
            }),
            boringtun: cli.boringtun,
            gotatun: cli.gotatun,
            skip: cli.skip,
            out: cli.out,
            argv: args.to_vec(),
        })
    }

    fn runs(&self, section: &str) -> bool {
        !self.skip.iter().any(|s| s == section)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // usage errors: clap names the argument and exits 2; --help and --version exit 0
    let opts = Opts::parse(&args).unwrap_or_else(|e| e.exit());
    if !is_root() {
        eprintln!("fo-bench: the lab needs root (CAP_NET_ADMIN): run scripts/bench as root");
        return ExitCode::from(2);
    }
    let mut bench = Bench::new(opts);
    bench.run_all();
    match bench.write() {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
        }
        Err(e) => {
            eprintln!("fo-bench: writing the results: {e}");
            return ExitCode::FAILURE;
        }
    }
    if bench.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "fo-bench: {} section error(s), recorded in the results:",
            bench.errors.len()
        );
        for e in &bench.errors {
            eprintln!("  {e}");
        }
        ExitCode::FAILURE
    }
}

// ------------------------------------------------------------------------------ small tools

/// Median of `v` (NaN-free input expected); None when empty.
fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s.get(n / 2).copied()
    } else {
        Some((s.get(n / 2 - 1).copied()? + s.get(n / 2).copied()?) / 2.0)
    }
}

fn p50_p99(v: &[f64]) -> Value {
    json!({"p50": round(percentile(v, 0.5)), "p99": round(percentile(v, 0.99)), "n": v.iter().filter(|x| x.is_finite()).count()})
}

/// Rounds to 3 decimals for the results file (figures, not noise).
fn round(v: Option<f64>) -> Value {
    match v {
        Some(x) if x.is_finite() => json!((x * 1000.0).round() / 1000.0),
        _ => Value::Null,
    }
}

fn rounded(x: f64) -> Value {
    round(Some(x))
}

/// xorshift64: random phases without a dependency.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The first line a program prints for `args` (stdout, else stderr); "not found" if it cannot
/// run.
fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        Err(e) => format!("not available ({e})"),
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

// ------------------------------------------------------------------------------ the bench

/// Results gathered so far, the commands run and the errors.
struct Bench {
    opts: Opts,
    started: Instant,
    started_unix_ms: u64,
    /// the dated copies' name: when the run started, local time
    stamp: String,
    results: serde_json::Map<String, Value>,
    commands: Vec<String>,
    errors: Vec<String>,
    notes: Vec<String>,
}

impl Bench {
    fn new(opts: Opts) -> Self {
        Self {
            opts,
            started: now(),
            started_unix_ms: unix_millis(),
            stamp: first_line("date", &["+%Y-%m-%dT%H%M"]),
            results: serde_json::Map::new(),
            commands: Vec::new(),
            errors: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Records a command line (namespaces named by role) once.
    fn command(&mut self, c: impl Into<String>) {
        let c = c.into();
        if !self.commands.contains(&c) {
            self.commands.push(c);
        }
    }

    fn section<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Option<T> {
        if !self.opts.runs(name) {
            eprintln!("fo-bench: {name}: skipped (--skip)");
            return None;
        }
        eprintln!("fo-bench: {name} ...");
        let t = now();
        let r = f(self);
        let secs = t.elapsed().as_secs_f64();
        eprintln!("fo-bench: {name} done in {secs:.0} s");
        let times = self
            .results
            .entry("section_seconds")
            .or_insert_with(|| json!({}));
        if let Some(m) = times.as_object_mut() {
            m.insert(name.to_owned(), rounded(secs));
        }
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("fo-bench: {name} FAILED: {e}");
                self.errors.push(format!("{name}: {e}"));
                None
            }
        }
    }

    fn run_all(&mut self) {
        self.machine_and_versions();
        let mut references = vec![("wireguard-go", WgImpl::WireguardGo)];
        for (name, given, option, imp) in [
            (
                "boringtun",
                &self.opts.boringtun,
                "--boringtun",
                WgImpl::Boringtun as fn(PathBuf) -> WgImpl,
            ),
            ("gotatun", &self.opts.gotatun, "--gotatun", WgImpl::Gotatun),
        ] {
            match given.clone().filter(|p| p.is_file()) {
                Some(bin) => references.push((name, imp(bin))),
                None => self.notes.push(match given {
                    Some(p) => format!("{name} not found at {}: left out", p.display()),
                    None => format!("{name} not given ({option}): left out"),
                }),
            }
        }
        self.section("crypto", |b| b.crypto());
        let datapath = self.section("datapath", |b| b.datapath(&references));
        let profile_wanted = match self.opts.profile {
            ProfileMode::On => true,
            ProfileMode::Off => false,
            // the data-path targets decide
            ProfileMode::Auto => datapath.as_ref().is_none_or(|d| !d.targets_met),
        };
        if profile_wanted {
            self.section("profile", |b| b.profiles());
        } else {
            self.results.insert(
                "profiles".into(),
                json!({"ran": false, "why": match self.opts.profile {
                    ProfileMode::Off => "--profile off (or --quick)",
                    _ => "every data-path target was met",
                }}),
            );
        }
        self.section("failover", |b| b.failover());
        self.section("routed", |b| b.routed());
        self.section("wan", |b| b.wan());
        self.section("memory", |b| b.memory());
        self.section("guest", |b| b.guest());
        if !self.results.contains_key("false_switches") {
            self.results.insert("false_switches".into(), Value::Null);
        }
        self.targets();
    }

    // -------------------------------------------------------------------------- machine

    fn machine_and_versions(&mut self) {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0 / 1024.0);
        let perf = Command::new("perf")
            .args(["stat", "-e", "instructions", "true"])
            .stdin(Stdio::null())
            .output();
        let (perf_ok, perf_said) = match perf {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stderr).into_owned();
                let line = text
                    .lines()
                    .find(|l| l.contains("instructions"))
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                let ok = out.status.success()
                    && !line.is_empty()
                    && !line.contains("not supported")
                    && !line.contains("not counted");
                (ok, line)
            }
            Err(e) => (false, format!("perf not available: {e}")),
        };
        self.command("perf stat -e instructions true");
        self.results.insert(
            "machine".into(),
            json!({
                "cpu_model": cpu,
                "cores": cores,
                "kernel": kernel,
                "memory_gib": round(mem_gib),
                "perf_stat_instructions_supported": perf_ok,
                "perf_stat_instructions_said": perf_said,
            }),
        );
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let rev = first_line(
            "git",
            &[
                "-C",
                &repo.display().to_string(),
                "rev-parse",
                "--short=12",
                "HEAD",
            ],
        );
        let dirty = Command::new("git")
            .args(["-C", &repo.display().to_string(), "status", "--porcelain"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        let version = |bin: &Option<PathBuf>| {
            bin.as_ref().map_or_else(
                || "not given".to_owned(),
                |p| first_line(&p.display().to_string(), &["--version"]),
            )
        };
        let boringtun = version(&self.opts.boringtun);
        let gotatun = version(&self.opts.gotatun);
        self.results.insert(
            "versions".into(),
            json!({
                "rustc": first_line("rustc", &["--version"]),
                "failoverd_git_rev": if dirty { format!("{rev} (with uncommitted changes)") } else { rev },
                "wireguard-go": first_line("wireguard-go", &["--version"]),
                "boringtun-cli": boringtun,
                "gotatun-cli": gotatun,
                "iperf3": first_line("iperf3", &["--version"]),
                "qemu": first_line("qemu-system-x86_64", &["--version"]),
                "valgrind": first_line("valgrind", &["--version"]),
                "perf": first_line("perf", &["--version"]),
            }),
        );
    }

    // -------------------------------------------------------------------------- targets

    fn targets(&mut self) {
        let get = |path: &[&str]| -> Option<f64> {
            let mut v = self.results.get(*path.first()?)?;
            for p in path.iter().skip(1) {
                v = v.get(*p)?;
            }
            v.as_f64()
        };
        let tp = get(&["ratios", "failoverd_flows1_to_best_reference"]);
        let cpu = get(&["ratios", "failoverd_cpu_per_gbps_to_best_reference"]);
        let detect = get(&["failover", "detect_ms", "p99"]);
        let stall = get(&["failover", "stall_ms", "p99"]);
        let fs = get(&["false_switches"]);
        let rss = get(&["rss_mib", "flows_10k"]);
        let t = |target: &str, measured: Option<f64>, met: Option<bool>| json!({"target": target, "measured": round(measured), "met": met});
        let targets = json!({
            "throughput_flows1_vs_best_reference": t(">= 3x", tp, tp.map(|v| v >= 3.0)),
            "cpu_per_gbps_vs_best_reference": t("<= 1/3 (0.333x)", cpu, cpu.map(|v| v <= 1.0 / 3.0)),
            "detect_p99_ms": t("<= 100 ms at a 20 ms probe interval", detect, detect.map(|v| v <= 100.0)),
            "stall_p99_ms": t("<= 200 ms (worst direction)", stall, stall.map(|v| v <= 200.0)),
            "false_switches": t("0 in 10 minutes at 5 % loss (--long)", fs, fs.map(|v| v == 0.0)),
            "rss_mib_flows_10k": t("<= 20 MiB", rss, rss.map(|v| v <= 20.0)),
        });
        self.results.insert("targets".into(), targets);
    }

    // -------------------------------------------------------------------------- output

    fn write(&mut self) -> Result<Vec<PathBuf>> {
        let elapsed = self.started.elapsed().as_secs_f64();
        let stamp = self.stamp.clone();
        let started = first_line(
            "date",
            &[
                "-u",
                "+%Y-%m-%dT%H:%M:%SZ",
                "-d",
                &format!("@{}", self.started_unix_ms / 1000),
            ],
        );
        self.results.insert("started_utc".into(), json!(started));
        self.results.insert("elapsed_s".into(), rounded(elapsed));
        self.results.insert(
            "options".into(),
            json!({
                "quick": self.opts.quick, "long": self.opts.long, "reps": self.opts.reps,
                "secs": self.opts.secs, "injections_per_kind": self.opts.injections,
                "baseline_injections": self.opts.baseline_injections,
                "stream_bytes": self.opts.stream_bytes,
                "crypto_packets": self.opts.crypto_packets, "crypto_rounds": self.opts.crypto_rounds,
                "guest_runs": self.opts.guest_runs,
                "guest_bytes": self.opts.guest_bytes,
                "wan_injections_per_kind": self.opts.wan_injections,
                "wan_baseline_injections": self.opts.wan_baseline_injections,
                "wan_soak_secs": self.opts.wan_soak_secs, "soak_secs": if self.opts.long { json!(self.opts.soak_secs) } else { Value::Null },
            }),
        );
        let mut commands = vec![format!(
            "scripts/bench {}",
            self.opts
                .argv
                .iter()
                .filter(|a| {
                    !a.starts_with("--boringtun")
                        && !a.starts_with("--gotatun")
                        && !a.contains("bench-tools")
                })
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        )
        .trim()
        .to_owned()];
        commands.extend(self.commands.iter().cloned());
        self.results.insert("commands".into(), json!(commands));
        self.results.insert("notes".into(), json!(self.notes));
        self.results.insert("errors".into(), json!(self.errors));
        let value = Value::Object(self.results.clone());
        let json_text = serde_json::to_string_pretty(&value).map_err(io::Error::other)? + "\n";
        let md = markdown(&value);
        std::fs::create_dir_all(&self.opts.out)?;
        let mut written = Vec::new();
        for (name, text) in [
            ("latest.json".to_owned(), &json_text),
            ("latest.md".to_owned(), &md),
            (format!("{stamp}.json"), &json_text),
            (format!("{stamp}.md"), &md),
        ] {
            let path = self.opts.out.join(&name);
            let tmp = self.opts.out.join(format!("{name}.tmp"));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::profile::{parse_callgrind, parse_perf_report};

    #[test]
    fn quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), Some(20.0));
        assert_eq!(percentile(&v, 0.5), Some(11.0));
    }

    #[test]
    fn callgrind_annotate_output_is_parsed() {
        let text =
            "--------------------------------------------------------------------------------\n\
Ir                     \n\
--------------------------------------------------------------------------------\n\
1,000,000 (100.0%)  PROGRAM TOTALS\n\
\n\
--------------------------------------------------------------------------------\n\
Ir                    file:function\n\
--------------------------------------------------------------------------------\n\
600,000 (60.00%)  ???:chacha20_poly1305_seal [/usr/bin/failoverd]\n\
400,000 (40.00%)  ./string/memcpy.S:memcpy [/usr/lib/libc.so.6]\n\
\n";
        let (total, top) = parse_callgrind(text, 15);
        assert_eq!(total, 1_000_000);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["ir"], 600_000);
        assert_eq!(top[0]["function"], "chacha20_poly1305_seal");
        assert_eq!(top[0]["object"], "failoverd");
        assert_eq!(top[1]["file"], "./string/memcpy.S");
    }

    #[test]
    fn perf_report_output_is_parsed() {
        let text = "# Overhead  Command  Shared Object  Symbol\n#\n    33.33%  failoverd  [kernel.kallsyms]  [k] copy_user_generic - -\n     5.00%  failoverd  failoverd  [.] poly1305_blocks\n";
        let v = parse_perf_report(text, 15);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0]["symbol"], "[k] copy_user_generic");
        assert_eq!(v[1]["percent"], 5.0);
    }

    #[test]
    fn options() {
        let parse =
            |args: &[&str]| Opts::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        let o = parse(&["--quick", "--reps", "2"]).unwrap();
        assert!(o.quick);
        assert_eq!((o.reps, o.secs), (2, 2));
        assert_eq!(o.profile, ProfileMode::Off);
        let o = parse(&[
            "--skip",
            "guest,memory",
            "--skip",
            "profile",
            "--profile",
            "on",
        ])
        .unwrap();
        assert_eq!((o.reps, o.secs, o.injections), (3, 10, 20));
        assert_eq!(o.skip, ["guest", "memory", "profile"]);
        assert!(!o.runs("guest") && o.runs("datapath"));
        assert_eq!(o.profile, ProfileMode::On);
        assert_eq!(o.out, PathBuf::from("bench/results"));
        for bad in [
            &["--bogus"][..],
            &["--reps", "0"],
            &["--skip", "gust"],
            &["--profile", "x"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        Cli::command().debug_assert();
    }
}
