//! Answers: one type per command, the `status` of each kind of daemon, and the envelope
//! (`{"v":1,"ok":true,...}` / `{"v":1,"ok":false,"error":"..."}`). See the crate docs for the
//! naming and unit rules every field here follows.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;

/// Counters by reason (`replay`, `bad_mac`, ...): how many of something were dropped or
/// refused for each reason. Reasons with a count of 0 may be left out.
pub type Counts = BTreeMap<String, u64>;

/// A datacenter's probe-judged health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// probes are answered
    Up,
    /// probes are late or lost, not long enough to call it down
    Suspect,
    /// no evidence of life for the detection time: traffic does not go here
    Down,
    /// alive again after a failure, inside its hold-down
    Recovering,
}

impl Health {
    /// The name on the wire (`up`, `suspect`, `down`, `recovering`).
    pub fn label(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Suspect => "suspect",
            Health::Down => "down",
            Health::Recovering => "recovering",
        }
    }
}

/// One datacenter of a client and its tunnel: the items of both `status`'s `datacenters` and
/// `tunnels`'s `tunnels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datacenter {
    /// the datacenter's name from the configuration
    pub name: String,
    /// the tunnel's current underlay endpoint (`address:port`); `null` while a name is not
    /// resolved yet
    pub endpoint: Option<SocketAddr>,
    /// traffic goes here now
    pub active: bool,
    /// taken out of service by the operator (`drain`)
    pub drained: bool,
    /// damped out after flapping: not chosen while suppressed
    pub suppressed: bool,
    /// the tunnel has a WireGuard session
    pub established: bool,
    /// probe-judged health
    pub health: Health,
    /// smoothed probe round-trip time, milliseconds; `null` before the first reply
    pub rtt_ms: Option<f64>,
    /// probe loss over the last window, a share from 0 to 1; `null` before the first window
    pub loss: Option<f64>,
    /// milliseconds since the last completed handshake; `null`: never
    pub last_handshake_ms_ago: Option<u64>,
    /// inner bytes sent into the tunnel
    pub tx_bytes: u64,
    /// inner bytes received from the tunnel
    pub rx_bytes: u64,
    /// completed handshakes
    pub handshakes: u64,
    /// probes sent
    pub probes_sent: u64,
    /// probe replies accepted
    pub probe_replies: u64,
    /// probe replies refused (any reason)
    pub probe_replies_refused: u64,
    /// health changes between usable and unusable
    pub flaps: u64,
    /// datagrams and packets of this tunnel dropped, by reason
    pub drops: Counts,
}

/// One switch of the active datacenter: the items of `events` and `status`'s `switches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchEvent {
    /// when traffic moved, milliseconds since the Unix epoch (the daemon's wall clock)
    pub unix_ms: u64,
    /// the datacenter traffic left
    pub from: String,
    /// the datacenter traffic went to
    pub to: String,
    /// why: `probe_timeout`, `failback`, `operator`, ... (the engine's switch reasons)
    pub reason: String,
    /// for a failure: how long the old tunnel had been silent when declared down,
    /// milliseconds; `null` for a switch that was no failure
    pub detection_ms: Option<f64>,
    /// inbound silence across the switch (the old tunnel's last authenticated datagram to the
    /// first data through the new one), milliseconds; `null` until that data arrives
    pub stall_ms: Option<f64>,
}

/// One flow the session keeper tracks: the items of `flows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the IP protocol number
    pub protocol: String,
    /// the far end's address
    pub remote: IpAddr,
    /// the far end's port (0 where the protocol has none)
    pub remote_port: u16,
    /// the local port (the ICMP echo identifier for ICMP)
    pub local_port: u16,
    /// the datacenter its last outbound packet took
    pub tunnel: String,
    /// milliseconds since it was first seen
    pub age_ms: u64,
    /// milliseconds since its last packet
    pub idle_ms: u64,
    /// packets from the local side
    pub packets_out: u64,
    /// packets from the far end
    pub packets_in: u64,
    /// TCP: `syn_sent`, `established` or `closing`; other protocols: `-`
    pub state: String,
}

