//! Requests: the wire form ([`Request`]) and the checked command a daemon's loop answers
//! ([`Command`]).

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;

/// Most flows one `flows` answer lists.
pub const MAX_FLOWS_LISTED: usize = 10_000;
/// Flows listed when the request names no limit.
pub const DEFAULT_FLOWS_LISTED: usize = 100;
/// The longest datacenter name a request may carry, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Every command, as `cmd` spells it.
pub const COMMANDS: &[&str] = &[
    "status", "tunnels", "flows", "events", "clients", "metrics", "switch", "drain", "undrain",
    "reload",
];

/// A request line as sent: `{"v":1,"cmd":"status"}`. Unknown fields are refused, so a typo
/// is an error rather than an ignored option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// protocol version; must be [`PROTOCOL_VERSION`]
    pub v: u32,
    /// the command's name (see [`COMMANDS`])
    pub cmd: String,
    /// `switch`, `drain`, `undrain`: the datacenter's name
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// `flows`: at most this many flows (default [`DEFAULT_FLOWS_LISTED`], capped at
    /// [`MAX_FLOWS_LISTED`])
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A request the daemon's loop answers: a [`Request`] that passed [`Request::command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// everything at a glance: answered by [`crate::Status`]
    Status,
    /// the datacenters' tunnels: [`crate::TunnelList`]
    Tunnels,
    /// tracked flows, most recent first: [`crate::FlowList`]
    Flows {
        /// at most this many (up to [`MAX_FLOWS_LISTED`])
        limit: usize,
    },
    /// the switch log: [`crate::EventList`]
    Events,
    /// a gateway's clients: [`crate::ClientList`]
    Clients,
    /// move traffic to a datacenter and keep it there while it is alive: [`crate::Steered`]
    Switch(String),
    /// take a datacenter out of service: [`crate::Steered`]
    Drain(String),
    /// put it back: [`crate::Steered`]
    Undrain(String),
    /// re-read the configuration file: [`crate::Reload`]
    Reload,
    /// Prometheus text: [`crate::Metrics`]
    Metrics,
}

/// Why a request was refused before it reached the daemon's loop. The message is the answer's
/// `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `v` is not [`PROTOCOL_VERSION`]
    #[error("unsupported protocol version {0}; this daemon speaks v=1")]
    Version(u32),
    /// a command that names a datacenter came without one (or an empty or over-long one)
    #[error("{0} needs \"datacenter\": the name of a datacenter")]
    NoDatacenter(&'static str),
    /// `cmd` names no command
    #[error("unknown command; known: status, tunnels, flows, events, clients, metrics, switch, drain, undrain, reload")]
    Unknown,
}

impl Request {
    /// The request line for `command` (what `failoverctl` sends).
    pub fn of(command: &Command) -> Self {
        let (datacenter, limit) = match command {
            Command::Switch(dc) | Command::Drain(dc) | Command::Undrain(dc) => {
                (Some(dc.clone()), None)
            }
            Command::Flows { limit } => (None, Some(*limit)),
            _ => (None, None),
        };
        Self {
            v: PROTOCOL_VERSION,
            cmd: command.name().to_owned(),
            datacenter,
            limit,
        }
    }

    /// The checked command: the version is ours, the command is known, a datacenter is named
    /// where one is needed (1 to [`MAX_NAME_LEN`] bytes), a flow limit is bounded.
    pub fn command(&self) -> Result<Command, RequestError> {
        if self.v != PROTOCOL_VERSION {
            return Err(RequestError::Version(self.v));
        }
        let dc = |cmd: &'static str| {
            self.datacenter
                .clone()
                .filter(|d| !d.is_empty() && d.len() <= MAX_NAME_LEN)
                .ok_or(RequestError::NoDatacenter(cmd))
        };
        Ok(match self.cmd.as_str() {
            "status" => Command::Status,
            "tunnels" => Command::Tunnels,
            "flows" => Command::Flows {
                limit: self
                    .limit
                    .unwrap_or(DEFAULT_FLOWS_LISTED)
                    .min(MAX_FLOWS_LISTED),
            },
            "events" => Command::Events,
            "clients" => Command::Clients,
            "switch" => Command::Switch(dc("switch")?),
            "drain" => Command::Drain(dc("drain")?),
            "undrain" => Command::Undrain(dc("undrain")?),
            "reload" => Command::Reload,
            "metrics" => Command::Metrics,
            _ => return Err(RequestError::Unknown),
        })
    }

    /// The request as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

