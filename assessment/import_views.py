"""The upload page for spreadsheets of residents or assessments.

Bureau officers import both kinds (district officers only for their district); an agency
administrator imports assessments of their own agency only.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from assessment.importing import (
    DEFAULT_MAX_BYTES,
    RESIDENT_COLUMNS,
    assessment_columns,
    import_file,
)
from assessment.models import AgencyAdmin
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import PermissionDenied

bp = Blueprint(
    "assessment_import", __name__, url_prefix="/assessment/import", template_folder="templates"
)
KIND_LABELS = {"residents": _l("Residents"), "assessments": _l("Assessments")}
MULTIPART_SLACK = 64 * 1024  # the form's other fields and the multipart envelope
MAX_SHOWN_PROBLEMS = 500  # a page of 20,000 error rows helps no one; the CLI prints all


@bp.url_value_preprocessor
def _limit_upload_size(_endpoint, _values):
    # URL value preprocessors run before every before_request function, so the limit is in
    # place before the app's CSRF check reads (and spools) the uploaded body.
    limit = current_app.config.get("IMPORT_MAX_BYTES", DEFAULT_MAX_BYTES)
    request.max_content_length = limit + MULTIPART_SLACK


def _allowed() -> tuple[list[str], int | None]:
    """The kinds this user may import, and the one agency they are limited to (if any)."""
    if current_user.has_role("bureau_officer"):
        return ["residents", "assessments"], None
    link = db.session.get(AgencyAdmin, current_user.id)
    if link is None:
        raise PermissionDenied(_l("Your account is not linked to an assessment agency."))
    return ["assessments"], link.agency_id


@bp.route("/", methods=["GET", "POST"])
@roles_required("bureau_officer", "agency_admin")
def upload():
    kinds, agency_id = _allowed()
    kind = request.form.get("kind", kinds[0])
    valid_rows_only = bool(request.form.get("valid_rows_only"))
    report, error = None, None
    if request.method == "POST":
        if kind not in kinds:
            raise PermissionDenied()
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            error = _("Choose a file to upload.")
        else:
            report = import_file(
                upload.read(),
                upload.filename,
                kind,
                valid_rows_only=valid_rows_only,
                actor=current_user,
                district_id=current_user.district_id,
                agency_id=agency_id,
            )
    failed = error is not None or (report is not None and not report.imported)
    return render_template(
        "assessment/import.html",
        kinds=[(k, KIND_LABELS[k]) for k in kinds],
        kind=kind,
        valid_rows_only=valid_rows_only,
        agency_only=agency_id is not None,
        columns={"residents": RESIDENT_COLUMNS, "assessments": assessment_columns()},
        report=report,
        error=error,
        max_shown=MAX_SHOWN_PROBLEMS,
    ), (422 if failed else 200)
