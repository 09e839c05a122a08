//! Inserting: requests gathered into one commit, each answered after it;
//! an event is new unless a generation of seen ids has its id (see
//! [`dedup`](super::dedup)).

use super::*;

impl Inner {
    /// Add inserts to `group` (whose first came from `first`) for one
    /// commit; returns a non-insert command taken from the queue on the
    /// way, to run next.
    ///
    /// Everything already queued joins at once. Then, while a connection
    /// answered by the previous commit has not sent again, wait briefly
    /// for it: it was just acknowledged and is sending its next event, and
    /// one fsync for all beats one each. Without this, clients settle into
    /// cohorts that alternate between two half-full commits. The wait ends
    /// as soon as they are all here, and never exceeds the previous
    /// commit's cost (waiting less than a commit to save one never loses
    /// throughput) nor [`MAX_GATHER_WAIT`]. Nobody waits for a client
    /// that is not mid-round-trip: not after a quiet spell (the last commit
    /// ended longer ago than that bound), not for connections on their
    /// first request (a shim's connection never sends again; the handler
    /// passes no client then), and a lone client waits for nobody.
    pub(super) fn gather(
        &mut self,
        rx: &mut mpsc::Receiver<Cmd>,
        first: Option<u64>,
        group: &mut Vec<(Vec<Record>, Option<Done>)>,
    ) -> Option<Cmd> {
        let bound = self.last_commit.min(MAX_GATHER_WAIT);
        let deadline = Instant::now() + bound;
        // Read before looking at the queue, so a send between the look and
        // the wait is not missed.
        let mut seen = self.bell.count();
        let mut missing = awaited(
            std::mem::take(&mut self.last_clients),
            self.last_commit_end.elapsed(),
            bound,
        );
        let mut clients = std::collections::HashSet::new();
        let mut arrived = |client: Option<u64>, missing: &mut std::collections::HashSet<u64>| {
            if let Some(c) = client {
                missing.remove(&c);
                clients.insert(c);
            }
        };
        arrived(first, &mut missing);
        let mut next = None;
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Cmd::Insert {
                    records,
                    reply,
                    client,
                }) => {
                    group.push((records, reply));
                    arrived(client, &mut missing);
                }
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if missing.is_empty() || Instant::now() >= deadline {
                        break;
                    }
                    self.bell.wait(seen, deadline, &missing);
                    // Read before the next look at the queue, as above.
                    seen = self.bell.count();
                }
            }
        }
        self.last_clients = clients;
        next
    }

    /// The product of the first record whose consent is no longer what the
    /// handler checked. This thread also applies consent changes, so a
    /// change that won the race is seen here and nothing slips in after an
    /// off (or as uploadable after a switch to local).
    fn consent_changed(&self, records: &[Record]) -> Option<String> {
        records.iter().find_map(|r| {
            // A local-only record fits `on` too: an event the user has not
            // consented to upload yet (added by a newer manifest version).
            let fits = match self.applied.get(&r.product).map(|d| d.mode) {
                Some(Mode::On) => true,
                Some(Mode::Local) => r.local_only,
                Some(Mode::Off) | None => false,
            };
            (!fits).then(|| r.product.clone())
        })
    }

    /// Commit `group` in one transaction and answer each request; returns
    /// the bytes of rows added.
    pub(super) fn insert_group(&mut self, group: Vec<(Vec<Record>, Option<Done>)>) -> u64 {
        // Requests checked against an earlier look at the consent files
        // (the records of one request share it) are confirmed by one look
        // for the whole commit, made now: after every one of them arrived.
        let generation = |records: &[Record]| records.first().map_or(0, |r| r.consent_generation);
        let look = group
            .iter()
            .any(|(records, _)| generation(records) != 0)
            .then(|| (self.opts.consent_look)());
        let mut checked = Vec::with_capacity(group.len());
        for (records, reply) in group {
            let g = generation(&records);
            if g != 0 && Some(g) != look {
                if let Some(done) = reply {
                    answer(done, Err(StoreError::ConsentStale));
                }
                continue;
            }
            match self.consent_changed(&records) {
                Some(product) => {
                    if let Some(done) = reply {
                        answer(done, Err(StoreError::ConsentChanged { product }));
                    }
                }
                None => checked.push((records, reply)),
            }
        }
        let group = checked;
        if group.is_empty() {
            return 0;
        }
        let now = now_us(&self.opts.clock);
        let stored_bytes = self.stored_bytes();
        let max_bytes = self.opts.max_store_bytes;
        let seen = self.seen;
        type Added = (
            dedup::SeenIds,
            Vec<InsertOutcome>,
            BTreeMap<String, Pending>,
            BTreeMap<String, Pending>,
            bound::Freed,
            u64,
        );
        let result = (|| -> Result<Added, StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("insert"))?;
            let seen = seen.rotated(&tx, now)?;
            // Everything up to here is older than this insert.
            // Cached: parsing and planning this SELECT afresh was a seventh
            // of the store thread's time for a one-event commit.
            let newest_old: i64 = tx
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(sql("insert"))?;
            let mut outcomes = Vec::with_capacity(group.len());
            let mut added: BTreeMap<String, Pending> = BTreeMap::new();
            let mut local_added: BTreeMap<String, Pending> = BTreeMap::new();
            {
                let mut seen_stmt = tx
                    .prepare_cached(seen.record_sql())
                    .map_err(sql("insert"))?;
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO events (id, product, line, received_us, local_only)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(sql("insert"))?;
                for (records, _) in &group {
                    let mut out = InsertOutcome::default();
                    for r in records {
                        let new = seen_stmt
                            .execute(params![&r.id[..], r.product])
                            .map_err(sql("insert"))?;
                        if new == 1 {
                            stmt.execute(params![&r.id[..], r.product, r.line, now, r.local_only])
                                .map_err(sql("insert"))?;
                            out.accepted += 1;
                            let map = if r.local_only {
                                &mut local_added
                            } else {
                                &mut added
                            };
                            // Without a String per row.
                            if !map.contains_key(&r.product) {
                                map.insert(r.product.clone(), Pending::default());
                            }
                            if let Some(p) = map.get_mut(&r.product) {
                                p.events += 1;
                                p.bytes += r.line.len() as u64 + 1;
                            }
                        } else {
                            out.duplicates += 1;
                        }
                    }
                    outcomes.push(out);
                }
            }
            let grown = added
                .values()
                .chain(local_added.values())
                .map(|p| p.bytes)
                .sum::<u64>();
            let freed = if stored_bytes + grown > max_bytes {
                // Every product that may have unsealed or local rows, once.
                let products: Vec<String> = self
                    .unsealed
                    .keys()
                    .chain(self.local.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .cloned()
                    .collect();
                let handed_out: Vec<i64> = self.handed_out.values().copied().collect();
                bound::make_room(
                    &tx,
                    &products,
                    &handed_out,
                    stored_bytes + grown - max_bytes,
                    newest_old,
                    max_bytes,
                    now,
                )?
            } else {
                bound::Freed::default()
            };
            tx.commit().map_err(sql("commit"))?;
            Ok((seen, outcomes, added, local_added, freed, grown))
        })();
        match result {
            Ok((seen, mut outcomes, added, local_added, freed, grown)) => {
                self.seen = seen;
                // How well commits are shared (the streaming tests count
                // these lines).
                tracing::debug!(
                    requests = outcomes.len(),
                    events = outcomes
                        .iter()
                        .map(|o| o.accepted + o.duplicates)
                        .sum::<u32>(),
                    "committed"
                );
                for (product, add) in local_added {
                    let p = self.local.entry(product).or_default();
                    p.events += add.events;
                    p.bytes += add.bytes;
                }
                let mut wake = false;
                for (product, add) in added {
                    let p = self.unsealed.entry(product).or_default();
                    let was_empty = p.events == 0;
                    p.events += add.events;
                    p.bytes += add.bytes;
                    wake |= was_empty
                        || p.events >= self.opts.batch_max_events as u64
                        || p.bytes >= self.opts.batch_max_bytes as u64;
                }
                self.forget_freed(freed);
                for ((_, reply), mut out) in group.into_iter().zip(outcomes.drain(..)) {
                    out.wake_uploader = wake;
                    if let Some(done) = reply {
                        answer(done, Ok(out));
                    }
                }
                grown
            }
            Err(err) => {
                tracing::error!(error = %err, "commit failed; events not acknowledged");
                for (_, reply) in group {
                    if let Some(done) = reply {
                        answer(done, Err(err.clone()));
                    }
                }
                0
            }
        }
    }
}

/// Run one request's answer. A panic in it (a bug in writing that answer)
/// is that request's alone: the others of its commit are still answered,
/// the commit is still accounted for, and the thread that committed (the
/// store thread, or a runtime worker that led) goes on serving. Its
/// requester sees the store as closed; its events are committed.
fn answer(done: Done, outcome: Result<InsertOutcome, StoreError>) {
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(outcome)));
    if answered.is_err() {
        tracing::error!(
            "answering a request panicked; its events are committed, the others are answered"
        );
    }
}
