//! `vmm-shim`'s configuration file: a client's `[client]` and `[[datacenter]]` sections (read
//! and validated by `runtime::config`, without the keys of a TUN) plus `[guest]`. Every
//! refusal names the file, the key and the fix.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use runtime::config::{
    read_toml, ClientConfig, ConfigError, Ctx, FailMode, RawClient, RawDatacenter,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShimFile {
    client: RawClient,
    #[serde(default)]
    datacenter: Vec<RawDatacenter>,
    guest: RawGuest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuest {
    #[serde(default)]
    mac: Option<String>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dns: Vec<String>,
    #[serde(default)]
    prefix6: Option<String>,
    #[serde(default = "default_lease")]
    lease_secs: u32,
}

fn default_lease() -> u32 {
    86_400
}

/// The guest's link, as `vmm-shim` plays it.
#[derive(Debug, Clone)]
pub struct GuestSection {
    /// the guest NIC's MAC (QEMU's `-device ...,mac=`); `None`: learned from its first frame
    pub mac: Option<[u8; 6]>,
    /// the guest's IPv4 address
    pub address: Ipv4Addr,
    /// its prefix length
    pub prefix_len: u8,
    /// the guest's router: the shim's address on the link
    pub gateway: Ipv4Addr,
    /// DNS servers handed out by DHCP
    pub dns: Vec<Ipv4Addr>,
    /// the /64 advertised for SLAAC
    pub prefix6: Option<Ipv6Addr>,
    /// DHCP lease, seconds
    pub lease_secs: u32,
}

/// `vmm-shim`'s configuration: a client's, whose local side is the guest.
#[derive(Debug)]
pub struct ShimConfig {
    /// the client part (`interface`, `routes` and `local_address` do not apply)
    pub client: ClientConfig,
    /// the guest's link
    pub guest: GuestSection,
}

fn parse_mac(ctx: &Ctx<'_>, key: &str, text: &str) -> Result<[u8; 6], ConfigError> {
    let fix = "write it as six hex octets, e.g. 52:54:00:12:34:56 (QEMU's -device mac=)";
    let parts: Vec<&str> = text.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(ctx.err(key, format!("'{text}' is not a MAC address"), fix));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)
            .ok()
            .filter(|_| p.len() == 2)
            .ok_or_else(|| ctx.err(key, format!("'{text}' is not a MAC address"), fix))?;
    }
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(ctx.err(
            key,
            format!("{text} is a multicast or all-zero address"),
            "use the guest NIC's unicast MAC, e.g. 52:54:00:12:34:56",
        ));
    }
    Ok(mac)
}

