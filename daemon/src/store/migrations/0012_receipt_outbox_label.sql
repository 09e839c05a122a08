-- A receipt names the local outbox without its directory (schema v12):
-- nothing stored may hold a path (under a home directory, the user's
-- name). Receipts written before this version named it `outbox:PATH`.
UPDATE receipts SET destination = 'outbox' WHERE destination LIKE 'outbox:%';
