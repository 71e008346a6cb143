//! The laptop's side of the lab: what a client on the move lives through, and the tools to
//! measure it.
//!
//! - [`NatLab`]: the standard topology with a home router between the client and the
//!   datacenters' underlay. The client has two uplinks into the router (`wlan0`, "Wi-Fi", and
//!   `eth0`, "Ethernet", on different subnets); the router source-NATs each onto its own public
//!   address on the `brwan` bridge, with a random port for every new mapping (so a flushed
//!   mapping comes back with another port, as after a home router's reboot):
//!
//! ```text
//!   client wlan0 198.18.1.2/24 ── lana 198.18.1.1 ┐ ns nat: SNAT (fully random ports)
//!   client eth0  198.18.2.2/24 ── lanb 198.18.2.1 ┘   wan0 198.18.0.1 (for a), 198.18.0.2 (for b)
//!                                                      │
//!                                    brwan (the standard topology's underlay, dc1 .11, dc2 .12 ...)
//! ```
//!
//! - [`Dnsmasq`] and [`NetnsEtc`]: a real resolver (Debian's `dnsmasq-base`) answering from a
//!   hosts file it re-reads on SIGHUP, and the client namespace's own `/etc/resolv.conf`
//!   (`ip netns exec` bind-mounts `/etc/netns/<ns>/resolv.conf`), removed when the guard drops.
//! - [`UdpEcho`] and [`UdpPinger`]: a round trip through the tunnel, timed to the 10 ms.
//! - [`NftCounter`], [`route_get`]: what leaves through the uplink, what reaches a gateway.
//! - [`cpu_seconds`]: a process's CPU time, from `/proc/<pid>/stat`.
//! - [`start_client_named`] and [`restart_client`]: a client started without waiting for its
//!   tunnels (its endpoints' names may not resolve yet), or started again after a crash.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lab::{bin_path, wait_until, Daemon, Lab, Ns, Topology};
pub use crate::measure::cpu_seconds;
use crate::scenario::{
    client_config_text, start_client_with, start_datacenters, wait_claimed, wait_for_socket,
    DcEntry, FailoverLab, KeyPair, Running,
};

type Result<T> = io::Result<T>;

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The lab's clock (measuring what the daemons do is IO code).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// The client's Wi-Fi uplink (first default route).
pub const UPLINK_A: &str = "wlan0";
/// The client's Ethernet uplink (the default route moves here).
pub const UPLINK_B: &str = "eth0";
/// The client's address on uplink a.
pub const CLIENT_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The client's address on uplink b.
pub const CLIENT_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// The router's address on uplink a (the client's first gateway).
pub const ROUTER_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The router's address on uplink b.
pub const ROUTER_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// What the datacenters see of traffic from uplink a.
pub const PUBLIC_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// What the datacenters see of traffic from uplink b.
pub const PUBLIC_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// A next hop on `brwan` for a client's default route in the standard topology (the address
/// [`with_default_route`] gives the bridge in `wan`).
pub const INTERNET_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

/// The standard topology with a NAT router between the client and the underlay; see the
/// module docs.
#[derive(Debug)]
pub struct NatLab {
    /// the namespaces
    pub lab: Lab,
    /// the topology (its `client` reaches `brwan` only through `nat`)
    pub topo: Topology,
    /// the home router
    pub nat: Ns,
    /// the client daemon
    pub client: Running,
    /// the gateway daemons, dc1 first
    pub gateways: Vec<Running>,
    /// the stream server
    pub server: Daemon,
}

impl NatLab {
    /// Builds it with `n` datacenters, the client's default route via uplink a, starts the
    /// gateways, the stream server and the client (extra `[client]` lines `extra`), and waits
    /// until every tunnel is established and dc1 claims the client.
    pub fn new(test: &str, n: usize, extra: &str) -> Result<Self> {
        let mut lab = Lab::new(test)?;
        let topo = Topology::build(&mut lab, n)?;
        let nat = behind_nat(&lab, &topo)?;
        let dcs = start_datacenters(&lab, &topo, &[])?;
        let client = start_client_with(&lab, &topo.client, &dcs.client_key, &dcs.entries, extra)?;
        if let Some(first) = dcs.gateways.first() {
            wait_claimed(first)?;
        }
        Ok(Self {
            lab,
            topo,
            nat,
            client,
            gateways: dcs.gateways,
            server: dcs.server,
        })
    }

