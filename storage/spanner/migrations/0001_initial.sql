-- Initial schema (GoogleSQL): one row per user in Users, and the tuples of AccountState in
-- child tables interleaved in it, so one user's rows are stored together and read in one
-- query. Deleting a user deletes all their rows (ON DELETE CASCADE).
-- Timestamps are TIMESTAMP (UTC); enums are stored by their value; `Position` keeps the
-- order of each tuple of AccountState.
-- Every statement can run twice (IF NOT EXISTS): DDL is not transactional, so a migration
-- interrupted before it was recorded in SchemaMigrations is run again in full.

CREATE TABLE IF NOT EXISTS Users (
    UserId STRING(MAX) NOT NULL,
    Version INT64 NOT NULL,
    HomeMarket STRING(MAX),
    StudentVerifiedUntil TIMESTAMP,
    CONSTRAINT UsersVersionPositive CHECK (Version >= 1),
) PRIMARY KEY (UserId);

CREATE TABLE IF NOT EXISTS Subscriptions (
    UserId STRING(MAX) NOT NULL,
    SubscriptionId STRING(MAX) NOT NULL,
    Position INT64 NOT NULL,
    PlanId STRING(MAX) NOT NULL,
    Status STRING(MAX) NOT NULL,
    Store STRING(MAX) NOT NULL,
    StartedAt TIMESTAMP NOT NULL,
    CurrentPeriodEnd TIMESTAMP NOT NULL,
    GracePeriodEnd TIMESTAMP,
    AutoRenew BOOL NOT NULL,
    LastEventAt TIMESTAMP,
    OfferId STRING(MAX),
) PRIMARY KEY (UserId, SubscriptionId),
  INTERLEAVE IN PARENT Users ON DELETE CASCADE;

CREATE TABLE IF NOT EXISTS Grants (
    UserId STRING(MAX) NOT NULL,
    GrantId STRING(MAX) NOT NULL,
    Position INT64 NOT NULL,
    Kind STRING(MAX) NOT NULL,
    FeatureId STRING(MAX),
    PlanId STRING(MAX),
    QuotaValue INT64,
    StartsAt TIMESTAMP NOT NULL,
    ExpiresAt TIMESTAMP,
    RevokedAt TIMESTAMP,
    CONSTRAINT GrantsFeatureOrPlan CHECK ((FeatureId IS NULL) != (PlanId IS NULL)),
) PRIMARY KEY (UserId, GrantId),
  INTERLEAVE IN PARENT Users ON DELETE CASCADE;

CREATE TABLE IF NOT EXISTS Redemptions (
    UserId STRING(MAX) NOT NULL,
    Position INT64 NOT NULL,
    OfferId STRING(MAX) NOT NULL,
    OfferGroup STRING(MAX) NOT NULL,
    RedeemedAt TIMESTAMP NOT NULL,
    Store STRING(MAX) NOT NULL,
) PRIMARY KEY (UserId, Position),
  INTERLEAVE IN PARENT Users ON DELETE CASCADE;

CREATE TABLE IF NOT EXISTS HouseholdMemberships (
    UserId STRING(MAX) NOT NULL,
    Position INT64 NOT NULL,
    HouseholdId STRING(MAX) NOT NULL,
    Role STRING(MAX) NOT NULL,
    ManagerUserId STRING(MAX) NOT NULL,
    JoinedAt TIMESTAMP NOT NULL,
    LeftAt TIMESTAMP,
) PRIMARY KEY (UserId, Position),
  INTERLEAVE IN PARENT Users ON DELETE CASCADE;

-- Not interleaved: a household's members are different users.
CREATE INDEX IF NOT EXISTS HouseholdMembershipsByHousehold
    ON HouseholdMemberships (HouseholdId);
