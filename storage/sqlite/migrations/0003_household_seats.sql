-- Household rosters: on a manager's account, a seat per member is a MANAGER-role
-- membership naming the member (HouseholdMembership.member_user_id); NULL on every
-- other membership.
ALTER TABLE household_memberships ADD COLUMN member_user_id TEXT;
