//! The `Announcer`: given the whole set of owned addresses per interface, it converges to it.
use crate::schedule::{Schedule, Timetable};
use crate::stats::{InterfaceStats, Record};
use crate::worker::{Owned, Worker};
use crate::{link, InterfaceError};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// How the announcer behaves. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// When each newly owned address is announced.
    pub timetable: Timetable,
    /// How often each interface is looked at (link up/down, new MAC, appeared, gone).
    pub link_poll: Duration,
    /// How long `set_owned` waits for each interface to apply the new set.
    pub apply_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timetable: Timetable::default(),
            link_poll: Duration::from_millis(100),
            apply_timeout: Duration::from_secs(2),
        }
    }
}

struct WorkerHandle {
    owned_tx: watch::Sender<Owned>,
    ack_rx: watch::Receiver<u64>,
    version: u64,
    record: Arc<Mutex<Record>>,
    task: JoinHandle<()>,
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        // Publish "nothing owned" first: a frame being handled right now is then not answered.
        self.owned_tx
            .send_modify(|o| o.ips = Arc::new(BTreeSet::new()));
        self.task.abort();
    }
}

/// Announces and defends the addresses this node owns, per interface, by gratuitous ARP
/// (RFC 5227 §3) and unsolicited neighbour advertisements (RFC 4861 §7.2.6), and answers ARP
/// requests and neighbour solicitations for them. One tokio task per interface; all are
/// aborted when the `Announcer` is dropped.
///
/// Planned handoff: call `set_owned` with the address on the new owner first; it returns
/// once the first announcement is on the wire; then remove it on the old owner.
pub struct Announcer {
    config: Arc<Config>,
    workers: BTreeMap<String, WorkerHandle>,
}

impl Announcer {
    /// Creates an announcer that owns nothing. Tasks start with the first `set_owned`, which
    /// must run inside a tokio runtime.
    pub fn new(config: Config) -> Announcer {
        Announcer {
            config: Arc::new(config),
            workers: BTreeMap::new(),
        }
    }

    /// Makes `owned` (interface name → addresses) the whole truth: new addresses are
    /// announced at once and answered for; addresses and interfaces left out stop being
    /// answered before this returns. Returns the problems per interface; an interface with a
    /// problem never stops the others, and one that does not exist yet is watched and
    /// served as soon as it appears.
    pub async fn set_owned(
        &mut self,
        owned: BTreeMap<String, BTreeSet<IpAddr>>,
    ) -> Vec<InterfaceError> {
        let mut errors = Vec::new();
        self.workers.retain(|name, _| owned.contains_key(name));
        for (name, ips) in owned {
            if !link::valid_name(&name) {
                errors.push(InterfaceError::InvalidName { interface: name });
                continue;
            }
            let config = &self.config;
            let w = self
                .workers
                .entry(name.clone())
                .or_insert_with(|| spawn_worker(&name, config));
            w.version += 1;
            let version = w.version;
            w.owned_tx.send_replace(Owned {
                version,
                ips: Arc::new(ips),
                quiet: false,
            });
        }
        self.wait_applied(&mut errors).await;
        errors
    }

    /// Planned handoff, on the old owner once the new one announces: keep answering for
    /// every owned address but send no more gratuitous ARP or unsolicited advertisement, so
    /// that a scheduled repeat of ours cannot turn the clients back to this node in its last
    /// moments. The next `set_owned` announces again. Returns the problems per interface.
    pub async fn go_quiet(&mut self) -> Vec<InterfaceError> {
        for w in self.workers.values_mut() {
            w.version += 1;
            let version = w.version;
            w.owned_tx.send_modify(|o| {
                o.version = version;
                o.quiet = true;
            });
        }
        let mut errors = Vec::new();
        self.wait_applied(&mut errors).await;
        errors
    }

