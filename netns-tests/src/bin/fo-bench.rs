//! `fo-bench`: the benchmark behind `scripts/bench` (DESIGN.md, "Figures that count").
//!
//! Everything it compares runs in one invocation, interleaved (A B C D, B C D A, ... never all
//! of A then all of B), because these 2-core machines are noisy and only ratios within one run
//! count. Nothing is measured in parallel with anything else.
//!
//! 1. Data path: iperf3 TCP from the `client` namespace to the `server` namespace, 1 and 4
//!    flows, through plain veth routing (no tunnel), failoverd client → failoverd gateway,
//!    wireguard-go ↔ wireguard-go and boringtun-cli ↔ boringtun-cli; the tunnel endpoints'
//!    CPU time (utime + stime from /proc/PID/stat) per Gbit; ping RTT.
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
const SECTIONS: [&str; 6] = [
    "datapath", "failover", "baseline", "memory", "guest", "profile",
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
    /// Pings for the RTT, spread over the repetitions [default: 20; --quick 5]
    #[arg(long, value_name = "N")]
    pings: Option<usize>,
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
    pings: usize,
    guest_runs: usize,
    guest_bytes: u64,
    soak_secs: u64,
    profile: ProfileMode,
    boringtun: Option<PathBuf>,
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
            pings: pick(cli.pings, 20, 5),
            guest_runs: pick(cli.guest_runs, 3, 1),
            guest_bytes: cli
                .guest_bytes
                .unwrap_or(if quick { 10_000_000 } else { 200_000_000 }),
            soak_secs: cli.soak_secs,
            profile: cli.profile.unwrap_or(if quick {
                ProfileMode::Off
            } else {
                ProfileMode::Auto
            }),
            boringtun: cli.boringtun,
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
        let boringtun = self.opts.boringtun.clone().filter(|p| p.is_file());
        if boringtun.is_none() {
            self.notes.push(match &self.opts.boringtun {
                Some(p) => format!("boringtun-cli not found at {}: left out", p.display()),
                None => "boringtun-cli not given (--boringtun): left out".into(),
            });
        }
        let datapath = self.section("datapath", |b| b.datapath(boringtun.as_deref()));
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
        let boringtun = self.opts.boringtun.as_ref().map_or_else(
            || "not given".to_owned(),
            |p| first_line(&p.display().to_string(), &["--version"]),
        );
        self.results.insert(
            "versions".into(),
            json!({
                "rustc": first_line("rustc", &["--version"]),
                "failoverd_git_rev": if dirty { format!("{rev} (with uncommitted changes)") } else { rev },
                "wireguard-go": first_line("wireguard-go", &["--version"]),
                "boringtun-cli": boringtun,
                "iperf3": first_line("iperf3", &["--version"]),
                "qemu": first_line("qemu-system-x86_64", &["--version"]),
                "valgrind": first_line("valgrind", &["--version"]),
                "perf": first_line("perf", &["--version"]),
            }),
        );
    }

    // -------------------------------------------------------------------------- data path

    fn datapath(&mut self, boringtun: Option<&Path>) -> Result<DatapathSummary> {
        let mut paths = vec![
            PathUnderTest::veth()?,
            PathUnderTest::failoverd()?,
            PathUnderTest::userspace_wg("wireguard-go", &WgImpl::WireguardGo)?,
        ];
        if let Some(bin) = boringtun {
            paths.push(PathUnderTest::userspace_wg(
                "boringtun",
                &WgImpl::Boringtun(bin.to_path_buf()),
            )?);
        }
        for p in &paths {
            for c in &p.commands {
                self.command(c.clone());
            }
        }
        let secs = self.opts.secs;
        let reps = self.opts.reps;
        let n = paths.len();
        let pings_per_rep = self.opts.pings.div_ceil(reps);
        self.command(format!(
            "ip netns exec <client> iperf3 -c {} -p {IPERF_PORT} -t {secs} -P 1|4 -J",
            Topology::SERVER_IP4
        ));
        self.command(format!(
            "ip netns exec <client> ping -n -c {pings_per_rep} -i 0.2 -W 2 {}",
            Topology::SERVER_IP4
        ));
        let mut runs: BTreeMap<(&'static str, u32), Vec<IperfRun>> = BTreeMap::new();
        let mut rtts: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for rep in 0..reps {
            for flows in [1u32, 4] {
                for k in 0..n {
                    // rotate the order every repetition: no implementation always goes first
                    let Some(p) = paths.get((k + rep) % n) else {
                        continue;
                    };
                    match p.iperf(flows, secs) {
                        Ok(r) => {
                            eprintln!(
                                "  rep {rep} {:>12} P{flows}: {:.3} Gbit/s, cpu {:?} s",
                                p.name, r.gbps, r.cpu_s
                            );
                            runs.entry((p.name, flows)).or_default().push(r);
                        }
                        Err(e) => {
                            self.errors
                                .push(format!("datapath: {} iperf3 -P {flows}: {e}", p.name));
                        }
                    }
                }
            }
            for k in 0..n {
                let Some(p) = paths.get((k + rep) % n) else {
                    continue;
                };
                match p.ping(pings_per_rep) {
                    Ok(v) => rtts.entry(p.name).or_default().extend(v),
                    Err(e) => self.errors.push(format!("datapath: {} ping: {e}", p.name)),
                }
            }
        }
        let mut throughput = serde_json::Map::new();
        let mut cpu = serde_json::Map::new();
        let mut cpu4 = serde_json::Map::new();
        let mut ping = serde_json::Map::new();
        let mut retrans = serde_json::Map::new();
        let mut medians: BTreeMap<&str, PathMedians> = BTreeMap::new();
        for p in &paths {
            let get = |flows: u32| runs.get(&(p.name, flows)).cloned().unwrap_or_default();
            let r1 = get(1);
            let r4 = get(4);
            let g = |v: &[IperfRun]| v.iter().map(|r| r.gbps).collect::<Vec<f64>>();
            let c = |v: &[IperfRun]| {
                v.iter()
                    .filter_map(|r| r.cpu_per_gbit)
                    .collect::<Vec<f64>>()
            };
            let m1 = median(&g(&r1));
            let m4 = median(&g(&r4));
            let c1 = median(&c(&r1));
            medians.insert(p.name, (m1, m4, c1));
            throughput.insert(
                p.name.into(),
                json!({
                    "flows1": round(m1),
                    "flows4": round(m4),
                    "runs_flows1": g(&r1).into_iter().map(rounded).collect::<Vec<_>>(),
                    "runs_flows4": g(&r4).into_iter().map(rounded).collect::<Vec<_>>(),
                }),
            );
            cpu.insert(p.name.into(), round(c1));
            cpu4.insert(p.name.into(), round(median(&c(&r4))));
            retrans.insert(
                p.name.into(),
                json!({
                    "flows1": r1.iter().map(|r| r.retransmits).collect::<Vec<_>>(),
                    "flows4": r4.iter().map(|r| r.retransmits).collect::<Vec<_>>(),
                }),
            );
            ping.insert(
                p.name.into(),
                round(rtts.get(p.name).and_then(|v| median(v))),
            );
        }
        // the best reference: the better of wireguard-go and boringtun
        let refs = ["wireguard-go", "boringtun"];
        let best_tp = refs
            .iter()
            .filter_map(|r| Some((*r, medians.get(r)?.0?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let best_tp4 = refs
            .iter()
            .filter_map(|r| Some((*r, medians.get(r)?.1?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let best_cpu = refs
            .iter()
            .filter_map(|r| Some((*r, medians.get(r)?.2?)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let ours = medians
            .get("failoverd")
            .copied()
            .unwrap_or((None, None, None));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let tp_ratio = ratio(ours.0, best_tp.map(|b| b.1));
        let tp4_ratio = ratio(ours.1, best_tp4.map(|b| b.1));
        let cpu_ratio = ratio(ours.2, best_cpu.map(|b| b.1));
        let veth_share = ratio(ours.0, medians.get("veth").and_then(|m| m.0));
        self.results
            .insert("throughput_gbps".into(), Value::Object(throughput));
        self.results
            .insert("cpu_per_gbps".into(), Value::Object(cpu));
        self.results
            .insert("cpu_per_gbps_flows4".into(), Value::Object(cpu4));
        self.results
            .insert("ping_rtt_ms".into(), Value::Object(ping));
        self.results
            .insert("tcp_retransmits".into(), Value::Object(retrans));
        self.results.insert(
            "ratios".into(),
            json!({
                "best_reference_flows1": best_tp.map(|b| b.0),
                "best_reference_flows4": best_tp4.map(|b| b.0),
                "best_reference_cpu": best_cpu.map(|b| b.0),
                "failoverd_flows1_to_best_reference": round(tp_ratio),
                "failoverd_flows4_to_best_reference": round(tp4_ratio),
                "failoverd_cpu_per_gbps_to_best_reference": round(cpu_ratio),
                "failoverd_flows1_to_veth": round(veth_share),
            }),
        );
        self.results.insert(
            "datapath_settings".into(),
            json!({"reps": reps, "secs": secs, "pings": pings_per_rep * reps,
                   "cpu_unit": "CPU-seconds of both tunnel endpoint processes per Gbit carried (= cores per Gbit/s)",
                   "order": "interleaved: every repetition runs each implementation once per flow count, rotating which goes first"}),
        );
        let targets_met =
            tp_ratio.is_some_and(|r| r >= 3.0) && cpu_ratio.is_some_and(|r| r <= 1.0 / 3.0);
        Ok(DatapathSummary { targets_met })
    }

    // -------------------------------------------------------------------------- profiles

    fn profiles(&mut self) -> Result<()> {
        let mut out = serde_json::Map::new();
        let secs = self.opts.secs.clamp(2, 5);
        let runs = |p: &str| {
            Command::new(p)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !runs("valgrind") {
            out.insert(
                "callgrind".into(),
                json!({"error": "valgrind is not installed (scripts/setup installs it)"}),
            );
            self.notes
                .push("valgrind is not installed: no callgrind profile".into());
        } else {
            match self.callgrind(secs) {
                Ok(v) => {
                    out.insert("callgrind".into(), v);
                }
                Err(e) => {
                    self.errors.push(format!("profile: callgrind: {e}"));
                    out.insert("callgrind".into(), json!({"error": e.to_string()}));
                }
            }
        }
        if !runs("perf") {
            out.insert(
                "perf_record".into(),
                json!({"error": "perf is not installed (Debian's linux-perf)"}),
            );
            self.notes
                .push("perf is not installed: no perf profile".into());
            out.insert("ran".into(), json!(true));
            self.results.insert("profiles".into(), Value::Object(out));
            return Ok(());
        }
        let perf_ok = self
            .results
            .get("machine")
            .and_then(|m| m.get("perf_stat_instructions_supported"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        out.insert(
            "perf_record_instructions".into(),
            if perf_ok {
                json!("supported: see perf_record")
            } else {
                json!("not supported on this machine: `perf stat -e instructions true` says <not supported> (no hardware PMU in this VM); the cpu-clock profile below samples on a software timer instead")
            },
        );
        match self.perf_cpu_clock(secs, perf_ok) {
            Ok(v) => {
                out.insert("perf_record".into(), v);
            }
            Err(e) => {
                self.errors.push(format!("profile: perf record: {e}"));
                out.insert("perf_record".into(), json!({"error": e.to_string()}));
            }
        }
        out.insert("ran".into(), json!(true));
        self.results.insert("profiles".into(), Value::Object(out));
        Ok(())
    }

    /// callgrind on the failoverd client (1 datacenter) during a short single-flow iperf3 run.
    fn callgrind(&mut self, secs: u64) -> Result<Value> {
        let dir = std::env::temp_dir().join(format!("fo-bench-callgrind-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("callgrind.out");
        let _ = std::fs::remove_file(&file);
        let prefix: Vec<String> = vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", file.display()),
        ];
        self.command(format!(
            "ip netns exec <client> valgrind --tool=callgrind --callgrind-out-file=FILE failoverd --config client.toml; iperf3 -c {} -p {IPERF_PORT} -t {secs} -J; kill -TERM; callgrind_annotate --inclusive=no FILE",
            Topology::SERVER_IP4
        ));
        let fl = FailoverLab::with_options(
            "bench-cg",
            &LabOptions {
                datacenters: 1,
                client_prefix: prefix,
                ..LabOptions::default()
            },
        )?;
        let iperf = start_iperf_server(&fl.lab, &fl.topo.server)?;
        let run = iperf_run(&fl.lab, &fl.topo.client, 1, secs, &[]);
        fl.client.daemon.signal(libc::SIGTERM)?;
        let exited = fl.client.daemon.wait_exit(Duration::from_secs(120));
        drop(iperf);
        let run = run?;
        if exited.is_none() {
            return Err(other(
                "the client under callgrind did not exit within 120 s of SIGTERM",
            ));
        }
        drop(fl);
        let out = Command::new("callgrind_annotate")
            .args(["--inclusive=no"])
            .arg(&file)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let _ = std::fs::remove_dir_all(&dir);
        let (total, top) = parse_callgrind(&text, 15);
        if top.is_empty() {
            return Err(other(format!(
                "callgrind_annotate gave no functions: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(json!({
            "iperf3_gbps_under_valgrind": rounded(run.gbps),
            "iperf3_bytes": run.bytes,
            "total_ir": total,
            "ir_per_byte": if run.bytes > 0 { rounded(total as f64 / run.bytes as f64) } else { Value::Null },
            "top15_self_ir": top,
        }))
    }

    /// perf record -e cpu-clock (software sampling) on both failoverd processes during a
    /// single-flow iperf3 run.
    fn perf_cpu_clock(&mut self, secs: u64, instructions: bool) -> Result<Value> {
        let fl = FailoverLab::new("bench-perf", 1, "")?;
        let _iperf = start_iperf_server(&fl.lab, &fl.topo.server)?;
        let data = std::env::temp_dir().join(format!("fo-bench-perf-{}.data", std::process::id()));
        let event = if instructions {
            "instructions"
        } else {
            "cpu-clock"
        };
        let pids = format!(
            "{},{}",
            fl.client.daemon.pid(),
            fl.gateways
                .first()
                .map(|g| g.daemon.pid())
                .unwrap_or_default()
        );
        self.command(format!(
            "perf record -e {event} -F 2000 -p <failoverd client>,<failoverd gateway> -- sleep {secs} (during iperf3 -t {secs}); perf report --stdio --no-children --sort comm,dso,symbol"
        ));
        let mut perf = Command::new("perf")
            .args(["record", "-e", event, "-F", "2000", "-p", &pids, "-o"])
            .arg(&data)
            .args(["--", "sleep", &(secs + 1).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        sleep_ms(300);
        let run = iperf_run(&fl.lab, &fl.topo.client, 1, secs, &[]);
        let status = perf.wait()?;
        let run = run?;
        if !status.success() {
            return Err(other(format!("perf record exited {status}")));
        }
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "comm,dso,symbol",
                "-i",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .output()?;
        let _ = std::fs::remove_file(&data);
        let text = String::from_utf8_lossy(&report.stdout).into_owned();
        let top = parse_perf_report(&text, 15);
        let kernel_share: f64 = parse_perf_report(&text, usize::MAX)
            .iter()
            .filter(|e| {
                e.get("symbol")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.starts_with("[k]"))
            })
            .filter_map(|e| e.get("percent").and_then(Value::as_f64))
            .sum();
        Ok(json!({
            "event": event,
            "iperf3_gbps_while_sampled": rounded(run.gbps),
            "kernel_share_percent": rounded(kernel_share),
            "top15": top,
        }))
    }

    // -------------------------------------------------------------------------- failover

    fn failover(&mut self) -> Result<()> {
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
            match Baseline::build() {
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

    // -------------------------------------------------------------------------- memory

    fn memory(&mut self) -> Result<()> {
        let fl = FailoverLab::new("bench-mem", 3, "")?;
        let pid = fl.client.daemon.pid();
        // idle: tunnels established, probes running, no traffic
        std::thread::sleep(Duration::from_secs(3));
        let idle = rss_mib(pid)?;
        let before = keeper(&fl.client, "flows");
        const FLOWS: u32 = 10_000;
        self.command(format!(
            "raw UDP socket in <client>: {FLOWS} datagrams 100.96.0.2:40000 -> {}:20000..{} (one flow each); status sessionkeeper.flows; VmRSS from /proc/<failoverd client>/status",
            Topology::SERVER_IP4,
            20_000 + FLOWS - 1
        ));
        let mut sends = 0;
        let target = before + u64::from(FLOWS);
        while keeper(&fl.client, "flows") < target && sends < 5 {
            sends += 1;
            let burst = (100u32 >> (sends - 1)).max(4);
            fl.lab.run_in(&fl.topo.client, || -> Result<()> {
                use socket2::{Domain, Protocol, Socket, Type};
                let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))?;
                let to: SocketAddr = SocketAddr::new(Topology::SERVER_IP4.into(), 0);
                let to = to.into();
                let mut d = [0u8; 8 + 16];
                if let Some(h) = d.get_mut(0..2) {
                    h.copy_from_slice(&40_000u16.to_be_bytes());
                }
                if let Some(h) = d.get_mut(4..6) {
                    h.copy_from_slice(&24u16.to_be_bytes());
                }
                for i in 0..FLOWS {
                    if let Some(h) = d.get_mut(2..4) {
                        h.copy_from_slice(&(20_000 + i as u16).to_be_bytes());
                    }
                    let _ = s.send_to(&d, &to);
                    // The TUN queue drops what the daemon has not read yet, at the same places
                    // in every round if the pace stays the same: each round goes slower.
                    if i % burst == 0 {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
                Ok(())
            })??;
            let _ = wait_until(Duration::from_secs(3), "the flows to be tracked", || {
                keeper(&fl.client, "flows") >= target
            });
        }
        let flows = keeper(&fl.client, "flows");
        let with_flows = rss_mib(pid)?;
        let k = fl
            .client
            .status()?
            .get("sessionkeeper")
            .cloned()
            .unwrap_or(Value::Null);
        self.results.insert(
            "rss_mib".into(),
            json!({
                "idle_3_tunnels": rounded(idle),
                "flows_10k": rounded(with_flows),
                "flows_tracked": flows,
                "flows_before": before,
                "flows_reached_10k": flows >= target,
                "flow_memory_bytes": k.get("flow_memory_bytes"),
                "flow_table_size": k.get("flow_table_size"),
                "send_rounds": sends,
            }),
        );
        if flows < target {
            return Err(other(format!(
                "the flow table reached {flows} flows, not {target}: {k}"
            )));
        }
        Ok(())
    }

    // -------------------------------------------------------------------------- guest

    fn guest(&mut self) -> Result<()> {
        let bytes = self.opts.guest_bytes;
        let runs = self.opts.guest_runs;
        let image = guest::image()?;
        let dhcp_guest =
            "address = \"10.200.0.2/24\"\ngateway = \"10.200.0.1\"\nmac = \"52:54:00:12:34:56\"";
        let mut stream = ShimLab::new("bench-gs", 1, Frontend::StreamListen, dhcp_guest, "")?;
        let mut vhost = ShimLab::new("bench-gv", 1, Frontend::VhostUser, dhcp_guest, "")?;
        let user = UserNetLab::new(&image)?;
        self.command("qemu-system-x86_64 -accel tcg -smp 1 -m 256 -nographic -no-reboot -nodefaults -serial stdio -monitor none -kernel vmlinuz -initrd initramfs.cpio.gz -append \"console=ttyS0 panic=-1 quiet fo.net=dhcp fo.run=<script>\" -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile= with -netdev stream,id=n0,server=off,addr.type=unix,addr.path=<vmm-shim stream --listen> | -netdev vhost-user,id=n0,chardev=c0 (vmm-shim vhost-user --socket; memfd RAM, vectors=0) | -netdev user,id=n0 (in a namespace of its own with only lo)");
        self.command(format!(
            "in the guest: fo-lab stream-send --connect 198.19.0.100:5201 (shim) | 10.0.2.2:5201 (user: slirp to fo-lab stream-serve on 127.0.0.1:5201 in QEMU's namespace) --up 0 --down {bytes}"
        ));
        let mut results: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for r in 0..runs {
            for k in 0..3 {
                let which = (k + r) % 3;
                let (name, res) = match which {
                    0 => ("shim_stream", shim_guest_run(&mut stream, bytes)),
                    1 => ("shim_vhost", shim_guest_run(&mut vhost, bytes)),
                    _ => ("qemu_user", user.run(&image, r, bytes)),
                };
                match res {
                    Ok(mbps) => {
                        eprintln!("  guest run {r} {name:>11}: {mbps:.1} Mbit/s");
                        results.entry(name).or_default().push(mbps);
                    }
                    Err(e) => self.errors.push(format!("guest: {name} run {r}: {e}")),
                }
            }
        }
        let m = |n: &str| results.get(n).and_then(|v| median(v));
        let ratio = |n: &str| match (m(n), m("qemu_user")) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        self.results.insert(
            "guest".into(),
            json!({
                "throughput_mbps": {
                    "shim_stream": round(m("shim_stream")),
                    "shim_vhost": round(m("shim_vhost")),
                    "qemu_user": round(m("qemu_user")),
                },
                "ratio_to_qemu_user": {
                    "shim_stream": round(ratio("shim_stream")),
                    "shim_vhost": round(ratio("shim_vhost")),
                },
                "runs_mbps": results.iter().map(|(k, v)| (k.to_string(), json!(v.iter().copied().map(rounded).collect::<Vec<_>>()))).collect::<serde_json::Map<_, _>>(),
                "bytes_per_run": bytes,
                "direction": "server to guest (download), goodput of verified bytes from first to last byte",
                "accelerator": "TCG (no usable KVM on these machines), 1 vCPU, 256 MiB",
            }),
        );
        Ok(())
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
                "stream_bytes": self.opts.stream_bytes, "guest_runs": self.opts.guest_runs,
                "guest_bytes": self.opts.guest_bytes, "soak_secs": if self.opts.long { json!(self.opts.soak_secs) } else { Value::Null },
            }),
        );
        let mut commands = vec![format!(
            "scripts/bench {}",
            self.opts
                .argv
                .iter()
                .filter(|a| !a.starts_with("--boringtun") && !a.contains("bench-tools"))
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

/// One path's medians: 1-flow Gbit/s, 4-flow Gbit/s, 1-flow CPU-s per Gbit.
type PathMedians = (Option<f64>, Option<f64>, Option<f64>);

/// What the data-path section tells the rest.
#[derive(Debug)]
struct DatapathSummary {
    targets_met: bool,
}

// ------------------------------------------------------------------------------ data path

/// The iperf3 server's port (5201 is the stream verifier's).
const IPERF_PORT: u16 = 5301;

/// One iperf3 run.
#[derive(Debug, Clone, Default)]
struct IperfRun {
    gbps: f64,
    bytes: u64,
    retransmits: u64,
    cpu_s: Option<f64>,
    cpu_per_gbit: Option<f64>,
}

fn start_iperf_server(lab: &Lab, server: &Ns) -> Result<Daemon> {
    let d = lab.spawn(
        server,
        "iperf3-server",
        &["iperf3", "-s", "-p", &IPERF_PORT.to_string()],
    )?;
    lab.wait_tcp_listening(server, IPERF_PORT)?;
    Ok(d)
}

/// Runs iperf3 from `client` to the server, `flows` parallel flows for `secs`; the CPU time the
/// `endpoints` spent meanwhile.
fn iperf_run(lab: &Lab, client: &Ns, flows: u32, secs: u64, endpoints: &[u32]) -> Result<IperfRun> {
    let cpu = |pids: &[u32]| -> Result<f64> { pids.iter().map(|p| cpu_seconds(*p)).sum() };
    let before = cpu(endpoints)?;
    let out = lab.exec_unchecked(
        client,
        &[
            "iperf3".to_owned(),
            "-c".into(),
            Topology::SERVER_IP4.to_string(),
            "-p".into(),
            IPERF_PORT.to_string(),
            "-t".into(),
            secs.to_string(),
            "-P".into(),
            flows.to_string(),
            "-J".into(),
        ],
    )?;
    let after = cpu(endpoints)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        other(format!(
            "iperf3 output is not JSON ({e}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    if let Some(err) = v.get("error") {
        return Err(other(format!("iperf3: {err}")));
    }
    let end = v.get("end").ok_or_else(|| other("iperf3: no end"))?;
    let received = end
        .get("sum_received")
        .ok_or_else(|| other("iperf3: no sum_received"))?;
    let bps = received
        .get("bits_per_second")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let bytes = received.get("bytes").and_then(Value::as_u64).unwrap_or(0);
    let retransmits = end
        .get("sum_sent")
        .and_then(|s| s.get("retransmits"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let cpu_s = (!endpoints.is_empty()).then_some(after - before);
    let gbit = bytes as f64 * 8.0 / 1e9;
    Ok(IperfRun {
        gbps: bps / 1e9,
        bytes,
        retransmits,
        cpu_s,
        cpu_per_gbit: cpu_s.filter(|_| gbit > 0.0).map(|c| c / gbit),
    })
}

/// Whatever owns the namespaces of one path.
enum Holder {
    Plain(Lab),
    Failover(Box<FailoverLab>),
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Plain",
            Self::Failover(_) => "Failover",
        })
    }
}

/// One implementation's data path, built and ready, in a lab of its own.
#[derive(Debug)]
struct PathUnderTest {
    name: &'static str,
    holder: Holder,
    client: Ns,
    /// the tunnel endpoint processes whose CPU time counts
    endpoints: Vec<Daemon>,
    _iperf: Daemon,
    commands: Vec<String>,
}

impl PathUnderTest {
    fn lab(&self) -> &Lab {
        match &self.holder {
            Holder::Plain(l) => l,
            Holder::Failover(f) => &f.lab,
        }
    }

    fn finish(
        name: &'static str,
        holder: Holder,
        topo: &Topology,
        endpoints: Vec<Daemon>,
        commands: Vec<String>,
    ) -> Result<Self> {
        let mut p = Self {
            name,
            client: topo.client.clone(),
            endpoints,
            _iperf: {
                let lab = match &holder {
                    Holder::Plain(l) => l,
                    Holder::Failover(f) => &f.lab,
                };
                wait_ping(lab, &topo.client)?;
                start_iperf_server(lab, &topo.server)?
            },
            holder,
            commands,
        };
        p.commands
            .push(format!("ip netns exec <server> iperf3 -s -p {IPERF_PORT}"));
        Ok(p)
    }

    /// No tunnel: the client routes the server's subnet through dc1, the server routes back.
    fn veth() -> Result<Self> {
        let mut lab = Lab::new("bench-veth")?;
        let topo = Topology::build(&mut lab, 1)?;
        lab.route(&topo.client, "198.19.0.0/24 via 198.18.0.11")?;
        lab.route(&topo.server, "198.18.0.0/24 via 198.19.0.11")?;
        let cmds = vec![
            "veth: ip -n <client> route add 198.19.0.0/24 via 198.18.0.11; ip -n <server> route add 198.18.0.0/24 via 198.19.0.11 (client -> bridge -> dc1 forwarding -> bridge -> server)".into(),
        ];
        Self::finish("veth", Holder::Plain(lab), &topo, vec![], cmds)
    }

    /// failoverd client → failoverd gateway (one datacenter), the lab's defaults.
    fn failoverd() -> Result<Self> {
        let fl = FailoverLab::new("bench-fo1", 1, "")?;
        let topo = fl.topo.clone();
        let mut endpoints = vec![fl.client.daemon.clone()];
        endpoints.extend(fl.gateways.iter().map(|g| g.daemon.clone()));
        let cmds = vec![
            "failoverd: ip netns exec <client> failoverd --config client.toml; ip netns exec <dc1> failoverd gateway --config dc1.toml (scenario::FailoverLab, 1 datacenter, defaults)".into(),
        ];
        Self::finish(
            "failoverd",
            Holder::Failover(Box::new(fl)),
            &topo,
            endpoints,
            cmds,
        )
    }

    /// A reference implementation at both ends, configured with `wg` (as the interop tests).
    fn userspace_wg(name: &'static str, imp: &WgImpl) -> Result<Self> {
        let mut lab = Lab::new(&format!("bench-{name}"))?;
        let topo = Topology::build(&mut lab, 1)?;
        let client_key = keypair(&lab, "client")?;
        let gw_key = keypair(&lab, "dc1")?;
        let dc1 = topo.dc(1).ok_or_else(|| other("no dc1"))?.clone();
        let gw_if = wg_ifname(&lab, "g");
        let cl_if = wg_ifname(&lab, "c");
        let gw = start_wg_impl(
            &lab,
            &dc1,
            imp,
            "wg-dc1",
            &gw_if,
            &gw_key,
            &[
                "listen-port",
                "51820",
                "peer",
                &client_key.public,
                "allowed-ips",
                "100.96.0.2/32",
            ],
            &["100.96.0.1/16"],
            &[],
        )?;
        let endpoint = format!("{}:{WG_PORT}", Topology::dc_underlay_ip(1));
        let cl = start_wg_impl(
            &lab,
            &topo.client,
            imp,
            "wg-client",
            &cl_if,
            &client_key,
            &[
                "peer",
                &gw_key.public,
                "endpoint",
                &endpoint,
                "allowed-ips",
                "0.0.0.0/0",
                "persistent-keepalive",
                "25",
            ],
            &["100.96.0.2/32"],
            &["198.19.0.0/16"],
        )?;
        server_route_via(&lab, &topo, 1)?;
        let cmd = imp.command("IF").join(" ");
        let cmds = vec![format!(
            "{name}: ip netns exec <ns> {cmd}; wg set IF private-key KEY listen-port 51820 peer CLIENT allowed-ips 100.96.0.2/32 (dc1) | peer GW endpoint 198.18.0.11:51820 allowed-ips 0.0.0.0/0 persistent-keepalive 25 (client); ip link set IF mtu 1420 up; client route 198.19.0.0/16 dev IF; server route 100.96.0.0/16 via 198.19.0.11"
        )];
        Self::finish(name, Holder::Plain(lab), &topo, vec![cl, gw], cmds)
    }

    fn iperf(&self, flows: u32, secs: u64) -> Result<IperfRun> {
        for d in &self.endpoints {
            if !d.is_running() {
                return Err(other(format!(
                    "{} has exited: {}",
                    d.name(),
                    d.read_stderr()
                )));
            }
        }
        let pids: Vec<u32> = self.endpoints.iter().map(Daemon::pid).collect();
        iperf_run(self.lab(), &self.client, flows, secs, &pids)
    }

    fn ping(&self, count: usize) -> Result<Vec<f64>> {
        let out = self.lab().exec_unchecked(
            &self.client,
            &[
                "ping".to_owned(),
                "-n".into(),
                "-c".into(),
                count.to_string(),
                "-i".into(),
                "0.2".into(),
                "-W".into(),
                "2".into(),
                Topology::SERVER_IP4.to_string(),
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<f64> = text
            .lines()
            .filter_map(|l| l.split("time=").nth(1))
            .filter_map(|t| t.split_whitespace().next()?.parse().ok())
            .collect();
        if v.is_empty() {
            return Err(other(format!("no replies: {text}")));
        }
        Ok(v)
    }
}

/// Waits until the client reaches the server with ping (tunnels handshake on the first packet).
fn wait_ping(lab: &Lab, client: &Ns) -> Result<()> {
    let target = Topology::SERVER_IP4.to_string();
    wait_until(
        Duration::from_secs(15),
        "the server to answer pings",
        || {
            lab.exec_unchecked(client, &["ping", "-n", "-c", "1", "-W", "1", &target])
                .is_ok_and(|o| o.status.success())
        },
    )
}

// ------------------------------------------------------------------------------ failover

/// A fault injected at the active datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Blackhole,
    LossToDc,
    LossToClient,
    GatewayKill,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Blackhole,
        Kind::LossToDc,
        Kind::LossToClient,
        Kind::GatewayKill,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Blackhole => "blackhole",
            Self::LossToDc => "oneway_loss_to_dc",
            Self::LossToClient => "oneway_loss_to_client",
            Self::GatewayKill => "gateway_sigkill",
        }
    }

    fn direction(self) -> Option<Direction> {
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
struct Injection {
    kind: Kind,
    n: usize,
    from: String,
    to: String,
    /// ms from the fault taking effect to the switch (None: no switch within the wait)
    detect_ms: Option<f64>,
    /// how long the old tunnel had been silent when declared down (failoverd only)
    silent_ms: Option<f64>,
    stall_down_ms: f64,
    stall_up_ms: f64,
    survived: bool,
    verified: u64,
    corrupted_bytes: u64,
    corrupted: bool,
    phase_ms: u64,
    mid_stream: bool,
}

impl Injection {
    fn line(&self) -> String {
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

    fn json(&self) -> Value {
        json!({
            "n": self.n, "kind": self.kind.label(), "from": self.from, "to": self.to,
            "detect_ms": round(self.detect_ms), "silent_ms": round(self.silent_ms),
            "stall_down_ms": rounded(self.stall_down_ms), "stall_up_ms": rounded(self.stall_up_ms),
            "survived": self.survived, "corrupted": self.corrupted, "phase_ms": self.phase_ms,
            "fault_mid_stream": self.mid_stream,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn from_report(
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
        }
    }
}

/// The figures of a set of injections (all kinds together, and by kind).
fn injections_block(v: &[Injection]) -> Value {
    fn figures(v: &[&Injection]) -> Value {
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
fn inject_ours(
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
    let inj = Injection::from_report(
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
fn soak(fl: &FailoverLab, secs: u64) -> Result<(usize, Vec<String>)> {
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

// ------------------------------------------------------------------------------ baseline

/// The watchdog users script today: `bash` in the client namespace.
const WATCHDOG: &str = r#"#!/usr/bin/env bash
# The baseline: two wireguard-go tunnels, a ping every second through the active one to its
# datacenter's inner address, and after 3 misses in a row the route to the server's subnet
# moves to the other tunnel. Its best case: the server's return route moves at the same moment.
set -u
devs=(@DEV1@ @DEV2@)
probes=(100.96.1.1 100.96.2.1)
gws=(198.19.0.11 198.19.0.12)
server_ns=@SERVER_NS@
active=0
misses=0
while :; do
  if ping -n -q -c 1 -W 1 -I "${devs[$active]}" "${probes[$active]}" >/dev/null 2>&1; then
    misses=0
    sleep 1
  else
    misses=$((misses + 1))
  fi
  if [ "$misses" -ge 3 ]; then
    next=$((1 - active))
    ip route replace 198.19.0.0/16 dev "${devs[$next]}"
    ip -n "$server_ns" route replace 100.96.0.0/16 via "${gws[$next]}"
    echo "switch $(date +%s%3N) $active $next"
    active=$next
    misses=0
  fi
done
"#;

/// The baseline's lab: wireguard-go in dc1 and dc2, two wireguard-go tunnels in the client,
/// the watchdog, the stream server.
#[derive(Debug)]
struct Baseline {
    lab: Lab,
    topo: Topology,
    client_key: KeyPair,
    dc_keys: Vec<KeyPair>,
    client_ifs: Vec<String>,
    dc_ifs: Vec<String>,
    dc_daemons: Vec<Daemon>,
    watchdog: Daemon,
    _server: Daemon,
}

impl Baseline {
    fn build() -> Result<Self> {
        let mut lab = Lab::new("bench-wd")?;
        let topo = Topology::build(&mut lab, 2)?;
        let client_key = keypair(&lab, "client")?;
        let mut dc_keys = Vec::new();
        let mut dc_ifs = Vec::new();
        let mut dc_daemons = Vec::new();
        let mut client_ifs = Vec::new();
        for i in 1..=2usize {
            let ns = topo.dc(i).ok_or_else(|| other("no dc"))?.clone();
            let key = keypair(&lab, &format!("dc{i}"))?;
            let dc_if = wg_ifname(&lab, &format!("d{i}"));
            dc_daemons.push(start_dc_wg(
                &lab,
                &ns,
                &format!("wg-dc{i}"),
                &dc_if,
                &key,
                &client_key,
                i,
            )?);
            let cl_if = wg_ifname(&lab, &format!("c{i}"));
            let endpoint = format!("{}:{WG_PORT}", Topology::dc_underlay_ip(i));
            let probe = format!("100.96.{i}.1/32");
            start_wg_impl(
                &lab,
                &topo.client,
                &WgImpl::WireguardGo,
                &format!("wg-client{i}"),
                &cl_if,
                &client_key,
                &[
                    "peer",
                    &key.public,
                    "endpoint",
                    &endpoint,
                    "allowed-ips",
                    "0.0.0.0/0",
                    "persistent-keepalive",
                    "25",
                ],
                &["100.96.0.2/32"],
                &[&probe],
            )?;
            dc_keys.push(key);
            dc_ifs.push(dc_if);
            client_ifs.push(cl_if);
        }
        let first = client_ifs.first().cloned().unwrap_or_default();
        lab.exec(
            &topo.client,
            &["ip", "route", "replace", "198.19.0.0/16", "dev", &first],
        )?;
        server_route_via(&lab, &topo, 1)?;
        let server = start_stream_server(&lab, &topo)?;
        for i in 1..=2 {
            wait_tunnel(&lab, &topo.client, &client_ifs, i)?;
        }
        wait_ping(&lab, &topo.client)?;
        let script = WATCHDOG
            .replace("@DEV1@", &first)
            .replace("@DEV2@", client_ifs.get(1).map_or("", String::as_str))
            .replace("@SERVER_NS@", topo.server.name());
        let path = lab.dir().join("watchdog.sh");
        std::fs::write(&path, script)?;
        let watchdog = lab.spawn(
            &topo.client,
            "watchdog",
            &["bash".into(), path.display().to_string()],
        )?;
        Ok(Self {
            lab,
            topo,
            client_key,
            dc_keys,
            client_ifs,
            dc_ifs,
            dc_daemons,
            watchdog,
            _server: server,
        })
    }

    /// The watchdog's switches so far: (unix ms, to index 0/1).
    fn switches(&self) -> Vec<(u64, usize)> {
        self.watchdog
            .read_stdout()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == "switch").then_some(())?;
                let ms = w.next()?.parse().ok()?;
                let _from = w.next()?;
                let to = w.next()?.parse().ok()?;
                Some((ms, to))
            })
            .collect()
    }

    fn active(&self) -> usize {
        self.switches().last().map_or(0, |s| s.1)
    }

    fn rx_bytes(&self, i: usize) -> u64 {
        let Some(ifname) = self.client_ifs.get(i) else {
            return 0;
        };
        self.lab
            .exec(
                &self.topo.client,
                &[
                    "cat",
                    &format!("/sys/class/net/{ifname}/statistics/rx_bytes"),
                ],
            )
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    }

    fn inject(&mut self, kind: Kind, n: usize, bytes: u64, rng: &mut u64) -> Result<Injection> {
        if !self.watchdog.is_running() {
            return Err(other(format!(
                "the watchdog exited: {}",
                self.watchdog.read_stderr()
            )));
        }
        let active = self.active();
        let next = 1 - active;
        let dc_i = active + 1;
        let ns = self.topo.dc(dc_i).ok_or_else(|| other("no dc"))?.clone();
        // The phase against the watchdog's free-running 1 s cadence is drawn before the stream
        // starts: a stream that waited a second after flowing would be over before the fault.
        let phase_ms = next_rand(rng) % 1000;
        sleep_ms(phase_ms);
        let started = unix_millis();
        let stream = spawn_stream(
            &self.lab,
            &self.topo.client,
            &format!("wd{n}"),
            bytes,
            1000 + n as u64,
        )?;
        let start = self.rx_bytes(active);
        wait_until(
            Duration::from_secs(30),
            "the stream to flow through the watchdog's tunnel",
            || self.rx_bytes(active) >= start + bytes / 4,
        )?;
        let before = self.switches().len();
        match kind.direction() {
            Some(dir) => blackhole(&self.lab, &ns, dir)?,
            None => {
                self.dc_daemons
                    .get(active)
                    .ok_or_else(|| other("no dc daemon"))?
                    .kill()?;
            }
        }
        let applied = unix_millis();
        let switched = wait_until(Duration::from_secs(20), "the watchdog to switch", || {
            self.switches().len() > before
        })
        .is_ok();
        let report = stream.finish()?;
        let sw = self.switches().get(before).copied();
        let detect_ms = sw
            .filter(|_| switched)
            .map(|(ms, _)| ms.saturating_sub(applied) as f64);
        let inj = Injection::from_report(
            kind,
            n,
            (format!("dc{dc_i}"), format!("dc{}", next + 1)),
            detect_ms,
            None,
            &report,
            bytes,
            phase_ms,
            (started, applied),
        );
        // heal, and make sure the healed tunnel works again before the next injection
        match kind.direction() {
            Some(_) => heal(&self.lab, &ns)?,
            None => {
                let ifname = self.dc_ifs.get(active).cloned().unwrap_or_default();
                // the killed peer's UAPI socket is left behind
                let _ = std::fs::remove_file(format!("/var/run/wireguard/{ifname}.sock"));
                let key = self.dc_keys.get(active).ok_or_else(|| other("no key"))?;
                let d = start_dc_wg(
                    &self.lab,
                    &ns,
                    &format!("wg-dc{dc_i}-restart{n}"),
                    &ifname,
                    key,
                    &self.client_key,
                    dc_i,
                )?;
                if let Some(slot) = self.dc_daemons.get_mut(active) {
                    *slot = d;
                }
                // the restarted peer lost its session: make the client handshake anew
                let cl_if = self.client_ifs.get(active).cloned().unwrap_or_default();
                let endpoint = format!("{}:{WG_PORT}", Topology::dc_underlay_ip(dc_i));
                self.lab.exec(
                    &self.topo.client,
                    &["wg", "set", &cl_if, "peer", &key.public, "remove"],
                )?;
                self.lab.exec(
                    &self.topo.client,
                    &[
                        "wg",
                        "set",
                        &cl_if,
                        "peer",
                        &key.public,
                        "endpoint",
                        &endpoint,
                        "allowed-ips",
                        "0.0.0.0/0",
                        "persistent-keepalive",
                        "25",
                    ],
                )?;
            }
        }
        wait_tunnel(&self.lab, &self.topo.client, &self.client_ifs, dc_i)?;
        Ok(inj)
    }
}

/// wireguard-go in datacenter `i` for the baseline: inner address 100.96.i.1/16.
fn start_dc_wg(
    lab: &Lab,
    ns: &Ns,
    name: &str,
    ifname: &str,
    key: &KeyPair,
    client_key: &KeyPair,
    i: usize,
) -> Result<Daemon> {
    start_wg_impl(
        lab,
        ns,
        &WgImpl::WireguardGo,
        name,
        ifname,
        key,
        &[
            "listen-port",
            "51820",
            "peer",
            &client_key.public,
            "allowed-ips",
            "100.96.0.2/32",
        ],
        &[&format!("100.96.{i}.1/16")],
        &[],
    )
}

/// Waits until the client's tunnel `i` (1-based) answers a ping to its datacenter.
fn wait_tunnel(lab: &Lab, client: &Ns, ifs: &[String], i: usize) -> Result<()> {
    let ifname = ifs.get(i - 1).cloned().unwrap_or_default();
    let target = format!("100.96.{i}.1");
    wait_until(
        Duration::from_secs(30),
        "a baseline tunnel to answer",
        || {
            lab.exec_unchecked(
                client,
                &["ping", "-n", "-c", "1", "-W", "1", "-I", &ifname, &target],
            )
            .is_ok_and(|o| o.status.success())
        },
    )
}

// ------------------------------------------------------------------------------ memory

fn keeper(client: &Running, field: &str) -> u64 {
    client
        .status()
        .ok()
        .and_then(|s| s.get("sessionkeeper")?.get(field)?.as_u64())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------ guest

/// The guest's scenario: download `bytes` from `server` and print the report.
fn guest_script(server: &str, bytes: u64) -> String {
    format!(
        "fo-lab stream-send --connect {server}:{STREAM_PORT} --up 0 --down {bytes} \
         --seed 11 --timeout-secs 240 >/tmp/report.json\n\
         rc=$?\n\
         echo \"FO-STREAM $(cat /tmp/report.json)\"\n\
         exit $rc\n"
    )
}

fn guest_goodput(run: &guest::GuestRun, bytes: u64) -> Result<f64> {
    let report = run.stream_report()?;
    if !report.ok || report.down.verified != bytes {
        return Err(other(format!(
            "the guest's stream failed: {}",
            describe(&report)
        )));
    }
    Ok(report.down.goodput_mbps)
}

fn shim_guest_run(sl: &mut ShimLab, bytes: u64) -> Result<f64> {
    let qemu = sl.boot("fo.net=dhcp", &guest_script("198.19.0.100", bytes))?;
    let run = sl.wait_result(&qemu, Duration::from_secs(300))?;
    let _ = qemu.wait_exit(Duration::from_secs(10));
    let _ = qemu.kill();
    guest_goodput(&run, bytes)
}

/// The same guest on QEMU's user networking (slirp), in a namespace of its own that has only
/// `lo`: the guest connects to 10.0.2.2, which slirp maps to 127.0.0.1 of that namespace, where
/// the stream server listens. Nothing leaves the namespace.
#[derive(Debug)]
struct UserNetLab {
    lab: Lab,
    ns: Ns,
    _server: Daemon,
}

impl UserNetLab {
    fn new(_image: &guest::GuestImage) -> Result<Self> {
        let lab = Lab::new("bench-quser")?;
        let ns = lab.add_ns("quser")?;
        let server = lab.spawn(
            &ns,
            "stream-serve",
            &[
                bin_path("fo-lab").display().to_string(),
                "stream-serve".into(),
                "--listen".into(),
                format!("127.0.0.1:{STREAM_PORT}"),
            ],
        )?;
        lab.wait_tcp_listening(&ns, STREAM_PORT)?;
        Ok(Self {
            lab,
            ns,
            _server: server,
        })
    }

    fn run(&self, image: &guest::GuestImage, r: usize, bytes: u64) -> Result<f64> {
        let mut args = guest::qemu_command(image, "fo.net=dhcp", &guest_script("10.0.2.2", bytes));
        args.extend([
            "-netdev".into(),
            "user,id=n0".into(),
            "-device".into(),
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=".into(),
        ]);
        let qemu = self.lab.spawn(&self.ns, &format!("qemu-user-{r}"), &args)?;
        let path = qemu.stdout_path().to_path_buf();
        let read = || guest::clean_console(&std::fs::read_to_string(&path).unwrap_or_default());
        let waited = wait_until(Duration::from_secs(300), "the guest's FO-RESULT", || {
            read().contains("FO-RESULT rc=") || !qemu.is_running()
        });
        let console = read();
        let _ = qemu.wait_exit(Duration::from_secs(10));
        let _ = qemu.kill();
        waited.map_err(|e| other(format!("{e}; console:\n{console}")))?;
        let rc = console
            .lines()
            .find_map(|l| l.trim().strip_prefix("FO-RESULT rc="))
            .and_then(|rc| rc.trim().parse().ok())
            .ok_or_else(|| {
                other(format!(
                    "no result; console:\n{console}\n{}",
                    qemu.read_stderr()
                ))
            })?;
        guest_goodput(&guest::GuestRun { rc, console }, bytes)
    }
}

// ------------------------------------------------------------------------------ profiles

/// callgrind_annotate's PROGRAM TOTALS and its first `n` function lines.
fn parse_callgrind(text: &str, n: usize) -> (u64, Vec<Value>) {
    let num = |s: &str| s.replace(',', "").parse::<u64>().ok();
    let total = text
        .lines()
        .find(|l| l.contains("PROGRAM TOTALS"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(num)
        .unwrap_or(0);
    let mut top = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Ir") && t.contains("file:function") {
            in_table = true;
            continue;
        }
        if !in_table || t.is_empty() || t.starts_with('-') {
            if in_table && t.is_empty() && !top.is_empty() {
                break;
            }
            continue;
        }
        // "1,234,567 (12.34%)  file:function [object]"
        let mut parts = t.splitn(2, ' ');
        let Some(ir) = parts.next().and_then(num) else {
            continue;
        };
        let rest = parts.next().unwrap_or("").trim();
        let (pct, func) = match rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
            Some((p, f)) => (p.trim_end_matches('%').trim().parse::<f64>().ok(), f.trim()),
            None => (None, rest),
        };
        let pct = pct.or_else(|| (total > 0).then(|| ir as f64 * 100.0 / total as f64));
        // "file:function [object]" -> the function and the object's file name
        let (func, object) = match func.rsplit_once(" [") {
            Some((f, o)) => (f, o.trim_end_matches(']')),
            None => (func, ""),
        };
        let (file, func) = func.split_once(':').unwrap_or(("", func));
        let object = Path::new(object)
            .file_name()
            .map_or(String::new(), |o| o.to_string_lossy().into_owned());
        top.push(json!({"ir": ir, "percent": round(pct), "function": func, "file": file, "object": object}));
        if top.len() >= n {
            break;
        }
    }
    (total, top)
}

/// perf report --stdio lines: "  12.34%  comm  dso  [k] symbol".
fn parse_perf_report(text: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        let mut w = t.split_whitespace();
        let Some(pct) = w
            .next()
            .and_then(|p| p.strip_suffix('%'))
            .and_then(|p| p.parse::<f64>().ok())
        else {
            continue;
        };
        let comm = w.next().unwrap_or("").to_owned();
        let dso = w.next().unwrap_or("").to_owned();
        // trailing "-" columns are perf's empty IPC fields
        let mut words: Vec<&str> = w.collect();
        while words.last() == Some(&"-") {
            words.pop();
        }
        let symbol = words.join(" ");
        out.push(json!({"percent": pct, "comm": comm, "dso": dso, "symbol": symbol}));
        if out.len() >= n {
            break;
        }
    }
    out
}

// ------------------------------------------------------------------------------ Markdown

fn fmt_num(v: Option<&Value>, digits: usize) -> String {
    match v.and_then(Value::as_f64) {
        Some(x) => format!("{x:.digits$}"),
        None => "–".into(),
    }
}

fn markdown(r: &Value) -> String {
    let mut md = String::new();
    let g = |path: &[&str]| -> Option<&Value> {
        let mut v = r;
        for p in path {
            v = v.get(*p)?;
        }
        Some(v)
    };
    let s = |path: &[&str]| g(path).and_then(Value::as_str).unwrap_or("?").to_owned();
    let _ = writeln!(md, "# failover benchmark, {}\n", s(&["started_utc"]));
    let cmds = g(&["commands"]).and_then(Value::as_array);
    let _ = writeln!(
        md,
        "Made by `{}` in {:.0} s. Machine: {}, {} cores, kernel {}, `perf stat -e instructions true`: {}.",
        cmds.and_then(|c| c.first()).and_then(Value::as_str).unwrap_or("scripts/bench"),
        g(&["elapsed_s"]).and_then(Value::as_f64).unwrap_or(0.0),
        s(&["machine", "cpu_model"]),
        g(&["machine", "cores"]).and_then(Value::as_u64).unwrap_or(0),
        s(&["machine", "kernel"]),
        if g(&["machine", "perf_stat_instructions_supported"]).and_then(Value::as_bool) == Some(true) {
            "supported"
        } else {
            "not supported"
        },
    );
    let _ = writeln!(
        md,
        "Versions: failoverd {}, {}, {}, {}, {}, {}.\n",
        s(&["versions", "failoverd_git_rev"]),
        s(&["versions", "rustc"]),
        s(&["versions", "wireguard-go"]),
        s(&["versions", "boringtun-cli"]),
        s(&["versions", "iperf3"]),
        s(&["versions", "qemu"]),
    );

    // targets
    let _ = writeln!(md, "## Targets (ratios within this run)\n");
    let _ = writeln!(
        md,
        "| target | wanted | measured | verdict |\n|---|---|---|---|"
    );
    let names = [
        (
            "throughput_flows1_vs_best_reference",
            "single-flow throughput vs the best reference",
            "x",
        ),
        (
            "cpu_per_gbps_vs_best_reference",
            "CPU per Gbit/s vs the best reference",
            "x",
        ),
        ("detect_p99_ms", "detection p99", " ms"),
        (
            "stall_p99_ms",
            "receiver stall p99 (worst direction)",
            " ms",
        ),
        ("false_switches", "false switches, 10 min at 5 % loss", ""),
        ("rss_mib_flows_10k", "client RSS with 10 000 flows", " MiB"),
    ];
    for (key, label, unit) in names {
        let t = g(&["targets", key]);
        let wanted = t
            .and_then(|t| t.get("target"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let measured = t
            .and_then(|t| t.get("measured"))
            .and_then(Value::as_f64)
            .map_or("not measured".to_owned(), |v| {
                if unit == "x" {
                    format!("{v:.2}x")
                } else if unit.is_empty() {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}{unit}")
                }
            });
        let verdict = match t.and_then(|t| t.get("met")).and_then(Value::as_bool) {
            Some(true) => "**met**",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {label} | {wanted} | {measured} | {verdict} |");
    }

    // what explains a missed target
    let missed = |key: &str| g(&["targets", key, "met"]).and_then(Value::as_bool) == Some(false);
    if missed("throughput_flows1_vs_best_reference") || missed("cpu_per_gbps_vs_best_reference") {
        let _ = writeln!(
            md,
            "\nData-path targets missed: the profiles at the end of this file show where the client's time goes."
        );
    }
    for (key, figure, label) in [
        ("detect_p99_ms", "detect_ms", "Detection"),
        ("stall_p99_ms", "stall_ms", "Stall (worst direction)"),
    ] {
        if !missed(key) {
            continue;
        }
        let worst = Kind::ALL
            .iter()
            .filter_map(|k| {
                let p99 = g(&["failover", "by_kind", k.label(), figure, "p99"])?.as_f64()?;
                Some((k.label(), p99))
            })
            .filter(|(_, p99)| p99 > if label == "Detection" { &100.0 } else { &200.0 })
            .map(|(k, p99)| format!("{k} (p99 {p99:.0} ms)"))
            .collect::<Vec<_>>();
        let _ = writeln!(
            md,
            "\n{label} target missed by: {} (see the failover table by kind).",
            if worst.is_empty() {
                "the kinds together".to_owned()
            } else {
                worst.join(", ")
            }
        );
    }

    // data path
    let impls = ["veth", "failoverd", "wireguard-go", "boringtun"];
    if g(&["throughput_gbps"]).is_some() {
        let reps = g(&["datapath_settings", "reps"])
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let secs = g(&["datapath_settings", "secs"])
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let _ = writeln!(
            md,
            "\n## Data path (iperf3 TCP client → server, medians of {reps} × {secs} s, interleaved)\n"
        );
        let _ = writeln!(
            md,
            "| | veth (no tunnel) | failoverd | wireguard-go | boringtun |\n|---|---|---|---|---|"
        );
        let row = |label: &str, f: &dyn Fn(&str) -> String| {
            let cells: Vec<String> = impls.iter().map(|i| f(i)).collect();
            format!("| {label} | {} |\n", cells.join(" | "))
        };
        md.push_str(&row("1 flow, Gbit/s", &|i| {
            fmt_num(g(&["throughput_gbps", i, "flows1"]), 2)
        }));
        md.push_str(&row("4 flows, Gbit/s", &|i| {
            fmt_num(g(&["throughput_gbps", i, "flows4"]), 2)
        }));
        md.push_str(&row("CPU-s per Gbit, 1 flow (both endpoints)", &|i| {
            if i == "veth" {
                "–".into()
            } else {
                fmt_num(g(&["cpu_per_gbps", i]), 3)
            }
        }));
        md.push_str(&row("CPU-s per Gbit, 4 flows", &|i| {
            if i == "veth" {
                "–".into()
            } else {
                fmt_num(g(&["cpu_per_gbps_flows4", i]), 3)
            }
        }));
        md.push_str(&row("ping RTT median, ms", &|i| {
            fmt_num(g(&["ping_rtt_ms", i]), 3)
        }));
        let _ = writeln!(
            md,
            "\nfailoverd vs the best reference ({} single flow, {} CPU): 1 flow {}x, 4 flows {}x, CPU per Gbit {}x; failoverd reaches {} of plain veth routing.",
            s(&["ratios", "best_reference_flows1"]),
            s(&["ratios", "best_reference_cpu"]),
            fmt_num(g(&["ratios", "failoverd_flows1_to_best_reference"]), 2),
            fmt_num(g(&["ratios", "failoverd_flows4_to_best_reference"]), 2),
            fmt_num(g(&["ratios", "failoverd_cpu_per_gbps_to_best_reference"]), 2),
            g(&["ratios", "failoverd_flows1_to_veth"])
                .and_then(Value::as_f64)
                .map_or("–".into(), |v| format!("{:.0} %", v * 100.0)),
        );
    }

    // failover
    if let Some(f) = g(&["failover"]) {
        let b = g(&["baseline_watchdog"]);
        let _ = writeln!(
            md,
            "\n## Failover (verified TCP stream both ways, faults at random phases)\n"
        );
        let cell = |blk: Option<&Value>, k: &str, q: &str| {
            fmt_num(blk.and_then(|v| v.get(k)).and_then(|v| v.get(q)), 0)
        };
        let _ = writeln!(
            md,
            "| figure | failoverd p50 | p99 | watchdog baseline p50 | p99 |\n|---|---|---|---|---|"
        );
        for (k, label) in [
            ("detect_ms", "detection: fault → switch, ms"),
            ("stall_ms", "receiver stall, worst direction, ms"),
            ("stall_down_ms", "stall at the client (download), ms"),
            ("stall_up_ms", "stall at the server (upload), ms"),
        ] {
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} |",
                cell(Some(f), k, "p50"),
                cell(Some(f), k, "p99"),
                cell(b, k, "p50"),
                cell(b, k, "p99")
            );
        }
        let count = |blk: Option<&Value>, k: &str| {
            blk.and_then(|v| v.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        for (label, blk) in [("failoverd", Some(f)), ("watchdog baseline", b)] {
            let _ = writeln!(
                md,
                "\n{label}: {} injections, {} switched, {} connections survived, {:.2} GB verified, {} bytes corrupted.",
                count(blk, "injections"),
                count(blk, "switched"),
                count(blk, "survived"),
                count(blk, "bytes_verified") as f64 / 1e9,
                count(blk, "bytes_corrupted"),
            );
        }
        let _ = writeln!(
            md,
            "\n| kind | failoverd n | detect p50 / p99 ms | stall p50 / p99 ms | survived | baseline n | detect p50 / p99 ms | stall p50 / p99 ms | survived |\n|---|---|---|---|---|---|---|---|---|"
        );
        for k in Kind::ALL {
            let fk = f.get("by_kind").and_then(|m| m.get(k.label()));
            let bk = b
                .and_then(|v| v.get("by_kind"))
                .and_then(|m| m.get(k.label()));
            let pair = |blk: Option<&Value>, key: &str| {
                format!("{} / {}", cell(blk, key, "p50"), cell(blk, key, "p99"))
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                k.label(),
                count(fk, "injections"),
                pair(fk, "detect_ms"),
                pair(fk, "stall_ms"),
                count(fk, "survived"),
                count(bk, "injections"),
                pair(bk, "detect_ms"),
                pair(bk, "stall_ms"),
                count(bk, "survived"),
            );
        }
        let _ = writeln!(
            md,
            "\nfailoverd: 20 ms probes, detect multiplier 4, switch-over recovery on, 2 datacenters, no failback. Baseline: two wireguard-go tunnels and a ping watchdog (1 s interval, 3 misses) that swaps the client's route and, at the same moment, the server's return route (its best case)."
        );
    }
    let fs = g(&["false_switches"]);
    let _ = writeln!(
        md,
        "\n## Stability\n\nFalse switches during {}: {}.",
        g(&["soak", "secs"])
            .and_then(Value::as_u64)
            .map_or("the soak".into(), |s| format!(
                "{s} s at 5 % random loss both ways on the active path"
            )),
        fs.and_then(Value::as_u64)
            .map_or("not measured (run with --long)".into(), |n| n.to_string())
    );

    // memory
    if g(&["rss_mib"]).is_some() {
        let _ = writeln!(
            md,
            "\n## Memory (failoverd client, VmRSS)\n\n| state | RSS, MiB |\n|---|---|\n| 3 idle tunnels | {} |\n| 3 tunnels, {} tracked flows | {} |",
            fmt_num(g(&["rss_mib", "idle_3_tunnels"]), 1),
            g(&["rss_mib", "flows_tracked"]).and_then(Value::as_u64).unwrap_or(0),
            fmt_num(g(&["rss_mib", "flows_10k"]), 1),
        );
    }

    // guest
    if g(&["guest"]).is_some() {
        let _ = writeln!(
            md,
            "\n## Guest path (QEMU TCG guest, TCP download goodput, medians, interleaved)\n\n| NIC backend | Mbit/s | ratio to QEMU user networking |\n|---|---|---|\n| vmm-shim, stream socket | {} | {} |\n| vmm-shim, vhost-user | {} | {} |\n| QEMU `-netdev user` (slirp) | {} | 1 |",
            fmt_num(g(&["guest", "throughput_mbps", "shim_stream"]), 1),
            fmt_num(g(&["guest", "ratio_to_qemu_user", "shim_stream"]), 2),
            fmt_num(g(&["guest", "throughput_mbps", "shim_vhost"]), 1),
            fmt_num(g(&["guest", "ratio_to_qemu_user", "shim_vhost"]), 2),
            fmt_num(g(&["guest", "throughput_mbps", "qemu_user"]), 1),
        );
    }

    // profiles
    if g(&["profiles", "ran"]).and_then(Value::as_bool) == Some(true) {
        let _ = writeln!(md, "\n## Profiles (a data-path target was missed)\n");
        if let Some(cg) = g(&["profiles", "callgrind"]) {
            if let Some(top) = cg.get("top15_self_ir").and_then(Value::as_array) {
                let _ = writeln!(
                    md,
                    "callgrind on the failoverd client during a single-flow iperf3 run ({} Ir in all, {} Ir per byte carried); top 15 functions by their own Ir:\n\n| Ir | % | function | object |\n|---|---|---|---|",
                    cg.get("total_ir").and_then(Value::as_u64).unwrap_or(0),
                    fmt_num(cg.get("ir_per_byte"), 1),
                );
                for e in top {
                    let _ = writeln!(
                        md,
                        "| {} | {} | `{}` | {} |",
                        e.get("ir").and_then(Value::as_u64).unwrap_or(0),
                        fmt_num(e.get("percent"), 2),
                        e.get("function")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .replace('|', "\\|"),
                        e.get("object").and_then(Value::as_str).unwrap_or(""),
                    );
                }
            } else if let Some(e) = cg.get("error") {
                let _ = writeln!(md, "callgrind failed: {e}");
            }
        }
        let _ = writeln!(
            md,
            "\nperf record with the instructions counter: {}",
            s(&["profiles", "perf_record_instructions"])
        );
        if let Some(p) = g(&["profiles", "perf_record"]) {
            if let Some(top) = p.get("top15").and_then(Value::as_array) {
                let _ = writeln!(
                    md,
                    "\nperf record -e {} on the failoverd client and gateway during a single-flow iperf3 run ({} % of samples in the kernel); top 15:\n\n| % | process | object | symbol |\n|---|---|---|---|",
                    p.get("event").and_then(Value::as_str).unwrap_or("?"),
                    fmt_num(p.get("kernel_share_percent"), 1),
                );
                for e in top {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | `{}` |",
                        fmt_num(e.get("percent"), 2),
                        e.get("comm").and_then(Value::as_str).unwrap_or(""),
                        e.get("dso").and_then(Value::as_str).unwrap_or(""),
                        e.get("symbol")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .replace('|', "\\|"),
                    );
                }
            } else if let Some(e) = p.get("error") {
                let _ = writeln!(md, "\nperf record failed: {e}");
            }
        }
    }

    for (key, title) in [("notes", "Notes"), ("errors", "Errors")] {
        if let Some(list) = g(&[key])
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
        {
            let _ = writeln!(md, "\n## {title}\n");
            for n in list {
                let _ = writeln!(md, "- {}", n.as_str().unwrap_or(""));
            }
        }
    }
    if let Some(list) = cmds {
        let _ = writeln!(md, "\n## Commands\n");
        for c in list {
            let _ = writeln!(md, "- `{}`", c.as_str().unwrap_or(""));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

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
