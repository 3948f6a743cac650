//! The graceful restart marker (RFC 4724 §4.1): a planned stop writes until when the routers
//! keep our routes; the next start reads it and, while that time has not passed, sets the R
//! bit ("I have restarted") in its OPENs. Without the R bit a router that still holds our
//! stale routes drops them the moment the new session comes up (RFC 4724 §4.2), before
//! the table is sent again.
//!
//! It lives next to the local API socket (`/run/edgelb` in the DaemonSet, a hostPath), so
//! it outlives the pod on a rolling update and is gone after a reboot, when no router still
//! holds anything.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file name, in the directory of the local API socket.
pub const FILE_NAME: &str = "bgp-restart";

/// Where the marker of a speaker whose local API socket is `socket` lives.
pub fn path_for_socket(socket: &Path) -> PathBuf {
    socket.with_file_name(FILE_NAME)
}

/// The marker's content: the Unix second until which routers keep our routes.
pub fn render(until: SystemTime) -> String {
    let secs = until
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("until={secs}\n")
}

/// Whether a marker with this content says the restart window is still open at `now`.
/// Anything unreadable is no restart (the R bit is then simply not set). Pure.
pub fn is_fresh(content: &str, now: SystemTime) -> bool {
    let Some(secs) = content
        .trim()
        .strip_prefix("until=")
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return false;
    };
    UNIX_EPOCH + Duration::from_secs(secs) > now
}

/// Writes the marker for a restart window of `restart_time` from `now`.
pub fn write(path: &Path, now: SystemTime, restart_time: Duration) -> std::io::Result<()> {
    std::fs::write(path, render(now + restart_time))
}

/// Reads the marker: true while its window is open. A missing file is no restart.
pub fn read(path: &Path, now: SystemTime) -> bool {
    match std::fs::read_to_string(path) {
        Ok(content) => is_fresh(&content, now),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the graceful restart marker");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_fresh_until_its_time_and_garbage_is_not_a_restart() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let m = render(t + Duration::from_secs(120));
        assert_eq!(m, "until=1000120\n");
        assert!(is_fresh(&m, t));
        assert!(is_fresh(&m, t + Duration::from_secs(119)));
        assert!(!is_fresh(&m, t + Duration::from_secs(120)));
        assert!(!is_fresh("", t));
        assert!(!is_fresh("until=soon", t));
    }

    #[test]
    fn the_marker_sits_beside_the_socket() {
        assert_eq!(
            path_for_socket(Path::new("/run/edgelb/speaker.sock")),
            PathBuf::from("/run/edgelb/bgp-restart")
        );
    }

    #[test]
    fn written_then_read() {
        let dir = std::env::temp_dir().join(format!("edgelb-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(FILE_NAME);
        let now = SystemTime::now();
        write(&p, now, Duration::from_secs(30)).unwrap();
        assert!(read(&p, now));
        assert!(!read(&p, now + Duration::from_secs(31)));
        assert!(!read(&dir.join("missing"), now));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
