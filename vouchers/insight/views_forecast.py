"""The pool forecast page (GET /vouchers/bureau/forecast) and its tables as CSV/XLSX.

Bureau staff; a district's officers see their own district (another district answers 404),
city staff the city or the district they pick (``?district=<id>``). The what-if form is a
GET (nothing is stored): a bad value comes back as a 400 with the form, its message next to
the field, and the forecast at the current values.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import ensure_in_district, roles_required
from eldercare.db import db
from eldercare.forms import problem_from, whole_number, yuan, yuan_input
from eldercare.navigation import Destination
from eldercare.residents import District
from vouchers.insight import forecast as fc
from vouchers.views import bp

DESTINATIONS = [Destination("vouchers.bureau_forecast", _l("Pool forecast"))]

HISTORY_HEADERS = (
    _l("Month"),
    _l("Eligible elders"),
    _l("Elders who used their voucher"),
    _l("Take-up (%)"),
    _l("Out-of-pocket per user (yuan)"),
    _l("Subsidy per user (yuan)"),
)


def district_in_scope(text: str | None) -> District | None:
    """The district the forecast is for: the officer's own, or the one city staff picked
    (None: the city). One that does not exist, or another district's, answers 404."""
    if current_user.district_id is not None and not (text or "").strip():
        return db.session.get(District, current_user.district_id)
    if not (text or "").strip():
        return None
    district_id = whole_number(text)
    district = db.session.get(District, district_id) if district_id and district_id > 0 else None
    if district is None:
        abort(404)
    ensure_in_district(district.id)
    return district


def _history_rows(hist: fc.History) -> list[list]:
    return [
        [
            f"{m.month:%Y-%m}",
            m.eligible,
            m.users,
            float(fc.percent_text(m.take_up_bp)),
            (m.out_of_pocket_fen // m.users) / 100 if m.users else 0,
            (m.subsidy_fen // m.users) / 100 if m.users else 0,
        ]
        for m in hist.months
    ]


def _form_values(inputs: fc.Inputs) -> dict:
    return {
        "take_up": fc.percent_text(inputs.take_up_bp),
        "ratio": fc.percent_text(inputs.ratio_bp),
        "cap": yuan_input(inputs.cap_fen),
        "eligible": str(inputs.eligible),
    }


@bp.get("/bureau/forecast")
@roles_required(*BUREAU_ROLES)
def bureau_forecast():
    from vouchers.insight.charts import line_chart, to_svg  # reportlab: only when drawn

    district = district_in_scope(request.args.get("district"))
    problem, given = None, {}
    try:
        given = fc.parse_what_ifs(request.args)
    except fc.BadWhatIf as error:
        problem = problem_from(error, fields=fc.WHAT_IF_FIELDS)
    result = fc.forecast(district, given)
    projection = result.projection
    values = _form_values(result.inputs)
    if problem:
        values.update({k: request.args.get(k, "") for k in fc.WHAT_IF_FIELDS})
    title = _("Projected balance (yuan)")
    chart = line_chart(
        title,
        [f"{r.month:%Y-%m}" for r in projection.rows],
        [(_("Closing balance"), [r.closing_fen / 100 for r in projection.rows])],
        empty_text=_("No spend: the balance stays as it is."),
    )
    locale = str(get_locale() or "zh_CN")
    options = []
    if current_user.district_id is None:
        statement = sa.select(District).order_by(District.code)
        options = [(d.id, d.display_name(locale)) for d in db.session.scalars(statement)]
    scope = {"district": district.id} if district is not None else {}
    what_ifs = {k: request.args[k] for k in fc.WHAT_IF_FIELDS if request.args.get(k) and given}
    return render_template(
        "vouchers/bureau_forecast.html",
        result=result,
        projection=projection,
        answer=fc.answer(projection),
        assumptions=fc.assumptions(projection),
        chart=to_svg(chart, label=title),
        values=values,
        problem=problem,
        district=district,
        district_name=district.display_name(locale) if district else None,
        districts_options=options,
        history_rows=_history_rows(result.history),
        month_text=fc.month_text,
        yuan=yuan,
        percent_text=fc.percent_text,
        downloads={
            (table, fmt): url_for(f"vouchers.bureau_forecast_{table}", fmt=fmt, **scope, **what_ifs)
            for table in ("projection", "history")
            for fmt in ("csv", "xlsx")
        },
    ), 400 if problem else 200


@bp.get("/bureau/forecast/projection.<any(csv, xlsx):fmt>")
@roles_required(*BUREAU_ROLES)
def bureau_forecast_projection(fmt: str):
    return _table("projection", fmt)


@bp.get("/bureau/forecast/history.<any(csv, xlsx):fmt>")
@roles_required(*BUREAU_ROLES)
def bureau_forecast_history(fmt: str):
    return _table("history", fmt)


def _table(table: str, fmt: str):
    from vouchers.insight.tables import download

    district = district_in_scope(request.args.get("district"))
    result = fc.forecast(district, fc.parse_what_ifs(request.args))
    name = f"forecast-{table}-{district.code if district else 'city'}"
    if table == "history":
        response = download(name, HISTORY_HEADERS, _history_rows(result.history), fmt)
    else:
        response = download(name, fc.TABLE_HEADERS, fc.table_rows(result.projection), fmt)
    # At most 60 rows: made whole here, in the request, rather than streamed. A streamed body
    # that a client never reads is closed outside the request's context, which Flask's
    # stream_with_context cannot do cleanly (an "exception ignored" in every such request).
    response.set_data(b"".join(response.response))
    return response
