//! Real guests behind `vmm-shim`: the guest image, QEMU under TCG, and a lab whose client is
//! `vmm-shim` instead of `failoverd` (see `shared/VMM-GUEST.md` for the measured facts).
//!
//! ```text
//!   QEMU (TCG, unmodified Linux guest, virtio-net) ── stream socket or vhost-user ──┐
//!   ns client: vmm-shim ── up0 ── ns wan ── dc1..dcN gateways ── core ── server
//! ```
//!
//! The guest is Debian's cloud kernel and a busybox initramfs built by `scripts/guest-image`
//! (with `fo-lab` inside, so the guest runs the same verified stream as every other test);
//! its `/init` (`scripts/guest-init`) takes the scenario from the kernel command line and
//! prints markers on the serial console, which QEMU writes to the daemon's stdout file.

use std::os::fd::OwnedFd;

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::lab::{bin_path, wait_until, Daemon, Lab, Topology};
use crate::scenario::{
    datacenter_sections, start_datacenters, wait_claimed, wait_for_socket, Datacenters, Running,
    STABLE_V4, STABLE_V6,
};
use crate::stream::SendReport;

type Result<T> = std::io::Result<T>;

fn other(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

/// The guest NIC's MAC in every test.
pub const GUEST_MAC: &str = "52:54:00:12:34:56";
/// The file descriptor number the inherited stream socket gets in the child.
const STREAM_FD: i32 = 100;
/// Serial console lines end with `\r\n` and carry firmware escape sequences; markers are
/// matched on cleaned lines.
const RESULT_MARKER: &str = "FO-RESULT rc=";

/// The guest kernel and initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// `vmlinuz`
    pub kernel: PathBuf,
    /// `initramfs.cpio.gz`
    pub initrd: PathBuf,
}

/// Builds (once per process, cached on disk across runs) the guest image with `fo-lab` inside.
pub fn image() -> Result<GuestImage> {
    static IMAGE: OnceLock<std::result::Result<GuestImage, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let out = std::process::Command::new(repo.join("scripts/guest-image"))
                .arg("--with")
                .arg(bin_path("fo-lab"))
                .output()
                .map_err(|e| format!("running scripts/guest-image: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/guest-image failed (the guest tests need qemu-system-x86, \
                     busybox-static and Debian's cloud kernel package; scripts/setup installs \
                     them): {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let mut lines = stdout.lines().rev();
            let initrd = PathBuf::from(lines.next().unwrap_or_default());
            let kernel = PathBuf::from(lines.next().unwrap_or_default());
            if !kernel.is_file() || !initrd.is_file() {
                return Err(format!(
                    "scripts/guest-image printed no image paths: {stdout}"
                ));
            }
            Ok(GuestImage { kernel, initrd })
        })
        .clone()
        .map_err(other)
}

/// How the guest's NIC reaches `vmm-shim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// `-netdev stream` on one end of a socketpair the shim holds the other end of
    StreamFd,
    /// `-netdev stream` on a unix socket the shim listens on
    StreamListen,
    /// `-netdev vhost-user`
    VhostUser,
}

impl Frontend {
    /// For test names and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::StreamFd => "stream-fd",
            Self::StreamListen => "stream-listen",
            Self::VhostUser => "vhost-user",
        }
    }
}

/// One guest at a time per test process: QEMU under TCG keeps a core busy, and two of them on
/// a 2-core machine starve the daemons' probe timers into false switches. Held per thread and
/// re-entrant: a thread that builds several guest labs (the benchmark alternates between two)
/// boots their guests one after another anyway, and must not wait for itself.
static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

std::thread_local! {
    /// This thread's hold on [`ONE_GUEST`]: the guard, and how many labs share it.
    static HELD: std::cell::RefCell<(Option<std::sync::MutexGuard<'static, ()>>, usize)> =
        const { std::cell::RefCell::new((None, 0)) };
}

/// A share of this thread's hold on [`ONE_GUEST`]; the last one dropped releases it.
#[derive(Debug)]
struct GuestSlot {
    /// not `Send`: the hold belongs to the thread that took it
    _thread: std::marker::PhantomData<*const ()>,
}

impl GuestSlot {
    fn take() -> Self {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if h.1 == 0 {
                // a test that panicked while holding it leaves nothing to protect: go on
                h.0 = Some(ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner()));
            }
            h.1 += 1;
        });
        Self {
            _thread: std::marker::PhantomData,
        }
    }
}

impl Drop for GuestSlot {
    fn drop(&mut self) {
        // at thread exit the thread-local may already be gone; then so is the guard
        let _ = HELD.try_with(|h| {
            let mut h = h.borrow_mut();
            h.1 = h.1.saturating_sub(1);
            if h.1 == 0 {
                h.0 = None;
            }
        });
    }
}

