//! Packet captures with tcpdump inside a lab namespace, read back as text lines.
//!
//! `tcpdump -n -e -tt -l` prints one line per frame: Unix time with microseconds, source
//! and destination MAC, then the decoded packet. Tests look for frames by MAC and text and
//! compare their times with `SystemTime` readings taken by the test (same clock).
use super::{wait_until, Netns, NsProcess};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One captured frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub src_mac: String,
    pub dst_mac: String,
    /// The whole tcpdump line.
    pub line: String,
}

impl Frame {
    fn parse(line: &str) -> Option<Frame> {
        let mut words = line.split_whitespace();
        let time = words.next()?.parse().ok()?;
        let src_mac = words.next()?.to_string();
        let _arrow = words.next()?;
        let dst_mac = words.next()?.trim_end_matches(',').to_string();
        Some(Frame {
            time,
            src_mac,
            dst_mac,
            line: line.to_string(),
        })
    }
}

/// A running tcpdump; stopped on drop.
#[derive(Debug)]
pub struct Capture {
    _process: NsProcess,
    out: PathBuf,
}

/// Seconds since the Unix epoch of a `SystemTime`, as tcpdump prints them.
pub fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Capture {
    /// Starts tcpdump on `dev` in `ns` with a pcap `filter` (e.g. `"arp or icmp6"`),
    /// writing to files under `dir`; returns once tcpdump says it is listening.
    pub fn start(ns: &Netns, dev: &str, filter: &str, dir: &Path) -> anyhow::Result<Capture> {
        Capture::start_with(ns, dev, filter, &[], dir)
    }

    /// Like `start`, with extra tcpdump options (e.g. `["-Q", "in"]`).
    pub fn start_with(
        ns: &Netns,
        dev: &str,
        filter: &str,
        options: &[&str],
        dir: &Path,
    ) -> anyhow::Result<Capture> {
        let out = dir.join(format!("capture-{}-{dev}.txt", ns.name()));
        let err = dir.join(format!("capture-{}-{dev}.err", ns.name()));
        let out_s = out.display().to_string();
        let err_s = err.display().to_string();
        let options = options.join(" ");
        let script = format!(
            "exec tcpdump -i {dev} -n -e -tt -l -U -B 8192 {options} {filter:?} >{out_s:?} 2>{err_s:?}"
        );
        let process = ns.spawn(&["sh", "-c", &script], None)?;
        wait_until(
            &format!("tcpdump on {dev} in {}", ns.name()),
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                let text = std::fs::read_to_string(&err).unwrap_or_default();
                Ok(text.contains("listening on").then_some(()))
            },
        )?;
        Ok(Capture {
            _process: process,
            out,
        })
    }

    /// Every frame captured so far.
    pub fn frames(&self) -> anyhow::Result<Vec<Frame>> {
        let text = std::fs::read_to_string(&self.out)
            .with_context(|| format!("reading {}", self.out.display()))?;
        Ok(text.lines().filter_map(Frame::parse).collect())
    }

    /// Frames whose source MAC is `mac` and whose line contains `text`.
    pub fn from_mac(&self, mac: &str, text: &str) -> anyhow::Result<Vec<Frame>> {
        Ok(self
            .frames()?
            .into_iter()
            .filter(|f| f.src_mac.eq_ignore_ascii_case(mac) && f.line.contains(text))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcpdump_line_is_read_into_time_and_macs() {
        let line = "1795504153.440058 2e:0f:dc:5d:9e:2a > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 192.0.2.100 tell 192.0.2.100, length 28";
        let f = Frame::parse(line).expect("frame");
        assert!((f.time - 1795504153.440058).abs() < 1e-6);
        assert_eq!(f.src_mac, "2e:0f:dc:5d:9e:2a");
        assert_eq!(f.dst_mac, "ff:ff:ff:ff:ff:ff");
        assert_eq!(Frame::parse("tcpdump: listening on br0"), None);
    }
}
