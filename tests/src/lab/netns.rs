//! Named network namespaces, veth links, a bridged LAN and processes inside namespaces.
//!
//! Tests may use `ip` to build and inspect the lab (the product never does). Every object
//! removes itself on drop, also while a panicking test unwinds; namespaces left by a test
//! process that was killed are swept the next time a lab starts.
use anyhow::{bail, Context};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();
const PREFIX: &str = "elb";

/// Runs a command on the host and fails with its stderr when it exits non-zero.
pub fn host(args: &[&str]) -> anyhow::Result<String> {
    let (program, rest) = args.split_first().context("empty command")?;
    let out = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {args:?}"))?;
    checked(args, out)
}

fn checked(args: &[&str], out: Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "{:?} exited with {}: {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Moves the calling thread into a new, empty network namespace with `lo` up.
///
/// For tests that run speaker code in-process: its sockets (a BGP peer on loopback, an
/// interface scan) then never touch the host's network. Only this thread moves, and what it
/// starts afterwards (threads, processes); the namespace goes away with them.
pub fn isolate_this_thread() -> anyhow::Result<()> {
    let ns_of_thread = || std::fs::read_link("/proc/thread-self/ns/net");
    let before = ns_of_thread().context("reading this thread's network namespace")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("unshare(CLONE_NEWNET): the test needs root (CAP_SYS_ADMIN)")?;
    if ns_of_thread().context("reading this thread's network namespace")? == before {
        bail!("unshare(CLONE_NEWNET) left the thread in {before:?}");
    }
    host(&["ip", "link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes namespaces named `elb<pid>-...` whose test process no longer exists.
fn sweep_stale() {
    let Ok(list) = host(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            kill_all_in(name);
            let _ = host(&["ip", "netns", "del", name]);
        }
    }
}

fn kill_all_in(ns: &str) {
    if let Ok(pids) = host(&["ip", "netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = host(&["kill", "-9", pid]);
        }
    }
}

/// A network namespace owned by the test; deleted, with every process in it, on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `elb<pid>-<tag><n>` with `lo` up. `tag` should be short (a few letters).
    pub fn new(tag: &str) -> anyhow::Result<Netns> {
        SWEEP.call_once(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{tag}{n}", std::process::id());
        host(&["ip", "netns", "add", &name]).with_context(|| {
            format!("creating network namespace {name} (the lab needs root; set EDGELB_SKIP_NETNS=1 to skip on purpose)")
        })?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs a command inside the namespace; fails with stderr on a non-zero exit.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let (program, rest) = args.split_first().context("empty command")?;
        let out = self
            .command(program)
            .args(rest)
            .output()
            .with_context(|| format!("running {args:?} in {}", self.name))?;
        checked(args, out).with_context(|| format!("in namespace {}", self.name))
    }

    /// Runs a command inside the namespace and returns its output whatever the exit code.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        let (program, rest) = args.split_first().context("empty command")?;
        self.command(program)
            .args(rest)
            .output()
            .with_context(|| format!("running {args:?} in {}", self.name))
    }

    /// `ip -n <ns> ARGS...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        host(&full)
    }

    /// Sets a sysctl inside the namespace, e.g. `("net.ipv4.conf.all.arp_ignore", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Adds an address (`192.0.2.1/24`) to an interface and sets it up.
    pub fn addr(&self, dev: &str, cidr: &str) -> anyhow::Result<()> {
        self.ip(&["addr", "add", cidr, "dev", dev, "nodad"])
            .or_else(|_| self.ip(&["addr", "add", cidr, "dev", dev]))?;
        self.ip(&["link", "set", dev, "up"]).map(|_| ())
    }

    /// Starts a long-running process in the namespace; it is killed when the guard drops.
    /// stdout and stderr go to `log` when given (a file path), else are discarded.
    pub fn spawn(&self, args: &[&str], log: Option<&std::path::Path>) -> anyhow::Result<NsProcess> {
        let (program, rest) = args.split_first().context("empty command")?;
        let mut cmd = self.command(program);
        cmd.args(rest);
        match log {
            Some(path) => {
                let f = std::fs::File::create(path)
                    .with_context(|| format!("creating log {}", path.display()))?;
                let f2 = f.try_clone()?;
                cmd.stdout(f).stderr(f2);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {args:?} in {}", self.name))?;
        Ok(NsProcess {
            child: Some(child),
            what: format!("{args:?}"),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = host(&["ip", "netns", "del", &self.name]);
    }
}

/// Connects `a`/`a_if` to `b`/`b_if` with a veth pair; both ends are set up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> anyhow::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A LAN: a bridge `br0` inside its own namespace, to which hosts attach by veth.
#[derive(Debug)]
pub struct Lan {
    switch: Netns,
    ports: u32,
}

impl Lan {
    pub fn new() -> anyhow::Result<Lan> {
        let switch = Netns::new("sw")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        // No STP and no forwarding delay: ports forward the moment they are up.
        switch.ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(Lan { switch, ports: 0 })
    }

    /// The namespace that holds the bridge (for captures on `br0` or a port).
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// Attaches `ns` by a veth named `dev` on its side; returns the bridge port's name so a
    /// test can cut the link (`ip link set PORT down`).
    pub fn attach(&mut self, ns: &Netns, dev: &str) -> anyhow::Result<String> {
        let port = format!("p{}", self.ports);
        self.ports += 1;
        veth(ns, dev, &self.switch, &port)?;
        self.switch.ip(&["link", "set", &port, "master", "br0"])?;
        Ok(port)
    }

    /// A new namespace (`tag`) on this LAN: `eth0` with `cidr` (e.g. `192.0.2.1/24`), up.
    pub fn join(&mut self, tag: &str, cidr: &str) -> anyhow::Result<Netns> {
        let ns = Netns::new(tag)?;
        self.attach(&ns, "eth0")?;
        ns.addr("eth0", cidr)?;
        Ok(ns)
    }
}

/// A process running inside a namespace; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct NsProcess {
    child: Option<Child>,
    what: String,
}

impl NsProcess {
    /// The pid of `ip netns exec`, which execs the program: the same process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        let pid = self.pid().context("process already reaped")?;
        host(&["kill", &format!("-{sig}"), &pid.to_string()]).map(|_| ())
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its exit status.
    pub fn wait_exit(
        &mut self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let what = self.what.clone();
        let child = self.child.as_mut().context("process already reaped")?;
        super::wait_until(
            &format!("{what} to exit"),
            timeout,
            std::time::Duration::from_millis(10),
            || Ok(child.try_wait()?),
        )
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
