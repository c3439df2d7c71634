"""Tables of the vouchers domain: policy versions, the subsidy-pool ledger, vouchers."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from eldercare.db import Base, UTCDateTime
from eldercare.timeutil import now_utc
from vouchers.redemption.pricing import MAX_QUANTITY

VOUCHER_KINDS = ("home_community", "institutional")
VOUCHER_STATUSES = ("active", "expired", "revoked")
# checked_in: the staff member scanned the elder and checked in; priced: the amounts are
# computed; pending_payment: the subsidy is held while the card co-payment runs; redeemed:
# captured; failed: the payment failed or timed out and the hold was released; cancelled:
# abandoned before any money moved; reversed: undone within the policy window.
REDEMPTION_STATUSES = (
    "checked_in",
    "pending_payment",
    "redeemed",
    "failed",
    "cancelled",
    "reversed",
)
PAYMENT_METHODS = ("card", "cash", "none")  # none: nothing left for the elder to pay
CARD_STATUSES = ("active", "revoked")
ENTRY_KINDS = (
    "topup",
    "allocation",
    "issue",
    "hold",
    "capture",
    "release",
    "reverse",
    "expire",
    "revoke",
    "settle",
    "pay",
    "fee_refund",
)


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class VoucherPolicy(Base):
    """One version of a voucher kind's rules; code asks which version held on a date."""

    __tablename__ = "voucher_policies"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", VOUCHER_KINDS), name="known_kind"),
        sa.CheckConstraint("monthly_cap_fen > 0", name="cap"),
        sa.CheckConstraint("ratio_bp > 0 AND ratio_bp <= 10000", name="ratio"),
        sa.CheckConstraint("effective_to IS NULL OR effective_to > effective_from", name="period"),
        sa.CheckConstraint("evv_max_distance_m > 0 AND reversal_window_days >= 0", name="limits"),
        sa.UniqueConstraint("kind", "effective_from"),
        # On PostgreSQL migration 0007 adds an exclusion constraint (btree_gist) refusing two
        # versions of one kind whose periods overlap; on SQLite vouchers.pool.policy refuses them
        # before the flush (``_refuse_overlapping_versions``).
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    effective_from: Mapped[date] = mapped_column(sa.Date)
    effective_to: Mapped[date | None] = mapped_column(sa.Date)  # exclusive
    # The voucher's face value each month, in fen (500 yuan = 50000).
    monthly_cap_fen: Mapped[int] = mapped_column(sa.BigInteger)
    # Share of the in-scope out-of-pocket price the voucher pays, in basis points (40% = 4000).
    ratio_bp: Mapped[int] = mapped_column()
    # Space-separated marketplace category codes the voucher covers.
    in_scope_categories: Mapped[str] = mapped_column(sa.String(400))
    # Space-separated assessment levels that receive this voucher.
    eligible_levels: Mapped[str] = mapped_column(sa.String(100))
    # Electronic visit verification: how far from the elder's home a home-service check-in
    # may be.
    evv_max_distance_m: Mapped[int] = mapped_column(default=500)
    # How many days after a redemption it may still be reversed.
    reversal_window_days: Mapped[int] = mapped_column(default=7)
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    @property
    def category_set(self) -> frozenset[str]:
        return frozenset(self.in_scope_categories.split())

    @property
    def level_set(self) -> frozenset[str]:
        return frozenset(self.eligible_levels.split())


