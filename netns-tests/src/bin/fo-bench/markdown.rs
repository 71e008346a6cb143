//! The results file for people, rendered from the JSON results.

use super::*;

// ------------------------------------------------------------------------------ Markdown

pub(crate) fn fmt_num(v: Option<&Value>, digits: usize) -> String {
    match v.and_then(Value::as_f64) {
        Some(x) => format!("{x:.digits$}"),
        None => "–".into(),
    }
}

pub(crate) fn markdown(r: &Value) -> String {
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
        "Versions: failoverd {}, {}, {}, {}, {}, {}, {}.\n",
        s(&["versions", "failoverd_git_rev"]),
        s(&["versions", "rustc"]),
        s(&["versions", "wireguard-go"]),
        s(&["versions", "boringtun-cli"]),
        s(&["versions", "gotatun-cli"]),
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

    // crypto ceiling
    if let Some(c) = g(&["crypto"]) {
        let f = |k: &str, d: usize| fmt_num(c.get(k), d);
        let _ = writeln!(
            md,
            "\n## Crypto ceiling (tunnel sessions in memory, one thread, medians of {} rounds × {} packets of {} bytes)\n",
            f("rounds", 0),
            f("packets_per_round", 0),
            f("packet_bytes", 0),
        );
        let _ = writeln!(
            md,
            "| | ns per packet | ns per byte | Gbit/s on one core |\n|---|---|---|---|\n| seal (encapsulate) | {} | {} | {} |\n| open (decapsulate) | {} | {} | {} |\n| seal + open | {} | {} | – |",
            f("seal_ns_per_packet", 0),
            f("seal_ns_per_byte", 3),
            f("seal_gbps_one_core", 2),
            f("open_ns_per_packet", 0),
            f("open_ns_per_byte", 3),
            f("open_gbps_one_core", 2),
            f("seal_open_ns_per_packet", 0),
            f("seal_open_ns_per_byte", 3),
        );
        let _ = writeln!(
            md,
            "\nCeiling of one flow through a tunnel on 2 cores doing nothing but seal and open: **{} Gbit/s** (2 / seal + open ns per byte). The references use their own crypto libraries; the ceiling is this project's.",
            f("two_core_ceiling_gbps", 2),
        );
    }

    // data path
    let impls = ["veth", "failoverd", "wireguard-go", "boringtun", "gotatun"];
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
            "| | veth (no tunnel) | failoverd | wireguard-go | boringtun | gotatun |\n|---|---|---|---|---|---|"
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
        if g(&["share_of_crypto_ceiling"]).is_some() {
            for (flows, label) in [
                ("flows1", "1 flow, share of the crypto ceiling"),
                ("flows4", "4 flows, share of the crypto ceiling"),
            ] {
                md.push_str(&row(label, &|i| {
                    g(&["share_of_crypto_ceiling", "by_path", i, flows])
                        .and_then(Value::as_f64)
                        .map_or("–".into(), |v| format!("{:.1} %", v * 100.0))
                }));
            }
        }
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
        md.push_str(&row(
            "out-of-order segments at the receiver, 1 flow (TcpExtTCPOFOQueue, median)",
            &|i| fmt_num(g(&["tcp_ofo_queued", "by_path", i, "flows1"]), 0),
        ));
        let _ = writeln!(
            md,
            "\nfailoverd vs the best reference ({} single flow, {} CPU; the best of wireguard-go, boringtun and gotatun that ran): 1 flow {}x, 4 flows {}x, CPU per Gbit {}x; failoverd reaches {} of plain veth routing.",
            s(&["ratios", "best_reference_flows1"]),
            s(&["ratios", "best_reference_cpu"]),
            fmt_num(g(&["ratios", "failoverd_flows1_to_best_reference"]), 2),
            fmt_num(g(&["ratios", "failoverd_flows4_to_best_reference"]), 2),
            fmt_num(g(&["ratios", "failoverd_cpu_per_gbps_to_best_reference"]), 2),
            g(&["ratios", "failoverd_flows1_to_veth"])
                .and_then(Value::as_f64)
                .map_or("–".into(), |v| format!("{:.0} %", v * 100.0)),
        );
        let _ = writeln!(
            md,
            "\nOut-of-order segments: the receiver's TcpExtTCPOFOQueue across the run, segments it queued out of order, because they were reordered on the way or came after a lost one. The share of the crypto ceiling compares each path with 2 cores sealing and opening with this project's crypto (above)."
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
    if let Some(rt) = g(&["routed"]) {
        routed_markdown(&mut md, rt, g(&["failover"]));
    }
    if let Some(w) = g(&["wan"]) {
        wan_markdown(&mut md, w);
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
            "\n## Memory (failoverd client, VmRSS)\n\n| state | RSS, MiB |\n|---|---|\n| 3 idle tunnels | {} |\n| 3 tunnels, {} tracked flows | {} |\n| the same, after 8 s of iperf3 at full speed (1 and 4 flows, both ways) | {} |",
            fmt_num(g(&["rss_mib", "idle_3_tunnels"]), 1),
            g(&["rss_mib", "flows_tracked"]).and_then(Value::as_u64).unwrap_or(0),
            fmt_num(g(&["rss_mib", "flows_10k_before_load"]).or(g(&["rss_mib", "flows_10k"])), 1),
            fmt_num(g(&["rss_mib", "flows_10k_after_load"]), 1),
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

/// The wide-area section: per profile, failoverd beside the watchdog under the same profile.
fn wan_markdown(md: &mut String, w: &Value) {
    let _ = writeln!(
        md,
        "\n## Wide area (through the impairment relay; verified TCP stream both ways)\n"
    );
    let cell = |v: &Value, path: &[&str]| {
        let mut x = Some(v);
        for p in path {
            x = x.and_then(|x| x.get(*p));
        }
        fmt_num(x, 0)
    };
    let _ = writeln!(
        md,
        "| profile | RTT dc1 / dc2 ms | detect p50 / p99 ms | stall down p50 / p99 ms | stall up p50 / p99 ms | survived | false switches (soak) | target: stall p99 ≤ | met | watchdog detect p50 / p99 ms | watchdog stall p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in ["seed", "wifi", "intercontinental"] {
        let Some(v) = w.get(p) else { continue };
        let f = v.pointer("/failoverd").unwrap_or(&Value::Null);
        let wd = v.pointer("/watchdog").unwrap_or(&Value::Null);
        let _ = writeln!(
            md,
            "| {p} | {} / {} | {} / {} | {} / {} | {} / {} | {}/{} | {} in {} s | {} ms | {} | {} / {} | {} / {} |",
            cell(v, &["rtt_ms", "dc1"]),
            cell(v, &["rtt_ms", "dc2"]),
            cell(f, &["detect_ms", "p50"]),
            cell(f, &["detect_ms", "p99"]),
            cell(f, &["stall_down_ms", "p50"]),
            cell(f, &["stall_down_ms", "p99"]),
            cell(f, &["stall_up_ms", "p50"]),
            cell(f, &["stall_up_ms", "p99"]),
            cell(f, &["survived"]),
            cell(f, &["injections"]),
            cell(v, &["soak", "false_switches"]),
            cell(v, &["soak", "secs"]),
            cell(v, &["target", "bound_ms"]),
            match v.pointer("/target/met").unwrap_or(&Value::Null).as_bool() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            },
            cell(wd, &["detect_ms", "p50"]),
            cell(wd, &["detect_ms", "p99"]),
            cell(wd, &["stall_ms", "p50"]),
            cell(wd, &["stall_ms", "p99"]),
        );
    }
    let r = w.pointer("/relay").unwrap_or(&Value::Null);
    let _ = writeln!(
        md,
        "\nThe original paper: {}. The relay itself sustained {} Mbit/s of TCP at seed delay with {} CPU-s per Gbit ({} of one core), {} kernel drops: above every rate in this section.",
        w.pointer("/paper").unwrap_or(&Value::Null).as_str().unwrap_or("?"),
        fmt_num(r.get("mbit_s"), 0),
        fmt_num(r.get("relay_cpu_s_per_gbit"), 2),
        fmt_num(r.get("relay_cpu_share_of_one_core"), 2),
        fmt_num(r.get("kernel_drops"), 0),
    );
}

/// The routed lab beside the shared-segment lab of the same run.
fn routed_markdown(md: &mut String, rt: &Value, shared: Option<&Value>) {
    let _ = writeln!(
        md,
        "\n## Routed datacenters (return path by BGP through BIRD, beside the shared segment)\n"
    );
    let cell = |v: Option<&Value>, path: &str| fmt_num(v.and_then(|v| v.pointer(path)), 0);
    let _ = writeln!(
        md,
        "| figure | routed p50 | p99 | shared segment p50 | p99 |\n|---|---|---|---|---|"
    );
    for (k, label) in [
        ("detect_ms", "detection: fault → switch, ms"),
        ("stall_down_ms", "stall at the client (download), ms"),
        ("stall_up_ms", "stall at the server (upload), ms"),
        ("stall_ms", "receiver stall, worst direction, ms"),
        (
            "return_path_convergence_ms",
            "return path: switch → backbone FIB moved, ms",
        ),
    ] {
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} |",
            cell(Some(rt), &format!("/{k}/p50")),
            cell(Some(rt), &format!("/{k}/p99")),
            cell(shared, &format!("/{k}/p50")),
            cell(shared, &format!("/{k}/p99")),
        );
    }
    let _ = writeln!(
        md,
        "\nRouted: {} injections, {} survived, {} bytes corrupted. Target (routed stall p99 within 50 ms of the shared segment's): {}.",
        cell(Some(rt), "/injections"),
        cell(Some(rt), "/survived"),
        cell(Some(rt), "/bytes_corrupted"),
        match rt.pointer("/target/met").and_then(Value::as_bool) {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not judged",
        }
    );
}
