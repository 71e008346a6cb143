//! Configuration files, parsed into types at the edge.
//!
//! Two phases: serde reads the TOML into plain structs that reject unknown keys (a typo must not
//! silently switch a feature off), then [`ClientConfig::load`] / [`GatewayConfig::load`] turn
//! every value into a typed one. Every refusal is a [`ConfigError`] naming the file, the key and
//! the fix.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use std::time::Duration;

use probe::{Policy, ProbeConfig};
use serde::Deserialize;
use tunnel::{AllowedIps, Prefix, PrivateKey, PublicKey};

use crate::keyfile;

/// Config files longer than this are refused before parsing.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Bounds that keep a config from asking for absurd resources.
const MAX_DATACENTERS: usize = 64;
const MAX_PREFIXES: usize = 1024;

/// A refused configuration: the file, the key, what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}\n  fix: {fix}")]
pub struct ConfigError {
    /// the file
    pub file: PathBuf,
    /// the key, as a path (`datacenter[1].endpoint`)
    pub key: String,
    /// what is wrong
    pub problem: String,
    /// what to do
    pub fix: String,
}

/// The file being parsed, for errors that name it.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    file: &'a Path,
}

impl<'a> Ctx<'a> {
    /// For `file`.
    pub fn new(file: &'a Path) -> Self {
        Self { file }
    }

    /// A refusal of `key` in this file: what is wrong and how to fix it.
    pub fn err(
        &self,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

pub fn read_toml<T: for<'de> Deserialize<'de>>(file: &Path) -> Result<T, ConfigError> {
    let ctx = Ctx { file };
    let meta = std::fs::metadata(file).map_err(|e| {
        ctx.err(
            "(file)",
            format!("cannot read the file: {e}"),
            "check the path given to --config",
        )
    })?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ctx.err(
            "(file)",
            "larger than 1 MiB",
            "a configuration file is a few KiB; check the path",
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| {
        ctx.err(
            "(file)",
            format!("cannot read the file: {e}"),
            "check the path and its permissions",
        )
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ctx.err("(file)", "is not UTF-8 text", "save it as UTF-8 TOML"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text.get(..s.start).map_or(0, |t| t.matches('\n').count()) + 1)
            .unwrap_or(0);
        let message = e.message().trim().to_owned();
        let key = message
            .split('`')
            .nth(1)
            .filter(|_| message.starts_with("unknown field") || message.starts_with("missing field"))
            .map_or_else(|| format!("line {line}"), |k| format!("{k} (line {line})"));
        let fix = if message.starts_with("unknown field") {
            "remove the key or correct its spelling; the README's configuration reference lists every key"
        } else if message.starts_with("missing field") {
            "add the key; the README's configuration reference shows an example"
        } else {
            "correct the TOML syntax or the value's type at that line"
        };
        ctx.err(key, message, fix)
    })
}

pub fn parse_public_key(ctx: &Ctx<'_>, key: &str, text: &str) -> Result<PublicKey, ConfigError> {
    PublicKey::from_base64(text).map_err(|e| {
        ctx.err(
            key,
            format!("{e}"),
            "paste the peer's public key as printed by `failoverd pubkey` or `wg pubkey`",
        )
    })
}

pub fn parse_prefixes(
    ctx: &Ctx<'_>,
    key: &str,
    list: &[String],
) -> Result<Vec<Prefix>, ConfigError> {
    if list.len() > MAX_PREFIXES {
        return Err(ctx.err(
            key,
            format!("{} prefixes", list.len()),
            format!("use at most {MAX_PREFIXES}"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<Prefix>().map_err(|e| {
                ctx.err(
                    format!("{key}[{i}]"),
                    format!("'{text}' {e}"),
                    "write prefixes as ADDRESS/LEN, e.g. 100.96.0.2/32 or fd00:96::/64",
                )
            })
        })
        .collect()
}

/// A datacenter's endpoint: an address, or a host name resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// a literal address
    Addr(SocketAddr),
    /// a host name and port, resolved (and re-resolved) by the daemon
    Name {
        /// the name
        host: String,
        /// the port
        port: u16,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Addr(a) => write!(f, "{a}"),
            Endpoint::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn parse_endpoint(ctx: &Ctx<'_>, key: &str, text: &str) -> Result<Endpoint, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(ctx.err(
                key,
                format!("'{text}' has port 0"),
                "use the gateway's listen port, e.g. 51820",
            ));
        }
        return Ok(Endpoint::Addr(addr));
    }
    if text.parse::<IpAddr>().is_ok() || !text.contains(':') || text.ends_with(']') {
        return Err(ctx.err(
            key,
            format!("'{text}' has no port"),
            format!(
                "write it as host:port, e.g. {}:51820 (IPv6 in brackets: [fd00::1]:51820)",
                text.trim_matches(['[', ']'])
            ),
        ));
    }
    let (host, port) = text.rsplit_once(':').unwrap_or((text, ""));
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
        ctx.err(
            key,
            format!("'{text}' has an invalid port '{port}'"),
            "use a port from 1 to 65535, e.g. 51820",
        )
    })?;
    if !valid_host_name(host) {
        return Err(ctx.err(
            key,
            format!("'{host}' is neither an IP address nor a host name"),
            "write an address (198.18.0.11:51820, [fd00::1]:51820) or a DNS name (dc1.example.net:51820)",
        ));
    }
    // Resolved by the daemon at run time, with retries: DNS may be down at start.
    Ok(Endpoint::Name {
        host: host.to_owned(),
        port,
    })
}

