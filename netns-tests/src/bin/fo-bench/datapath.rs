//! The data path: iperf3 through failoverd, the references and plain veth, interleaved;
//! CPU per Gbit, ping RTT, the out-of-order segments the receiver queued, and each throughput as
//! a share of the crypto ceiling (the `crypto` section, when it ran).

use super::*;

impl Bench {
    // -------------------------------------------------------------------------- data path

    /// `references`: the userspace WireGuard implementations to run beside failoverd, by name
    /// (wireguard-go, and boringtun and gotatun when their binaries were given).
    pub(crate) fn datapath(
        &mut self,
        references: &[(&'static str, WgImpl)],
    ) -> Result<DatapathSummary> {
        let mut paths = vec![PathUnderTest::veth()?, PathUnderTest::failoverd()?];
        for (name, imp) in references {
            paths.push(PathUnderTest::userspace_wg(name, imp)?);
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
                                "  rep {rep} {:>12} P{flows}: {:.3} Gbit/s, cpu {:?} s, receiver out-of-order {:?}",
                                p.name, r.gbps, r.cpu_s, r.ofo_queued
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
        let mut ofo = serde_json::Map::new();
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
            let o = |v: &[IperfRun]| v.iter().map(|r| r.ofo_queued).collect::<Vec<_>>();
            let ofo_median = |v: &[IperfRun]| {
                median(
                    &v.iter()
                        .filter_map(|r| r.ofo_queued)
                        .map(|n| n as f64)
                        .collect::<Vec<_>>(),
                )
            };
            ofo.insert(
                p.name.into(),
                json!({
                    "flows1": count_value(ofo_median(&r1)),
                    "flows4": count_value(ofo_median(&r4)),
                    "runs_flows1": o(&r1),
                    "runs_flows4": o(&r4),
                }),
            );
            ping.insert(
                p.name.into(),
                round(rtts.get(p.name).and_then(|v| median(v))),
            );
        }
        // the best reference: the best of wireguard-go, boringtun and gotatun
        let refs = REFERENCES;
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
            "tcp_ofo_queued".into(),
            json!({
                "unit": "TcpExtTCPOFOQueue delta in the receiving (server) namespace across each iperf3 run: segments the receiver had to queue out of order (reordered, or behind a lost one)",
                "by_path": Value::Object(ofo),
            }),
        );
        let ceiling = self
            .results
            .get("crypto")
            .and_then(|c| c.get("two_core_ceiling_gbps"))
            .and_then(Value::as_f64)
            .filter(|c| *c > 0.0);
        if let Some(ceiling) = ceiling {
            let mut share = serde_json::Map::new();
            for p in paths.iter().filter(|p| p.name != "veth") {
                let m = medians.get(p.name).copied().unwrap_or((None, None, None));
                share.insert(
                    p.name.into(),
                    json!({
                        "flows1": round(m.0.map(|g| g / ceiling)),
                        "flows4": round(m.1.map(|g| g / ceiling)),
                    }),
                );
            }
            self.results.insert(
                "share_of_crypto_ceiling".into(),
                json!({
                    "ceiling_gbps": rounded(ceiling),
                    "by_path": Value::Object(share),
                }),
            );
        }
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
}

/// A median of counts: a whole number as an integer, a half (of an even count of runs) as is.
fn count_value(v: Option<f64>) -> Value {
    match v {
        Some(x) if x.fract() == 0.0 && x >= 0.0 => json!(x as u64),
        other => round(other),
    }
}

/// The reference implementations, in the tables' order; "the best reference" is the best of
/// those that ran.
pub(crate) const REFERENCES: [&str; 3] = ["wireguard-go", "boringtun", "gotatun"];

/// One path's medians: 1-flow Gbit/s, 4-flow Gbit/s, 1-flow CPU-s per Gbit.
pub(crate) type PathMedians = (Option<f64>, Option<f64>, Option<f64>);

/// What the data-path section tells the rest.
#[derive(Debug)]
pub(crate) struct DatapathSummary {
    pub(crate) targets_met: bool,
}

// ------------------------------------------------------------------------------ data path

/// The iperf3 server's port (5201 is the stream verifier's).
pub(crate) const IPERF_PORT: u16 = 5301;

/// One iperf3 run.
#[derive(Debug, Clone, Default)]
pub(crate) struct IperfRun {
    pub(crate) gbps: f64,
    pub(crate) bytes: u64,
    pub(crate) retransmits: u64,
    pub(crate) cpu_s: Option<f64>,
    pub(crate) cpu_per_gbit: Option<f64>,
    /// TcpExtTCPOFOQueue's delta at the receiver across the run, when it was read
    pub(crate) ofo_queued: Option<u64>,
}

pub(crate) use netns_tests::measure::net_counters;

/// The receiver's out-of-order queueing counter (see [`net_counters`]).
pub(crate) const OFO_COUNTER: &str = "TcpExtTCPOFOQueue";

pub(crate) fn start_iperf_server(lab: &Lab, server: &Ns) -> Result<Daemon> {
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
pub(crate) fn iperf_run(
    lab: &Lab,
    client: &Ns,
    flows: u32,
    secs: u64,
    endpoints: &[u32],
) -> Result<IperfRun> {
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
        ofo_queued: None,
    })
}

/// Whatever owns the namespaces of one path.
pub(crate) enum Holder {
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
pub(crate) struct PathUnderTest {
    pub(crate) name: &'static str,
    pub(crate) holder: Holder,
    pub(crate) client: Ns,
    /// the receiver of the iperf3 runs
    pub(crate) server: Ns,
    /// the tunnel endpoint processes whose CPU time counts
    pub(crate) endpoints: Vec<Daemon>,
    pub(crate) _iperf: Daemon,
    pub(crate) commands: Vec<String>,
}

impl PathUnderTest {
    pub(crate) fn lab(&self) -> &Lab {
        match &self.holder {
            Holder::Plain(l) => l,
            Holder::Failover(f) => &f.lab,
        }
    }

    pub(crate) fn finish(
        name: &'static str,
        holder: Holder,
        topo: &Topology,
        endpoints: Vec<Daemon>,
        commands: Vec<String>,
    ) -> Result<Self> {
        let mut p = Self {
            name,
            client: topo.client.clone(),
            server: topo.server.clone(),
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
    pub(crate) fn veth() -> Result<Self> {
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
    pub(crate) fn failoverd() -> Result<Self> {
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
    pub(crate) fn userspace_wg(name: &'static str, imp: &WgImpl) -> Result<Self> {
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

    pub(crate) fn iperf(&self, flows: u32, secs: u64) -> Result<IperfRun> {
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
        let ofo = || -> Result<u64> {
            net_counters(self.lab(), &self.server)?
                .get(OFO_COUNTER)
                .copied()
                .ok_or_else(|| other(format!("no {OFO_COUNTER} in /proc/net/netstat")))
        };
        let before = ofo()?;
        let mut run = iperf_run(self.lab(), &self.client, flows, secs, &pids)?;
        run.ofo_queued = Some(ofo()?.saturating_sub(before));
        Ok(run)
    }

    pub(crate) fn ping(&self, count: usize) -> Result<Vec<f64>> {
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
pub(crate) fn wait_ping(lab: &Lab, client: &Ns) -> Result<()> {
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
