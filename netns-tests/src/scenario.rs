//! Building blocks of the end-to-end scenarios: keys, our daemons with real config files,
//! wireguard-go peers, control-socket queries, and verified streams. Used by the integration
//! tests and by the demo, so both exercise exactly the same setup.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::impair::Profile;
use crate::lab::{bin_path, wait_until, Daemon, Lab, Ns, Topology};
use crate::stream::SendReport;

/// The client's stable inner addresses in every scenario.
pub const STABLE_V4: &str = "100.96.0.2";
/// IPv6 stable address.
pub const STABLE_V6: &str = "fd00:96::2";
/// The TCP port of the stream server.
pub const STREAM_PORT: u16 = 5201;
/// WireGuard port of every gateway.
pub const WG_PORT: u16 = 51820;

type Result<T> = std::io::Result<T>;

fn other(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

/// A key pair written to `<dir>/<name>.key` (0600) with its public key.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// the private key file
    pub private_file: PathBuf,
    /// base64 public key
    pub public: String,
}

/// A pre-shared key made by `failoverd genpsk`, in a file of the lab's directory (mode 0600).
pub fn preshared_key(lab: &Lab, name: &str) -> Result<PathBuf> {
    let out = std::process::Command::new(bin_path("failoverd"))
        .arg("genpsk")
        .output()?;
    if !out.status.success() || out.stdout.len() != 45 {
        return Err(other(format!(
            "failoverd genpsk printed {} bytes",
            out.stdout.len()
        )));
    }
    let file = lab.dir().join(format!("{name}.psk"));
    std::fs::write(&file, &out.stdout)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Makes a key pair with `failoverd genkey` / `failoverd pubkey`.
pub fn keypair(lab: &Lab, name: &str) -> Result<KeyPair> {
    let failoverd = bin_path("failoverd");
    let out = std::process::Command::new(&failoverd)
        .arg("genkey")
        .output()?;
    if !out.status.success() {
        return Err(other("failoverd genkey failed"));
    }
    let private_file = lab.dir().join(format!("{name}.key"));
    std::fs::write(&private_file, &out.stdout)?;
    std::fs::set_permissions(&private_file, std::fs::Permissions::from_mode(0o600))?;
    let mut child = std::process::Command::new(&failoverd)
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| other("no stdin"))?
        .write_all(&out.stdout)?;
    let pubout = child.wait_with_output()?;
    let public = String::from_utf8_lossy(&pubout.stdout).trim().to_owned();
    if public.len() != 44 {
        return Err(other(format!("failoverd pubkey printed {public:?}")));
    }
    Ok(KeyPair {
        private_file,
        public,
    })
}

/// Asks a daemon's control socket for its status.
pub fn status(socket: &Path) -> Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| other(format!("bad status answer {line:?}: {e}")))
}

/// Sends one request (a JSON object) to a daemon's control socket and parses the answer.
pub fn control(socket: &Path, request: &serde_json::Value) -> Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = request.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer)
        .map_err(|e| other(format!("bad answer {answer:?} to {request}: {e}")))
}

/// A drop counter from a status answer's `drops` object (0 when absent).
pub fn drop_count(drops: &serde_json::Value, label: &str) -> u64 {
    drops
        .get(label)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// One of our daemons running in a namespace.
#[derive(Debug)]
pub struct Running {
    /// the process
    pub daemon: Daemon,
    /// its control socket
    pub control: PathBuf,
    /// its config file
    pub config: PathBuf,
}

impl Running {
    /// The daemon's status.
    pub fn status(&self) -> Result<serde_json::Value> {
        status(&self.control)
    }

    /// Sends `request` (e.g. `{"v":1,"cmd":"tunnels"}`) to the daemon's control socket.
    pub fn ask(&self, request: &serde_json::Value) -> Result<serde_json::Value> {
        control(&self.control, request)
    }

    /// A client's (or vmm-shim's) status, read into its `control-proto` type: an answer that
    /// does not fit is an error, so a renamed field fails here rather than reading as absent.
    pub fn client_status(&self) -> Result<control_proto::ClientStatus> {
        let answer = self.status()?;
        match control_proto::decode::<control_proto::Status>(answer) {
            Ok(control_proto::Status::Client(c)) => Ok(c),
            Ok(control_proto::Status::Shim(s)) => Ok(s.client),
            Ok(control_proto::Status::Gateway(_)) => Err(other("a gateway has no client status")),
            Err(e) => Err(other(format!("status: {e}"))),
        }
    }

    /// Waits until every tunnel of a client (or vmm-shim) is established.
    pub fn wait_established(&self) -> Result<()> {
        wait_until(
            Duration::from_secs(15),
            "every client tunnel established",
            || {
                self.client_status()
                    .is_ok_and(|s| s.datacenters.iter().all(|d| d.established))
            },
        )
    }

    /// A client's (or vmm-shim's) switch log.
    pub fn switches(&self) -> Result<Vec<SwitchRecord>> {
        Ok(self
            .client_status()?
            .switches
            .into_iter()
            .map(|e| SwitchRecord {
                unix_ms: e.unix_ms,
                from: e.from,
                to: e.to,
                reason: e.reason,
                detection_ms: e.detection_ms,
            })
            .collect())
    }

    /// The client's active datacenter.
    pub fn active(&self) -> Result<String> {
        Ok(self.client_status()?.active)
    }

    /// Bytes the client has received through all its tunnels.
    pub fn rx_bytes(&self) -> Result<u64> {
        Ok(self
            .client_status()?
            .datacenters
            .iter()
            .map(|d| d.rx_bytes)
            .sum())
    }

    /// Waits until `bytes` more have arrived through the client's tunnels (a stream is flowing).
    pub fn wait_flowing(&self, bytes: u64) -> Result<()> {
        let start = self.rx_bytes()?;
        wait_until(
            Duration::from_secs(30),
            "traffic to flow through the client",
            || self.rx_bytes().is_ok_and(|n| n >= start + bytes),
        )
    }

    /// Waits until the client's active datacenter is `name`.
    pub fn wait_active(&self, name: &str, timeout: Duration) -> Result<()> {
        wait_until(timeout, &format!("{name} to become active"), || {
            self.active().ok().as_deref() == Some(name)
        })
    }
}

/// How a gateway makes the client's return path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPath {
    /// claimed while the client's probes say this gateway is active (our client)
    Claim,
    /// claimed always (a plain WireGuard client sends no probes)
    Static,
}