pub fn check_name(
    ctx: &Ctx<'_>,
    key: &str,
    name: &str,
    seen: &mut HashSet<String>,
) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ctx.err(
            key,
            format!("'{name}' is not a valid name"),
            "use 1-64 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    if !seen.insert(name.to_owned()) {
        return Err(ctx.err(
            key,
            format!("the name '{name}' is used twice"),
            "give every entry its own name",
        ));
    }
    Ok(())
}

pub fn check_interface(ctx: &Ctx<'_>, key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 15
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ctx.err(
            key,
            format!("'{name}' is not a valid interface name"),
            "use 1-15 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(())
}

pub fn check_mtu(ctx: &Ctx<'_>, key: &str, mtu: u32) -> Result<u16, ConfigError> {
    u16::try_from(mtu)
        .ok()
        .filter(|m| (576..=65_535 - 80).contains(&(*m as u32)))
        .ok_or_else(|| {
            ctx.err(
                key,
                format!("{mtu} is out of range"),
                "use 576-65455; 1420 suits a 1500-byte underlay",
            )
        })
}

/// Reads the private key; it must belong to the user the daemon runs as (`operations.user`
/// once it drops to it, else the current one), who must be able to read it again at a reload.
pub fn read_key(
    ctx: &Ctx<'_>,
    key: &str,
    path: &Path,
    operations: &Operations,
) -> Result<PrivateKey, ConfigError> {
    let (path, runs_as) = key_path(ctx, path, operations);
    keyfile::read_private_key(&path, runs_as).map_err(|e| key_error(ctx, key, &e))
}

/// Reads a pre-shared key file, by the private key's rules.
pub fn read_preshared_key(
    ctx: &Ctx<'_>,
    key: &str,
    path: &Path,
    operations: &Operations,
) -> Result<tunnel::PresharedKey, ConfigError> {
    let (path, runs_as) = key_path(ctx, path, operations);
    keyfile::read_preshared_key(&path, runs_as).map_err(|e| key_error(ctx, key, &e))
}

/// A key file's path (relative to the configuration file's directory) and the uid that must
/// own it.
fn key_path(ctx: &Ctx<'_>, path: &Path, operations: &Operations) -> (PathBuf, u32) {
    let runs_as = operations
        .user
        .as_ref()
        .map_or_else(keyfile::effective_uid, |(_, uid, _)| *uid);
    let path = if path.is_relative() {
        ctx.file.parent().unwrap_or(Path::new(".")).join(path)
    } else {
        path.to_path_buf()
    };
    (path, runs_as)
}

fn key_error(ctx: &Ctx<'_>, key: &str, e: &keyfile::KeyFileError) -> ConfigError {
    let text = e.to_string();
    let (problem, fix) = text
        .split_once("; fix: ")
        .unwrap_or((&text, "see the README"));
    ctx.err(key, problem, fix)
}

// ---------------------------------------------------------------------------------------------
// client

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientFile {
    client: RawClient,
    #[serde(default)]
    datacenter: Vec<RawDatacenter>,
}

/// A client's `[client]` section as read, before validation: for a role whose file embeds a
/// client's sections (vmm-shim), with [`ClientConfig::from_raw`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    private_key_file: PathBuf,
    stable_address: Vec<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    control_socket: Option<PathBuf>,
    #[serde(default = "default_probe_interval")]
    probe_interval_ms: u64,
    #[serde(default = "default_detect_multiplier")]
    detect_multiplier: u32,
    #[serde(default = "default_hold_down")]
    hold_down_ms: u64,
    #[serde(default = "default_policy")]
    policy: String,
    #[serde(default = "default_true")]
    failback: bool,
    #[serde(default)]
    local_address: Vec<String>,
    #[serde(default = "default_flow_table_size")]
    flow_table_size: usize,
    #[serde(default = "default_true")]
    switch_recovery: bool,
    #[serde(default)]
    control_group: Option<String>,
    #[serde(default)]
    metrics_listen: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default = "default_fail_mode")]
    fail_mode: String,
}

