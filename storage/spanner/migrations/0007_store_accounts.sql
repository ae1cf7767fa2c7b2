-- Which user a store account belongs to (storage/account_links.py, docs/INGESTION.md):
-- for notifications that do not name our user themselves (a Stripe customer without
-- metadata.user_id, an App Store purchase without appAccountToken). Written by
-- `entitlements link-store-account`. A table of its own: looked up by store account.
CREATE TABLE IF NOT EXISTS StoreAccounts (
    Store STRING(32) NOT NULL,
    AccountId STRING(MAX) NOT NULL,
    UserId STRING(MAX) NOT NULL,
    LinkedAt TIMESTAMP NOT NULL,
) PRIMARY KEY (Store, AccountId);
