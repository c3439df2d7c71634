"""Adding people to the resident register, with every field checked before anything is saved."""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput
from eldercare.residents import District, InvalidResidentId, Resident, parse_resident_id

RESIDENT_ID_MESSAGES = {
    "format": _l("A resident ID number has 18 characters: 17 digits, then a digit or X."),
    "region": _l("The first six digits are not a valid region code."),
    "birth_date": _l(
        "The birth date inside the ID number (characters 7 to 14) is not a real date."
    ),
    "check_character": _l(
        "The last character does not match the others; please check for a typing mistake."
    ),
}
_PHONE = re.compile(r"^(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$")


def resident_id_error(number: str) -> str | None:
    """The reason, in the user's language, why ``number`` is not a resident ID (or None)."""
    try:
        parse_resident_id(number)
    except InvalidResidentId as exc:
        return str(RESIDENT_ID_MESSAGES[exc.reason])
    return None


def register_resident(
    *,
    id_number: str,
    name: str,
    district: District | None,
    street: str,
    address: str,
    phone: str | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
) -> Resident:
    errors: dict[str, str] = {}
    info = None
    try:
        info = parse_resident_id(id_number or "")
    except InvalidResidentId as exc:
        errors["id_number"] = RESIDENT_ID_MESSAGES[exc.reason]
    name = (name or "").strip()
    if not name or len(name) > 50:
        errors["name"] = _l("Enter the name as on the ID card (at most 50 characters).")
    if district is None:
        errors["district"] = _l("Choose the district where the person lives.")
    if not (street or "").strip():
        errors["street"] = _l("Enter the street or sub-district.")
    if not (address or "").strip():
        errors["address"] = _l("Enter the home address.")
    phone = (phone or "").strip() or None
    if phone and not _PHONE.match(phone):
        errors["phone"] = _l("Enter an 11-digit mobile number or a landline such as 024-12345678.")
    if (latitude is None) != (longitude is None):
        errors["latitude"] = _l("Give both latitude and longitude, or neither.")
    elif latitude is not None and not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        errors["latitude"] = _l("The coordinates are outside the possible range.")
    if errors:
        raise InvalidInput(details=errors)

    exists = db.session.scalar(sa.select(Resident.id).where(Resident.id_number_is(info.number)))
    if exists is not None:
        raise Conflict(
            _l("A resident with this ID number is already registered."),
            details={"id_number": _l("already registered")},
        )
    resident = Resident(
        id_number=info.number,
        name=name,
        birth_date=info.birth_date,
        phone=phone,
        district_id=district.id,
        street=street.strip(),
        address=address.strip(),
        latitude=latitude,
        longitude=longitude,
    )
    db.session.add(resident)
    audit.record(
        "resident.create",
        resident,
        district_id=district.id,
        after={"id_number": resident.masked_id_number, "district": district.code},
    )
    return resident
