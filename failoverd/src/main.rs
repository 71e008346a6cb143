//! `failoverd`: the failover client (default) and gateway (`failoverd gateway`) daemons, plus
//! `genkey` / `pubkey` / `genpsk` that behave like `wg genkey` / `wg pubkey` / `wg genpsk`.
//!
//! The daemons themselves live in the `failoverd` library; this is their command line, parsed
//! by clap: a usage error names the argument and exits 2, a failed daemon or check exits 1.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use failoverd::config::GatewayConfig;
use failoverd::{client, gateway};
use runtime::config::ClientConfig;
use runtime::Shutdown;
use tunnel::{PresharedKey, PrivateKey};
use zeroize::Zeroizing;

/// `--version`: the crate's version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("FAILOVER_GIT_REVISION"),
    ")"
);

/// The command line. Without a subcommand, `failoverd --config FILE` runs the client: the
/// systemd unit and the tests start it that way.
#[derive(Debug, Parser)]
#[command(
    name = "failoverd",
    version = VERSION,
    propagate_version = true,
    about = "The failover client (the default) and gateway daemons",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// The client's configuration file: run the client daemon
    #[arg(short, long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the client daemon (the same as no subcommand)
    Client(ConfigFile),
    /// Run the gateway daemon
    Gateway(ConfigFile),
    /// Validate a client configuration and exit
    Check(ConfigFile),
    /// Validate a gateway configuration and exit
    CheckGateway(ConfigFile),
    /// Print a new private key (like `wg genkey`)
    Genkey,
    /// Read a private key on stdin, print its public key (like `wg pubkey`)
    Pubkey,
    /// Print a new pre-shared key (like `wg genpsk`), for `preshared_key_file` on both sides
    Genpsk,
}

#[derive(Debug, clap::Args)]
struct ConfigFile {
    /// The configuration file (TOML)
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

/// Which daemon a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Gateway,
}

fn main() -> ExitCode {
    // usage errors: clap prints them, naming the argument, and exits 2; --help and --version 0
    let cli = Cli::parse();
    let result = match (cli.command, cli.config) {
        (Some(Command::Genkey), _) => genkey(),
        (Some(Command::Pubkey), _) => pubkey(),
        (Some(Command::Genpsk), _) => genpsk(),
        (Some(Command::Client(f)), _) => run_daemon(Role::Client, false, f.config),
        (Some(Command::Gateway(f)), _) => run_daemon(Role::Gateway, false, f.config),
        (Some(Command::Check(f)), _) => run_daemon(Role::Client, true, f.config),
        (Some(Command::CheckGateway(f)), _) => run_daemon(Role::Gateway, true, f.config),
        (None, Some(config)) => run_daemon(Role::Client, false, config),
        (None, None) => Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--config FILE is required",
            )
            .exit(),
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

fn genpsk() -> anyhow::Result<()> {
    let mut line = PresharedKey::generate().to_base64();
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

/// Loads the configuration of `role`; with `check_only`, says it is good and returns; else runs
/// the daemon until it is told to stop.
fn run_daemon(role: Role, check_only: bool, path: PathBuf) -> anyhow::Result<()> {
    // Validate before anything privileged happens, so a bad config fails fast and clearly.
    enum Loaded {
        Client(ClientConfig),
        Gateway(GatewayConfig),
    }
    let loaded = match role {
        Role::Gateway => Loaded::Gateway(GatewayConfig::load(&path)?),
        Role::Client => Loaded::Client(ClientConfig::load(&path)?),
    };
    if check_only {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_is_the_client() {
        let cli = Cli::try_parse_from(["failoverd", "--config", "client.toml"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.config, Some(PathBuf::from("client.toml")));
        let cli = Cli::try_parse_from(["failoverd", "-c", "client.toml"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("client.toml")));
        let cli = Cli::try_parse_from(["failoverd", "gateway", "-c", "gw.toml"]).unwrap();
        let Some(Command::Gateway(f)) = cli.command else {
            panic!("not the gateway: {:?}", cli.command);
        };
        assert_eq!(f.config, PathBuf::from("gw.toml"));
        assert!(Cli::try_parse_from(["failoverd"]).is_err());
        assert!(Cli::try_parse_from(["failoverd", "--config", "a", "gateway", "-c", "b"]).is_err());
    }
}
