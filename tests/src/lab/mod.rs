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
