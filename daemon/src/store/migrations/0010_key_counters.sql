-- Numbers for object keys, per product (schema v10).
--
-- An object key ends in {machine8}-{first}-{last}. These were the batch's
-- first and last event sequence numbers in the store, which every product
-- shares and which start at the store's creation time: two products'
-- objects from one machine then carried the same 13-digit start, and the
-- gaps between one product's keys counted the events of the others. A
-- forget's marker (old ID) and the next batch (new ID) had adjacent
-- numbers, linking the two IDs the forget was meant to separate.
--
-- Now each product numbers its own events from a start in 2^40..2^53
-- derived from this store's random secret, the product and its forget
-- salt: unrelated between products, new after a forget, and the same when
-- a store restored from an earlier copy of itself (a VM snapshot) seals
-- the same events again, so the batch goes to the same key. first..=last
-- counts exactly the batch's events, so nothing in a key says anything
-- about another product. A store re-created after a wipe (the machine ID,
-- and so machine8, can be the same) has a new secret: two ranges of a
-- product's lifetime of events overlap with a chance of the order of
-- 10^-9, where an overlap would make a batch look already uploaded.
CREATE TABLE key_counters (
    product TEXT PRIMARY KEY,
    next    INTEGER NOT NULL   -- the number the next batch's first event gets
);
CREATE TABLE key_secret (
    only   INTEGER PRIMARY KEY CHECK (only = 1),
    secret BLOB NOT NULL       -- never leaves the store
);
INSERT INTO key_secret (only, secret) VALUES (1, randomblob(32));