/// One client of a gateway: the items of `clients` and a gateway `status`'s `clients`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    /// the client's name from the gateway's configuration
    pub name: String,
    /// where its datagrams come from now; `null` before the first
    pub endpoint: Option<SocketAddr>,
    /// it has a WireGuard session
    pub established: bool,
    /// this gateway claims the client's addresses (the return path comes here)
    pub claimed: bool,
    /// while claimed: the client's switch generation the claim was made for (the network
    /// prefers the highest; 0 for clients that send none)
    #[serde(default)]
    pub claim_generation: Option<u32>,
    /// milliseconds since its last probe; `null`: never probed
    pub last_probe_ms_ago: Option<u64>,
    /// inner bytes sent to it
    pub tx_bytes: u64,
    /// inner bytes received from it
    pub rx_bytes: u64,
    /// completed handshakes
    pub handshakes: u64,
    /// the prefixes it may use as a source (`100.96.0.2/32`)
    pub allowed_ips: Vec<String>,
    /// its datagrams and packets dropped, by reason
    pub drops: Counts,
}

/// What a gateway's watch on its routing daemon (BIRD) last found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingDaemon {
    /// its control socket
    pub socket: String,
    /// the last check got an answer
    pub reachable: bool,
    /// BGP sessions it has
    pub bgp_sessions: u32,
    /// of those, Established
    pub bgp_established: u32,
    /// checks made
    pub checks: u64,
    /// checks that failed
    pub failures: u64,
    /// why the last check failed
    pub last_error: Option<String>,
}

/// Local packets a client dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalDrops {
    /// packets whose source is not the local address
    pub source_not_local: u64,
    /// packets that did not parse, by reason
    pub malformed: Counts,
}

/// The session keeper's flow table and switch-over recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperStatus {
    /// flows tracked now
    pub flows: u64,
    /// the flow table's cap
    pub flow_table_size: u64,
    /// heap bytes of the flow table
    pub flow_memory_bytes: u64,
    /// flows created
    pub flows_created: u64,
    /// flows expired (idle)
    pub flows_expired: u64,
    /// flows evicted from probation to make room
    pub flows_evicted_probation: u64,
    /// established flows evicted to make room
    pub flows_evicted_protected: u64,
    /// TCP SYNs whose MSS was clamped
    pub mss_clamped: u64,
    /// ICMP errors whose quoted packet was rewritten
    pub quoted_rewritten: u64,
    /// IPv6 UDP packets with a zero checksum
    pub udp6_zero_checksum: u64,
    /// switches that triggered switch-over recovery
    pub recoveries: u64,
    /// data segments resent at switches
    pub recovery_segments: u64,
    /// ACKs resent at switches
    pub recovery_acks: u64,
    /// recoveries cut short by their budget
    pub recovery_over_budget: u64,
}

/// A datacenter endpoint given as a DNS name, and how resolving it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointName {
    /// the datacenter
    pub datacenter: String,
    /// the configured host name
    pub host: String,
    /// the address in use; `null` until a lookup succeeded
    pub address: Option<SocketAddr>,
    /// lookups that failed in a row
    pub failures: u64,
}

/// A client on the move: named endpoints, resumes, network changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoamingStatus {
    /// the endpoints given as names
    pub names: Vec<EndpointName>,
    /// times the process resumed after not running (suspend, SIGSTOP)
    pub resumes: u64,
    /// local network changes seen
    pub network_changes: u64,
}

/// What a client does with traffic while no datacenter is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// traffic is held back (nothing leaks outside the tunnels)
    Closed,
    /// traffic goes out directly
    Open,
}

/// A client's `status` (`failoverd`'s, and the engine part of `vmm-shim`'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// the datacenter traffic uses now
    pub active: String,
    /// the client's stable inner addresses (IPv4 and/or IPv6)
    pub stable_address: Vec<IpAddr>,
    /// every datacenter, in configuration order
    pub datacenters: Vec<Datacenter>,
    /// what traffic does while no datacenter is usable
    pub fail_mode: FailMode,
    /// local packets dropped
    pub local_drops: LocalDrops,
    /// inbound packets not addressed to the stable address
    pub inbound_not_for_us: u64,
    /// the session keeper
    pub sessionkeeper: KeeperStatus,
    /// underlay datagrams from no datacenter's endpoint, dropped, by reason
    pub underlay_drops: Counts,
    /// probe replies that did not parse
    pub probe_replies_malformed: u64,
    /// the switches the daemon remembers, newest last
    pub switches: Vec<SwitchEvent>,
    /// writes to the underlay or the local side that failed
    pub send_errors: u64,
    /// named endpoints, resumes, network changes
    pub roaming: RoamingStatus,
}

