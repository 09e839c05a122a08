-- Batches own their events by range (schema v8).
--
-- A batch holds its product's uploadable events (local_only = 0) with seq
-- from first_seq to last_seq: sealing takes the oldest pending events of a
-- product, so those ranges never overlap and everything of the product
-- above the highest last_seq is pending. Sealing used to write each
-- event's batch_id too, rewriting every row (and two indexes) once more
-- between its insert and its upload: as much work as the insert itself.
-- Sealing now writes only the batch row; batch_id is no longer used.
UPDATE events SET batch_id = NULL WHERE batch_id IS NOT NULL;
DROP INDEX events_by_batch;
-- The highest sealed seq of a product, read by every seal.
CREATE INDEX batches_by_product ON batches (product, last_seq);
