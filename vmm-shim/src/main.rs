//! `vmm-shim`: the backend of a guest's NIC that keeps the guest's TCP connections alive across a
//! datacenter failure.
//!
//! One IO loop (tokio, one thread) owns [`GuestNet`] — and through it the same engine
//! `failoverd` drives —, the underlay UDP socket and the control socket; it reads the clock
//! once per wake-up. The guest's frames reach it through one of two front ends
//! ([`frontend`]): QEMU's `-netdev stream` socket, or a vhost-user-net backend whose virtqueue
//! worker runs on its own thread and hands frames over through bounded queues.

mod frontend;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use engine::Engine;
use failoverd::client::{self, SwitchLog};
use failoverd::config::ShimConfig;
use failoverd::control::{self, Command};
use failoverd::net::Underlay;
use failoverd::notify::Notifier;
use failoverd::roaming::Roaming;
use failoverd::{clock, Shutdown, SignalRequest, BUFFER_LEN};
use serde_json::json;
use sessionkeeper::StableAddresses;
use tokio::sync::mpsc;
use vmm_shim::guest::OUT_LEN;
use vmm_shim::wire::Mac;
use vmm_shim::{Action, GuestConfig, GuestNet};

use crate::frontend::{Input, Output, Receiver};

const USAGE: &str = "\
usage:
  vmm-shim stream --config FILE --fd N         serve QEMU -netdev stream on an inherited socket
  vmm-shim stream --config FILE --listen PATH  serve QEMU -netdev stream on a unix socket
  vmm-shim vhost-user --config FILE --socket PATH
                                               serve QEMU -netdev vhost-user (QEMU connects)
  vmm-shim check --config FILE                 validate a configuration
";

/// Which front end, and where.
#[derive(Debug)]
enum Frontend {
    StreamFd(i32),
    StreamListen(PathBuf),
    VhostUser(PathBuf),
}

fn parse_args(args: &[String]) -> Result<(Option<Frontend>, PathBuf), String> {
    let Some((mode, rest)) = args.split_first() else {
        return Err(USAGE.into());
    };
    let mut config = None;
    let mut fd = None;
    let mut listen = None;
    let mut socket = None;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let slot = match flag.as_str() {
            "--config" | "-c" => &mut config,
            "--fd" => &mut fd,
            "--listen" => &mut listen,
            "--socket" => &mut socket,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        };
        if slot.replace(value.clone()).is_some() {
            return Err(format!("{flag} given twice"));
        }
    }
    let config = PathBuf::from(config.ok_or_else(|| format!("--config is required\n{USAGE}"))?);
    let frontend = match (mode.as_str(), fd, listen, socket) {
        ("check", None, None, None) => None,
        ("stream", Some(fd), None, None) => Some(Frontend::StreamFd(
            fd.parse()
                .ok()
                .filter(|n| *n > 2)
                .ok_or_else(|| format!("--fd {fd:?}: give the inherited socket's number (> 2)"))?,
        )),
        ("stream", None, Some(path), None) => Some(Frontend::StreamListen(path.into())),
        ("vhost-user", None, None, Some(path)) => Some(Frontend::VhostUser(path.into())),
        _ => return Err(USAGE.into()),
    };
    Ok((frontend, config))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (frontend, path) = match parse_args(&args) {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("vmm-shim: {usage}");
            return ExitCode::from(2);
        }
    };
    let result = ShimConfig::load(&path)
        .map_err(anyhow::Error::from)
        .and_then(|config| match frontend {
            None => {
                println!("{}: ok", path.display());
                Ok(())
            }
            Some(frontend) => serve(path.clone(), config, frontend),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmm-shim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf, config: ShimConfig, frontend: Frontend) -> anyhow::Result<()> {
    failoverd::init_logging();
    failoverd::privileges::set_non_dumpable()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = Shutdown::new()?;
        let (rx, tx) = match &frontend {
            Frontend::StreamFd(fd) => frontend::stream_fd(*fd)?,
            Frontend::StreamListen(path) => frontend::stream_listen(path)?,
            Frontend::VhostUser(path) => frontend::vhost_user(path, config.guest.mac)?,
        };
        run(path, config, rx, tx, shutdown).await
    })
}