    /// Moves the client's default route from uplink a to uplink b the way a laptop does when
    /// Ethernet is plugged in and Wi-Fi turned off: a default route via b with a lower metric,
    /// then a's link down. Returns when both are done.
    pub fn move_to_uplink_b(&self) -> Result<()> {
        self.lab.route_replace(
            &self.topo.client,
            &format!("default via {ROUTER_B} dev {UPLINK_B} metric 50"),
        )?;
        self.lab.down(&self.topo.client, UPLINK_A)
    }

    /// Flushes every NAT mapping of the router (`conntrack -F`); returns how long the command
    /// took (the flush happened somewhere inside that time).
    pub fn flush_nat(&self) -> Result<Duration> {
        let t = now();
        self.lab.exec(&self.nat, &["conntrack", "-F"])?;
        Ok(t.elapsed())
    }

    /// The client's endpoint as gateway `i` (1-based) has it now.
    pub fn endpoint_at(&self, i: usize) -> Option<String> {
        self.gateways
            .get(i.checked_sub(1)?)
            .and_then(gateway_client_endpoint)
    }
}

/// Takes the client of `topo` off `brwan` and puts it behind a NAT router (namespace `nat`,
/// returned); see the module docs. Checks that the client reaches dc1 through it.
pub fn behind_nat(lab: &Lab, topo: &Topology) -> Result<Ns> {
    lab.exec(&topo.client, &["ip", "link", "del", "up0"])?;
    let nat = lab.add_ns("nat")?;
    lab.veth_to_bridge(&nat, "wan0", &topo.wan, "brwan")?;
    lab.addr(&nat, "wan0", &format!("{PUBLIC_A}/24"))?;
    lab.addr(&nat, "wan0", &format!("{PUBLIC_B}/24"))?;
    lab.veth(&topo.client, UPLINK_A, &nat, "lana")?;
    lab.veth(&topo.client, UPLINK_B, &nat, "lanb")?;
    lab.addr(&nat, "lana", &format!("{ROUTER_A}/24"))?;
    lab.addr(&nat, "lanb", &format!("{ROUTER_B}/24"))?;
    lab.addr(&topo.client, UPLINK_A, &format!("{CLIENT_A}/24"))?;
    lab.addr(&topo.client, UPLINK_B, &format!("{CLIENT_B}/24"))?;
    lab.sysctl(&nat, "net.ipv4.ip_forward", "1")?;
    lab.nft(
        &nat,
        &format!(
            "table ip fo_nat {{\n\
             \tchain post {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\toifname \"wan0\" ip saddr 198.18.1.0/24 snat to {PUBLIC_A} fully-random\n\
             \t\toifname \"wan0\" ip saddr 198.18.2.0/24 snat to {PUBLIC_B} fully-random\n\
             \t}}\n\
             }}\n"
        ),
    )?;
    lab.route(
        &topo.client,
        &format!("default via {ROUTER_A} dev {UPLINK_A} metric 100"),
    )?;
    lab.wait_reachable(
        &topo.client,
        Topology::dc_underlay_ip(1).into(),
        Duration::from_secs(5),
    )?;
    Ok(nat)
}

/// A [`FailoverLab`] whose client has a default route out of its uplink (via
/// [`INTERNET_ROUTER`], an address of `brwan`), set before the client starts: what fails open
/// or leaks would take that route.
pub fn with_default_route(test: &str, n: usize, extra: &str) -> Result<FailoverLab> {
    let mut lab = Lab::new(test)?;
    let topo = Topology::build(&mut lab, n)?;
    lab.addr(&topo.wan, "brwan", &format!("{INTERNET_ROUTER}/24"))?;
    lab.route(
        &topo.client,
        &format!("default via {INTERNET_ROUTER} dev up0"),
    )?;
    let dcs = start_datacenters(&lab, &topo, &[])?;
    let client = start_client_with(&lab, &topo.client, &dcs.client_key, &dcs.entries, extra)?;
    if let Some(first) = dcs.gateways.first() {
        wait_claimed(first)?;
    }
    Ok(FailoverLab {
        lab,
        topo,
        client,
        gateways: dcs.gateways,
        server: dcs.server,
    })
}