impl ShimConfig {
    /// Reads, parses and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let raw: RawShimFile = read_toml(file)?;
        let ctx = Ctx::new(file);
        for (key, present) in raw.client.tun_keys() {
            if present {
                return Err(ctx.err(
                    key,
                    "does not apply to vmm-shim: the guest's NIC is its local side",
                    "remove it; the guest's own address goes in guest.address",
                ));
            }
        }
        let mut raw_client = raw.client;
        raw_client.default_control_socket(PathBuf::from("/run/failoverd/vmm-shim.sock"));
        let client = ClientConfig::from_raw(&ctx, raw_client, &raw.datacenter)?;
        if client.fail_mode == FailMode::Open {
            // The guest's packets have no way out but the tunnels: the shim is its only
            // router, so with every datacenter down they are dropped (fail closed) whatever
            // the file says. Saying "open" would promise a leak the shim cannot make.
            return Err(ctx.err(
                "client.fail_mode",
                "\"open\" is not available in vmm-shim: the guest has no uplink of its own, so \
                 its traffic is always dropped while every datacenter is down",
                "remove the key or write fail_mode = \"closed\"",
            ));
        }
        let g = raw.guest;
        let fix = "write the guest's address with its prefix, e.g. 10.200.0.2/24";
        let (a, l) = g
            .address
            .split_once('/')
            .ok_or_else(|| ctx.err("guest.address", format!("'{}' has no /len", g.address), fix))?;
        let address: Ipv4Addr = a.parse().map_err(|_| {
            ctx.err(
                "guest.address",
                format!("'{a}' is not an IPv4 address"),
                fix,
            )
        })?;
        let prefix_len: u8 = l
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| {
                ctx.err(
                    "guest.address",
                    format!("/{l} is not a prefix length from 8 to 30"),
                    "use a subnet that holds the guest and its router, e.g. /24",
                )
            })?;
        let host_bits = 32 - u32::from(prefix_len);
        let mask = u32::MAX << host_bits;
        let net = u32::from(address) & mask;
        let in_subnet = |a: Ipv4Addr| {
            let a = u32::from(a);
            a & mask == net && a != net && a != net | !mask
        };
        if !in_subnet(address) || address.is_loopback() || address.is_multicast() {
            return Err(ctx.err(
                "guest.address",
                format!("{address} is the network, broadcast, loopback or multicast address"),
                "give the guest a host address, e.g. 10.200.0.2/24",
            ));
        }
        let gateway = match &g.gateway {
            Some(text) => text.parse().map_err(|_| {
                ctx.err(
                    "guest.gateway",
                    format!("'{text}' is not an IPv4 address"),
                    "give the router address the guest uses, e.g. 10.200.0.1",
                )
            })?,
            None => {
                let first = Ipv4Addr::from(net + 1);
                if first == address {
                    Ipv4Addr::from(net + 2)
                } else {
                    first
                }
            }
        };
        if !in_subnet(gateway) || gateway == address {
            return Err(ctx.err(
                "guest.gateway",
                format!("{gateway} is not another host of {address}/{prefix_len}"),
                "use an address in the guest's subnet other than its own, e.g. 10.200.0.1",
            ));
        }
        let dns = g
            .dns
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<Ipv4Addr>().map_err(|_| {
                    ctx.err(
                        format!("guest.dns[{i}]"),
                        format!("'{text}' is not an IPv4 address"),
                        "list resolvers the guest reaches through the tunnel, e.g. 198.19.0.53",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if dns.len() > 8 {
            return Err(ctx.err("guest.dns", "more than 8 servers", "list at most 8"));
        }
        let prefix6 = match &g.prefix6 {
            None => None,
            Some(text) => {
                let fix = "write a /64, e.g. fd00:200::/64";
                let p = text
                    .split_once('/')
                    .and_then(|(a, l)| Some((a.parse::<Ipv6Addr>().ok()?, l.parse::<u8>().ok()?)));
                let Some((prefix, 64)) = p else {
                    return Err(ctx.err("guest.prefix6", format!("'{text}' is not a /64"), fix));
                };
                if client.stable_v6.is_none() {
                    return Err(ctx.err(
                        "guest.prefix6",
                        "the client has no stable IPv6 address to map the guest's to",
                        "add an IPv6 address to client.stable_address, or remove guest.prefix6",
                    ));
                }
                Some(prefix)
            }
        };
        if !(60..=31_536_000).contains(&g.lease_secs) {
            return Err(ctx.err(
                "guest.lease_secs",
                format!("{} is out of range", g.lease_secs),
                "use 60 to 31536000 seconds (one year); the default is 86400",
            ));
        }
        if client.stable_v4.is_none() {
            return Err(ctx.err(
                "client.stable_address",
                "has no IPv4 address to map the guest's to",
                "add an IPv4 stable address, e.g. \"100.96.0.2\"",
            ));
        }
        let mac = g
            .mac
            .as_deref()
            .map(|m| parse_mac(&ctx, "guest.mac", m))
            .transpose()?;
        Ok(Self {
            client,
            guest: GuestSection {
                mac,
                address,
                prefix_len,
                gateway,
                dns,
                prefix6,
                lease_secs: g.lease_secs,
            },
        })
    }
}
