//! Standalone mode: the same objects as the Kubernetes API (Services, EndpointSlices, Nodes,
//! Namespaces, Secrets, our CRDs) read from one multi-document YAML file, reloaded on change.
//!
//! Reload is by polling the file every ~200 ms rather than with inotify: it needs no extra
//! crate and also sees the symlink swap a Kubernetes ConfigMap mount does (inotify on the
//! old inode misses it). A poll is one `stat`; the file (megabytes with 10 000 Services) is
//! read only when its inode, length or mtime changed, or while its mtime is too recent to
//! tell two writes apart ([`FilePoller`]); only a hash of the last text is kept.
//!
//! A document that fails to parse is reported with its index, kind and name and skipped;
//! the others apply. An unreadable file keeps the last snapshot in force.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::watch;

use crate::snapshot::{Object, Selection, Snapshot, Store};

/// A document of the file that was skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("document {index} ({kind} {name}): {message}")]
pub struct DocumentError {
    /// 0-based position in the file.
    pub index: usize,
    /// `kind`, or `?` when unreadable.
    pub kind: String,
    /// `namespace/name`, or `?`.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

/// The objects of one file and the documents that were skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every object that parsed.
    pub objects: Vec<Object>,
    /// Every document that did not.
    pub errors: Vec<DocumentError>,
}

/// Splits at lines that are exactly `---` (YAML document markers), so that a syntax error
/// in one document cannot hide the others. Documents borrow the text (a `--- rest` line's
/// rest is put in front of its document, the one case that copies).
fn documents(text: &str) -> Vec<Cow<'_, str>> {
    fn doc<'a>(head: Option<&'a str>, body: &'a str) -> Cow<'a, str> {
        match head {
            None => Cow::Borrowed(body),
            Some(h) => Cow::Owned(format!("{h}\n{body}")),
        }
    }
    let mut docs = Vec::new();
    let (mut start, mut pos) = (0, 0);
    let mut head = None;
    for line in text.split_inclusive('\n') {
        let l = line.strip_suffix('\n').unwrap_or(line);
        let l = l.strip_suffix('\r').unwrap_or(l);
        if l.trim_end() == "---" || l.starts_with("--- ") {
            docs.push(doc(head, &text[start..pos]));
            head = l.strip_prefix("--- ");
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(doc(head, &text[start..]));
    docs
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn typed<T: serde::de::DeserializeOwned>(
    v: Value,
    wrap: fn(T) -> Object,
) -> Result<Object, String> {
    serde_json::from_value(v)
        .map(wrap)
        .map_err(|e| e.to_string())
}

/// Reads one object from a YAML document by `apiVersion` and `kind`.
fn object(v: Value) -> Result<Object, String> {
    let api_version = str_at(&v, &["apiVersion"]).unwrap_or("").to_string();
    let kind = str_at(&v, &["kind"]).unwrap_or("").to_string();
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => typed(v, Object::Service),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(v, Object::EndpointSlice),
        ("v1", "Node") => typed(v, Object::Node),
        ("v1", "Namespace") => typed(v, Object::Namespace),
        ("v1", "Secret") => typed(v, Object::Secret),
        (crate::api::API_VERSION, "IPAddressPool") => typed(v, Object::IPAddressPool),
        (crate::api::API_VERSION, "BGPPeer") => typed(v, Object::BGPPeer),
        (crate::api::API_VERSION, "BGPAdvertisement") => typed(v, Object::BGPAdvertisement),
        (crate::api::API_VERSION, "L2Advertisement") => typed(v, Object::L2Advertisement),
        (crate::api::API_VERSION, "Community") => typed(v, Object::Community),
        (crate::api::API_VERSION, "BFDProfile") => typed(v, Object::BFDProfile),
        (crate::api::API_VERSION, "PolicyRoute") => typed(v, Object::PolicyRoute),
        (crate::api::openyurt::NODEPOOL_API_VERSION, "NodePool") => typed(v, Object::NodePool),
        (crate::api::openyurt::POOLSERVICE_API_VERSION, "PoolService") => {
            typed(v, Object::PoolService)
        }
        _ => Err(format!(
            "unsupported apiVersion {api_version:?} kind {kind:?}"
        )),
    }
}

/// Parses a multi-document YAML text. Never panics, whatever the bytes.
pub fn parse(text: &str) -> Loaded {
    let mut objects = Vec::new();
    let errors = parse_each(text, |o| objects.push(o));
    Loaded { objects, errors }
}

/// Parses a multi-document YAML text, handing each object to `apply` as soon as it is
/// read (so a file of 10 000 Services is never held as text, documents and objects at
/// once); returns the documents that were skipped. Never panics, whatever the bytes.
pub fn parse_each(text: &str, mut apply: impl FnMut(Object)) -> Vec<DocumentError> {
    let mut errors = Vec::new();
    for (index, doc) in documents(text).into_iter().enumerate() {
        if doc
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let value: Value = match serde_norway::from_str(&doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(DocumentError {
                    index,
                    kind: "?".into(),
                    name: "?".into(),
                    message: format!("not YAML: {e}"),
                });
                continue;
            }
        };
        let kind = str_at(&value, &["kind"]).unwrap_or("?").to_string();
        let name = match (
            str_at(&value, &["metadata", "namespace"]),
            str_at(&value, &["metadata", "name"]),
        ) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.to_string(),
            _ => "?".to_string(),
        };
        if name == "?" {
            errors.push(DocumentError {
                index,
                kind,
                name,
                message: "metadata.name is missing".into(),
            });
            continue;
        }
        match object(value) {
            Ok(o) => apply(o),
            Err(message) => errors.push(DocumentError {
                index,
                kind,
                name,
                message,
            }),
        }
    }
    errors
}

