//! Keeps `docs/configuration.md` honest against the sources of truth:
//!
//! - every `spec` field path of every CRD in `deploy/crds/*.yaml` (generated from the Rust
//!   types; the drift test in `api/crd_gen.rs` keeps them current) has a row in the table of
//!   its kind, and every field a kind's table lists still exists;
//! - every `--flag` and subcommand of `edgelb-speaker` (from its own `--help`) has a row in
//!   the command-line section, and every flag the flag table lists still exists;
//! - every annotation or label key that the daemon's non-test code spells out
//!   (`edgelb.io/...`, `*.kubernetes.io/...`, `*.openyurt.io/...`) is listed.
//!
//! Field paths are written `spec.a.b`, with `[]` for a list of objects
//! (`spec.communities[].name`); a `LabelSelector` is one field (its `matchLabels` and
//! `matchExpressions` are Kubernetes' own).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn doc() -> anyhow::Result<String> {
    let path = root().join("docs/configuration.md");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The text of the section under the heading `heading` (exact line), up to the next heading
/// of the same or a higher level.
fn section<'a>(doc: &'a str, heading: &str) -> anyhow::Result<&'a str> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = doc
        .lines()
        .scan(0usize, |off, line| {
            let here = *off;
            *off += line.len() + 1;
            Some((here, line))
        })
        .find(|(_, line)| line.trim_end() == heading)
        .map(|(off, line)| off + line.len())
        .with_context(|| format!("docs/configuration.md has no heading {heading:?}"))?;
    let rest = &doc[start..];
    let end = rest
        .lines()
        .scan(0usize, |off, line| {
            let here = *off;
            *off += line.len() + 1;
            Some((here, line))
        })
        .find(|(_, line)| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            hashes > 0 && hashes <= level && line[hashes..].starts_with(' ')
        })
        .map_or(rest.len(), |(off, _)| off);
    Ok(&rest[..end])
}

/// The backquoted first cells of the table rows of a section (`| \`x\` | ... |`).
fn first_cells(section: &str) -> BTreeSet<String> {
    section
        .lines()
        .filter_map(|line| {
            let cell = line.strip_prefix("| `")?;
            let end = cell.find('`')?;
            Some(cell[..end].to_string())
        })
        .collect()
}

fn is_label_selector(schema: &Value) -> bool {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key("matchLabels") && p.contains_key("matchExpressions"))
}

