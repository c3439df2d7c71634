"""The platform as ``make run`` starts it (scripts/run_platform.py: the card gateway, the
scheduler and the web server), with nobody running a command: issue 14 found notices left
"waiting to be sent" and newly approved elders without a voucher because the demo ran no
scheduler.

A bureau approver approves an elder's assessment through the web; then, with no ``flask``
command, the elder holds this month's voucher and the family agent's notice reaches a real
SMTP server. SIGINT to the launcher (what Ctrl-C sends) leaves none of its processes alive.
The jobs' intervals are cut to a second by SCHEDULER_INTERVAL_CAP_SECONDS."""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from assessment import lifecycle
from assessment.demo import PENDING, items_with_total
from assessment.models import Assessment, Assessor
from eldercare.accounts import FamilyLink, User
from eldercare.db import db
from eldercare.demo import DEMO_PASSWORD, build_demo, ensure_account
from eldercare.residents import Resident, compose_resident_id
from eldercare.timeutil import local_today
from tests.test_notifications_delivery import Recorder, _free_port
from tests.vouchers.test_issuance_crash import migrated_app, private_database
from vouchers.issuance.monthly import month_of
from vouchers.models import Voucher

ROOT = Path(__file__).resolve().parents[1]
FAMILY_EMAIL = "daughter@family.example"
WAIT_S = 120  # bound of every wait: a loaded machine starts three Python apps slowly

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# How the platform is stopped: Ctrl-C (SIGINT to the launcher), or the terminal closing (a
# hang-up to the whole process group, which gunicorn alone would take as "reload").
STOPS = {"sqlite": "ctrl-c", "postgres": "hang-up"}


