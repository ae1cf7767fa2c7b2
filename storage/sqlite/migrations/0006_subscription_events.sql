-- Every accepted subscription event (issue 20: a subscription is the fold of its events,
-- service/domain/events.py): one row per kept event of the user's subscriptions, in fold
-- order (`position`), with the event as sent (`payload`, JSON text) and when the service
-- accepted it (`recorded_at`), or a snapshot of compacted events (`kind` = 'snapshot').
-- The subscriptions rows become a cache of the fold, written in the same transaction.
--
-- No backfill: a subscription row without events (written before this migration, or by
-- a server of an earlier version during a rollout) is folded as a snapshot of itself when
-- its next event arrives, in that event's transaction (docs/SUBSCRIPTION_FOLD.md,
-- "Migration and rollout").
CREATE TABLE subscription_events (
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    subscription_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (user_id, position)
);

-- How many kept events a subscriptions row is the fold of (Subscription.folded_events).
-- A server of an earlier version rewrites the rows without naming it, so it reads NULL
-- there: the next event's fold starts from that row (service.domain.events.rebased), and
-- nothing an older server applied during a rollout is lost.
ALTER TABLE subscriptions ADD COLUMN folded_events INTEGER;