    /// Waits for every worker to apply its latest version; collects their problems.
    async fn wait_applied(&mut self, errors: &mut Vec<InterfaceError>) {
        for (name, w) in self.workers.iter_mut() {
            let version = w.version;
            let applied = tokio::time::timeout(
                self.config.apply_timeout,
                w.ack_rx.wait_for(|v| *v >= version),
            )
            .await;
            if !matches!(applied, Ok(Ok(_))) {
                errors.push(InterfaceError::NotApplied {
                    interface: name.clone(),
                    waited: self.config.apply_timeout,
                });
            }
            let rec = w.record.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = &rec.error {
                errors.push(e.clone());
            }
            for s in rec.ips.values() {
                if let Some(reason) = &s.error {
                    errors.push(InterfaceError::Address {
                        interface: name.clone(),
                        ip: s.ip,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }

    /// A snapshot per interface, in name order.
    pub fn stats(&self) -> Vec<InterfaceStats> {
        self.workers
            .values()
            .map(|w| {
                w.record
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .snapshot()
            })
            .collect()
    }

    /// Stops answering everywhere and waits for every task to end (sockets closed).
    pub async fn shutdown(mut self) {
        let workers = std::mem::take(&mut self.workers);
        let mut tasks = Vec::new();
        for (_, mut w) in workers {
            w.owned_tx
                .send_modify(|o| o.ips = Arc::new(BTreeSet::new()));
            w.task.abort();
            let placeholder = tokio::spawn(async {});
            tasks.push(std::mem::replace(&mut w.task, placeholder));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn spawn_worker(name: &str, config: &Arc<Config>) -> WorkerHandle {
    let (owned_tx, owned_rx) = watch::channel(Owned::default());
    let (ack_tx, ack_rx) = watch::channel(0);
    let record = Arc::new(Mutex::new(Record::new(name)));
    let worker = Worker {
        name: name.to_string(),
        config: config.clone(),
        owned_rx,
        ack_tx,
        record: record.clone(),
        link: None,
        links: crate::link::Links::new(),
        socket: None,
        groups: None,
        schedule: Schedule::new(config.timetable.clone()),
        applied: Arc::new(BTreeSet::new()),
        last_event: std::time::Instant::now(),
        silent_until: None,
    };
    let span = tracing::info_span!("l2_interface", interface = %name);
    let task = tokio::spawn(worker.run().instrument(span));
    WorkerHandle {
        owned_tx,
        ack_rx,
        version: 0,
        record,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<IpAddr>> {
        pairs
            .iter()
            .map(|(i, ips)| {
                let set = ips.iter().map(|s| s.parse().expect("ip")).collect();
                (i.to_string(), set)
            })
            .collect()
    }

    fn assert_send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn the_announcer_and_its_futures_can_move_between_threads() {
        let mut a = Announcer::new(Config::default());
        assert_send(&a);
        let f = a.set_owned(BTreeMap::new());
        assert_send(&f);
        f.await;
        let f = a.shutdown();
        assert_send(&f);
        f.await;
    }

    #[tokio::test]
    async fn an_invalid_name_and_a_missing_interface_are_reported_each_for_itself() {
        let mut a = Announcer::new(Config::default());
        let errors = a
            .set_owned(state(&[
                ("bad/name", &["192.0.2.1"]),
                ("nosuchif0", &["192.0.2.100"]),
            ]))
            .await;
        assert_eq!(
            errors,
            vec![
                InterfaceError::InvalidName {
                    interface: "bad/name".into()
                },
                InterfaceError::NotFound {
                    interface: "nosuchif0".into()
                },
            ]
        );
        // The missing interface stays watched, its address recorded but never announced.
        let stats = a.stats();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].interface, "nosuchif0");
        assert_eq!(stats[0].link, None);
        assert_eq!(stats[0].ips.len(), 1);
        assert_eq!(stats[0].ips[0].first_announced, None);
        a.shutdown().await;
    }

    #[tokio::test]
    async fn interfaces_left_out_of_the_state_are_dropped() {
        let mut a = Announcer::new(Config::default());
        let _ = a.set_owned(state(&[("nosuchif0", &["192.0.2.100"])])).await;
        assert_eq!(a.stats().len(), 1);
        assert!(a.set_owned(BTreeMap::new()).await.is_empty());
        assert!(a.stats().is_empty());
    }

    #[tokio::test]
    async fn releasing_an_address_removes_it_from_the_stats() {
        let mut a = Announcer::new(Config::default());
        let _ = a
            .set_owned(state(&[("nosuchif0", &["192.0.2.100", "2001:db8::100"])]))
            .await;
        let _ = a
            .set_owned(state(&[("nosuchif0", &["2001:db8::100"])]))
            .await;
        let ips: Vec<IpAddr> = a.stats()[0].ips.iter().map(|s| s.ip).collect();
        assert_eq!(ips, vec!["2001:db8::100".parse::<IpAddr>().expect("ip")]);
    }
}
