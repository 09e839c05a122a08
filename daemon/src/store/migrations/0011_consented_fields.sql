-- Consent covers each event's fields (schema v11).

-- The fields of each event in `events`, one line per event in the same
-- order, as `field=kind,...` (`kind`: enum, int, bool or string:N; an
-- event without fields has an empty line). NULL for a set recorded before
-- this version: it covers its events by name. Kept apart from `events`,
-- which stays names only, so a daemon of schema 10 never reads a line it
-- would take for an event name (it steps aside for this schema anyway).
ALTER TABLE consented_events ADD COLUMN fields TEXT;