/// The two directions of the guest's link (QEMU stream or vhost-user): the transport's own
/// counters, by name. Names follow the crate's unit rules (`backlog_bytes` is bytes,
/// `connected` is 1 while a VMM is connected, the rest are counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestTransport {
    /// frames from the guest
    pub receive: Counts,
    /// frames to the guest
    pub send: Counts,
}

/// The guest below a `vmm-shim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStatus {
    /// the guest's MAC address once seen (`52:54:00:12:34:56`); `null` before
    pub mac: Option<String>,
    /// the guest's addresses (the configured IPv4, the IPv6 it chose once seen)
    pub addresses: Vec<IpAddr>,
    /// frames from the guest
    pub rx_frames: u64,
    /// frames to the guest
    pub tx_frames: u64,
    /// the guest's IP packets handed to the engine
    pub to_engine: u64,
    /// ARP replies sent to the guest
    pub arp_replies: u64,
    /// DHCP replies sent to the guest
    pub dhcp_replies: u64,
    /// router advertisements sent to the guest
    pub router_advertisements: u64,
    /// neighbour advertisements sent to the guest
    pub neighbor_advertisements: u64,
    /// guest frames dropped, by reason
    pub drops: Counts,
    /// the transport's counters
    pub link: GuestTransport,
}

/// A `vmm-shim`'s `status`: a client's, and its guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimStatus {
    /// the engine's status, as a client's
    #[serde(flatten)]
    pub client: ClientStatus,
    /// the guest
    pub guest: GuestStatus,
}

/// Probes a gateway refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbesRefused {
    /// did not parse
    pub malformed: u64,
    /// a reply, or otherwise not a request
    pub not_request: u64,
}

/// A gateway's `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// the gateway's WireGuard public key (base64)
    pub public_key: String,
    /// every configured client
    pub clients: Vec<Client>,
    /// underlay datagrams dropped before reaching a client's session, by reason
    pub port_drops: Counts,
    /// packets from the inside network dropped, by reason
    pub tun_drops: Counts,
    /// probes echoed
    pub probes_answered: u64,
    /// probes refused
    pub probes_refused: ProbesRefused,
    /// probes reordered or stale: echoed, their intent not acted on
    pub probes_stale: u64,
    /// how claims are made: `neighbour` (proxy ARP/NDP on a shared segment), `route` (kernel
    /// routes of protocol 209 for a routing daemon), or both
    #[serde(default)]
    pub claim_backends: Vec<String>,
    /// stale claims (routes, proxy entries) a previous run left behind, removed at start
    #[serde(default)]
    pub stale_claims_removed: u64,
    /// the routing daemon that exports the claims, when its socket is configured
    #[serde(default)]
    pub routing_daemon: Option<RoutingDaemon>,
    /// claims of a client's addresses carried out
    pub claims: u64,
    /// releases carried out
    pub releases: u64,
    /// claims or releases that failed
    pub claim_errors: u64,
    /// underlay datagrams received
    pub datagrams_received: u64,
    /// sends that failed
    pub send_errors: u64,
}

/// The answer to `status`, by the kind of daemon (`mode` on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode")]
pub enum Status {
    /// `failoverd` (`"mode":"client"`)
    #[serde(rename = "client")]
    Client(ClientStatus),
    /// `vmm-shim` (`"mode":"vmm-shim"`)
    #[serde(rename = "vmm-shim")]
    Shim(ShimStatus),
    /// `failoverd gateway` (`"mode":"gateway"`)
    #[serde(rename = "gateway")]
    Gateway(GatewayStatus),
}

