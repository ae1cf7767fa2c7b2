-- Every accepted subscription event (issue 20: a subscription is the fold of its events,
-- service/domain/events.py), interleaved in the user like every other part of their
-- state (one locality group, one read): one row per kept event in fold order
-- (`Position`), with the event as sent (`Payload`, JSON text) and when the service
-- accepted it (`RecordedAt`), or a snapshot of compacted events (`Kind` = 'snapshot').
-- The Subscriptions rows become a cache of the fold, written in the same transaction.
--
-- No backfill: a subscription row without events (written before this migration, or by
-- a server of an earlier version during a rollout) is folded as a snapshot of itself when
-- its next event arrives, in that event's transaction (docs/SUBSCRIPTION_FOLD.md,
-- "Migration and rollout"). IF NOT EXISTS: a migration may run twice.
CREATE TABLE IF NOT EXISTS SubscriptionEvents (
    UserId STRING(MAX) NOT NULL,
    Position INT64 NOT NULL,
    SubscriptionId STRING(MAX) NOT NULL,
    EventId STRING(MAX) NOT NULL,
    Kind STRING(MAX) NOT NULL,
    OccurredAt TIMESTAMP NOT NULL,
    RecordedAt TIMESTAMP NOT NULL,
    Payload STRING(MAX) NOT NULL,
) PRIMARY KEY (UserId, Position),
  INTERLEAVE IN PARENT Users ON DELETE CASCADE;

-- How many kept events a Subscriptions row is the fold of (Subscription.folded_events).
-- A server of an earlier version rewrites the rows (delete and `replace`) without naming
-- it, so it reads NULL there: the next event's fold starts from that row
-- (service.domain.events.rebased), and nothing an older server applied is lost.
ALTER TABLE Subscriptions ADD COLUMN IF NOT EXISTS FoldedEvents INT64;
