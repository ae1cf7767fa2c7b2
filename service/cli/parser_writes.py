"""The write commands' command lines: record-event, grant, revoke, redeem-offer, the
household commands and the student verification commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.cli.choices import EVENT_TYPES, GRANT_KINDS, PLATFORMS, STORES
from service.cli.parser_flags import positive, write_command
from service.cli.write_commands import (
    add_household_member,
    create_household,
    grant,
    record_event,
    redeem_offer,
    remove_household_member,
    revoke,
    revoke_student,
    verify_student,
)

if TYPE_CHECKING:
    from service.cli.parser_flags import Commands


def add_write_commands(commands: Commands) -> None:
    _record_event(commands)
    _grant(commands)
    _revoke(commands)
    _redeem_offer(commands)
    _add_household_commands(commands)
    _add_student_commands(commands)


def _record_event(commands: Commands) -> None:
    event = write_command(
        commands,
        "record-event",
        "record a store or checkout event for USER",
        "Records a subscription lifecycle event (as the App Store, Google Play or the web "
        "checkout would send it). Idempotent on the event id (--request-id).",
        "entitlements record-event newbie --type purchased --subscription sub-1 --store web "
        "--plan premium_individual --period-days 30 --market SE",
        "entitlements record-event newbie --type canceled --subscription sub-1 --store web",
        "entitlements record-event newbie --type refunded --subscription sub-1 --store web "
        "--refunded-period-end 2026-12-26T10:00:00+00:00",
    )
    event.add_argument(
        "--type", required=True, choices=sorted(EVENT_TYPES), dest="event_type", help="event"
    )
    event.add_argument("--subscription", required=True, help="the store's subscription id")
    event.add_argument("--store", required=True, choices=sorted(STORES), help="where it was bought")
    event.add_argument("--occurred-at", metavar="TIME", help="ISO 8601 time (default: now)")
    event.add_argument("--plan", help="plan after the event (purchased, trial, plan change)")
    event.add_argument(
        "--period-days", type=float, metavar="N", help="current period ends in N days"
    )
    event.add_argument("--grace-days", type=float, metavar="N", help="grace period ends in N days")
    event.add_argument("--offer", help="the offer the subscription started with")
    event.add_argument("--market", metavar="COUNTRY", help="ISO 3166-1 alpha-2 of the purchase")
    event.add_argument(
        "--refunded-period-end",
        metavar="TIME",
        help="for refunded and refund_reversed (required there): the end of the period the "
        "refunded transaction paid for, exactly as recorded (ISO 8601 with zone; the "
        "'period ends' a write printed, or the store's expiresDate / expiryTime). The "
        "current period's end takes access away; a past one changes nothing",
    )
    event.set_defaults(run=record_event)


def _grant(commands: Commands) -> None:
    new_grant = write_command(
        commands,
        "grant",
        "grant USER a feature or a plan",
        "Grants a feature (with an amount for a quota feature) or a whole plan, from now, "
        "for --days or without end.",
        "entitlements grant newbie --feature audiobook_hours --quota 30 --days 14 "
        "--request-id promo-newbie-1",
        "entitlements grant newbie --plan premium_individual --kind promotional --days 30",
    )
    target = new_grant.add_mutually_exclusive_group(required=True)
    target.add_argument("--feature", help="a feature id of the catalog")
    target.add_argument("--plan", help="a plan id of the catalog (all its features)")
    new_grant.add_argument(
        "--kind", choices=sorted(GRANT_KINDS), default="support", help="why (default support)"
    )
    new_grant.add_argument(
        "--quota", type=int, default=0, metavar="N", help="amount for a quota feature"
    )
    new_grant.add_argument(
        "--days", type=float, metavar="N", help="ends in N days (default: never)"
    )
    new_grant.set_defaults(run=grant)


def _revoke(commands: Commands) -> None:
    revocation = write_command(
        commands,
        "revoke",
        "revoke one of USER's grants",
        "Revokes a grant from now on. Revoking a revoked grant changes nothing.",
        "entitlements revoke newbie grant-0b6f...",
    )
    revocation.add_argument("grant_id", metavar="GRANT", help="the grant id a grant printed")
    revocation.set_defaults(run=revoke)


def _redeem_offer(commands: Commands) -> None:
    redeem = write_command(
        commands,
        "redeem-offer",
        "redeem OFFER for USER (starts the trial or offer)",
        "Redeems an offer the user may see (see get-offers): starts its trial or discounted "
        "period as a new subscription. Atomic: two redemptions of a one-per-lifetime offer "
        "cannot both win.",
        "entitlements redeem-offer demo-free premium-individual-trial-1m --market US "
        "--platform ios --store app_store",
    )
    redeem.add_argument("offer_id", metavar="OFFER", help="an offer id of the catalog")
    redeem.add_argument("--market", required=True, metavar="COUNTRY", help="ISO 3166-1 alpha-2")
    redeem.add_argument(
        "--platform", required=True, choices=sorted(PLATFORMS), help="where it is redeemed"
    )
    redeem.add_argument("--store", required=True, choices=sorted(STORES), help="who bills it")
    redeem.add_argument("--subscription", help="subscription id (default: a new one)")
    redeem.set_defaults(run=redeem_offer)


_MANAGER = ("MANAGER", "the user id of the household's manager")


def _add_household_commands(commands: Commands) -> None:
    household = write_command(
        commands,
        "create-household",
        "create a household that MANAGER's family plan shares",
        "Creates a household managed by MANAGER, sharing the plan of MANAGER's current "
        "subscription, which must be a plan for several accounts (premium_duo, "
        "premium_family). Prints the household id that add-household-member takes; the id "
        "derives from MANAGER and --request-id, so the same command with the same id "
        "answers the same household.",
        "entitlements create-household parent-1",
        "entitlements create-household parent-1 --request-id household-parent-1",
        user=_MANAGER,
    )
    household.set_defaults(run=create_household)

    for name, summary, description, example, run in (
        (
            "add-household-member",
            "add MEMBER to MANAGER's household",
            "Adds MEMBER to the household: a seat on the manager's roster (the plan's size "
            "counts the manager), then MEMBER's membership; MEMBER's decisions then follow "
            "the manager's subscription. Adding a current member changes nothing; a member "
            "of another household, or one who left one lately (cooldown), is refused. "
            "Remembers both the member's and the manager's consistency token.",
            "entitlements add-household-member parent-1 HOUSEHOLD kid-1",
            add_household_member,
        ),
        (
            "remove-household-member",
            "remove MEMBER from MANAGER's household",
            "Removes MEMBER from the household: MEMBER loses household access, then the seat "
            "is freed. Removing someone who is not a member changes nothing. Remembers both "
            "the member's and the manager's consistency token.",
            "entitlements remove-household-member parent-1 HOUSEHOLD kid-1",
            remove_household_member,
        ),
    ):
        membership = write_command(
            commands,
            name,
            summary,
            description,
            example,
            f"{example} --request-id {name}-kid-1      # a retry completes it",
            user=_MANAGER,
        )
        membership.add_argument(
            "household_id", metavar="HOUSEHOLD", help="the household id create-household printed"
        )
        membership.add_argument("member_id", metavar="MEMBER", help="the member's user id")
        membership.set_defaults(run=run)


def _add_student_commands(commands: Commands) -> None:
    verification = write_command(
        commands,
        "verify-student",
        "record that USER is a verified student",
        "Records that the verification provider confirmed USER as a student until a time: "
        "the student offers become eligible (get-offers), and a student plan entitles "
        "only while it lasts. Replaces an earlier verification.",
        "entitlements verify-student newbie --days 365 --provider-reference sheerid-4711",
        "entitlements verify-student newbie --until 2027-06-30 --provider-reference "
        "sheerid-4711 --request-id verify-newbie-2026",
    )
    until = verification.add_mutually_exclusive_group(required=True)
    until.add_argument(
        "--until",
        metavar="DATE",
        help="verified through this day (YYYY-MM-DD, UTC) or until this ISO 8601 time with zone",
    )
    until.add_argument(
        "--days",
        type=positive(float),
        metavar="N",
        help="verified for N days from now (with --request-id, prefer --until: a repeat "
        "later sends another time and is refused as a different request)",
    )
    verification.add_argument(
        "--provider-reference",
        required=True,
        metavar="REF",
        help="the verification provider's reference for the check (kept in the history)",
    )
    verification.set_defaults(run=verify_student)

    revocation = write_command(
        commands,
        "revoke-student",
        "end USER's student verification now",
        "Revokes USER's student verification at once: student offers stop being eligible "
        "and a student plan stops entitling. Revoking when there is none changes nothing.",
        "entitlements revoke-student newbie",
    )
    revocation.set_defaults(run=revoke_student)
