"""The wheel (issue 14 item 10): every template, static file and translation ships in it, the
translations compiled, and the build says nothing about folders that "would be ignored"
(about 670 lines of it, one block per template or static folder, before setup.cfg listed
those folders as packages)."""

from __future__ import annotations

import gettext
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eldercare", "assessment", "marketplace", "vouchers")
# What a checkout has that a build must not see: the build makes its own.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "instance", "build", "dist", "*.egg-info", "__pycache__", "*.mo", "*.pyc"
)
BUILD_WARNINGS = (
    "would be ignored",
    "is absent from the `packages` configuration",
    "BuildBackendWarning",
    "SetuptoolsDeprecationWarning",
)


def _build_wheel(tmp_path: Path) -> tuple[Path, str]:
    """A wheel built as pip builds it (isolated build environment), from a clean copy of the
    sources: a checkout's compiled catalogs and earlier build/ must not help."""
    source = tmp_path / "source"
    for name in (*PACKAGES, "setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md"):
        path = ROOT / name
        if not path.exists():
            continue
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=NOT_SOURCE)
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    out = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = build.stdout + build.stderr
    assert build.returncode == 0, output[-4000:]
    (wheel,) = out.glob("eldercare_vouchers-*.whl")
    return wheel, output


def test_the_wheel_holds_templates_static_files_and_compiled_translations(tmp_path):
    wheel, output = _build_wheel(tmp_path)
    warned = [line for line in output.splitlines() if any(w in line for w in BUILD_WARNINGS)]
    assert warned == []

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        catalog = archive.read("eldercare/translations/zh_Hans_CN/LC_MESSAGES/messages.mo")
    data = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file()
        and ({"templates", "static"} & set(path.relative_to(ROOT).parts))
        and "__pycache__" not in path.parts
    }
    assert len(data) > 100  # the project's templates and static files, found
    assert data - names == set()
    assert "assessment/gbt42195_items.json" in names
    assert "eldercare/translations/zh_Hans_CN/LC_MESSAGES/messages.po" in names
    # Compiled from the .po by the build, and it translates.
    chinese = gettext.GNUTranslations(io.BytesIO(catalog))
    assert chinese.gettext("Messages") != "Messages"
    assert not any(name.startswith(("tests/", "bench/")) or "__pycache__" in name for name in names)
