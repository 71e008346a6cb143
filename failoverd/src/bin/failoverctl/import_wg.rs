//! `failoverctl import-wg`: wg-quick files (one per datacenter, highest priority first) into
//! a failoverd client configuration on stdout and a private key file.
//!
//! Nothing is written unless every file converts; the private key goes only into the key file
//! (created exclusively, 0600) and is never printed, not even in an error.

use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tunnel::{Prefix, PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// A wg-quick file longer than this is not one.
const MAX_FILE: u64 = 64 * 1024;
/// As many datacenters and prefixes as failoverd accepts.
const MAX_FILES: usize = 64;
const MAX_PREFIXES: usize = 1024;

/// A refusal naming the file, the line and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub file: String,
    pub line: Option<usize>,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.problem)?,
            None => write!(f, "{}: {}", self.file, self.problem)?,
        }
        write!(f, "\n  fix: {}", self.fix)
    }
}

fn refuse(
    file: &str,
    line: Option<usize>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ImportError {
    ImportError {
        file: file.to_owned(),
        line,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// The command line of `import-wg`.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// `--stable-address` (each may be a comma list)
    pub stable_address: Vec<String>,
    /// `--probe-address`: `ADDR` for every datacenter or `NAME=ADDR` for one
    pub probe_address: Vec<String>,
    /// `--key-file` (default `./failoverd.key`)
    pub key_file: Option<PathBuf>,
    /// the wg-quick files, highest priority first
    pub files: Vec<PathBuf>,
}

/// An address with its prefix length, as in `Address = 10.0.0.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Assigned {
    addr: IpAddr,
    len: u8,
}

#[derive(Debug)]
struct Peer {
    line: usize,
    public_key: Option<(PublicKey, usize)>,
    endpoint: Option<(String, Option<IpAddr>, usize)>,
    allowed_ips: Vec<Prefix>,
    keepalive: Option<u16>,
    /// the pre-shared key, base64 as failoverd writes it
    preshared_key: Option<Zeroizing<String>>,
}

/// One parsed wg-quick file.
#[derive(Debug)]
struct WgFile {
    shown: String,
    name: String,
    private_key: Option<(Zeroizing<String>, PublicKey, usize)>,
    addresses: Vec<Assigned>,
    address_line: usize,
    dns: Vec<String>,
    mtu: Option<u16>,
    peer: Option<Peer>,
}

/// `dc1` from `/etc/wireguard/dc1.conf`, checked as failoverd checks names.
fn datacenter_name(path: &Path, shown: &str) -> Result<String, ImportError> {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".conf").unwrap_or(n))
        .unwrap_or("");
    if stem.is_empty()
        || stem.len() > 64
        || !stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(refuse(
            shown,
            None,
            format!("'{}' is not a usable datacenter name", stem.escape_debug()),
            "the file name without .conf names the datacenter: rename it to 1-64 letters, digits, '-', '_' or '.', e.g. dc1.conf",
        ));
    }
    Ok(stem.to_owned())
}

fn parse_assigned(text: &str) -> Option<Assigned> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a.trim(), Some(l.trim())),
        None => (text.trim(), None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= width)?,
        None => width,
    };
    Some(Assigned { addr, len })
}

