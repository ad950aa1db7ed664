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


def sh(cmd: list[str]) -> str:
    """A command's standard output, or "" when it cannot run."""
    import subprocess

    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except Exception:
        return ""


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what platform knows."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[str]:
    """The 1, 5 and 15 minute load averages as /proc/loadavg writes them ([] elsewhere)."""
    try:
        with open("/proc/loadavg") as fh:
            return fh.read().split()[:3]
    except OSError:
        return []


def git_head(repo: str | os.PathLike[str]) -> str:
    """The short commit the benchmark ran on."""
    return sh(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]).strip() or "no commit"
