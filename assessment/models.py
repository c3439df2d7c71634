"""Tables of the assessment domain."""

from __future__ import annotations

import json
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from eldercare.accounts import User
from eldercare.db import Base, UTCDateTime
from eldercare.residents import Resident
from eldercare.timeutil import now_utc

AGENCY_STATUSES = ("active", "suspended", "revoked")
ASSESSMENT_TYPES = ("first", "routine", "immediate", "reassessment", "other")
ASSESSMENT_STATUSES = (
    "applied",
    "assigned",
    "scheduled",
    "recorded",
    "approved",
    "returned",
    "cancelled",
)
APPLICANT_KINDS = ("self", "family_agent", "bureau", "agency_import")
EXCLUSION_KINDS = (
    "extremely_poor_support",  # 特困人员供养
    "concentrated_care_subsidy",  # 经济困难失能老年人集中照护服务补助
    "basic_upgrade_project",  # 居家和社区基本养老服务提升行动项目
)
EVENT_KINDS = (
    "assessment_approved",
    "death",
    "exclusion_started",
    "exclusion_ended",
    "moved_out",
)
LEVEL_CODES = ("intact", "mild", "moderate", "severe", "complete")


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Agency(Base):
    """A third-party assessment agency certified by the bureau."""

    __tablename__ = "assessment_agencies"
    __table_args__ = (sa.CheckConstraint(_in("status", AGENCY_STATUSES), name="known_status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    licence_number: Mapped[str] = mapped_column(sa.String(40), unique=True)
    # Unified social credit code; when the same entity is also a service provider, the
    # conflict-of-interest rule matches it against the provider's code.
    credit_code: Mapped[str | None] = mapped_column(sa.String(18), index=True)
    district_id: Mapped[int | None] = mapped_column(sa.ForeignKey("districts.id"))
    certified_until: Mapped[date] = mapped_column(sa.Date)
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    # Why the bureau last changed the status (suspension or revocation decision).
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    def is_active_on(self, day: date) -> bool:
        return self.status == "active" and day <= self.certified_until


class AgencyAdmin(Base):
    """Links an agency administrator's account to the agency."""

    __tablename__ = "agency_admins"

    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("assessment_agencies.id"), index=True)


class Assessor(Base):
    __tablename__ = "assessors"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), unique=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("assessment_agencies.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    # GB/T 42195 assessor training certificate.
    certificate_number: Mapped[str] = mapped_column(sa.String(40), unique=True)
    certificate_valid_until: Mapped[date] = mapped_column(sa.Date)
    active: Mapped[bool] = mapped_column(default=True)

    agency: Mapped[Agency] = relationship(lazy="joined")
    user: Mapped[User] = relationship()

    def qualified_on(self, day: date) -> bool:
        return self.active and day <= self.certificate_valid_until


class Assessment(Base):
    """One assessment from application to approval; scores are kept once recorded."""

    __tablename__ = "assessments"
    __table_args__ = (
        sa.CheckConstraint(_in("type", ASSESSMENT_TYPES), name="known_type"),
        sa.CheckConstraint(_in("status", ASSESSMENT_STATUSES), name="known_status"),
        sa.CheckConstraint(_in("applied_via", APPLICANT_KINDS), name="known_applicant"),
        sa.CheckConstraint("level IS NULL OR " + _in("level", LEVEL_CODES), name="known_level"),
        # Two different people sign every recorded assessment.
        sa.CheckConstraint(
            "assessor1_id IS NULL OR assessor1_id <> assessor2_id", name="two_assessors"
        ),
        sa.CheckConstraint(
            "fee_fen >= 0 AND refundable_fee_fen >= 0 AND refundable_fee_fen <= fee_fen",
            name="fee_amounts",
        ),
        sa.CheckConstraint("total IS NULL OR (total BETWEEN 0 AND 90)", name="total_range"),
        sa.UniqueConstraint("agency_id", "external_ref"),
        sa.Index("ix_assessments_resident_status", "resident_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"))
    type: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16), default="applied")
    applied_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    applied_via: Mapped[str] = mapped_column(sa.String(16))
    application_note: Mapped[str | None] = mapped_column(sa.Text)
    # For a re-assessment on dispute: the result being disputed (a different agency must do it).
    disputed_assessment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("assessments.id"))
    agency_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("assessment_agencies.id"), index=True
    )
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The agency's own reference for the case (from its software or spreadsheet); with
    # agency_id it makes imports and API submissions idempotent.
    external_ref: Mapped[str | None] = mapped_column(sa.String(60))

    # --- the result, once recorded ---
    assessed_on: Mapped[date | None] = mapped_column(sa.Date)  # the visit, Shanghai date
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    item_scores_json: Mapped[str | None] = mapped_column(sa.Text)  # {"eating": 3, ...}
    dimension_scores_json: Mapped[str | None] = mapped_column(sa.Text)
    total: Mapped[int | None] = mapped_column()
    base_level: Mapped[str | None] = mapped_column(sa.String(16))  # from the total alone
    level: Mapped[str | None] = mapped_column(sa.String(16))  # after adjustments
    adjustments: Mapped[str | None] = mapped_column(sa.String(100))  # space-separated codes
    coma: Mapped[bool] = mapped_column(default=False)
    diagnoses: Mapped[str | None] = mapped_column(sa.String(200))  # ICD-10, space-separated
    care_risk_events_30d: Mapped[int] = mapped_column(default=0)
    assessor1_id: Mapped[int | None] = mapped_column(sa.ForeignKey("assessors.id"))
    assessor2_id: Mapped[int | None] = mapped_column(sa.ForeignKey("assessors.id"))
    assessor1_signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assessor2_signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # SHA-256 of the recorded content both assessors signed; a later edit would not match.
    signed_content_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    fee_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # The part of the fee the pool refunds (moderate or worse, up to the policy cap).
    refundable_fee_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)

    # --- the bureau's review ---
    reviewed_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    review_note: Mapped[str | None] = mapped_column(sa.Text)  # the reason when returned
    effective_from: Mapped[date | None] = mapped_column(sa.Date)
    valid_until: Mapped[date | None] = mapped_column(sa.Date)  # last day it counts
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    resident: Mapped[Resident] = relationship(lazy="joined")
    agency: Mapped[Agency | None] = relationship()
    assessor1: Mapped[Assessor | None] = relationship(foreign_keys=[assessor1_id])
    assessor2: Mapped[Assessor | None] = relationship(foreign_keys=[assessor2_id])

    @property
    def item_scores(self) -> dict[str, int]:
        return json.loads(self.item_scores_json) if self.item_scores_json else {}

    @property
    def dimension_scores(self) -> dict[str, int]:
        return json.loads(self.dimension_scores_json) if self.dimension_scores_json else {}

    @property
    def adjustment_codes(self) -> list[str]:
        return self.adjustments.split() if self.adjustments else []