/// Every field path under `schema` (an object schema), depth first.
fn field_paths(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, sub) in props {
        let path = format!("{prefix}.{name}");
        out.insert(path.clone());
        if is_label_selector(sub) {
            continue;
        }
        match sub.get("type").and_then(Value::as_str) {
            Some("object") => field_paths(sub, &path, out),
            Some("array") => {
                if let Some(items) = sub.get("items") {
                    if !is_label_selector(items) && items.get("properties").is_some() {
                        field_paths(items, &format!("{path}[]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// (kind, every spec field path) of every CRD file under `deploy/crds/`.
fn crd_fields() -> anyhow::Result<Vec<(String, BTreeSet<String>)>> {
    let dir = root().join("deploy/crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    if files.is_empty() {
        bail!("no CRD YAML under {}", dir.display());
    }
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let crd: Value =
            serde_norway::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .with_context(|| format!("{}: no spec.names.kind", file.display()))?
            .to_string();
        let versions = crd["spec"]["versions"]
            .as_array()
            .with_context(|| format!("{}: no versions", file.display()))?;
        let mut fields = BTreeSet::new();
        for v in versions {
            let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
            if spec.is_null() {
                bail!("{}: version without a spec schema", file.display());
            }
            field_paths(spec, "spec", &mut fields);
        }
        out.push((kind, fields));
    }
    Ok(out)
}

#[test]
fn every_crd_field_is_documented_under_its_kind_and_nothing_more() -> anyhow::Result<()> {
    let doc = doc()?;
    let kinds = crd_fields()?;
    assert!(
        kinds.len() >= 6,
        "expected the six edgelb CRDs, found {kinds:?}"
    );
    let mut problems = Vec::new();
    for (kind, fields) in &kinds {
        let text = section(&doc, &format!("### {kind}"))?;
        let rows = first_cells(text);
        for f in fields {
            if !rows.contains(f) {
                problems.push(format!("{kind}: `{f}` has no row in the table"));
            }
        }
        for listed in rows.iter().filter(|c| c.starts_with("spec.")) {
            if !fields.contains(listed) {
                problems.push(format!(
                    "{kind}: the table lists `{listed}`, which the CRD does not have"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md is out of step with deploy/crds:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// `--long` flags in clap's help text (the lines that start with options).
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| l.split([' ', ',', '=', '<']))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

fn speaker_help(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgelb-speaker"))
        .args(args)
        .output()
        .with_context(|| format!("running edgelb-speaker {args:?}"))?;
    if !out.status.success() {
        bail!(
            "edgelb-speaker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_speaker_flag_and_subcommand_is_documented_and_nothing_more() -> anyhow::Result<()> {
    let doc = doc()?;
    let cli = section(&doc, "## edgelb-speaker command line")?;
    let ignore = ["--help", "--version"];

    let top = speaker_help(&["--help"])?;
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.contains(&"run"), "no `run` in:\n{top}");

    let mut missing = Vec::new();
    let mut flags = BTreeSet::new();
    for command in &commands {
        if !first_cells(cli).contains(*command) {
            missing.push(format!("subcommand `{command}`"));
        }
        let help = speaker_help(&[command, "--help"])?;
        for flag in help_flags(&help) {
            if !ignore.contains(&flag.as_str()) {
                flags.insert(flag);
            }
        }
    }
    let rows = first_cells(cli);
    for flag in &flags {
        if !rows.contains(flag) {
            missing.push(format!("flag `{flag}`"));
        }
    }
    let stale: Vec<String> = rows
        .into_iter()
        .filter(|c| c.starts_with("--") && !flags.contains(c))
        .collect();
    assert!(
        flags.contains("--node") && flags.contains("--member-peers"),
        "help parsing found too little: {flags:?}"
    );
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/configuration.md, section \"edgelb-speaker command line\": missing {missing:?}; \
         listed but no subcommand has such a flag: {stale:?}"
    );
    Ok(())
}

/// Rust source files under `dir`, without test-only files.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "tests" {
                sources(&path, out)?;
            }
        } else if name.ends_with(".rs")
            && !name.ends_with("_tests.rs")
            && !matches!(name, "tests.rs" | "fixtures.rs" | "mock_api.rs")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether a string literal is an annotation or label key of the kinds we document:
/// `prefix/name` where the prefix is a DNS name in one of our domains, and not an
/// `apiVersion` (`edgelb.io/v1alpha1`).
fn is_key(s: &str) -> bool {
    let Some((prefix, name)) = s.split_once('/') else {
        return false;
    };
    let domain = ["edgelb.io", "kubernetes.io", "openyurt.io"]
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")));
    let api_version = name.starts_with('v') && name[1..].starts_with(|c: char| c.is_ascii_digit());
    domain
        && !api_version
        && !name.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

/// String literals of non-test code (everything before a file's first `#[cfg(test)]`),
/// comments skipped.
fn literals(code: &str) -> Vec<String> {
    let code = code.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let parts: Vec<&str> = line.split('"').collect();
        out.extend(parts.iter().skip(1).step_by(2).map(|s| s.to_string()));
    }
    out
}

#[test]
fn every_annotation_and_label_key_the_daemon_reads_is_documented() -> anyhow::Result<()> {
    let doc = doc()?;
    let mut files = Vec::new();
    sources(&root().join("daemon/src"), &mut files)?;
    let mut keys = BTreeSet::new();
    for file in &files {
        let code = std::fs::read_to_string(file)?;
        keys.extend(literals(&code).into_iter().filter(|s| is_key(s)));
    }
    for must in [
        "edgelb.io/loadBalancerIPs",
        "edgelb.io/allow-shared-ip",
        "apps.openyurt.io/nodepool",
        "kubernetes.io/elb.pass-through",
    ] {
        assert!(keys.contains(must), "the scan missed {must}: {keys:?}");
    }
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys in daemon/src that docs/configuration.md does not list: {missing:?}"
    );
    Ok(())
}

#[test]
fn the_key_scan_sees_keys_and_skips_api_versions_and_tests() {
    assert!(is_key("edgelb.io/address-pool"));
    assert!(is_key(
        "node.kubernetes.io/exclude-from-external-load-balancers"
    ));
    assert!(is_key("service.openyurt.io/nodepool-labelselector"));
    assert!(!is_key("edgelb.io/v1alpha1"));
    assert!(!is_key("discovery.k8s.io/v1"));
    assert!(!is_key("apps/v1"));
    assert!(!is_key("edgelb.io/{name}"));
    let code = "// \"edgelb.io/in-a-comment\"\nconst A: &str = \"edgelb.io/real\";\n#[cfg(test)]\nmod t { const B: &str = \"edgelb.io/test-only\"; }";
    assert_eq!(literals(code), vec!["edgelb.io/real".to_string()]);
}

#[test]
fn sections_end_at_the_next_heading_of_their_level() -> anyhow::Result<()> {
    let text = "# T\n## A\n| `x` | 1 |\n### A1\n| `y` | 2 |\n## B\n| `z` | 3 |\n";
    let a = section(text, "## A")?;
    assert!(a.contains("`x`") && a.contains("`y`") && !a.contains("`z`"));
    assert_eq!(
        first_cells(section(text, "### A1")?),
        BTreeSet::from(["y".to_string()])
    );
    assert!(section(text, "## C").is_err());
    Ok(())
}

/// The bodies of the ```yaml blocks of a Markdown text.
fn yaml_blocks(text: &str) -> Vec<String> {
    code_blocks(text, "yaml")
}

/// The bodies of the fenced blocks of language `lang` of a Markdown text (indented fences,
/// as inside list items, count too).
fn code_blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim()) {
            (None, l) if l == fence => current = Some(String::new()),
            (Some(_), "```") => out.extend(current.take()),
            (Some(body), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

#[test]
fn the_readme_configuration_example_is_valid_and_gives_the_pinned_ip() -> anyhow::Result<()> {
    use edgelb_daemon::ipam::{allocate, Assignments};
    use edgelb_daemon::snapshot::{ObjectKey, Selection};
    use edgelb_daemon::source::file::{parse, store_of};

    let path = root().join("README.md");
    let readme =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let blocks = yaml_blocks(section(&readme, "## Configuration")?);
    assert_eq!(
        blocks.len(),
        1,
        "one YAML example in the README's Configuration"
    );
    let loaded = parse(&blocks[0]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.objects.len(), 4);

    let sel = Selection::default();
    let snap = store_of(&loaded, &sel.namespace).snapshot(&sel);
    let problems = validation_problems(&snap);
    assert!(
        problems.is_empty(),
        "the example is not valid: {problems:?}"
    );
    assert_eq!(
        (
            snap.pools.len(),
            snap.peers.len(),
            snap.bgp_advertisements.len()
        ),
        (1, 1, 1)
    );

    let assigned = allocate(&snap, &Assignments::default());
    let want: std::net::IpAddr = "192.0.2.10".parse()?;
    assert_eq!(assigned.ips(&ObjectKey::new("default", "web")), [want]);
    Ok(())
}

/// MetalLB objects as a user keeps them in git: every kind edgelb takes over, with the
/// fields that need converting (the Secret's namespace).
const METALLB_MANIFESTS: &str = r#"apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: public
  namespace: metallb-system
spec:
  addresses:
  - 192.0.2.0/28
  - 2001:db8::/120
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 10
    namespaces: [web]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: tor
  namespace: metallb-system
spec:
  myASN: 64512
  peerASN: 64500
  peerAddress: 192.0.2.254
  routerID: 192.0.2.1
  holdTime: 90s
  keepaliveTime: 30s
  passwordSecret:
    name: tor-password
    namespace: metallb-system
  nodeSelectors:
  - matchLabels: {rack: a}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: public
  namespace: metallb-system
spec:
  ipAddressPools: [public]
  aggregationLength: 32
  localPref: 50
  communities: [no-advertise, "64512:100"]
  peers: [tor]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: lan
  namespace: metallb-system
spec:
  ipAddressPools: [public]
  interfaces: [eth0]
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata:
  name: aliases
  namespace: metallb-system
spec:
  communities:
  - name: no-advertise
    value: "65535:65282"
"#;

/// Checks converted objects as the speaker would: they parse, all five kinds are there and
/// valid in the speaker's namespace, and the BGPPeer kept its router ID.
fn check_converted(yaml: &str) -> anyhow::Result<()> {
    use edgelb_daemon::snapshot::Selection;
    use edgelb_daemon::source::file::{parse, store_of};

    let loaded = parse(yaml);
    assert!(loaded.errors.is_empty(), "{:?}\n{yaml}", loaded.errors);
    let sel = Selection::default();
    let snap = store_of(&loaded, &sel.namespace).snapshot(&sel);
    assert_eq!(
        (
            snap.pools.len(),
            snap.peers.len(),
            snap.bgp_advertisements.len(),
            snap.l2_advertisements.len(),
            snap.communities.len()
        ),
        (1, 1, 1, 1, 1),
        "not every object landed in {:?}:\n{yaml}",
        sel.namespace
    );
    let problems = validation_problems(&snap);
    assert!(problems.is_empty(), "{problems:?}\n{yaml}");
    // The kube source reads these kinds only in the speaker's namespace (the file source
    // takes any), so a conversion that keeps `metallb-system` would be silently ignored.
    let namespaces: BTreeSet<String> = snap
        .pools
        .keys()
        .chain(snap.peers.keys())
        .chain(snap.bgp_advertisements.keys())
        .chain(snap.l2_advertisements.keys())
        .chain(snap.communities.keys())
        .map(|k| k.namespace.to_string())
        .collect();
    assert_eq!(
        namespaces,
        BTreeSet::from([sel.namespace.clone()]),
        "objects outside the speaker's namespace:\n{yaml}"
    );
    let peer = snap.peers.values().next().context("no peer")?;
    assert_eq!(
        peer.object.spec.router_id.as_deref(),
        Some("192.0.2.1"),
        "routerID was lost in the conversion"
    );
    Ok(())
}

fn migration_section() -> anyhow::Result<String> {
    let path = root().join("README.md");
    let readme =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(section(&readme, "## Migrating from MetalLB")?.to_string())
}

/// Runs `program args` with `input` on stdin; `None` when the program is not installed.
fn run_filter(program: &str, args: &[&str], input: &str) -> anyhow::Result<Option<String>> {
    use std::io::Write;
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(format!("starting {program}")),
    };
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Some(String::from_utf8(out.stdout)?))
}

/// The single-quoted arguments of the README's one-line `sed -e '...' -e '...'`.
fn readme_sed_expressions(section: &str) -> anyhow::Result<Vec<String>> {
    let start = section
        .find("`sed -e '")
        .context("no `sed -e '...'` one-liner in the migration section")?;
    let line = &section[start + 1..];
    let line = &line[..line.find('`').context("unterminated sed line")?];
    let exprs: Vec<String> = line
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    if exprs.is_empty() {
        bail!("no expressions in {line:?}");
    }
    Ok(exprs)
}

#[test]
fn the_readme_sed_one_liner_turns_metallb_manifests_into_valid_edgelb_objects() -> anyhow::Result<()>
{
    let exprs = readme_sed_expressions(&migration_section()?)?;
    let mut args = Vec::new();
    for e in &exprs {
        args.push("-e");
        args.push(e.as_str());
    }
    let converted = run_filter("sed", &args, METALLB_MANIFESTS)?.context("sed is not installed")?;
    check_converted(&converted)
}

/// The jq programs of the migration section, in order (`jq '...'` or `jq -r '...'`).
fn readme_jq_programs(section: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in code_blocks(section, "sh") {
        let mut rest = block.as_str();
        while let Some(i) = rest.find("jq ") {
            rest = &rest[i + 3..];
            let Some(open) = rest.find('\'') else { break };
            if !rest[..open].trim().is_empty() && rest[..open].trim() != "-r" {
                continue;
            }
            let body = &rest[open + 1..];
            let Some(close) = body.find('\'') else { break };
            out.push(body[..close].to_string());
            rest = &body[close + 1..];
        }
    }
    out
}

#[test]
fn the_readme_jq_programs_convert_metallb_objects_and_pin_service_ips() -> anyhow::Result<()> {
    let programs = readme_jq_programs(&migration_section()?);
    assert_eq!(programs.len(), 2, "{programs:?}");

    // 1. `kubectl get -o json` of the MetalLB objects: a List with server-side metadata.
    let mut items = Vec::new();
    for doc in METALLB_MANIFESTS.split("\n---\n") {
        let mut v: Value = serde_norway::from_str(doc)?;
        v["metadata"]["uid"] = "0b7c".into();
        v["metadata"]["resourceVersion"] = "42".into();
        v["status"] = serde_json::json!({});
        items.push(v);
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let Some(out) = run_filter("jq", &[programs[0].as_str()], &list.to_string())? else {
        eprintln!("SKIP: jq is not installed; the README's jq programs were not run");
        return Ok(());
    };
    let out: Value = serde_json::from_str(&out)?;
    let docs: Vec<String> = out["items"]
        .as_array()
        .context("no items")?
        .iter()
        .map(|i| {
            assert!(i["metadata"].get("uid").is_none(), "uid kept: {i}");
            assert!(i.get("status").is_none(), "status kept: {i}");
            serde_json::to_string(i)
        })
        .collect::<Result<_, _>>()?;
    check_converted(&docs.join("\n---\n"))?;

    // 2. The pinning commands for the Services.
    let services = serde_json::json!({"items": [
        {"metadata": {"namespace": "default", "name": "web", "annotations": {
            "metallb.universe.tf/allow-shared-ip": "k1", "metallb.io/address-pool": "public",
            "other": "x"}},
         "spec": {"type": "LoadBalancer"},
         "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"ip": "2001:db8::10"}]}}},
        {"metadata": {"namespace": "default", "name": "pending"},
         "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}},
        {"metadata": {"namespace": "default", "name": "other-class"},
         "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"},
         "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.11"}]}}},
        {"metadata": {"namespace": "kube-system", "name": "kube-dns"},
         "spec": {"type": "ClusterIP"}, "status": {}}
    ]});
    let out = run_filter("jq", &["-r", programs[1].as_str()], &services.to_string())?
        .context("jq vanished")?;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "kubectl -n default annotate --overwrite svc web 'edgelb.io/address-pool=public'",
            "kubectl -n default annotate --overwrite svc web 'edgelb.io/allow-shared-ip=k1'",
            "kubectl -n default annotate --overwrite svc web 'edgelb.io/loadBalancerIPs=192.0.2.10,2001:db8::10'",
        ]
    );
    Ok(())
}

/// Every validation problem of the edgelb objects in `snap` (pools, peers, both
/// advertisement kinds, communities).
fn validation_problems(
    snap: &edgelb_daemon::snapshot::Snapshot,
) -> Vec<edgelb_daemon::api::validate::FieldError> {
    let mut problems = Vec::new();
    problems.extend(snap.pools.values().flat_map(|c| c.problems.clone()));
    problems.extend(snap.peers.values().flat_map(|c| c.problems.clone()));
    problems.extend(
        snap.bgp_advertisements
            .values()
            .flat_map(|c| c.problems.clone()),
    );
    problems.extend(
        snap.l2_advertisements
            .values()
            .flat_map(|c| c.problems.clone()),
    );
    problems.extend(snap.communities.values().flat_map(|c| c.problems.clone()));
    problems
}
