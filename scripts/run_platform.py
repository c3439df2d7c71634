"""Run the platform's processes as production runs them, and stop them all together.

``make run`` (after migrating and loading the demo city) and the test that proves the demo
works without a manual command (tests/test_run_platform.py) both start the platform with
this script, so they run the same command lines:

- the demo card gateway (eldercare/dev_gateway.py: localstripe on 127.0.0.1),
- the scheduler (``flask scheduler run``: the outbox, the eligibility feed, the monthly
  catch-up, card hold settlement ... see eldercare/scheduler.py), its output in
  ``<state-dir>/scheduler.log``,
- the web server: gunicorn serving ``wsgi:app`` with one worker per core (production's
  server and shape; not Flask's development server), its output in this terminal.

The web server and the scheduler are told the gateway's address and the demo's keys. Ctrl-C
(SIGINT), SIGTERM or a hang-up (SIGHUP: the terminal closed) stops every one of them (each
is asked to stop, then killed if it does not); so does the end of any one of them, since a
platform with a dead scheduler only looks alive: the script then exits with that process's
code.

    python scripts/run_platform.py [--host 127.0.0.1] [--port 5000] [--gateway-port 8420]
                                   [--state-dir instance]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages are one level up
    sys.path.insert(0, str(ROOT))

from eldercare.config import DEMO_WEBHOOK_SECRET  # noqa: E402
from eldercare.dev_gateway import TEST_SECRET_KEY, LocalStripe  # noqa: E402

FLASK = [sys.executable, "-m", "flask", "--app", "wsgi"]
STOP_GRACE_S = 10.0  # after SIGINT, before SIGKILL
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="the web server's port")
    parser.add_argument(
        "--gateway-port", type=int, default=8420, help="the card gateway's port (0: any free)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="web worker processes (production: one per core, one thread each)",
    )
    parser.add_argument(
        "--state-dir",
        default=str(ROOT / "instance"),
        help="where the gateway keeps its state and log, and the scheduler its log",
    )
    return parser.parse_args(argv)


class Stop(Exception):
    """SIGINT or SIGTERM reached this script."""


def _on_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


def _stop(process: subprocess.Popen) -> None:
    """Ask a process to stop as Ctrl-C would (SIGINT), then kill it if it does not."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    state = Path(args.state_dir)
    (state / "gateway").mkdir(parents=True, exist_ok=True)
    # Set before the first child starts: a signal from here on stops whatever has started.
    # SIGHUP too: a closed terminal or a lost SSH session hangs up the whole group, and
    # gunicorn takes a HUP as "reload" and would stay serving with no scheduler behind it.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _on_signal)
    gateway = LocalStripe(state / "gateway")
    gateway.port = args.gateway_port
    children: list[tuple[str, subprocess.Popen]] = []
    code = 0
    scheduler_log = None
    try:
        gateway.start()
        children.append(("gateway", gateway.process))
        environment = os.environ | {
            # Two processes on the demo's SQLite file: each transaction waits its turn to
            # write (eldercare/config.py); PostgreSQL ignores it.
            "SQLITE_BEGIN_IMMEDIATE": "1",
            "PAYMENT_GATEWAY_URL": gateway.url,
            "PAYMENT_GATEWAY_SECRET_KEY": TEST_SECRET_KEY,
            "PAYMENT_WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET,
        }
        scheduler_log = open(state / "scheduler.log", "ab")  # noqa: SIM115 - closed below
        scheduler = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [*FLASK, "scheduler", "run"],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=scheduler_log,
            stderr=subprocess.STDOUT,
        )
        children.append(("scheduler", scheduler))
        web = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [
                sys.executable, "-m", "gunicorn", "wsgi:app",
                "--bind", f"{args.host}:{args.port}",
                "--workers", str(args.workers),
                "--threads", "1",
            ],  # fmt: skip
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
        )
        children.append(("web", web))
        print(
            f"platform: web http://{args.host}:{args.port}, card gateway {gateway.url}, "
            f"scheduler log {state / 'scheduler.log'}; Ctrl-C stops all",
            file=sys.stderr,
            flush=True,
        )
        while True:
            for name, process in children:
                if process.poll() is not None:
                    print(
                        f"platform: the {name} process ended (exit {process.returncode}); "
                        "stopping the others",
                        file=sys.stderr,
                        flush=True,
                    )
                    # A child killed by a signal has a negative code; exit 1 for it.
                    code = process.returncode if process.returncode > 0 else 1
                    raise Stop(name)
            time.sleep(0.2)
    except Stop:
        pass
    finally:
        # Signals now would interrupt the stopping itself; the processes are stopped anyway.
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)
        for _, process in reversed(children):  # the web first, the gateway last
            _stop(process)
        if gateway.process is not None:
            gateway.stop()  # also when it started but was never listed
        if scheduler_log is not None:
            scheduler_log.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