fn default_fail_mode() -> String {
    "closed".into()
}

fn default_flow_table_size() -> usize {
    65_536
}

/// One `[[datacenter]]` section as read, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatacenter {
    name: String,
    endpoint: String,
    public_key: String,
    #[serde(default = "default_probe_kind")]
    probe: String,
    probe_address: String,
    #[serde(default = "default_allowed_ips")]
    allowed_ips: Vec<String>,
    #[serde(default = "default_mtu")]
    mtu: u32,
    #[serde(default = "default_keepalive")]
    persistent_keepalive: u16,
    /// a file holding the pre-shared key this datacenter's gateway has for us (`wg genpsk`)
    #[serde(default)]
    preshared_key_file: Option<PathBuf>,
}

fn default_probe_interval() -> u64 {
    20
}
fn default_detect_multiplier() -> u32 {
    4
}
fn default_hold_down() -> u64 {
    1000
}
fn default_policy() -> String {
    "priority".into()
}
fn default_true() -> bool {
    true
}
fn default_probe_kind() -> String {
    "gateway".into()
}
fn default_allowed_ips() -> Vec<String> {
    vec!["0.0.0.0/0".into(), "::/0".into()]
}
pub fn default_mtu() -> u32 {
    1420
}
fn default_keepalive() -> u16 {
    25
}

/// One datacenter, as the client uses it.
#[derive(Debug, Clone)]
pub struct Datacenter {
    /// unique name
    pub name: String,
    /// gateway endpoint
    pub endpoint: Endpoint,
    /// gateway public key
    pub public_key: PublicKey,
    /// inner sources accepted from it
    pub allowed_ips: AllowedIps,
    /// tunnel MTU
    pub mtu: u16,
    /// seconds between keepalives (0: off)
    pub persistent_keepalive: u16,
    /// the pre-shared key, if one is configured
    pub preshared_key: Option<tunnel::PresharedKey>,
    /// how the tunnel is probed
    pub probe: ProbeKind,
    /// the probe target inside the tunnel
    pub probe_address: IpAddr,
}

/// How a datacenter's tunnel is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// a failoverd gateway's probe responder (its inner address)
    Gateway,
    /// ICMP echo to a host behind a plain WireGuard server
    Icmp,
}

/// How the daemon is run and watched: the control socket's readers, metrics, the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operations {
    /// members of this group (by gid) may read the control socket
    pub control_group: Option<(String, u32)>,
    /// where Prometheus metrics are served (`None`: not at all)
    pub metrics_listen: Option<SocketAddr>,
    /// the user (uid, gid) to run as after setup, keeping only the capabilities it needs
    pub user: Option<(String, u32, u32)>,
}

