-- Which user a store account belongs to (storage/account_links.py, docs/INGESTION.md):
-- for notifications that do not name our user themselves (a Stripe customer without
-- metadata.user_id, an App Store purchase without appAccountToken). Written by
-- `entitlements link-store-account`.
CREATE TABLE store_accounts (
    store TEXT NOT NULL,
    account_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    PRIMARY KEY (store, account_id)
);