fn guest_config(config: &ShimConfig) -> GuestConfig {
    let g = &config.guest;
    GuestConfig {
        mac: g.mac.map(Mac),
        address: g.address,
        prefix_len: g.prefix_len,
        gateway: g.gateway,
        dns: g.dns.clone(),
        prefix6: g.prefix6,
        lease_secs: g.lease_secs,
        ipv6: config.client.stable_v6.is_some(),
    }
}

/// The IO loop: the guest link, the underlay, timers, the control socket.
async fn run(
    path: PathBuf,
    mut config: ShimConfig,
    mut rx: Receiver,
    mut tx: Output,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut underlay = Underlay::bind(0)?;
    let mut engine_config = client::engine_config(&config.client);
    engine_config.keeper.local = StableAddresses::default();
    let engine = Engine::new(engine_config, clock::now()).context("building the engine")?;
    let mut net = GuestNet::new(guest_config(&config), engine, clock::now());
    let (control_tx, mut control_rx) = mpsc::channel(16);
    let _control = control::serve(
        &config.client.control_socket,
        client::access(&config.client),
        control_tx.clone(),
    )?;
    if let Some(addr) = config.client.operations.metrics_listen {
        failoverd::metrics::serve(addr, control_tx).await?;
    }
    client::drop_privileges(&config.client)?;
    let mut notifier = Notifier::from_env(clock::now());
    tracing::info!(
        guest = %config.guest.address,
        frontend = rx.describe(),
        datacenters = config.client.datacenters.len(),
        control = %config.client.control_socket.display(),
        "vmm-shim ready"
    );
    let mut udp_buf = vec![0u8; BUFFER_LEN];
    let mut out = vec![0u8; OUT_LEN];
    let mut switches = SwitchLog::default();
    run_timers(&mut net, &mut underlay, &mut out).await;
    notifier.ready(&client::status_line(net.engine()));
    // the host's network changes are the shim's too (it shares the host's uplink)
    let changes = failoverd::netwatch::watch(0).ok();
    let mut roaming = Roaming::new(&config.client, changes, clock::now());
    loop {
        let dns_due = roaming.before_sleep(clock::now());
        let deadline = net
            .poll_timeout()
            .into_iter()
            .chain(notifier.next_watchdog())
            .chain(dns_due)
            .min()
            .unwrap_or_else(|| clock::now() + clock::IDLE_WAKE);
        roaming.plan(deadline);
        tokio::select! {
            input = rx.input() => {
                roaming.woke(net.engine_mut(), clock::now());
                match input {
                    Input::Bytes(n) => {
                        let mut frames = rx.decode(n);
                        while let Some(frame) = frames.next_frame() {
                            on_guest_frame(&mut net, frame, &mut tx, &mut underlay, &mut out).await;
                        }
                        if frames.desynced() {
                            tracing::warn!("the guest stream is out of step; dropping the connection");
                            rx.desync();
                            tx.detach();
                        }
                    }
                    Input::Frame(mut frame) => {
                        on_guest_frame(&mut net, &mut frame, &mut tx, &mut underlay, &mut out).await;
                    }
                    Input::Connected(writer) => {
                        tracing::info!("guest link up");
                        tx.attach(writer);
                        net.link_reset(clock::now());
                    }
                    Input::Disconnected => {
                        tracing::warn!("guest link down");
                        tx.detach();
                    }
                    Input::Closed => {
                        tracing::info!("the VMM closed the guest link; exiting");
                        return Ok(());
                    }
                }
            }
            () = tx.writable(), if tx.has_pending() => tx.flush(),
            read = underlay.recv_from(&mut udp_buf) => {
                roaming.woke(net.engine_mut(), clock::now());
                let Ok((n, from)) = read else { continue };
                let Some(datagram) = udp_buf.get(..n) else { continue };
                match net.handle_datagram(clock::now(), from, datagram, &mut out) {
                    Action::ToGuest(frame) => tx.send_frame(frame),
                    Action::ToUnderlay(t) => underlay.send(t.to, t.datagram).await,
                    Action::None => {}
                }
                while let Some(t) = net.poll_transmit(&mut out) {
                    underlay.send(t.to, t.datagram).await;
                }
            }
            () = clock::sleep_until(deadline) => {
                roaming.woke(net.engine_mut(), clock::now());
                run_timers(&mut net, &mut underlay, &mut out).await;
            }
            event = roaming.next() => {
                roaming.woke(net.engine_mut(), clock::now());
                roaming.handle(net.engine_mut(), event);
            }
            Some(request) = control_rx.recv() => {
                let answer = match &request.command {
                    Command::Status => status(&net, &rx, &tx, &underlay, &switches),
                    Command::Reload => {
                        let answer = reload(&path, &mut net, &mut config);
                        if control::is_ok(&answer) {
                            roaming = roaming.reconfigured(&config.client, clock::now());
                        }
                        answer
                    }
                    Command::Metrics => serde_json::json!({"v": 1, "ok": true,
                        "text": client::metrics(net.engine(), &switches, underlay.send_errors()).render()}),
                    other => client::operate(net.engine_mut(), other, &switches),
                };
                let _ = request.reply.send(answer);
            }
            signal = shutdown.next() => match signal {
                SignalRequest::Stop => {
                    tracing::info!("shutting down");
                    notifier.stopping();
                    rx.shutdown();
                    return Ok(());
                }
                SignalRequest::Reload => {
                    if control::is_ok(&reload(&path, &mut net, &mut config)) {
                        roaming = roaming.reconfigured(&config.client, clock::now());
                    }
                }
            }
        }
        while let Some(frame) = net.poll_guest_frame() {
            tx.send_frame(&frame);
        }
        if tx.has_pending() {
            tx.flush();
        }
        let mut changed = false;
        while let Some(event) = net.engine_mut().poll_event() {
            roaming.on_event(net.engine(), &event);
            switches.record(net.engine(), &event);
            changed = true;
        }
        notifier.kick(clock::now());
        if changed && notifier.enabled() {
            notifier.status(&client::status_line(net.engine()));
        }
    }
}

