//! `rust-version` in the workspace Cargo.toml must be the real minimum: at least the highest
//! `rust_version` of any package the lockfile pins (as `cargo metadata` reports them).

use std::process::Command;

/// `1.89` and `1.89.0` alike, as (major, minor, patch).
fn version(text: &str) -> (u32, u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

#[test]
fn rust_version_is_at_least_every_locked_dependency_s() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ours = version(env!("CARGO_PKG_RUST_VERSION"));
    let mut above = Vec::new();
    for p in meta["packages"].as_array().expect("packages") {
        if let Some(rv) = p["rust_version"].as_str() {
            if version(rv) > ours {
                above.push(format!("{} {} needs {rv}", p["name"], p["version"]));
            }
        }
    }
    assert!(
        above.is_empty(),
        "rust-version {} is below: {above:?}",
        env!("CARGO_PKG_RUST_VERSION")
    );
}