/// `Endpoint = host:port` (IPv6 in brackets); the IP if the host is one.
fn parse_endpoint(text: &str) -> Result<Option<IpAddr>, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("'{text}' has no port after the bracketed address"))?;
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| format!("'{host}' is not an IPv6 address"))?;
        (Some(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("'{text}' has no port"))?;
        if host.is_empty() || host.contains(':') {
            return Err(format!("'{text}' is not host:port (IPv6 goes in brackets)"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err(format!("'{host}' is not a host name or address"));
        }
        (host.parse::<Ipv4Addr>().ok().map(IpAddr::V4), port)
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(host),
        _ => Err(format!("'{port}' is not a port (1-65535)")),
    }
}

/// Reads one wg-quick file's text. Warnings (ignored keys) are appended to `warnings`.
fn parse_file(path: &Path, text: &str, warnings: &mut Vec<String>) -> Result<WgFile, ImportError> {
    let shown = path.display().to_string();
    let name = datacenter_name(path, &shown)?;
    let mut file = WgFile {
        shown: shown.clone(),
        name,
        private_key: None,
        addresses: Vec::new(),
        address_line: 0,
        dns: Vec::new(),
        mtu: None,
        peer: None,
    };
    #[derive(PartialEq)]
    enum Section {
        None,
        Interface,
        Peer,
    }
    let mut section = Section::None;
    let mut interface_line: Option<usize> = None;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let at = Some(line);
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if content.starts_with('[') {
            match content.to_ascii_lowercase().as_str() {
                "[interface]" => {
                    if let Some(first) = interface_line {
                        return Err(refuse(
                            &shown,
                            at,
                            format!("a second [Interface] (the first is at line {first})"),
                            "keep one [Interface] section per file",
                        ));
                    }
                    interface_line = Some(line);
                    section = Section::Interface;
                }
                "[peer]" => {
                    if let Some(p) = &file.peer {
                        return Err(refuse(
                            &shown,
                            at,
                            format!("a second [Peer] (the first is at line {})", p.line),
                            "import-wg takes one file per datacenter with one [Peer] each: split this file into one file per server",
                        ));
                    }
                    file.peer = Some(Peer {
                        line,
                        public_key: None,
                        endpoint: None,
                        allowed_ips: Vec::new(),
                        keepalive: None,
                        preshared_key: None,
                    });
                    section = Section::Peer;
                }
                _ => {
                    return Err(refuse(
                        &shown,
                        at,
                        format!("unknown section {}", content.escape_debug()),
                        "a wg-quick file has an [Interface] and a [Peer] section",
                    ))
                }
            }
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(refuse(
                &shown,
                at,
                "expected Key = Value",
                "write one setting per line, e.g. Endpoint = 198.18.0.11:51820",
            ));
        };
        let key = key.trim();
        let value = value.trim();
        let lower = key.to_ascii_lowercase();
        let twice = |k: &str| {
            refuse(
                &shown,
                at,
                format!("{k} is given twice"),
                format!("keep one {k} line"),
            )
        };
        match section {
            Section::None => {
                return Err(refuse(&shown, at, format!("{key} outside a section"), "put it under [Interface] or [Peer]"))
            }
            Section::Interface => match lower.as_str() {
                "privatekey" => {
                    if file.private_key.is_some() {
                        return Err(twice("PrivateKey"));
                    }
                    // never echo the value: it is the secret
                    let key = PrivateKey::from_base64(value).map_err(|e| {
                        refuse(&shown, at, format!("PrivateKey {e}"), "paste the key as `wg genkey` prints it (44 characters of base64)")
                    })?;
                    file.private_key = Some((Zeroizing::new(value.to_owned()), key.public_key(), line));
                }
                "address" => {
                    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let assigned = parse_assigned(part).ok_or_else(|| {
                            refuse(&shown, at, format!("Address '{part}' is not an address"), "write ADDRESS/LEN, e.g. 10.0.0.2/24 or fd00::2/64")
                        })?;
                        file.addresses.push(assigned);
                    }
                    file.address_line = line;
                }
                "dns" => file.dns.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned),
                ),
                "mtu" => {
                    if file.mtu.is_some() {
                        return Err(twice("MTU"));
                    }
                    let mtu = value
                        .parse::<u16>()
                        .ok()
                        .filter(|m| (576..=65_455).contains(m))
                        .ok_or_else(|| refuse(&shown, at, format!("MTU '{value}' is out of range"), "use 576-65455; 1420 suits a 1500-byte underlay"))?;
                    file.mtu = Some(mtu);
                }
                "listenport" => warnings.push(format!(
                    "{shown}:{line}: ListenPort is ignored: failoverd's tunnels use an ephemeral port (the servers learn it from the handshake)"
                )),
                "fwmark" | "table" | "saveconfig" => warnings.push(format!(
                    "{shown}:{line}: {key} is ignored: failoverd adds its routes itself and has no policy routing"
                )),
                "preup" | "postup" | "predown" | "postdown" => warnings.push(format!(
                    "{shown}:{line}: {key} is not run by failoverd (ignored); do what it did (firewall rules, DNS) outside failoverd"
                )),
                _ => {
                    return Err(refuse(&shown, at, format!("unknown key {key} in [Interface]"), "wg-quick knows PrivateKey, Address, DNS, MTU, ListenPort, FwMark, Table, SaveConfig and Pre/PostUp/Down; check the spelling"))
                }
            },
            Section::Peer => {
                let Some(peer) = file.peer.as_mut() else {
                    continue;
                };
                match lower.as_str() {
                    "publickey" => {
                        if peer.public_key.is_some() {
                            return Err(twice("PublicKey"));
                        }
                        let key = PublicKey::from_base64(value).map_err(|e| {
                            refuse(&shown, at, format!("PublicKey {e}"), "paste the server's public key as `wg pubkey` prints it")
                        })?;
                        peer.public_key = Some((key, line));
                    }
                    "endpoint" => {
                        if peer.endpoint.is_some() {
                            return Err(twice("Endpoint"));
                        }
                        let ip = parse_endpoint(value).map_err(|problem| {
                            refuse(&shown, at, format!("Endpoint {problem}"), "write host:port, e.g. 198.18.0.11:51820 (IPv6 in brackets: [fd00::1]:51820)")
                        })?;
                        peer.endpoint = Some((value.to_owned(), ip, line));
                    }
                    "allowedips" => {
                        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                            let assigned = parse_assigned(part).ok_or_else(|| {
                                refuse(&shown, at, format!("AllowedIPs '{part}' is not a prefix"), "write ADDRESS/LEN, e.g. 10.0.0.0/24 or 0.0.0.0/0")
                            })?;
                            let prefix = Prefix::new(assigned.addr, assigned.len).ok_or_else(|| {
                                refuse(&shown, at, format!("AllowedIPs '{part}' is not a prefix"), "write ADDRESS/LEN, e.g. 10.0.0.0/24")
                            })?;
                            if prefix.addr() != assigned.addr {
                                warnings.push(format!("{shown}:{line}: AllowedIPs {part} has host bits set; read as {prefix}, as wg does"));
                            }
                            if !peer.allowed_ips.contains(&prefix) {
                                peer.allowed_ips.push(prefix);
                            }
                        }
                        if peer.allowed_ips.len() > MAX_PREFIXES {
                            return Err(refuse(&shown, at, format!("more than {MAX_PREFIXES} AllowedIPs"), "summarise them into fewer prefixes"));
                        }
                    }
                    "persistentkeepalive" => {
                        if peer.keepalive.is_some() {
                            return Err(twice("PersistentKeepalive"));
                        }
                        let seconds = if value.eq_ignore_ascii_case("off") {
                            Some(0)
                        } else {
                            value.parse::<u16>().ok()
                        };
                        peer.keepalive = Some(seconds.ok_or_else(|| {
                            refuse(&shown, at, format!("PersistentKeepalive '{value}' is not a number of seconds"), "use 0-65535 or off")
                        })?);
                    }
                    "presharedkey" => {
                        if peer.preshared_key.is_some() {
                            return Err(twice("PresharedKey"));
                        }
                        let key = tunnel::PresharedKey::from_base64(value).map_err(|e| {
                            refuse(&shown, at, format!("PresharedKey {e}"), "copy the key exactly as `wg genpsk` wrote it (44 characters of base64)")
                        })?;
                        peer.preshared_key = Some(key.to_base64());
                    }
                    _ => {
                        return Err(refuse(&shown, at, format!("unknown key {key} in [Peer]"), "wg-quick knows PublicKey, Endpoint, AllowedIPs, PersistentKeepalive and PresharedKey; check the spelling"))
                    }
                }
            }
        }
    }
    if interface_line.is_none() {
        return Err(refuse(
            &shown,
            None,
            "has no [Interface] section",
            "is this a wg-quick file? it needs [Interface] with PrivateKey and Address",
        ));
    }
    if file.private_key.is_none() {
        return Err(refuse(
            &shown,
            interface_line,
            "[Interface] has no PrivateKey",
            "add the client's PrivateKey",
        ));
    }
    let Some(peer) = &file.peer else {
        return Err(refuse(
            &shown,
            None,
            "has no [Peer] section",
            "add the server as a [Peer] with PublicKey, Endpoint and AllowedIPs",
        ));
    };
    if peer.public_key.is_none() {
        return Err(refuse(
            &shown,
            Some(peer.line),
            "[Peer] has no PublicKey",
            "add the server's PublicKey",
        ));
    }
    if peer.endpoint.is_none() {
        return Err(refuse(
            &shown,
            Some(peer.line),
            "[Peer] has no Endpoint: failoverd dials every datacenter itself",
            "add Endpoint = host:port of the server",
        ));
    }
    if peer.allowed_ips.is_empty() {
        return Err(refuse(
            &shown,
            Some(peer.line),
            "[Peer] has no AllowedIPs, so its tunnel would accept nothing",
            "add AllowedIPs, e.g. the server's subnet or 0.0.0.0/0",
        ));
    }
    Ok(file)
}