/// The endpoint a gateway has for its (only) client, `ip:port`.
pub fn gateway_client_endpoint(gateway: &Running) -> Option<String> {
    gateway
        .status()
        .ok()?
        .get("clients")?
        .get(0)?
        .get("endpoint")?
        .as_str()
        .map(str::to_owned)
}

/// Starts a client named `name` (log files, `<name>.toml`, `<name>.sock`) with `dcs` and the
/// extra `[client]` lines, and waits for its control socket; with `established`, also until
/// every tunnel is up. Unlike [`start_client_with`] it can start a client whose tunnels cannot
/// come up yet.
pub fn start_client_named(
    lab: &Lab,
    ns: &Ns,
    name: &str,
    key: &KeyPair,
    dcs: &[DcEntry],
    extra: &str,
    established: bool,
) -> Result<Running> {
    let control = lab.dir().join(format!("{name}.sock"));
    let config = lab.dir().join(format!("{name}.toml"));
    fs::write(&config, client_config_text(key, &control, dcs, extra))?;
    spawn_client(lab, ns, name, config, control, established)
}

/// Starts a new client process (named `name`) with `previous`'s configuration file and control
/// socket, e.g. after `previous` was killed; waits until every tunnel is established.
pub fn restart_client(lab: &Lab, ns: &Ns, name: &str, previous: &Running) -> Result<Running> {
    spawn_client(
        lab,
        ns,
        name,
        previous.config.clone(),
        previous.control.clone(),
        true,
    )
}

fn spawn_client(
    lab: &Lab,
    ns: &Ns,
    name: &str,
    config: PathBuf,
    control: PathBuf,
    established: bool,
) -> Result<Running> {
    let daemon = lab.spawn(
        ns,
        name,
        &[
            bin_path("failoverd").into_os_string(),
            "--config".into(),
            config.clone().into_os_string(),
        ],
    )?;
    wait_for_socket(&daemon, &control)?;
    let running = Running {
        daemon,
        control,
        config,
    };
    if established {
        running.wait_established()?;
    }
    Ok(running)
}

/// `ip route get DST` in `ns`: `Ok(the route)` or `Err(the error)` (a blackhole route answers
/// `RTNETLINK answers: Invalid argument`).
pub fn route_get(lab: &Lab, ns: &Ns, dst: &str) -> Result<std::result::Result<String, String>> {
    let out = lab.exec_unchecked(ns, &["ip", "route", "get", dst])?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    Ok(if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    })
}

/// `ip -4 route show type blackhole` and `ip -6 ...` in `ns`, one route a line.
pub fn blackhole_routes(lab: &Lab, ns: &Ns) -> Result<Vec<String>> {
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        let out = lab.exec(ns, &["ip", family, "route", "show", "type", "blackhole"])?;
        routes.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_owned()),
        );
    }
    Ok(routes)
}

/// An nftables counter in a namespace: one rule with `counter` in a table of its own.
#[derive(Debug, Clone)]
pub struct NftCounter {
    ns: Ns,
    table: String,
}

impl NftCounter {
    /// Installs `rule` (which must contain `counter`) in a base chain of table `inet TABLE` on
    /// `hook` with `priority`.
    pub fn install(
        lab: &Lab,
        ns: &Ns,
        table: &str,
        hook: &str,
        priority: i32,
        rule: &str,
    ) -> Result<Self> {
        lab.nft(
            ns,
            &format!(
                "table inet {table} {{\n\
                 \tchain c {{\n\
                 \t\ttype filter hook {hook} priority {priority}; policy accept;\n\
                 \t\t{rule}\n\
                 \t}}\n\
                 }}\n"
            ),
        )?;
        Ok(Self {
            ns: ns.clone(),
            table: table.to_owned(),
        })
    }

    /// Counts, in `ns`, packets for `prefix` (IPv4) leaving through `ifname`, sent or
    /// forwarded: what leaks out of the uplink.
    pub fn leaks(lab: &Lab, ns: &Ns, ifname: &str, prefix: &str) -> Result<Self> {
        Self::install(
            lab,
            ns,
            "fo_leak",
            "postrouting",
            0,
            &format!("oifname \"{ifname}\" ip daddr {prefix} counter"),
        )
    }

