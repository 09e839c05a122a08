//! Acting on consent changes inside the store, each in one transaction.
//!
//! | last applied → new | what happens to the product's stored events |
//! |---|---|
//! | `on` → `off` | all deleted; one `telemetry_off` event recorded and sealed as the final batch, unless no manifest here describes the product and it never sealed a batch under its current ID (see [`Announce`]) |
//! | `local` → `off` | all deleted but an unsent final batch; nothing new recorded |
//! | `on` → `local` | pending and sealed events become local-only: never uploaded |
//! | `off`/`local` → `on` | nothing uploadable exists (inserts are checked against the applied mode); stray rows are made local-only |
//!
//! A decision carries the user file's last `off=` time. If it differs from
//! the one last applied, the user turned the product off in between (while
//! the daemon was down, say) and on again: the `off` is applied first —
//! purge and final event — then the new mode.
//!
//! Inserts compare each record's checked mode with the applied one on this
//! same thread, so an event can never be stored as uploadable after an
//! `off` or a switch to `local` that won the race.

use super::seal::seal_in;
use super::{dedup, now_us, sql, Inner, StoreError, StoreOptions, IN_FINAL, PENDING};
use crate::record::Record;
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};
use telemetry_proto::Mode;

/// A consented event set: each event's name and its fields as the consent
/// command writes them (`field=kind,...`); `None` for a set recorded before
/// fields were (schema 11), which covers its events by name.
pub type ConsentedSet = Vec<(String, Option<String>)>;

/// The user's decision for a product, as applied by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The mode (undecided = off).
    pub mode: Mode,
    /// The user file's last `off=` time.
    pub off_marker: Option<String>,
}

impl Default for Decision {
    /// Undecided: off.
    fn default() -> Decision {
        Decision {
            mode: Mode::Off,
            off_marker: None,
        }
    }
}

/// Whether an `on` → `off` records the final `telemetry_off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// A manifest here describes the product: always.
    Installed,
    /// No manifest here describes it (a slip of the name, a product not
    /// installed yet, or one uninstalled since): only if it ever sealed a
    /// batch under its current ID, so its vendor may know this machine.
    /// Otherwise the off would tell the vendor, once the product is
    /// installed, that this machine has it.
    IfKnown,
}

impl Announce {
    /// Whether `product`'s final event (an off's, a forget's marker) may
    /// be recorded, in `conn`'s open transaction: a batch sealed under the
    /// product's current ID left its key counter (a forget starts it
    /// again), so look before a forget deletes it.
    pub(super) fn allows(
        self,
        conn: &rusqlite::Connection,
        product: &str,
    ) -> rusqlite::Result<bool> {
        match self {
            Announce::Installed => Ok(true),
            Announce::IfKnown => conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM key_counters WHERE product = ?1)",
                params![product],
                |r| r.get(0),
            ),
        }
    }
}

/// What applying a consent decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConsentOutcome {
    /// Stored events deleted because the product was turned off.
    pub purged: u64,
    /// Events moved to local-only because the product went `on` → `local`.
    pub made_local: u64,
    /// A final `telemetry_off` event was recorded and sealed for upload.
    pub final_event: bool,
}

impl Inner {
    pub(super) fn apply_consent(
        &mut self,
        product: &str,
        decision: Decision,
        final_record: Record,
        announce: Announce,
    ) -> Result<ConsentOutcome, StoreError> {
        // Only an off deletes on the user's word.
        if decision.mode != Mode::Off {
            return self.apply_consent_rows(product, decision, final_record, announce);
        }
        self.erase(
            |inner| inner.apply_consent_rows(product, decision, final_record, announce),
            |out| out.purged > 0,
        )
    }

    fn apply_consent_rows(
        &mut self,
        product: &str,
        decision: Decision,
        final_record: Record,
        announce: Announce,
    ) -> Result<ConsentOutcome, StoreError> {
        let old = self.applied.get(product).cloned();
        if old.as_ref() == Some(&decision) {
            return Ok(ConsentOutcome::default());
        }
        let old = old.unwrap_or_default();
        let now = now_us(&self.opts.clock);
        let mut out = ConsentOutcome::default();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("applying consent"))?;
        let mut from = old.mode;
        if decision.off_marker.is_some()
            && decision.off_marker != old.off_marker
            && from != Mode::Off
        {
            // An off we never saw happened since: apply it first.
            transition(
                &self.opts,
                &tx,
                product,
                from,
                Mode::Off,
                &final_record,
                announce,
                now,
                &mut out,
            )?;
            from = Mode::Off;
        }
        transition(
            &self.opts,
            &tx,
            product,
            from,
            decision.mode,
            &final_record,
            announce,
            now,
            &mut out,
        )?;
        // A decision without a version was given for the catalogue of its
        // time: a new decision needs a new snapshot.
        tx.execute(
            "DELETE FROM consented_events WHERE product = ?1 AND version = 0",
            params![product],
        )
        .map_err(sql("applying consent"))?;
        tx.execute(
            "INSERT INTO consent_applied (product, mode, off_marker, since_us) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (product) DO UPDATE SET
                 mode = excluded.mode, off_marker = excluded.off_marker, since_us = excluded.since_us",
            params![product, decision.mode.as_str(), decision.off_marker, now],
        )
        .map_err(sql("applying consent"))?;
        tx.commit().map_err(sql("applying consent"))?;

