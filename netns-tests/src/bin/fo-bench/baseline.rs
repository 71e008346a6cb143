//! The watchdog baseline: two wireguard-go tunnels and a ping watchdog that swaps routes.

use super::*;

// ------------------------------------------------------------------------------ baseline

/// The watchdog users script today: `bash` in the client namespace.
pub(crate) const WATCHDOG: &str = r#"#!/usr/bin/env bash
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
pub(crate) struct Baseline {
    pub(crate) lab: Lab,
    pub(crate) topo: Topology,
    pub(crate) client_key: KeyPair,
    pub(crate) dc_keys: Vec<KeyPair>,
    pub(crate) client_ifs: Vec<String>,
    pub(crate) dc_ifs: Vec<String>,
    pub(crate) dc_daemons: Vec<Daemon>,
    pub(crate) watchdog: Daemon,
    pub(crate) _server: Daemon,
}

impl Baseline {
    /// The baseline lab, at `profile`'s distances.
    pub(crate) fn build(profile: Profile) -> Result<Self> {
        let mut lab = Lab::new(&format!("bench-wd-{}", profile.label()))?;
        let topo = Topology::build_with(&mut lab, 2, profile)?;
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
    pub(crate) fn switches(&self) -> Vec<(u64, usize)> {
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

    pub(crate) fn active(&self) -> usize {
        self.switches().last().map_or(0, |s| s.1)
    }

    pub(crate) fn rx_bytes(&self, i: usize) -> u64 {
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

    pub(crate) fn inject(
        &mut self,
        kind: Kind,
        n: usize,
        bytes: u64,
        rng: &mut u64,
    ) -> Result<Injection> {
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
pub(crate) fn start_dc_wg(
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
pub(crate) fn wait_tunnel(lab: &Lab, client: &Ns, ifs: &[String], i: usize) -> Result<()> {
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
