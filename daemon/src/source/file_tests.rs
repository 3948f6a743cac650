use super::*;
use crate::snapshot::ObjectKey;

const GOOD: &str = r#"
# a comment before the first document
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: edgelb.io/speaker
  ports: [{port: 80, protocol: TCP}]
---
apiVersion: edgelb.io/v1alpha1
kind: IPAddressPool
metadata: {name: lan, namespace: edgelb-system}
spec:
  addresses: ["192.0.2.0/30"]
---
apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {apps.openyurt.io/nodepool: hz}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints: [{addresses: ["10.1.0.5"], nodeName: n1, conditions: {ready: true}}]
---
apiVersion: v1
kind: Secret
metadata: {name: bgp, namespace: edgelb-system}
stringData: {password: hunter2}
"#;

#[test]
fn every_kind_of_a_multi_document_file_is_read() {
    let loaded = parse(GOOD);
    assert_eq!(loaded.errors, vec![]);
    let kinds: Vec<&str> = loaded.objects.iter().map(|o| o.describe().0).collect();
    assert_eq!(
        kinds,
        vec![
            "Service",
            "IPAddressPool",
            "Node",
            "EndpointSlice",
            "Secret"
        ]
    );
    let snap = store_of(&loaded, "edgelb-system").snapshot(&Selection::default());
    assert_eq!(snap.services.len(), 1);
    assert_eq!(
        snap.endpoint_slices[&ObjectKey::new("default", "web")].len(),
        1
    );
    assert_eq!(snap.node_pools["hz"].nodes.len(), 1);
    assert_eq!(snap.allocation_pools.len(), 1);
    assert_eq!(snap.secrets["bgp"].data.0["password"], b"hunter2");
}

#[test]
fn bad_documents_are_named_and_skipped_and_the_rest_applies() {
    let text = format!(
        "{GOOD}---\napiVersion: v1\nkind: Service\nmetadata: {{name: broken, namespace: default}}\nspec: {{ports: [{{port: eighty}}]}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: x\n\
         ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d, namespace: default}}\n\
         ---\napiVersion: v1\nkind: Node\nmetadata: {{}}\n"
    );
    let loaded = parse(&text);
    assert_eq!(loaded.objects.len(), 5, "the good documents still apply");
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].starts_with("document 5 (Service default/broken): invalid type"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("document 6 (? ?): not YAML"),
        "{}",
        errors[1]
    );
    assert_eq!(
        errors[2],
        r#"document 7 (Deployment default/d): unsupported apiVersion "apps/v1" kind "Deployment""#
    );
    assert_eq!(errors[3], "document 8 (Node ?): metadata.name is missing");
}

#[test]
fn arbitrary_bytes_never_panic() {
    for text in [
        "",
        "---",
        "--- \n---\n",
        "\u{0}\u{1}: [",
        "- - -",
        "kind: [1",
        "a: *b",
    ] {
        let _ = parse(text);
    }
}

#[tokio::test]
async fn a_changed_file_publishes_a_new_snapshot() {
    let dir = std::env::temp_dir().join(format!("edgelb-file-source-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, GOOD).expect("write");
    let (tx, mut rx) = watch::channel(Snapshot::default());
    let task = tokio::spawn(watch_file(
        path.clone(),
        Selection::default(),
        Duration::from_millis(20),
        tx,
    ));
    let wait = |rx: &mut watch::Receiver<Snapshot>| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), rx.changed())
                .await
                .expect("snapshot within 10 s")
                .expect("sender alive");
            rx.borrow_and_update().clone()
        }
    };
    let first = wait(&mut rx).await;
    rx.mark_unchanged();
    assert_eq!(first.services.len(), 1);
    std::fs::write(&path, GOOD.replace("name: web,", "name: api,")).expect("rewrite");
    let second = wait(&mut rx).await;
    assert!(second
        .services
        .contains_key(&ObjectKey::new("default", "api")));
    assert!(!second
        .services
        .contains_key(&ObjectKey::new("default", "web")));
    // Removing the file keeps the last snapshot (fail-static): nothing new is published.
    std::fs::remove_file(&path).expect("rm");
    let mut rx2 = rx.clone();
    rx2.mark_unchanged();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx2.changed())
            .await
            .is_err()
    );
    assert!(rx
        .borrow()
        .services
        .contains_key(&ObjectKey::new("default", "api")));
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

fn set_mtime(path: &std::path::Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .expect("set mtime");
}

/// A settled file (mtime old enough) is only `stat`ed until it changes; a file written
/// moments ago is read again on each poll, so that a same-length edit within the mtime's
/// granularity is still seen.
#[test]
fn poller_reads_only_changed_or_unsettled_files() {
    let dir = std::env::temp_dir().join(format!("edgelb-poller-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("f.yaml");
    let old = SystemTime::now() - Duration::from_secs(60);
    std::fs::write(&path, "a: 1\n").expect("write");
    set_mtime(&path, old);
    let mut p = FilePoller::new(path.clone());
    assert_eq!(p.poll().expect("poll").as_deref(), Some("a: 1\n"));
    for _ in 0..5 {
        assert_eq!(p.poll().expect("poll"), None);
    }
    assert_eq!(p.reads(), 1, "an unchanged, settled file is not read again");

    // Same length, same mtime as before: only a read can tell, and the stamp alone says
    // nothing changed; the poller trusts it only because the mtime was old when read.
    std::fs::write(&path, "a: 2\n").expect("write");
    set_mtime(&path, SystemTime::now());
    assert_eq!(p.poll().expect("poll").as_deref(), Some("a: 2\n"));
    let mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::write(&path, "a: 3\n").expect("write");
    set_mtime(&path, mtime);
    assert_eq!(
        p.poll().expect("poll").as_deref(),
        Some("a: 3\n"),
        "a fresh mtime is not trusted: the same-length edit is seen"
    );
    let reads = p.reads();
    assert_eq!(
        p.poll().expect("poll"),
        None,
        "read again, same text: no change"
    );
    assert_eq!(p.reads(), reads + 1);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