pub fn parse_operations(
    ctx: &Ctx<'_>,
    section: &str,
    control_group: Option<&str>,
    metrics_listen: Option<&str>,
    user: Option<&str>,
) -> Result<Operations, ConfigError> {
    let control_group = control_group
        .map(|g| {
            crate::control::group_id(g)
                .map(|gid| (g.to_owned(), gid))
                .ok_or_else(|| {
                    ctx.err(
                        format!("{section}.control_group"),
                        format!("there is no group '{g}'"),
                        format!("create it (groupadd {g}) or name an existing group"),
                    )
                })
        })
        .transpose()?;
    let metrics_listen = metrics_listen
        .map(|text| {
            text.parse::<SocketAddr>().map_err(|_| {
                ctx.err(
                    format!("{section}.metrics_listen"),
                    format!("'{text}' is not an address:port"),
                    "write e.g. 127.0.0.1:9581 (metrics are served to whoever can reach it: keep it on loopback or a management network)",
                )
            })
        })
        .transpose()?;
    let user = user
        .map(|name| {
            crate::privileges::lookup_user(name).ok_or_else(|| {
                ctx.err(
                    format!("{section}.user"),
                    format!("there is no user '{name}'"),
                    format!("create it (useradd --system {name}) or remove the key to stay root"),
                )
            })
        })
        .transpose()?;
    Ok(Operations {
        control_group,
        metrics_listen,
        user,
    })
}

/// The client daemon's configuration.
#[derive(Debug)]
pub struct ClientConfig {
    /// our key
    pub private_key: PrivateKey,
    /// stable inner address, IPv4
    pub stable_v4: Option<Ipv4Addr>,
    /// stable inner address, IPv6
    pub stable_v6: Option<Ipv6Addr>,
    /// TUN name
    pub interface: String,
    /// destinations routed into the tunnel
    pub routes: Vec<Prefix>,
    /// control socket path
    pub control_socket: PathBuf,
    /// datacenters, in priority order
    pub datacenters: Vec<Datacenter>,
    /// probe timing and detection
    pub probe: ProbeConfig,
    /// path selection
    pub policy: Policy,
    /// the address the TUN carries instead of the stable one, per family (mapped both ways)
    pub local_v4: Option<Ipv4Addr>,
    /// likewise, IPv6
    pub local_v6: Option<Ipv6Addr>,
    /// flow table cap
    pub flow_table_size: usize,
    /// switch-over recovery of live TCP flows
    pub switch_recovery: bool,
    /// control socket readers, metrics, user
    pub operations: Operations,
    /// what happens to traffic for the tunnels while every datacenter is down
    pub fail_mode: FailMode,
}

/// What happens to traffic meant for the tunnels while every datacenter is down, or after the
/// daemon died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// it is dropped: blackhole routes under the TUN's keep it from the uplink, also after a
    /// crash (the default)
    Closed,
    /// it takes the uplink: the TUN's routes are withdrawn while every datacenter is down
    Open,
}

/// Reads a list of at most one IPv4 and one IPv6 address.
fn parse_address_pair(
    ctx: &Ctx<'_>,
    key: &str,
    list: &[String],
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), ConfigError> {
    let (mut v4, mut v6) = (None, None);
    for (i, text) in list.iter().enumerate() {
        let key = format!("{key}[{i}]");
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if v4.is_none() => v4 = Some(a),
            Ok(IpAddr::V6(a)) if v6.is_none() => v6 = Some(a),
            Ok(_) => {
                return Err(ctx.err(
                    key,
                    "a second address of the same family",
                    "give at most one IPv4 and one IPv6 address",
                ))
            }
            Err(_) => {
                return Err(ctx.err(
                    key,
                    format!("'{text}' is not an IP address"),
                    "write a bare address, e.g. 100.96.0.2 (no /len)",
                ))
            }
        }
    }
    Ok((v4, v6))
}