    /// Counts, in a datacenter's namespace, WireGuard handshake initiations (148-byte
    /// messages) arriving for its gateway, before any fault rule of the input hook sees them.
    pub fn handshake_initiations(lab: &Lab, ns: &Ns) -> Result<Self> {
        Self::install(
            lab,
            ns,
            "fo_initiations",
            "prerouting",
            -300,
            &format!(
                "udp dport {} udp length 156 counter",
                crate::scenario::WG_PORT
            ),
        )
    }

    /// Packets counted so far.
    pub fn packets(&self, lab: &Lab) -> Result<u64> {
        let out = lab.exec(&self.ns, &["nft", "list", "table", "inet", &self.table])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| other(format!("no counter in {text}")))
    }
}

/// Sends `n` UDP datagrams from `ns` to `to`; returns how many sends the kernel accepted.
pub fn send_udp(lab: &Lab, ns: &Ns, to: SocketAddr, n: usize) -> Result<usize> {
    lab.run_in(ns, || -> Result<usize> {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        Ok((0..n)
            .filter(|i| s.send_to(format!("leak? {i}").as_bytes(), to).is_ok())
            .count())
    })?
}

/// A UDP echo server in a namespace (a thread of the test process); stops when dropped.
#[derive(Debug)]
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Echoes every datagram to UDP `port` of every address of `ns`.
    pub fn start(lab: &Lab, ns: &Ns, port: u16) -> Result<Self> {
        let socket = lab.run_in(ns, || UdpSocket::bind(("0.0.0.0", port)))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if let Some(data) = buf.get(..n) {
                        let _ = socket.send_to(data, from);
                    }
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Times round trips to a [`UdpEcho`] from a namespace.
#[derive(Debug)]
pub struct UdpPinger {
    socket: UdpSocket,
    serial: u64,
}

impl UdpPinger {
    /// A socket in `ns`.
    pub fn new(lab: &Lab, ns: &Ns) -> Result<Self> {
        let socket = lab.run_in(ns, || UdpSocket::bind(("0.0.0.0", 0)))??;
        Ok(Self { socket, serial: 0 })
    }

    /// Sends a request to `target` every `every` until one of this call's requests is echoed;
    /// the time from the call to that answer, or `None` after `timeout`.
    pub fn until_answered(
        &mut self,
        target: SocketAddr,
        every: Duration,
        timeout: Duration,
    ) -> Result<Option<Duration>> {
        self.serial += 1;
        let tag = self.serial.to_be_bytes();
        let start = now();
        let mut next_send = start;
        let mut buf = [0u8; 64];
        loop {
            let t = now();
            if t.duration_since(start) > timeout {
                return Ok(None);
            }
            if t >= next_send {
                // a failed send (no route yet) is just a lost request
                let _ = self.socket.send_to(&tag, target);
                next_send = t + every;
            }
            let wait = next_send
                .saturating_duration_since(now())
                .max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(wait))?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) if buf.get(..n) == Some(&tag[..]) => {
                    return Ok(Some(start.elapsed()));
                }
                // an older call's answer, a timeout, or an ICMP error (unreachable) of a
                // request: the answer is still to come
                Ok(_) | Err(_) => {}
            }
        }
    }
}

/// Files under `/etc/netns/<ns>/` that `ip netns exec` bind-mounts over `/etc/` for the
/// processes it starts in that namespace; the directory is removed when this drops.
#[derive(Debug)]
pub struct NetnsEtc {
    dir: PathBuf,
}

impl NetnsEtc {
    /// `/etc/netns/<ns>/resolv.conf` naming `nameserver` only, one try of 1 s per lookup.
    /// Create it before starting the processes that should see it.
    pub fn resolv_conf(ns: &Ns, nameserver: Ipv4Addr) -> Result<Self> {
        let dir = Path::new("/etc/netns").join(ns.name());
        fs::create_dir_all(&dir)?;
        let guard = Self { dir };
        fs::write(
            guard.dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:1 attempts:1\n"),
        )?;
        Ok(guard)
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("remove {}: {e}", self.dir.display());
        }
        // /etc/netns itself goes too if we were its only user
        let _ = fs::remove_dir("/etc/netns");
    }
}

