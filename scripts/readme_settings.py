"""Regenerate the settings table in README.md from `tap-cdr --about --format=markdown`.

`python scripts/readme_settings.py` rewrites it; `--check` exits 1 if it is stale.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def generated_table() -> str:
    about = subprocess.run(
        [sys.executable, "-m", "tap_cdr.tap", "--about", "--format=markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^\| Setting .*?(?=\n\n|\Z)", about, re.DOTALL | re.MULTILINE)
    if not match:
        raise SystemExit("no settings table in --about output")
    return match.group(0).strip()


def main() -> int:
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    fresh = f"{head}{BEGIN}\n{generated_table()}\n{END}{tail}"
    if "--check" in sys.argv:
        if fresh != text:
            print("README settings table is stale: run python scripts/readme_settings.py")
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
