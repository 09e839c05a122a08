-- Events of batches a destination refused for good (schema v13): every
-- build in them retired by the vendor, or a day past the broker's window.
-- Kept across restarts so `status` still says where they went (they are
-- not a full store's drops, which `dropped` counts). `destination` is the
-- destination's receipt label: never a path.
CREATE TABLE refused (
    destination TEXT PRIMARY KEY,
    events INTEGER NOT NULL,
    why TEXT NOT NULL,
    since_us INTEGER NOT NULL
);
