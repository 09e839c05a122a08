//! Leading: a connection's reader commits a small insert itself when the
//! store thread has nothing to do and no other client is expected.
//!
//! Why: a request handed to the store thread pays a wakeup of that thread
//! on top of the one that woke its reader, and on a small VM a wakeup
//! costs about a third of a one-event request. A reader that finds the
//! store free commits its request at once, as a lockstep server would: a
//! shim, or a lone client sending event after event. The commit, the
//! answer and the durability are the store thread's own
//! (`Inner::commit`).
//!
//! When not: while other clients answered by a recent commit are on their
//! way back, the request goes to the store thread, which waits for them to
//! share one fsync (`Inner::gather`); committed alone it would split them
//! into cohorts (measured: at sync=full, 8 clients lost half their rate).
//! Nor when the store thread has a command it has not finished (queued,
//! or taken and not yet run: `Queued`), or the store is held: the store
//! thread is busy, and the request joins its next commit.
//!
//! Bounds: the reader is a runtime worker, blocked for one commit of at
//! most [`MAX_LED_EVENTS`] events. `try_lock` lets one in at a time, so
//! the others go on serving connections even if the disk stalls. That
//! commit is usually small, but it is the one that pays for whatever the
//! store does at a commit: making room when the store is full
//! (`bound::make_room`), the dedup generation's turn, or SQLite's own
//! backstop checkpoint if the checkpoint thread has fallen 4,000 pages
//! behind.
//!
//! Order: only a request with nothing of its connection's before it
//! unanswered may lead (`alone`), and only when every command sent to the
//! store thread is finished, so an `ack=false` insert sent before it is
//! committed; the led request is committed before the reader reads the
//! connection's next request.

use super::*;

/// Most events a request may carry and still be led: a larger one is
/// worth the handoff, and would keep a worker from its connections longer.
const MAX_LED_EVENTS: usize = 64;

impl Store {
    /// Commit an insert on the caller's thread; gives it back when it must
    /// be queued instead (see the module's "When not").
    pub(super) fn lead(
        &self,
        alone: bool,
        client: Option<u64>,
        records: Vec<Record>,
        done: Done,
    ) -> Option<(Vec<Record>, Done)> {
        if !alone || records.len() > MAX_LED_EVENTS || !self.queued.none() {
            return Some((records, done));
        }
        let mut inner = match self.inner.try_lock() {
            Ok(inner) => inner,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Some((records, done)),
        };
        if inner.others_expected(client) {
            return Some((records, done));
        }
        inner.commit(vec![(records, Some(done))]);
        // If it comes back, it comes alone (so, to lead again).
        inner.last_clients = client.into_iter().collect();
        None
    }
}

impl Inner {
    /// Whether the last commit answered a client other than `client`
    /// recently enough that it may be on its way back (the clients
    /// [`Inner::gather`] would wait for).
    fn others_expected(&self, client: Option<u64>) -> bool {
        others_expected(
            &self.last_clients,
            self.last_commit_end.elapsed(),
            self.last_commit.min(MAX_GATHER_WAIT),
            client,
        )
    }
}

/// [`Inner::others_expected`], given the last commit's clients, the time
/// since it ended and how long a commit would wait for them.
fn others_expected(
    last: &std::collections::HashSet<u64>,
    since_last_commit: Duration,
    bound: Duration,
    client: Option<u64>,
) -> bool {
    since_last_commit <= bound && last.iter().any(|c| Some(*c) != client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_client_that_would_not_hold_up_a_shared_commit_leads() {
        let ms = Duration::from_millis;
        let last: std::collections::HashSet<u64> = [1, 2].into();
        // Clients 1 and 2 were just answered: they are on their way back,
        // and a commit now should wait for them.
        assert!(others_expected(&last, ms(0), ms(1), Some(3)));
        assert!(others_expected(&last, ms(0), ms(1), None));
        assert!(others_expected(&last, ms(0), ms(1), Some(1)));
        // After a quiet spell nobody is expected.
        assert!(!others_expected(&last, ms(2), ms(1), Some(3)));
        // A lone client, answered last, leads again.
        let alone: std::collections::HashSet<u64> = [1].into();
        assert!(!others_expected(&alone, ms(0), ms(1), Some(1)));
        assert!(others_expected(&alone, ms(0), ms(1), Some(2)));
        assert!(!others_expected(&Default::default(), ms(0), ms(1), None));
    }
}
