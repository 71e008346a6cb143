//! The guest path: a real guest through vmm-shim beside QEMU's user networking.

use super::*;

impl Bench {
    // -------------------------------------------------------------------------- guest

    pub(crate) fn guest(&mut self) -> Result<()> {
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
}

// ------------------------------------------------------------------------------ guest

/// The guest's scenario: download `bytes` from `server` and print the report.
pub(crate) fn guest_script(server: &str, bytes: u64) -> String {
    format!(
        "fo-lab stream-send --connect {server}:{STREAM_PORT} --up 0 --down {bytes} \
         --seed 11 --timeout-secs 240 >/tmp/report.json\n\
         rc=$?\n\
         echo \"FO-STREAM $(cat /tmp/report.json)\"\n\
         exit $rc\n"
    )
}

pub(crate) fn guest_goodput(run: &guest::GuestRun, bytes: u64) -> Result<f64> {
    let report = run.stream_report()?;
    if !report.ok || report.down.verified != bytes {
        return Err(other(format!(
            "the guest's stream failed: {}",
            describe(&report)
        )));
    }
    Ok(report.down.goodput_mbps)
}

pub(crate) fn shim_guest_run(sl: &mut ShimLab, bytes: u64) -> Result<f64> {
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
pub(crate) struct UserNetLab {
    pub(crate) lab: Lab,
    pub(crate) ns: Ns,
    pub(crate) _server: Daemon,
}

impl UserNetLab {
    pub(crate) fn new(_image: &guest::GuestImage) -> Result<Self> {
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

    pub(crate) fn run(&self, image: &guest::GuestImage, r: usize, bytes: u64) -> Result<f64> {
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
