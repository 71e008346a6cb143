//! What each answer looks like: tables and headers for people, JSON for programs, both
//! filtered by `--where` and projected by `--fields`.
//!
//! Every answer arrives here already read into its [`control_proto`] type (an answer that does
//! not fit is refused before), so headers come from typed fields. The tables, `--where` and
//! `--fields` work on each item's serialized JSON: the protocol's field names are what the
//! user names.

use control_proto::{FlowList, Metrics, Reload, Status, Steered};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::expr::{Expr, Path};
use crate::table::{self, Align, Table};

/// The most flows the daemon lists in one answer.
pub const MAX_FLOWS: u64 = control_proto::MAX_FLOWS_LISTED as u64;

/// How the user asked to see an answer.
#[derive(Debug, Default)]
pub struct View {
    /// `--json`
    pub json: bool,
    /// `--where`
    pub filter: Option<Expr>,
    /// `--fields`
    pub fields: Option<Vec<Path>>,
}

/// The text for stdout and the warnings for stderr.
#[derive(Debug, Default)]
pub struct Rendered {
    pub stdout: String,
    pub warnings: Vec<String>,
}

/// Which kind of item a list holds, and how its items are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// a client's datacenters and their tunnels (`status`'s `datacenters`, `tunnels`)
    Datacenters,
    Flows,
    Events,
    /// a gateway's clients (`status`'s and `clients`'s `clients`)
    Clients,
}

impl List {
    fn noun(self) -> &'static str {
        match self {
            List::Datacenters => "tunnels",
            List::Clients => "clients",
            List::Flows => "flows",
            List::Events => "events",
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            List::Datacenters => DATACENTERS,
            List::Clients => CLIENTS,
            List::Flows => FLOWS,
            List::Events => EVENTS,
        }
    }
}

/// A known column: the item field it shows (what `--fields` names), its header and cell.
#[derive(Debug)]
struct Column {
    key: &'static str,
    header: &'static str,
    align: Align,
    cell: fn(&Value) -> String,
}

fn f64_of(item: &Value, key: &str) -> Option<f64> {
    item.get(key).and_then(Value::as_f64)
}

fn str_of(item: &Value, key: &str) -> String {
    table::plain(item.get(key))
}

