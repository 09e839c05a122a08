//! The platform seam: how clients reach the daemon and who they are.
//!
//! A Unix socket on Linux and macOS ([`unix`]), a named pipe on Windows
//! (`windows`). Each platform module gives the same names:
//!
//! - `Listener` with `accept()`, yielding a `Conn` (an async byte stream);
//! - `peer_identity(&Conn)` and `own_identity()`, compared by
//!   [`PeerIdentity::may_administer`] to gate the admin-only requests;
//! - `ReplyTo`, `second_handle(&Conn)` and `write_now`: a second handle on a
//!   connection through which the store thread writes an acknowledgement
//!   itself, where the platform allows it (on Windows it never does, and
//!   the connection task writes every answer);
//! - `open_file_limit()`, which decides whether there is room for those
//!   second handles.
//!
//! The server, the handlers and the store see only these names.

#[cfg(unix)]
pub mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
pub use self::windows::*;

/// Who is on the other end of a connection, as the operating system says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// A Unix user id (`SO_PEERCRED` / `getpeereid`).
    Uid(u32),
    /// A Windows security identifier, as a string (`S-1-5-21-...`).
    Sid(String),
    /// A Windows SID whose token has the Administrators group enabled (an
    /// elevated administrator): may administer any daemon, as root may.
    ElevatedSid(String),
    /// The OS did not say: never trusted.
    Unknown,
}

pub use telemetry_platform::LOCAL_SYSTEM_SID;

impl PeerIdentity {
    /// Whether this peer may make the requests that change or reveal
    /// stored data of a daemon running as `daemon`: the same user, or the
    /// system's own administrator account (root; LocalSystem).
    pub fn may_administer(&self, daemon: &PeerIdentity) -> bool {
        match (self, daemon) {
            (PeerIdentity::Unknown, _) => false,
            (PeerIdentity::Uid(0), _) => true,
            (PeerIdentity::ElevatedSid(_), _) => true,
            (PeerIdentity::Sid(s), _) if s == LOCAL_SYSTEM_SID => true,
            (PeerIdentity::Uid(me), PeerIdentity::Uid(daemon)) => me == daemon,
            (me, daemon) => me.sid().is_some() && me.sid() == daemon.sid(),
        }
    }

    /// The Windows SID, elevated or not.
    pub fn sid(&self) -> Option<&str> {
        match self {
            PeerIdentity::Sid(s) | PeerIdentity::ElevatedSid(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this peer is the same account as `daemon` (what it writes
    /// with `telemetryctl consent` is then the file the daemon reads);
    /// root and elevated administrators of another account are not.
    pub fn same_account(&self, daemon: &PeerIdentity) -> bool {
        match (self, daemon) {
            (PeerIdentity::Uid(me), PeerIdentity::Uid(daemon)) => me == daemon,
            (PeerIdentity::Unknown, _) | (_, PeerIdentity::Unknown) => false,
            (me, daemon) => me.sid().is_some() && me.sid() == daemon.sid(),
        }
    }

    /// For messages: `uid 1000`, `SID S-1-5-21-...`, `unknown`.
    pub fn describe(&self) -> String {
        match self {
            PeerIdentity::Uid(u) => format!("uid {u}"),
            PeerIdentity::Sid(s) => format!("SID {s}"),
            PeerIdentity::ElevatedSid(s) => format!("SID {s} (elevated)"),
            PeerIdentity::Unknown => "unknown".to_string(),
        }
    }

    /// The administrator's account on this identity's platform, for
    /// messages.
    pub fn administrator(&self) -> &'static str {
        match self {
            PeerIdentity::Sid(_) | PeerIdentity::ElevatedSid(_) => {
                "LocalSystem or an elevated administrator"
            }
            _ => "root",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_user_and_the_administrator_may_administer() {
        let me = PeerIdentity::Uid(1000);
        assert!(PeerIdentity::Uid(1000).may_administer(&me));
        assert!(PeerIdentity::Uid(0).may_administer(&me));
        assert!(!PeerIdentity::Uid(1001).may_administer(&me));
        assert!(!PeerIdentity::Unknown.may_administer(&me));
        let sid = PeerIdentity::Sid("S-1-5-21-1-2-3-1001".into());
        assert!(sid.may_administer(&sid.clone()));
        assert!(PeerIdentity::Sid(LOCAL_SYSTEM_SID.into()).may_administer(&sid));
        assert!(!PeerIdentity::Sid("S-1-5-21-1-2-3-1002".into()).may_administer(&sid));
        // Elevation does not change who the user is, and an elevated
        // administrator may administer anyone's daemon.
        let elevated = PeerIdentity::ElevatedSid("S-1-5-21-1-2-3-1001".into());
        assert!(sid.may_administer(&elevated));
        assert!(PeerIdentity::ElevatedSid("S-1-5-21-1-2-3-1002".into()).may_administer(&sid));
        assert!(!PeerIdentity::Unknown.may_administer(&PeerIdentity::Unknown));
    }
}