class LedgerAccount(Base):
    """A bucket of the subsidy pool's money. Every movement is a balanced journal entry; the
    running total lives in the account's shard rows (``LedgerBalance``), and the balance is
    their sum (``vouchers.pool.ledger.balances``)."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (sa.CheckConstraint("shards >= 1 AND shards <= 256", name="shards"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # e.g. "pool:available", "district:210102:available", "vouchers:outstanding",
    # "funding:central".
    code: Mapped[str] = mapped_column(sa.String(60), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    # Only the funding sources: money that comes from outside the pool.
    may_go_negative: Mapped[bool] = mapped_column(default=False)
    # How many rows hold the balance. 1 for most accounts (that row refuses to go below
    # zero); more for the accounts every redemption moves, so that two redemptions never
    # wait for the same row (see vouchers.pool.ledger).
    shards: Mapped[int] = mapped_column(default=1, server_default="1")


class LedgerBalance(Base):
    """One shard of an account's running balance; the account's balance is the sum of its
    shards. A shard of a sharded account may go below zero (money held on one shard is
    captured from another); the voucher rows guard that money, and ``verify_ledger`` proves
    the sum equal to the vouchers' and to the lines."""

    __tablename__ = "ledger_balances"
    __table_args__ = (
        sa.CheckConstraint("may_go_negative OR balance_fen >= 0", name="not_negative"),
        sa.CheckConstraint("shard >= 0", name="shard"),
    )

    account_id: Mapped[int] = mapped_column(sa.ForeignKey("ledger_accounts.id"), primary_key=True)
    shard: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    balance_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # True for the funding sources and for every shard of a sharded account; False for the
    # one row of an account that may not go negative, which the database keeps >= 0.
    may_go_negative: Mapped[bool] = mapped_column(default=False)


class LedgerCheckRun(Base):
    """A stored result of ``verify_ledger``: the pool page and the API show the last one
    (made by the hourly job, ``flask vouchers verify-ledger`` or the bureau's button)."""

    __tablename__ = "ledger_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool] = mapped_column()
    # LedgerCheck.to_dict(): what was found (empty lists when ok).
    findings: Mapped[dict] = mapped_column(sa.JSON)
    journal_lines: Mapped[int] = mapped_column(sa.BigInteger)  # how many lines were checked
    # Who asked for it from the pool page; None: the scheduled job or the command line.
    requested_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))