impl Status {
    /// `client`, `vmm-shim` or `gateway`.
    pub fn mode(&self) -> &'static str {
        match self {
            Status::Client(_) => "client",
            Status::Shim(_) => "vmm-shim",
            Status::Gateway(_) => "gateway",
        }
    }

    /// The client part of a client's or a shim's status.
    pub fn client(&self) -> Option<&ClientStatus> {
        match self {
            Status::Client(c) => Some(c),
            Status::Shim(s) => Some(&s.client),
            Status::Gateway(_) => None,
        }
    }
}

/// The answer to `tunnels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelList {
    /// every datacenter's tunnel, in configuration order
    pub tunnels: Vec<Datacenter>,
}

/// The answer to `flows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowList {
    /// flows tracked in all (the list may be shorter: `limit`)
    pub total: u64,
    /// the most recently active flows first
    pub flows: Vec<Flow>,
}

/// The answer to `events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventList {
    /// the switches the daemon remembers, newest last
    pub events: Vec<SwitchEvent>,
}

/// The answer to `clients` (a gateway's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientList {
    /// every configured client
    pub clients: Vec<Client>,
}

/// The answer to `switch`, `drain` and `undrain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Steered {
    /// the datacenter traffic uses after the command
    pub active: String,
}

/// The answer to `reload`: datacenters (a client's) or clients (a gateway's) by what the
/// reload did to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reload {
    /// new in the file
    pub added: Vec<String>,
    /// gone from the file
    pub removed: Vec<String>,
    /// kept with new settings (a gateway lists none: a changed client is removed and added)
    pub changed: Vec<String>,
    /// kept as they were
    pub unchanged: Vec<String>,
}

/// The answer to `metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// the Prometheus text exposition
    pub text: String,
}

/// What a daemon answers: one body per command, or a refusal.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `status`
    Status(Box<Status>),
    /// `tunnels`
    Tunnels(TunnelList),
    /// `flows`
    Flows(FlowList),
    /// `events`
    Events(EventList),
    /// `clients`
    Clients(ClientList),
    /// `switch`, `drain`, `undrain`
    Steered(Steered),
    /// `reload`
    Reload(Reload),
    /// `metrics`
    Metrics(Metrics),
    /// `{"ok":false,"error":...}`: the request was refused, the message says why and what to
    /// do
    Refused(String),
}

impl Answer {
    /// A refusal.
    pub fn error(message: impl Into<String>) -> Self {
        Answer::Refused(message.into())
    }

    /// Whether the request was carried out.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Answer::Refused(_))
    }

    /// The answer in its envelope as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        let body = match self {
            Answer::Status(b) => serde_json::to_value(b),
            Answer::Tunnels(b) => serde_json::to_value(b),
            Answer::Flows(b) => serde_json::to_value(b),
            Answer::Events(b) => serde_json::to_value(b),
            Answer::Clients(b) => serde_json::to_value(b),
            Answer::Steered(b) => serde_json::to_value(b),
            Answer::Reload(b) => serde_json::to_value(b),
            Answer::Metrics(b) => serde_json::to_value(b),
            Answer::Refused(e) => return refusal(e),
        };
        match body {
            Ok(serde_json::Value::Object(fields)) => {
                let mut map = serde_json::Map::new();
                map.insert("v".into(), PROTOCOL_VERSION.into());
                map.insert("ok".into(), true.into());
                map.extend(fields);
                serde_json::Value::Object(map)
            }
            // every body is a struct of plain fields: this does not happen
            _ => refusal("internal: the answer could not be encoded"),
        }
    }

    /// The answer as one line, newline included: what the daemon writes.
    pub fn to_line(&self) -> String {
        let mut line = self.to_value().to_string();
        line.push('\n');
        line
    }
}

fn refusal(message: &str) -> serde_json::Value {
    serde_json::json!({"v": PROTOCOL_VERSION, "ok": false, "error": message})
}

impl From<Status> for Answer {
    fn from(s: Status) -> Self {
        Answer::Status(Box::new(s))
    }
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// not JSON, or not an object with `v` and `ok`
    #[error(
        "the answer is not a control-protocol answer ({0}); is this a failoverd control socket?"
    )]
    NotAnAnswer(String),
    /// the daemon speaks another protocol version
    #[error("the daemon speaks control protocol v{0}, this program v1; use the failoverctl of the daemon's version")]
    Version(u64),
    /// the daemon refused the request; the message is its `error`
    #[error("{0}")]
    Refused(String),
    /// `ok: true`, but the fields do not match this version's answer type
    #[error("the answer does not match this failoverctl's protocol ({0}); the daemon is probably another version: use the failoverctl of the daemon's version")]
    Mismatch(String),
}

