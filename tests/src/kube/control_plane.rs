//! etcd + kube-apiserver + kube-controller-manager on free loopback ports, in a temp dir.
//!
//! Processes are started by one long-lived *keeper* thread through `setpriv --pdeathsig KILL`:
//! the kernel kills them when that thread exits (PR_SET_PDEATHSIG follows the thread that
//! forked, not the process), so a test binary that dies, panics or is killed takes its
//! control plane with it. For the shared cluster the keeper lives as long as the process.
//! An owned [`Cluster`] kills its processes by pid on drop; temp dirs of dead test
//! processes are swept at the next start.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long the control plane may take to become ready before start fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
const DIR_PREFIX: &str = "edgelb-kube-";

/// The directory holding `etcd`, `kube-apiserver`, `kube-controller-manager` (and `helm` when
/// it built): `$EDGELB_K8S_BIN`, else what `.ci/k8s bin` prints (the pinned version's cache).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("EDGELB_K8S_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = super::workspace().join(".ci/k8s");
    let out = Command::new("bash")
        .arg(&script)
        .arg("bin")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} bin", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} bin failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The control-plane binaries, or why they are not there.
pub fn binaries() -> anyhow::Result<PathBuf> {
    let dir = bin_dir()?;
    for b in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        let p = dir.join(b);
        if !p.exists() {
            bail!(
                "{} is missing: build the control plane with `bash .ci/k8s build` \
                 (or set EDGELB_K8S_BIN to a directory holding etcd, kube-apiserver and \
                 kube-controller-manager)",
                p.display()
            );
        }
    }
    Ok(dir)
}

/// Starts processes from one thread that outlives them (see the module docs).
struct Keeper {
    tx: Mutex<mpsc::Sender<(Command, mpsc::Sender<std::io::Result<Child>>)>>,
}

impl Keeper {
    fn new() -> Keeper {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<std::io::Result<Child>>)>();
        std::thread::Builder::new()
            .name("kube-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the keeper thread");
        Keeper { tx: Mutex::new(tx) }
    }

    /// Spawns `program args` with `setpriv --pdeathsig KILL`, output to `log`.
    fn spawn(&self, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
        let f =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f);
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx
            .lock()
            .map_err(|_| anyhow::anyhow!("keeper lock poisoned"))?
            .send((cmd, reply_tx))
            .context("keeper thread gone")?;
        reply_rx
            .recv()
            .context("keeper thread gone")?
            .with_context(|| format!("starting {}", program.display()))
    }
}

/// One running control plane. See the module docs of [`crate::kube`] for how tests use it.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    api: SocketAddr,
    admin_token: String,
    processes: Mutex<Vec<(String, Child)>>,
    keeper: Keeper,
    pods: Option<super::pod_net::PodNetwork>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("api", &self.api)
            .finish()
    }
}

