//! The routed lab: the failover injections again where the return path moves by BGP (BIRD
//! beside each gateway and on the backbone, the configuration shipped in `dist/bird/`), with the
//! return-path convergence (the client's switch → the backbone's FIB changed) measured from
//! `ip -ts monitor route` on the backbone; beside the shared-segment figures of the same run.

use super::*;
use netns_tests::routed::{monitor_routes, routed_to_at};

impl Bench {
    pub(crate) fn routed(&mut self) -> Result<()> {
        let bytes = self.opts.stream_bytes;
        let per_kind = self.opts.injections;
        let mut rng = (unix_millis() ^ 0x524f_5554_4544_2121) | 1;
        let (mut fl, _routed) = FailoverLab::routed("bench-routed", 2, "failback = false\n")?;
        self.command("bird -f -c dist/bird/gateway.conf (per dc, its addresses) / dist/bird/backbone.conf (backbone); failoverd gateway with claim = [\"route\"]");
        self.command("ip netns exec <backbone> ip -ts monitor route  (when the FIB moved)");
        let mon = monitor_routes(&fl.lab, &fl.topo.core, "monitor")?;
        let mut injections = Vec::new();
        let mut convergence = Vec::new();
        for i in 0..per_kind * Kind::ALL.len() {
            let kind = Kind::ALL
                .get(i % Kind::ALL.len())
                .copied()
                .unwrap_or(Kind::Blackhole);
            let inj = inject_ours(&mut fl, kind, i, bytes, &mut rng)
                .map_err(|e| other(format!("routed: injection {i} ({}): {e}", kind.label())))?;
            let to: usize = inj.to.trim_start_matches("dc").parse().unwrap_or(0);
            let conv = inj.switch_unix_ms.and_then(|at| {
                // the FIB may move a moment before the client's switch record (the claim is made
                // on the probe that carries the new intent): look from 50 ms before it
                routed_to_at(&mon, to, at.saturating_sub(50)).map(|t| t as f64 - at as f64)
            });
            eprintln!(
                "  routed    {} convergence {}",
                inj.line(),
                conv.map_or("none".into(), |c| format!("{c:.0} ms"))
            );
            if let Some(c) = conv {
                convergence.push(c);
            }
            injections.push(inj);
        }
        let mut block = injections_block(&injections);
        let shared_stall_p99 = self
            .results
            .get("failover")
            .and_then(|f| f.pointer("/stall_ms/p99"))
            .and_then(Value::as_f64);
        let routed_stall_p99 = block.pointer("/stall_ms/p99").and_then(Value::as_f64);
        if let Some(m) = block.as_object_mut() {
            m.insert("return_path_convergence_ms".into(), p50_p99(&convergence));
            m.insert(
                "convergence_definition".into(),
                json!("the client's switch record to the backbone's FIB sending the client's address to the new datacenter (ip -ts monitor route); negative when the claim landed before the switch was logged"),
            );
            m.insert(
                "target".into(),
                json!({
                    "what": "routed stall p99 within 50 ms of the shared-segment stall p99 (same run)",
                    "shared_segment_stall_p99_ms": round(shared_stall_p99),
                    "routed_stall_p99_ms": round(routed_stall_p99),
                    "met": shared_stall_p99.zip(routed_stall_p99).map(|(s, r)| r <= s + 50.0),
                }),
            );
        }
        self.results.insert("routed".into(), block);
        Ok(())
    }
}
