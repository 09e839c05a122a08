//! The doorbell senders ring so the store thread sleeps, rather than
//! spins, while a commit waits for more inserts (see `Inner::gather`).

use std::time::Instant;

/// Rung by every sender after queueing a command, so the store thread can
/// sleep, not spin, while it waits for inserts to join a commit: spinning
/// would take a core from the very tasks that are about to send. It wakes
/// the store thread only when that changes what it does next — the last
/// awaited client has sent, or a command other than an insert came —
/// rather than once per arrival: with 8 clients that was 8 wakeups of the
/// store thread per commit, each a context switch on a core the clients
/// need.
#[derive(Default)]
pub(super) struct Doorbell {
    state: std::sync::Mutex<Bell>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
pub(super) struct Bell {
    /// Every ring.
    rung: u64,
    /// Rings that must wake the store thread.
    urgent: u64,
    /// The clients a waiting commit still expects.
    pub(super) awaited: std::collections::HashSet<u64>,
}

impl Doorbell {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Bell> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After queueing a command other than an insert: always wakes.
    pub(super) fn ring(&self) {
        let mut bell = self.lock();
        bell.rung += 1;
        bell.urgent += 1;
        self.cv.notify_one();
    }

    /// After queueing an insert from `client` (if any): wakes only when it
    /// was the last one a waiting commit expected.
    pub(super) fn ring_insert(&self, client: Option<u64>) {
        let mut bell = self.lock();
        bell.rung += 1;
        if let Some(c) = client {
            if bell.awaited.remove(&c) && bell.awaited.is_empty() {
                self.cv.notify_one();
            }
        }
    }

    pub(super) fn count(&self) -> u64 {
        self.lock().rung
    }

    /// Wait until every client in `awaited` has rung, an urgent ring comes,
    /// or `until`; returns at once if anything rang since `seen` (it may be
    /// in the queue unread).
    pub(super) fn wait(&self, seen: u64, until: Instant, awaited: &std::collections::HashSet<u64>) {
        let mut bell = self.lock();
        if bell.rung != seen {
            return;
        }
        bell.awaited = awaited.clone();
        let urgent = bell.urgent;
        while !bell.awaited.is_empty() && bell.urgent == urgent {
            let now = Instant::now();
            if now >= until {
                break;
            }
            bell = self
                .cv
                .wait_timeout(bell, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        bell.awaited.clear();
    }
}
