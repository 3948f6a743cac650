//! The emulator as a process (started from the built binary, stopped by its pid), its
//! control endpoints, and plan inputs for the tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgelb_cloud::ens::{
    ClientConfig, Credentials, EnsClient, EnsProfile, EnsProvider, RetryPolicy,
};
use edgelb_cloud::health::default_check;
use edgelb_cloud::model::{Desired, ListenerSpec};
use edgelb_cloud::plan::{plan, PlanInput, PoolNode, ServicePort, TrafficPolicy};
use serde_json::Value;

pub const KEY_ID: &str = "LTAI-test-account";
pub const SECRET: &str = "emulated-secret-value";

pub struct Emulator {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Emulator {
    /// Starts the emulator with extra arguments; waits for its `listening on` line.
    pub fn start(extra: &[&str]) -> Emulator {
        let dir = std::env::temp_dir().join(format!(
            "elb-ens-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgelb-ens-emulator"))
            .args(["--access-key-id", KEY_ID, "--access-key-secret-file"])
            .arg(&secret)
            .arg("--leak-report")
            .arg(dir.join("leaks.json"))
            .args(["--create-ms", "200", "--transition-ms", "50"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting edgelb-ens-emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Emulator {
            child: Some(child),
            addr,
            dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for the emulated account with fast retries and small pages.
    pub fn client(&self) -> EnsClient {
        self.client_with(|_| {})
    }

    pub fn client_with(&self, f: impl FnOnce(&mut ClientConfig)) -> EnsClient {
        let mut c = ClientConfig {
            endpoint: self.endpoint(),
            extra_roots: Vec::new(),
            timeout: Duration::from_secs(3),
            retry: RetryPolicy {
                max_attempts: 8,
                base: Duration::from_millis(20),
                max: Duration::from_millis(500),
            },
            rate_per_sec: 200.0,
            burst: 50,
            page_size: 2,
        };
        f(&mut c);
        EnsClient::new(c, Credentials::new(KEY_ID, SECRET)).unwrap()
    }

    pub fn provider(&self) -> EnsProvider {
        EnsProvider::new(self.client())
    }

    /// A control call (`/control/...`); the JSON answer.
    pub fn control(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: emu\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, json) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{out}"
        );
        serde_json::from_str(json).unwrap()
    }

    pub fn inventory(&self) -> Value {
        self.control("GET", "/control/inventory", &Value::Null)
    }

    pub fn register(&self, instances: &[(&str, &str)]) {
        let list: Vec<Value> = instances
            .iter()
            .map(|(id, ip)| serde_json::json!({"InstanceId": id, "Ip": ip}))
            .collect();
        self.control("POST", "/control/instances", &Value::Array(list));
    }

    /// SIGTERM by pid, wait, and the leak report it wrote.
    pub fn stop(mut self) -> Value {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "emulator exited with {status}");
        let report = std::fs::read(self.dir.join("leaks.json")).unwrap();
        serde_json::from_slice(&report).unwrap()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn pool_annotations() -> BTreeMap<String, String> {
    [
        ("alibabacloud.com/ens-network-id", "n-emu1"),
        ("alibabacloud.com/ens-region-id", "cn-chengdu-telecom"),
        ("alibabacloud.com/ens-vswitch-id", "vsw-emu1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A Service `default/<name>` with TCP 80 -> 30080 and UDP 53 -> 30053 on pool `np-cd`.
pub fn input(name: &str, nodes: &[(&str, &str)]) -> PlanInput {
    PlanInput {
        namespace: "default".into(),
        service: name.into(),
        pool: "np-cd".into(),
        cluster: "c-emu".into(),
        ports: vec![
            ServicePort {
                name: "http".into(),
                port: 80,
                protocol: "TCP".into(),
                node_port: Some(30080),
            },
            ServicePort {
                name: "dns".into(),
                port: 53,
                protocol: "UDP".into(),
                node_port: Some(30053),
            },
        ],
        traffic_policy: TrafficPolicy::Cluster,
        nodes: nodes
            .iter()
            .map(|(node, instance)| PoolNode {
                name: node.to_string(),
                provider_id: Some(format!("cn-chengdu-telecom.{instance}")),
                ready: true,
                ready_endpoints: 1,
            })
            .collect(),
        service_annotations: BTreeMap::new(),
        pool_annotations: pool_annotations(),
        pool_service_annotations: BTreeMap::new(),
        sharing_services: vec![],
    }
}

pub fn desired(i: &PlanInput) -> Desired {
    plan(&EnsProfile, i).unwrap()
}

/// A listener forwarding to `backend_port` with ENS's default health check (a user's own).
pub fn listener(backend_port: u16) -> ListenerSpec {
    ListenerSpec {
        backend_port,
        health: default_check(&EnsProfile),
    }
}

pub fn count(v: &Value, key: &str) -> usize {
    v[key].as_array().map_or(0, Vec::len)
}

pub mod cluster;