class EligibilityPolicy(Base):
    """Versioned eligibility rules; code asks which version held on a date."""

    __tablename__ = "eligibility_policies"
    __table_args__ = (
        sa.CheckConstraint("effective_to IS NULL OR effective_to > effective_from", name="period"),
        sa.CheckConstraint(
            "min_age >= 0 AND assessment_validity_months > 0 "
            "AND fee_refund_cap_fen >= 0 AND conflict_lookback_months >= 0 "
            "AND expiry_reminder_days >= 0",
            name="positive",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    effective_from: Mapped[date] = mapped_column(sa.Date, unique=True)
    effective_to: Mapped[date | None] = mapped_column(sa.Date)  # exclusive
    min_age: Mapped[int] = mapped_column(default=60)
    # Space-separated level codes that qualify, e.g. "moderate severe complete".
    eligible_levels: Mapped[str] = mapped_column(sa.String(100))
    assessment_validity_months: Mapped[int] = mapped_column(default=12)
    fee_refund_cap_fen: Mapped[int] = mapped_column(sa.BigInteger, default=10_000)
    # An agency that served the elder within this many months may not assess them.
    conflict_lookback_months: Mapped[int] = mapped_column(default=12)
    expiry_reminder_days: Mapped[int] = mapped_column(default=30)
    note: Mapped[str | None] = mapped_column(sa.Text)
    # The bureau approver who added the version (None for the versions seeded by migration).
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    @property
    def eligible_level_set(self) -> frozenset[str]:
        return frozenset(self.eligible_levels.split())


class Exclusion(Base):
    """A benefit that excludes the voucher while it lasts (from bureau data)."""

    __tablename__ = "eligibility_exclusions"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", EXCLUSION_KINDS), name="known_kind"),
        sa.CheckConstraint("end_date IS NULL OR end_date >= start_date", name="period"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(40))
    start_date: Mapped[date] = mapped_column(sa.Date)
    end_date: Mapped[date | None] = mapped_column(sa.Date)  # last day it applies
    source: Mapped[str | None] = mapped_column(sa.String(120))  # the bureau record it came from
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class EligibilityEvent(Base):
    """Something that may change a resident's eligibility; the voucher side reads these
    in id order and keeps its own cursor (an outbox, so nothing is missed or doubled)."""

    __tablename__ = "eligibility_events"
    __table_args__ = (sa.CheckConstraint(_in("kind", EVENT_KINDS), name="known_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    effective_on: Mapped[date] = mapped_column(sa.Date)
    assessment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("assessments.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


FEE_REFUND_STATUSES = ("owed", "paid")


class FeeRefund(Base):
    """An assessment fee the pool owes back to the elder (POLICY: up to the cap, when the
    approved result is moderate or worse). Written when the result is approved; settlement
    pays it later and marks it paid. One per assessment, so nobody is owed twice."""

    __tablename__ = "assessment_fee_refunds"
    __table_args__ = (
        sa.CheckConstraint(_in("status", FEE_REFUND_STATUSES), name="known_status"),
        sa.CheckConstraint("amount_fen > 0", name="positive_amount"),
        sa.CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL)", name="paid_when_paid"),
        sa.Index("ix_assessment_fee_refunds_district_owed", "district_id", "owed_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(sa.ForeignKey("assessments.id"), unique=True)
    # The payee: the elder assessed (who paid the agency's fee).
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    # The elder's district when it became owed: the district that answers for it.
    district_id: Mapped[int] = mapped_column(sa.ForeignKey("districts.id"))
    amount_fen: Mapped[int] = mapped_column(sa.BigInteger)
    owed_on: Mapped[date] = mapped_column(sa.Date)  # the approval day, Shanghai
    status: Mapped[str] = mapped_column(sa.String(8), default="owed")
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The account the refund is paid to, as the elder or the family gave it; a refund
    # without one waits (settlement pays it in the bank run once it is given).
    payee_account_name: Mapped[str | None] = mapped_column(sa.String(120))
    payee_bank_name: Mapped[str | None] = mapped_column(sa.String(120))
    payee_account_number: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    assessment: Mapped[Assessment] = relationship()
    resident: Mapped[Resident] = relationship()
