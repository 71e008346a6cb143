//! `failoverd`: the failover client (default) and gateway (`failoverd gateway`) daemons, plus
//! `genkey` / `pubkey` that behave like `wg genkey` / `wg pubkey`.
//!
//! The daemons themselves live in the `failoverd` library; this is their command line.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use failoverd::{client, gateway};
use runtime::{config, Shutdown};
use tunnel::PrivateKey;
use zeroize::Zeroizing;

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
    runtime::init_logging();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = Shutdown::new()?;
        match loaded {
            Loaded::Client(c) => client::run(path, c, shutdown).await,
            Loaded::Gateway(g) => gateway::run(path, g, shutdown).await,
        }
    })
}
