//! The namespace lab: network namespaces, veths, bridges, addresses, routes and the processes
//! a test runs inside them, all torn down when the [`Lab`] is dropped.
//!
//! Modelled on Linux's `tools/testing/selftests/wireguard/netns.sh`: every namespace name
//! carries a per-run id (pid, a process-wide counter and a few time bits), so tests run in
//! parallel and next to other labs; readiness is waited for ([`wait_until`],
//! [`Lab::wait_tcp_listening`], ...), never slept for; cleanup is `Drop`, so it also runs when a
//! test panics.
//!
//! Contract:
//! - Only root can build a lab. [`Lab::new`] panics with a clear message otherwise
//!   ([`require_root`]): a namespace test must fail loudly, never pass by doing nothing.
//! - The lab kills **only** processes it spawned, by PID ([`Lab::spawn`]), plus whatever is left
//!   inside its own uniquely named namespaces (found with `ip netns pids`), never by name.
//! - Interfaces are created directly inside their namespaces (`ip -n NS link add ... peer ...
//!   netns OTHER`), never in the root namespace, so labs cannot collide on interface names.
//! - If the test process itself is SIGKILLed, `Drop` cannot run: namespaces named `fo*-<id>` and
//!   `/tmp/failover-lab-<id>/` are left behind.
//!
//! The standard topology of DESIGN.md ("Lab and tests") is [`Topology`]:
//!
//! ```text
//!                      ns wan: bridge brwan (198.18.0.0/24, "the internet")
//!          ┌──────────────────┬──────────────┴───────┬─────────────────┐
//!   client up0 .1        dc1 wan0 .11           dc2 wan0 .12   ...  dcN wan0 .(10+N)
//!                        dc1 in0 .11            dc2 in0 .12    ...  dcN in0 .(10+N)
//!                            └──────────────┬──────────┴──────────────────┘
//!                     ns core: bridge brcore (198.19.0.0/24, fd00:19::/64)
//!                                           │
//!                              server eth0 198.19.0.100, fd00:19::100
//! ```

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::impair::Profile;
use crate::stream::splitmix64;

/// How long the lab's own readiness waits (`wait_tcp_listening`, `wait_link`, ...) wait.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Poll interval of [`wait_until`].
const POLL: Duration = Duration::from_millis(10);

/// Process-wide counter that makes lab ids unique within one test binary.
static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The lab's clock. The lab is IO code (it runs processes and polls), so it may read the clock;
/// this is the one place it does.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Panics unless the process runs as root (effective uid 0).
///
/// Namespace tests need `CAP_NET_ADMIN`; without it they must fail, not silently pass.
#[allow(clippy::panic)]
pub fn require_root() {
    if !is_root() {
        panic!(
            "namespace tests need root (CAP_NET_ADMIN): run them as root, e.g. `sudo scripts/test`"
        );
    }
}

/// Whether the effective uid is 0.
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `sig` to `pid`.
#[allow(unsafe_code)]
fn send_signal(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    if pid <= 0 {
        return Err(io::Error::other("refusing to signal a non-positive pid"));
    }
    // SAFETY: kill only reads its two integer arguments; a positive pid names one process, never
    // a group. Callers guarantee the pid is one of ours and not yet reaped (see Daemon::signal).
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into the network namespace open at `fd`.
#[allow(unsafe_code)]
fn enter_netns(fd: &File) -> io::Result<()> {
    // SAFETY: `fd` is an open namespace file owned by the caller for the duration of the call;
    // setns changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the child of `cmd` own `fd` as number `as_fd`, without close-on-exec.
#[allow(unsafe_code)]
fn inherit_fd(cmd: &mut Command, fd: i32, as_fd: i32) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: dup2 and fcntl are. It touches no memory of
    // the parent's but the two integers it captured.
    unsafe {
        cmd.pre_exec(move || {
            if fd == as_fd {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, as_fd) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Polls `f` every 10 ms until it returns true; errors (kind `TimedOut`) naming `what` if it
/// has not after `timeout`. `f` is called at least once.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> io::Result<()> {
    let deadline = now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {timeout:?} waiting for {what}"),
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// Path of a workspace binary built in the same profile as the running executable.
///
/// From `target/<profile>/deps/<test>-<hash>` (an integration test) or `target/<profile>/<bin>`
/// it returns `target/<profile>/<name>`.
///
/// # Panics
/// If the binary does not exist: the tests need the workspace built first.
#[allow(clippy::panic)]
pub fn bin_path(name: &str) -> PathBuf {
    let dir = std::env::current_exe().ok().and_then(|exe| {
        let parent = exe.parent()?.to_path_buf();
        if parent.file_name() == Some(OsStr::new("deps")) {
            parent.parent().map(Path::to_path_buf)
        } else {
            Some(parent)
        }
    });
    match dir.map(|d| d.join(name)) {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "binary {name} not built: run `cargo build --release --workspace` first \
             (scripts/test does)"
        ),
    }
}

/// Runs `cmd`, returning its output; an error carrying the command line and stderr if it could
/// not start or exited unsuccessfully.
fn run_checked(cmd: &mut Command) -> io::Result<Output> {
    let out = run_unchecked(cmd)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            String::from_utf8_lossy(&out.stdout).trim_end(),
        )))
    }
}