fn flag(item: &Value, key: &str) -> bool {
    item.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn bytes_of(item: &Value, key: &str) -> String {
    match item.get(key) {
        Some(v) => v
            .as_u64()
            .map_or_else(|| table::plain(Some(v)), table::bytes),
        None => "-".into(),
    }
}

fn ago(secs: Option<f64>) -> String {
    secs.map_or_else(|| "never".into(), |s| format!("{} ago", table::duration(s)))
}

/// A `_ms_ago` field as "12s ago" (or "never").
fn ms_ago(item: &Value, key: &str) -> String {
    ago(f64_of(item, key).map(|ms| ms / 1000.0))
}

fn active_marker(item: &Value) -> String {
    if flag(item, "active") { "*" } else { "" }.into()
}

fn health_with_flags(item: &Value) -> String {
    let mut state = str_of(item, "health");
    if flag(item, "drained") {
        state.push_str(" (drained)");
    }
    if flag(item, "suppressed") {
        state.push_str(" (suppressed)");
    }
    state
}

/// One table for a client's datacenters, in `status` and `tunnels` alike.
const DATACENTERS: &[Column] = &[
    Column {
        key: "active",
        header: "",
        align: Align::Left,
        cell: active_marker,
    },
    Column {
        key: "name",
        header: "NAME",
        align: Align::Left,
        cell: |i| str_of(i, "name"),
    },
    Column {
        key: "health",
        header: "HEALTH",
        align: Align::Left,
        cell: health_with_flags,
    },
    Column {
        key: "endpoint",
        header: "ENDPOINT",
        align: Align::Left,
        cell: |i| str_of(i, "endpoint"),
    },
    Column {
        key: "rtt_ms",
        header: "RTT",
        align: Align::Right,
        cell: |i| f64_of(i, "rtt_ms").map_or("-".into(), table::millis),
    },
    Column {
        key: "loss",
        header: "LOSS",
        align: Align::Right,
        cell: |i| f64_of(i, "loss").map_or("-".into(), table::percent),
    },
    Column {
        key: "last_handshake_ms_ago",
        header: "HANDSHAKE",
        align: Align::Right,
        cell: |i| ms_ago(i, "last_handshake_ms_ago"),
    },
    Column {
        key: "rx_bytes",
        header: "RX",
        align: Align::Right,
        cell: |i| bytes_of(i, "rx_bytes"),
    },
    Column {
        key: "tx_bytes",
        header: "TX",
        align: Align::Right,
        cell: |i| bytes_of(i, "tx_bytes"),
    },
    Column {
        key: "probe_replies",
        header: "PROBES",
        align: Align::Right,
        cell: |i| {
            format!(
                "{}/{}",
                str_of(i, "probe_replies"),
                str_of(i, "probes_sent")
            )
        },
    },
];

fn remote(item: &Value) -> String {
    let address = str_of(item, "remote");
    match item
        .get("remote_port")
        .and_then(Value::as_u64)
        .filter(|p| *p != 0)
    {
        Some(port) if address.contains(':') => format!("[{address}]:{port}"),
        Some(port) => format!("{address}:{port}"),
        None => address,
    }
}

const FLOWS: &[Column] = &[
    Column {
        key: "protocol",
        header: "PROTO",
        align: Align::Left,
        cell: |i| str_of(i, "protocol"),
    },
    Column {
        key: "local_port",
        header: "LOCAL",
        align: Align::Right,
        cell: |i| str_of(i, "local_port"),
    },
    Column {
        key: "remote",
        header: "REMOTE",
        align: Align::Left,
        cell: remote,
    },
    Column {
        key: "tunnel",
        header: "TUNNEL",
        align: Align::Left,
        cell: |i| str_of(i, "tunnel"),
    },
    Column {
        key: "state",
        header: "STATE",
        align: Align::Left,
        cell: |i| str_of(i, "state"),
    },
    Column {
        key: "age_ms",
        header: "AGE",
        align: Align::Right,
        cell: |i| f64_of(i, "age_ms").map_or("-".into(), |ms| table::duration(ms / 1000.0)),
    },
    Column {
        key: "idle_ms",
        header: "IDLE",
        align: Align::Right,
        cell: |i| f64_of(i, "idle_ms").map_or("-".into(), |ms| table::duration(ms / 1000.0)),
    },
    Column {
        key: "packets_out",
        header: "PKTS OUT",
        align: Align::Right,
        cell: |i| str_of(i, "packets_out"),
    },
    Column {
        key: "packets_in",
        header: "PKTS IN",
        align: Align::Right,
        cell: |i| str_of(i, "packets_in"),
    },
];

const EVENTS: &[Column] = &[
    Column {
        key: "unix_ms",
        header: "TIME",
        align: Align::Left,
        cell: |i| {
            i.get("unix_ms")
                .and_then(Value::as_u64)
                .map_or("-".into(), table::utc)
        },
    },
    Column {
        key: "from",
        header: "FROM",
        align: Align::Left,
        cell: |i| str_of(i, "from"),
    },
    Column {
        key: "to",
        header: "TO",
        align: Align::Left,
        cell: |i| str_of(i, "to"),
    },
    Column {
        key: "reason",
        header: "REASON",
        align: Align::Left,
        cell: |i| str_of(i, "reason"),
    },
    Column {
        key: "detection_ms",
        header: "DETECTION",
        align: Align::Right,
        cell: |i| f64_of(i, "detection_ms").map_or("-".into(), table::millis),
    },
    Column {
        key: "stall_ms",
        header: "STALL",
        align: Align::Right,
        cell: |i| f64_of(i, "stall_ms").map_or("-".into(), table::millis),
    },
];

const CLIENTS: &[Column] = &[
    Column {
        key: "name",
        header: "NAME",
        align: Align::Left,
        cell: |i| str_of(i, "name"),
    },
    Column {
        key: "endpoint",
        header: "ENDPOINT",
        align: Align::Left,
        cell: |i| str_of(i, "endpoint"),
    },
    Column {
        key: "established",
        header: "SESSION",
        align: Align::Left,
        cell: |i| if flag(i, "established") { "up" } else { "none" }.into(),
    },
    Column {
        key: "claimed",
        header: "CLAIMED",
        align: Align::Left,
        cell: |i| if flag(i, "claimed") { "yes" } else { "no" }.into(),
    },
    Column {
        key: "claim_generation",
        header: "GENERATION",
        align: Align::Right,
        cell: |i| {
            i.get("claim_generation")
                .and_then(Value::as_u64)
                .map_or("-".into(), |g| g.to_string())
        },
    },
    Column {
        key: "last_probe_ms_ago",
        header: "LAST PROBE",
        align: Align::Right,
        cell: |i| ms_ago(i, "last_probe_ms_ago"),
    },
    Column {
        key: "handshakes",
        header: "HANDSHAKES",
        align: Align::Right,
        cell: |i| str_of(i, "handshakes"),
    },
    Column {
        key: "rx_bytes",
        header: "RX",
        align: Align::Right,
        cell: |i| bytes_of(i, "rx_bytes"),
    },
    Column {
        key: "tx_bytes",
        header: "TX",
        align: Align::Right,
        cell: |i| bytes_of(i, "tx_bytes"),
    },
    Column {
        key: "allowed_ips",
        header: "ALLOWED IPS",
        align: Align::Left,
        cell: |i| str_of(i, "allowed_ips"),
    },
];

/// Each item's JSON: what `--where` and `--fields` look at.
fn items_of<T: Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
        .collect()
}