/// First port [`free_port`] tries: below the kernel's ephemeral range (32768-60999 by
/// default), so no outgoing connection's source port and no other `bind(:0)` can take a port
/// between our pick and the server's own bind (a fresh-clone CI run lost the API server's
/// port that way: "bind: address already in use").
const PORTS_FROM: u16 = 20_000;
/// How many ports above [`PORTS_FROM`] are tried.
const PORTS: u16 = 12_000;
static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// A loopback port nothing listens on, not handed out before by this process. Each test
/// binary starts at its own offset (from its pid) so consecutive binaries do not reuse the
/// ports the one before may still hold while it shuts down.
fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::Ordering::Relaxed;
    let base = (std::process::id() % u32::from(PORTS)) as u16;
    for _ in 0..PORTS {
        let n = NEXT_PORT.fetch_add(1, Relaxed);
        let port = PORTS_FROM + (base.wrapping_add(n.wrapping_mul(7)) % PORTS);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!(
        "no free loopback port in {PORTS_FROM}..{}",
        PORTS_FROM + PORTS
    )
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running openssl {args:?} (is openssl installed?)"))?;
    if !out.status.success() {
        bail!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes `edgelb-kube-<pid>-*` dirs whose test process is gone.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Cluster {
    /// The test binary's one cluster, started (and deployed: CRDs, manifests, the gossip key
    /// Secret) by the first caller. `Ok(None)` when the binaries are missing and `CI` is not
    /// `true`: the test should return, the reason is printed. With `CI=true` that is an error.
    pub fn shared(test: &str) -> anyhow::Result<Option<&'static Cluster>> {
        if let Err(e) = binaries() {
            if std::env::var("CI").as_deref() == Ok("true") {
                return Err(e.context(format!("{test}: CI=true and no control plane")));
            }
            eprintln!("SKIPPED {test}: no Kubernetes control plane: {e:#}");
            return Ok(None);
        }
        let c = SHARED.get_or_init(|| {
            Cluster::start()
                .and_then(|c| {
                    super::deploy::deploy_shipped(&c)?;
                    Ok(c)
                })
                .map_err(|e| format!("{e:#}"))
        });
        match c {
            Ok(c) => {
                super::record_cluster_test(test);
                Ok(Some(c))
            }
            Err(e) => bail!("{test}: the shared cluster did not start: {e}"),
        }
    }

    /// Stops the shared cluster (by pid) and removes its dir, for a binary with a `main` of its
    /// own (a bench) to call at its end. A static is never dropped: without this the dir stays
    /// in /tmp until the next binary's [`Cluster::start`] sweeps it (the processes die with
    /// the keeper thread either way, by their parent-death signal). Test binaries have no
    /// such end and rely on the sweep.
    pub fn stop_shared() {
        if let Some(Ok(c)) = SHARED.get() {
            c.stop();
        }
    }

    /// Starts a control plane of its own (nothing applied), ready when this returns or an
    /// error within [`START_TIMEOUT`]. Stopped, by pid, on drop.
    pub fn start() -> anyhow::Result<Cluster> {
        sweep_stale_dirs();
        let bin = binaries()?;
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let api_port = free_port()?;
        let mut cluster = Cluster {
            dir,
            bin,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            admin_token: random_hex(16)?,
            processes: Mutex::new(Vec::new()),
            keeper: Keeper::new(),
            pods: None,
        };
        let t0 = Instant::now();
        cluster
            .boot()
            .with_context(|| format!("starting the control plane in {}", cluster.dir.display()))?;
        eprintln!(
            "kube: control plane up at https://{} in {:?} ({})",
            cluster.api,
            t0.elapsed(),
            cluster.dir.display()
        );
        Ok(cluster)
    }

    fn boot(&mut self) -> anyhow::Result<()> {
        let d = self.dir.clone();
        openssl(&d, &["genrsa", "-out", "sa.key", "2048"])?;
        openssl(&d, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
        // A CA and a serving certificate it signs (rustls refuses a self-signed end entity).
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=edgelb-test-ca"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
        openssl(&d, &ca)?;
        let mut csr = vec!["req", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "serving.key", "-out", "serving.csr"]);
        openssl(&d, &csr)?;
        std::fs::write(
            d.join("serving.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            &d,
            &[
                "x509",
                "-req",
                "-in",
                "serving.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "serving.ext",
                "-out",
                "serving.crt",
            ],
        )?;
        std::fs::write(
            d.join("tokens.csv"),
            format!("{},admin,admin,system:masters\n", self.admin_token),
        )?;
        // Every request's metadata, so a test can see what a speaker really asked for.
        std::fs::write(
            d.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n\
             rules:\n- level: Metadata\n",
        )?;
        // The API server reaches pods (the proxy subresources) through this proxy.
        let pods = super::pod_net::PodNetwork::start(&d.join("egress.sock"))?;
        std::fs::write(
            d.join("egress.yaml"),
            super::pod_net::egress_config(pods.socket()),
        )?;
        self.pods = Some(pods);
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let s = |x: &str| x.to_string();
        let p = |x: &str| d.join(x).to_string_lossy().into_owned();
        self.run(
            "etcd",
            &[
                s("--data-dir"),
                p("etcd"),
                // The data dies with the test; fsync only slows a loaded machine down.
                s("--unsafe-no-fsync"),
                s("--listen-client-urls"),
                etcd_url.clone(),
                s("--advertise-client-urls"),
                etcd_url.clone(),
                s("--listen-peer-urls"),
                peer_url.clone(),
                s("--initial-advertise-peer-urls"),
                peer_url.clone(),
                s("--initial-cluster"),
                format!("default={peer_url}"),
                s("--log-level"),
                s("warn"),
            ],
        )?;
        self.run(
            "kube-apiserver",
            &[
                s("--etcd-servers"),
                etcd_url,
                s("--bind-address"),
                s("127.0.0.1"),
                s("--advertise-address"),
                s("127.0.0.1"),
                // A loopback advertise address is refused by the endpoint reconciler.
                s("--endpoint-reconciler-type=none"),
                s("--secure-port"),
                self.api.port().to_string(),
                s("--tls-cert-file"),
                p("serving.crt"),
                s("--tls-private-key-file"),
                p("serving.key"),
                s("--token-auth-file"),
                p("tokens.csv"),
                s("--authorization-mode"),
                s("RBAC"),
                s("--service-account-issuer"),
                s("https://kubernetes.default.svc"),
                s("--service-account-key-file"),
                p("sa.pub"),
                s("--service-account-signing-key-file"),
                p("sa.key"),
                s("--service-cluster-ip-range"),
                s("10.96.0.0/16"),
                s("--enable-priority-and-fairness=false"),
                s("--allow-privileged=true"),
                s("--audit-policy-file"),
                p("audit-policy.yaml"),
                s("--audit-log-path"),
                p("audit.log"),
                s("--egress-selector-config-file"),
                p("egress.yaml"),
            ],
        )?;
        self.wait_ready()?;
        self.write_kubeconfig(
            &self.admin_kubeconfig(),
            self.api,
            &self.admin_token.clone(),
        )?;
        self.run(
            "kube-controller-manager",
            &[
                s("--kubeconfig"),
                p("admin.kubeconfig"),
                // Namespaces are emptied and deleted, ownerReferences collected; nothing else.
                s("--controllers"),
                s("namespace,garbagecollector"),
                s("--leader-elect=false"),
                s("--secure-port=0"),
            ],
        )?;
        Ok(())
    }

    fn run(&self, name: &str, args: &[String]) -> anyhow::Result<()> {
        let child = self.keeper.spawn(
            &self.bin.join(name),
            args,
            &self.dir.join(format!("{name}.log")),
        )?;
        self.processes
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))?
            .push((name.to_string(), child));
        Ok(())
    }

    /// Fails with the exited process's log tail, if one exited.
    fn check_alive(&self) -> anyhow::Result<()> {
        let mut procs = self
            .processes
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
        for (name, child) in procs.iter_mut() {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                bail!(
                    "{name} exited with {status}; last lines of its log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let out = Command::new("curl")
                .args(["-sf", "-m", "2", "--cacert"])
                .arg(self.ca_file())
                .arg("-H")
                .arg(format!("Authorization: Bearer {}", self.admin_token))
                .arg(format!("https://{}/readyz", self.api))
                .stdin(Stdio::null())
                .output()
                .context("running curl (is curl installed?)")?;
            if out.status.success() {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "kube-apiserver not ready within {START_TIMEOUT:?}; see {}",
                    self.dir.join("kube-apiserver.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The temp dir (logs of etcd, kube-apiserver, kube-controller-manager; kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the control-plane binaries (and `helm` when it was built).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The API server's audit log so far (one JSON object per request and stage, level
    /// Metadata: user, verb, objectRef, responseStatus).
    pub fn audit_events(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let path = self.dir.join("audit.log");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("audit line {l}")))
            .collect()
    }

    /// Makes `ip` reachable for the API server's proxy subresources (pod proxy), inside
    /// network namespace `netns`, until the route is dropped (see [`super::pod_net`]).
    pub fn route_pod(&self, ip: std::net::IpAddr, netns: &str) -> anyhow::Result<super::PodRoute> {
        let pods = self
            .pods
            .as_ref()
            .context("the control plane has no pod network")?;
        Ok(pods.route(ip, netns))
    }

    /// The API server's address on the host's loopback.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// The CA that signed the API server's certificate (IP SAN 127.0.0.1).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A kubeconfig with the admin token (`system:masters`): for test setup only.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A new admin client. Build one per runtime: kube clients keep their connections on
    /// the runtime that made them.
    pub async fn admin_client(&self) -> anyhow::Result<kube::Client> {
        client_from(&self.admin_kubeconfig()).await
    }

    /// Writes a kubeconfig reaching `server` (an address whose TLS name is 127.0.0.1: the
    /// API server itself or a [`super::Forwarder`]) with `token` and nothing else.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server: SocketAddr,
        token: &str,
    ) -> anyhow::Result<()> {
        self.write_kubeconfig_for(path, server, &format!("token: \"{token}\""))
    }

    /// Writes a kubeconfig for `server` whose user reads its token from `token_file`, as a
    /// pod's in-cluster config does: the client reads the file again (kube-rs: at least once
    /// a minute), so a token rotated in the file is taken up without a restart.
    pub fn write_kubeconfig_with_token_file(
        &self,
        path: &Path,
        server: SocketAddr,
        token_file: &Path,
    ) -> anyhow::Result<()> {
        let user = format!("tokenFile: \"{}\"", token_file.display());
        self.write_kubeconfig_for(path, server, &user)
    }

    /// A kubeconfig for `server` (this cluster's CA) whose one user is `user` (one YAML line).
    fn write_kubeconfig_for(
        &self,
        path: &Path,
        server: SocketAddr,
        user: &str,
    ) -> anyhow::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: edgelb\n  cluster:\n    \
             server: \"https://{server}\"\n    certificate-authority: \"{}\"\n\
             users:\n- name: user\n  user:\n    {user}\n\
             contexts:\n- name: edgelb\n  context: {{cluster: edgelb, user: user}}\n\
             current-context: edgelb\n",
            self.ca_file().display()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Stops every process this cluster started (by pid) and removes its dir.
    fn stop(&self) {
        if let Ok(mut procs) = self.processes.lock() {
            // The controller manager first, etcd last: no one logs errors about the others.
            while let Some((_, mut child)) = procs.pop() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if !std::thread::panicking() && std::env::var_os("EDGELB_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading kubeconfig")?;
    kube::Client::try_from(config).context("building the client")
}
