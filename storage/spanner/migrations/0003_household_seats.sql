-- Household rosters: on a manager's account, a seat per member is a MANAGER-role
-- membership naming the member (HouseholdMembership.member_user_id); NULL on every
-- other membership. IF NOT EXISTS: a migration may run twice (storage.spanner.schema).
ALTER TABLE HouseholdMemberships ADD COLUMN IF NOT EXISTS MemberUserId STRING(MAX);