/// The items that pass `--where`; `key` names the list in warnings.
fn selected<'a>(
    items: &'a [Value],
    key: &str,
    view: &View,
    warnings: &mut Vec<String>,
) -> Vec<&'a Value> {
    let mut named: Vec<&Path> = view.filter.as_ref().map(Expr::fields).unwrap_or_default();
    named.extend(view.fields.iter().flatten());
    if let Some(first) = items.first() {
        for path in named {
            if items.iter().all(|i| path.lookup(i).is_none()) {
                let known: Vec<&str> = first
                    .as_object()
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let warning = format!(
                    "no item in \"{key}\" has a field '{path}'; its fields: {}",
                    known.join(", ")
                );
                if !warnings.contains(&warning) {
                    warnings.push(warning);
                }
            }
        }
    }
    items
        .iter()
        .filter(|i| view.filter.as_ref().is_none_or(|e| e.matches(i)))
        .collect()
}

fn project(item: &Value, fields: Option<&[Path]>) -> Value {
    match fields {
        None => item.clone(),
        Some(fields) => Value::Object(
            fields
                .iter()
                .map(|f| {
                    (
                        f.as_str().to_owned(),
                        f.lookup(item).cloned().unwrap_or(Value::Null),
                    )
                })
                .collect(),
        ),
    }
}

