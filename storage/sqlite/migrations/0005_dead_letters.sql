-- Store notifications that could not become events (storage/dead_letters.py,
-- docs/INGESTION.md): kept with their reason until a fix and a replay resolve them.
-- One row per delivery (the store's own id: notificationUUID, Stripe event id, Pub/Sub
-- messageId); `payload` is the verified, decoded notification as JSON.
CREATE TABLE dead_letters (
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    received_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    resolved_at TEXT,
    PRIMARY KEY (source, delivery_id)
);
CREATE INDEX dead_letters_open ON dead_letters (resolved_at, received_at);