/// The first usable host of a prefix: `.1` of a subnet, the address itself of a /32 or /31's
/// first address.
fn first_host(addr: IpAddr, len: u8) -> Option<IpAddr> {
    let network = Prefix::new(addr, len)?.addr();
    Some(match network {
        IpAddr::V4(a) if len <= 30 => IpAddr::V4(Ipv4Addr::from(u32::from(a).checked_add(1)?)),
        IpAddr::V6(a) if len <= 126 => IpAddr::V6(Ipv6Addr::from(u128::from(a).checked_add(1)?)),
        other => other,
    })
}

/// `text` as a TOML string value, encoded by the `toml` crate (the same that reads it back),
/// not by our own escaping.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// `items` (by their `Display`) as a TOML array of strings, encoded by the `toml` crate.
fn toml_list<T: fmt::Display>(items: &[T]) -> String {
    toml::Value::Array(
        items
            .iter()
            .map(|i| toml::Value::String(i.to_string()))
            .collect(),
    )
    .to_string()
}

/// What `convert` made: the configuration text, the key for the key file, warnings.
#[derive(Debug)]
pub struct Converted {
    pub toml: String,
    pub private_key: Zeroizing<String>,
    /// each datacenter's pre-shared key file and its contents
    pub preshared_keys: Vec<(PathBuf, Zeroizing<String>)>,
    pub warnings: Vec<String>,
}

/// A usage problem of `--stable-address` or `--probe-address` (exit 2), a refused file or a
/// key file that cannot be written (exit 1).
#[derive(Debug)]
pub enum Refusal {
    Usage(String),
    File(ImportError),
    Failed(String),
}

impl From<ImportError> for Refusal {
    fn from(e: ImportError) -> Self {
        Refusal::File(e)
    }
}

fn pick_pair(list: &[IpAddr]) -> Option<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let (mut v4, mut v6) = (None, None);
    for addr in list {
        match addr {
            IpAddr::V4(a) if v4.is_none() => v4 = Some(*a),
            IpAddr::V6(a) if v6.is_none() => v6 = Some(*a),
            _ => return None,
        }
    }
    Some((v4, v6))
}

