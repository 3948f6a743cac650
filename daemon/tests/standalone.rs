//! End to end, standalone: the real `edgelb-speaker` binary reads a YAML file, allocates,
//! writes its local state and log, and follows edits of the file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

struct Speaker(Child);

impl Drop for Speaker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cluster_yaml(services: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "apiVersion: edgelb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: lan, namespace: edgelb-system}\n\
         spec: {addresses: [\"192.0.2.10-192.0.2.11\"]}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n",
    );
    for (name, extra) in services {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default{extra}}}\n\
             spec: {{type: LoadBalancer, loadBalancerClass: edgelb.io/speaker, ports: [{{port: 80}}]}}\n"
        ));
    }
    s
}

fn read_state(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn wait_state(path: &Path, what: &str, ok: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(v) = read_state(path) {
            if ok(&v) {
                eprintln!("{what}: after {:?}", start.elapsed());
                return Ok(v);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what}: not reached in 30 s; state: {:?}", read_state(path))
}

fn ips(v: &Value, svc: &str) -> Vec<String> {
    v["services"][svc]["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn file_drives_allocation_and_edits_are_followed() -> anyhow::Result<()> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("edgelb-standalone-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("cluster.yaml");
    let state = dir.join("state.json");
    let log = dir.join("speaker.log");
    std::fs::write(&file, cluster_yaml(&[("web", ""), ("api", "")]))?;

    let child = Command::new(env!("CARGO_BIN_EXE_edgelb-speaker"))
        .args(["run", "--node", "node-a", "--file"])
        .arg(&file)
        .arg("--state")
        .arg(&state)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(std::fs::File::create(&log)?))
        .stderr(Stdio::null())
        .spawn()
        .context("starting edgelb-speaker")?;
    let _speaker = Speaker(child);

    // Key order: default/api before default/web.
    let first = wait_state(&state, "first allocation", |v| {
        ips(v, "default/web").len() == 1 && ips(v, "default/api").len() == 1
    })?;
    assert_eq!(ips(&first, "default/api"), vec!["192.0.2.10"]);
    assert_eq!(ips(&first, "default/web"), vec!["192.0.2.11"]);
    assert_eq!(first["node"], "node-a");

    // A third Service finds the pool full: a reason, for it alone.
    std::fs::write(&file, cluster_yaml(&[("web", ""), ("api", ""), ("db", "")]))?;
    let full = wait_state(&state, "exhausted pool reported", |v| {
        v["services"]["default/db"]["error"].is_string()
    })?;
    assert_eq!(
        full["services"]["default/db"]["error"],
        "no free address in IPAddressPool \"lan\""
    );
    assert_eq!(ips(&full, "default/web"), vec!["192.0.2.11"]);

    // Deleting api frees its IP; db takes it; web does not move.
    std::fs::write(&file, cluster_yaml(&[("web", ""), ("db", "")]))?;
    let moved = wait_state(&state, "freed IP reused", |v| {
        ips(v, "default/db") == ["192.0.2.10"]
    })?;
    assert!(moved["services"].get("default/api").is_none());
    assert_eq!(ips(&moved, "default/web"), vec!["192.0.2.11"], "sticky");

    // The log tells the same story.
    let mut text = String::new();
    std::fs::File::open(&log)?.read_to_string(&mut text)?;
    for needle in [
        "IPAllocated",
        "AllocationFailed",
        "IPReleased",
        "default/db",
    ] {
        assert!(text.contains(needle), "log lacks {needle}:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
