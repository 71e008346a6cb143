//! `failoverctl`: the command line of failoverd's control socket (`status`, `tunnels`, `flows`,
//! `events`, `clients`, `switch`, `drain`, `undrain`, `reload`, `metrics`), and `import-wg`,
//! which turns wg-quick files into a failoverd client configuration.
//!
//! Requests and answers are [`control_proto`]'s types: an answer that does not read into its
//! type is refused as a daemon of another version, never half rendered.
//!
//! Exit codes: 0 ok, 1 the daemon refused or could not be reached (or import-wg refused a
//! file), 2 a usage error.

mod expr;
mod import_wg;
mod render;
mod socket;
mod table;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use control_proto::Command;
use serde::de::DeserializeOwned;

use crate::render::{List, View};

const USAGE: &str = "\
usage:
  failoverctl [--socket PATH] [--json] [--where EXPR] [--fields a,b,..] COMMAND [ARGS]
    status                 the active datacenter, stable address, every tunnel, the last switch
                           (gateway: its clients)
    tunnels                every tunnel: health, RTT, loss, last handshake, bytes, probes
    flows [--limit N]      the session keeper's flows (default 1000, at most 10000)
    events                 the switches, newest last: reason, detection, stall
    clients                a gateway's clients
    switch DC              make DC the active datacenter; it stays while it is alive
    drain DC | undrain DC  take DC out of service (traffic leaves it for another live one),
                           or back in
    reload                 re-read the configuration; prints what changed
    metrics                the Prometheus metrics, as the metrics endpoint serves them
  failoverctl import-wg [--stable-address ADDR] [--key-file PATH] [--probe-address [DC=]ADDR]
                        FILE.conf...
                           wg-quick files, one per datacenter (highest priority first), into a
                           failoverd client configuration on stdout; the private key goes to
                           --key-file (default ./failoverd.key, 0600, never overwritten)

options:
  --socket PATH    the control socket (default $FAILOVERCTL_SOCKET, else
                   /run/failoverd/failover0.sock)
  --json           print the answer as JSON (the list for tunnels/flows/events/clients)
  --where EXPR     keep only the list items EXPR holds for:
                     EXPR := EXPR || EXPR | EXPR && EXPR | !EXPR | (EXPR)
                           | FIELD OP LITERAL | FIELD
                     OP: == != < <= > >=   LITERAL: 12.5, \"text\", true, false, null
                     FIELD: a dotted path, e.g. drops.replay; alone: true unless null, false,
                     0 or \"\"
  --fields a,b     show only these fields of each item (tables and JSON)
  -h, --help       this text

example:
  failoverctl tunnels --where 'rtt_ms > 50 && health == \"up\"' --fields name,rtt_ms

exit codes: 0 ok, 1 the daemon refused or failed, 2 usage error
";

const DEFAULT_SOCKET: &str = "/run/failoverd/failover0.sock";
const TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_FLOW_LIMIT: u64 = 1000;

/// The command line, parsed but not yet checked against the command.
#[derive(Debug, Default)]
struct Args {
    socket: Option<String>,
    json: bool,
    filter: Option<String>,
    fields: Option<String>,
    limit: Option<String>,
    stable_address: Vec<String>,
    key_file: Option<String>,
    probe_address: Vec<String>,
    help: bool,
    positional: Vec<String>,
}

fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    let mut options_done = false;
    while let Some(arg) = it.next() {
        if options_done || arg == "-" || !arg.starts_with('-') {
            out.positional.push(arg);
            continue;
        }
        if arg == "--" {
            options_done = true;
            continue;
        }
        if arg == "-h" || arg == "--help" {
            out.help = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        if name == "--json" {
            if inline.is_some() {
                return Err("--json takes no value".into());
            }
            out.json = true;
            continue;
        }
        let slot: Option<&mut Option<String>> = match name.as_str() {
            "--socket" => Some(&mut out.socket),
            "--where" => Some(&mut out.filter),
            "--fields" => Some(&mut out.fields),
            "--limit" => Some(&mut out.limit),
            "--key-file" => Some(&mut out.key_file),
            "--stable-address" | "--probe-address" => None,
            _ => return Err(format!("unknown option '{}'", table::sanitize(&name))),
        };
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        match slot {
            Some(slot) if slot.is_some() => return Err(format!("{name} is given twice")),
            Some(slot) => *slot = Some(value),
            None if name == "--stable-address" => out.stable_address.push(value),
            None => out.probe_address.push(value),
        }
    }
    Ok(out)
}

