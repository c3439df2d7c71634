"""Tables of the marketplace: providers and their certification, staff, services, prices,
bookings, reviews and complaints."""

from __future__ import annotations

import json
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from eldercare.accounts import User
from eldercare.db import Base, UTCDateTime
from eldercare.residents import District, Resident
from eldercare.timeutil import now_utc

PROVIDER_TYPES = ("care_institution", "community_station", "home_service")
PROVIDER_STATUSES = ("applied", "active", "rejected", "suspended", "revoked")
DOCUMENT_KINDS = ("business_licence", "institution_registration", "fire_safety", "other")
UNITS = ("visit", "hour", "day", "month", "meal")
# Where a service is delivered, as its provider says: in the elder's home (a home visit, checked
# in by the phone's location near the home), at the provider's own premises (a station's
# canteen or bathroom), or inside a care institution. Only "home" is a home visit.
DELIVERY_PLACES = ("home", "provider", "institution")
HOME = "home"
BOOKING_STATUSES = ("requested", "accepted", "declined", "cancelled", "completed")
COMPLAINT_STATUSES = ("received", "investigating", "upheld", "dismissed")
MAX_PRICE_FEN = 5_000_000  # 50,000 yuan: above a month in the dearest care home; catches typos


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


provider_districts = sa.Table(
    "provider_districts",
    Base.metadata,
    sa.Column("provider_id", sa.ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("district_id", sa.ForeignKey("districts.id"), primary_key=True),
)

service_districts = sa.Table(
    "service_districts",
    Base.metadata,
    sa.Column("service_id", sa.ForeignKey("services.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("district_id", sa.ForeignKey("districts.id"), primary_key=True),
)


class Provider(Base):
    """A care institution, community station or home-service company."""

    __tablename__ = "providers"
    __table_args__ = (
        sa.CheckConstraint(_in("type", PROVIDER_TYPES), name="known_type"),
        sa.CheckConstraint(_in("status", PROVIDER_STATUSES), name="known_status"),
        sa.CheckConstraint("star_level IS NULL OR star_level BETWEEN 1 AND 5", name="stars"),
        sa.CheckConstraint(
            "latitude BETWEEN -90 AND 90 AND longitude BETWEEN -180 AND 180", name="coordinates"
        ),
        sa.CheckConstraint(
            "(beds_total IS NULL AND beds_free IS NULL) OR "
            "(beds_total >= 0 AND beds_free >= 0 AND beds_free <= beds_total)",
            name="beds",
        ),
        sa.Index("ix_providers_location", "latitude", "longitude"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    # Unified social credit code (GB 32100), checked before saving.
    credit_code: Mapped[str] = mapped_column(sa.String(18), unique=True)
    type: Mapped[str] = mapped_column(sa.String(24))
    status: Mapped[str] = mapped_column(sa.String(16), default="applied", index=True)
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Last day of the certification; a year after approval or renewal.
    certified_until: Mapped[date | None] = mapped_column(sa.Date)
    district_id: Mapped[int] = mapped_column(sa.ForeignKey("districts.id"), index=True)
    address: Mapped[str] = mapped_column(sa.String(200))
    latitude: Mapped[float] = mapped_column(sa.Float)  # WGS-84
    longitude: Mapped[float] = mapped_column(sa.Float)
    contact_name: Mapped[str] = mapped_column(sa.String(50))
    contact_phone: Mapped[str] = mapped_column(sa.String(20))
    # Where settlements are paid (a bank transfer file, see POLICY.md / DESIGN.md).
    bank_account_name: Mapped[str] = mapped_column(sa.String(120))
    bank_name: Mapped[str] = mapped_column(sa.String(120))
    bank_account_number: Mapped[str] = mapped_column(sa.String(40))
    # The bureau's evaluation, 1-5 stars; NULL until evaluated.
    star_level: Mapped[int | None] = mapped_column()
    # {"mon": [["08:00", "18:00"]], ...} in Shanghai time; missing day = closed.
    opening_hours_json: Mapped[str | None] = mapped_column(sa.Text)
    # Care institutions only: beds in total and free now.
    beds_total: Mapped[int | None] = mapped_column()
    beds_free: Mapped[int | None] = mapped_column()
    applied_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    district: Mapped[District] = relationship()
    service_districts: Mapped[list[District]] = relationship(secondary=provider_districts)

    @property
    def opening_hours(self) -> dict[str, list[list[str]]]:
        return json.loads(self.opening_hours_json) if self.opening_hours_json else {}

    def is_certified_on(self, day: date) -> bool:
        """Listed and able to accept anything: active, and the certification in date."""
        return (
            self.status == "active"
            and self.certified_until is not None
            and day <= self.certified_until
        )


class ProviderDocument(Base):
    """A file the provider uploaded for certification, stored outside the web root."""

    __tablename__ = "provider_documents"
    __table_args__ = (sa.CheckConstraint(_in("kind", DOCUMENT_KINDS), name="known_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(sa.ForeignKey("providers.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    original_filename: Mapped[str] = mapped_column(sa.String(200))
    # Random name under DOCUMENT_STORE; never derived from what the uploader typed.
    stored_name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    content_type: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column()
    sha256: Mapped[str] = mapped_column(sa.String(64))
    uploaded_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class ProviderStaff(Base):
    """An account working for a provider: its administrators and its caregivers."""

    __tablename__ = "provider_staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(sa.ForeignKey("providers.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    # 养老护理员 vocational certificate, when the person holds one.
    caregiver_certificate_number: Mapped[str | None] = mapped_column(sa.String(40))
    certificate_valid_until: Mapped[date | None] = mapped_column(sa.Date)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    user: Mapped[User] = relationship()

    def certified_on(self, day: date) -> bool:
        return (
            self.active
            and self.caregiver_certificate_number is not None
            and self.certificate_valid_until is not None
            and day <= self.certificate_valid_until
        )


class ServiceCategory(Base):
    """What kind of help a service is. ``programme`` marks the subsidy programme's own
    categories (POLICY.md); the voucher policy decides which of them a voucher covers."""

    __tablename__ = "service_categories"

    code: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name_zh: Mapped[str] = mapped_column(sa.String(40))
    name_en: Mapped[str] = mapped_column(sa.String(60))
    programme: Mapped[bool] = mapped_column(default=False)
    # Policy data: only staff with a valid caregiver certificate may deliver it.
    requires_caregiver_certificate: Mapped[bool] = mapped_column(default=False)
    # Which providers may offer it: space-separated provider types.
    provider_types: Mapped[str] = mapped_column(sa.String(100))
    sort_order: Mapped[int] = mapped_column(default=0)

    def display_name(self, locale: str) -> str:
        return self.name_zh if locale.startswith("zh") else self.name_en


class Service(Base):
    __tablename__ = "services"
    __table_args__ = (
        sa.CheckConstraint(_in("unit", UNITS), name="known_unit"),
        sa.CheckConstraint(f"price_fen > 0 AND price_fen <= {MAX_PRICE_FEN}", name="price"),
        sa.CheckConstraint("capacity_per_slot >= 1", name="capacity"),
        sa.CheckConstraint(_in("delivery_place", DELIVERY_PLACES), name="known_delivery_place"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(sa.ForeignKey("providers.id"), index=True)
    category_code: Mapped[str] = mapped_column(sa.ForeignKey("service_categories.code"), index=True)
    title: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    unit: Mapped[str] = mapped_column(sa.String(16))
    # The price in force now; every change is also a ServicePrice row (history).
    price_fen: Mapped[int] = mapped_column(sa.BigInteger)
    # How many bookings one time slot can take.
    capacity_per_slot: Mapped[int] = mapped_column(default=1)
    # One of DELIVERY_PLACES, chosen by the provider; decides whether check-in needs the
    # phone's location near the elder's home.
    delivery_place: Mapped[str] = mapped_column(sa.String(16))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    provider: Mapped[Provider] = relationship()
    category: Mapped[ServiceCategory] = relationship(lazy="joined")
    districts: Mapped[list[District]] = relationship(secondary=service_districts)

    @property
    def is_home_visit(self) -> bool:
        """Delivered in the elder's home: check-in needs the phone near it."""
        return self.delivery_place == HOME


class ServicePrice(Base):
    """Price history: the price from ``effective_from`` until the next row's."""

    __tablename__ = "service_prices"
    __table_args__ = (
        sa.CheckConstraint(f"price_fen > 0 AND price_fen <= {MAX_PRICE_FEN}", name="price"),
        sa.UniqueConstraint("service_id", "effective_from"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(sa.ForeignKey("services.id"), index=True)
    price_fen: Mapped[int] = mapped_column(sa.BigInteger)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    set_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))


class Booking(Base):
    """An elder's booking of a service for a time slot; what staff later redeem against."""

    __tablename__ = "bookings"
    __table_args__ = (
        sa.CheckConstraint(_in("status", BOOKING_STATUSES), name="known_status"),
        sa.CheckConstraint("slot_end > slot_start", name="slot"),
        sa.Index("ix_bookings_service_slot", "service_id", "slot_start"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(sa.ForeignKey("services.id"))
    provider_id: Mapped[int] = mapped_column(sa.ForeignKey("providers.id"), index=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    booked_by_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    slot_start: Mapped[datetime] = mapped_column(UTCDateTime)
    slot_end: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.String(16), default="requested")
    # The price in force when booked, so later price changes do not move it.
    price_fen: Mapped[int] = mapped_column(sa.BigInteger)
    note: Mapped[str | None] = mapped_column(sa.Text)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    cancel_reason: Mapped[str | None] = mapped_column(sa.Text)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    service: Mapped[Service] = relationship()
    resident: Mapped[Resident] = relationship()


class Review(Base):
    """One rating per delivered service (booking)."""

    __tablename__ = "reviews"
    __table_args__ = (sa.CheckConstraint("rating BETWEEN 1 AND 5", name="rating"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    booking_id: Mapped[int] = mapped_column(sa.ForeignKey("bookings.id"), unique=True)
    provider_id: Mapped[int] = mapped_column(sa.ForeignKey("providers.id"), index=True)
    rating: Mapped[int] = mapped_column()
    text: Mapped[str] = mapped_column(sa.Text, default="")
    created_by_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class Complaint(Base):
    __tablename__ = "complaints"
    __table_args__ = (sa.CheckConstraint(_in("status", COMPLAINT_STATUSES), name="known_status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(sa.ForeignKey("providers.id"), index=True)
    booking_id: Mapped[int | None] = mapped_column(sa.ForeignKey("bookings.id"))
    filed_by_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default="received", index=True)
    handled_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    resolution: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    provider: Mapped[Provider] = relationship()