fn list_table(items: &[&Value], list: List, view: &View) -> String {
    enum Col<'a> {
        Known(&'a Column),
        Raw(&'a Path),
    }
    let columns: Vec<Col<'_>> = match &view.fields {
        None => list.columns().iter().map(Col::Known).collect(),
        Some(fields) => fields
            .iter()
            .map(|f| {
                list.columns()
                    .iter()
                    .find(|c| c.key == f.as_str())
                    .map_or(Col::Raw(f), Col::Known)
            })
            .collect(),
    };
    if items.is_empty() {
        return if view.filter.is_some() {
            format!("no {} match --where\n", list.noun())
        } else {
            format!("no {}\n", list.noun())
        };
    }
    let mut t = Table::new(columns.iter().map(|c| match c {
        Col::Known(k) if view.fields.is_some() && k.header.is_empty() => {
            (k.key.to_uppercase(), k.align)
        }
        Col::Known(k) => (k.header.to_owned(), k.align),
        Col::Raw(p) => (p.as_str().to_uppercase(), Align::Left),
    }));
    for item in items {
        t.push(
            columns
                .iter()
                .map(|c| match c {
                    Col::Known(k) => (k.cell)(item),
                    Col::Raw(p) => table::plain(p.lookup(item)),
                })
                .collect(),
        );
    }
    t.render()
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

fn pretty_of<T: Serialize>(value: &T) -> String {
    pretty(&serde_json::to_value(value).unwrap_or(Value::Null))
}

/// Renders a list answer (`tunnels`, `events`, `clients`): the items of kind `list`, named
/// `key` in the answer.
pub fn list<T: Serialize>(items: &[T], key: &str, list: List, view: &View) -> Rendered {
    let mut out = Rendered::default();
    let values = items_of(items);
    let items = selected(&values, key, view, &mut out.warnings);
    if view.json {
        let projected: Vec<Value> = items
            .iter()
            .map(|i| project(i, view.fields.as_deref()))
            .collect();
        out.stdout = pretty(&Value::Array(projected));
        return out;
    }
    out.stdout = list_table(&items, list, view);
    out
}

/// Renders `flows`: the table, and how many were left out.
pub fn flows(answer: &FlowList, view: &View) -> Rendered {
    let mut out = list(&answer.flows, "flows", List::Flows, view);
    if view.json {
        return out;
    }
    let sent = answer.flows.len() as u64;
    if answer.total > sent {
        out.stdout
            .push_str(&format!("{sent} of {} flows shown", answer.total));
        if sent < MAX_FLOWS {
            out.stdout
                .push_str(&format!("; --limit N shows more (up to {MAX_FLOWS})"));
        }
        out.stdout.push('\n');
    }
    out
}

fn last_switch(switches: &[control_proto::SwitchEvent], now_ms: u64) -> String {
    let Some(s) = switches.last() else {
        return "none".into();
    };
    let mut text = format!(
        "{} -> {} ({}), {}",
        table::sanitize(&s.from),
        table::sanitize(&s.to),
        table::sanitize(&s.reason),
        table::utc(s.unix_ms)
    );
    if now_ms >= s.unix_ms {
        text.push_str(&format!(
            " ({} ago)",
            table::duration((now_ms - s.unix_ms) as f64 / 1000.0)
        ));
    }
    if let Some(d) = s.detection_ms {
        text.push_str(&format!("; detection {}", table::millis(d)));
    }
    if let Some(d) = s.stall_ms {
        text.push_str(&format!(", stall {}", table::millis(d)));
    }
    text
}

fn joined<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    let all: Vec<String> = items.iter().map(ToString::to_string).collect();
    table::sanitize(&all.join(", "))
}

/// Renders `status`: a header (mode, active datacenter, stable address, last switch) and the
/// datacenter table, or for a gateway its clients.
pub fn status(answer: &Status, view: &View, now_ms: u64) -> Rendered {
    let (key, list, values) = match answer {
        Status::Gateway(g) => ("clients", List::Clients, items_of(&g.clients)),
        Status::Client(_) | Status::Shim(_) => {
            let datacenters = answer.client().map_or(&[][..], |c| &c.datacenters);
            ("datacenters", List::Datacenters, items_of(datacenters))
        }
    };
    let mut out = Rendered::default();
    let items = selected(&values, key, view, &mut out.warnings);
    if view.json {
        let mut map = match serde_json::to_value(answer) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let projected: Vec<Value> = items
            .iter()
            .map(|i| project(i, view.fields.as_deref()))
            .collect();
        map.insert(key.into(), Value::Array(projected));
        out.stdout = pretty(&Value::Object(map));
        return out;
    }
    let mut header: Vec<(&str, String)> = vec![("mode", answer.mode().to_owned())];
    match answer {
        Status::Gateway(g) => {
            let claimed = g.clients.iter().filter(|c| c.claimed).count();
            header.push(("public key", table::sanitize(&g.public_key)));
            header.push((
                "clients",
                format!("{} ({claimed} claimed)", g.clients.len()),
            ));
            header.push(("claim backends", g.claim_backends.join(", ")));
            if let Some(r) = &g.routing_daemon {
                header.push((
                    "routing daemon",
                    if r.reachable {
                        format!(
                            "up, {}/{} BGP sessions established",
                            r.bgp_established, r.bgp_sessions
                        )
                    } else {
                        format!(
                            "NOT ANSWERING ({} failed checks): {}",
                            r.failures,
                            table::sanitize(r.last_error.as_deref().unwrap_or("-"))
                        )
                    },
                ));
            }
            header.push(("probes answered", g.probes_answered.to_string()));
        }
        Status::Client(c) | Status::Shim(control_proto::ShimStatus { client: c, .. }) => {
            header.push(("active", table::sanitize(&c.active)));
            header.push(("stable address", joined(&c.stable_address)));
            header.push(("last switch", last_switch(&c.switches, now_ms)));
            header.push((
                "flows",
                format!(
                    "{} (table {})",
                    c.sessionkeeper.flows, c.sessionkeeper.flow_table_size
                ),
            ));
        }
    }
    if let Status::Shim(s) = answer {
        header.push((
            "guest",
            format!(
                "mac {}, addresses {}",
                table::sanitize(s.guest.mac.as_deref().unwrap_or("-")),
                joined(&s.guest.addresses)
            ),
        ));
    }
    out.stdout = table::key_values(&header);
    out.stdout.push('\n');
    out.stdout.push_str(&list_table(&items, list, view));
    out
}

