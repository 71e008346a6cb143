//! Memory: the client's RSS idle, with tracked flows, and with those flows after traffic at full
//! speed has touched every batch buffer (the data path's buffers are counted, not just reserved).

use super::*;

impl Bench {
    // -------------------------------------------------------------------------- memory

    pub(crate) fn memory(&mut self) -> Result<()> {
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
        // then traffic at full speed both ways, 1 and 4 flows: the TUN's super-packets, the
        // receive batches and the coalesced writes all become resident
        let _iperf = start_iperf_server(&fl.lab, &fl.topo.server)?;
        let server = Topology::SERVER_IP4.to_string();
        let port = IPERF_PORT.to_string();
        for (parallel, reverse) in [("1", false), ("4", false), ("1", true), ("4", true)] {
            let mut args = vec![
                "iperf3", "-c", &server, "-p", &port, "-t", "2", "-P", parallel,
            ];
            if reverse {
                args.push("-R");
            }
            fl.lab.exec(&fl.topo.client, &args)?;
        }
        self.command(format!(
            "then iperf3 -c {server} -p {port} -t 2 with -P 1, -P 4, -P 1 -R, -P 4 -R; VmRSS again"
        ));
        let after_load = rss_mib(pid)?;
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
                "flows_10k": rounded(with_flows.max(after_load)),
                "flows_10k_before_load": rounded(with_flows),
                "flows_10k_after_load": rounded(after_load),
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
}

// ------------------------------------------------------------------------------ memory

pub(crate) fn keeper(client: &Running, field: &str) -> u64 {
    client
        .status()
        .ok()
        .and_then(|s| s.get("sessionkeeper")?.get(field)?.as_u64())
        .unwrap_or(0)
}
