-- Events dropped because the store reached its size limit, per product,
-- not yet reported upstream. The count goes out as a `telemetry_dropped`
-- line in the product's next batch, so maintainers see the gap.
CREATE TABLE dropped (
    product  TEXT    PRIMARY KEY,
    events   INTEGER NOT NULL,
    since_us INTEGER NOT NULL
) WITHOUT ROWID;