/// A lab whose client is `vmm-shim`, with N datacenters and the stream server.
#[derive(Debug)]
pub struct ShimLab {
    /// the namespaces
    pub lab: Lab,
    /// the topology (the shim runs in `client`)
    pub topo: Topology,
    /// the shim
    pub shim: Running,
    /// the gateways, dc1 first
    pub gateways: Vec<Running>,
    /// the stream server
    pub server: Daemon,
    /// the front end
    pub frontend: Frontend,
    /// the socket QEMU connects to (listen and vhost-user front ends)
    pub socket: PathBuf,
    /// QEMU's end of the socketpair (stream-fd), until a guest boots
    guest_end: Option<OwnedFd>,
    boots: usize,
    /// held for the lab's life (dropped last)
    _one_guest: GuestSlot,
}

/// What a guest printed and how it ended.
#[derive(Debug)]
pub struct GuestRun {
    /// the scenario's exit status
    pub rc: i32,
    /// the cleaned console
    pub console: String,
}

impl GuestRun {
    /// The JSON report `fo-lab stream-send` printed after the `FO-STREAM ` marker.
    pub fn stream_report(&self) -> Result<SendReport> {
        let line = self
            .console
            .lines()
            .find_map(|l| l.strip_prefix("FO-STREAM "))
            .ok_or_else(|| {
                other(format!(
                    "no FO-STREAM line in the console:\n{}",
                    self.console
                ))
            })?;
        SendReport::parse(line).map_err(|e| other(format!("FO-STREAM {line}: {e}")))
    }
}

/// Removes terminal escape sequences and carriage returns from console output.
pub fn clean_console(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // parameters and intermediates, then one final byte in @..~
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// QEMU under TCG booting the test image with one CPU, 256 MiB, the serial console on stdout
/// and no devices yet: the caller adds the NIC. `net` are the `fo.*` network parameters (e.g.
/// `fo.net=dhcp`), `script` the scenario the guest's init runs.
pub fn qemu_command(image: &GuestImage, net: &str, script: &str) -> Vec<String> {
    let append = format!(
        "console=ttyS0 panic=-1 quiet {net} fo.run={}",
        base64::engine::general_purpose::STANDARD.encode(script)
    );
    let mut args: Vec<String> = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-smp",
        "1",
        "-m",
        "256",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
        "-monitor",
        "none",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["-kernel".into(), image.kernel.display().to_string()]);
    args.extend(["-initrd".into(), image.initrd.display().to_string()]);
    args.extend(["-append".into(), append]);
    args
}

impl ShimLab {
    /// Builds the lab and starts the shim with `guest_section` as its `[guest]` section and
    /// `extra_client` in its `[client]` section; waits until every tunnel is established and
    /// dc1 claims the client.
    pub fn new(
        test: &str,
        n: usize,
        frontend: Frontend,
        guest_section: &str,
        extra_client: &str,
    ) -> Result<Self> {
        let one_guest = GuestSlot::take();
        let mut lab = Lab::new(test)?;
        let topo = Topology::build(&mut lab, n)?;
        let Datacenters {
            client_key,
            entries,
            gateways,
            server,
        } = start_datacenters(&lab, &topo, &[])?;
        let control = lab.dir().join("shim.sock");
        let config = lab.dir().join("shim.toml");
        let socket = lab.dir().join("guest.sock");
        std::fs::write(
            &config,
            format!(
                "[client]\nprivate_key_file = \"{key}\"\nstable_address = [\"{STABLE_V4}\", \"{STABLE_V6}\"]\ncontrol_socket = \"{control}\"\n{extra_client}\n[guest]\n{guest_section}\n{dcs}",
                key = client_key.private_file.display(),
                control = control.display(),
                dcs = datacenter_sections(&entries),
            ),
        )?;
        let shim_bin = bin_path("vmm-shim");
        let mut args: Vec<std::ffi::OsString> = vec![shim_bin.into()];
        let mut guest_end = None;
        let daemon = match frontend {
            Frontend::StreamFd => {
                let (shim_end, qemu_end) = std::os::unix::net::UnixStream::pair()?;
                args.extend(["stream".into(), "--fd".into(), STREAM_FD.to_string().into()]);
                args.extend(["--config".into(), config.clone().into()]);
                let shim_end = OwnedFd::from(shim_end);
                let d = lab.spawn_with_fd(
                    &topo.client,
                    "vmm-shim",
                    &args,
                    Some((&shim_end, STREAM_FD)),
                )?;
                guest_end = Some(OwnedFd::from(qemu_end));
                d
            }
            Frontend::StreamListen | Frontend::VhostUser => {
                let (mode, flag) = if frontend == Frontend::VhostUser {
                    ("vhost-user", "--socket")
                } else {
                    ("stream", "--listen")
                };
                args.extend([mode.into(), flag.into(), socket.clone().into()]);
                args.extend(["--config".into(), config.clone().into()]);
                lab.spawn(&topo.client, "vmm-shim", &args)?
            }
        };
        wait_for_socket(&daemon, &control)?;
        let shim = Running {
            daemon,
            control,
            config,
        };
        shim.wait_established()?;
        if let Some(first) = gateways.first() {
            wait_claimed(first)?;
        }
        if frontend != Frontend::StreamFd {
            wait_until(Duration::from_secs(10), "the guest socket", || {
                socket.exists()
            })?;
        }
        Ok(Self {
            lab,
            topo,
            shim,
            gateways,
            server,
            frontend,
            socket,
            guest_end,
            boots: 0,
            _one_guest: one_guest,
        })
    }