/// Starts `failoverd gateway` in `ns` for one client, and waits for its control socket. The
/// gateway's inner addresses are host addresses on its TUN; the client's stable addresses are
/// claimed on `in0`, the datacenters' shared inside segment.
#[allow(clippy::too_many_arguments)]
pub fn start_gateway(
    lab: &Lab,
    ns: &Ns,
    name: &str,
    key: &KeyPair,
    client_public: &str,
    inner_v4: &str,
    inner_v6: &str,
    return_path: ReturnPath,
) -> Result<Running> {
    start_gateway_mtu(
        lab,
        ns,
        name,
        key,
        client_public,
        (inner_v4, inner_v6),
        return_path,
        DEFAULT_MTU,
    )
}

/// The tunnel MTU the lab uses unless a test says otherwise.
pub const DEFAULT_MTU: u16 = 1420;

/// [`start_gateway`] with a tunnel MTU.
#[allow(clippy::too_many_arguments)]
pub fn start_gateway_mtu(
    lab: &Lab,
    ns: &Ns,
    name: &str,
    key: &KeyPair,
    client_public: &str,
    inner: (&str, &str),
    return_path: ReturnPath,
    mtu: u16,
) -> Result<Running> {
    start_gateway_with(
        lab,
        ns,
        name,
        key,
        client_public,
        inner,
        return_path,
        mtu,
        &GatewayOptions::default(),
    )
}

/// What [`start_gateway_with`] adds to a gateway's defaults.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// extra lines for the `[gateway]` section (e.g. `metrics_listen = "127.0.0.1:9582"`)
    pub config: String,
    /// words run before `failoverd` (e.g. `["env", "RUST_LOG=trace"]`); it must exec the rest
    pub prefix: Vec<String>,
    /// extra lines for the client's `[[client]]` section (e.g. `preshared_key_file = "…"`)
    pub client: String,
}

/// [`start_gateway_mtu`] with extra `[gateway]` lines and a command prefix.
#[allow(clippy::too_many_arguments)]
pub fn start_gateway_with(
    lab: &Lab,
    ns: &Ns,
    name: &str,
    key: &KeyPair,
    client_public: &str,
    (inner_v4, inner_v6): (&str, &str),
    return_path: ReturnPath,
    mtu: u16,
    options: &GatewayOptions,
) -> Result<Running> {
    let control = lab.dir().join(format!("{name}.sock"));
    let config = lab.dir().join(format!("{name}.toml"));
    let return_path = match return_path {
        ReturnPath::Claim => "claim",
        ReturnPath::Static => "static",
    };
    std::fs::write(
        &config,
        format!(
            r#"[gateway]
private_key_file = "{key}"
listen_port = {WG_PORT}
address = ["{inner_v4}/32", "{inner_v6}/128"]
interface = "fogw0"
inside_interface = "in0"
mtu = {mtu}
control_socket = "{control}"
{extra}
[[client]]
name = "laptop"
public_key = "{client_public}"
allowed_ips = ["{STABLE_V4}/32", "{STABLE_V6}/128"]
return_path = "{return_path}"
{client_extra}"#,
            key = key.private_file.display(),
            control = control.display(),
            extra = options.config,
            client_extra = options.client,
        ),
    )?;
    let mut args: Vec<std::ffi::OsString> = options.prefix.iter().map(Into::into).collect();
    args.extend([
        bin_path("failoverd").into_os_string(),
        "gateway".into(),
        "--config".into(),
        config.clone().into_os_string(),
    ]);
    let daemon = lab.spawn(ns, name, &args)?;
    wait_for_socket(&daemon, &control)?;
    Ok(Running {
        daemon,
        control,
        config,
    })
}

/// Starts a failoverd gateway in each of the topology's datacenters (dc i at inner address
/// 100.96.0.1, the same in every datacenter), all claiming on the shared inside segment.
pub fn start_gateways(
    lab: &Lab,
    topo: &Topology,
    client_public: &str,
) -> Result<(Vec<KeyPair>, Vec<Running>)> {
    start_gateways_mtu(lab, topo, client_public, &[])
}