/// Converts parsed inputs (`(path, text)`, highest priority first) into a configuration whose
/// key file is `key_file`.
pub fn convert(
    inputs: &[(PathBuf, String)],
    settings: &Settings,
    key_file: &Path,
) -> Result<Converted, Refusal> {
    let mut warnings = Vec::new();
    if inputs.is_empty() {
        return Err(Refusal::Usage(
            "import-wg needs at least one wg-quick FILE.conf".into(),
        ));
    }
    if inputs.len() > MAX_FILES {
        return Err(Refusal::Usage(format!(
            "at most {MAX_FILES} files (datacenters)"
        )));
    }
    let files: Vec<WgFile> = inputs
        .iter()
        .map(|(path, text)| parse_file(path, text, &mut warnings))
        .collect::<Result<_, _>>()?;
    let Some(first) = files.first() else {
        return Err(Refusal::Usage(
            "import-wg needs at least one wg-quick FILE.conf".into(),
        ));
    };

    // names
    for (i, f) in files.iter().enumerate() {
        if let Some(other) = files.iter().take(i).find(|o| o.name == f.name) {
            return Err(ImportError {
                file: f.shown.clone(),
                line: None,
                problem: format!("names the datacenter '{}' as {} does", f.name, other.shown),
                fix: "each file names one datacenter: rename one of them".into(),
            }
            .into());
        }
    }

    // one client identity
    let (own_key, own_public) = match &first.private_key {
        Some((k, p, _)) => (k.clone(), *p),
        None => return Err(Refusal::Usage("internal: no private key".into())),
    };
    for f in &files {
        if let Some((_, public, line)) = &f.private_key {
            if *public != own_public {
                return Err(ImportError {
                    file: f.shown.clone(),
                    line: Some(*line),
                    problem: format!("its PrivateKey differs from {}'s; failoverd is one client identity (one key) on every tunnel", first.shown),
                    fix: format!("use one PrivateKey in every file and add its public key ({own_public}) as this client's [Peer] PublicKey on every server"),
                }
                .into());
            }
        }
        if let Some((peer_key, line)) = f.peer.as_ref().and_then(|p| p.public_key) {
            if peer_key == own_public {
                return Err(ImportError {
                    file: f.shown.clone(),
                    line: Some(line),
                    problem: "the [Peer] PublicKey is this client's own public key".into(),
                    fix: "use the server's public key".into(),
                }
                .into());
            }
        }
    }

    // stable address
    let stable: Vec<IpAddr> = if settings.stable_address.is_empty() {
        let hosts = |f: &WgFile| -> Vec<IpAddr> {
            let mut h: Vec<IpAddr> = f.addresses.iter().map(|a| a.addr).collect();
            h.sort();
            h.dedup();
            h
        };
        if first.addresses.is_empty() {
            return Err(ImportError {
                file: first.shown.clone(),
                line: None,
                problem: "[Interface] has no Address, so there is no stable address".into(),
                fix: "add Address = the client's tunnel address, or pass --stable-address ADDR"
                    .into(),
            }
            .into());
        }
        if let Some(other) = files.iter().find(|f| hosts(f) != hosts(first)) {
            return Err(ImportError {
                file: other.shown.clone(),
                line: (other.address_line > 0).then_some(other.address_line),
                problem: format!(
                    "its Address ({}) differs from {}'s ({}); failoverd keeps one stable address on every tunnel",
                    other.addresses.iter().map(|a| a.addr.to_string()).collect::<Vec<_>>().join(", "),
                    first.shown,
                    first.addresses.iter().map(|a| a.addr.to_string()).collect::<Vec<_>>().join(", "),
                ),
                fix: "pick one address, make every server accept and route it for this client ([Peer] AllowedIPs on each server), and pass it as --stable-address ADDR".into(),
            }
            .into());
        }
        first.addresses.iter().map(|a| a.addr).collect()
    } else {
        let mut list = Vec::new();
        for part in settings
            .stable_address
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let a = parse_assigned(part).ok_or_else(|| {
                Refusal::Usage(format!("--stable-address: '{part}' is not an IP address"))
            })?;
            if !list.contains(&a.addr) {
                list.push(a.addr);
            }
        }
        list
    };
    let Some((stable_v4, stable_v6)) = pick_pair(&stable) else {
        let problem = format!(
            "{} stable addresses of one family ({}); failoverd carries at most one IPv4 and one IPv6",
            stable.len(),
            stable.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
        return Err(if settings.stable_address.is_empty() {
            ImportError {
                file: first.shown.clone(),
                line: Some(first.address_line),
                problem,
                fix: "pass --stable-address with one IPv4 and/or one IPv6 address".into(),
            }
            .into()
        } else {
            Refusal::Usage(format!("--stable-address: {problem}"))
        });
    };
    if stable.is_empty() {
        return Err(Refusal::Usage("--stable-address: no address given".into()));
    }
    if !settings.stable_address.is_empty() {
        for f in &files {
            let own: Vec<IpAddr> = f.addresses.iter().map(|a| a.addr).collect();
            for s in &stable {
                if !own.contains(s) {
                    warnings.push(format!(
                        "{}: Address does not include the stable address {s}: the server behind it must accept {s} from this client ([Peer] AllowedIPs there) and route it back",
                        f.shown
                    ));
                }
            }
        }
    }

    // probe addresses: `ADDR` for all, `NAME=ADDR` for one
    let mut probe_all: Option<IpAddr> = None;
    let mut probe_one: Vec<(String, IpAddr)> = Vec::new();
    for p in &settings.probe_address {
        let (name, addr) = match p.split_once('=') {
            Some((n, a)) => (Some(n.trim()), a.trim()),
            None => (None, p.trim()),
        };
        let ip: IpAddr = addr.parse().map_err(|_| {
            Refusal::Usage(format!("--probe-address: '{addr}' is not an IP address (ADDR, or NAME=ADDR for one datacenter)"))
        })?;
        match name {
            None => probe_all = Some(ip),
            Some(n) => {
                if !files.iter().any(|f| f.name == n) {
                    return Err(Refusal::Usage(format!(
                        "--probe-address: no datacenter '{n}'; the datacenters are {}",
                        files
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                probe_one.push((n.to_owned(), ip));
            }
        }
    }
    let has_family = |ip: &IpAddr| match ip {
        IpAddr::V4(_) => stable_v4.is_some(),
        IpAddr::V6(_) => stable_v6.is_some(),
    };
    let is_own = |ip: &IpAddr| stable.contains(ip);

    // routes: the union of the peers' AllowedIPs, without default routes and without prefixes
    // that hold an endpoint (the tunnel's own packets would be routed into the tunnel).
    let endpoints: Vec<IpAddr> = files
        .iter()
        .filter_map(|f| {
            f.peer
                .as_ref()
                .and_then(|p| p.endpoint.as_ref())
                .and_then(|e| e.1)
        })
        .collect();
    let mut routes: Vec<Prefix> = Vec::new();
    let mut left_out_default: Vec<Prefix> = Vec::new();
    let mut left_out_loop: Vec<(Prefix, IpAddr)> = Vec::new();
    for prefix in files
        .iter()
        .filter_map(|f| f.peer.as_ref())
        .flat_map(|p| p.allowed_ips.iter())
    {
        if prefix.is_empty() {
            if !left_out_default.contains(prefix) {
                left_out_default.push(*prefix);
            }
        } else if let Some(e) = endpoints.iter().find(|e| prefix.contains(**e)) {
            if !left_out_loop.iter().any(|(p, _)| p == prefix) {
                left_out_loop.push((*prefix, *e));
            }
        } else if !routes.contains(prefix) {
            routes.push(*prefix);
        }
    }
    if routes.len() > MAX_PREFIXES {
        return Err(Refusal::Usage(format!(
            "the files' AllowedIPs add up to {} routes; failoverd takes at most {MAX_PREFIXES}",
            routes.len()
        )));
    }
    if !left_out_default.is_empty() {
        warnings.push(format!(
            "{} left out of routes: failoverd has no policy routing to keep its own tunnel packets out of a default route; list the destinations to reach in routes instead",
            left_out_default.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    for (prefix, endpoint) in &left_out_loop {
        warnings.push(format!(
            "{prefix} left out of routes: it holds the endpoint {endpoint}, whose tunnel packets would be routed into the tunnel"
        ));
    }
    for f in files.iter().skip(1) {
        let mine = f.peer.as_ref().map(|p| &p.allowed_ips);
        let theirs = first.peer.as_ref().map(|p| &p.allowed_ips);
        if mine != theirs {
            warnings.push(format!(
                "{}: AllowedIPs differ from {}'s: every route goes through whichever datacenter is active, and a datacenter accepts answers only from its own allowed_ips",
                f.shown, first.shown
            ));
        }
    }

    // the configuration
    let mut out = String::new();
    let mut preshared_keys = Vec::new();
    let sources: Vec<String> = files.iter().map(|f| f.shown.clone()).collect();
    out.push_str("# failoverd client configuration, made by `failoverctl import-wg` from\n");
    for s in &sources {
        out.push_str(&format!("#   {}\n", s.replace('\n', "?")));
    }
    out.push_str("# Datacenters are in priority order (the first file first).\n");
    out.push_str("# Check it with `failoverd check --config FILE` before starting the daemon.\n\n");
    out.push_str("[client]\n");
    out.push_str(&format!(
        "private_key_file = {}\n",
        toml_string(&key_file.display().to_string())
    ));
    out.push_str(&format!("stable_address = {}\n", toml_list(&stable)));
    out.push_str(
        "# the servers' AllowedIPs: destinations sent into the active datacenter's tunnel\n",
    );
    for p in &left_out_default {
        out.push_str(&format!("# ({p} left out: failoverd has no policy routing to keep its own tunnel packets out of a default route; list the destinations to reach instead)\n"));
    }
    for (p, e) in &left_out_loop {
        out.push_str(&format!("# ({p} left out: it holds the endpoint {e})\n"));
    }
    out.push_str(&format!("routes = {}\n", toml_list(&routes)));
    let mut dns: Vec<&str> = Vec::new();
    for d in files.iter().flat_map(|f| f.dns.iter()) {
        if !dns.contains(&d.as_str()) {
            dns.push(d);
        }
    }
    if !dns.is_empty() {
        let list = dns.join(", ");
        out.push_str(&format!("# DNS = {} is not applied by failoverd: set the resolver yourself, e.g. `resolvectl dns failover0 ...`\n", list.replace('\n', "?")));
        warnings.push(format!(
            "DNS ({list}) is not applied by failoverd; configure the resolver yourself"
        ));
    }

    for f in &files {
        let Some(peer) = &f.peer else { continue };
        let (Some((public_key, _)), Some((endpoint, _, _))) = (&peer.public_key, &peer.endpoint)
        else {
            continue;
        };
        // probe address: given, or guessed
        let given = probe_one
            .iter()
            .find(|(n, _)| *n == f.name)
            .map(|(_, a)| *a)
            .or(probe_all);
        let (probe, note) = match given {
            Some(ip) => (ip, None),
            None => {
                let want_v4 = stable_v4.is_some();
                let family = |ip: &IpAddr| ip.is_ipv4() == want_v4;
                let from_allowed = peer
                    .allowed_ips
                    .iter()
                    .filter(|p| !p.is_empty() && family(&p.addr()))
                    .find_map(|p| {
                        first_host(p.addr(), p.len())
                            .filter(|h| !is_own(h))
                            .map(|h| (h, *p))
                    });
                let from_address = || {
                    f.addresses
                        .iter()
                        .filter(|a| family(&a.addr))
                        .find_map(|a| {
                            first_host(a.addr, a.len)
                                .filter(|h| !is_own(h))
                                .map(|h| (h, a))
                        })
                };
                match (from_allowed, from_address()) {
                    (Some((h, p)), _) => (h, Some(format!("guessed: the first host of AllowedIPs {p}"))),
                    (None, Some((h, a))) => (h, Some(format!("guessed: the first host of Address {}/{}", a.addr, a.len))),
                    (None, None) => {
                        return Err(ImportError {
                            file: f.shown.clone(),
                            line: Some(peer.line),
                            problem: "cannot guess a probe address: AllowedIPs has no prefix but a default route and Address is a single host".into(),
                            fix: format!("pass --probe-address {}=ADDR, a host behind this server that answers ping (often the server's tunnel address)", f.name),
                        }
                        .into())
                    }
                }
            }
        };
        if !has_family(&probe) {
            return Err(Refusal::Usage(format!(
                "--probe-address {probe} for {}: there is no stable address of its family to send probes from",
                f.name
            )));
        }
        if !peer.allowed_ips.iter().any(|p| p.contains(probe)) {
            return Err(ImportError {
                file: f.shown.clone(),
                line: Some(peer.line),
                problem: format!("the probe address {probe} is outside this peer's AllowedIPs, so its ping replies would be dropped"),
                fix: "pass a --probe-address inside the server's AllowedIPs".into(),
            }
            .into());
        }
        if let Some(n) = &note {
            warnings.push(format!(
                "{}: probe address {probe} {n}; it must answer ping through this tunnel, or the datacenter counts as down (--probe-address {}=ADDR to set it)",
                f.shown, f.name
            ));
        }
        out.push_str(&format!(
            "\n[[datacenter]]\nname = {}\n",
            toml_string(&f.name)
        ));
        out.push_str(&format!("endpoint = {}\n", toml_string(endpoint)));
        out.push_str(&format!(
            "public_key = {}\n",
            toml_string(&public_key.to_string())
        ));
        out.push_str("# a plain WireGuard server: probed by ping to a host behind it (a failoverd gateway: probe = \"gateway\" and its inner address)\n");
        out.push_str("probe = \"icmp\"\n");
        if let Some(n) = &note {
            out.push_str(&format!("# {n}; it must answer ping through this tunnel\n"));
        }
        out.push_str(&format!(
            "probe_address = {}\n",
            toml_string(&probe.to_string())
        ));
        out.push_str(&format!("allowed_ips = {}\n", toml_list(&peer.allowed_ips)));
        match f.mtu {
            Some(m) => out.push_str(&format!("mtu = {m}\n")),
            None => {
                out.push_str("mtu = 1420  # no MTU in the file; 1420 suits a 1500-byte underlay\n")
            }
        }
        match peer.keepalive {
            Some(k) => out.push_str(&format!("persistent_keepalive = {k}\n")),
            None => {
                out.push_str("persistent_keepalive = 25  # none in the file; failoverd's default\n")
            }
        }
        if let Some(psk) = &peer.preshared_key {
            // beside the private key file, one per datacenter, with the same rules
            let stem = key_file
                .file_stem()
                .map_or_else(|| "failoverd".into(), |s| s.to_string_lossy().into_owned());
            let path = key_file.with_file_name(format!("{stem}.{}.psk", f.name));
            out.push_str(&format!(
                "preshared_key_file = {}\n",
                toml_string(&path.display().to_string())
            ));
            preshared_keys.push((path, psk.clone()));
        }
    }
    Ok(Converted {
        toml: out,
        private_key: own_key,
        preshared_keys,
        warnings,
    })
}

/// Writes the key file: created exclusively (never over an existing file or through a
/// symlink), mode 0600.
fn write_key(path: &Path, key: &str) -> Result<(), String> {
    let shown = path.display();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!("{shown} already exists; refusing to overwrite it\n  fix: pass --key-file NEWPATH, or move the old file away if it holds no key you need")
            } else {
                format!("cannot create the key file {shown}: {e}\n  fix: pass --key-file PATH in a directory you can write")
            }
        })?;
    let mut text = Zeroizing::new(key.trim().to_owned());
    text.push('\n');
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(format!("writing the key file {shown}: {e}"));
    }
    Ok(())
}

/// What `run` did: the configuration for stdout and the warnings for stderr.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// Reads the files, converts them, writes the key file.
pub fn run(settings: &Settings) -> Result<Imported, Refusal> {
    let mut inputs = Vec::new();
    for path in &settings.files {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| {
            refuse(
                &shown,
                None,
                format!("cannot read it: {e}"),
                "check the path",
            )
        })?;
        if meta.len() > MAX_FILE {
            return Err(refuse(
                &shown,
                None,
                "is larger than 64 KiB",
                "give a wg-quick .conf file",
            )
            .into());
        }
        let bytes = std::fs::read(path).map_err(|e| {
            refuse(&shown, None, format!("cannot read it: {e}"), "check the path and its permissions (wg-quick files are usually root's: run with sudo)")
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            refuse(
                &shown,
                None,
                "is not UTF-8 text",
                "give a wg-quick .conf file",
            )
        })?;
        inputs.push((path.clone(), text));
    }
    let key_file = settings
        .key_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("failoverd.key"));
    let key_file = if key_file.is_relative() {
        std::env::current_dir()
            .map_err(|e| {
                Refusal::Failed(format!(
                    "cannot tell the current directory: {e}; pass an absolute --key-file"
                ))
            })?
            .join(key_file)
    } else {
        key_file
    };
    let converted = convert(&inputs, settings, &key_file)?;
    let mut warnings = converted.warnings;
    write_key(&key_file, &converted.private_key).map_err(Refusal::Failed)?;
    for (path, psk) in &converted.preshared_keys {
        write_key(path, psk).map_err(Refusal::Failed)?;
    }
    if let Ok(meta) = std::fs::metadata(&key_file) {
        if meta.uid() != 0 {
            warnings.push(format!(
                "{} is owned by uid {}: failoverd reads it only as that user; to run it as root: `sudo chown root {}`",
                key_file.display(),
                meta.uid(),
                key_file.display()
            ));
        }
    }
    Ok(Imported {
        toml: converted.toml,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Keys {
        client: String,
        client_pub: String,
        gw1: String,
        gw2: String,
    }

    fn keys() -> Keys {
        let client = PrivateKey::generate();
        Keys {
            client: client.to_base64().to_string(),
            client_pub: client.public_key().to_string(),
            gw1: PrivateKey::generate().public_key().to_string(),
            gw2: PrivateKey::generate().public_key().to_string(),
        }
    }

    fn dc1(k: &Keys) -> String {
        format!(
            "# dc1 from the provider\n\
             [Interface]\n\
             PrivateKey = {}\n\
             Address = 10.0.0.2/24, fd00::2/64\n\
             DNS = 1.1.1.1, example.internal\n\
             MTU = 1380\n\
             PostUp = iptables -A FORWARD -i %i -j ACCEPT # firewall\n\
             ListenPort = 51820\n\
             \n\
             [Peer]\n\
             PublicKey = {}\n\
             Endpoint = 198.18.0.11:51820\n\
             AllowedIPs = 10.0.0.0/24, 198.19.0.0/16\n\
             AllowedIPs = 0.0.0.0/0, ::/0\n\
             PersistentKeepalive = 15\n",
            k.client, k.gw1
        )
    }

    fn dc2(k: &Keys) -> String {
        format!(
            "[interface]\r\n\
             privatekey={}\r\n\
             address = 10.0.0.2/24,fd00::2/64\r\n\
             [peer]\r\n\
             publickey = {}\r\n\
             endpoint = [2001:db8::12]:51820\r\n\
             allowedips = 10.0.0.0/24, 198.19.0.0/16, 0.0.0.0/0, ::/0\r\n",
            k.client, k.gw2
        )
    }

    fn settings() -> Settings {
        Settings::default()
    }

    fn convert_ok(files: &[(&str, String)], s: &Settings) -> Converted {
        let inputs: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.clone()))
            .collect();
        match convert(&inputs, s, Path::new("/etc/failoverd/client.key")) {
            Ok(c) => c,
            Err(Refusal::File(e)) => panic!("{e}"),
            Err(other) => panic!("{other:?}"),
        }
    }

    fn refused(files: &[(&str, String)], s: &Settings) -> String {
        let inputs: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.clone()))
            .collect();
        match convert(&inputs, s, Path::new("/k")) {
            Ok(c) => panic!("accepted:\n{}", c.toml),
            Err(Refusal::File(e)) => e.to_string(),
            Err(Refusal::Usage(m) | Refusal::Failed(m)) => format!("usage: {m}"),
        }
    }

    #[test]
    fn two_files_become_one_configuration() {
        let k = keys();
        let c = convert_ok(
            &[("wg/dc1.conf", dc1(&k)), ("dc2.conf", dc2(&k))],
            &settings(),
        );
        assert!(
            !c.toml.contains(&k.client),
            "the private key must never be printed"
        );
        assert_eq!(c.private_key.as_str(), k.client);
        let doc: toml::Value = toml::from_str(&c.toml).unwrap();
        let client = &doc["client"];
        assert_eq!(
            client["private_key_file"].as_str(),
            Some("/etc/failoverd/client.key")
        );
        assert_eq!(
            client["stable_address"],
            toml::Value::Array(vec!["10.0.0.2".into(), "fd00::2".into()])
        );
        assert_eq!(
            client["routes"],
            toml::Value::Array(vec!["10.0.0.0/24".into(), "198.19.0.0/16".into()])
        );
        let dcs = doc["datacenter"].as_array().unwrap();
        assert_eq!(dcs.len(), 2);
        assert_eq!(dcs[0]["name"].as_str(), Some("dc1"));
        assert_eq!(dcs[0]["endpoint"].as_str(), Some("198.18.0.11:51820"));
        assert_eq!(dcs[0]["public_key"].as_str(), Some(k.gw1.as_str()));
        assert_eq!(dcs[0]["probe"].as_str(), Some("icmp"));
        assert_eq!(dcs[0]["probe_address"].as_str(), Some("10.0.0.1"));
        assert_eq!(dcs[0]["mtu"].as_integer(), Some(1380));
        assert_eq!(dcs[0]["persistent_keepalive"].as_integer(), Some(15));
        assert_eq!(
            dcs[0]["allowed_ips"],
            toml::Value::Array(vec![
                "10.0.0.0/24".into(),
                "198.19.0.0/16".into(),
                "0.0.0.0/0".into(),
                "::/0".into()
            ])
        );
        assert_eq!(dcs[1]["name"].as_str(), Some("dc2"));
        assert_eq!(dcs[1]["endpoint"].as_str(), Some("[2001:db8::12]:51820"));
        assert_eq!(dcs[1]["mtu"].as_integer(), Some(1420));
        assert_eq!(dcs[1]["persistent_keepalive"].as_integer(), Some(25));
        assert!(c
            .toml
            .contains("# guessed: the first host of AllowedIPs 10.0.0.0/24"));
        assert!(c.toml.contains("0.0.0.0/0 left out"));
        assert!(c
            .toml
            .contains("# DNS = 1.1.1.1, example.internal is not applied"));
        let w = c.warnings.join("\n");
        assert!(w.contains("wg/dc1.conf:7: PostUp is not run"), "{w}");
        assert!(w.contains("wg/dc1.conf:8: ListenPort is ignored"), "{w}");
        assert!(w.contains("0.0.0.0/0, ::/0 left out of routes"), "{w}");
        assert!(w.contains("probe address 10.0.0.1 guessed"), "{w}");
        assert!(
            w.contains("DNS (1.1.1.1, example.internal) is not applied"),
            "{w}"
        );
    }

    #[test]
    fn different_private_keys_are_refused_naming_the_files() {
        let k = keys();
        let other = keys();
        let e = refused(
            &[("dc1.conf", dc1(&k)), ("dc2.conf", dc2(&other))],
            &settings(),
        );
        assert!(
            e.starts_with("dc2.conf:2: its PrivateKey differs from dc1.conf's"),
            "{e}"
        );
        assert!(
            e.contains(&k.client_pub),
            "the fix names the public key to use: {e}"
        );
        assert!(!e.contains(&k.client) && !e.contains(&other.client), "{e}");
    }

    #[test]
    fn preshared_keys_are_kept_in_a_file_of_their_own() {
        let k = keys();
        let psk = "ZmFrZS1wcmVzaGFyZWQta2V5LTMyLWJ5dGVzLWxvbmc=";
        let text = dc1(&k).replace("PersistentKeepalive = 15", &format!("PresharedKey = {psk}"));
        let c = convert_ok(&[("dc1.conf", text), ("dc2.conf", dc2(&k))], &settings());
        assert_eq!(c.preshared_keys.len(), 1, "dc1 has one, dc2 none");
        let (path, key) = &c.preshared_keys[0];
        assert_eq!(key.as_str(), psk);
        assert!(
            path.to_string_lossy().ends_with(".dc1.psk"),
            "{}",
            path.display()
        );
        let shown = path.display().to_string();
        assert!(
            c.toml
                .contains(&format!("preshared_key_file = \"{shown}\"")),
            "{}",
            c.toml
        );
        assert!(
            !c.toml.contains(psk),
            "the key itself stays out of the configuration"
        );

        let bad = dc1(&k).replace("PersistentKeepalive = 15", "PresharedKey = c2hvcnQ=");
        let e = refused(&[("dc1.conf", bad)], &settings());
        assert!(
            e.starts_with("dc1.conf:15: PresharedKey decodes to 5 bytes"),
            "{e}"
        );
        assert!(e.contains("fix: copy the key exactly"), "{e}");
    }

    #[test]
    fn disagreeing_addresses_need_a_stable_address() {
        let k = keys();
        let d2 = dc2(&k).replace("10.0.0.2/24,fd00::2/64", "10.1.0.2/24");
        let e = refused(
            &[("dc1.conf", dc1(&k)), ("dc2.conf", d2.clone())],
            &settings(),
        );
        assert!(
            e.starts_with(
                "dc2.conf:3: its Address (10.1.0.2) differs from dc1.conf's (10.0.0.2, fd00::2)"
            ),
            "{e}"
        );
        assert!(e.contains("--stable-address"), "{e}");
        let s = Settings {
            stable_address: vec!["10.0.0.2".into()],
            ..Settings::default()
        };
        let c = convert_ok(&[("dc1.conf", dc1(&k)), ("dc2.conf", d2)], &s);
        let doc: toml::Value = toml::from_str(&c.toml).unwrap();
        assert_eq!(
            doc["client"]["stable_address"],
            toml::Value::Array(vec!["10.0.0.2".into()])
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w
                    .starts_with("dc2.conf: Address does not include the stable address 10.0.0.2")),
            "{:?}",
            c.warnings
        );
        let s = Settings {
            stable_address: vec!["10.0.0.2,10.0.0.3".into()],
            ..Settings::default()
        };
        let e = refused(&[("dc1.conf", dc1(&k))], &s);
        assert!(
            e.starts_with("usage: --stable-address: 2 stable addresses of one family"),
            "{e}"
        );
    }

    #[test]
    fn structural_errors_name_the_line() {
        let k = keys();
        let cases: Vec<(String, &str)> = vec![
            (
                dc1(&k).replace("MTU = 1380", "Mtu = 100"),
                "dc1.conf:6: MTU '100' is out of range",
            ),
            (
                dc1(&k).replace("MTU = 1380", "Colour = blue"),
                "dc1.conf:6: unknown key Colour in [Interface]",
            ),
            (
                dc1(&k).replace("PersistentKeepalive = 15", "Endpoint = 198.18.0.12:51820"),
                "dc1.conf:15: Endpoint is given twice",
            ),
            (
                dc1(&k).replace("Endpoint = 198.18.0.11:51820\n", ""),
                "dc1.conf:10: [Peer] has no Endpoint",
            ),
            (
                dc1(&k).replace("Endpoint = 198.18.0.11:51820", "Endpoint = 198.18.0.11"),
                "dc1.conf:12: Endpoint '198.18.0.11' has no port",
            ),
            (
                dc1(&k).replace("Endpoint = 198.18.0.11:51820", "Endpoint = fd00::1:51820"),
                "dc1.conf:12: Endpoint 'fd00::1:51820' is not host:port",
            ),
            (
                dc1(&k).replace("AllowedIPs = 0.0.0.0/0, ::/0", "AllowedIPs = 10.0.0.0/33"),
                "dc1.conf:14: AllowedIPs '10.0.0.0/33' is not a prefix",
            ),
            (
                format!("{}\n[Peer]\nPublicKey = {}\n", dc1(&k), k.gw2),
                "dc1.conf:17: a second [Peer] (the first is at line 10)",
            ),
            (
                dc1(&k).replace("[Peer]", "[Server]"),
                "dc1.conf:10: unknown section [Server]",
            ),
            (
                dc1(&k).replace("[Interface]", ""),
                "dc1.conf:3: PrivateKey outside a section",
            ),
            (
                dc1(&k).replace("DNS = 1.1.1.1, example.internal", "just words"),
                "dc1.conf:5: expected Key = Value",
            ),
            (
                dc1(&k).replace(&k.client, "bm90IGEga2V5"),
                "dc1.conf:3: PrivateKey decodes to 9 bytes",
            ),
            (
                dc1(&k).replace(&k.gw1, &k.client_pub),
                "dc1.conf:11: the [Peer] PublicKey is this client's own public key",
            ),
            (
                dc1(&k).replace(
                    "AllowedIPs = 10.0.0.0/24, 198.19.0.0/16\nAllowedIPs = 0.0.0.0/0, ::/0\n",
                    "",
                ),
                "dc1.conf:10: [Peer] has no AllowedIPs",
            ),
            (
                "[Peer]\nPublicKey = x\n".to_string(),
                "dc1.conf:2: PublicKey not valid base64",
            ),
            (String::new(), "dc1.conf: has no [Interface] section"),
        ];
        for (text, expected) in cases {
            let e = refused(&[("dc1.conf", text)], &settings());
            assert!(e.starts_with(expected), "expected {expected:?}, got {e:?}");
            assert!(e.contains("\n  fix: "), "{e}");
            assert!(!e.contains(&k.client), "{e}");
        }
    }

    #[test]
    fn file_names_become_datacenter_names() {
        let k = keys();
        let e = refused(&[("my vpn.conf", dc1(&k))], &settings());
        assert!(
            e.contains("'my vpn' is not a usable datacenter name"),
            "{e}"
        );
        let e = refused(
            &[("a/dc1.conf", dc1(&k)), ("b/dc1.conf", dc2(&k))],
            &settings(),
        );
        assert!(
            e.starts_with("b/dc1.conf: names the datacenter 'dc1' as a/dc1.conf does"),
            "{e}"
        );
        let c = convert_ok(&[("/etc/wireguard/fra-1", dc1(&k))], &settings());
        assert!(c.toml.contains("name = \"fra-1\""));
    }

    #[test]
    fn probe_address_guesses_and_overrides() {
        let k = keys();
        // only default routes: the first host of the Address subnet
        let only_default = dc1(&k).replace("AllowedIPs = 10.0.0.0/24, 198.19.0.0/16\n", "");
        let c = convert_ok(&[("dc1.conf", only_default.clone())], &settings());
        assert!(
            c.toml
                .contains("# guessed: the first host of Address 10.0.0.2/24"),
            "{}",
            c.toml
        );
        assert!(c.toml.contains("probe_address = \"10.0.0.1\""));
        assert!(c.toml.contains("routes = []"));
        // ... and a single-host Address leaves nothing to guess
        let host_only = only_default.replace("10.0.0.2/24, fd00::2/64", "10.0.0.2/32");
        let e = refused(&[("dc1.conf", host_only.clone())], &settings());
        assert!(
            e.starts_with("dc1.conf:10: cannot guess a probe address"),
            "{e}"
        );
        assert!(e.contains("--probe-address dc1=ADDR"), "{e}");
        let s = Settings {
            probe_address: vec!["dc1=10.64.0.1".into()],
            ..Settings::default()
        };
        let c = convert_ok(&[("dc1.conf", host_only.clone())], &s);
        assert!(c.toml.contains("probe_address = \"10.64.0.1\""));
        assert!(!c.toml.contains("guessed"));
        // the guess skips the client's own address
        let own_first = dc1(&k).replace("10.0.0.2/24", "10.0.0.1/24");
        let c = convert_ok(&[("dc1.conf", own_first)], &settings());
        assert!(
            c.toml.contains("probe_address = \"198.19.0.1\""),
            "{}",
            c.toml
        );
        // a probe address outside the peer's AllowedIPs would never be answered
        let s = Settings {
            probe_address: vec!["192.0.2.1".into()],
            ..Settings::default()
        };
        let no_default = dc1(&k).replace("AllowedIPs = 0.0.0.0/0, ::/0\n", "");
        let e = refused(&[("dc1.conf", no_default)], &s);
        assert!(
            e.starts_with(
                "dc1.conf:10: the probe address 192.0.2.1 is outside this peer's AllowedIPs"
            ),
            "{e}"
        );
        let s = Settings {
            probe_address: vec!["dc9=10.0.0.1".into()],
            ..Settings::default()
        };
        let e = refused(&[("dc1.conf", dc1(&k))], &s);
        assert!(
            e.starts_with("usage: --probe-address: no datacenter 'dc9'"),
            "{e}"
        );
        let s = Settings {
            probe_address: vec!["fd00::1".into()],
            ..Settings::default()
        };
        let v6_only_probe = refused(&[("dc1.conf", host_only)], &s);
        assert!(
            v6_only_probe.contains("no stable address of its family"),
            "{v6_only_probe}"
        );
    }

    #[test]
    fn routes_leave_out_defaults_and_endpoints() {
        let k = keys();
        let text = dc1(&k).replace("198.19.0.0/16", "198.18.0.0/16, 198.19.0.0/16");
        let c = convert_ok(&[("dc1.conf", text)], &settings());
        let doc: toml::Value = toml::from_str(&c.toml).unwrap();
        assert_eq!(
            doc["client"]["routes"],
            toml::Value::Array(vec!["10.0.0.0/24".into(), "198.19.0.0/16".into()])
        );
        assert!(
            c.warnings.iter().any(|w| w.starts_with(
                "198.18.0.0/16 left out of routes: it holds the endpoint 198.18.0.11"
            )),
            "{:?}",
            c.warnings
        );
        let d2 = dc2(&k).replace("10.0.0.0/24, 198.19.0.0/16, ", "");
        let c = convert_ok(&[("dc1.conf", dc1(&k)), ("dc2.conf", d2)], &settings());
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("dc2.conf: AllowedIPs differ from dc1.conf's")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn host_bits_are_cleared_with_a_warning() {
        let k = keys();
        let text = dc1(&k).replace("10.0.0.0/24", "10.0.0.7/24");
        let c = convert_ok(&[("dc1.conf", text)], &settings());
        assert!(c.toml.contains("\"10.0.0.0/24\""));
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("has host bits set; read as 10.0.0.0/24")));
    }

    #[test]
    fn key_file_is_exclusive_and_private() {
        let dir = std::env::temp_dir().join(format!("failoverctl-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.key");
        write_key(&path, "  c2VjcmV0  \n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c2VjcmV0\n");
        let e = write_key(&path, "other").unwrap_err();
        assert!(e.contains("already exists; refusing to overwrite"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c2VjcmV0\n");
        let link = dir.join("link.key");
        std::os::unix::fs::symlink(dir.join("target.key"), &link).unwrap();
        assert!(write_key(&link, "x").is_err(), "never through a symlink");
        assert!(!dir.join("target.key").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn first_hosts() {
        let h = |a: &str, l| first_host(a.parse().unwrap(), l).map(|x| x.to_string());
        assert_eq!(h("10.0.0.0", 24).as_deref(), Some("10.0.0.1"));
        assert_eq!(h("10.0.0.9", 24).as_deref(), Some("10.0.0.1"));
        assert_eq!(h("10.0.0.9", 32).as_deref(), Some("10.0.0.9"));
        assert_eq!(h("10.0.0.9", 31).as_deref(), Some("10.0.0.8"));
        assert_eq!(h("fd00::5", 64).as_deref(), Some("fd00::1"));
        assert_eq!(h("255.255.255.255", 0).as_deref(), Some("0.0.0.1"));
        assert_eq!(h("10.0.0.0", 33), None);
    }

    #[test]
    fn toml_values_read_back_as_written() {
        #[derive(serde::Deserialize)]
        struct Doc {
            s: String,
            l: Vec<String>,
        }
        for text in [
            "a\"b\\c\n",
            "tab\there",
            "'single' \"double\"",
            "ünïcödé",
            "\u{7f}\u{1}",
        ] {
            let doc = format!(
                "s = {}\nl = {}\n",
                toml_string(text),
                toml_list(&[text, "x"])
            );
            let back: Doc = toml::from_str(&doc).unwrap();
            assert_eq!(back.s, text);
            assert_eq!(back.l, [text, "x"]);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_files_never_panic(text in "(\\[Interface\\]\n|\\[Peer\\]\n|[A-Za-z]{1,12} ?= ?[ -~]{0,40}\n|#.*\n|.{0,30}\n){0,30}") {
            let mut warnings = Vec::new();
            let _ = parse_file(Path::new("x.conf"), &text, &mut warnings);
            let _ = convert(&[(PathBuf::from("x.conf"), text)], &Settings::default(), Path::new("/k"));
        }
    }
}
