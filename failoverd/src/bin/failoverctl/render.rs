//! What each answer looks like: tables and headers for people, JSON for programs, both
//! filtered by `--where` and projected by `--fields`.

use serde_json::{Map, Value};

use crate::expr::{Expr, Path};
use crate::table::{self, Align, Table};

/// The most flows the daemon lists in one answer.
pub const MAX_FLOWS: u64 = 10_000;

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

/// Which list an answer carries, and how its items are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// `status` of a client: `datacenters`
    StatusTunnels,
    /// `status` of a gateway: `clients`
    StatusClients,
    Tunnels,
    Flows,
    Events,
    Clients,
}

impl List {
    /// The answer's key holding the list.
    pub fn key(self) -> &'static str {
        match self {
            List::StatusTunnels => "datacenters",
            List::StatusClients | List::Clients => "clients",
            List::Tunnels => "tunnels",
            List::Flows => "flows",
            List::Events => "events",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            List::StatusTunnels | List::Tunnels => "tunnels",
            List::StatusClients | List::Clients => "clients",
            List::Flows => "flows",
            List::Events => "events",
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            List::StatusTunnels => STATUS_TUNNELS,
            List::Tunnels => TUNNELS,
            List::StatusClients | List::Clients => CLIENTS,
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

fn active_marker(item: &Value) -> String {
    if flag(item, "active") { "*" } else { "" }.into()
}

fn state_with_flags(item: &Value, key: &str) -> String {
    let mut state = str_of(item, key);
    if flag(item, "drained") {
        state.push_str(" (drained)");
    }
    if flag(item, "suppressed") {
        state.push_str(" (suppressed)");
    }
    state
}

const STATUS_TUNNELS: &[Column] = &[
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
        header: "STATE",
        align: Align::Left,
        cell: |i| state_with_flags(i, "health"),
    },
    Column {
        key: "endpoint",
        header: "ENDPOINT",
        align: Align::Left,
        cell: |i| str_of(i, "endpoint"),
    },
    Column {
        key: "srtt_ms",
        header: "RTT",
        align: Align::Right,
        cell: |i| f64_of(i, "srtt_ms").map_or("-".into(), table::millis),
    },
    Column {
        key: "loss",
        header: "LOSS",
        align: Align::Right,
        cell: |i| f64_of(i, "loss").map_or("-".into(), table::percent),
    },
    Column {
        key: "since_last_handshake_ms",
        header: "HANDSHAKE",
        align: Align::Right,
        cell: |i| ago(f64_of(i, "since_last_handshake_ms").map(|ms| ms / 1000.0)),
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
];

const TUNNELS: &[Column] = &[
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
        key: "state",
        header: "STATE",
        align: Align::Left,
        cell: |i| state_with_flags(i, "state"),
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
        key: "last_handshake_s",
        header: "HANDSHAKE",
        align: Align::Right,
        cell: |i| ago(f64_of(i, "last_handshake_s")),
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
    match item.get("remote_port").and_then(Value::as_u64) {
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
        key: "age_s",
        header: "AGE",
        align: Align::Right,
        cell: |i| f64_of(i, "age_s").map_or("-".into(), table::duration),
    },
    Column {
        key: "idle_s",
        header: "IDLE",
        align: Align::Right,
        cell: |i| f64_of(i, "idle_s").map_or("-".into(), table::duration),
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
        key: "last_probe_ms_ago",
        header: "LAST PROBE",
        align: Align::Right,
        cell: |i| ago(f64_of(i, "last_probe_ms_ago").map(|ms| ms / 1000.0)),
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

/// The items of `list` in `answer` that pass `--where`.
fn selected<'a>(
    answer: &'a Value,
    list: List,
    view: &View,
    warnings: &mut Vec<String>,
) -> Vec<&'a Value> {
    let items: &[Value] = answer
        .get(list.key())
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
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
                    "no item in \"{}\" has a field '{path}'; its fields: {}",
                    list.key(),
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

/// The answer without its protocol envelope (`v`, `ok`).
fn body(answer: &Value) -> Map<String, Value> {
    let mut map = answer.as_object().cloned().unwrap_or_default();
    map.remove("v");
    map.remove("ok");
    map
}

/// Renders a list answer (`tunnels`, `flows`, `events`, `clients`).
pub fn list(answer: &Value, list: List, view: &View) -> Rendered {
    let mut out = Rendered::default();
    let items = selected(answer, list, view, &mut out.warnings);
    if view.json {
        let projected: Vec<Value> = items
            .iter()
            .map(|i| project(i, view.fields.as_deref()))
            .collect();
        out.stdout = pretty(&Value::Array(projected));
        return out;
    }
    out.stdout = list_table(&items, list, view);
    if list == List::Flows {
        let sent = answer
            .get("flows")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if let Some(total) = answer.get("total").and_then(Value::as_u64) {
            if total > sent as u64 {
                out.stdout
                    .push_str(&format!("{sent} of {total} flows shown"));
                if (sent as u64) < MAX_FLOWS {
                    out.stdout
                        .push_str(&format!("; --limit N shows more (up to {MAX_FLOWS})"));
                }
                out.stdout.push('\n');
            }
        }
    }
    out
}

fn last_switch(answer: &Value, now_ms: u64) -> String {
    let Some(s) = answer
        .get("switches")
        .and_then(Value::as_array)
        .and_then(|l| l.last())
    else {
        return "none".into();
    };
    let mut text = format!(
        "{} -> {} ({})",
        str_of(s, "from"),
        str_of(s, "to"),
        str_of(s, "reason")
    );
    if let Some(at) = s.get("unix_ms").and_then(Value::as_u64) {
        text.push_str(&format!(", {}", table::utc(at)));
        if now_ms >= at {
            text.push_str(&format!(
                " ({} ago)",
                table::duration((now_ms - at) as f64 / 1000.0)
            ));
        }
    }
    if let Some(d) = f64_of(s, "detection_ms") {
        text.push_str(&format!("; detection {}", table::millis(d)));
    }
    if let Some(d) = f64_of(s, "stall_ms") {
        text.push_str(&format!(", stall {}", table::millis(d)));
    }
    text
}

/// Renders `status`: a header (mode, active datacenter, stable address, last switch) and the
/// tunnel table, or for a gateway its clients.
pub fn status(answer: &Value, view: &View, now_ms: u64) -> Rendered {
    let mode = answer
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("client");
    let list = if mode == "gateway" {
        List::StatusClients
    } else {
        List::StatusTunnels
    };
    let mut out = Rendered::default();
    let items = selected(answer, list, view, &mut out.warnings);
    if view.json {
        let mut map = body(answer);
        let projected: Vec<Value> = items
            .iter()
            .map(|i| project(i, view.fields.as_deref()))
            .collect();
        map.insert(list.key().into(), Value::Array(projected));
        out.stdout = pretty(&Value::Object(map));
        return out;
    }
    let mut header: Vec<(&str, String)> = vec![("mode", mode.to_owned())];
    if list == List::StatusClients {
        let clients = answer
            .get("clients")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let claimed = clients.iter().filter(|c| flag(c, "claimed")).count();
        header.push(("public key", str_of(answer, "public_key")));
        header.push(("clients", format!("{} ({claimed} claimed)", clients.len())));
        header.push(("probes answered", str_of(answer, "probes_answered")));
    } else {
        header.push(("active", str_of(answer, "active")));
        header.push(("stable address", str_of(answer, "stable_address")));
        header.push(("last switch", last_switch(answer, now_ms)));
        if let Some(keeper) = answer.get("sessionkeeper") {
            let mut flows = str_of(keeper, "flows");
            if let Some(cap) = keeper.get("flow_table_size").and_then(Value::as_u64) {
                flows.push_str(&format!(" (table {cap})"));
            }
            header.push(("flows", flows));
        }
        if let Some(guest) = answer.get("guest") {
            header.push((
                "guest",
                format!(
                    "mac {}, addresses {}",
                    str_of(guest, "mac"),
                    str_of(guest, "addresses")
                ),
            ));
        }
    }
    out.stdout = table::key_values(&header);
    out.stdout.push('\n');
    out.stdout.push_str(&list_table(&items, list, view));
    out
}

/// Renders `switch`, `drain`, `undrain`: what is active now.
pub fn switched(answer: &Value, verb: &str, datacenter: &str, json: bool) -> Rendered {
    if json {
        return Rendered {
            stdout: pretty(&Value::Object(body(answer))),
            warnings: Vec::new(),
        };
    }
    let active = table::sanitize(&str_of(answer, "active"));
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
pub fn reloaded(answer: &Value, json: bool) -> Rendered {
    if json {
        return Rendered {
            stdout: pretty(&Value::Object(body(answer))),
            warnings: Vec::new(),
        };
    }
    let pairs: Vec<(&str, String)> = ["added", "removed", "changed", "unchanged"]
        .iter()
        .map(|k| (*k, table::plain(answer.get(*k))))
        .collect();
    Rendered {
        stdout: table::key_values(&pairs),
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client_status() -> Value {
        json!({
            "v": 1, "ok": true, "mode": "client", "active": "dc1",
            "stable_address": ["100.96.0.2", "fd00:96::2"],
            "datacenters": [
                {"name": "dc1", "endpoint": "198.18.0.11:51820", "active": true, "established": true,
                 "health": "up", "srtt_ms": 1.234, "loss": 0.0, "tx_bytes": 1_572_864u64, "rx_bytes": 3_145_728u64,
                 "handshakes": 2, "since_last_handshake_ms": 12_000, "drained": false,
                 "drops": {"replay": 2}},
                {"name": "dc2", "endpoint": "198.18.0.12:51820", "active": false, "established": false,
                 "health": "down", "srtt_ms": null, "loss": 0.25, "tx_bytes": 0, "rx_bytes": 512,
                 "handshakes": 0, "since_last_handshake_ms": null, "drained": true, "drops": {}}
            ],
            "switches": [
                {"unix_ms": 1_735_787_045_678u64, "from": "dc2", "to": "dc1", "reason": "failback",
                 "detection_ms": null},
                {"unix_ms": 1_735_787_105_678u64, "from": "dc1", "to": "dc2", "reason": "probe_timeout",
                 "detection_ms": 82.0, "stall_ms": 95.5}
            ],
            "sessionkeeper": {"flows": 12, "flow_table_size": 65536}
        })
    }

    fn view(filter: Option<&str>, fields: Option<&str>, json: bool) -> View {
        View {
            json,
            filter: filter.map(|f| Expr::parse(f).unwrap()),
            fields: fields.map(|f| crate::expr::parse_fields(f).unwrap()),
        }
    }

    #[test]
    fn client_status_header_and_tunnel_table() {
        let now = 1_735_787_105_678u64 + 192_000;
        let out = status(&client_status(), &view(None, None, false), now);
        assert!(out.warnings.is_empty());
        let expected = "\
mode:            client
active:          dc1
stable address:  100.96.0.2, fd00:96::2
last switch:     dc1 -> dc2 (probe_timeout), 2025-01-02 03:05:05 UTC (3m12s ago); detection 82.0 ms, stall 95.5 ms
flows:           12 (table 65536)

   NAME  STATE           ENDPOINT              RTT   LOSS  HANDSHAKE       RX       TX
*  dc1   up              198.18.0.11:51820  1.2 ms   0.0%    12s ago  3.0 MiB  1.5 MiB
   dc2   down (drained)  198.18.0.12:51820       -  25.0%      never    512 B      0 B
";
        assert_eq!(out.stdout, expected, "\n{}", out.stdout);
    }

    #[test]
    fn status_without_switches_or_new_fields() {
        let mut s = client_status();
        s.as_object_mut().unwrap().remove("stable_address");
        s["switches"] = json!([]);
        let out = status(&s, &view(None, None, false), 0);
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
    fn status_filters_and_projects_its_tunnels() {
        let v = view(Some("drained"), Some("name,drops.replay,health"), false);
        let out = status(&client_status(), &v, 0);
        assert!(
            out.stdout
                .ends_with("NAME  DROPS.REPLAY  STATE\ndc2   -             down (drained)\n"),
            "{}",
            out.stdout
        );
        let out = status(
            &client_status(),
            &view(Some("srtt_ms > 1"), Some("name"), true),
            0,
        );
        let parsed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(parsed["datacenters"], json!([{"name": "dc1"}]));
        assert_eq!(parsed["active"], "dc1");
        assert!(parsed.get("ok").is_none() && parsed.get("v").is_none());
    }

    #[test]
    fn gateway_status() {
        let s = json!({"v": 1, "ok": true, "mode": "gateway", "public_key": "PUB=", "probes_answered": 7,
            "clients": [{"name": "laptop", "endpoint": "203.0.113.5:40000", "established": true, "claimed": true,
                "last_probe_ms_ago": 15, "tx_bytes": 1, "rx_bytes": 2048, "handshakes": 1,
                "allowed_ips": ["100.96.0.2/32", "fd00:96::2/128"]}]});
        let out = status(&s, &view(None, None, false), 0);
        assert_eq!(
            out.stdout,
            "\
mode:             gateway
public key:       PUB=
clients:          1 (1 claimed)
probes answered:  7

NAME    ENDPOINT           SESSION  CLAIMED  LAST PROBE  HANDSHAKES       RX   TX  ALLOWED IPS
laptop  203.0.113.5:40000  up       yes        15ms ago           1  2.0 KiB  1 B  100.96.0.2/32, fd00:96::2/128
"
        );
    }

    fn tunnels() -> Value {
        json!({"v": 1, "ok": true, "tunnels": [
            {"name": "dc1", "endpoint": "198.18.0.11:51820", "active": true, "drained": false, "state": "up",
             "established": true, "rtt_ms": 61.2, "loss": 0.0, "last_handshake_s": 12, "tx_bytes": 1,
             "rx_bytes": 2, "handshakes": 1, "probes_sent": 10, "probe_replies": 10},
            {"name": "dc2", "endpoint": "198.18.0.12:51820", "active": false, "drained": false, "state": "suspect",
             "established": true, "rtt_ms": null, "loss": null, "last_handshake_s": null, "tx_bytes": 0,
             "rx_bytes": 0, "handshakes": 0, "probes_sent": 10, "probe_replies": 3}
        ]})
    }

    #[test]
    fn tunnels_table_where_and_fields() {
        let out = list(&tunnels(), List::Tunnels, &view(None, None, false));
        assert_eq!(
            out.stdout,
            "   NAME  STATE    ENDPOINT               RTT  LOSS  HANDSHAKE   RX   TX  PROBES
*  dc1   up       198.18.0.11:51820  61.2 ms  0.0%    12s ago  2 B  1 B   10/10
   dc2   suspect  198.18.0.12:51820        -     -      never  0 B  0 B    3/10
"
        );
        let v = view(
            Some("rtt_ms > 50 && state == \"up\""),
            Some("name,rtt_ms"),
            false,
        );
        let out = list(&tunnels(), List::Tunnels, &v);
        assert_eq!(out.stdout, "NAME      RTT\ndc1   61.2 ms\n");
        let v = view(
            Some("rtt_ms > 50 && state == \"up\""),
            Some("name,rtt_ms,active"),
            true,
        );
        let out = list(&tunnels(), List::Tunnels, &v);
        let parsed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            parsed,
            json!([{"name": "dc1", "rtt_ms": 61.2, "active": true}])
        );
        let out = list(
            &tunnels(),
            List::Tunnels,
            &view(None, Some("name,active"), false),
        );
        assert_eq!(out.stdout, "NAME  ACTIVE\ndc1   *\ndc2\n");
        let out = list(
            &tunnels(),
            List::Tunnels,
            &view(Some("state == \"down\""), None, false),
        );
        assert_eq!(out.stdout, "no tunnels match --where\n");
        let out = list(
            &json!({"v": 1, "ok": true, "tunnels": []}),
            List::Tunnels,
            &view(None, None, true),
        );
        assert_eq!(out.stdout, "[]\n");
    }

    #[test]
    fn unknown_fields_are_warned_about() {
        let out = list(
            &tunnels(),
            List::Tunnels,
            &view(Some("rtt > 5"), Some("name,nmae"), false),
        );
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings[0].contains("'rtt'") && out.warnings[0].contains("rtt_ms"));
        assert!(out.warnings[1].contains("'nmae'"));
    }

    #[test]
    fn flows_table_with_total() {
        let answer = json!({"v": 1, "ok": true, "total": 123, "flows": [
            {"protocol": "tcp", "remote": "198.19.0.100", "remote_port": 5201, "local_port": 40000,
             "tunnel": "dc1", "age_s": 3.5, "idle_s": 0.01, "packets_out": 10, "packets_in": 12,
             "state": "established"},
            {"protocol": "udp", "remote": "fd00:19::53", "remote_port": 53, "local_port": 5353,
             "tunnel": "dc2", "age_s": 200.0, "idle_s": 15.0, "packets_out": 1, "packets_in": 0,
             "state": "-"},
            {"protocol": "icmp", "remote": "198.19.0.1", "remote_port": null, "local_port": null,
             "tunnel": "dc1", "age_s": 1.0, "idle_s": 1.0, "packets_out": 1, "packets_in": 1,
             "state": "-"}
        ]});
        let out = list(&answer, List::Flows, &view(None, None, false));
        assert_eq!(
            out.stdout,
            "\
PROTO  LOCAL  REMOTE             TUNNEL  STATE          AGE  IDLE  PKTS OUT  PKTS IN
tcp    40000  198.19.0.100:5201  dc1     established   3.5s  10ms        10       12
udp     5353  [fd00:19::53]:53   dc2     -            3m20s   15s         1        0
icmp       -  198.19.0.1         dc1     -               1s    1s         1        1
3 of 123 flows shown; --limit N shows more (up to 10000)
"
        );
        let out = list(
            &answer,
            List::Flows,
            &view(
                Some("protocol == \"tcp\" && idle_s < 1"),
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
        let answer = json!({"v": 1, "ok": true, "events": [
            {"unix_ms": 1_735_787_045_678u64, "from": "dc1", "to": "dc2", "reason": "probe_timeout",
             "detection_ms": 82.0, "stall_ms": 95.0},
            {"unix_ms": 1_735_787_105_678u64, "from": "dc2", "to": "dc1", "reason": "failback",
             "detection_ms": null, "stall_ms": null}
        ]});
        let out = list(&answer, List::Events, &view(None, None, false));
        assert_eq!(
            out.stdout,
            "\
TIME                     FROM  TO   REASON         DETECTION    STALL
2025-01-02 03:04:05 UTC  dc1   dc2  probe_timeout    82.0 ms  95.0 ms
2025-01-02 03:05:05 UTC  dc2   dc1  failback               -        -
"
        );
        assert_eq!(
            list(
                &json!({"ok": true, "events": []}),
                List::Events,
                &view(None, None, false)
            )
            .stdout,
            "no events\n"
        );
    }

    #[test]
    fn switch_drain_reload() {
        let a = json!({"v": 1, "ok": true, "active": "dc2"});
        assert_eq!(switched(&a, "switch", "dc2", false).stdout, "active: dc2\n");
        assert_eq!(
            switched(&a, "drain", "dc1", false).stdout,
            "drained dc1; active: dc2\n"
        );
        assert_eq!(
            switched(&a, "switch", "dc2", true).stdout,
            "{\n  \"active\": \"dc2\"\n}\n"
        );
        let r = json!({"v": 1, "ok": true, "added": ["dc3"], "removed": [], "changed": ["dc1"], "unchanged": ["dc2"]});
        assert_eq!(
            reloaded(&r, false).stdout,
            "added:      dc3\nremoved:    -\nchanged:    dc1\nunchanged:  dc2\n"
        );
    }

    #[test]
    fn hostile_answers_do_not_panic_or_reach_the_terminal() {
        let weird = json!({"ok": true, "mode": 5, "active": {"x": 1}, "datacenters": "no",
            "switches": [1, "x", null], "tunnels": [1, null, "s", {"name": "\u{1b}]0;pwned\u{7}", "rtt_ms": "x", "active": "yes"}],
            "flows": {"a": 1}, "total": -1, "events": [[]], "clients": [{"allowed_ips": {"a": [1]}}]});
        for l in [List::Tunnels, List::Flows, List::Events, List::Clients] {
            for json in [false, true] {
                let out = list(&weird, l, &view(Some("a.b.c == 1 || !x"), None, json));
                assert!(!out.stdout.contains('\u{1b}'));
                let _ = list(&weird, l, &view(None, Some("name,rtt_ms,drops.0"), json));
            }
        }
        let _ = status(&weird, &view(None, None, false), u64::MAX);
        let _ = status(&json!(null), &view(None, None, false), 0);
        let _ = status(&json!([]), &view(None, None, true), 0);
        let out = list(&weird, List::Tunnels, &view(None, None, false));
        assert!(out.stdout.contains("?]0;pwned?"), "{}", out.stdout);
    }
}
