"""The bureau's page of anomaly rules as data (``rule_versions``).

- ``anomaly_rules`` (GET /vouchers/bureau/anomaly-rules): every rule with the version in
  force today (thresholds in words, on or off, from / until, the note) and its history;
  bureau staff of any district read it.
- ``anomaly_rule_add`` (POST, a city-wide bureau approver): a new version of one rule from
  a future day with its thresholds, on/off and a note; asked first (what changes from when),
  then ``rule_versions.add_version``. Bad input comes back on the rule's form with the
  messages; nothing is changed.
"""

from __future__ import annotations

from datetime import date, timedelta

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare import confirmation
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import roles_required
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, PermissionDenied
from eldercare.forms import FormErrors, input_problem, parse_effective_from, problem_from
from eldercare.navigation import Destination
from eldercare.timeutil import local_today
from vouchers.integrity import flags, rule_versions
from vouchers.integrity.models import AnomalyRule
from vouchers.integrity.rules import DEFAULTS
from vouchers.integrity.rules.base import category_label
from vouchers.views import bp

APPROVER = ("bureau_approver",)

DESTINATIONS = [
    Destination(
        "vouchers.anomaly_rules",
        _l("Anomaly rules"),
        description=_l(
            "The rules that hold redemptions for a closer look: their thresholds, whether "
            "they run, from when, and their history."
        ),
    ),
]


def _row(version: AnomalyRule, today: date) -> dict:
    return {
        "id": version.id,
        "from": version.effective_from.isoformat(),
        "to": version.effective_to.isoformat() if version.effective_to else None,
        "enabled": version.enabled,
        "params": rule_versions.params_in_words(version.code, version.params),
        "note": version.note,
        "in_force": version.effective_from <= today
        and (version.effective_to is None or version.effective_to > today),
        "coming": version.effective_from > today,
    }


def _form_values(code: str, version: AnomalyRule | None, tomorrow: date) -> dict:
    """The form of a new version, filled in with the current version's thresholds."""
    params = (version.params if version is not None else None) or DEFAULTS[code]
    values = {"effective_from": tomorrow.isoformat(), "note": ""}
    if code == "category_frequency":
        for category, limit in (params.get("limits") or {}).items():
            values[f"limit_{category}_per"] = limit.get("per", "")
            values[f"limit_{category}_max"] = str(limit.get("max", ""))
    else:
        for key in DEFAULTS[code]:
            values[f"param_{key}"] = str(params.get(key, DEFAULTS[code][key]))
    return values


def _render(status=200, problem=None, problem_code=None, values=None, enabled_checked=None):
    today = local_today()
    tomorrow = today + timedelta(days=1)
    categories = sorted(rule_versions.known_categories())
    rules = []
    for code, versions in rule_versions.history().items():
        if code not in DEFAULTS:
            continue
        current = next((v for v in versions if _row(v, today)["in_force"]), None)
        latest = versions[0] if versions else None
        mine = problem_code == code
        form_values = values if mine else _form_values(code, latest, tomorrow)
        if mine:
            enabled = enabled_checked
        else:
            enabled = versions[0].enabled if versions else True
        rules.append(
            {
                "code": code,
                "label": flags.rule_label(code),
                "versions": [_row(v, today) for v in versions],
                "current": _row(current, today) if current is not None else None,
                "params": [
                    (key, rule_versions.PARAM_LABELS.get(key, key)) for key in DEFAULTS[code]
                ]
                if code != "category_frequency"
                else [],
                "form": form_values,
                "enabled": enabled,
                "problem": problem if mine else None,
            }
        )
    return render_template(
        "vouchers/bureau_anomaly_rules.html",
        rules=rules,
        categories=[(c, category_label(c)) for c in categories],
        period_options=[("", _("no limit"))]
        + [(p, str(rule_versions.PERIOD_LABELS[p])) for p in rule_versions.CATEGORY_PERIODS],
        today=today,
        # The rules are the city's: a district's approver reads them and cannot change them.
        is_approver=current_user.has_role(*APPROVER) and current_user.district_id is None,
        problem_on_top=problem if problem_code is None else None,
    ), status


@bp.get("/bureau/anomaly-rules")
@roles_required(*BUREAU_ROLES)
def anomaly_rules():
    return _render()


def _params_from(code: str, form) -> dict:
    if code == "category_frequency":
        limits = {}
        for category in rule_versions.known_categories():
            per = (form.get(f"limit_{category}_per") or "").strip()
            if per:
                limits[category] = {"per": per, "max": form.get(f"limit_{category}_max", "")}
        return {"limits": limits}
    return {key: form.get(f"param_{key}", "") for key in DEFAULTS.get(code, {})}


@bp.post("/bureau/anomaly-rules")
@roles_required(*APPROVER)
def anomaly_rule_add():
    if current_user.district_id is not None:
        raise PermissionDenied()
    form = request.form
    code = (form.get("code") or "").strip()
    if code not in DEFAULTS:
        errors = FormErrors()
        errors.add("code", rule_versions.UNKNOWN_RULE)
        return _render(422, input_problem(errors))
    enabled = form.get("enabled") == "1"
    errors = FormErrors()
    effective_from = parse_effective_from(form.get("effective_from"), errors)
    try:
        version = rule_versions.add_version(
            code,
            effective_from=effective_from,
            params=_params_from(code, form),
            enabled=enabled,
            note=form.get("note", ""),
            actor=current_user,
        )
    except DomainError as error:
        db.session.rollback()
        # The date as typed, when it could not be read, is said next to its field.
        problem = problem_from(error, fields=tuple(error.details or {}), extra=errors)
        return _render(error.status, problem, code, form, enabled)
    confirmation.require(_question(version))
    flash(
        _(
            "New version of %(rule)s saved; it applies from %(day)s.",
            rule=flags.rule_label(code),
            day=version.effective_from.isoformat(),
        ),
        "success",
    )
    return redirect(url_for(".anomaly_rules") + f"#rule-{code}")


def _question(version: AnomalyRule) -> Question:
    """Asked after the service accepted the version; the question's rollback undoes it
    until the approver confirms."""
    day = version.effective_from.isoformat()
    label = flags.rule_label(version.code)
    words = "; ".join(
        f"{name}: {value}"
        for name, value in rule_versions.params_in_words(version.code, version.params)
    )
    return Question(
        title=_("Change the rule %(rule)s from %(day)s?", rule=label, day=day),
        consequences=[
            _(
                "Redemptions whose service day is %(day)s or later are judged by this version "
                "instead of the one in force now.",
                day=day,
            )
            if version.enabled
            else _("From %(day)s this rule no longer holds any redemption.", day=day),
            _("A version cannot be taken back once it applies; a later version can change it."),
        ],
        facts=[
            (_("Rule"), label),
            (_("Applies from"), day),
            (_("Runs"), _("Yes") if version.enabled else _("No")),
            (_("Thresholds"), words or "—"),
        ],
        button=_("Yes, save the new version"),
        back=url_for(".anomaly_rules") + f"#rule-{version.code}",
    )
