"""What every anomaly-rule test here needs alike."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.db import db
from marketplace.models import ServicePrice
from vouchers.integrity.rules.base import utc_start_of


@pytest.fixture(autouse=True)
def priced_since_the_month_began(request):
    """The market's services were listed just now (the fixtures' clock is the real one);
    the visits here are at chosen hours of today, so their prices hold from the start of
    the month. Without it a visit at 09:00 is refused ("no price at that time") whenever the
    suite runs after 09:00 in Shanghai."""
    if "shop" not in request.fixturenames:
        return
    shop = request.getfixturevalue("shop")
    db.session.execute(
        sa.update(ServicePrice).values(effective_from=utc_start_of(shop.today.replace(day=1)))
    )
