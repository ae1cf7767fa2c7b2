-- Initial schema: one row per user plus child rows for the tuples of AccountState.
-- Timestamps are ISO 8601 UTC text with microseconds ("2024-01-31T12:00:00.000000+00:00"),
-- so they also sort correctly as text. Enums are stored by their value. `position` keeps
-- the order of each tuple of AccountState.

CREATE TABLE users (
    user_id TEXT NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version >= 1),
    home_market TEXT,
    student_verified_until TEXT
);

CREATE TABLE subscriptions (
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    subscription_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    plan_id TEXT NOT NULL,
    status TEXT NOT NULL,
    store TEXT NOT NULL,
    started_at TEXT NOT NULL,
    current_period_end TEXT NOT NULL,
    grace_period_end TEXT,
    auto_renew INTEGER NOT NULL CHECK (auto_renew IN (0, 1)),
    last_event_at TEXT,
    offer_id TEXT,
    PRIMARY KEY (user_id, subscription_id),
    UNIQUE (user_id, position)
);

CREATE TABLE grants (
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    grant_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    feature_id TEXT,
    plan_id TEXT,
    quota_value INTEGER,
    starts_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    PRIMARY KEY (user_id, grant_id),
    UNIQUE (user_id, position),
    CHECK ((feature_id IS NULL) <> (plan_id IS NULL))
);

CREATE TABLE redemptions (
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    offer_id TEXT NOT NULL,
    offer_group TEXT NOT NULL,
    redeemed_at TEXT NOT NULL,
    store TEXT NOT NULL,
    PRIMARY KEY (user_id, position)
);

CREATE TABLE household_memberships (
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    household_id TEXT NOT NULL,
    role TEXT NOT NULL,
    manager_user_id TEXT NOT NULL,
    joined_at TEXT NOT NULL,
    left_at TEXT,
    PRIMARY KEY (user_id, position)
);

CREATE INDEX household_memberships_by_household ON household_memberships (household_id);