/// Re-reads the shim's configuration and applies what can change at run time: everything the
/// client's reload applies; the guest section and the client's TUN-free keys need a restart.
fn reload(
    path: &std::path::Path,
    net: &mut GuestNet,
    running: &mut ShimConfig,
) -> serde_json::Value {
    match ShimConfig::load(path) {
        Ok(new) if guest_config(&new) != *net.config() => control::error(
            "the [guest] section changed: restart vmm-shim to apply it; the running configuration stays",
        ),
        Ok(new) => {
            // the shim's local addresses are the guest's, not the file's
            let keep_local = net.engine().local_addresses();
            let answer = client::apply_reload(
                net.engine_mut(),
                &mut running.client,
                new.client,
                client::restart_needed,
            );
            net.engine_mut().set_local_addresses(keep_local);
            answer
        }
        Err(e) => control::error(&format!("{e}\n(the running configuration stays)")),
    }
}

async fn on_guest_frame(
    net: &mut GuestNet,
    frame: &mut [u8],
    tx: &mut Output,
    underlay: &mut Underlay,
    out: &mut [u8],
) {
    match net.handle_guest_frame(clock::now(), frame, out) {
        Action::ToGuest(reply) => tx.send_frame(reply),
        Action::ToUnderlay(t) => underlay.send(t.to, t.datagram).await,
        Action::None => {}
    }
}

async fn run_timers(net: &mut GuestNet, underlay: &mut Underlay, out: &mut [u8]) {
    let mut sends = Vec::new();
    net.handle_timeout(clock::now(), out, |t| {
        sends.push((t.to, t.datagram.to_vec()))
    });
    for (to, datagram) in sends {
        underlay.send(to, &datagram).await;
    }
}

fn status(
    net: &GuestNet,
    rx: &Receiver,
    tx: &Output,
    underlay: &Underlay,
    switches: &SwitchLog,
) -> serde_json::Value {
    let mut answer = client::status(net.engine(), underlay.send_errors(), switches);
    let s = net.stats();
    let drops: serde_json::Map<String, serde_json::Value> = s
        .drops
        .nonzero()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    answer.insert("mode".into(), "vmm-shim".into());
    answer.insert(
        "guest".into(),
        json!({
            "mac": net.guest_mac().map(|m| m.to_string()),
            "addresses": net.guest_addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "rx_frames": s.rx_frames,
            "tx_frames": s.tx_frames,
            "to_engine": s.to_engine,
            "arp_replies": s.arp_replies,
            "dhcp_replies": s.dhcp_replies,
            "router_advertisements": s.router_advertisements,
            "neighbor_advertisements": s.neighbor_advertisements,
            "drops": drops,
            "link": {"receive": rx.status(), "send": tx.status()},
        }),
    );
    serde_json::Value::Object(answer)
}
