"""The settlement benchmark still measures a full month at a tiny size: it broke silently once
(the anomaly rules, added later, held all its seeded redemptions out of settlement, and the
run it timed settled nothing). Its figures are in README; a broken benchmark must fail CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_DATABASE_URL

ROOT = Path(__file__).resolve().parents[1]
N = 300


@pytest.mark.postgres
def test_the_settlement_benchmark_settles_every_seeded_redemption():
    env = dict(
        os.environ,
        TEST_DATABASE_URL=TEST_DATABASE_URL,
        BENCH_SETTLE_N=str(N),
        BENCH_SETTLE_PROVIDERS="10",
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "settlement.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = {
        line["figure"]: line
        for line in map(json.loads, done.stdout.splitlines())
        if line.get("figure")
    }
    assert figures["settlement.run"]["lines"] == N
    assert figures["settlement.approve_all"]["statements"] == 10
    assert "settlement.reconcile" in figures
