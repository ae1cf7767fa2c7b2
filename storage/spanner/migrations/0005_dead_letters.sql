-- Store notifications that could not become events (storage/dead_letters.py,
-- docs/INGESTION.md): kept with their reason until a fix and a replay resolve them.
-- One row per delivery (the store's own id: notificationUUID, Stripe event id, Pub/Sub
-- messageId); `Payload` is the verified, decoded notification as JSON. Few rows, read
-- only by operators: a table of its own, not interleaved under a user.
CREATE TABLE IF NOT EXISTS DeadLetters (
    Source STRING(32) NOT NULL,
    DeliveryId STRING(MAX) NOT NULL,
    Payload STRING(MAX) NOT NULL,
    Reason STRING(64) NOT NULL,
    Detail STRING(MAX) NOT NULL,
    ReceivedAt TIMESTAMP NOT NULL,
    Attempts INT64 NOT NULL,
    ResolvedAt TIMESTAMP,
) PRIMARY KEY (Source, DeliveryId);
