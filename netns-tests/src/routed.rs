//! The routed lab: datacenters that share no segment. Each datacenter's gateway claims with the
//! `route` backend; BIRD beside it learns those kernel routes (protocol 209) and announces them
//! over eBGP with BFD to a backbone router (BIRD in its own namespace) in front of the server.
//! The BIRD configurations are the ones shipped in `dist/bird/`, with the addresses of the lab.
//!
//! ```text
//!  client ─ wan ─┬─ dc1 [failoverd gateway, claim=route, BIRD AS 65011] in0 198.19.11.11 ─┐
//!                ├─ dc2 [... AS 65012]                                  in0 198.19.12.11 ─┤
//!                └─ dc3 [... AS 65013]                                  in0 198.19.13.11 ─┤
//!                                     backbone [BIRD AS 65000, bb1..bbN .1, bb0 198.19.0.1]
//!                                                  │
//!                                     server eth0 198.19.0.100 (default via the backbone)
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::lab::{dc_underlay_ip, wait_until, Daemon, Lab, Ns, Topology, CLIENT_UNDERLAY_IP};
use crate::scenario::{
    keypair, start_client, start_gateway_with, start_stream_server, wait_claimed, DcEntry,
    FailoverLab, GatewayOptions, ReturnPath, DEFAULT_MTU,
};

/// BIRD beside a gateway, as shipped.
pub const GATEWAY_CONF: &str = include_str!("../../dist/bird/gateway.conf");
/// BIRD on the backbone, as shipped.
pub const BACKBONE_CONF: &str = include_str!("../../dist/bird/backbone.conf");

/// How long BGP sessions get to come up.
const SESSION_WAIT: Duration = Duration::from_secs(20);

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Datacenter `i`'s (1-based) inside address, on its link to the backbone: 198.19.(10+i).11.
pub fn dc_link_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, octet(i), 11)
}

fn octet(i: usize) -> u8 {
    u8::try_from(10 + i.min(89)).unwrap_or(99)
}

/// One BIRD process of the lab.
#[derive(Debug, Clone)]
pub struct Bird {
    /// its namespace
    pub ns: Ns,
    /// the process (`bird -f`)
    pub daemon: Daemon,
    /// its control socket, for `birdc -s`
    pub socket: PathBuf,
}