/// Reads an answer line (or its JSON value) into the command's answer type `T`.
pub fn decode<T: DeserializeOwned>(answer: serde_json::Value) -> Result<T, DecodeError> {
    let serde_json::Value::Object(mut map) = answer else {
        return Err(DecodeError::NotAnAnswer("not a JSON object".into()));
    };
    match map.remove("v").as_ref().and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => return Err(DecodeError::Version(v)),
        None => return Err(DecodeError::NotAnAnswer("no \"v\"".into())),
    }
    match map.remove("ok") {
        Some(serde_json::Value::Bool(true)) => {}
        Some(serde_json::Value::Bool(false)) => {
            return Err(DecodeError::Refused(
                map.get("error")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("refused without a reason")
                    .to_owned(),
            ))
        }
        _ => return Err(DecodeError::NotAnAnswer("no \"ok\"".into())),
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| DecodeError::Mismatch(e.to_string()))
}

/// Reads an answer line into `T` (see [`decode`]).
pub fn decode_line<T: DeserializeOwned>(line: &str) -> Result<T, DecodeError> {
    let value = serde_json::from_str(line).map_err(|e| DecodeError::NotAnAnswer(e.to_string()))?;
    decode(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn datacenter(name: &str, active: bool) -> Datacenter {
        Datacenter {
            name: name.into(),
            endpoint: Some("198.18.0.11:51820".parse().unwrap()),
            active,
            drained: false,
            suppressed: false,
            established: true,
            health: Health::Up,
            rtt_ms: Some(1.5),
            loss: None,
            last_handshake_ms_ago: Some(12_000),
            tx_bytes: 1,
            rx_bytes: 2,
            handshakes: 1,
            probes_sent: 10,
            probe_replies: 9,
            probe_replies_refused: 0,
            flaps: 0,
            drops: [("replay".to_owned(), 2)].into(),
        }
    }

    fn client_status() -> ClientStatus {
        ClientStatus {
            active: "dc1".into(),
            stable_address: vec!["100.96.0.2".parse().unwrap()],
            datacenters: vec![datacenter("dc1", true), datacenter("dc2", false)],
            fail_mode: FailMode::Closed,
            local_drops: LocalDrops {
                source_not_local: 0,
                malformed: Counts::new(),
            },
            inbound_not_for_us: 0,
            sessionkeeper: KeeperStatus {
                flows: 1,
                flow_table_size: 65536,
                flow_memory_bytes: 100,
                flows_created: 1,
                flows_expired: 0,
                flows_evicted_probation: 0,
                flows_evicted_protected: 0,
                mss_clamped: 0,
                quoted_rewritten: 0,
                udp6_zero_checksum: 0,
                recoveries: 0,
                recovery_segments: 0,
                recovery_acks: 0,
                recovery_over_budget: 0,
            },
            underlay_drops: Counts::new(),
            probe_replies_malformed: 0,
            switches: vec![SwitchEvent {
                unix_ms: 1,
                from: "dc2".into(),
                to: "dc1".into(),
                reason: "failback".into(),
                detection_ms: None,
                stall_ms: Some(95.5),
            }],
            send_errors: 0,
            roaming: RoamingStatus {
                names: vec![],
                resumes: 0,
                network_changes: 0,
            },
        }
    }

    fn round_trip<T: Serialize + DeserializeOwned>(answer: &Answer) -> T {
        decode_line(&answer.to_line()).unwrap()
    }

    #[test]
    fn statuses_carry_their_mode_and_survive_the_wire() {
        let client = Status::Client(client_status());
        let value = Answer::from(client.clone()).to_value();
        assert_eq!(value["v"], 1);
        assert_eq!(value["ok"], true);
        assert_eq!(value["mode"], "client");
        assert_eq!(value["datacenters"][0]["health"], "up");
        assert_eq!(value["datacenters"][0]["rtt_ms"], 1.5);
        assert_eq!(value["fail_mode"], "closed");
        assert_eq!(round_trip::<Status>(&client.clone().into()), client);

        let shim = Status::Shim(ShimStatus {
            client: client_status(),
            guest: GuestStatus {
                mac: None,
                addresses: vec!["10.0.2.15".parse().unwrap()],
                rx_frames: 1,
                tx_frames: 2,
                to_engine: 1,
                arp_replies: 0,
                dhcp_replies: 1,
                router_advertisements: 0,
                neighbor_advertisements: 0,
                drops: Counts::new(),
                link: GuestTransport {
                    receive: [("frames".to_owned(), 1)].into(),
                    send: Counts::new(),
                },
            },
        });
        let value = Answer::from(shim.clone()).to_value();
        assert_eq!(value["mode"], "vmm-shim");
        assert_eq!(value["active"], "dc1", "the client part is flat: {value}");
        assert_eq!(round_trip::<Status>(&shim.clone().into()), shim);
        assert_eq!(shim.client().map(|c| c.active.as_str()), Some("dc1"));

        let gateway = Status::Gateway(GatewayStatus {
            public_key: "PUB=".into(),
            clients: vec![Client {
                name: "laptop".into(),
                endpoint: None,
                established: false,
                claimed: false,
                claim_generation: None,
                last_probe_ms_ago: None,
                tx_bytes: 0,
                rx_bytes: 0,
                handshakes: 0,
                allowed_ips: vec!["100.96.0.2/32".into()],
                drops: Counts::new(),
            }],
            port_drops: Counts::new(),
            tun_drops: Counts::new(),
            probes_answered: 0,
            probes_refused: ProbesRefused {
                malformed: 0,
                not_request: 0,
            },
            probes_stale: 0,
            claims: 0,
            releases: 0,
            claim_errors: 0,
            datagrams_received: 0,
            send_errors: 0,
            claim_backends: vec!["neighbour".into()],
            stale_claims_removed: 0,
            routing_daemon: None,
        });
        assert_eq!(round_trip::<Status>(&gateway.clone().into()), gateway);
        assert_eq!(gateway.mode(), "gateway");
        assert!(gateway.client().is_none());
    }

    #[test]
    fn status_and_tunnels_list_the_same_datacenter() {
        let tunnels = Answer::Tunnels(TunnelList {
            tunnels: client_status().datacenters,
        })
        .to_value();
        let status = Answer::from(Status::Client(client_status())).to_value();
        assert_eq!(tunnels["tunnels"], status["datacenters"]);
    }

    #[test]
    fn refusals_and_mismatches_are_errors() {
        let refused = Answer::error("no datacenter named 'x'");
        assert!(!refused.is_ok());
        assert_eq!(
            refused.to_line(),
            "{\"error\":\"no datacenter named 'x'\",\"ok\":false,\"v\":1}\n"
        );
        assert_eq!(
            decode_line::<Steered>(&refused.to_line()),
            Err(DecodeError::Refused("no datacenter named 'x'".into()))
        );
        // the old names of `tunnels` are another protocol
        let old = r#"{"v":1,"ok":true,"tunnels":[{"name":"dc1","state":"up","rtt_ms":1.0}]}"#;
        let e = decode_line::<TunnelList>(old).unwrap_err();
        assert!(matches!(e, DecodeError::Mismatch(_)), "{e}");
        assert!(e.to_string().contains("another version"), "{e}");
        assert_eq!(
            decode_line::<Steered>(r#"{"v":2,"ok":true,"active":"dc1"}"#),
            Err(DecodeError::Version(2))
        );
        assert!(matches!(
            decode_line::<Steered>("[1]"),
            Err(DecodeError::NotAnAnswer(_))
        ));
        assert!(matches!(
            decode_line::<Steered>("not json"),
            Err(DecodeError::NotAnAnswer(_))
        ));
        // a newer daemon's extra field is ignored
        assert_eq!(
            decode_line::<Steered>(r#"{"v":1,"ok":true,"active":"dc1","new":5}"#),
            Ok(Steered {
                active: "dc1".into()
            })
        );
        let h: Result<Status, _> = decode_line(r#"{"v":1,"ok":true,"mode":"toaster"}"#);
        assert!(matches!(h, Err(DecodeError::Mismatch(_))));
    }
}