/// [`start_gateways`] with per-datacenter MTUs (missing ones are [`DEFAULT_MTU`]).
pub fn start_gateways_mtu(
    lab: &Lab,
    topo: &Topology,
    client_public: &str,
    mtus: &[u16],
) -> Result<(Vec<KeyPair>, Vec<Running>)> {
    let mut keys = Vec::new();
    let mut running = Vec::new();
    for (i, ns) in topo.dcs.iter().enumerate() {
        let name = format!("dc{}", i + 1);
        let key = keypair(lab, &name)?;
        running.push(start_gateway_mtu(
            lab,
            ns,
            &name,
            &key,
            client_public,
            ("100.96.0.1", "fd00:96::1"),
            ReturnPath::Claim,
            mtus.get(i).copied().unwrap_or(DEFAULT_MTU),
        )?);
        keys.push(key);
    }
    Ok((keys, running))
}

/// One datacenter as the client's config names it.
#[derive(Debug, Clone)]
pub struct DcEntry {
    /// name
    pub name: String,
    /// underlay endpoint
    pub endpoint: String,
    /// gateway public key
    pub public: String,
    /// `gateway` (a failoverd gateway) or `icmp` (a plain WireGuard server)
    pub probe: &'static str,
    /// the probe target inside the tunnel
    pub probe_address: String,
    /// tunnel MTU
    pub mtu: u16,
    /// the pre-shared key file, if any
    pub preshared_key_file: Option<PathBuf>,
}

impl DcEntry {
    /// Datacenter `i` (1-based) of the topology, served by a failoverd gateway.
    pub fn failoverd(i: usize, public: &str) -> Self {
        Self {
            name: format!("dc{i}"),
            endpoint: format!("{}:{WG_PORT}", Topology::dc_underlay_ip(i)),
            public: public.to_owned(),
            probe: "gateway",
            probe_address: "100.96.0.1".into(),
            mtu: DEFAULT_MTU,
            preshared_key_file: None,
        }
    }
}

/// The `[[datacenter]]` sections of a client configuration.
pub fn datacenter_sections(dcs: &[DcEntry]) -> String {
    dcs.iter()
        .map(|dc| {
            let psk = dc.preshared_key_file.as_ref().map_or_else(String::new, |f| {
                format!("preshared_key_file = \"{}\"\n", f.display())
            });
            format!(
                "\n[[datacenter]]\nname = \"{}\"\nendpoint = \"{}\"\npublic_key = \"{}\"\nmtu = {}\nprobe = \"{}\"\nprobe_address = \"{}\"\n{psk}",
                dc.name, dc.endpoint, dc.public, dc.mtu, dc.probe, dc.probe_address
            )
        })
        .collect()
}

/// Starts the `failoverd` client in `ns` and waits until every tunnel is established.
pub fn start_client(lab: &Lab, ns: &Ns, key: &KeyPair, dcs: &[DcEntry]) -> Result<Running> {
    start_client_with(lab, ns, key, dcs, "")
}

/// [`start_client`] with extra lines for the `[client]` section (e.g. `failback = false`).
pub fn start_client_with(
    lab: &Lab,
    ns: &Ns,
    key: &KeyPair,
    dcs: &[DcEntry],
    extra_client_config: &str,
) -> Result<Running> {
    start_client_cmd(lab, ns, key, dcs, extra_client_config, &[])
}

/// The client's configuration file text, as [`start_client_with`] writes it (at `control`).
pub fn client_config_text(
    key: &KeyPair,
    control: &Path,
    dcs: &[DcEntry],
    extra_client_config: &str,
) -> String {
    // the default interface name, unless the extra lines name their own
    let interface = if extra_client_config
        .lines()
        .any(|l| l.trim_start().starts_with("interface"))
    {
        ""
    } else {
        "interface = \"failover0\"\n"
    };
    let mut text = format!(
        r#"[client]
private_key_file = "{key}"
stable_address = ["{STABLE_V4}", "{STABLE_V6}"]
{interface}routes = ["198.19.0.0/16", "fd00:19::/64", "100.96.0.0/16", "fd00:96::/64"]
control_socket = "{control}"
"#,
        key = key.private_file.display(),
        control = control.display(),
    );
    text.push_str(extra_client_config);
    text.push_str(&datacenter_sections(dcs));
    text
}

/// [`start_client_with`], the command prefixed with `prefix` (e.g. `["env", "RUST_LOG=trace"]`;
/// it must exec the rest, so the daemon's PID is the spawned one).
pub fn start_client_cmd(
    lab: &Lab,
    ns: &Ns,
    key: &KeyPair,
    dcs: &[DcEntry],
    extra_client_config: &str,
    prefix: &[String],
) -> Result<Running> {
    let control = lab.dir().join("client.sock");
    let config = lab.dir().join("client.toml");
    std::fs::write(
        &config,
        client_config_text(key, &control, dcs, extra_client_config),
    )?;
    let mut args: Vec<std::ffi::OsString> = prefix.iter().map(Into::into).collect();
    args.extend([
        bin_path("failoverd").into_os_string(),
        "--config".into(),
        config.clone().into_os_string(),
    ]);
    let daemon = lab.spawn(ns, "failoverd-client", &args)?;
    wait_for_socket(&daemon, &control)?;
    let running = Running {
        daemon,
        control,
        config,
    };
    running.wait_established()?;
    Ok(running)
}

