//! A read-only WireGuard configuration socket, so `wg show`, `wg showconf` and the exporters
//! that read WireGuard devices see a client's tunnels.
//!
//! The cross-platform userspace protocol (what wireguard-go and boringtun-cli serve): a unix
//! socket at `/var/run/wireguard/<interface>.sock`; a client writes `get=1` and an empty line
//! and reads `key=value` lines ending in `errno=0` and an empty line. We answer one device with
//! one peer per datacenter. No secret leaves: there is no `private_key` line (an all-zero one,
//! which the protocol also allows, makes Debian's `wg` print the zero key and a public key
//! derived from it, which is not ours), and every `preshared_key` is all zeros (the protocol's
//! "none"), so `wg show` prints `(none)` for both and `wg showconf` gives a configuration
//! without keys. `set=1` is refused with `errno=-1` (-EPERM: the protocol negates errno values,
//! as wireguard-go sends them): failoverd is configured
//! by its own file and reloaded with `failoverctl reload`.
//!
//! The socket is root's (0600 in a 0755 directory), like the reference implementations'.
//! Requests are bounded like the control socket's (its binding and accept loop are shared):
//! 4 KiB, 2 s, 16 connections at once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use std::time::Instant;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::clock;
use crate::config::ClientConfig;

const MAX_REQUEST: u64 = 4096;
/// Where the reference implementations put their sockets (not per network namespace).
const SOCKET_DIR: &str = "/var/run/wireguard";

/// A `get=1` for the loop: it answers with the rendered device.
pub type GetRequest = oneshot::Sender<String>;

/// Removes the socket file when dropped.
#[derive(Debug)]
pub struct UapiSocket {
    path: PathBuf,
}

impl Drop for UapiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The socket's path for `interface`.
pub fn socket_path(interface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{interface}.sock"))
}

/// Binds `/var/run/wireguard/<interface>.sock` and serves it until the receiver is dropped.
pub fn serve(interface: &str, to_loop: mpsc::Sender<GetRequest>) -> anyhow::Result<UapiSocket> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = socket_path(interface);
    let listener = crate::control::bind_fresh(
        &path,
        "another WireGuard implementation serves it; give this client another interface name",
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    crate::control::accept_bounded(listener, move |stream| {
        let to_loop = to_loop.clone();
        async move { answer(stream, &to_loop).await }
    });
    Ok(UapiSocket { path })
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Get,
    Set,
    Unknown,
}

fn operation(first_line: &str) -> Operation {
    match first_line.trim_end_matches(['\r', '\n']) {
        "get=1" => Operation::Get,
        "set=1" => Operation::Set,
        _ => Operation::Unknown,
    }
}

async fn answer(stream: UnixStream, to_loop: &mpsc::Sender<GetRequest>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST));
    let mut first = String::new();
    lines.read_line(&mut first).await?;
    let op = operation(&first);
    // read the rest of the request up to its empty line (a set's settings are not applied)
    if op != Operation::Get {
        let mut line = String::new();
        loop {
            line.clear();
            let n = lines.read_line(&mut line).await?;
            if n == 0 || line.trim_end_matches(['\r', '\n']).is_empty() {
                break;
            }
        }
    }
    let text = match op {
        Operation::Get => {
            let (reply, answer) = oneshot::channel();
            if to_loop.send(reply).await.is_err() {
                return Ok(());
            }
            match answer.await {
                Ok(text) => text,
                Err(_) => return Ok(()),
            }
        }
        // errno values are negated on this protocol (as wireguard-go sends them): -EPERM makes
        // `wg set` print "Operation not permitted"
        Operation::Set => "errno=-1\n\n".to_owned(),
        // -EINVAL
        Operation::Unknown => "errno=-22\n\n".to_owned(),
    };
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// The `get=1` answer for the running client: one peer per datacenter.
pub fn render(
    config: &ClientConfig,
    engine: &engine::Engine,
    listen_port: u16,
    now: Instant,
) -> String {
    let zero = "0".repeat(64);
    let mut out = String::new();
    let _ = writeln!(out, "listen_port={listen_port}");
    let status = engine.status();
    for dc in &config.datacenters {
        let _ = writeln!(out, "public_key={}", hex(dc.public_key.as_bytes()));
        let _ = writeln!(out, "preshared_key={zero}");
        let live = status.iter().find(|s| s.name == dc.name);
        if let Some(endpoint) = live.and_then(|s| s.endpoint) {
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        let handshake = live
            .and_then(|s| s.stats.since_last_handshake)
            .and_then(|ago| now.checked_sub(ago))
            .map_or(0, clock::unix_millis_at);
        let _ = writeln!(out, "last_handshake_time_sec={}", handshake / 1000);
        let _ = writeln!(
            out,
            "last_handshake_time_nsec={}",
            (handshake % 1000) * 1_000_000
        );
        let (tx, rx) = live.map_or((0, 0), |s| (s.stats.tx_bytes, s.stats.rx_bytes));
        let _ = writeln!(out, "tx_bytes={tx}");
        let _ = writeln!(out, "rx_bytes={rx}");
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            dc.persistent_keepalive
        );
        for prefix in dc.allowed_ips.prefixes() {
            let _ = writeln!(out, "allowed_ip={prefix}");
        }
        let _ = writeln!(out, "protocol_version=1");
    }
    out.push_str("errno=0\n\n");
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_read_exactly() {
        assert_eq!(operation("get=1\n"), Operation::Get);
        assert_eq!(operation("set=1\r\n"), Operation::Set);
        assert_eq!(operation("get=2\n"), Operation::Unknown);
        assert_eq!(operation("GET=1\n"), Operation::Unknown);
        assert_eq!(operation(""), Operation::Unknown);
    }

    #[test]
    fn keys_are_lower_case_hex() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
