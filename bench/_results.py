"""bench/RESULTS.md: one file, one section per bench script, each rewritten only by its owner.

A section is the text from ``<!-- NAME:start -->`` to ``<!-- NAME:end -->`` (both markers are
part of the text a script renders); everything else in the file is kept as it is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(name: str, section: str, path: str | os.PathLike[str] = RESULTS) -> None:
    """Put ``section`` (which starts and ends with NAME's markers) in place of the old one, or
    append it when the file has none yet."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = section.strip("\n")
    if not (section.startswith(start) and section.endswith(end)):
        raise ValueError(f"a {name!r} section must start with {start} and end with {end}")
    path = Path(path)
    text = path.read_text() if path.exists() else "# streamlstm benchmark results\n"
    old = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if old.search(text):
        text = old.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
