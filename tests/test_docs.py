"""Every Python example in the README and docs/ runs, each page as one script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
ALL_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES = [page for page in ALL_PAGES if PYTHON_BLOCK.search(page.read_text())]


def _with_database(redis_url: str, index: int) -> str:
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{index}"))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_page_examples_run(page: Path, redis_url: str, tmp_path: Path) -> None:
    """The page's python blocks, run in order as one script, exit 0."""
    blocks = PYTHON_BLOCK.findall(page.read_text())
    script = tmp_path / f"{page.stem}_example.py"
    script.write_text("\n\n".join(blocks))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTEDJOBS_")}
    # Each page gets its own Redis database, so one page's leftovers never reach another's worker.
    env["HOSTEDJOBS_REDIS_URL"] = _with_database(redis_url, 1 + PAGES.index(page) % 15)
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{page.name} examples failed:\n{result.stderr[-4000:]}"