class JournalEntry(Base):
    """One money movement, with the change that caused it; its lines sum to zero."""

    __tablename__ = "journal_entries"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", ENTRY_KINDS), name="known_kind"),
        # Reconciliation follows a voucher's or a redemption's money back to its entries.
        sa.Index("ix_journal_entries_cause", "cause_type", "cause_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20), index=True)
    # Indexed: the pool page pages the journal newest first and sums a month's returns.
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    memo: Mapped[str] = mapped_column(sa.String(200))
    # What caused it, e.g. ("vouchers", "42"), so reconciliation can follow every fen back.
    cause_type: Mapped[str | None] = mapped_column(sa.String(40))
    cause_id: Mapped[str | None] = mapped_column(sa.String(40))
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    lines: Mapped[list[JournalLine]] = relationship(back_populates="entry")


class JournalLine(Base):
    __tablename__ = "journal_lines"
    __table_args__ = (sa.CheckConstraint("amount_fen <> 0", name="not_zero"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(sa.ForeignKey("journal_entries.id"), index=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("ledger_accounts.id"), index=True)
    # Positive adds to the account, negative takes from it.
    amount_fen: Mapped[int] = mapped_column(sa.BigInteger)

    entry: Mapped[JournalEntry] = relationship(back_populates="lines")
    account: Mapped[LedgerAccount] = relationship()


class Voucher(Base):
    """An elder's voucher for one natural month (Asia/Shanghai), of one kind."""

    __tablename__ = "vouchers"
    __table_args__ = (
        # One live voucher per elder per month. A revoked one does not count, so that an elder
        # whose eligibility comes back within the month can be issued again (issuance decides
        # when: never after death); two live ones for one month can never exist.
        sa.Index(
            "uq_vouchers_live_resident_month",
            "resident_id",
            "month",
            unique=True,
            sqlite_where=sa.text("status <> 'revoked'"),
            postgresql_where=sa.text("status <> 'revoked'"),
        ),
        sa.CheckConstraint(_in("kind", VOUCHER_KINDS), name="known_kind"),
        sa.CheckConstraint(_in("status", VOUCHER_STATUSES), name="known_status"),
        sa.CheckConstraint(
            "balance_fen >= 0 AND held_fen >= 0 AND balance_fen + held_fen <= face_value_fen",
            name="amounts",
        ),
        # The monthly catch-up asks, every few minutes, which past months still have active
        # vouchers: this index holds only those, however many closed vouchers pile up.
        sa.Index(
            "ix_vouchers_active_month",
            "month",
            postgresql_where=sa.text("status = 'active'"),
            sqlite_where=sa.text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    # The first day of the month it is valid in.
    month: Mapped[date] = mapped_column(sa.Date, index=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    policy_id: Mapped[int] = mapped_column(sa.ForeignKey("voucher_policies.id"))
    # The district allocation it was reserved from.
    district_id: Mapped[int] = mapped_column(sa.ForeignKey("districts.id"))
    face_value_fen: Mapped[int] = mapped_column(sa.BigInteger)
    balance_fen: Mapped[int] = mapped_column(sa.BigInteger)  # spendable now
    held_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # held during payments
    status: Mapped[str] = mapped_column(sa.String(12), default="active")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why it was revoked (issuance.REVOKE_REASONS): a loss of eligibility lets a new voucher
    # be issued for the month when eligibility comes back; death never does.
    revoked_reason: Mapped[str | None] = mapped_column(sa.String(40))

    # The version in force on the day of issue: it fixed the face value (the month's cap).
    # Ratio, scope and the other rules of a service are the version in force on the day of
    # the service (vouchers.pool.policy.rules_for).
    policy: Mapped[VoucherPolicy] = relationship()


# Order a month's vouchers of one elder with the live one first (there is at most one; the
# others were revoked), then the latest.
LIVE_FIRST = ((Voucher.status == "revoked").asc(), Voucher.id.desc())


class KindChoice(Base):
    """Which kind of voucher an elder holds from a month on (the elder's or agent's choice;
    institutional while the elder lives in an institution)."""

    __tablename__ = "voucher_kind_choices"
    __table_args__ = (sa.CheckConstraint(_in("kind", VOUCHER_KINDS), name="known_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    # Set by the bureau or the institution: forces the institutional kind.
    in_institution: Mapped[bool] = mapped_column(default=False)
    # The care institution that said the elder lives there (its administrators may change
    # this elder's kind); null when the bureau said so, or the elder does not.
    institution_provider_id: Mapped[int | None] = mapped_column(sa.ForeignKey("providers.id"))
    chosen_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    chosen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class Shortfall(Base):
    """An elder left without a voucher in a month because the district's allocation ran
    out; the bureau sees the list, and a rerun after a top-up issues what is missing."""

    __tablename__ = "voucher_shortfalls"
    __table_args__ = (sa.UniqueConstraint("month", "resident_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    month: Mapped[date] = mapped_column(sa.Date, index=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"))
    district_id: Mapped[int] = mapped_column(sa.ForeignKey("districts.id"))
    level: Mapped[str] = mapped_column(sa.String(12))
    needed_fen: Mapped[int] = mapped_column(sa.BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    # Set when a later run issued the voucher after all.
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EventCursor(Base):
    """How far a consumer has read an outbox (e.g. assessment's eligibility events)."""

    __tablename__ = "voucher_event_cursors"

    name: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class EligibilityStart(Base):
    """A day on which an elder who is not eligible now becomes eligible, as far as is known
    when an eligibility event is handled (the end of a fixed-term exclusion, the minimum
    age). The eligibility feed issues the first voucher on that day; ``handled_at`` marks it
    done, whatever the outcome (eligibility is judged again on the day)."""

    __tablename__ = "voucher_eligibility_starts"
    __table_args__ = (sa.UniqueConstraint("resident_id", "due_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"))
    due_on: Mapped[date] = mapped_column(sa.Date, index=True)
    # The eligibility event that made it known (assessment's outbox id; no foreign key, as
    # vouchers never reads assessment's tables).
    event_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # issued, already_issued, not_eligible, left_out
    outcome: Mapped[str | None] = mapped_column(sa.String(20))


class ParkedEvent(Base):
    """An eligibility event whose handling failed for good (a refusal, a bug): set aside
    with its error so that the events after it are handled; the bureau retries or dismisses
    it (audited)."""

    __tablename__ = "voucher_parked_events"
    __table_args__ = (
        sa.CheckConstraint(
            "resolution IS NULL OR resolution IN ('handled', 'dismissed')", name="known_resolution"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Assessment's outbox id (no foreign key: vouchers never reads assessment's tables).
    event_id: Mapped[int] = mapped_column(sa.BigInteger, unique=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    event_kind: Mapped[str] = mapped_column(sa.String(32))
    effective_on: Mapped[date] = mapped_column(sa.Date)
    # The last failure: the exception's class and message, for the bureau and the developers.
    error: Mapped[str] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(default=1)
    parked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    resolved_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    # handled (a retry succeeded) or dismissed (with the officer's reason)
    resolution: Mapped[str | None] = mapped_column(sa.String(12))
    resolution_note: Mapped[str | None] = mapped_column(sa.Text)


class VoucherCard(Base):
    """A printed card for an elder without a phone: a static QR that needs the elder's PIN."""

    __tablename__ = "voucher_cards"
    __table_args__ = (
        sa.CheckConstraint(_in("status", CARD_STATUSES), name="known_status"),
        sa.CheckConstraint("failed_pin_count >= 0", name="failures"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), unique=True)
    # Random, in the card's QR; a reissued card gets a new one so a lost card stops working.
    card_code: Mapped[str] = mapped_column(sa.String(24), unique=True)
    pin_hash: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(12), default="active")
    # Wrong PINs typed on the day in failed_pin_day (Asia/Shanghai); 5 lock the card that day.
    failed_pin_count: Mapped[int] = mapped_column(default=0)
    failed_pin_day: Mapped[date | None] = mapped_column(sa.Date)
    issued_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class TokenUse(Base):
    """A scanned QR token; the unique digest makes each rotating token usable once."""

    __tablename__ = "qr_token_uses"

    id: Mapped[int] = mapped_column(primary_key=True)
    # SHA-256 of the token (or of card code + day + attempt) so the table holds no live token.
    token_digest: Mapped[str] = mapped_column(sa.String(64), unique=True)
    voucher_id: Mapped[int] = mapped_column(sa.ForeignKey("vouchers.id"), index=True)
    used_by_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class Redemption(Base):
    """One use of a voucher at a provider, with its proof of service and its money."""

    __tablename__ = "redemptions"
    __table_args__ = (
        sa.CheckConstraint(_in("status", REDEMPTION_STATUSES), name="known_status"),
        sa.CheckConstraint(
            "payment_method IS NULL OR " + _in("payment_method", PAYMENT_METHODS),
            name="known_method",
        ),
        sa.CheckConstraint(
            "price_fen IS NULL OR (price_fen > 0 AND insurance_fen >= 0 "
            "AND insurance_fen <= price_fen AND subsidy_fen >= 0 AND copay_fen >= 0 "
            "AND subsidy_fen + copay_fen + insurance_fen = price_fen)",
            name="amounts",
        ),
        sa.CheckConstraint(
            f"quantity IS NULL OR (quantity >= 1 AND quantity <= {MAX_QUANTITY})", name="quantity"
        ),
        # Settlement reads the redeemed ones of a month's vouchers (migration 0018).
        sa.Index(
            "ix_redemptions_redeemed_voucher",
            "voucher_id",
            "id",
            sqlite_where=sa.text("status = 'redeemed'"),
            postgresql_where=sa.text("status = 'redeemed'"),
        ),
        # What the anomaly rules look up around a redemption (migration 0024): the same
        # staff member's visits, the same elder's, the same device's or address's, by time.
        sa.Index("ix_redemptions_staff_checked_in", "staff_user_id", "checked_in_at"),
        sa.Index("ix_redemptions_resident_checked_in", "resident_id", "checked_in_at"),
        sa.Index(
            "ix_redemptions_device_checked_in",
            "check_in_device",
            "checked_in_at",
            sqlite_where=sa.text("check_in_device IS NOT NULL"),
            postgresql_where=sa.text("check_in_device IS NOT NULL"),
        ),
        sa.Index(
            "ix_redemptions_ip_checked_in",
            "check_in_ip",
            "checked_in_at",
            sqlite_where=sa.text("check_in_ip IS NOT NULL"),
            postgresql_where=sa.text("check_in_ip IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    voucher_id: Mapped[int] = mapped_column(sa.ForeignKey("vouchers.id"), index=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    provider_id: Mapped[int] = mapped_column(sa.ForeignKey("providers.id"), index=True)
    staff_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    service_id: Mapped[int | None] = mapped_column(sa.ForeignKey("services.id"))
    booking_id: Mapped[int | None] = mapped_column(sa.ForeignKey("bookings.id"))
    # The scan that started it: the same scan submitted again finds this row, not a new one.
    scan_digest: Mapped[str] = mapped_column(sa.String(64), unique=True)
    status: Mapped[str] = mapped_column(sa.String(20), default="checked_in", index=True)
    # Proof of service (EVV): who, where and when.
    # Indexed: the bureau's and the provider's lists filter and order by it.
    checked_in_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)
    check_in_latitude: Mapped[float | None] = mapped_column(sa.Float)
    check_in_longitude: Mapped[float | None] = mapped_column(sa.Float)
    # Metres from the elder's home at check-in, for home services.
    check_in_distance_m: Mapped[int | None] = mapped_column()
    # Where the check-in came from (anomaly rule "shared_device"): the client's address and
    # a device key (an API token's id, or the browser's sign-in session), never shown to
    # providers.
    check_in_ip: Mapped[str | None] = mapped_column(sa.String(45))
    check_in_device: Mapped[str | None] = mapped_column(sa.String(64))
    # 0..9999 drawn at check-in from the OS's random source: the review sample takes the
    # redemptions whose draw is below the rule's share, the same answer at capture and at
    # settlement, and not one a provider can predict.
    review_draw: Mapped[int | None] = mapped_column()
    checked_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Units of the service bought (ten meals, three hours); the price is at most this many
    # times the listed unit price. Set with the price.
    quantity: Mapped[int | None] = mapped_column()
    # Money, in fen: price = insurance + subsidy + co-payment.
    price_fen: Mapped[int | None] = mapped_column(sa.BigInteger)
    insurance_fen: Mapped[int | None] = mapped_column(sa.BigInteger)  # long-term-care insurance
    subsidy_fen: Mapped[int | None] = mapped_column(sa.BigInteger)
    copay_fen: Mapped[int | None] = mapped_column(sa.BigInteger)
    ratio_bp: Mapped[int | None] = mapped_column()
    payment_method: Mapped[str | None] = mapped_column(sa.String(8))
    # The gateway's payment intent; the idempotency key makes a retried create charge once.
    payment_intent_id: Mapped[str | None] = mapped_column(sa.String(80), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(80))
    held_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    failure_reason: Mapped[str | None] = mapped_column(sa.String(200))
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reversed_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    reversal_reason: Mapped[str | None] = mapped_column(sa.Text)
    refund_id: Mapped[str | None] = mapped_column(sa.String(80))

    voucher: Mapped[Voucher] = relationship()


class GatewayEvent(Base):
    """A webhook event the gateway sent (signature verified); its id makes a resend a no-op."""

    __tablename__ = "gateway_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(80), unique=True)
    type: Mapped[str] = mapped_column(sa.String(60))
    object_id: Mapped[str | None] = mapped_column(sa.String(80), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


# current: the redemption's live intent (being created, or waiting for a card); succeeded:
# it paid the redemption; superseded: dropped on purpose (a new price, a refusal to create it,
# cancelled, cash taken instead) and never to be paid against; refunding: it took money that
# no redemption stands on, and its refund is decided (``refund_fen``) but not yet taken by the
# gateway (the every-minute job asks again); refunded: that money was given back.
ATTEMPT_STATES = ("current", "superseded", "succeeded", "refunding", "refunded")


class PaymentAttempt(Base):
    """One payment intent created (or being created) for a redemption's card co-payment.

    Every intent is remembered, so an event about one dropped on purpose is recognised as
    such instead of being attached to the redemption again; the idempotency key and amount
    identify the attempt an intent was created for when its id was never recorded (a crash
    between the gateway's answer and our commit)."""

    __tablename__ = "payment_attempts"
    __table_args__ = (
        sa.CheckConstraint(_in("state", ATTEMPT_STATES), name="known_state"),
        sa.CheckConstraint("amount_fen > 0", name="amount"),
        # At most one live attempt per redemption.
        sa.Index(
            "uq_payment_attempts_current",
            "redemption_id",
            unique=True,
            sqlite_where=sa.text("state = 'current'"),
            postgresql_where=sa.text("state = 'current'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    redemption_id: Mapped[int] = mapped_column(sa.ForeignKey("redemptions.id"), index=True)
    # The Idempotency-Key of the create call; also in the intent's metadata ("attempt").
    idempotency_key: Mapped[str] = mapped_column(sa.String(100), unique=True)
    # Null between recording the attempt and the gateway's answer to the create.
    intent_id: Mapped[str | None] = mapped_column(sa.String(80), unique=True)
    amount_fen: Mapped[int] = mapped_column(sa.BigInteger)  # the co-payment it was made for
    state: Mapped[str] = mapped_column(sa.String(12), default="current")
    # Why it left "current" (a new price, refused at creation, cash taken...).
    note: Mapped[str | None] = mapped_column(sa.String(200))
    # "refunding": what is to be given back, decided under the lock; the gateway is asked
    # after the commit (the refund's key names the intent and this amount).
    refund_fen: Mapped[int | None] = mapped_column(sa.BigInteger)
    refund_id: Mapped[str | None] = mapped_column(sa.String(80))
    # The payment method of the confirm that sent the payer to 3-D Secure: the payer's
    # return may give the hold back once, consuming it; a new hold clears it.
    authenticating_method: Mapped[str | None] = mapped_column(sa.String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, onupdate=now_utc)


class IssuanceWork(Base):
    """Scratch rows of a monthly run: the eligible elders without a voucher, ranked by
    district and priority, with the voucher each would get, staged once per run so that
    each batch reads its slice instead of recomputing the eligible set. A run deletes its
    own rows at its end; rows a crashed run left behind are deleted by a later run
    (``issuance.issue_monthly``). On PostgreSQL the table is UNLOGGED: nothing in it
    outlives the run that wrote it."""

    __tablename__ = "issuance_work"

    run_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    # 1, 2, ... by district, then within a district those waiting for a voucher first, in
    # priority order (LEVEL_PRIORITY, waiting_since, resident id).
    rank: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    resident_id: Mapped[int] = mapped_column()
    district_id: Mapped[int] = mapped_column()
    level: Mapped[str] = mapped_column(sa.String(16))
    kind: Mapped[str] = mapped_column(sa.String(20))
    policy_id: Mapped[int | None] = mapped_column()  # None: no policy of the kind in force
    # False: eligible, but the voucher policy of the elder's kind does not cover the level,
    # or the month's cap was already paid by revoked vouchers (the run only counts these).
    waiting: Mapped[bool] = mapped_column()
    face_value_fen: Mapped[int] = mapped_column(sa.BigInteger)
    # The id reserved for the elder's voucher when its batch issues it (None before, or when
    # the elder was found holding one already).
    voucher_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    staged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