/// A store holding exactly the objects of `loaded` (the file is the whole state).
pub fn store_of(loaded: &Loaded, namespace: &str) -> Store {
    let mut store = Store::default();
    for o in &loaded.objects {
        store.apply(o.clone(), namespace);
    }
    store
}

/// The snapshot of exactly the objects of a file's `text`, each applied as it is parsed;
/// with the documents skipped and the number of objects.
pub fn snapshot_of_text(text: &str, sel: &Selection) -> (Snapshot, Vec<DocumentError>, usize) {
    let mut store = Store::default();
    store.select(sel);
    let mut objects = 0;
    let errors = parse_each(text, |o| {
        objects += 1;
        store.apply(o, &sel.namespace);
    });
    (store.snapshot(sel), errors, objects)
}

/// The snapshot of exactly the objects of `loaded`, moved into the store (not copied: a
/// file of 10 000 Services would otherwise be held twice while loading).
pub fn snapshot_of(loaded: Loaded, sel: &Selection) -> Snapshot {
    let mut store = Store::default();
    store.select(sel);
    for o in loaded.objects {
        store.apply(o, &sel.namespace);
    }
    store.snapshot(sel)
}

/// What identifies a version of the file cheaply (`stat` follows the symlinks a ConfigMap
/// mount swaps, so a swap changes the inode).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        modified: m.modified().ok(),
        len: m.len(),
    })
}

/// A file whose mtime is at least this old when read cannot be rewritten with the same
/// mtime (timestamps are at worst 1 s coarse): its stamp alone tells later changes.
const SETTLED: Duration = Duration::from_secs(2);

fn hash_of(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Polls one file for changes: a `stat` per poll, a read only when the stamp changed or is
/// not settled yet (a write within the timestamp granularity of the last read could leave
/// length and mtime equal), and a change only when the text's hash differs.
#[derive(Debug)]
pub struct FilePoller {
    path: PathBuf,
    last: Option<(Stamp, u64)>,
    settled: bool,
    reads: u64,
}

impl FilePoller {
    /// A poller that has seen nothing yet.
    pub fn new(path: PathBuf) -> FilePoller {
        FilePoller {
            path,
            last: None,
            settled: false,
            reads: 0,
        }
    }

    /// The file's text when it changed since the last poll (always on the first
    /// successful poll), `None` when it did not.
    pub fn poll(&mut self) -> std::io::Result<Option<String>> {
        let s = stamp(&self.path)?;
        if self.settled && self.last.as_ref().is_some_and(|(ls, _)| *ls == s) {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.path)?;
        self.reads += 1;
        // Stamp again after the read: a write during it must not be taken as settled.
        let s = stamp(&self.path)?;
        self.settled = s
            .modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age >= SETTLED);
        let h = hash_of(&text);
        let changed = self.last.as_ref().is_none_or(|(_, lh)| *lh != h);
        self.last = Some((s, h));
        Ok(changed.then_some(text))
    }

    /// How many times the file was read (a poll of an unchanged, settled file reads none).
    pub fn reads(&self) -> u64 {
        self.reads
    }
}

/// Loads the file and builds a snapshot; logs every skipped document.
pub fn load_snapshot(path: &Path, sel: &Selection) -> std::io::Result<Snapshot> {
    let text = std::fs::read_to_string(path)?;
    let (snap, errors, _) = snapshot_of_text(&text, sel);
    for e in &errors {
        tracing::warn!(file = %path.display(), error = %e, "skipping document");
    }
    Ok(snap)
}

/// Watches `path` and publishes a new snapshot after every change, until every receiver is
/// gone. A read error keeps the last snapshot in force.
pub async fn watch_file(
    path: PathBuf,
    sel: Selection,
    interval: Duration,
    tx: watch::Sender<Snapshot>,
) {
    let mut poller = FilePoller::new(path.clone());
    let mut loaded_once = false;
    loop {
        match poller.poll() {
            Ok(Some(text)) => {
                let (snap, errors, objects) = snapshot_of_text(&text, &sel);
                drop(text);
                for e in &errors {
                    tracing::warn!(file = %path.display(), error = %e, "skipping document");
                }
                tracing::info!(file = %path.display(), objects, skipped = errors.len(), "loaded");
                if tx.send(snap).is_err() {
                    return;
                }
                loaded_once = true;
            }
            Ok(None) => {}
            Err(e) => {
                if loaded_once {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read; keeping the last snapshot");
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
