"""Issue 12's "Done when", end to end through the bureau's pages (the test client, as a
person would click): an officer settles a month with the button, a second person approves
on the statement page, the officer makes the bank batch and downloads its CSV, the bank's
result with one failed line is uploaded, the failed line goes into the next batch, and once
it is paid the reconciliation page is green; then a fault injected in the database turns
the page red and makes ``flask reconcile`` exit non-zero.

The scheme's month is the current one; the clock of the settlement pages is put at its
cut-off day (``settle_day``), the first day a person could press the button."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa

from eldercare.db import db
from tests.vouchers.settlement.conftest import settle_day, spend
from tests.vouchers.settlement.test_reconcile import bypass_freeze
from vouchers.settlement.models import BankBatch, BankTransfer, Statement
from vouchers.settlement.statements import run as run_module
from vouchers.settlement.statements import views_statements

EN = {"Accept-Language": "en"}


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def _links(html: str, pattern: str) -> list[str]:
    return list(dict.fromkeys(re.findall(rf'href="({pattern})"', html)))


def _state(html: str) -> str:
    return re.search(r'id="reconcile-state"[^>]*data-state="(\w+)"', html).group(1)


def _settle_with_the_button(client, month_text: str) -> str:
    months = _html(client.get("/settlement/", headers=EN))
    assert f'id="settle-{month_text}"' in months  # due, with something to settle
    done = client.post(
        "/settlement/runs", data={"month": month_text, "confirm": "yes"}, follow_redirects=True
    )
    return _html(done)


def _approve_on_the_statement_page(client, url: str) -> None:
    page = _html(client.get(url, headers=EN))
    assert 'id="approve-form"' in page
    shown = {  # what the page showed goes back with the approval
        name: re.search(rf'name="{name}" value="([^"]*)"', page).group(1)
        for name in ("expected_payable_fen", "expected_fingerprint")
    }
    approved = client.post(
        url + "/approve", data={"confirm": "yes", **shown}, follow_redirects=True, headers=EN
    )
    assert "Statement approved." in _html(approved)


def _make_batch(client) -> tuple[BankBatch, str]:
    bank = _html(client.get("/settlement/bank", headers=EN))
    count = re.search(r'name="expected_count" value="(\d+)"', bank).group(1)
    total = re.search(r'name="expected_total_fen" value="(\d+)"', bank).group(1)
    made = client.post(
        "/settlement/bank/batches", data={"expected_count": count, "expected_total_fen": total}
    )
    assert made.status_code == 302, made.get_data(as_text=True)
    batch_page = _html(client.get(made.headers["Location"], headers=EN))
    batch = db.session.scalar(sa.select(BankBatch).order_by(BankBatch.id.desc()).limit(1))
    assert batch.line_count == int(count) and batch.total_fen == int(total)
    return batch, batch_page


def _download_lines(client, batch_page: str) -> list[list[str]]:
    [csv_url] = _links(batch_page, r"/settlement/bank/batches/\d+/file\.csv")
    download = client.get(csv_url)
    assert download.status_code == 200
    rows = list(csv.reader(io.StringIO(download.get_data().decode("utf-8-sig"))))
    assert rows[0][0] == "H" and rows[-1][0] == "T"
    return [r for r in rows if r[0] == "D"]


def _result_file(rows: list[tuple[str, str, str, str, str]]) -> bytes:
    """The bank's answer: (line ref, account number, amount yuan, 成功|失败, reason)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["业务参考号", "收款账号", "金额(元)", "状态", "失败原因"])
    writer.writerows(rows)
    total = sum(Decimal(r[2]) for r in rows)
    writer.writerow(["T", len(rows), f"{total:.2f}"])
    return ("\ufeff" + out.getvalue()).encode()