impl Command {
    /// The command's name on the wire (`cmd`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Tunnels => "tunnels",
            Command::Flows { .. } => "flows",
            Command::Events => "events",
            Command::Clients => "clients",
            Command::Switch(_) => "switch",
            Command::Drain(_) => "drain",
            Command::Undrain(_) => "undrain",
            Command::Reload => "reload",
            Command::Metrics => "metrics",
        }
    }

    /// Whether the command changes what the daemon does (only root and the daemon's user may
    /// send it).
    pub fn steers(&self) -> bool {
        matches!(
            self,
            Command::Switch(_) | Command::Drain(_) | Command::Undrain(_) | Command::Reload
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(line: &str) -> Result<Command, String> {
        serde_json::from_str::<Request>(line)
            .map_err(|e| e.to_string())?
            .command()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn requests_parse_into_commands() {
        assert_eq!(parse(r#"{"v":1,"cmd":"status"}"#), Ok(Command::Status));
        assert_eq!(
            parse(r#"{"v":1,"cmd":"flows","limit":5}"#),
            Ok(Command::Flows { limit: 5 })
        );
        assert_eq!(
            parse(r#"{"v":1,"cmd":"flows","limit":99999999}"#),
            Ok(Command::Flows {
                limit: MAX_FLOWS_LISTED
            })
        );
        assert_eq!(
            parse(r#"{"v":1,"cmd":"flows"}"#),
            Ok(Command::Flows {
                limit: DEFAULT_FLOWS_LISTED
            })
        );
        assert_eq!(
            parse(r#"{"v":1,"cmd":"drain","datacenter":"dc1"}"#),
            Ok(Command::Drain("dc1".into()))
        );
        assert!(parse(r#"{"v":1,"cmd":"switch"}"#).is_err());
        assert!(parse(r#"{"v":1,"cmd":"switch","datacenter":""}"#).is_err());
        assert!(parse(&format!(
            r#"{{"v":1,"cmd":"switch","datacenter":"{}"}}"#,
            "x".repeat(65)
        ))
        .is_err());
        assert!(parse(r#"{"v":1,"cmd":"rm -rf /"}"#)
            .unwrap_err()
            .starts_with("unknown command"));
        assert!(parse(r#"{"v":1,"cmd":"status","extra":1}"#).is_err());
        assert!(parse(r#"{"v":2,"cmd":"status"}"#)
            .unwrap_err()
            .contains("version"));
        assert!(Command::Reload.steers() && !Command::Tunnels.steers());
    }

    #[test]
    fn every_command_survives_the_wire() {
        let all = [
            Command::Status,
            Command::Tunnels,
            Command::Flows { limit: 7 },
            Command::Events,
            Command::Clients,
            Command::Switch("dc2".into()),
            Command::Drain("dc1".into()),
            Command::Undrain("dc1".into()),
            Command::Reload,
            Command::Metrics,
        ];
        assert_eq!(all.len(), COMMANDS.len());
        for c in all {
            let line = Request::of(&c).to_line();
            assert!(line.ends_with('\n'));
            assert_eq!(parse(line.trim_end()), Ok(c.clone()), "{line}");
            assert!(COMMANDS.contains(&c.name()));
        }
        assert_eq!(
            Request::of(&Command::Status).to_line(),
            "{\"v\":1,\"cmd\":\"status\"}\n"
        );
    }
}
