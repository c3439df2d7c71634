"""check_in takes back only the conflict it expects: the same scan, saved a moment earlier
by a second tab or phone. Any other constraint error is a real error and is raised."""

import pytest
import sqlalchemy as sa

from vouchers.models import Redemption
from vouchers.redemption import steps as redemption


def _check_in(shop, digest):
    return redemption.check_in(
        shop.voucher, scan_digest=digest, staff_user=shop.caregiver, service_id=shop.market.meals.id
    )


def test_an_unexpected_constraint_error_is_raised_not_retried(shop, db_session):
    # A constraint check_in knows nothing about: one redemption per voucher.
    db_session.execute(
        sa.text("CREATE UNIQUE INDEX test_one_redemption_per_voucher ON redemptions (voucher_id)")
    )
    first = _check_in(shop, "first-scan")
    with pytest.raises(sa.exc.IntegrityError, match="voucher_id"):
        _check_in(shop, "second-scan")
    assert db_session.scalars(sa.select(Redemption.id)).all() == [first.id]


def test_the_same_scan_again_is_the_same_redemption(shop, db_session):
    first = _check_in(shop, "one-scan")
    assert _check_in(shop, "one-scan") is first
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Redemption)) == 1