def _upload(client, batch: BankBatch, data: bytes, name: str) -> str:
    response = client.post(
        f"/settlement/bank/batches/{batch.id}/results",
        data={"file": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
        headers=EN,
    )
    return _html(response)


@pytest.fixture
def at_cut_off(monkeypatch, shop):
    """The settlement pages' clock at the month's first settleable day."""
    day = settle_day(shop.voucher.month)
    monkeypatch.setattr(views_statements, "local_today", lambda *a: day)
    monkeypatch.setattr(run_module, "local_today", lambda *a: day)
    return day


def test_settle_approve_pay_with_a_failed_line_reconcile_then_catch_a_fault(
    app, client, login, shop, bureau, at_cut_off
):
    month = shop.voucher.month
    month_text = f"{month:%Y-%m}"
    spend(shop, 1500)
    spend(shop, 1200)
    db.session.commit()

    # 1. The officer settles the month with the button; the month page lists the statement.
    login(bureau.officer)
    month_page = _settle_with_the_button(client, month_text)
    [first_url] = _links(month_page, r"/settlement/statements/\d+")
    # The approver is asked for: the officer has no approve form on it.
    assert 'id="approve-form"' not in _html(client.get(first_url))
    client.get("/logout")

    # 2. A second person, the approver, approves it on the statement page.
    login(bureau.approver)
    _approve_on_the_statement_page(client, first_url)
    client.get("/logout")

    # A lunch recorded late (a pending hold that resolved) is settled by a second press: a
    # second statement of the month, approved the same way.
    spend(shop, 1300)
    db.session.commit()
    login(bureau.officer)
    month_page = _settle_with_the_button(client, month_text)
    [second_url] = [u for u in _links(month_page, r"/settlement/statements/\d+") if u != first_url]
    client.get("/logout")
    login(bureau.approver)
    _approve_on_the_statement_page(client, second_url)
    client.get("/logout")
    statements = list(db.session.scalars(sa.select(Statement).order_by(Statement.id)))
    assert [(s.seq, s.status) for s in statements] == [(1, "approved"), (2, "approved")]
    assert {s.prepared_by_user_id for s in statements} == {bureau.officer.id}
    assert {s.approved_by_user_id for s in statements} == {bureau.approver.id}

    # 3. The officer makes the bank batch and downloads its CSV.
    login(bureau.officer)
    batch, batch_page = _make_batch(client)
    lines = _download_lines(client, batch_page)
    assert len(lines) == 2
    assert sum(Decimal(r[6]) for r in lines) * 100 == sum(s.payable_fen for s in statements)

    # 4. The bank pays one line and fails the other; the result is uploaded on the batch page.
    (_, _, paid_ref, paid_acct, _, _, paid_amount, _), failed = lines
    failed_ref, failed_acct, failed_amount = failed[2], failed[3], failed[6]
    outcome = _upload(
        client,
        batch,
        _result_file(
            [
                (paid_ref, paid_acct, paid_amount, "成功", ""),
                (failed_ref, failed_acct, failed_amount, "失败", "户名不符"),
            ]
        ),
        "result-1.csv",
    )
    assert "Paid: 1. Failed: 1." in outcome and "户名不符" in outcome
    by_ref = {t.reference: t for t in db.session.scalars(sa.select(BankTransfer))}
    assert by_ref[paid_ref].status == "paid" and by_ref[failed_ref].status == "failed"
    unpaid = db.session.get(Statement, by_ref[failed_ref].statement_id)
    assert unpaid.status == "approved"  # still payable

    # 5. The next batch has the failed line only.
    second_batch, second_page = _make_batch(client)
    [again] = _download_lines(client, second_page)
    assert second_batch.id != batch.id and second_batch.line_count == 1
    [retry] = second_batch.transfers
    assert retry.statement_id == unpaid.id and again[2] == retry.reference
    assert again[3] == failed_acct and again[6] == failed_amount
    done = _upload(
        client,
        second_batch,
        _result_file([(again[2], again[3], again[6], "成功", "")]),
        "result-2.csv",
    )
    assert "Paid: 1. Failed: 0." in done
    assert {s.status for s in db.session.scalars(sa.select(Statement))} == {"paid"}

    # 6. The reconciliation page, reconciled with its button, is green.
    reconciled = client.post(
        "/settlement/reconcile", data={"month": month_text}, follow_redirects=True, headers=EN
    )
    page = _html(reconciled)
    assert _state(page) == "green", page
    cli = app.test_cli_runner()
    green = cli.invoke(args=["reconcile", "--month", month_text])
    assert green.exit_code == 0, green.output

    # 7. A fault: the paid statement's line edited in the database behind the triggers.
    bypass_freeze(
        "UPDATE statement_lines SET subsidy_fen = subsidy_fen + 1 WHERE statement_id = :s",
        {"s": by_ref[paid_ref].statement_id},
    )
    db.session.commit()
    red = cli.invoke(args=["reconcile", "--month", month_text])
    assert red.exit_code == 1 and "NOT RECONCILED" in red.output
    page = _html(client.get(f"/settlement/reconcile?month={month_text}", headers=EN))
    assert _state(page) == "red"
    assert 'id="check-statement" data-status="red"' in page
