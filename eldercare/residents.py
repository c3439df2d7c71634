"""The resident register that every domain shares, and the resident ID number rules.

The 18-digit citizen identity number (GB 11643-1999) carries the region, the birth date,
a sequence whose last digit gives the sex, and a check character (ISO 7064 MOD 11-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from eldercare.db import Base, UTCDateTime
from eldercare.pii import EncryptedString, keep_lookup_hash, lookup_hash, lookup_hash_column
from eldercare.timeutil import local_today, now_utc

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_EARLIEST_BIRTH_YEAR = 1800  # the standard's own example is born in 1880; catches typos like 1045


class InvalidResidentId(ValueError):
    """The number is not a well-formed resident ID; ``reason`` says which rule failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ResidentIdInfo:
    number: str
    region_code: str
    birth_date: date
    sex: str  # "male" or "female", from the parity of the 17th digit


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def parse_resident_id(number: str, *, today: date | None = None) -> ResidentIdInfo:
    """Validate and decode a resident ID; raise ``InvalidResidentId`` naming the rule broken."""
    if not isinstance(number, str):
        raise InvalidResidentId("format")
    normalized = number.strip().upper()
    if (
        len(normalized) != 18
        or not normalized[:17].isdigit()
        or not (normalized[17].isdigit() or normalized[17] == "X")
    ):
        raise InvalidResidentId("format")
    if normalized[0] == "0":
        raise InvalidResidentId("region")
    try:
        birth = datetime.strptime(normalized[6:14], "%Y%m%d").date()
    except ValueError:
        raise InvalidResidentId("birth_date") from None
    if birth.year < _EARLIEST_BIRTH_YEAR or birth > (today or local_today()):
        raise InvalidResidentId("birth_date")
    if check_character(normalized[:17]) != normalized[17]:
        raise InvalidResidentId("check_character")
    sex = "male" if int(normalized[16]) % 2 == 1 else "female"
    return ResidentIdInfo(normalized, normalized[:6], birth, sex)


def is_valid_resident_id(number: str) -> bool:
    try:
        parse_resident_id(number)
    except InvalidResidentId:
        return False
    return True


def mask_resident_id(number: str) -> str:
    """Keep the region prefix and the last four characters: enough to tell people apart."""
    if len(number) < 8:
        return "*" * len(number)
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def mask_name(name: str) -> str:
    """Family name only, the rest starred: 王秀英 -> 王**."""
    if len(name) <= 1:
        return name
    return name[0] + "*" * (len(name) - 1)


def mask_phone(phone: str | None) -> str:
    if not phone:
        return ""
    if len(phone) < 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


class District(Base):
    __tablename__ = "districts"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Administrative division code (GB/T 2260), e.g. 210102 for Heping District, Shenyang.
    code: Mapped[str] = mapped_column(sa.String(6), unique=True)
    name_zh: Mapped[str] = mapped_column(sa.String(40))
    name_en: Mapped[str] = mapped_column(sa.String(60))
    # A central point (the district government), for searching "near this district".
    center_latitude: Mapped[float | None] = mapped_column(sa.Float)
    center_longitude: Mapped[float | None] = mapped_column(sa.Float)

    def display_name(self, locale: str) -> str:
        return self.name_zh if locale.startswith("zh") else self.name_en


class Resident(Base):
    """A person in the city's register: elders, and the relatives who act for them."""

    __tablename__ = "residents"
    __table_args__ = (
        sa.CheckConstraint("latitude IS NULL OR (latitude BETWEEN -90 AND 90)", name="latitude"),
        sa.CheckConstraint(
            "longitude IS NULL OR (longitude BETWEEN -180 AND 180)", name="longitude"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Full 18-character resident ID, encrypted at rest (eldercare/pii.py); shown masked to
    # every role that does not need it. Look it up (and keep it unique) by its hash:
    # ``Resident.id_number_is(number)``.
    id_number: Mapped[str] = mapped_column(EncryptedString("residents.id_number"))
    id_number_hash: Mapped[str] = lookup_hash_column("id_number", "id_number", unique=True)
    # The register's search "by the last four characters" (those the masked form shows).
    id_number_tail_hash: Mapped[str] = lookup_hash_column("id_number", "id_number_tail", index=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    # Decoded from id_number at registration, kept as a column so age queries can use it.
    birth_date: Mapped[date] = mapped_column(sa.Date)
    phone: Mapped[str | None] = mapped_column(EncryptedString("residents.phone"))
    # Residence (not household registration) decides eligibility, so this is where they live.
    district_id: Mapped[int] = mapped_column(sa.ForeignKey("districts.id"), index=True)
    street: Mapped[str] = mapped_column(sa.String(100))
    address: Mapped[str] = mapped_column(sa.String(200))
    # WGS-84 coordinates of the home; used for the 15-minute search and visit verification.
    latitude: Mapped[float | None] = mapped_column(sa.Float)
    longitude: Mapped[float | None] = mapped_column(sa.Float)
    date_of_death: Mapped[date | None] = mapped_column(sa.Date)
    # The day the person stopped living in the city; residence decides eligibility.
    moved_out_on: Mapped[date | None] = mapped_column(sa.Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    district: Mapped[District] = relationship(lazy="joined")

    @classmethod
    def id_number_is(cls, number: str):
        """The WHERE clause finding a resident by full ID number (through the hash index)."""
        return cls.id_number_hash == lookup_hash("id_number", number)

    @classmethod
    def id_number_ends_with(cls, last4: str):
        """The WHERE clause finding residents by the last four characters of the ID."""
        return cls.id_number_tail_hash == lookup_hash("id_number_tail", last4)

    @property
    def sex(self) -> str:
        return "male" if int(self.id_number[16]) % 2 == 1 else "female"

    @property
    def masked_phone(self) -> str:
        return mask_phone(self.phone)

    @property
    def masked_id_number(self) -> str:
        return mask_resident_id(self.id_number)

    @property
    def masked_name(self) -> str:
        return mask_name(self.name)

    def age_on(self, on: date) -> int:
        years = on.year - self.birth_date.year
        if (on.month, on.day) < (self.birth_date.month, self.birth_date.day):
            years -= 1
        return years


keep_lookup_hash(Resident.id_number, "id_number_hash", "id_number")
keep_lookup_hash(Resident.id_number, "id_number_tail_hash", "id_number_tail")


def compose_resident_id(region_code: str, birth: date, sequence: int) -> str:
    """Build a well-formed number (for demo data and tests): region, birth date, 3-digit
    sequence (odd last digit = male), and the computed check character."""
    first17 = f"{region_code}{birth:%Y%m%d}{sequence:03d}"
    return first17 + check_character(first17)
