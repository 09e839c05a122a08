-- The product of each remembered event id (schema v16), so that `forget`
-- deletes the ids of a product's events that were already uploaded too: an
-- id is a UUIDv7 carrying its event's time, and the same id is in the
-- uploaded object, so one left behind is a timeline of the forgotten use
-- and a link to what the vendor holds. Older builds insert ids without it
-- (NULL): they still deduplicate as before, and a forget then leaves those
-- rows to age out with their generation. OLDEST_READER stays.
ALTER TABLE seen_ids_a ADD COLUMN product TEXT;
ALTER TABLE seen_ids_b ADD COLUMN product TEXT;
