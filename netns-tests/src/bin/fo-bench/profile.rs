//! Where the client's time goes: callgrind and perf profiles when a data-path target is missed.

use super::*;

impl Bench {
    // -------------------------------------------------------------------------- profiles

    pub(crate) fn profiles(&mut self) -> Result<()> {
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
    pub(crate) fn callgrind(&mut self, secs: u64) -> Result<Value> {
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
    pub(crate) fn perf_cpu_clock(&mut self, secs: u64, instructions: bool) -> Result<Value> {
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
}

// ------------------------------------------------------------------------------ profiles

/// callgrind_annotate's PROGRAM TOTALS and its first `n` function lines.
pub(crate) fn parse_callgrind(text: &str, n: usize) -> (u64, Vec<Value>) {
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
pub(crate) fn parse_perf_report(text: &str, n: usize) -> Vec<Value> {
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