def _seed(app) -> int:
    """The demo city, plus the demo's pending elder (周玉兰) assessed and waiting for the
    bureau's approval, with a family agent who gets notices by email. Her assessment id."""
    with app.app_context():
        build_demo()
        number = compose_resident_id("210102", PENDING[0], PENDING[1])
        elder = db.session.scalar(sa.select(Resident).where(Resident.id_number_is(number)))
        case = db.session.scalar(sa.select(Assessment).where(Assessment.resident_id == elder.id))
        li, zhao = (
            db.session.scalar(sa.select(Assessor).join(User).where(User.username == name))
            for name in ("assessor.li", "assessor.zhao")
        )
        lifecycle.record(
            case,
            items=items_with_total(50),  # moderate: eligible
            assessed_on=local_today(),
            recorder=li,
            cosigner=zhao,
            fee_fen=8000,
        )
        daughter = ensure_account("family.zhou", "周玉兰之女", ["family_agent"])
        daughter.email = FAMILY_EMAIL
        db.session.flush()
        db.session.add(
            FamilyLink(
                agent_user_id=daughter.id,
                resident_id=elder.id,
                relationship="child",
                consent_date=local_today(),
            )
        )
        db.session.commit()
        assert case.status == "recorded"
        return case.id


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (pid -> command line), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()).replace(b"\0", b" ")
            except OSError:
                continue
            todo.append(child)
    return {child: line.decode(errors="replace") for child, line in found.items()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _group(pgid: int) -> dict[int, str]:
    """Every live process of process group ``pgid`` (a worker gunicorn started after the
    first look counts too)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found[int(entry.name)] = line
    return found


def _wait_for(what: str, check, launcher: subprocess.Popen, log: Path):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            pytest.fail(f"the platform stopped while waiting for {what}:\n{_tail(log)}")
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"no {what} within {WAIT_S} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    texts = [log.read_text(errors="replace")[-3000:] if log.exists() else ""]
    scheduler = log.parent / "state" / "scheduler.log"
    if scheduler.exists():
        texts.append("scheduler.log:\n" + scheduler.read_text(errors="replace")[-3000:])
    return "\n".join(texts)


def _csrf(page: str) -> str:
    tag = re.search(r'<input[^>]*name="csrf_token"[^>]*>', page).group(0)
    return re.search(r'value="([^"]+)"', tag).group(1)


def _why(response: requests.Response) -> tuple[int, list[str]]:
    """The status and the page's error notices, for a failure's message."""
    notices = re.findall(
        r"<(p|div)[^>]*(?:problem|error|alert)[^>]*>(.*?)</\1>", response.text, re.S
    )
    return response.status_code, [text.strip() for _, text in notices]


def _approve_through_the_web(base: str, case_id: int) -> None:
    """What a bureau approver does in a browser: sign in, open the review queue, approve."""
    browser = requests.Session()
    login = browser.get(f"{base}/login", timeout=30)
    signed_in = browser.post(
        f"{base}/login",
        data={
            "username": "bureau.approver",
            "password": DEMO_PASSWORD,
            "csrf_token": _csrf(login.text),
        },
        timeout=30,
        allow_redirects=False,
    )
    assert signed_in.status_code == 302, _why(signed_in)
    queue = browser.get(f"{base}/assessment/queue/review", timeout=30)
    assert queue.status_code == 200 and f"/assessment/cases/{case_id}/approve" in queue.text
    approved = browser.post(
        f"{base}/assessment/cases/{case_id}/approve",
        data={"csrf_token": _csrf(queue.text)},
        timeout=30,
        allow_redirects=False,
    )
    assert approved.status_code == 302, _why(approved)


@pytest.mark.parametrize("backend", BACKENDS)
def test_make_run_issues_the_first_voucher_and_mails_the_family_with_no_command(
    backend, tmp_path
):
    recorder = Recorder()
    smtp_port = _free_port()
    smtp = Controller(recorder, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    launcher = None
    with private_database(backend, tmp_path) as url, migrated_app(url) as app:
        try:
            case_id = _seed(app)
            web_port = _free_port()
            log = tmp_path / "platform.log"
            environment = os.environ | {
                "DATABASE_URL": url,
                "PYTHONPATH": str(ROOT),
                "SECRET_KEY": "run-platform-test-secret-key-0123456789",
                "MAIL_SERVER": "127.0.0.1",
                "MAIL_PORT": str(smtp_port),
                "MAIL_FROM": "notices@eldercare.example",
                "MAIL_FILE_DIR": str(tmp_path / "mail"),
                "SCHEDULER_INTERVAL_CAP_SECONDS": "1",
            }
            with open(log, "wb") as output:
                launcher = subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "scripts" / "run_platform.py"),
                        "--port",
                        str(web_port),
                        "--gateway-port",
                        "0",
                        "--state-dir",
                        str(tmp_path / "state"),
                    ],
                    cwd=ROOT,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group, as a terminal gives it
                )
            base = f"http://127.0.0.1:{web_port}"

            def web_answers():
                try:
                    # A worker's first answer is slow on a busy machine: a read timeout is
                    # "not yet", like a refused connection.
                    return requests.get(f"{base}/login", timeout=10).status_code == 200
                except requests.RequestException:
                    return False

            _wait_for("web server", web_answers, launcher, log)
            processes = _wait_for(
                "three processes",
                lambda: (found := _descendants(launcher.pid)) and len(found) >= 3 and found,
                launcher,
                log,
            )
            lines = list(processes.values())
            assert any("dev_gateway.py" in line for line in lines), lines
            assert any("scheduler run" in line for line in lines), lines
            # The web is production's server, not Flask's development server.
            assert any(
                f"gunicorn wsgi:app --bind 127.0.0.1:{web_port}" in line for line in lines
            ), lines

            _approve_through_the_web(base, case_id)

            def voucher_held():
                db.session.remove()  # a new transaction: see what the scheduler committed
                elder_id = db.session.scalar(
                    sa.select(Assessment.resident_id).where(Assessment.id == case_id)
                )
                return db.session.scalar(
                    sa.select(Voucher).where(
                        Voucher.resident_id == elder_id,
                        Voucher.month == month_of(local_today()),
                        Voucher.status == "active",
                    )
                )

            with app.app_context():
                voucher = _wait_for("voucher", voucher_held, launcher, log)
                face = voucher.face_value_fen

            def family_mailed():
                for _sender, recipients, raw in list(recorder.accepted):
                    message = email.message_from_bytes(raw, policy=email.policy.default)
                    if recipients == [FAMILY_EMAIL] and "Voucher issued" in message["Subject"]:
                        return message
                return None

            message = _wait_for("notice to the family", family_mailed, launcher, log)
            text = message.get_body(("plain",)).get_content()
            assert "消费券已发放" in text and f"¥{face // 100:,}" in text

            if STOPS[backend] == "ctrl-c":
                launcher.send_signal(signal.SIGINT)
            else:
                os.killpg(launcher.pid, signal.SIGHUP)
            assert launcher.wait(timeout=60) == 0, _tail(log)
            still = {pid: line for pid, line in processes.items() if _alive(pid)}
            assert still == {}
            assert _group(launcher.pid) == {}  # nothing of the group left, not even a new worker
        finally:
            if launcher is not None and launcher.poll() is None:
                launcher.kill()
                launcher.wait()
            smtp.stop()


def test_make_run_starts_the_platform_with_this_launcher():
    """The test above proves what `make run` does only while both start the same script."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrun: ", 1)[1].split("\n\n", 1)[0]
    assert "scripts/run_platform.py" in recipe
    assert "scheduler run" not in recipe and "dev_gateway" not in recipe  # not started twice