impl ClientConfig {
    /// The TUN MTU: the smallest of all datacenters', so a switch never needs a larger one.
    pub fn mtu(&self) -> u16 {
        self.datacenters.iter().map(|d| d.mtu).min().unwrap_or(1420)
    }

    /// Reads, parses and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let raw: RawClientFile = read_toml(file)?;
        Self::from_raw(&Ctx { file }, raw.client, &raw.datacenter)
    }

    /// Validates a client's sections read from the file `ctx` names.
    pub fn from_raw(
        ctx: &Ctx<'_>,
        c: RawClient,
        raw_datacenters: &[RawDatacenter],
    ) -> Result<Self, ConfigError> {
        let ctx = *ctx;
        let interface = c.interface.unwrap_or_else(|| "failover0".into());
        check_interface(&ctx, "client.interface", &interface)?;
        if c.stable_address.is_empty() {
            return Err(ctx.err(
                "client.stable_address",
                "is empty",
                "give the client's stable inner address, e.g. [\"100.96.0.2\", \"fd00:96::2\"]",
            ));
        }
        let (v4, v6) = parse_address_pair(&ctx, "client.stable_address", &c.stable_address)?;
        let (local_v4, local_v6) =
            parse_address_pair(&ctx, "client.local_address", &c.local_address)?;
        if (local_v4.is_some() && v4.is_none()) || (local_v6.is_some() && v6.is_none()) {
            return Err(ctx.err(
                "client.local_address",
                "has a family with no stable address to map to",
                "give a client.stable_address of each family in client.local_address",
            ));
        }
        if !(64..=4_194_304).contains(&c.flow_table_size) {
            return Err(ctx.err(
                "client.flow_table_size",
                format!("{} is out of range", c.flow_table_size),
                "use 64-4194304 (each tracked flow costs about 250 bytes)",
            ));
        }
        let routes = parse_prefixes(&ctx, "client.routes", &c.routes)?;
        let fail_mode = match c.fail_mode.as_str() {
            "closed" => FailMode::Closed,
            "open" => FailMode::Open,
            other => {
                return Err(ctx.err(
                    "client.fail_mode",
                    format!("'{other}' is not a fail mode"),
                    "use \"closed\" (nothing for the tunnels leaks out while all datacenters are down) or \"open\"",
                ))
            }
        };
        let operations = parse_operations(
            &ctx,
            "client",
            c.control_group.as_deref(),
            c.metrics_listen.as_deref(),
            c.user.as_deref(),
        )?;
        let private_key = read_key(
            &ctx,
            "client.private_key_file",
            &c.private_key_file,
            &operations,
        )?;
        if raw_datacenters.is_empty() {
            return Err(ctx.err(
                "datacenter",
                "no [[datacenter]] is configured",
                "add at least one [[datacenter]] section with name, endpoint and public_key",
            ));
        }
        if raw_datacenters.len() > MAX_DATACENTERS {
            return Err(ctx.err(
                "datacenter",
                format!("{} datacenters", raw_datacenters.len()),
                format!("configure at most {MAX_DATACENTERS}"),
            ));
        }
        if !(1..=10_000).contains(&c.probe_interval_ms) {
            return Err(ctx.err(
                "client.probe_interval_ms",
                format!("{} is out of range", c.probe_interval_ms),
                "use 1-10000; 20 detects a failure in under 100 ms",
            ));
        }
        if !(2..=100).contains(&c.detect_multiplier) {
            return Err(ctx.err(
                "client.detect_multiplier",
                format!("{} is out of range", c.detect_multiplier),
                "use 2-100; 4 means four silent probe intervals",
            ));
        }
        if c.hold_down_ms > 600_000 {
            return Err(ctx.err(
                "client.hold_down_ms",
                format!("{} is out of range", c.hold_down_ms),
                "use 0-600000 (ten minutes)",
            ));
        }
        let probe = ProbeConfig {
            interval: Duration::from_millis(c.probe_interval_ms),
            detect_mult: c.detect_multiplier,
            hold_down: Duration::from_millis(c.hold_down_ms),
            ..ProbeConfig::default()
        };
        let policy = match c.policy.as_str() {
            "priority" => Policy::Priority {
                failback: c.failback,
            },
            "lowest-rtt" => Policy::LowestRtt {
                ratio: 0.2,
                min_gain: Duration::from_millis(5),
                min_dwell: Duration::from_secs(10),
            },
            other => {
                return Err(ctx.err(
                    "client.policy",
                    format!("'{other}' is not a policy"),
                    "use \"priority\" (configuration order) or \"lowest-rtt\"",
                ))
            }
        };
        let own_public = private_key.public_key();
        let mut names = HashSet::new();
        let mut datacenters = Vec::new();
        for (i, d) in raw_datacenters.iter().enumerate() {
            let at = |k: &str| format!("datacenter[{i}].{k}");
            check_name(&ctx, &at("name"), &d.name, &mut names)?;
            let public_key = parse_public_key(&ctx, &at("public_key"), &d.public_key)?;
            if public_key == own_public {
                return Err(ctx.err(
                    at("public_key"),
                    "is this client's own public key",
                    "use the gateway's public key",
                ));
            }
            let probe_kind = match d.probe.as_str() {
                "gateway" => ProbeKind::Gateway,
                "icmp" => ProbeKind::Icmp,
                other => return Err(ctx.err(
                    at("probe"),
                    format!("'{other}' is not a probe kind"),
                    "use \"gateway\" (a failoverd gateway) or \"icmp\" (a plain WireGuard server)",
                )),
            };
            let probe_address: IpAddr = d.probe_address.parse().map_err(|_| {
                ctx.err(at("probe_address"), format!("'{}' is not an IP address", d.probe_address), "give the gateway's inner address (e.g. 100.96.0.1), or for probe = \"icmp\" a host behind the server")
            })?;
            let family_ok = match probe_address {
                IpAddr::V4(_) => v4.is_some(),
                IpAddr::V6(_) => v6.is_some(),
            };
            if !family_ok {
                return Err(ctx.err(
                    at("probe_address"),
                    format!("{probe_address} has no stable address of its family to send from"),
                    "use a probe address of the same family as a client.stable_address",
                ));
            }
            datacenters.push(Datacenter {
                probe: probe_kind,
                probe_address,
                name: d.name.clone(),
                endpoint: parse_endpoint(&ctx, &at("endpoint"), &d.endpoint)?,
                public_key,
                allowed_ips: AllowedIps::new(parse_prefixes(
                    &ctx,
                    &at("allowed_ips"),
                    &d.allowed_ips,
                )?),
                mtu: check_mtu(&ctx, &at("mtu"), d.mtu)?,
                persistent_keepalive: d.persistent_keepalive,
                preshared_key: d
                    .preshared_key_file
                    .as_ref()
                    .map(|f| read_preshared_key(&ctx, &at("preshared_key_file"), f, &operations))
                    .transpose()?,
            });
        }
        Ok(Self {
            private_key,
            stable_v4: v4,
            stable_v6: v6,
            control_socket: c
                .control_socket
                .unwrap_or_else(|| PathBuf::from(format!("/run/failoverd/{interface}.sock"))),
            interface,
            routes,
            datacenters,
            probe,
            policy,
            local_v4,
            local_v6,
            flow_table_size: c.flow_table_size,
            switch_recovery: c.switch_recovery,
            operations,
            fail_mode,
        })
    }
}

impl RawClient {
    /// The keys only a client with a TUN device uses, each with whether the file sets it.
    pub fn tun_keys(&self) -> [(&'static str, bool); 3] {
        [
            ("client.interface", self.interface.is_some()),
            ("client.routes", !self.routes.is_empty()),
            ("client.local_address", !self.local_address.is_empty()),
        ]
    }

    /// The control socket, where the file names none.
    pub fn default_control_socket(&mut self, path: PathBuf) {
        self.control_socket.get_or_insert(path);
    }
}
