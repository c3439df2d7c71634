"""Who reads which statement: a provider's administrators their own (another provider's is a
404, as a missing one), city-wide bureau staff every one, anonymous visitors are sent to sign
in; the public verification page behind a signed token, and what it says of the hash."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from eldercare.db import db
from eldercare.tokens import issue_token
from tests.vouchers.settlement.conftest import spend
from tests.vouchers.settlement.doc_builders import bulk_redemptions, make_statement
from vouchers.settlement.documents import facts as statement_facts
from vouchers.settlement.models import StatementLine

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def two(shop, bureau):
    """An approved statement of the station and one of the home-service company."""
    m = shop.market
    own = make_statement(
        m.station,
        [spend(shop, 1500), spend(shop, 1000)],
        preparer=bureau.officer,
        approver=bureau.approver,
    )
    other = make_statement(
        m.home,
        bulk_redemptions(shop, 2, provider=m.home, service=m.haircut),
        preparer=bureau.officer,
        approver=bureau.approver,
    )
    shop.own, shop.other = own, other
    return shop


def _verify_path(statement) -> str:
    return f"/settlement/verify/{statement_facts.verify_token(statement.id)}"


# -- the provider's page and downloads ---------------------------------------------------------


def test_a_provider_admin_sees_and_downloads_only_their_own(two, client, login):
    login(two.station_admin)
    page = client.get("/settlement/my-statements", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f'data-id="{two.own.id}"' in html
    assert f'data-id="{two.other.id}"' not in html
    assert statement_facts.statement_number(two.own) in html
    assert f'data-fen="{two.own.payable_fen}"' in html

    pdf = client.get(f"/settlement/statements/{two.own.id}/pdf")
    assert pdf.status_code == 200
    assert pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    assert pdf.headers["Cache-Control"] == "no-store"
    xlsx = client.get(f"/settlement/statements/{two.own.id}/xlsx")
    assert xlsx.status_code == 200 and xlsx.mimetype == XLSX
    sheet = load_workbook(io.BytesIO(xlsx.data), read_only=True).active
    assert any("南湖社区养老服务站" in (r or ()) for r in sheet.iter_rows(values_only=True))

    # Another provider's statement, and one that does not exist, answer the same 404.
    for suffix in ("pdf", "xlsx"):
        assert client.get(f"/settlement/statements/{two.other.id}/{suffix}").status_code == 404
        assert client.get(f"/settlement/statements/999999/{suffix}").status_code == 404


def test_the_menu_offers_statements_to_provider_admins(two, client, login):
    login(two.station_admin)
    assert "/settlement/my-statements" in client.get("/").get_data(as_text=True)


def test_staff_without_the_admin_flag_do_not_read_statements(two, client, login):
    login(two.caregiver, "caregiver-pass-1")
    assert client.get("/settlement/my-statements").status_code == 403
    assert client.get(f"/settlement/statements/{two.own.id}/pdf").status_code == 404


def test_anonymous_visitors_are_sent_to_sign_in(two, client):
    for path in ("/settlement/my-statements", f"/settlement/statements/{two.own.id}/pdf"):
        response = client.get(path)
        assert response.status_code == 302
        assert "/login" in response.headers["Location"]


def test_city_wide_bureau_staff_read_every_statement_district_staff_none(
    two, client, login, factory
):
    login(factory.user("city.reader", roles=["bureau_officer"]))
    assert client.get(f"/settlement/statements/{two.other.id}/pdf").status_code == 200
    assert client.get(f"/settlement/statements/{two.own.id}/xlsx").status_code == 200
    client.post("/logout")
    login(factory.user("district.reader", roles=["bureau_officer"], district=two.heping))
    assert client.get(f"/settlement/statements/{two.own.id}/pdf").status_code == 403


def test_the_api_serves_the_bureau_and_the_provider_its_own(two, client, factory):
    bureau = issue_token(factory.user("api.city", roles=["bureau_officer"]), "finance", ["read"])[1]
    provider = issue_token(two.station_admin, "accounts", ["read"])[1]
    db.session.flush()

    def get(path, secret=None):
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return client.get(f"/api/v1/settlement/statements/{path}", headers=headers)

    answer = get(f"{two.other.id}/pdf", bureau)
    assert answer.status_code == 200 and answer.data.startswith(b"%PDF")
    assert get(f"{two.own.id}/xlsx", provider).status_code == 200
    refused = get(f"{two.other.id}/xlsx", provider)
    assert refused.status_code == 404
    assert refused.get_json()["error"]["code"] == "not_found"
    assert get(f"{two.own.id}/pdf").status_code == 401


# -- the verification page ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "words"), [("en", "verification link is not valid"), ("zh-CN", "核验链接无效")]
)
def test_a_forged_or_mangled_token_is_a_clear_404(two, client, language, words):
    real = statement_facts.verify_token(two.own.id)
    forged = statement_facts.verify_token.__globals__["URLSafeSerializer"](
        "not-the-secret", salt=statement_facts.VERIFY_SALT
    ).dumps(two.own.id)
    for token in (forged, real[:-2], "abc", "1", str(two.own.id), real + "x"):
        page = client.get(f"/settlement/verify/{token}", headers={"Accept-Language": language})
        assert page.status_code == 404, token
        assert words in page.get_data(as_text=True)
        assert "南湖社区养老服务站" not in page.get_data(as_text=True)


def test_a_valid_token_of_a_missing_statement_is_a_404(app, client, db_session):
    with app.app_context():
        token = statement_facts.verify_token(987654)
    assert client.get(f"/settlement/verify/{token}").status_code == 404


def test_the_page_shows_the_hash_status_and_total_and_no_elder(two, client):
    html = client.get(_verify_path(two.own), headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )
    assert 'data-match="yes"' in html
    assert two.own.lines_hash in html
    assert 'data-status="approved"' in html
    assert f'data-fen="{two.own.payable_fen}"' in html
    assert statement_facts.statement_number(two.own) in html
    assert two.elder.name not in html and two.elder.name[0] + "*" not in html


def test_a_line_changed_after_the_hash_was_stored_does_not_match(two, bureau, client):
    prepared = make_statement(
        two.market.station, [spend(two, 900)], status="prepared", preparer=bureau.officer
    )
    path = _verify_path(prepared)
    assert 'data-match="yes"' in client.get(path).get_data(as_text=True)
    # A prepared statement is not frozen: its line can be edited in SQL, as an intruder would.
    db.session.execute(
        sa.update(StatementLine)
        .where(StatementLine.statement_id == prepared.id)
        .values(subsidy_fen=StatementLine.subsidy_fen + 1)
    )
    db.session.flush()
    html = client.get(path, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert 'data-match="no"' in html
    assert "Does not match" in html
    assert prepared.lines_hash in html  # the stored one, and the one the lines give now
    assert 'id="current-hash"' in html


def test_an_approved_statement_whose_stored_hash_differs_does_not_match(two, bureau, client):
    statement = make_statement(
        two.market.station,
        [spend(two, 700)],
        status="prepared",
        preparer=bureau.officer,
    )
    # Approved with a hash that is not its lines' (the triggers then freeze it as it is).
    approver_id = bureau.approver.id  # read first: loading it would flush half the change
    statement.lines_hash = "0" * 64
    statement.approved_by_user_id = approver_id
    statement.status = "approved"
    db.session.flush()
    html = client.get(_verify_path(statement), headers={"Accept-Language": "zh-CN"}).get_data(
        as_text=True
    )
    assert 'data-match="no"' in html
    assert "不一致" in html


def test_a_statement_without_a_stored_hash_says_it_is_not_approved(two, bureau, client):
    statement = make_statement(
        two.market.station, [spend(two, 600)], status="prepared", preparer=bureau.officer
    )
    statement.lines_hash = None
    db.session.flush()
    html = client.get(_verify_path(statement), headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )
    assert 'data-match="none"' in html
    assert "Not approved yet" in html


def test_a_rejected_statement_says_so_and_its_documents_still_build(two, bureau, client, login):
    statement = make_statement(
        two.market.station, [spend(two, 500)], status="prepared", preparer=bureau.officer
    )
    approver_id = bureau.approver.id
    # Rejection deletes the lines (they go back to be settled again); totals and reason stay.
    db.session.execute(sa.delete(StatementLine).where(StatementLine.statement_id == statement.id))
    statement.status = "rejected"
    statement.rejected_by_user_id = approver_id
    statement.rejection_reason = "价格与合同不符"
    db.session.flush()
    html = client.get(_verify_path(statement), headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )
    assert 'data-match="rejected"' in html and "will not be paid" in html
    login(two.station_admin)
    pdf = client.get(f"/settlement/statements/{statement.id}/pdf")
    assert pdf.status_code == 200
    from pypdf import PdfReader

    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    assert "已驳回" in text and "价格与合同不符" in text