    /// The datacenter namespace of dc `i` (1-based).
    pub fn dc(&self, i: usize) -> Result<&crate::lab::Ns> {
        self.topo.dc(i).ok_or_else(|| other(format!("no dc{i}")))
    }

    /// Boots the guest: `net` are the `fo.*` network parameters (e.g. `fo.net=dhcp`), `script`
    /// the scenario (a shell snippet; its exit status is the result). Returns QEMU's process.
    pub fn boot(&mut self, net: &str, script: &str) -> Result<Daemon> {
        let image = image()?;
        self.boots += 1;
        let mut args = qemu_command(&image, net, script);
        let device = format!("virtio-net-pci,netdev=n0,mac={GUEST_MAC},romfile=");
        let mut fd = None;
        match self.frontend {
            Frontend::StreamFd => {
                fd = Some(
                    self.guest_end
                        .take()
                        .ok_or_else(|| other("the stream-fd front end boots one guest"))?,
                );
                args.extend([
                    "-netdev".into(),
                    format!("stream,id=n0,server=off,addr.type=fd,addr.str={STREAM_FD}"),
                ]);
                args.extend(["-device".into(), device]);
            }
            Frontend::StreamListen => {
                args.extend([
                    "-netdev".into(),
                    format!(
                        "stream,id=n0,server=off,addr.type=unix,addr.path={}",
                        self.socket.display()
                    ),
                ]);
                args.extend(["-device".into(), device]);
            }
            Frontend::VhostUser => {
                args.extend([
                    "-object".into(),
                    "memory-backend-memfd,id=mem,size=256M,share=on".into(),
                    "-numa".into(),
                    "node,memdev=mem".into(),
                    "-chardev".into(),
                    format!("socket,id=c0,path={}", self.socket.display()),
                    "-netdev".into(),
                    "vhost-user,id=n0,chardev=c0".into(),
                ]);
                args.extend(["-device".into(), format!("{device},vectors=0")]);
            }
        }
        let name = format!("qemu-{}", self.boots);
        let qemu = self.lab.spawn_with_fd(
            &self.topo.client,
            &name,
            &args,
            fd.as_ref().map(|f| (f, STREAM_FD)),
        )?;
        drop(fd);
        Ok(qemu)
    }

    /// Waits for the guest's result marker (the guest then powers off) and returns it.
    pub fn wait_result(&self, qemu: &Daemon, timeout: Duration) -> Result<GuestRun> {
        let path = qemu.stdout_path().to_path_buf();
        let read = || clean_console(&std::fs::read_to_string(&path).unwrap_or_default());
        let waited = wait_until(timeout, "the guest's FO-RESULT", || {
            read().contains(RESULT_MARKER) || !qemu.is_running()
        });
        let console = read();
        let rc = console
            .lines()
            .find_map(|l| l.trim().strip_prefix(RESULT_MARKER))
            .and_then(|rc| rc.trim().parse().ok());
        match (waited, rc) {
            (_, Some(rc)) => Ok(GuestRun { rc, console }),
            (Err(e), None) => Err(other(format!(
                "{e}; console:\n{console}\nqemu stderr: {}",
                qemu.read_stderr()
            ))),
            (Ok(()), None) => Err(other(format!(
                "QEMU exited without a result; console:\n{console}\nqemu stderr: {}",
                qemu.read_stderr()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consoles_are_cleaned() {
        assert_eq!(
            clean_console("\u{1b}[2J\u{1b}[01;01HBooting\r\nFO-BOOTED\r\n\u{1b}c"),
            "Booting\nFO-BOOTED\n"
        );
    }

    #[test]
    fn the_guest_slot_is_reentrant_per_thread_and_exclusive_across_threads() {
        let a = GuestSlot::take();
        let b = GuestSlot::take(); // the same thread: no deadlock
        drop(a);
        let other = std::thread::spawn(|| {
            let _s = GuestSlot::take();
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !other.is_finished(),
            "another thread waits while one share is held"
        );
        drop(b);
        other.join().unwrap();
    }
}
