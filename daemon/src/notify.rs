//! The systemd notification protocol (`sd_notify`), without libsystemd.
//!
//! When systemd starts the daemon with `Type=notify` it sets
//! `NOTIFY_SOCKET` to a datagram socket; we send `READY=1` once the
//! listener and the store are ready, `STATUS=…` lines for `systemctl
//! status`, `WATCHDOG=1` pings when `WatchdogSec=` is set, and
//! `STOPPING=1` when shutdown begins. Without `NOTIFY_SOCKET` every call is
//! a no-op.

#[cfg(unix)]
use std::os::unix::net::{SocketAddr, UnixDatagram};

#[cfg(unix)]
type Target = (UnixDatagram, SocketAddr);
/// Windows has no `NOTIFY_SOCKET`: the service control manager learns the
/// service's state from the service's own handler.
#[cfg(not(unix))]
type Target = std::convert::Infallible;

/// Sends notifications to the service manager, if there is one.
pub struct Notifier {
    target: Option<Target>,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`'s value: a path, or `@name` for a
    /// Linux abstract socket. `None` (or an unusable value) disables it.
    pub fn new(socket: Option<&str>) -> Notifier {
        #[cfg(unix)]
        let target = socket.and_then(|s| {
            let addr = address(s)?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        #[cfg(not(unix))]
        let target = socket.and(None);
        Notifier { target }
    }

    /// Whether a service manager is listening.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Send one notification (newline-separated `KEY=VALUE` lines). Errors
    /// are logged, never fatal: the service manager is a courtesy.
    pub fn send(&self, message: &str) {
        #[cfg(not(unix))]
        let _ = message;
        #[cfg(unix)]
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }
}

#[cfg(unix)]
fn address(s: &str) -> Option<SocketAddr> {
    if let Some(name) = s.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            return SocketAddr::from_abstract_name(name.as_bytes()).ok();
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return None;
        }
    }
    if s.starts_with('/') {
        SocketAddr::from_pathname(s).ok()
    } else {
        None
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket_and_is_a_no_op_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str());
        assert!(n.enabled());
        n.send("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");

        let off = Notifier::new(None);
        assert!(!off.enabled());
        off.send("READY=1");
        assert!(!Notifier::new(Some("relative/path")).enabled());
    }
}
