//! Reads this host's interfaces (name, up, subnets) through rtnetlink, for the L2 plan and
//! the facts the membership gossips. Loopback is left out: nothing is announced there.

use std::collections::BTreeMap;

use futures::TryStreamExt;

use crate::actuate::policy_route_netlink::{read_address, read_link};
use crate::election::InterfaceFacts;

/// A netlink handle kept for repeated reads.
pub struct HostInterfaces {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl HostInterfaces {
    /// Opens the netlink socket. Needs a tokio runtime.
    pub fn new() -> std::io::Result<HostInterfaces> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        Ok(HostInterfaces {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// Every interface but loopback, sorted by name.
    pub async fn read(&self) -> Result<Vec<InterfaceFacts>, rtnetlink::Error> {
        let mut links = BTreeMap::new();
        let mut s = self.handle.link().get().execute();
        while let Some(m) = s.try_next().await? {
            let l = read_link(&m);
            links.insert(l.index, l);
        }
        let mut s = self.handle.address().get().execute();
        while let Some(m) = s.try_next().await? {
            if let Some((index, net)) = read_address(&m) {
                if let Some(l) = links.get_mut(&index) {
                    l.addrs.push(net);
                }
            }
        }
        let mut out: Vec<InterfaceFacts> = links
            .into_values()
            .filter(|l| l.name != "lo")
            .map(|l| {
                let mut subnets: Vec<_> = l.addrs.iter().map(|a| a.trunc()).collect();
                subnets.sort();
                subnets.dedup();
                InterfaceFacts {
                    name: l.name,
                    up: l.up,
                    subnets,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl Drop for HostInterfaces {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