/// Waits until `daemon` answers on its control socket; an error with its stderr if it exits.
pub fn wait_for_socket(daemon: &Daemon, control: &Path) -> Result<()> {
    wait_until(Duration::from_secs(10), "daemon control socket", || {
        !daemon.is_running() || status(control).is_ok()
    })?;
    if !daemon.is_running() {
        return Err(other(format!(
            "{} exited: {}",
            daemon.name(),
            daemon.read_stderr()
        )));
    }
    Ok(())
}

/// Makes the VPN ranges on-link for the server: it resolves a client's stable address on the
/// shared inside segment, where the gateway that client made active claims it.
pub fn server_onlink_routes(lab: &Lab, topo: &Topology) -> Result<()> {
    lab.route_replace(&topo.server, "100.96.0.0/16 dev eth0")?;
    lab.route_replace(&topo.server, "fd00:96::/64 dev eth0")
}

/// Routes the VPN ranges from the server through datacenter `i` (for a plain WireGuard
/// server, whose return path is the datacenter's own business).
pub fn server_route_via(lab: &Lab, topo: &Topology, i: usize) -> Result<()> {
    lab.route_replace(
        &topo.server,
        &format!("100.96.0.0/16 via {}", Topology::dc_inside_ip4(i)),
    )?;
    lab.route_replace(
        &topo.server,
        &format!("fd00:96::/64 via {}", Topology::dc_inside_ip6(i)),
    )
}

/// Waits until gateway `running` no longer claims the client.
pub fn wait_released(running: &Running, timeout: Duration) -> Result<()> {
    wait_until(timeout, "the gateway to release the client", || {
        running
            .status()
            .ok()
            .and_then(|s| s.get("clients")?.get(0)?.get("claimed")?.as_bool())
            == Some(false)
    })
}

/// Waits until gateway `running` claims the client (its status says so).
pub fn wait_claimed(running: &Running) -> Result<()> {
    wait_until(
        Duration::from_secs(10),
        "the gateway to claim the client",
        || {
            running
                .status()
                .ok()
                .and_then(|s| s.get("clients")?.get(0)?.get("claimed")?.as_bool())
                == Some(true)
        },
    )
}

/// Starts the stream server on the server, listening on every address.
pub fn start_stream_server(lab: &Lab, topo: &Topology) -> Result<Daemon> {
    let d = lab.spawn(
        &topo.server,
        "stream-serve",
        &[
            bin_path("fo-lab").as_os_str(),
            "stream-serve".as_ref(),
            "--listen".as_ref(),
            format!("[::]:{STREAM_PORT}").as_ref(),
        ],
    )?;
    lab.wait_tcp_listening(&topo.server, STREAM_PORT)?;
    Ok(d)
}

