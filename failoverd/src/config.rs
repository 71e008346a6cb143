//! The gateway daemon's configuration file, parsed into types at the edge with the helpers
//! every role shares (`runtime::config`): every refusal names the file, the key and the fix.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::config::{
    check_interface, check_mtu, check_name, default_mtu, parse_operations, parse_prefixes,
    parse_public_key, read_key, read_preshared_key, read_toml, ConfigError, Ctx, Operations,
};
use serde::Deserialize;

use crate::takeover::Backends;
use tunnel::{AllowedIps, Prefix, PrivateKey, PublicKey};

/// Most clients one gateway file may list.
const MAX_CLIENTS: usize = 65_536;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGatewayFile {
    gateway: RawGateway,
    #[serde(default)]
    client: Vec<RawGatewayClient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    private_key_file: PathBuf,
    #[serde(default = "default_listen_port")]
    listen_port: u16,
    address: Vec<String>,
    #[serde(default = "default_gateway_interface")]
    interface: String,
    #[serde(default = "default_mtu")]
    mtu: u32,
    #[serde(default = "default_rate_limit")]
    handshake_rate_limit: u64,
    #[serde(default)]
    control_socket: Option<PathBuf>,
    inside_interface: String,
    #[serde(default = "default_claim_timeout")]
    claim_timeout_ms: u64,
    #[serde(default = "default_claim")]
    claim: Vec<String>,
    #[serde(default)]
    routing_daemon_socket: Option<PathBuf>,
    #[serde(default)]
    control_group: Option<String>,
    #[serde(default)]
    metrics_listen: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGatewayClient {
    name: String,
    public_key: String,
    allowed_ips: Vec<String>,
    #[serde(default)]
    persistent_keepalive: u16,
    #[serde(default = "default_return_path")]
    return_path: String,
    /// a file holding the pre-shared key this client has for us (`wg genpsk`)
    #[serde(default)]
    preshared_key_file: Option<PathBuf>,
}

/// One client, as a gateway knows it.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    /// unique name
    pub name: String,
    /// its public key
    pub public_key: PublicKey,
    /// its inner addresses
    pub allowed_ips: AllowedIps,
    /// seconds between keepalives (0: off)
    pub persistent_keepalive: u16,
    /// the pre-shared key, if one is configured
    pub preshared_key: Option<tunnel::PresharedKey>,
    /// claimed only while the client says this gateway is active (`false`: always)
    pub claim_on_intent: bool,
}

/// The gateway daemon's configuration.
#[derive(Debug)]
pub struct GatewayConfig {
    /// our key
    pub private_key: PrivateKey,
    /// UDP port
    pub listen_port: u16,
    /// the gateway's inner addresses with their prefix length (the TUN's addresses)
    pub address_hosts: Vec<(IpAddr, u8)>,
    /// TUN name
    pub interface: String,
    /// TUN MTU
    pub mtu: u16,
    /// port-wide handshakes per second before cookies are required
    pub handshake_rate_limit: u64,
    /// control socket path
    pub control_socket: PathBuf,
    /// the datacenter-side interface where client addresses are claimed
    pub inside_interface: String,
    /// a claim is released after this long without a probe from its client
    pub claim_timeout: Duration,
    /// how a claim is made: proxy ARP/NDP on a shared segment, a kernel route for a routing
    /// daemon, or both
    pub claim_backends: Backends,
    /// the routing daemon's control socket (BIRD's), watched so status shows whether our
    /// claims are exported; `None`: not watched
    pub routing_daemon_socket: Option<PathBuf>,
    /// clients
    pub clients: Vec<GatewayClient>,
    /// control socket readers, metrics, user
    pub operations: Operations,
}

