"""Certification needs the documents the rules name for the provider's type (issue 14 item 5):
each one uploaded, or waived by an approver with a written reason that the audit log keeps
with the approval. The same holds for the yearly renewal, through the service and the page."""

import json
import threading

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.errors import InvalidInput, PermissionDenied
from eldercare.residents import District
from marketplace import documents, providers
from marketplace.documents import MAX_WAIVER_REASON
from marketplace.errors import InvalidTransition
from marketplace.models import Provider
from marketplace.sample_documents import give_required_documents, sample_pdf
from tests.marketplace.conftest import _provider

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}


@pytest.fixture
def applicant(market):
    """A community station that has applied and uploaded nothing: it needs the business
    licence and the fire-safety certificate."""
    provider, admin = _provider(
        market,
        "三好街社区养老服务站",
        "community_station",
        market.heping,
        41.7745,
        123.4360,
        "HT000009",
        approve=False,
    )
    provider.admin = admin
    return provider


def approvals(db_session, provider) -> list[AuditLog]:
    return list(
        db_session.scalars(
            sa.select(AuditLog).where(
                AuditLog.action.in_(("provider.approve", "provider.renew")),
                AuditLog.object_id == str(provider.id),
            )
        )
    )


# --------------------------------------------------------------------------- the service


def test_certifying_without_documents_is_refused_naming_each(
    app_ctx, market, applicant, db_session
):
    with pytest.raises(InvalidInput) as refused:
        providers.approve(applicant, approver=market.approver)
    assert set(refused.value.details) >= {
        "waiver_reason_business_licence",
        "waiver_reason_fire_safety",
    }
    with force_locale("en"):
        message = str(refused.value.message)
    assert "Business licence" in message and "Fire safety" in message
    with force_locale("zh_Hans_CN"):
        message = str(refused.value.message)
    assert "营业执照" in message and "消防" in message and "Missing" not in message
    assert applicant.status == "applied" and applicant.certified_until is None
    assert approvals(db_session, applicant) == []


def test_certifying_with_every_document_succeeds(app_ctx, market, applicant, db_session):
    give_required_documents(applicant, uploader=applicant.admin)
    assert documents.missing_kinds(applicant) == []
    providers.approve(applicant, approver=market.approver)
    assert applicant.status == "active" and applicant.certified_until is not None
    (row,) = approvals(db_session, applicant)
    assert row.actor_user_id == market.approver.id
    assert "waived_documents" not in json.loads(row.after_json)


def test_one_missing_document_is_still_refused(app_ctx, market, applicant, db_session):
    documents.store_document(
        applicant,
        kind="business_licence",
        filename="licence.pdf",
        data=sample_pdf("licence"),
        actor=applicant.admin,
    )
    with pytest.raises(InvalidInput) as refused:
        providers.approve(applicant, approver=market.approver)
    assert list(refused.value.details) == ["waiver_reason_fire_safety"]
    assert applicant.status == "applied"


@pytest.mark.parametrize("reason", ["", "   ", None, "x" * (MAX_WAIVER_REASON + 1)])
def test_a_waiver_needs_a_written_reason_of_bounded_length(
    app_ctx, market, applicant, db_session, reason
):
    documents.store_document(
        applicant,
        kind="business_licence",
        filename="licence.pdf",
        data=sample_pdf("licence"),
        actor=applicant.admin,
    )
    with pytest.raises(InvalidInput) as refused:
        providers.approve(applicant, approver=market.approver, waivers={"fire_safety": reason})
    assert list(refused.value.details) == ["waiver_reason_fire_safety"]
    assert applicant.status == "applied"
    assert approvals(db_session, applicant) == []


def test_a_waiver_with_a_reason_certifies_and_is_audited_with_the_approver(
    app_ctx, market, applicant, db_session
):
    documents.store_document(
        applicant,
        kind="business_licence",
        filename="licence.pdf",
        data=sample_pdf("licence"),
        actor=applicant.admin,
    )
    providers.approve(
        applicant,
        approver=market.approver,
        waivers={
            "fire_safety": "  消防验收在办，区消防大队已出具说明  ",
            "business_licence": "ignored",
        },
    )
    assert applicant.status == "active"
    (row,) = approvals(db_session, applicant)
    assert row.actor_user_id == market.approver.id
    after = json.loads(row.after_json)
    # Only what was really missing is waived; the reason as written, trimmed.
    assert after["waived_documents"] == {"fire_safety": "消防验收在办，区消防大队已出具说明"}
    assert after["status"] == "active"


def test_only_an_approver_may_waive(app_ctx, market, applicant):
    for who in (None, market.officer):
        with pytest.raises(PermissionDenied):
            providers.approve(
                applicant,
                approver=who,
                waivers={"business_licence": "说明", "fire_safety": "说明"},
            )
    assert applicant.status == "applied"


def test_renewal_needs_the_documents_too(app_ctx, market, db_session):
    # The fixture's station was certified with its documents; a provider certified before
    # the rule (no documents) must bring them, or have them waived, at its yearly review.
    legacy, _admin = _provider(
        market,
        "老城社区养老服务站",
        "community_station",
        market.heping,
        41.78,
        123.44,
        "LC000011",
        approve=False,
    )
    legacy.status = "active"
    db_session.flush()
    with pytest.raises(InvalidInput):
        providers.renew(legacy, approver=market.approver)
    assert legacy.certified_until is None
    providers.renew(
        legacy,
        approver=market.approver,
        waivers={"business_licence": "工商信息已在线核验", "fire_safety": "年度消防检查合格"},
    )
    assert legacy.certified_until is not None
    (row,) = approvals(db_session, legacy)
    assert set(json.loads(row.after_json)["waived_documents"]) == {
        "business_licence",
        "fire_safety",
    }
    providers.renew(market.station, approver=market.approver)  # has its documents


