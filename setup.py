"""What setup.cfg cannot say: building the wheel compiles the translations into it.

The catalogs' compiled form (.mo) is not kept in git (``make catalogs`` compiles them in a
checkout); a wheel built from a clean checkout would otherwise ship the .po alone, and the
app would show every page in English. Everything else is in setup.cfg.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CATALOGS = Path("eldercare") / "translations"


class BuildWithCatalogs(build_py):
    def run(self):
        super().run()
        # Imported here: Babel is a build requirement (pyproject.toml), needed by this step only.
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        for source in sorted(CATALOGS.glob("*/LC_MESSAGES/*.po")):
            target = Path(self.build_lib) / source.with_suffix(".mo")
            target.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as po:
                catalog = read_po(po, locale=source.parts[-3])
            with target.open("wb") as mo:
                write_mo(mo, catalog)


setup(cmdclass={"build_py": BuildWithCatalogs})