        self.applied.insert(product.to_string(), decision);
        // Rare and small: recount rather than track every case by hand.
        self.load_counters()?;
        Ok(out)
    }
}

impl Inner {
    pub(super) fn consented_events(
        &mut self,
        product: &str,
        version: u32,
        offer: Option<ConsentedSet>,
    ) -> Result<Option<ConsentedSet>, StoreError> {
        // Names and fields go to columns of their own (schema 11).
        if let Some(set) = offer {
            let names: Vec<&str> = set.iter().map(|(name, _)| name.as_str()).collect();
            let fields: Option<Vec<&str>> = set.iter().map(|(_, f)| f.as_deref()).collect();
            self.conn
                .execute(
                    "INSERT OR IGNORE INTO consented_events (product, version, events, fields, recorded_us)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        product,
                        version,
                        names.join("\n"),
                        fields.map(|f| f.join("\n")),
                        now_us(&self.opts.clock)
                    ],
                )
                .map_err(sql("recording the consented event set"))?;
        }
        let row: Option<(String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT events, fields FROM consented_events WHERE product = ?1 AND version = ?2",
                params![product, version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql("reading the consented event set"))?;
        Ok(row.map(|(events, fields)| {
            // `split`, not `lines`: an event without fields is an empty
            // line, the last one included. Should the two columns ever
            // disagree, no field is taken as consented to (the safe side).
            let fields: Option<Vec<&str>> = fields.as_deref().map(|f| {
                let f: Vec<&str> = f.split('\n').collect();
                if f.len() == events.lines().count() {
                    f
                } else {
                    vec![""; events.lines().count()]
                }
            });
            events
                .lines()
                .enumerate()
                .map(|(i, name)| {
                    // None: recorded before fields were, covered by name.
                    let f = fields.as_ref().map(|f| f[i].to_string());
                    (name.to_string(), f)
                })
                .collect()
        }))
    }
}

/// Move `product`'s stored events from mode `from` to mode `to` in `tx`.
#[allow(clippy::too_many_arguments)]
fn transition(
    opts: &StoreOptions,
    tx: &Transaction<'_>,
    product: &str,
    from: Mode,
    to: Mode,
    final_record: &Record,
    announce: Announce,
    now: i64,
    out: &mut ConsentOutcome,
) -> Result<(), StoreError> {
    let err = sql("applying consent");
    if to != Mode::On {
        // Counts from a time the user now says must not leave, do not.
        tx.execute("DELETE FROM dropped WHERE product = ?1", params![product])
            .map_err(sql("applying consent"))?;
    }
    match (from, to) {
        (Mode::On | Mode::Local, Mode::Off) => {
            // An unsent final batch from an earlier off stays: it is
            // the one thing the user agreed to send at that off.
            dedup::forget_ids(
                tx,
                &format!("product = ?1 AND NOT {IN_FINAL}"),
                params![product],
            )
            .map_err(sql("applying consent"))?;
            out.purged += tx
                .execute(
                    &format!("DELETE FROM events WHERE product = ?1 AND NOT {IN_FINAL}"),
                    params![product],
                )
                .map_err(err)? as u64;
            tx.execute(
                "DELETE FROM batches WHERE product = ?1 AND final = 0",
                params![product],
            )
            .map_err(sql("applying consent"))?;
            let announce = from == Mode::On
                && announce
                    .allows(tx, product)
                    .map_err(sql("applying consent"))?;
            if announce {
                tx.execute(
                    "INSERT INTO events (id, product, line, received_us, local_only)
                         VALUES (?1, ?2, ?3, ?4, 0)",
                    params![&final_record.id[..], product, final_record.line, now],
                )
                .map_err(sql("applying consent"))?;
                out.final_event |= seal_in(tx, opts, product, now, true)?.is_some();
            }
        }
        (Mode::On, Mode::Local) => {
            out.made_local += tx
                .execute(
                    &format!(
                        "UPDATE events SET local_only = 1
                         WHERE product = ?1 AND local_only = 0 AND NOT {IN_FINAL}"
                    ),
                    params![product],
                )
                .map_err(err)? as u64;
            tx.execute(
                "DELETE FROM batches WHERE product = ?1 AND final = 0",
                params![product],
            )
            .map_err(sql("applying consent"))?;
        }
        (Mode::Off | Mode::Local, Mode::On) => {
            // Nothing recorded before this moment may go out.
            out.made_local += tx
                .execute(
                    &format!("UPDATE events SET local_only = 1 WHERE product = ?1 AND {PENDING}"),
                    params![product],
                )
                .map_err(err)? as u64;
        }
        _ => {}
    }
    Ok(())
}