# --------------------------------------------------------------------------- the page


def test_the_page_refuses_naming_the_documents_and_keeps_the_waiver_inputs(
    client, login, market, applicant, db_session
):
    login(market.approver)
    queue = client.get("/marketplace/bureau/providers", headers=EN).get_data(as_text=True)
    assert 'name="waive_fire_safety"' in queue and 'name="waiver_reason_fire_safety"' in queue
    url = f"/marketplace/bureau/providers/{applicant.id}/approve"
    response = client.post(url, data={"note": "材料齐全"}, headers=EN)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Business licence or registration certificate" in page
    assert "Nothing has been saved." in page
    zh = client.post(url, data={}, headers=ZH)
    assert zh.status_code == 422 and "消防" in zh.get_data(as_text=True)

    ticked_without_reason = client.post(
        url,
        data={
            "waive_business_licence": "yes",
            "waive_fire_safety": "yes",
            "waiver_reason_fire_safety": "消防验收在办",
        },
        headers=EN,
    )
    assert ticked_without_reason.status_code == 422
    assert "消防验收在办</textarea>" in ticked_without_reason.get_data(as_text=True)
    db_session.refresh(applicant)
    assert applicant.status == "applied" and approvals(db_session, applicant) == []

    waived = client.post(
        url,
        data={
            "waive_business_licence": "yes",
            "waiver_reason_business_licence": "已通过国家企业信用信息公示系统核验",
            "waive_fire_safety": "yes",
            "waiver_reason_fire_safety": "消防验收在办",
        },
        headers=EN,
    )
    assert waived.status_code == 302
    db_session.refresh(applicant)
    assert applicant.status == "active"
    (row,) = approvals(db_session, applicant)
    assert row.actor_user_id == market.approver.id
    assert json.loads(row.after_json)["waived_documents"]["fire_safety"] == "消防验收在办"


def test_the_page_certifies_a_provider_with_its_documents(
    client, login, market, applicant, db_session
):
    give_required_documents(applicant, uploader=applicant.admin)
    login(market.approver)
    queue = client.get("/marketplace/bureau/providers", headers=EN).get_data(as_text=True)
    assert 'name="waiver_reason_fire_safety"' not in queue  # nothing to waive
    response = client.post(f"/marketplace/bureau/providers/{applicant.id}/approve", data={})
    assert response.status_code == 302
    db_session.refresh(applicant)
    assert applicant.status == "active"


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_two_approvers_deciding_at_once_make_one_decision(private_app):
    """Both load the application, then decide together: the provider row's lock makes the
    second see the first's decision, so exactly one is recorded (before, both were)."""
    from eldercare.accounts import User, UserRole
    from eldercare.credit_codes import compose_credit_code

    app = private_app
    with app.app_context():
        district = District(code="219901", name_zh="测试区", name_en="Test District")
        db.session.add(district)
        db.session.flush()
        users = []
        for name, role in (
            ("admin", "provider_admin"),
            ("a1", "bureau_approver"),
            ("a2", "bureau_approver"),
        ):
            user = User(username=name, display_name=name, password_hash="x")
            user.role_rows = [UserRole(role=role)]
            db.session.add(user)
            db.session.flush()
            users.append(user)
        provider = providers.apply_provider(
            applicant=users[0],
            name="测试养老服务站",
            credit_code=compose_credit_code("52", "219901", "TC000001"),
            type="community_station",
            district=district,
            address="测试路 1 号",
            latitude=41.77,
            longitude=123.43,
            service_districts=[district],
            contact_name="联系人",
            contact_phone="13800001111",
            bank_account_name="测试",
            bank_name="盛京银行",
            bank_account_number="6222000011112222",
        )
        give_required_documents(provider, uploader=users[0])
        db.session.commit()
        provider_id, approver_ids = provider.id, [u.id for u in users[1:]]
        db.session.remove()

    loaded = threading.Barrier(2, timeout=30)
    outcomes = []

    def decide(approver_id, decision):
        with app.app_context():
            try:
                provider = db.session.get(Provider, provider_id)
                approver = db.session.get(User, approver_id)
                assert provider.status == "applied"
                loaded.wait()  # both have read "applied" before either decides
                if decision == "approve":
                    providers.approve(provider, approver=approver)
                else:
                    providers.reject(provider, "材料不全")
                db.session.commit()
                outcomes.append(decision)
            except InvalidTransition:
                db.session.rollback()
                outcomes.append("refused")
            except Exception as error:  # anything else is a failure the test must show
                db.session.rollback()
                outcomes.append(repr(error))
            finally:
                db.session.remove()

    threads = [
        threading.Thread(target=decide, args=(approver_ids[0], "approve")),
        threading.Thread(target=decide, args=(approver_ids[1], "reject")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) in (["approve", "refused"], ["refused", "reject"]), outcomes
    with app.app_context():
        provider = db.session.get(Provider, provider_id)
        decided = db.session.scalars(
            sa.select(AuditLog.action).where(
                AuditLog.object_type == "providers",
                AuditLog.object_id == str(provider_id),
                AuditLog.action.in_(("provider.approve", "provider.reject")),
            )
        ).all()
        assert decided == [f"provider.{next(o for o in outcomes if o != 'refused')}"]
        assert provider.status == ("active" if decided == ["provider.approve"] else "rejected")
        db.session.remove()
