//! Lab helpers every end-to-end test uses: namespaces, links, processes, waiting.
pub mod bird;
pub mod capture;
pub mod frr;
pub mod gobgp;
pub mod netns;
pub mod router;
pub mod traffic;
pub mod wait;

pub use bird::{Bird, BirdConfig};
pub use frr::{Frr, FrrConfig};
pub use gobgp::{Gobgp, GobgpConfig};
pub use router::{Announce, BgpRouter, Family, ListenRange, Neighbor, Origin, Route, RouterConfig};

pub use netns::{Lan, Netns, NsProcess};
pub use wait::wait_until;

/// True when the lab can run. A test that cannot create namespaces fails loudly, unless a
/// person set `EDGELB_SKIP_NETNS=1` on purpose; then the test returns early and says so.
pub fn enabled(test: &str) -> bool {
    if std::env::var("EDGELB_SKIP_NETNS").as_deref() == Ok("1") {
        eprintln!("{test}: skipped, EDGELB_SKIP_NETNS=1");
        return false;
    }
    true
}

/// The load average (1, 5, 15 min), for every timing figure: the lab machine is shared.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Prints a measured figure and appends it to `target/tmp/figures/{file}.txt`, which
/// `.ci/run` prints after the tests (cargo hides a passing test's output).
pub fn figure(file: &str, line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let Some(dir) = crate::kube::target_tmp().map(|t| t.join("figures")) else {
        return;
    };
    let out = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{file}.txt")))
    });
    if let Ok(mut f) = out {
        let _ = writeln!(f, "{line}");
    }
}
