"""Merge zh_CN translations from a JSON file into the catalog (a maintainer's tool).

    python scripts/fill_translations.py new.json

The JSON maps English msgids to Chinese; a plural message is keyed by its singular msgid
and its value may be a list of forms (Chinese has one: msgstr[0]). Only entries present in
the template are written; run `make messages` first so the catalog knows every current string.
"""

import json
import sys
from pathlib import Path

from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
PO = ROOT / "eldercare/translations/zh_Hans_CN/LC_MESSAGES/messages.po"


def main(path: str) -> None:
    updates = json.loads(Path(path).read_text(encoding="utf-8"))
    with PO.open("rb") as handle:
        catalog = read_po(handle, locale="zh_CN")
    for message in catalog:
        # A plural message is keyed by its singular msgid; its value is a list (one form
        # for Chinese: msgstr[0]).
        key = message.id[0] if isinstance(message.id, tuple) else message.id
        if key and key in updates:
            value = updates[key]
            if message.pluralizable:
                forms = [value] if isinstance(value, str) else list(value)
                message.string = tuple(forms[: catalog.num_plurals])
            else:
                message.string = value
            message.flags.discard("fuzzy")
    with PO.open("wb") as handle:
        write_po(handle, catalog, width=100, omit_header=False)
    missing = [
        m.id
        for m in catalog
        if m.id and not all(m.string if isinstance(m.string, tuple) else [m.string])
    ]
    print(f"{len(missing)} untranslated", *missing, sep="\n  ")


if __name__ == "__main__":
    main(sys.argv[1])