impl GatewayConfig {
    /// Reads, parses and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let raw: RawGatewayFile = read_toml(file)?;
        let ctx = Ctx::new(file);
        let g = raw.gateway;
        check_interface(&ctx, "gateway.interface", &g.interface)?;
        if g.listen_port == 0 {
            return Err(ctx.err(
                "gateway.listen_port",
                "is 0",
                "use a fixed port clients can reach, e.g. 51820",
            ));
        }
        let mut address_hosts = Vec::new();
        for (i, text) in g.address.iter().enumerate() {
            let key = format!("gateway.address[{i}]");
            let fix = "write the gateway's inner address with its prefix, e.g. 100.96.0.1/16";
            let (a, l) = text
                .split_once('/')
                .ok_or_else(|| ctx.err(&key, format!("'{text}' has no /len"), fix))?;
            let addr: IpAddr = a
                .parse()
                .map_err(|_| ctx.err(&key, format!("'{a}' is not an IP address"), fix))?;
            let len: u8 = l
                .parse()
                .map_err(|_| ctx.err(&key, format!("'{l}' is not a prefix length"), fix))?;
            Prefix::new(addr, len)
                .ok_or_else(|| ctx.err(&key, format!("/{len} is too long"), fix))?;
            address_hosts.push((addr, len));
        }
        if address_hosts.is_empty() {
            return Err(ctx.err(
                "gateway.address",
                "is empty",
                "give the gateway's inner address, e.g. [\"100.96.0.1/16\"]",
            ));
        }
        let operations = parse_operations(
            &ctx,
            "gateway",
            g.control_group.as_deref(),
            g.metrics_listen.as_deref(),
            g.user.as_deref(),
        )?;
        let private_key = read_key(
            &ctx,
            "gateway.private_key_file",
            &g.private_key_file,
            &operations,
        )?;
        if raw.client.len() > MAX_CLIENTS {
            return Err(ctx.err(
                "client",
                format!("{} clients", raw.client.len()),
                format!("configure at most {MAX_CLIENTS}"),
            ));
        }
        let own_public = private_key.public_key();
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        let mut clients = Vec::new();
        for (i, c) in raw.client.iter().enumerate() {
            let at = |k: &str| format!("client[{i}].{k}");
            check_name(&ctx, &at("name"), &c.name, &mut names)?;
            let public_key = parse_public_key(&ctx, &at("public_key"), &c.public_key)?;
            if public_key == own_public {
                return Err(ctx.err(
                    at("public_key"),
                    "is this gateway's own public key",
                    "use the client's public key",
                ));
            }
            if !keys.insert(*public_key.as_bytes()) {
                return Err(ctx.err(
                    at("public_key"),
                    "the same key is configured for two clients",
                    "give each client its own key",
                ));
            }
            let prefixes = parse_prefixes(&ctx, &at("allowed_ips"), &c.allowed_ips)?;
            if prefixes.is_empty() {
                return Err(ctx.err(
                    at("allowed_ips"),
                    "is empty",
                    "give the client's stable address, e.g. [\"100.96.0.2/32\"]",
                ));
            }
            for p in &prefixes {
                if let Some(other) = clients.iter().find(|o: &&GatewayClient| {
                    o.allowed_ips.prefixes().iter().any(|q| q.overlaps(p))
                }) {
                    return Err(ctx.err(
                        at("allowed_ips"),
                        format!("{p} overlaps client '{}'", other.name),
                        "give every client distinct addresses",
                    ));
                }
            }
            let claim_on_intent = match c.return_path.as_str() {
                "claim" => true,
                "static" => false,
                other => return Err(ctx.err(at("return_path"), format!("'{other}' is not a return path"), "use \"claim\" (failoverd clients: claimed while this gateway is active) or \"static\" (plain WireGuard clients: always claimed)")),
            };
            clients.push(GatewayClient {
                name: c.name.clone(),
                public_key,
                allowed_ips: AllowedIps::new(prefixes),
                persistent_keepalive: c.persistent_keepalive,
                preshared_key: c
                    .preshared_key_file
                    .as_ref()
                    .map(|f| read_preshared_key(&ctx, &at("preshared_key_file"), f, &operations))
                    .transpose()?,
                claim_on_intent,
            });
        }
        check_interface(&ctx, "gateway.inside_interface", &g.inside_interface)?;
        if g.inside_interface == g.interface {
            return Err(ctx.err("gateway.inside_interface", "is the TUN interface itself", "name the datacenter-side interface (e.g. eth1), where client addresses are claimed"));
        }
        if !(100..=3_600_000).contains(&g.claim_timeout_ms) {
            return Err(ctx.err(
                "gateway.claim_timeout_ms",
                format!("{} is out of range", g.claim_timeout_ms),
                "use 100-3600000; 2000 releases two seconds after a client falls silent",
            ));
        }
        let mut claim_backends = Backends {
            neighbour: false,
            route: false,
        };
        if g.claim.is_empty() {
            return Err(ctx.err(
                "gateway.claim",
                "is empty",
                "name at least one backend: [\"neighbour\"] (shared inside segment), [\"route\"] (a routing daemon exports our routes) or both",
            ));
        }
        for b in &g.claim {
            let slot = match b.as_str() {
                "neighbour" => &mut claim_backends.neighbour,
                "route" => &mut claim_backends.route,
                other => {
                    return Err(ctx.err(
                        "gateway.claim",
                        format!("'{other}' is not a claim backend"),
                        "use \"neighbour\" (proxy ARP/NDP and announcements on a shared inside segment) or \"route\" (a kernel route of protocol 209 for BIRD or FRR to export)",
                    ))
                }
            };
            if *slot {
                return Err(ctx.err(
                    "gateway.claim",
                    format!("names '{b}' twice"),
                    "name each backend once",
                ));
            }
            *slot = true;
        }
        if g.routing_daemon_socket.is_some() && !claim_backends.route {
            return Err(ctx.err(
                "gateway.routing_daemon_socket",
                "is set but claim does not include \"route\"",
                "add \"route\" to claim (the routing daemon exports the routes it makes), or remove routing_daemon_socket",
            ));
        }
        Ok(Self {
            routing_daemon_socket: g.routing_daemon_socket,
            claim_backends,
            private_key,
            listen_port: g.listen_port,
            inside_interface: g.inside_interface,
            claim_timeout: Duration::from_millis(g.claim_timeout_ms),
            address_hosts,
            mtu: check_mtu(&ctx, "gateway.mtu", g.mtu)?,
            handshake_rate_limit: g.handshake_rate_limit.max(1),
            control_socket: g
                .control_socket
                .unwrap_or_else(|| PathBuf::from(format!("/run/failoverd/{}.sock", g.interface))),
            operations,
            interface: g.interface,
            clients,
        })
    }
}

fn default_claim() -> Vec<String> {
    vec!["neighbour".into()]
}

fn default_claim_timeout() -> u64 {
    2000
}

fn default_return_path() -> String {
    "claim".into()
}

fn default_gateway_interface() -> String {
    "failovergw0".into()
}

fn default_listen_port() -> u16 {
    51820
}

fn default_rate_limit() -> u64 {
    100
}
