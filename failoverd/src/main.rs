//! `failoverd`: the failover client (default) and gateway (`failoverd gateway`) daemons, plus
//! `genkey` / `pubkey` that behave like `wg genkey` / `wg pubkey`.
//!
//! This is the IO layer: configuration, TUN and UDP, netlink, the control socket. Every
//! protocol decision is made by the sans-IO crates it drives (`engine`, `tunnel`).

mod client;
mod config;
mod control;
mod gateway;
mod keyfile;
mod net;
mod takeover;

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use tunnel::{DropCounters, PrivateKey};
use zeroize::Zeroizing;

/// Every buffer on the data path holds the largest datagram plus WireGuard's overhead, so
/// `tunnel::min_buffer_len` holds for any input.
pub(crate) const BUFFER_LEN: usize = tunnel::min_buffer_len(tunnel::MAX_DATAGRAM);

pub(crate) mod clock {
    //! The one place the daemon reads the clock; the cores get `now` from here.
    //!
    //! Known gap (the laptop-life work): `Instant` is CLOCK_MONOTONIC, which stops during
    //! suspend; boringtun's own timers already use CLOCK_BOOTTIME.
    use std::time::{Duration, Instant};

    /// How long the loop sleeps when no timer is pending.
    pub const IDLE_WAKE: Duration = Duration::from_secs(1);

    /// The current time, read once per wake-up of the IO loop.
    #[allow(clippy::disallowed_methods)] // the IO layer is where the clock is read
    pub fn now() -> Instant {
        Instant::now()
    }

    /// Wall-clock milliseconds since the Unix epoch, for event logs read by people.
    #[allow(clippy::disallowed_methods)] // wall time for display only, never for timers
    pub fn unix_millis() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// `{label: count}` for every non-zero drop counter.
pub(crate) fn drops_json(drops: &DropCounters) -> serde_json::Value {
    drops
        .nonzero()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
        .collect()
}

/// Resolves when SIGTERM or SIGINT arrives.
pub(crate) struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

const USAGE: &str = "\
usage:
  failoverd [client] --config FILE   run the client daemon
  failoverd gateway --config FILE    run the gateway daemon
  failoverd check --config FILE      validate a client config (check-gateway for a gateway's)
  failoverd genkey                   print a new private key (like `wg genkey`)
  failoverd pubkey                   read a private key on stdin, print its public key
";

fn config_arg(args: &[String]) -> Result<PathBuf, String> {
    match args {
        [flag, path] if flag == "--config" || flag == "-c" => Ok(PathBuf::from(path)),
        _ => Err(format!("expected --config FILE\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((first, rest))
            if matches!(
                first.as_str(),
                "client" | "gateway" | "check" | "check-gateway" | "genkey" | "pubkey"
            ) =>
        {
            (first.as_str(), rest)
        }
        Some((first, _)) if first == "-h" || first == "--help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => ("client", &args[..]),
    };
    let result = match command {
        "genkey" => genkey(),
        "pubkey" => pubkey(),
        other => match config_arg(rest) {
            Err(usage) => {
                eprintln!("failoverd: {usage}");
                return ExitCode::from(2);
            }
            Ok(path) => run_daemon(other, path),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failoverd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn genkey() -> anyhow::Result<()> {
    let key = PrivateKey::generate();
    let mut line = Zeroizing::new(key.to_base64().to_string());
    line.push('\n');
    std::io::stdout().write_all(line.as_bytes())?;
    Ok(())
}

fn pubkey() -> anyhow::Result<()> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin().take(1024).read_to_string(&mut text)?;
    let key = PrivateKey::from_base64(&text)
        .map_err(|e| anyhow::anyhow!("stdin: the private key {e}"))?;
    println!("{}", key.public_key());
    Ok(())
}

fn run_daemon(command: &str, path: PathBuf) -> anyhow::Result<()> {
    // Validate before anything privileged happens, so a bad config fails fast and clearly.
    enum Loaded {
        Client(config::ClientConfig),
        Gateway(config::GatewayConfig),
    }
    let loaded = match command {
        "gateway" | "check-gateway" => Loaded::Gateway(config::GatewayConfig::load(&path)?),
        _ => Loaded::Client(config::ClientConfig::load(&path)?),
    };
    if command.starts_with("check") {
        println!("{}: ok", path.display());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = Shutdown::new()?;
        match loaded {
            Loaded::Client(c) => client::run(c, shutdown).await,
            Loaded::Gateway(g) => gateway::run(g, shutdown).await,
        }
    })
}