fn run_unchecked(cmd: &mut Command) -> io::Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {cmd:?}: {e}")))
}

/// A network namespace of a [`Lab`]: a cheap, clonable handle. The namespace lives as long as
/// the lab that created it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ns {
    name: Arc<str>,
    role: Arc<str>,
}

impl Ns {
    /// The namespace's name, as `ip netns` knows it (`fo<role>-<id>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The role it was created with (`client`, `dc1`, ...).
    pub fn role(&self) -> &str {
        &self.role
    }
}

/// A process the lab spawned inside a namespace. Clonable; every clone refers to the same
/// process. The lab SIGKILLs it when dropped, if it is still running.
#[derive(Debug, Clone)]
pub struct Daemon {
    inner: Arc<DaemonInner>,
}

#[derive(Debug)]
struct DaemonInner {
    name: String,
    pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Held locked while signalling, so a signal is never sent after the PID was reaped (and
    /// possibly reused).
    child: Mutex<Child>,
}

impl Daemon {
    fn child(&self) -> MutexGuard<'_, Child> {
        self.inner.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The name given at spawn (log files are `<name>.stdout` / `<name>.stderr`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The program's PID (`ip netns exec` execs the program, so this is the program itself).
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Path of the file its stdout goes to.
    pub fn stdout_path(&self) -> &Path {
        &self.inner.stdout
    }

    /// Path of the file its stderr goes to.
    pub fn stderr_path(&self) -> &Path {
        &self.inner.stderr
    }

    /// Everything it wrote to stdout so far (lossy UTF-8; empty if unreadable).
    pub fn read_stdout(&self) -> String {
        read_lossy(&self.inner.stdout)
    }

    /// Everything it wrote to stderr so far (lossy UTF-8; empty if unreadable).
    pub fn read_stderr(&self) -> String {
        read_lossy(&self.inner.stderr)
    }

    /// Sends signal `sig` (e.g. `libc::SIGSTOP`, `libc::SIGTERM`). Errors if the process has
    /// already exited and been reaped.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        let mut child = self.child();
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{} (pid {}) already exited: {status}",
                self.inner.name, self.inner.pid
            )));
        }
        send_signal(self.inner.pid, sig)
    }

    /// SIGKILLs it (if still running) and reaps it; returns its exit status.
    pub fn kill(&self) -> io::Result<ExitStatus> {
        let mut child = self.child();
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        child.kill()?;
        child.wait()
    }

    /// Waits up to `timeout` for it to exit; its status if it did.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        let _ = wait_until(timeout, "exit", || {
            status = self.try_status();
            status.is_some()
        });
        status
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Whether it is still running (a stopped process counts as running).
    pub fn is_running(&self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[derive(Debug, Default)]
struct LabState {
    namespaces: Vec<Ns>,
    daemons: Vec<Daemon>,
    /// Counter for generated interface names and scratch files.
    next_serial: u32,
}

/// A set of namespaces and processes for one test, removed on drop.
///
/// All methods take `&self` (state is behind a mutex), so a lab can be shared with threads.
#[derive(Debug)]
pub struct Lab {
    test_name: String,
    id: String,
    dir: PathBuf,
    state: Mutex<LabState>,
}

impl Lab {
    /// Creates an empty lab with a fresh run id and its directory
    /// `/tmp/failover-lab-<id>/`. Panics (via [`require_root`]) if not root.
    pub fn new(test_name: &str) -> io::Result<Lab> {
        require_root();
        let pid = u64::from(std::process::id());
        #[allow(clippy::disallowed_methods)] // only salts the id; ids stay unique without it
        let time_bits = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        for _attempt in 0..16 {
            let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
            let salt = splitmix64(time_bits ^ (pid << 32) ^ n) & 0xfff;
            // Fixed-width salt keeps `<n><salt>` unambiguous.
            let id = format!("{pid:x}-{n:x}{salt:03x}");
            let dir = PathBuf::from(format!("/tmp/failover-lab-{id}"));
            match fs::create_dir(&dir) {
                Ok(()) => {
                    let _ = fs::write(dir.join("TEST"), format!("{test_name}\n"));
                    return Ok(Lab {
                        test_name: test_name.to_string(),
                        id,
                        dir,
                        state: Mutex::new(LabState::default()),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("create {}: {e}", dir.display()),
                    ))
                }
            }
        }
        Err(io::Error::other(
            "could not find a free lab id in 16 attempts",
        ))
    }

    fn state(&self) -> MutexGuard<'_, LabState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn serial(&self) -> u32 {
        let mut st = self.state();
        st.next_serial += 1;
        st.next_serial
    }

    /// The per-run id embedded in every namespace name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The test name given to [`Lab::new`].
    pub fn test_name(&self) -> &str {
        &self.test_name
    }

    /// The lab's scratch directory for configs and logs (removed on drop unless
    /// `FAILOVER_LAB_KEEP=1`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `ip ARGS`, checked.
    fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> io::Result<Output> {
        run_checked(Command::new("ip").args(args))
    }

    /// Runs `ip -n NS ARGS`, checked.
    fn ip_n(&self, ns: &Ns, args: &[&str]) -> io::Result<Output> {
        run_checked(Command::new("ip").arg("-n").arg(ns.name()).args(args))
    }

    /// Creates namespace `fo<role>-<id>`, brings `lo` up in it and turns off IPv6 duplicate
    /// address detection (so IPv6 addresses are usable at once).
    pub fn add_ns(&self, role: &str) -> io::Result<Ns> {
        let ns = Ns {
            name: format!("fo{role}-{}", self.id).into(),
            role: role.into(),
        };
        self.ip(&["netns", "add", ns.name()])?;
        self.state().namespaces.push(ns.clone());
        self.ip_n(&ns, &["link", "set", "lo", "up"])?;
        self.sysctl(&ns, "net.ipv6.conf.all.accept_dad", "0")?;
        self.sysctl(&ns, "net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// The namespaces created so far, in creation order.
    pub fn namespaces(&self) -> Vec<Ns> {
        self.state().namespaces.clone()
    }

    /// Creates a veth pair `if_a` in `a` ⇄ `if_b` in `b` (`a` may equal `b`) and brings both
    /// ends up.
    pub fn veth(&self, a: &Ns, if_a: &str, b: &Ns, if_b: &str) -> io::Result<()> {
        self.ip_n(
            a,
            &[
                "link",
                "add",
                if_a,
                "type",
                "veth",
                "peer",
                "name",
                if_b,
                "netns",
                b.name(),
            ],
        )?;
        self.up(a, if_a)?;
        self.up(b, if_b)
    }

    /// Creates bridge `brname` in `ns` and brings it up.
    pub fn bridge(&self, ns: &Ns, brname: &str) -> io::Result<()> {
        self.ip_n(ns, &["link", "add", brname, "type", "bridge"])?;
        self.up(ns, brname)
    }

    /// Creates a veth `if_a` in `a` whose peer (a generated name, returned) is enslaved to
    /// bridge `brname` in `bridge_ns`; brings both ends up.
    pub fn veth_to_bridge(
        &self,
        a: &Ns,
        if_a: &str,
        bridge_ns: &Ns,
        brname: &str,
    ) -> io::Result<String> {
        // Interface names are at most 15 bytes (IFNAMSIZ - 1).
        let port: String = format!("p{}-{}", self.serial(), a.role())
            .chars()
            .filter(char::is_ascii)
            .take(15)
            .collect();
        let br = bridge_ns.name();
        self.ip_n(
            a,
            &[
                "link", "add", if_a, "type", "veth", "peer", "name", &port, "netns", br,
            ],
        )?;
        self.ip_n(bridge_ns, &["link", "set", &port, "master", brname])?;
        self.up(bridge_ns, &port)?;
        self.up(a, if_a)?;
        Ok(port)
    }

    /// Adds address `cidr` (e.g. `198.18.0.1/24`, `fd00:19::100/64`) to `ifname` in `ns`;
    /// IPv6 addresses are added `nodad`.
    pub fn addr(&self, ns: &Ns, ifname: &str, cidr: &str) -> io::Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip_n(ns, &args).map(drop)
    }

    /// Sets `ifname` in `ns` up.
    pub fn up(&self, ns: &Ns, ifname: &str) -> io::Result<()> {
        self.ip_n(ns, &["link", "set", ifname, "up"]).map(drop)
    }

    /// Sets `ifname` in `ns` down (a link fault).
    pub fn down(&self, ns: &Ns, ifname: &str) -> io::Result<()> {
        self.ip_n(ns, &["link", "set", ifname, "down"]).map(drop)
    }

    /// `ip route add SPEC` in `ns`, e.g. `"100.96.0.0/16 via 198.19.0.11"` or
    /// `"fd00:96::/64 via fd00:19::11"` (the family follows from the prefix).
    pub fn route(&self, ns: &Ns, spec: &str) -> io::Result<()> {
        self.route_cmd(ns, "add", spec)
    }

    /// `ip route replace SPEC` in `ns`.
    pub fn route_replace(&self, ns: &Ns, spec: &str) -> io::Result<()> {
        self.route_cmd(ns, "replace", spec)
    }

    /// `ip route del SPEC` in `ns` (a routing fault).
    pub fn route_del(&self, ns: &Ns, spec: &str) -> io::Result<()> {
        self.route_cmd(ns, "del", spec)
    }

    fn route_cmd(&self, ns: &Ns, verb: &str, spec: &str) -> io::Result<()> {
        let mut args = vec!["route", verb];
        args.extend(spec.split_whitespace());
        self.ip_n(ns, &args).map(drop)
    }

    /// Sets sysctl `key` (e.g. `net.ipv4.ip_forward`) to `value` inside `ns`.
    pub fn sysctl(&self, ns: &Ns, key: &str, value: &str) -> io::Result<()> {
        self.exec(ns, &["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Loads an nftables script (`nft -f`) inside `ns`, e.g. a fault: `"table inet fault { chain
    /// in { type filter hook input priority 0; udp dport 51820 drop; } }"`.
    /// The script is kept in the lab dir for post-mortems.
    pub fn nft(&self, ns: &Ns, script: &str) -> io::Result<()> {
        let path = self
            .dir
            .join(format!("nft-{}-{}.nft", self.serial(), ns.role()));
        fs::write(&path, script)?;
        self.exec(ns, &[OsStr::new("nft"), OsStr::new("-f"), path.as_os_str()])
            .map(drop)
    }

    /// Runs `ip netns exec NS ARGS...` to completion; an error with its stderr if it fails.
    pub fn exec<S: AsRef<OsStr>>(&self, ns: &Ns, args: &[S]) -> io::Result<Output> {
        run_checked(
            Command::new("ip")
                .args(["netns", "exec", ns.name()])
                .args(args),
        )
    }

    /// Like [`Lab::exec`], but returns the output whatever the exit status.
    pub fn exec_unchecked<S: AsRef<OsStr>>(&self, ns: &Ns, args: &[S]) -> io::Result<Output> {
        run_unchecked(
            Command::new("ip")
                .args(["netns", "exec", ns.name()])
                .args(args),
        )
    }

    /// Starts `ip netns exec NS ARGS...` in the background, stdin null, stdout and stderr to
    /// `<dir>/<name>.stdout` / `.stderr`. `name` must be unique within the lab. The lab SIGKILLs
    /// it on drop.
    pub fn spawn<S: AsRef<OsStr>>(&self, ns: &Ns, name: &str, args: &[S]) -> io::Result<Daemon> {
        self.spawn_with_fd(ns, name, args, None)
    }

    /// [`Lab::spawn`], handing the process `fd` as file descriptor number `as_fd` (only this
    /// child inherits it: it keeps close-on-exec in the test process, and is duplicated to
    /// `as_fd` after the fork).
    pub fn spawn_with_fd<S: AsRef<OsStr>>(
        &self,
        ns: &Ns,
        name: &str,
        args: &[S],
        fd: Option<(&std::os::fd::OwnedFd, i32)>,
    ) -> io::Result<Daemon> {
        if args.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "spawn: empty command",
            ));
        }
        let stdout = self.dir.join(format!("{name}.stdout"));
        let stderr = self.dir.join(format!("{name}.stderr"));
        let create = |p: &Path| {
            File::options()
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("log {} (daemon name reused?): {e}", p.display()),
                    )
                })
        };
        let (out_file, err_file) = (create(&stdout)?, create(&stderr)?);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(err_file);
        if let Some((fd, as_fd)) = fd {
            inherit_fd(&mut cmd, fd.as_raw_fd(), as_fd);
        }
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn {cmd:?}: {e}")))?;
        let daemon = Daemon {
            inner: Arc::new(DaemonInner {
                name: name.to_string(),
                pid: child.id(),
                stdout,
                stderr,
                child: Mutex::new(child),
            }),
        };
        self.state().daemons.push(daemon.clone());
        Ok(daemon)
    }

    /// Runs `f` on a fresh thread that has entered `ns`'s network namespace, and returns its
    /// result. Sockets created inside `f` stay in `ns` and may be returned and used anywhere.
    pub fn run_in<T: Send>(&self, ns: &Ns, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let path = Path::new("/run/netns").join(ns.name());
        let fd = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&fd)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Whether `from` reaches `addr`: a TCP connect to port 9 that is answered at all (accepted
    /// or refused with a RST) proves the round trip; silence does not. Retries until `timeout`.
    pub fn wait_reachable(&self, from: &Ns, addr: IpAddr, timeout: Duration) -> io::Result<()> {
        let target = SocketAddr::new(addr, 9);
        let what = format!("{addr} to answer from ns {}", from.name());
        let mut last_err = String::new();
        wait_until(timeout, &what, || {
            let res = self.run_in(from, || TcpStream::connect_timeout(&target, POLL * 50));
            match res {
                Ok(Ok(_)) => true,
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => true,
                Ok(Err(e)) | Err(e) => {
                    last_err = e.to_string();
                    false
                }
            }
        })
        .map_err(|e| io::Error::new(e.kind(), format!("{e} (last error: {last_err})")))
    }

    /// Waits until something listens on TCP `port` (IPv4 or IPv6) inside `ns`.
    pub fn wait_tcp_listening(&self, ns: &Ns, port: u16) -> io::Result<()> {
        let what = format!("a TCP listener on port {port} in ns {}", ns.name());
        wait_until(READY_TIMEOUT, &what, || {
            self.proc_net_has(ns, &["tcp", "tcp6"], port, Some("0A"))
                .unwrap_or(false)
        })
    }

    /// Waits until a UDP socket is bound to `port` (IPv4 or IPv6) inside `ns`.
    pub fn wait_udp_bound(&self, ns: &Ns, port: u16) -> io::Result<()> {
        let what = format!("a UDP socket on port {port} in ns {}", ns.name());
        wait_until(READY_TIMEOUT, &what, || {
            self.proc_net_has(ns, &["udp", "udp6"], port, None)
                .unwrap_or(false)
        })
    }

    /// Whether `/proc/net/<table>` inside `ns` has a socket with local `port` (and `state`).
    fn proc_net_has(
        &self,
        ns: &Ns,
        tables: &[&str],
        port: u16,
        state: Option<&str>,
    ) -> io::Result<bool> {
        let texts = self.run_in(ns, || {
            // thread-self, not self: /proc/self/net follows the main thread's namespace.
            tables
                .iter()
                .map(|t| fs::read_to_string(format!("/proc/thread-self/net/{t}")))
                .collect::<io::Result<Vec<String>>>()
        })??;
        let want_port = format!("{port:04X}");
        Ok(texts.iter().any(|text| {
            text.lines().skip(1).any(|line| {
                let mut fields = line.split_whitespace();
                let local = fields.nth(1).unwrap_or("");
                let st = fields.nth(1).unwrap_or("");
                local.rsplit(':').next() == Some(want_port.as_str())
                    && state.is_none_or(|s| s == st)
            })
        }))
    }

    /// Waits until interface `ifname` exists in `ns`.
    pub fn wait_link(&self, ns: &Ns, ifname: &str) -> io::Result<()> {
        let what = format!("link {ifname} in ns {}", ns.name());
        wait_until(READY_TIMEOUT, &what, || {
            Command::new("ip")
                .args(["-n", ns.name(), "link", "show", "dev", ifname])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Waits until the file at `path` exists and contains `needle`.
    pub fn wait_file_contains(
        &self,
        path: &Path,
        needle: &str,
        timeout: Duration,
    ) -> io::Result<()> {
        let what = format!("{} to contain {needle:?}", path.display());
        wait_until(timeout, &what, || read_lossy(path).contains(needle))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(|p| p.into_inner()));
        // Our own children first, by PID, reaped.
        for d in &state.daemons {
            if let Err(e) = d.kill() {
                eprintln!("lab {}: kill {} (pid {}): {e}", self.id, d.name(), d.pid());
            }
        }
        // Anything else still inside our namespaces would keep them alive.
        let me = std::process::id();
        for ns in &state.namespaces {
            let pids = Command::new("ip")
                .args(["netns", "pids", ns.name()])
                .output();
            if let Ok(out) = pids {
                for pid in String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .filter(|p| *p != me)
                {
                    let _ = send_signal(pid, libc::SIGKILL);
                }
            }
        }
        for ns in state.namespaces.iter().rev() {
            if let Err(e) = run_checked(Command::new("ip").args(["netns", "del", ns.name()])) {
                eprintln!("lab {}: {e}", self.id);
            }
        }
        if std::env::var("FAILOVER_LAB_KEEP").is_ok_and(|v| v == "1") {
            eprintln!(
                "lab {} ({}): kept {}",
                self.id,
                self.test_name,
                self.dir.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("lab {}: remove {}: {e}", self.id, self.dir.display());
        }
    }
}

/// Turns UDP segmentation offload off on `dev` in `ns`: UDP GSO packets sent through it are
/// split into datagrams on the way out.
fn udp_gso_off(lab: &Lab, ns: &Ns, dev: &str) -> io::Result<()> {
    lab.exec(ns, &["ethtool", "-K", dev, "tx-udp-segmentation", "off"])
        .map(drop)
        .map_err(|e| {
            io::Error::other(format!(
                "ethtool -K {dev} tx-udp-segmentation off: {e} (the wide-area lab needs \
                 ethtool: apt-get install ethtool, or scripts/setup)"
            ))
        })
}

/// Starts `fo-relay` in `ns` with a pipe pair per datacenter set to `profile`, and waits for
/// its control socket.
fn start_relay(lab: &Lab, ns: Ns, n_dcs: usize, profile: Profile) -> io::Result<Relay> {
    let control = lab.dir().join("relay.sock");
    let mut args = vec![
        bin_path("fo-relay").display().to_string(),
        "--client-if".into(),
        "c0".into(),
        "--wan-if".into(),
        "w0".into(),
        "--control".into(),
        control.display().to_string(),
        "--seed".into(),
        // a different random stream per run, printed in the relay's command line
        format!(
            "{}",
            splitmix64(u64::from(std::process::id()) ^ RUN_COUNTER.load(Ordering::Relaxed))
        ),
    ];
    for i in 1..=n_dcs {
        args.push("--dc".into());
        args.push(format!("dc{i}={}={}", dc_underlay_ip(i), profile.spec(i)));
    }
    let daemon = lab.spawn(&ns, "fo-relay", &args)?;
    wait_until(READY_TIMEOUT, "the relay's control socket", || {
        control.exists() || !daemon.is_running()
    })?;
    if !daemon.is_running() {
        return Err(io::Error::other(format!(
            "fo-relay exited: {}",
            daemon.read_stderr()
        )));
    }
    Ok(Relay {
        ns,
        daemon,
        control,
        profile,
    })
}

/// The client's underlay address (`client` ns, `up0`).
pub const CLIENT_UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The server's IPv4 address (`server` ns, `eth0`).
pub const SERVER_IP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);
/// The server's IPv6 address (`server` ns, `eth0`).
pub const SERVER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 0x100);
/// Most datacenters a [`Topology`] can have (addresses are `.(10+i)`).
pub const MAX_DCS: usize = 89;

/// Datacenter `i`'s (1-based) underlay address: `198.18.0.(10+i)` (dc1 → 198.18.0.11).
pub fn dc_underlay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last_octet(i))
}

