"""Examples leave the current folder alone and say where their files went; the CLI pipeline
example stops its live run only after rows were answered (issue 11, point 4)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_a_plotting_example_writes_to_the_temp_folder_and_says_where(tmp_path):
    pytest.importorskip("matplotlib")
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    (tmp_path / "cwd").mkdir()
    out = subprocess.run([sys.executable, str(EXAMPLES / "delayed_recall.py"), "--lags", "2", "--events", "600"],
                         cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    png = tmp_path / "tmp" / "streamlstm-examples" / "delayed_recall.png"
    assert f"plot written to {png}" in out.stdout and png.stat().st_size > 0
    assert list((tmp_path / "cwd").iterdir()) == []  # nothing in the current folder


@pytest.mark.slow
def test_cli_pipeline_example_runs_and_resumes(tmp_path):
    pytest.importorskip("click")
    env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", str(EXAMPLES / "cli_pipeline.sh")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    before = int(re.search(r"rows answered before the stop: (\d+)", out.stdout).group(1))
    after = int(re.search(r"rows answered after resuming: (\d+)", out.stdout).group(1))
    assert before >= 150 or "exit code 0" in out.stdout  # stopped only after rows were answered (151 lines)
    assert before + after == 800
    assert list(tmp_path.iterdir()) == []