/// Runs a verified stream from `ns` to the server at `server` with `bytes` each way.
pub fn run_stream(lab: &Lab, ns: &Ns, server: IpAddr, bytes: u64, seed: u64) -> Result<SendReport> {
    let target = match server {
        IpAddr::V4(a) => format!("{a}:{STREAM_PORT}"),
        IpAddr::V6(a) => format!("[{a}]:{STREAM_PORT}"),
    };
    let out = lab.exec_unchecked(
        ns,
        &[
            bin_path("fo-lab").display().to_string(),
            "stream-send".into(),
            "--connect".into(),
            target,
            "--up".into(),
            bytes.to_string(),
            "--down".into(),
            bytes.to_string(),
            "--seed".into(),
            seed.to_string(),
            "--timeout-secs".into(),
            "240".into(),
        ],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    SendReport::parse(&stdout).map_err(|e| {
        other(format!(
            "stream-send output {stdout:?} / {}: {e}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// Bytes per direction for the long verified streams: 200 MB, or `FAILOVER_STREAM_BYTES`.
pub fn stream_bytes() -> u64 {
    std::env::var("FAILOVER_STREAM_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000_000)
}

/// A short, unique interface name for a wireguard-go peer (its control socket under
/// /var/run/wireguard is not per namespace).
pub fn wg_ifname(lab: &Lab, role: &str) -> String {
    let id: String = lab
        .id()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let mut name = format!("wg{role}{id}");
    name.truncate(15);
    name
}

/// Starts Debian's wireguard-go in `ns` with interface `ifname`, configures it with `wg`.
/// `wg_args` follow `wg set IFNAME private-key FILE`.
pub fn start_wireguard_go(
    lab: &Lab,
    ns: &Ns,
    ifname: &str,
    key: &KeyPair,
    wg_args: &[&str],
    addresses: &[&str],
    routes: &[&str],
) -> Result<Daemon> {
    start_wg_impl(
        lab,
        ns,
        &WgImpl::WireguardGo,
        &format!("wireguard-go-{ifname}"),
        ifname,
        key,
        wg_args,
        addresses,
        routes,
    )
}

/// Checks a finished stream and panics (a test's failure) unless it stayed connected and every
/// byte was verified both ways. Returns the longest stall of either direction in ms.
pub fn check_stream(what: &str, report: &SendReport, bytes: u64) -> f64 {
    eprintln!("{what}: {}", describe(report));
    assert!(
        report.ok,
        "{what}: the connection did not survive: {}",
        describe(report)
    );
    assert_eq!(report.up.verified_by_server, bytes, "{what}: every byte up");
    assert_eq!(report.down.verified, bytes, "{what}: every byte down");
    assert_eq!((report.up.corrupt_at, report.down.corrupt_at), (None, None));
    report
        .down
        .longest_stall_ms
        .max(report.up.server_longest_stall_ms.unwrap_or(f64::INFINITY))
}

/// One line summing up a stream report, for logs and the demo.
pub fn describe(report: &SendReport) -> String {
    format!(
        "ok={} up {}/{} B verified by server (longest stall {:.1} ms), down {}/{} B verified ({:.0} Mbit/s, longest stall {:.1} ms), {:.0} ms{}",
        report.ok,
        report.up.verified_by_server,
        report.up.bytes_sent,
        report.up.server_longest_stall_ms.unwrap_or(f64::NAN),
        report.down.verified,
        report.down.bytes,
        report.down.goodput_mbps,
        report.down.longest_stall_ms,
        report.elapsed_ms,
        report.error.as_ref().map(|e| format!(", error: {e}")).unwrap_or_default(),
    )
}

/// A verified stream running in the background.
#[derive(Debug)]
pub struct BackgroundStream {
    /// the `fo-lab stream-send` process
    pub daemon: Daemon,
    /// bytes per direction
    pub bytes: u64,
}

/// Starts `fo-lab stream-send` from `ns` to the server's IPv4 address, `bytes` each way.
pub fn spawn_stream(
    lab: &Lab,
    ns: &Ns,
    name: &str,
    bytes: u64,
    seed: u64,
) -> Result<BackgroundStream> {
    spawn_stream_to(lab, ns, name, IpAddr::V4(Topology::SERVER_IP4), bytes, seed)
}

/// Starts `fo-lab stream-send` from `ns` to `server`, `bytes` each way.
pub fn spawn_stream_to(
    lab: &Lab,
    ns: &Ns,
    name: &str,
    server: IpAddr,
    bytes: u64,
    seed: u64,
) -> Result<BackgroundStream> {
    let target = std::net::SocketAddr::new(server, STREAM_PORT).to_string();
    let daemon = lab.spawn(
        ns,
        name,
        &[
            bin_path("fo-lab").display().to_string(),
            "stream-send".into(),
            "--connect".into(),
            target,
            "--up".into(),
            bytes.to_string(),
            "--down".into(),
            bytes.to_string(),
            "--seed".into(),
            seed.to_string(),
            "--timeout-secs".into(),
            "240".into(),
        ],
    )?;
    Ok(BackgroundStream { daemon, bytes })
}

impl BackgroundStream {
    /// Waits for the stream to end and parses its report.
    pub fn finish(&self) -> Result<SendReport> {
        self.daemon
            .wait_exit(Duration::from_secs(300))
            .ok_or_else(|| other("the stream did not finish in 300 s"))?;
        SendReport::parse(&self.daemon.read_stdout()).map_err(|e| {
            other(format!(
                "stream report: {e}; stderr: {}",
                self.daemon.read_stderr()
            ))
        })
    }
}

/// Wall-clock milliseconds since the Unix epoch (to compare with the daemon's switch log).
pub fn unix_millis() -> u64 {
    #[allow(clippy::disallowed_methods)] // wall time, compared with the daemon's event log
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Which way a fault drops WireGuard traffic at a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// client → datacenter and back
    Both,
    /// only what the client sends reaches nobody
    ToDatacenter,
    /// only what the datacenter sends back is lost
    ToClient,
}

/// Drops the gateway's WireGuard traffic inside datacenter namespace `ns` with nftables
/// (table `inet fo_fault`). Returns once the rules are in.
pub fn blackhole(lab: &Lab, ns: &Ns, direction: Direction) -> Result<()> {
    let input =
        format!("chain in {{ type filter hook input priority 0; udp dport {WG_PORT} drop; }}");
    let output =
        format!("chain out {{ type filter hook output priority 0; udp sport {WG_PORT} drop; }}");
    let body = match direction {
        Direction::Both => format!("{input}\n{output}"),
        Direction::ToDatacenter => input,
        Direction::ToClient => output,
    };
    lab.nft(ns, &format!("table inet fo_fault {{\n{body}\n}}\n"))
}

/// Removes [`blackhole`]'s rules.
pub fn heal(lab: &Lab, ns: &Ns) -> Result<()> {
    lab.exec(ns, &["nft", "delete", "table", "inet", "fo_fault"])
        .map(|_| ())
}

/// One switch from the client's log.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchRecord {
    /// wall clock, ms since the Unix epoch
    pub unix_ms: u64,
    /// from this datacenter
    pub from: String,
    /// to this one
    pub to: String,
    /// why
    pub reason: String,
    /// how long the old tunnel had been silent when declared down
    pub detection_ms: Option<f64>,
}

/// The datacenter side of a lab, ready for one client: a gateway per datacenter claiming on
/// the shared inside segment, and the stream server.
#[derive(Debug)]
pub struct Datacenters {
    /// the client's keys (the gateways know its public key)
    pub client_key: KeyPair,
    /// the client's `[[datacenter]]` entries
    pub entries: Vec<DcEntry>,
    /// the gateway daemons, dc1 first
    pub gateways: Vec<Running>,
    /// the stream server
    pub server: Daemon,
}

/// Starts a gateway in every datacenter of `topo` (tunnel MTUs from `mtus`, else
/// [`DEFAULT_MTU`]) and the stream server.
pub fn start_datacenters(lab: &Lab, topo: &Topology, mtus: &[u16]) -> Result<Datacenters> {
    let client_key = keypair(lab, "client")?;
    let (keys, gateways) = start_gateways_mtu(lab, topo, &client_key.public, mtus)?;
    server_onlink_routes(lab, topo)?;
    let entries = keys
        .iter()
        .enumerate()
        .map(|(i, k)| DcEntry {
            mtu: mtus.get(i).copied().unwrap_or(DEFAULT_MTU),
            ..DcEntry::failoverd(i + 1, &k.public)
        })
        .collect();
    let server = start_stream_server(lab, topo)?;
    Ok(Datacenters {
        client_key,
        entries,
        gateways,
        server,
    })
}

/// How [`FailoverLab::with_options`] builds a lab, beyond [`FailoverLab::new`]'s defaults.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// datacenters, each with a failoverd gateway (1..=89)
    pub datacenters: usize,
    /// how many of them (dc1 first) the client's configuration names; 0: all
    pub client_datacenters: usize,
    /// extra lines for the client's `[client]` section
    pub client_config: String,
    /// words run before the client's `failoverd` (e.g. `["env", "RUST_LOG=trace"]`)
    pub client_prefix: Vec<String>,
    /// chown the client's key file to this uid and gid before starting it
    pub client_key_owner: Option<(u32, u32)>,
    /// extra configuration and command prefix of every gateway
    pub gateway: GatewayOptions,
    /// wide-area profile of the lab; `None`: as `FO_PROFILE` says
    pub profile: Option<Profile>,
}

/// A client, N failoverd gateways on a shared inside segment, and a stream server.
#[derive(Debug)]
pub struct FailoverLab {
    /// the namespaces
    pub lab: Lab,
    /// the topology
    pub topo: Topology,
    /// the client daemon
    pub client: Running,
    /// the gateway daemons, dc1 first
    pub gateways: Vec<Running>,
    /// the stream server
    pub server: Daemon,
}

impl FailoverLab {
    /// Builds it and waits until dc1 claims the client.
    pub fn new(test: &str, n: usize, extra_client_config: &str) -> Result<Self> {
        Self::with_mtus(test, n, extra_client_config, &[])
    }

    /// [`FailoverLab::new`] with per-datacenter tunnel MTUs (missing ones are [`DEFAULT_MTU`]).
    pub fn with_mtus(
        test: &str,
        n: usize,
        extra_client_config: &str,
        mtus: &[u16],
    ) -> Result<Self> {
        let profile = Profile::from_env().map_err(|e| other(format!("FO_PROFILE: {e}")))?;
        Self::build(test, n, extra_client_config, mtus, profile)
    }

    /// [`FailoverLab::new`] at wide-area distances: the client reaches every datacenter
    /// through the lab's impairment relay set to `profile` (whatever `FO_PROFILE` says).
    pub fn with_profile(
        test: &str,
        n: usize,
        extra_client_config: &str,
        profile: Profile,
    ) -> Result<Self> {
        Self::build(test, n, extra_client_config, &[], profile)
    }

    fn build(
        test: &str,
        n: usize,
        extra_client_config: &str,
        mtus: &[u16],
        profile: Profile,
    ) -> Result<Self> {
        let mut lab = Lab::new(test)?;
        let topo = Topology::build_with(&mut lab, n, profile)?;
        let dcs = start_datacenters(&lab, &topo, mtus)?;
        let client = start_client_with(
            &lab,
            &topo.client,
            &dcs.client_key,
            &dcs.entries,
            extra_client_config,
        )?;
        if let Some(first) = dcs.gateways.first() {
            wait_claimed(first)?;
        }
        Ok(Self {
            lab,
            topo,
            client,
            gateways: dcs.gateways,
            server: dcs.server,
        })
    }

    /// A lab built as `options` says (gateways with extra configuration or a command prefix,
    /// a client naming only some datacenters, a client started through a prefix, ...). Waits
    /// until every configured tunnel is established and dc1 claims the client.
    pub fn with_options(test: &str, options: &LabOptions) -> Result<Self> {
        let mut lab = Lab::new(test)?;
        let topo = match options.profile {
            Some(p) => Topology::build_with(&mut lab, options.datacenters, p)?,
            None => Topology::build(&mut lab, options.datacenters)?,
        };
        let client_key = keypair(&lab, "client")?;
        let mut entries = Vec::new();
        let mut gateways = Vec::new();
        for (i, ns) in topo.dcs.iter().enumerate() {
            let name = format!("dc{}", i + 1);
            let key = keypair(&lab, &name)?;
            gateways.push(start_gateway_with(
                &lab,
                ns,
                &name,
                &key,
                &client_key.public,
                ("100.96.0.1", "fd00:96::1"),
                ReturnPath::Claim,
                DEFAULT_MTU,
                &options.gateway,
            )?);
            entries.push(DcEntry::failoverd(i + 1, &key.public));
        }
        server_onlink_routes(&lab, &topo)?;
        let server = start_stream_server(&lab, &topo)?;
        if options.client_datacenters > 0 {
            entries.truncate(options.client_datacenters);
        }
        if let Some((uid, gid)) = options.client_key_owner {
            std::os::unix::fs::chown(&client_key.private_file, Some(uid), Some(gid))?;
        }
        let client = start_client_cmd(
            &lab,
            &topo.client,
            &client_key,
            &entries,
            &options.client_config,
            &options.client_prefix,
        )?;
        if let Some(first) = gateways.first() {
            wait_claimed(first)?;
        }
        Ok(Self {
            lab,
            topo,
            client,
            gateways,
            server,
        })
    }

    /// The datacenter namespace of dc `i` (1-based).
    pub fn dc(&self, i: usize) -> Result<&Ns> {
        self.topo.dc(i).ok_or_else(|| other(format!("no dc{i}")))
    }

    /// The impairment relay, if the lab was built with a profile.
    pub fn relay(&self) -> Result<&crate::lab::Relay> {
        self.topo.relay()
    }

    /// The client's switch log.
    pub fn switches(&self) -> Result<Vec<SwitchRecord>> {
        self.client.switches()
    }

    /// The client's active datacenter.
    pub fn active(&self) -> Result<String> {
        self.client.active()
    }

    /// Bytes the client has received through all its tunnels.
    pub fn client_rx_bytes(&self) -> Result<u64> {
        self.client.rx_bytes()
    }

    /// Waits until `bytes` more have arrived through the client's tunnels (a stream is flowing).
    pub fn wait_flowing(&self, bytes: u64) -> Result<()> {
        self.client.wait_flowing(bytes)
    }

    /// Waits until the client's active datacenter is `name`.
    pub fn wait_active(&self, name: &str, timeout: Duration) -> Result<()> {
        self.client.wait_active(name, timeout)
    }
}

/// A userspace WireGuard implementation driven through the cross-platform UAPI (configured
/// with `wg`): Debian's wireguard-go, boringtun-cli or gotatun (gotatun-cli). All keep their
/// control socket at `/var/run/wireguard/<ifname>.sock`, which is not per namespace: give each
/// a unique name ([`wg_ifname`]).
#[derive(Debug, Clone)]
pub enum WgImpl {
    /// `wireguard-go -f IFNAME` (Debian's package)
    WireguardGo,
    /// `boringtun-cli -f --disable-drop-privileges IFNAME`, the binary at this path
    Boringtun(PathBuf),
    /// `gotatun -f --disable-drop-privileges IFNAME` (Mullvad's maintained userspace
    /// WireGuard, `cargo install gotatun-cli`), the binary at this path; in the foreground it
    /// logs to stdout (its `-l FILE` is for the daemonized mode only)
    Gotatun(PathBuf),
}

impl WgImpl {
    /// The command that starts it in the foreground for `ifname` (`env` execs the program, so
    /// the spawned PID is the implementation's own).
    pub fn command(&self, ifname: &str) -> Vec<String> {
        let words: Vec<String> = match self {
            Self::WireguardGo => vec![
                "env".into(),
                "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1".into(),
                "wireguard-go".into(),
                "-f".into(),
            ],
            // --disable-drop-privileges (WG_SUDO=1 in the environment is the same switch):
            // it stays root, which the lab's processes are anyway. No WG_SUDO needed with it.
            Self::Boringtun(bin) | Self::Gotatun(bin) => vec![
                bin.display().to_string(),
                "-f".into(),
                "--disable-drop-privileges".into(),
            ],
        };
        let mut words = words;
        words.push(ifname.to_owned());
        words
    }
}

/// [`start_wireguard_go`] for any [`WgImpl`], with the spawned process named `daemon_name`
/// (unique within the lab: a restarted peer needs a new name).
#[allow(clippy::too_many_arguments)]
pub fn start_wg_impl(
    lab: &Lab,
    ns: &Ns,
    imp: &WgImpl,
    daemon_name: &str,
    ifname: &str,
    key: &KeyPair,
    wg_args: &[&str],
    addresses: &[&str],
    routes: &[&str],
) -> Result<Daemon> {
    let daemon = lab.spawn(ns, daemon_name, &imp.command(ifname))?;
    let sock = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
    wait_until(
        Duration::from_secs(10),
        "the WireGuard control socket",
        || sock.exists() || !daemon.is_running(),
    )?;
    lab.wait_link(ns, ifname)?;
    if !daemon.is_running() {
        return Err(other(format!(
            "{daemon_name} exited: {}{}",
            daemon.read_stderr(),
            daemon.read_stdout()
        )));
    }
    let key_file = key.private_file.display().to_string();
    let mut args = vec!["wg", "set", ifname, "private-key", key_file.as_str()];
    args.extend_from_slice(wg_args);
    lab.exec(ns, &args)?;
    lab.exec(ns, &["ip", "link", "set", ifname, "mtu", "1420", "up"])?;
    for a in addresses {
        lab.addr(ns, ifname, a)?;
    }
    for r in routes {
        lab.exec(ns, &["ip", "route", "replace", r, "dev", ifname])?;
    }
    Ok(daemon)
}

/// Starts a gateway again from `old`'s configuration file (after it was killed), as a process
/// named `daemon_name`, and waits for its control socket. A SIGKILLed gateway could not release
/// its claim; the restarted one removes what it left behind (its proxy neighbour entries on
/// `in0`; the host routes went with its TUN) before it claims anything: the lab does not help.
pub fn restart_gateway(lab: &Lab, ns: &Ns, old: &Running, daemon_name: &str) -> Result<Running> {
    if old.daemon.is_running() {
        return Err(other(format!("{} is still running", old.daemon.name())));
    }
    let daemon = lab.spawn(
        ns,
        daemon_name,
        &[
            bin_path("failoverd").into_os_string(),
            "gateway".into(),
            "--config".into(),
            old.config.clone().into_os_string(),
        ],
    )?;
    wait_for_socket(&daemon, &old.control)?;
    Ok(Running {
        daemon,
        control: old.control.clone(),
        config: old.config.clone(),
    })
}

/// A client datacenter's health as its status says (`up`, `suspect`, `down`, `recovering`;
/// empty if unknown).
pub fn dc_health(client: &Running, dc: &str) -> String {
    client
        .client_status()
        .ok()
        .and_then(|s| {
            s.datacenters
                .iter()
                .find(|d| d.name == dc)
                .map(|d| d.health.label().to_owned())
        })
        .unwrap_or_default()
}

/// Loads random loss of `percent` % both ways on the gateway's WireGuard port in `ns` (table
/// `inet fo_fault`, removed by [`heal`]).
pub fn random_loss(lab: &Lab, ns: &Ns, percent: u8) -> Result<()> {
    lab.nft(
        ns,
        &format!(
            "table inet fo_fault {{\n chain in {{ type filter hook input priority 0; udp dport {WG_PORT} numgen random mod 100 < {percent} drop; }}\n chain out {{ type filter hook output priority 0; udp sport {WG_PORT} numgen random mod 100 < {percent} drop; }}\n}}\n"
        ),
    )
}

/// How long [`across_to`] waits for the switch after injecting the fault.
pub const SWITCH_WAIT: Duration = Duration::from_secs(5);

/// Bytes each way of one failover stream: [`stream_bytes`], at most 100 MB.
pub fn failover_bytes() -> u64 {
    stream_bytes().min(100_000_000)
}

/// One failover as a test sees it.
#[derive(Debug, Clone)]
pub struct Across {
    /// ms from injecting the fault to the switch
    pub detect_ms: u64,
    /// longest stall of either direction, ms
    pub stall_ms: f64,
    /// the switch
    pub switch: SwitchRecord,
}

/// Runs a verified stream (both ways) to `server`, injects `fault` once it flows, waits for the
/// switch to `next`, and checks every byte of the stream (panicking as [`check_stream`] does).
pub fn across_to(
    fl: &FailoverLab,
    what: &str,
    next: &str,
    seed: u64,
    server: IpAddr,
    fault: impl FnOnce(),
) -> Result<Across> {
    let n = failover_bytes();
    let stream = spawn_stream_to(
        &fl.lab,
        &fl.topo.client,
        &format!("stream{seed}"),
        server,
        n,
        seed,
    )?;
    fl.wait_flowing(20_000_000)?;
    let before = fl.switches()?.len();
    let injected = unix_millis();
    fault();
    fl.wait_active(next, SWITCH_WAIT)?;
    let report = stream.finish()?;
    check_stream(what, &report, n);
    let switches = fl.switches()?;
    let sw = switches
        .get(before)
        .cloned()
        .ok_or_else(|| other(format!("{what}: no switch was logged")))?;
    if sw.to != next {
        return Err(other(format!(
            "{what}: the first switch went to {}, not {next}",
            sw.to
        )));
    }
    let detect_ms = sw.unix_ms.saturating_sub(injected);
    let stall_ms = report
        .down
        .longest_stall_ms
        .max(report.up.server_longest_stall_ms.unwrap_or(0.0));
    eprintln!(
        "{what}: switch {} -> {} ({}) {detect_ms} ms after the fault (silent {:?} ms); longest stall {stall_ms:.0} ms",
        sw.from, sw.to, sw.reason, sw.detection_ms
    );
    Ok(Across {
        detect_ms,
        stall_ms,
        switch: sw,
    })
}

/// Bytes each way of one [`soak_streams`] stream.
pub const SOAK_STREAM_BYTES: u64 = 20_000_000;

/// Verified streams of [`SOAK_STREAM_BYTES`] each way, back to back, for `secs`, from the
/// client to the server (seeds from `first_seed` on). Returns how many ran; an error names the
/// first stream that lost or corrupted a byte.
pub fn soak_streams(fl: &FailoverLab, secs: u64, first_seed: u64) -> Result<u64> {
    let start = unix_millis();
    let mut streams = 0u64;
    while unix_millis().saturating_sub(start) < secs * 1000 {
        let n = SOAK_STREAM_BYTES;
        let report = run_stream(
            &fl.lab,
            &fl.topo.client,
            Topology::SERVER_IP4.into(),
            n,
            first_seed + streams,
        )?;
        if !(report.ok && report.down.verified == n && report.up.verified_by_server == n) {
            return Err(other(format!(
                "soak stream {streams}: {}",
                describe(&report)
            )));
        }
        streams += 1;
    }
    Ok(streams)
}