/// Datacenter `i`'s inside IPv4 address: `198.19.0.(10+i)`.
pub fn dc_inside_ip4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, last_octet(i))
}

/// Datacenter `i`'s inside IPv6 address: `fd00:19::(10+i)`, written in decimal digits as hex
/// (dc1 → `fd00:19::11`).
pub fn dc_inside_ip6(i: usize) -> Ipv6Addr {
    let digits = 10 + i.min(MAX_DCS);
    let group = digits.to_string().chars().fold(0u16, |acc, c| {
        acc.wrapping_mul(16)
            .wrapping_add(c.to_digit(10).unwrap_or(0) as u16)
    });
    Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, group)
}

fn last_octet(i: usize) -> u8 {
    u8::try_from(10 + i.min(MAX_DCS)).unwrap_or(u8::MAX)
}

/// The standard lab of DESIGN.md: `client` and `dc1..dcN` on the underlay bridge in `wan`;
/// every dc and the `server` on the inside bridge in `core`. Forwarding is on in every dc. No
/// routes to the VPN ranges are added: tests add them.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Client namespace: `up0` = 198.18.0.1/24.
    pub client: Ns,
    /// Server namespace: `eth0` = 198.19.0.100/24, fd00:19::100/64.
    pub server: Ns,
    /// Underlay namespace holding bridge `brwan`.
    pub wan: Ns,
    /// Inside namespace holding bridge `brcore`.
    pub core: Ns,
    /// Datacenter namespaces; `dcs[0]` is dc1: `wan0` = 198.18.0.(10+i)/24,
    /// `in0` = 198.19.0.(10+i)/24 and fd00:19::(10+i)/64.
    pub dcs: Vec<Ns>,
    /// The wide-area impairment relay between the client and the underlay, when the lab was
    /// built with a [`Profile`] other than `none`.
    pub relay: Option<Relay>,
}