/// The process's exit: what to print where, and the code.
#[derive(Debug)]
enum Outcome {
    Ok {
        stdout: String,
        warnings: Vec<String>,
    },
    Failed(String),
    Usage(String),
}

fn main() -> ExitCode {
    let outcome = run(std::env::args().skip(1).collect());
    let mut stderr = std::io::stderr().lock();
    match outcome {
        Outcome::Ok { stdout, warnings } => {
            for w in warnings {
                let _ = writeln!(stderr, "failoverctl: warning: {}", table::sanitize(&w));
            }
            let mut out = std::io::stdout().lock();
            match out.write_all(stdout.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                // `failoverctl flows | head`: the reader has what it wanted
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = writeln!(stderr, "failoverctl: writing the output: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Outcome::Failed(message) => {
            let _ = writeln!(stderr, "failoverctl: {message}");
            ExitCode::FAILURE
        }
        Outcome::Usage(message) => {
            let _ = writeln!(
                stderr,
                "failoverctl: {message}\n(failoverctl --help shows the usage)"
            );
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::disallowed_methods)] // wall time for "3m ago" only
fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// `--where` parse errors with the expression and a caret under the column.
fn where_error(text: &str, e: &expr::ParseError) -> String {
    let mut message = format!("--where: {e}");
    if text.chars().count() <= 200 && !text.contains('\n') {
        let shown = table::sanitize(text);
        let pad = " ".repeat(e.column.saturating_sub(1));
        message.push_str(&format!("\n  {shown}\n  {pad}^"));
    }
    message
}

fn run(raw: Vec<String>) -> Outcome {
    let args = match parse_args(raw) {
        Ok(a) => a,
        Err(e) => return Outcome::Usage(e),
    };
    let Some((command, rest)) = args.positional.split_first() else {
        if args.help {
            return Outcome::Ok {
                stdout: USAGE.into(),
                warnings: Vec::new(),
            };
        }
        return Outcome::Usage(format!("no command given\n\n{USAGE}"));
    };
    if args.help || command == "help" {
        return Outcome::Ok {
            stdout: USAGE.into(),
            warnings: Vec::new(),
        };
    }
    if command == "import-wg" {
        return import(&args, rest);
    }
    let import_options = [
        ("--stable-address", !args.stable_address.is_empty()),
        ("--probe-address", !args.probe_address.is_empty()),
        ("--key-file", args.key_file.is_some()),
    ];
    if let Some((name, _)) = import_options.iter().find(|(_, given)| *given) {
        return Outcome::Usage(format!("{name} belongs to import-wg"));
    }
    let (request, datacenter) = match (command.as_str(), rest) {
        ("status", []) => (Command::Status, None),
        ("tunnels", []) => (Command::Tunnels, None),
        ("events", []) => (Command::Events, None),
        ("clients", []) => (Command::Clients, None),
        ("reload", []) => (Command::Reload, None),
        ("metrics", []) => (Command::Metrics, None),
        ("flows", []) => {
            let limit = match args.limit.as_deref().map(str::parse::<u64>) {
                None => DEFAULT_FLOW_LIMIT,
                Some(Ok(n)) if (1..=render::MAX_FLOWS).contains(&n) => n,
                Some(_) => {
                    return Outcome::Usage(format!(
                        "--limit takes a number of flows from 1 to {}",
                        render::MAX_FLOWS
                    ))
                }
            };
            (
                Command::Flows {
                    limit: usize::try_from(limit).unwrap_or(control_proto::MAX_FLOWS_LISTED),
                },
                None,
            )
        }
        ("switch", [dc]) => (Command::Switch(dc.clone()), Some(dc.clone())),
        ("drain", [dc]) => (Command::Drain(dc.clone()), Some(dc.clone())),
        ("undrain", [dc]) => (Command::Undrain(dc.clone()), Some(dc.clone())),
        ("switch" | "drain" | "undrain", _) => {
            return Outcome::Usage(format!("{command} takes one datacenter name, e.g. {command} dc2"))
        }
        (
            "status" | "tunnels" | "events" | "clients" | "reload" | "flows" | "metrics",
            [extra, ..],
        ) => {
            return Outcome::Usage(format!(
                "{command} takes no argument (got '{}')",
                table::sanitize(extra)
            ))
        }
        (other, _) => {
            return Outcome::Usage(format!(
                "unknown command '{}'; commands: status, tunnels, flows, events, clients, switch, drain, undrain, reload, metrics, import-wg",
                table::sanitize(other)
            ))
        }
    };
    if args.limit.is_some() && command != "flows" {
        return Outcome::Usage("--limit belongs to flows".into());
    }
    let lists = matches!(
        command.as_str(),
        "status" | "tunnels" | "flows" | "events" | "clients"
    );
    if !lists && (args.filter.is_some() || args.fields.is_some()) {
        return Outcome::Usage(
            "--where and --fields apply to status, tunnels, flows, events and clients".into(),
        );
    }
    let filter = match args.filter.as_deref().map(|t| (t, expr::Expr::parse(t))) {
        None => None,
        Some((_, Ok(e))) => Some(e),
        Some((text, Err(e))) => return Outcome::Usage(where_error(text, &e)),
    };
    let fields = match args.fields.as_deref().map(expr::parse_fields) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => return Outcome::Usage(format!("--fields: {e}")),
    };
    let view = View {
        json: args.json,
        filter,
        fields,
    };
    let socket = args
        .socket
        .clone()
        .or_else(|| {
            std::env::var("FAILOVERCTL_SOCKET")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SOCKET.into());
    let request = control_proto::Request::of(&request);
    let answer = match socket::ask(&PathBuf::from(&socket), &request, TIMEOUT) {
        Ok(a) => a,
        Err(socket::Failure::Unreachable(message)) => return Outcome::Failed(message),
        Err(socket::Failure::Refused(error)) => {
            let mut message = format!(
                "the daemon refused {command}: {}",
                table::sanitize_lines(&error)
            );
            if error.starts_with("unknown command") && command != "status" {
                message.push_str(
                    "\n  (an older failoverd? `failoverctl status` works with every version)",
                );
            }
            return Outcome::Failed(message);
        }
    };
    let rendered = match render_answer(command, answer, &view, datacenter.as_deref()) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("{socket}: {e}")),
    };
    Outcome::Ok {
        stdout: rendered.stdout,
        warnings: rendered.warnings,
    }
}

/// Reads `answer` into `T`; a mismatch names the version problem.
fn typed<T: DeserializeOwned>(answer: serde_json::Value) -> Result<T, String> {
    control_proto::decode(answer).map_err(|e| table::sanitize_lines(&e.to_string()))
}

/// Reads the answer to `command` into its type and renders it.
fn render_answer(
    command: &str,
    answer: serde_json::Value,
    view: &View,
    datacenter: Option<&str>,
) -> Result<render::Rendered, String> {
    Ok(match command {
        "status" => render::status(
            &typed::<control_proto::Status>(answer)?,
            view,
            now_unix_ms(),
        ),
        "tunnels" => render::list(
            &typed::<control_proto::TunnelList>(answer)?.tunnels,
            "tunnels",
            List::Datacenters,
            view,
        ),
        "flows" => render::flows(&typed(answer)?, view),
        "events" => render::list(
            &typed::<control_proto::EventList>(answer)?.events,
            "events",
            List::Events,
            view,
        ),
        "clients" => render::list(
            &typed::<control_proto::ClientList>(answer)?.clients,
            "clients",
            List::Clients,
            view,
        ),
        "reload" => render::reloaded(&typed(answer)?, view.json),
        "metrics" => render::metrics(&typed(answer)?, view.json),
        verb => render::switched(&typed(answer)?, verb, datacenter.unwrap_or(""), view.json),
    })
}

fn import(args: &Args, files: &[String]) -> Outcome {
    let ctl_options = [
        ("--socket", args.socket.is_some()),
        ("--json", args.json),
        ("--where", args.filter.is_some()),
        ("--fields", args.fields.is_some()),
        ("--limit", args.limit.is_some()),
    ];
    if let Some((name, _)) = ctl_options.iter().find(|(_, given)| *given) {
        return Outcome::Usage(format!("{name} does not apply to import-wg"));
    }
    if files.is_empty() {
        return Outcome::Usage(
            "import-wg needs wg-quick files, one per datacenter: import-wg dc1.conf dc2.conf > client.toml"
                .into(),
        );
    }
    let settings = import_wg::Settings {
        stable_address: args.stable_address.clone(),
        probe_address: args.probe_address.clone(),
        key_file: args.key_file.as_ref().map(PathBuf::from),
        files: files.iter().map(PathBuf::from).collect(),
    };
    match import_wg::run(&settings) {
        Ok(done) => Outcome::Ok {
            stdout: done.toml,
            warnings: done.warnings,
        },
        Err(import_wg::Refusal::Usage(m)) => Outcome::Usage(format!("import-wg: {m}")),
        Err(import_wg::Refusal::Failed(m)) => Outcome::Failed(format!("import-wg: {m}")),
        Err(import_wg::Refusal::File(e)) => Outcome::Failed(format!("import-wg: {e}")),
    }
}