/// Debian's dnsmasq as the lab's resolver: authoritative for the names of a hosts file it
/// re-reads on SIGHUP, forwarding nothing, caching nothing (TTL 0), listening on one address
/// of a namespace. Started and stopped by the test.
#[derive(Debug)]
pub struct Dnsmasq {
    ns: Ns,
    listen: Ipv4Addr,
    hosts: PathBuf,
    pid_file: PathBuf,
    daemon: Option<Daemon>,
    starts: u32,
}

impl Dnsmasq {
    /// Prepares (does not start) a resolver in `ns` on `listen` (an address `ns` has), with
    /// these `(name, address)` records.
    pub fn new(lab: &Lab, ns: &Ns, listen: Ipv4Addr, records: &[(&str, Ipv4Addr)]) -> Result<Self> {
        let this = Self {
            ns: ns.clone(),
            listen,
            hosts: lab.dir().join("lab.hosts"),
            pid_file: lab.dir().join("dnsmasq.pid"),
            daemon: None,
            starts: 0,
        };
        this.write_hosts(records)?;
        Ok(this)
    }

    fn write_hosts(&self, records: &[(&str, Ipv4Addr)]) -> Result<()> {
        let text: String = records
            .iter()
            .map(|(name, addr)| format!("{addr} {name}\n"))
            .collect();
        fs::write(&self.hosts, text)
    }

    /// Starts it and waits until it listens on port 53.
    pub fn start(&mut self, lab: &Lab) -> Result<()> {
        if self.daemon.as_ref().is_some_and(Daemon::is_running) {
            return Ok(());
        }
        self.starts += 1;
        let daemon = lab.spawn(
            &self.ns,
            &format!("dnsmasq-{}", self.starts),
            &[
                "dnsmasq".to_owned(),
                "--keep-in-foreground".into(),
                "--conf-file=/dev/null".into(),
                "--no-resolv".into(),
                "--no-hosts".into(),
                format!("--addn-hosts={}", self.hosts.display()),
                format!("--listen-address={}", self.listen),
                "--bind-interfaces".into(),
                "--port=53".into(),
                "--user=root".into(),
                "--group=root".into(),
                format!("--pid-file={}", self.pid_file.display()),
                "--log-facility=-".into(),
                "--log-queries".into(),
                "--local-ttl=0".into(),
                "--no-negcache".into(),
            ],
        )?;
        let bound = lab.wait_udp_bound(&self.ns, 53);
        if !daemon.is_running() {
            return Err(other(format!("dnsmasq exited: {}", daemon.read_stderr())));
        }
        bound?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// Stops it (SIGKILL): lookups are refused from now on (ICMP port unreachable).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.kill()?;
        }
        Ok(())
    }

    /// Replaces the records; a running resolver re-reads them (SIGHUP) before this returns.
    pub fn set_records(&self, records: &[(&str, Ipv4Addr)]) -> Result<()> {
        self.write_hosts(records)?;
        let Some(d) = self.daemon.as_ref().filter(|d| d.is_running()) else {
            return Ok(());
        };
        let reads = |d: &Daemon| d.read_stderr().matches("read ").count();
        let before = reads(d);
        d.signal(libc::SIGHUP)?;
        wait_until(
            Duration::from_secs(5),
            "dnsmasq to re-read its hosts",
            || reads(d) > before,
        )
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.daemon
            .as_ref()
            .map(Daemon::read_stderr)
            .unwrap_or_default()
    }
}

/// The lines of a daemon's log (stderr) that tell its story: health changes, switches,
/// resumes ("did not run"), network changes, endpoint names; without terminal colours.
pub fn daemon_events(daemon: &Daemon) -> Vec<String> {
    const WORDS: [&str; 7] = [
        "health changed",
        "switched",
        "did not run",
        "network changed",
        "endpoint resolved",
        "resolving the endpoint failed",
        "fail open",
    ];
    daemon
        .read_stderr()
        .lines()
        .map(strip_ansi)
        .filter(|l| WORDS.iter().any(|w| l.contains(w)))
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