/// The lab's running impairment relay (`fo-relay`): the client's `up0` is cabled to its
/// namespace instead of to the underlay bridge, and every datagram between the client and a
/// datacenter passes one of its pipes (see [`crate::impair`]).
#[derive(Debug, Clone)]
pub struct Relay {
    /// the relay's namespace (`c0` towards the client, `w0` towards `brwan`)
    pub ns: Ns,
    /// the relay process
    pub daemon: Daemon,
    /// its control socket
    pub control: PathBuf,
    /// the profile it started with
    pub profile: Profile,
}

impl Relay {
    /// Sends one control command and returns the answer line.
    pub fn command(&self, line: &str) -> io::Result<String> {
        use std::io::{BufRead as _, Write as _};
        let mut conn = std::os::unix::net::UnixStream::connect(&self.control)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(line.as_bytes())?;
        conn.write_all(b"\n")?;
        let mut answer = String::new();
        io::BufReader::new(conn).read_line(&mut answer)?;
        Ok(answer.trim_end().to_owned())
    }

    /// Changes datacenter `i`'s pipes (`dir`: `None` both, else `"up"` or `"down"`) from now
    /// on, e.g. `set(1, None, "delay=107.5ms")`.
    pub fn set(&self, i: usize, dir: Option<&str>, spec: &str) -> io::Result<()> {
        let target = match dir {
            Some(d) => format!("dc{i}:{d}"),
            None => format!("dc{i}"),
        };
        let answer = self.command(&format!("set {target} {spec}"))?;
        if answer == "ok" {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "relay: set {target} {spec}: {answer}"
            )))
        }
    }

    /// Puts datacenter `i` back to its profile.
    pub fn restore(&self, i: usize) -> io::Result<()> {
        self.set(i, None, &self.profile.spec(i))
    }

    /// The relay's counters (JSON: `pipes` by `dcN:up`/`dcN:down`, `relay`, `cpu_ms`).
    pub fn stats(&self) -> io::Result<serde_json::Value> {
        let answer = self.command("stats")?;
        serde_json::from_str(&answer)
            .map_err(|e| io::Error::other(format!("relay stats {answer:?}: {e}")))
    }
}

