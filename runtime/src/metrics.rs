//! Prometheus metrics: the text exposition format on `GET /metrics`, served on the opt-in
//! `metrics_listen` address.
//!
//! The HTTP side is deliberately tiny and bounded: one request per connection, the request
//! head at most 4 KiB and 2 s, 8 connections at once; anything but `GET /metrics` gets a 404 or
//! 405. The numbers come from the daemon's loop through the same channel as control requests
//! ([`Command::Metrics`](crate::control::Command::Metrics)), so they are one consistent
//! snapshot. Names follow Prometheus' conventions: `failoverd_` prefix, `_total` counters,
//! base units (`_seconds`, `_bytes`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::control::{Answer, Command, Request};

const MAX_HEAD: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 8;

/// One metric family being built: its help and type, and its samples.
#[derive(Debug, Default)]
struct Family {
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

/// A snapshot in the text format, built family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<&'static str, Family>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    fn add(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let family = self.families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            samples: Vec::new(),
        });
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        family.samples.push((labels, value));
    }

    /// A gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.add(name, "gauge", help, labels, value);
    }

    /// A counter sample (`name` ends in `_total`).
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        self.add(name, "counter", help, labels, value as f64);
    }

    /// The text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.families {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for (labels, value) in &f.samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        }
        out
    }
}

/// Serves metrics at `addr` until the loop's channel closes.
pub async fn serve(addr: SocketAddr, to_loop: mpsc::Sender<Request>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                continue; // dropped: at capacity
            };
            let to_loop = to_loop.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(TIMEOUT, answer(stream, to_loop)).await;
                drop(permit);
            });
        }
    });
    Ok(())
}

async fn answer(mut stream: TcpStream, to_loop: mpsc::Sender<Request>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, body) = match (method, path) {
        (b"GET", b"/metrics") => {
            let (reply, answer) = oneshot::channel();
            let text = match to_loop
                .send(Request {
                    command: Command::Metrics,
                    reply,
                })
                .await
            {
                Ok(()) => answer.await.ok().and_then(|a| match a {
                    Answer::Metrics(m) => Some(m.text),
                    _ => None,
                }),
                Err(_) => None,
            };
            match text {
                Some(t) => ("200 OK", t),
                None => ("503 Service Unavailable", "shutting down\n".to_owned()),
            }
        }
        (b"GET", _) => ("404 Not Found", "metrics are at /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_once_with_their_samples() {
        let mut e = Exposition::default();
        e.gauge("failoverd_tunnel_up", "Up.", &[("datacenter", "dc1")], 1.0);
        e.gauge(
            "failoverd_tunnel_up",
            "Up.",
            &[("datacenter", "d\"c2")],
            0.0,
        );
        e.counter("failoverd_switches_total", "Switches.", &[], 3);
        let text = e.render();
        assert_eq!(text.matches("# TYPE failoverd_tunnel_up gauge").count(), 1);
        assert!(text.contains("failoverd_tunnel_up{datacenter=\"d\\\"c2\"} 0\n"));
        assert!(text.contains("failoverd_switches_total 3\n"));
    }
}