/// Renders `switch`, `drain`, `undrain`: what is active now.
pub fn switched(answer: &Steered, verb: &str, datacenter: &str, json: bool) -> Rendered {
    if json {
        return Rendered {
            stdout: pretty_of(answer),
            warnings: Vec::new(),
        };
    }
    let active = table::sanitize(&answer.active);
    let datacenter = table::sanitize(datacenter);
    let stdout = match verb {
        "drain" => format!("drained {datacenter}; active: {active}\n"),
        "undrain" => format!("undrained {datacenter}; active: {active}\n"),
        _ => format!("active: {active}\n"),
    };
    Rendered {
        stdout,
        warnings: Vec::new(),
    }
}

/// Renders `reload`: what changed.
pub fn reloaded(answer: &Reload, json: bool) -> Rendered {
    if json {
        return Rendered {
            stdout: pretty_of(answer),
            warnings: Vec::new(),
        };
    }
    let pairs: Vec<(&str, String)> = vec![
        ("added", joined(&answer.added)),
        ("removed", joined(&answer.removed)),
        ("changed", joined(&answer.changed)),
        ("unchanged", joined(&answer.unchanged)),
    ];
    Rendered {
        stdout: table::key_values(&pairs),
        warnings: Vec::new(),
    }
}

/// Renders `metrics`: the Prometheus text as it came (its lines are sanitized: the text is
/// the daemon's, the terminal is the user's), or `{"text": ...}`.
pub fn metrics(answer: &Metrics, json: bool) -> Rendered {
    if json {
        return Rendered {
            stdout: pretty_of(answer),
            warnings: Vec::new(),
        };
    }
    let mut stdout: String = answer
        .text
        .lines()
        .map(|l| table::sanitize(l) + "\n")
        .collect();
    if stdout.is_empty() {
        stdout.push('\n');
    }
    Rendered {
        stdout,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control_proto::{
        Client, ClientStatus, Counts, Datacenter, EventList, FailMode, Flow, GatewayStatus, Health,
        KeeperStatus, LocalDrops, ProbesRefused, RoamingStatus, SwitchEvent,
    };
    use serde_json::json;

    fn dc(name: &str, active: bool, health: Health) -> Datacenter {
        Datacenter {
            name: name.into(),
            endpoint: Some(format!("198.18.0.1{}:51820", &name[2..]).parse().unwrap()),
            active,
            drained: false,
            suppressed: false,
            established: true,
            health,
            rtt_ms: None,
            loss: None,
            last_handshake_ms_ago: None,
            tx_bytes: 0,
            rx_bytes: 0,
            handshakes: 0,
            probes_sent: 0,
            probe_replies: 0,
            probe_replies_refused: 0,
            flaps: 0,
            drops: Counts::new(),
        }
    }

    fn datacenters() -> Vec<Datacenter> {
        let mut dc1 = dc("dc1", true, Health::Up);
        dc1.rtt_ms = Some(61.2);
        dc1.loss = Some(0.0);
        dc1.last_handshake_ms_ago = Some(12_000);
        dc1.tx_bytes = 1_572_864;
        dc1.rx_bytes = 3_145_728;
        dc1.probes_sent = 10;
        dc1.probe_replies = 10;
        dc1.drops = [("replay".to_owned(), 2)].into();
        let mut dc2 = dc("dc2", false, Health::Down);
        dc2.established = false;
        dc2.loss = Some(0.25);
        dc2.rx_bytes = 512;
        dc2.drained = true;
        dc2.probes_sent = 10;
        dc2.probe_replies = 3;
        vec![dc1, dc2]
    }

    fn client_status() -> ClientStatus {
        ClientStatus {
            active: "dc1".into(),
            stable_address: vec!["100.96.0.2".parse().unwrap(), "fd00:96::2".parse().unwrap()],
            datacenters: datacenters(),
            fail_mode: FailMode::Closed,
            local_drops: LocalDrops {
                source_not_local: 0,
                malformed: Counts::new(),
            },
            inbound_not_for_us: 0,
            sessionkeeper: KeeperStatus {
                flows: 12,
                flow_table_size: 65536,
                flow_memory_bytes: 0,
                flows_created: 0,
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
            switches: events(),
            send_errors: 0,
            roaming: RoamingStatus {
                names: Vec::new(),
                resumes: 0,
                network_changes: 0,
            },
        }
    }

    fn events() -> Vec<SwitchEvent> {
        vec![
            SwitchEvent {
                unix_ms: 1_735_787_045_678,
                from: "dc2".into(),
                to: "dc1".into(),
                reason: "failback".into(),
                detection_ms: None,
                stall_ms: None,
            },
            SwitchEvent {
                unix_ms: 1_735_787_105_678,
                from: "dc1".into(),
                to: "dc2".into(),
                reason: "probe_timeout".into(),
                detection_ms: Some(82.0),
                stall_ms: Some(95.5),
            },
        ]
    }

    fn view(filter: Option<&str>, fields: Option<&str>, json: bool) -> View {
        View {
            json,
            filter: filter.map(|f| Expr::parse(f).unwrap()),
            fields: fields.map(|f| crate::expr::parse_fields(f).unwrap()),
        }
    }

    const DATACENTER_TABLE: &str = "   NAME  HEALTH          ENDPOINT               RTT   LOSS  HANDSHAKE       RX       TX  PROBES
*  dc1   up              198.18.0.11:51820  61.2 ms   0.0%    12s ago  3.0 MiB  1.5 MiB   10/10
   dc2   down (drained)  198.18.0.12:51820        -  25.0%      never    512 B      0 B    3/10
";

    #[test]
    fn client_status_header_and_the_datacenter_table() {
        let now = 1_735_787_105_678u64 + 192_000;
        let out = status(
            &Status::Client(client_status()),
            &view(None, None, false),
            now,
        );
        assert!(out.warnings.is_empty());
        let expected = format!(
            "\
mode:            client
active:          dc1
stable address:  100.96.0.2, fd00:96::2
last switch:     dc1 -> dc2 (probe_timeout), 2025-01-02 03:05:05 UTC (3m12s ago); detection 82.0 ms, stall 95.5 ms
flows:           12 (table 65536)

{DATACENTER_TABLE}"
        );
        assert_eq!(out.stdout, expected, "\n{}", out.stdout);
    }

    #[test]
    fn status_and_tunnels_show_the_same_table() {
        let out = list(
            &datacenters(),
            "tunnels",
            List::Datacenters,
            &view(None, None, false),
        );
        assert_eq!(out.stdout, DATACENTER_TABLE, "\n{}", out.stdout);
    }

    #[test]
    fn status_without_switches() {
        let mut s = client_status();
        s.stable_address.clear();
        s.switches.clear();
        let out = status(&Status::Client(s), &view(None, None, false), 0);
        assert!(
            out.stdout.contains("stable address:  -\n"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("last switch:     none\n"),
            "{}",
            out.stdout
        );
    }

    #[test]
    fn status_filters_and_projects_its_datacenters() {
        let s = Status::Client(client_status());
        let v = view(Some("drained"), Some("name,drops.replay,health"), false);
        let out = status(&s, &v, 0);
        assert!(
            out.stdout
                .ends_with("NAME  DROPS.REPLAY  HEALTH\ndc2   -             down (drained)\n"),
            "{}",
            out.stdout
        );
        let out = status(&s, &view(Some("rtt_ms > 1"), Some("name"), true), 0);
        let parsed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(parsed["datacenters"], json!([{"name": "dc1"}]));
        assert_eq!(parsed["active"], "dc1");
        assert_eq!(parsed["mode"], "client");
        assert!(parsed.get("ok").is_none() && parsed.get("v").is_none());
    }

    fn laptop() -> Client {
        Client {
            name: "laptop".into(),
            endpoint: Some("203.0.113.5:40000".parse().unwrap()),
            established: true,
            claimed: true,
            claim_generation: Some(328_774_412),
            last_probe_ms_ago: Some(15),
            tx_bytes: 1,
            rx_bytes: 2048,
            handshakes: 1,
            allowed_ips: vec!["100.96.0.2/32".into(), "fd00:96::2/128".into()],
            drops: Counts::new(),
        }
    }

    #[test]
    fn gateway_status() {
        let s = Status::Gateway(GatewayStatus {
            public_key: "PUB=".into(),
            clients: vec![laptop()],
            port_drops: Counts::new(),
            tun_drops: Counts::new(),
            probes_answered: 7,
            probes_refused: ProbesRefused {
                malformed: 0,
                not_request: 0,
            },
            probes_stale: 0,
            claims: 1,
            releases: 0,
            claim_errors: 0,
            datagrams_received: 9,
            send_errors: 0,
            claim_backends: vec!["route".into()],
            stale_claims_removed: 0,
            routing_daemon: Some(control_proto::RoutingDaemon {
                socket: "/run/bird/bird.ctl".into(),
                reachable: true,
                bgp_sessions: 2,
                bgp_established: 2,
                checks: 5,
                failures: 0,
                last_error: None,
            }),
        });
        let out = status(&s, &view(None, None, false), 0);
        assert_eq!(
            out.stdout,
            "\
mode:             gateway
public key:       PUB=
clients:          1 (1 claimed)
claim backends:   route
routing daemon:   up, 2/2 BGP sessions established
probes answered:  7

NAME    ENDPOINT           SESSION  CLAIMED  GENERATION  LAST PROBE  HANDSHAKES       RX   TX  ALLOWED IPS
laptop  203.0.113.5:40000  up       yes       328774412    15ms ago           1  2.0 KiB  1 B  100.96.0.2/32, fd00:96::2/128
"
        );
        let out = list(
            &[laptop()],
            "clients",
            List::Clients,
            &view(Some("claimed"), Some("name,last_probe_ms_ago"), true),
        );
        let parsed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(parsed, json!([{"name": "laptop", "last_probe_ms_ago": 15}]));
    }

    #[test]
    fn tunnels_where_and_fields() {
        let tunnels = datacenters();
        let v = view(
            Some("rtt_ms > 50 && health == \"up\""),
            Some("name,rtt_ms"),
            false,
        );
        let out = list(&tunnels, "tunnels", List::Datacenters, &v);
        assert_eq!(out.stdout, "NAME      RTT\ndc1   61.2 ms\n");
        let v = view(
            Some("rtt_ms > 50 && health == \"up\""),
            Some("name,rtt_ms,active"),
            true,
        );
        let out = list(&tunnels, "tunnels", List::Datacenters, &v);
        let parsed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            parsed,
            json!([{"name": "dc1", "rtt_ms": 61.2, "active": true}])
        );
        let out = list(
            &tunnels,
            "tunnels",
            List::Datacenters,
            &view(None, Some("name,active"), false),
        );
        assert_eq!(out.stdout, "NAME  ACTIVE\ndc1   *\ndc2\n");
        let out = list(
            &tunnels,
            "tunnels",
            List::Datacenters,
            &view(Some("health == \"recovering\""), None, false),
        );
        assert_eq!(out.stdout, "no tunnels match --where\n");
        let none: [Datacenter; 0] = [];
        let out = list(&none, "tunnels", List::Datacenters, &view(None, None, true));
        assert_eq!(out.stdout, "[]\n");
    }

    #[test]
    fn unknown_fields_are_warned_about() {
        let out = list(
            &datacenters(),
            "tunnels",
            List::Datacenters,
            &view(Some("rtt > 5"), Some("name,nmae"), false),
        );
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings[0].contains("'rtt'") && out.warnings[0].contains("rtt_ms"));
        assert!(out.warnings[1].contains("'nmae'"));
    }

    fn flow(protocol: &str, remote: &str, ports: (u16, u16), tunnel: &str) -> Flow {
        Flow {
            protocol: protocol.into(),
            remote: remote.parse().unwrap(),
            remote_port: ports.0,
            local_port: ports.1,
            tunnel: tunnel.into(),
            age_ms: 1000,
            idle_ms: 1000,
            packets_out: 1,
            packets_in: 1,
            state: "-".into(),
        }
    }

    #[test]
    fn flows_table_with_total() {
        let mut tcp = flow("tcp", "198.19.0.100", (5201, 40000), "dc1");
        (tcp.age_ms, tcp.idle_ms, tcp.packets_out, tcp.packets_in) = (3500, 10, 10, 12);
        tcp.state = "established".into();
        let mut udp = flow("udp", "fd00:19::53", (53, 5353), "dc2");
        (udp.age_ms, udp.idle_ms, udp.packets_in) = (200_000, 15_000, 0);
        let icmp = flow("icmp", "198.19.0.1", (0, 7), "dc1");
        let answer = FlowList {
            total: 123,
            flows: vec![tcp, udp, icmp],
        };
        let out = flows(&answer, &view(None, None, false));
        assert_eq!(
            out.stdout,
            "\
PROTO  LOCAL  REMOTE             TUNNEL  STATE          AGE  IDLE  PKTS OUT  PKTS IN
tcp    40000  198.19.0.100:5201  dc1     established   3.5s  10ms        10       12
udp     5353  [fd00:19::53]:53   dc2     -            3m20s   15s         1        0
icmp       7  198.19.0.1         dc1     -               1s    1s         1        1
3 of 123 flows shown; --limit N shows more (up to 10000)
"
        );
        let out = flows(
            &answer,
            &view(
                Some("protocol == \"tcp\" && idle_ms < 1000"),
                Some("remote,remote_port"),
                true,
            ),
        );
        let parsed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            parsed,
            json!([{"remote": "198.19.0.100", "remote_port": 5201}])
        );
    }

    #[test]
    fn events_table() {
        let mut list_of = events();
        list_of.reverse();
        list_of[0].stall_ms = Some(95.0);
        let answer = EventList { events: list_of };
        let out = list(
            &answer.events,
            "events",
            List::Events,
            &view(None, None, false),
        );
        assert_eq!(
            out.stdout,
            "\
TIME                     FROM  TO   REASON         DETECTION    STALL
2025-01-02 03:05:05 UTC  dc1   dc2  probe_timeout    82.0 ms  95.0 ms
2025-01-02 03:04:05 UTC  dc2   dc1  failback               -        -
"
        );
        let none: [SwitchEvent; 0] = [];
        assert_eq!(
            list(&none, "events", List::Events, &view(None, None, false)).stdout,
            "no events\n"
        );
    }

    #[test]
    fn switch_drain_reload_metrics() {
        let a = Steered {
            active: "dc2".into(),
        };
        assert_eq!(switched(&a, "switch", "dc2", false).stdout, "active: dc2\n");
        assert_eq!(
            switched(&a, "drain", "dc1", false).stdout,
            "drained dc1; active: dc2\n"
        );
        assert_eq!(
            switched(&a, "switch", "dc2", true).stdout,
            "{\n  \"active\": \"dc2\"\n}\n"
        );
        let r = Reload {
            added: vec!["dc3".into()],
            removed: vec![],
            changed: vec!["dc1".into()],
            unchanged: vec!["dc2".into()],
        };
        assert_eq!(
            reloaded(&r, false).stdout,
            "added:      dc3\nremoved:    -\nchanged:    dc1\nunchanged:  dc2\n"
        );
        let m = Metrics {
            text: "# TYPE x gauge\nx 1\n".into(),
        };
        assert_eq!(metrics(&m, false).stdout, "# TYPE x gauge\nx 1\n");
        let parsed: Value = serde_json::from_str(&metrics(&m, true).stdout).unwrap();
        assert_eq!(parsed, json!({"text": "# TYPE x gauge\nx 1\n"}));
    }

    #[test]
    fn hostile_names_do_not_reach_the_terminal() {
        let mut tunnels = datacenters();
        tunnels[0].name = "\u{1b}]0;pwned\u{7}".into();
        let out = list(
            &tunnels,
            "tunnels",
            List::Datacenters,
            &view(None, None, false),
        );
        assert!(!out.stdout.contains('\u{1b}'));
        assert!(out.stdout.contains("?]0;pwned?"), "{}", out.stdout);
        let mut s = client_status();
        s.active = "\u{1b}[2J".into();
        let out = status(
            &Status::Client(s),
            &view(Some("a.b.c == 1 || !x"), None, false),
            u64::MAX,
        );
        assert!(!out.stdout.contains('\u{1b}'));
        let m = Metrics {
            text: "x\u{1b}[2J 1\n".into(),
        };
        assert!(!metrics(&m, false).stdout.contains('\u{1b}'));
    }
}