impl Topology {
    /// See [`CLIENT_UNDERLAY_IP`].
    pub const CLIENT_UNDERLAY_IP: Ipv4Addr = CLIENT_UNDERLAY_IP;
    /// See [`SERVER_IP4`].
    pub const SERVER_IP4: Ipv4Addr = SERVER_IP4;
    /// See [`SERVER_IP6`].
    pub const SERVER_IP6: Ipv6Addr = SERVER_IP6;

    /// Builds the topology with `n_dcs` datacenters (1..=89) and checks it: the client reaches
    /// dc1's underlay address; the server reaches dc1's inside addresses over IPv4 and IPv6.
    /// With the profile named by `FO_PROFILE` (none if unset): any scenario runs at wide-area
    /// distances with `FO_PROFILE=seed` in its environment.
    pub fn build(lab: &mut Lab, n_dcs: usize) -> io::Result<Topology> {
        let profile = Profile::from_env()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("FO_PROFILE: {e}")))?;
        Self::build_with(lab, n_dcs, profile)
    }

    /// [`Topology::build`] with an explicit wide-area profile: anything but
    /// [`Profile::None`] cables the client through an impairment relay ([`Relay`]).
    pub fn build_with(lab: &mut Lab, n_dcs: usize, profile: Profile) -> io::Result<Topology> {
        if !(1..=MAX_DCS).contains(&n_dcs) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("n_dcs must be 1..={MAX_DCS}, got {n_dcs}"),
            ));
        }
        let wan = lab.add_ns("wan")?;
        lab.bridge(&wan, "brwan")?;
        let core = lab.add_ns("core")?;
        lab.bridge(&core, "brcore")?;

        let client = lab.add_ns("client")?;
        let relay_ns = if profile == Profile::None {
            lab.veth_to_bridge(&client, "up0", &wan, "brwan")?;
            None
        } else {
            // a silent layer-2 hop: no addresses, no IPv6, nothing of its own on the wire
            let ns = lab.add_ns("relay")?;
            lab.sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
            lab.sysctl(&ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
            lab.veth(&client, "up0", &ns, "c0")?;
            lab.veth_to_bridge(&ns, "w0", &wan, "brwan")?;
            Some(ns)
        };
        lab.addr(&client, "up0", &format!("{CLIENT_UNDERLAY_IP}/24"))?;

        let server = lab.add_ns("server")?;
        lab.veth_to_bridge(&server, "eth0", &core, "brcore")?;
        lab.addr(&server, "eth0", &format!("{SERVER_IP4}/24"))?;
        lab.addr(&server, "eth0", &format!("{SERVER_IP6}/64"))?;

        let mut dcs = Vec::with_capacity(n_dcs);
        for i in 1..=n_dcs {
            let dc = lab.add_ns(&format!("dc{i}"))?;
            lab.veth_to_bridge(&dc, "wan0", &wan, "brwan")?;
            lab.addr(&dc, "wan0", &format!("{}/24", dc_underlay_ip(i)))?;
            lab.veth_to_bridge(&dc, "in0", &core, "brcore")?;
            lab.addr(&dc, "in0", &format!("{}/24", dc_inside_ip4(i)))?;
            lab.addr(&dc, "in0", &format!("{}/64", dc_inside_ip6(i)))?;
            lab.sysctl(&dc, "net.ipv4.ip_forward", "1")?;
            lab.sysctl(&dc, "net.ipv6.conf.all.forwarding", "1")?;
            dcs.push(dc);
        }

        let relay = match relay_ns {
            Some(ns) => {
                // The relay impairs datagrams, as a wide-area path does, not the 64 KiB UDP GSO
                // super-packets the daemons send (a veth passes them whole): the uplinks that
                // feed it segment in software.
                udp_gso_off(lab, &client, "up0")?;
                for dc in &dcs {
                    udp_gso_off(lab, dc, "wan0")?;
                }
                Some(start_relay(lab, ns, n_dcs, profile)?)
            }
            None => None,
        };
        let check = Duration::from_secs(5);
        lab.wait_reachable(&client, IpAddr::V4(dc_underlay_ip(1)), check)?;
        lab.wait_reachable(&server, IpAddr::V4(dc_inside_ip4(1)), check)?;
        lab.wait_reachable(&server, IpAddr::V6(dc_inside_ip6(1)), check)?;
        Ok(Topology {
            client,
            server,
            wan,
            core,
            dcs,
            relay,
        })
    }

    /// The relay, or an error saying the lab was built without one.
    pub fn relay(&self) -> io::Result<&Relay> {
        self.relay.as_ref().ok_or_else(|| {
            io::Error::other("this lab has no impairment relay: build it with a profile")
        })
    }

    /// Datacenter `i` (1-based), if it exists.
    pub fn dc(&self, i: usize) -> Option<&Ns> {
        i.checked_sub(1).and_then(|k| self.dcs.get(k))
    }

    /// See [`dc_underlay_ip`].
    pub fn dc_underlay_ip(i: usize) -> Ipv4Addr {
        dc_underlay_ip(i)
    }

    /// See [`dc_inside_ip4`].
    pub fn dc_inside_ip4(i: usize) -> Ipv4Addr {
        dc_inside_ip4(i)
    }

    /// See [`dc_inside_ip6`].
    pub fn dc_inside_ip6(i: usize) -> Ipv6Addr {
        dc_inside_ip6(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan() {
        assert_eq!(dc_underlay_ip(1), Ipv4Addr::new(198, 18, 0, 11));
        assert_eq!(dc_inside_ip4(3), Ipv4Addr::new(198, 19, 0, 13));
        assert_eq!(dc_inside_ip6(1), "fd00:19::11".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            dc_inside_ip6(12),
            "fd00:19::22".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(SERVER_IP6, "fd00:19::100".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn wait_until_times_out_naming_what() {
        let mut n = 0;
        let err = wait_until(Duration::from_millis(30), "the thing", || {
            n += 1;
            false
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("the thing"));
        assert!(n >= 2);
        wait_until(Duration::ZERO, "now", || true).unwrap();
    }
}