impl Bird {
    /// `birdc -s SOCK ARGS...`'s output.
    pub fn birdc(&self, lab: &Lab, args: &[&str]) -> io::Result<String> {
        let sock = self.socket.display().to_string();
        let mut words = vec!["birdc", "-s", sock.as_str()];
        words.extend_from_slice(args);
        let out = lab.exec_unchecked(&self.ns, &words)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// What the routed lab adds to a [`FailoverLab`].
#[derive(Debug, Clone)]
pub struct Routed {
    /// BIRD beside each gateway, dc1 first
    pub dc_birds: Vec<Bird>,
    /// BIRD on the backbone
    pub backbone: Bird,
}

impl Routed {
    /// The datacenter (1-based) the backbone's FIB sends `addr` to, if any.
    pub fn backbone_via(&self, lab: &Lab, addr: IpAddr) -> Option<usize> {
        let out = lab
            .exec_unchecked(
                &self.backbone.ns,
                &["ip", "route", "show", &addr.to_string()],
            )
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let via: Ipv4Addr = text
            .split_whitespace()
            .skip_while(|w| *w != "via")
            .nth(1)?
            .parse()
            .ok()?;
        (1..=self.dc_birds.len()).find(|i| dc_link_ip(*i) == via)
    }

    /// Waits until the backbone routes `addr` to datacenter `i`.
    pub fn wait_backbone_via(
        &self,
        lab: &Lab,
        addr: IpAddr,
        i: usize,
        timeout: Duration,
    ) -> io::Result<()> {
        wait_until(
            timeout,
            &format!("the backbone to route {addr} to dc{i}"),
            || self.backbone_via(lab, addr) == Some(i),
        )
    }

    /// Waits until every BGP session of the backbone is Established.
    pub fn wait_sessions(&self, lab: &Lab) -> io::Result<()> {
        let n = self.dc_birds.len();
        wait_until(SESSION_WAIT, "BGP sessions Established", || {
            self.backbone
                .birdc(lab, &["show", "protocols"])
                .map(|t| t.matches("Established").count() >= 2 * n)
                .unwrap_or(false)
        })
    }
}

/// Starts `bird -f` in `ns` with `config` (the process is named `name`; its files are
/// `<lab>/<name>.{conf,ctl,pid}`).
pub fn start_bird(lab: &Lab, ns: &Ns, name: &str, config: &str) -> io::Result<Bird> {
    let conf = lab.dir().join(format!("{name}.conf"));
    let socket = lab.dir().join(format!("{name}.ctl"));
    let pid = lab.dir().join(format!("{name}.pid"));
    std::fs::write(&conf, config)?;
    let daemon = lab.spawn(
        ns,
        name,
        &[
            "bird".to_owned(),
            "-f".into(),
            "-c".into(),
            conf.display().to_string(),
            "-s".into(),
            socket.display().to_string(),
            "-P".into(),
            pid.display().to_string(),
        ],
    )?;
    // BIRD creates its control socket before it reads its configuration (and leaves it behind
    // when the configuration is refused): up means it answers on it
    let sock = socket.display().to_string();
    wait_until(
        Duration::from_secs(10),
        &format!("{name} to answer"),
        || {
            !daemon.is_running()
                || lab
                    .exec_unchecked(ns, &["birdc", "-s", sock.as_str(), "show", "status"])
                    .is_ok_and(|o| o.status.success() && daemon.is_running())
        },
    )?;
    if !daemon.is_running() {
        return Err(other(format!(
            "{name} (bird) exited: {}{} (is Debian's bird2 installed? scripts/setup installs it)",
            daemon.read_stderr(),
            daemon.read_stdout()
        )));
    }
    Ok(Bird {
        ns: ns.clone(),
        daemon,
        socket,
    })
}

/// The shipped gateway configuration with datacenter `i`'s addresses and AS.
pub fn gateway_conf(i: usize) -> String {
    GATEWAY_CONF
        .replace("198.19.11.", &format!("198.19.{}.", octet(i)))
        .replace("fd00:19:11::", &format!("fd00:19:{}::", octet(i)))
        .replace("65011", &format!("650{}", octet(i)))
}

/// The shipped backbone configuration with a session pair per datacenter.
pub fn backbone_conf(n: usize) -> String {
    let (head, _) = BACKBONE_CONF
        .split_once("protocol bgp dc1v4")
        .unwrap_or((BACKBONE_CONF, ""));
    let mut conf = head.to_owned();
    for i in 1..=n {
        let o = octet(i);
        conf.push_str(&format!(
            "protocol bgp dc{i}v4 from datacenter4 {{ neighbor 198.19.{o}.11 as 650{o}; }}\n\
             protocol bgp dc{i}v6 from datacenter6 {{ neighbor fd00:19:{o}::11 as 650{o}; }}\n"
        ));
    }
    conf
}

impl FailoverLab {
    /// The routed lab with `n` datacenters (1..=9), a client naming all of them, and a stream
    /// server; returns once every BGP session is up, dc1 claims the client and the backbone
    /// routes the client's address to dc1.
    pub fn routed(test: &str, n: usize, extra_client_config: &str) -> io::Result<(Self, Routed)> {
        if !(1..=9).contains(&n) {
            return Err(other(format!(
                "the routed lab has 1..=9 datacenters, not {n}"
            )));
        }
        let lab = Lab::new(test)?;
        let wan = lab.add_ns("wan")?;
        lab.bridge(&wan, "brwan")?;
        let backbone = lab.add_ns("bb")?;
        lab.sysctl(&backbone, "net.ipv4.ip_forward", "1")?;
        lab.sysctl(&backbone, "net.ipv6.conf.all.forwarding", "1")?;

        let client = lab.add_ns("client")?;
        lab.veth_to_bridge(&client, "up0", &wan, "brwan")?;
        lab.addr(&client, "up0", &format!("{CLIENT_UNDERLAY_IP}/24"))?;

        let server = lab.add_ns("server")?;
        lab.veth(&server, "eth0", &backbone, "bb0")?;
        lab.addr(&server, "eth0", &format!("{}/24", Topology::SERVER_IP4))?;
        lab.addr(&server, "eth0", &format!("{}/64", Topology::SERVER_IP6))?;
        lab.addr(&backbone, "bb0", "198.19.0.1/24")?;
        lab.addr(&backbone, "bb0", "fd00:19::1/64")?;
        lab.route(&server, "default via 198.19.0.1")?;
        lab.route(&server, "default via fd00:19::1")?;

        let mut dcs = Vec::with_capacity(n);
        for i in 1..=n {
            let o = octet(i);
            let dc = lab.add_ns(&format!("dc{i}"))?;
            lab.veth_to_bridge(&dc, "wan0", &wan, "brwan")?;
            lab.addr(&dc, "wan0", &format!("{}/24", dc_underlay_ip(i)))?;
            let bb_if = format!("bb{i}");
            lab.veth(&dc, "in0", &backbone, &bb_if)?;
            lab.addr(&dc, "in0", &format!("198.19.{o}.11/24"))?;
            lab.addr(&dc, "in0", &format!("fd00:19:{o}::11/64"))?;
            lab.addr(&backbone, &bb_if, &format!("198.19.{o}.1/24"))?;
            lab.addr(&backbone, &bb_if, &format!("fd00:19:{o}::1/64"))?;
            lab.route(&dc, &format!("198.19.0.0/24 via 198.19.{o}.1"))?;
            lab.route(&dc, &format!("fd00:19::/64 via fd00:19:{o}::1"))?;
            lab.sysctl(&dc, "net.ipv4.ip_forward", "1")?;
            lab.sysctl(&dc, "net.ipv6.conf.all.forwarding", "1")?;
            dcs.push(dc);
        }
        let topo = Topology {
            client,
            server,
            wan,
            core: backbone.clone(),
            dcs,
            relay: None,
        };
        let check = Duration::from_secs(5);
        lab.wait_reachable(&topo.client, IpAddr::V4(dc_underlay_ip(1)), check)?;
        lab.wait_reachable(&topo.server, IpAddr::V4(dc_link_ip(1)), check)?;

        let backbone_bird = start_bird(&lab, &backbone, "bird-bb", &backbone_conf(n))?;
        let mut dc_birds = Vec::with_capacity(n);
        for (k, ns) in topo.dcs.iter().enumerate() {
            dc_birds.push(start_bird(
                &lab,
                ns,
                &format!("bird-dc{}", k + 1),
                &gateway_conf(k + 1),
            )?);
        }
        let routed = Routed {
            dc_birds,
            backbone: backbone_bird,
        };
        routed.wait_sessions(&lab)?;

        let client_key = keypair(&lab, "client")?;
        let mut gateways = Vec::with_capacity(n);
        let mut entries = Vec::with_capacity(n);
        for (k, ns) in topo.dcs.iter().enumerate() {
            let name = format!("dc{}", k + 1);
            let key = keypair(&lab, &name)?;
            let options = GatewayOptions {
                config: format!(
                    "claim = [\"route\"]\nrouting_daemon_socket = \"{}\"\n",
                    routed
                        .dc_birds
                        .get(k)
                        .map_or(PathBuf::new(), |b| b.socket.clone())
                        .display()
                ),
                prefix: Vec::new(),
                client: String::new(),
            };
            gateways.push(start_gateway_with(
                &lab,
                ns,
                &name,
                &key,
                &client_key.public,
                ("100.96.0.1", "fd00:96::1"),
                ReturnPath::Claim,
                DEFAULT_MTU,
                &options,
            )?);
            entries.push(DcEntry::failoverd(k + 1, &key.public));
        }
        let server_daemon = start_stream_server(&lab, &topo)?;
        let client_running = if extra_client_config.is_empty() {
            start_client(&lab, &topo.client, &client_key, &entries)?
        } else {
            crate::scenario::start_client_with(
                &lab,
                &topo.client,
                &client_key,
                &entries,
                extra_client_config,
            )?
        };
        if let Some(first) = gateways.first() {
            wait_claimed(first)?;
        }
        routed.wait_backbone_via(
            &lab,
            IpAddr::V4(
                crate::scenario::STABLE_V4
                    .parse()
                    .map_err(|_| other("stable"))?,
            ),
            1,
            Duration::from_secs(10),
        )?;
        Ok((
            FailoverLab {
                lab,
                topo,
                client: client_running,
                gateways,
                server: server_daemon,
            },
            routed,
        ))
    }
}

/// `ip -ts monitor route` in `ns` (the backbone), from now on: its output says when the FIB
/// changed, to the microsecond.
pub fn monitor_routes(lab: &Lab, ns: &Ns, name: &str) -> io::Result<Daemon> {
    let d = lab.spawn(
        ns,
        name,
        &["env", "TZ=UTC", "ip", "-ts", "monitor", "route"],
    )?;
    // it subscribes at once; a moment for the process to get there
    std::thread::sleep(Duration::from_millis(100));
    Ok(d)
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `[2026-12-06T06:45:34.061736]` (UTC) prefix of an `ip -ts monitor` line, as Unix ms.
pub fn parse_monitor_ts(line: &str) -> Option<u64> {
    let ts = line.strip_prefix('[')?.split(']').next()?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs * 1000 + micros / 1000).ok()
}

/// When (Unix ms) the monitored FIB first sent the client's stable IPv4 address to datacenter
/// `i`, at or after `after`.
pub fn routed_to_at(mon: &Daemon, i: usize, after: u64) -> Option<u64> {
    let via = format!("via {}", dc_link_ip(i));
    let dst = format!("{} ", crate::scenario::STABLE_V4);
    mon.read_stdout().lines().find_map(|l| {
        let t = parse_monitor_ts(l)?;
        (t >= after && !l.contains("Deleted") && l.contains(&dst) && l.contains(&via)).then_some(t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_timestamps_parse_as_utc() {
        assert_eq!(
            parse_monitor_ts("[2026-12-06T06:45:34.061736] 10.9.9.9 dev lo proto 209"),
            Some(1_796_539_534_061)
        );
        assert_eq!(parse_monitor_ts("[1970-01-01T00:00:01.5] x"), Some(1500));
        assert_eq!(parse_monitor_ts("10.9.9.9 dev lo"), None);
        assert_eq!(parse_monitor_ts("[2026-13] x"), None);
    }

    #[test]
    fn the_shipped_configs_get_the_lab_addresses() {
        let g = gateway_conf(2);
        assert!(g.contains("local 198.19.12.11 as 65012;"), "{g}");
        assert!(g.contains("neighbor 198.19.12.1 as 65000;"), "{g}");
        assert!(g.contains("neighbor fd00:19:12::1 as 65000;"), "{g}");
        let b = backbone_conf(3);
        assert!(
            b.contains("protocol bgp dc3v4 from datacenter4 { neighbor 198.19.13.11 as 65013; }"),
            "{b}"
        );
        assert!(!b.contains("dc4v4"), "{b}");
    }
}
