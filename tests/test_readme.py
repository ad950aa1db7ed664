"""The README's commands and every example in the `--help` texts run as written (issue 11).

The shell commands are read from the README's ``bash`` blocks and from ``streamlstm --help``
and ``streamlstm run --help``, and run with bash in one folder holding the files they name
(generated here). The set-up commands (``pip install ...``) are run by `.ci/run`, in the
README's order in one fresh venv; here they are checked to be there verbatim.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("click")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def help_commands(*args: str) -> list[str]:
    out = subprocess.run([str(BIN / "streamlstm"), *args, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    return [re.split(r"\s{2,}", line)[0] for line in lines if line.startswith("streamlstm ")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    if not (BIN / "streamlstm").exists():
        pytest.skip(f"the streamlstm command is not installed in {BIN} (pip install -e '.[cli]')")
    d = tmp_path_factory.mktemp("readme")
    gen = [sys.executable, str(ROOT / "examples" / "make_sensor_csv.py")]
    (d / "sensors.csv").write_bytes(subprocess.run([*gen, "--rows", "60", "--sensors", "2"], capture_output=True,
                                                   check=True).stdout)
    (d / "new.csv").write_bytes(subprocess.run([*gen, "--rows", "10", "--sensors", "2", "--start", "60", "--no-temp"],
                                               capture_output=True, check=True).stdout)
    rng = np.random.default_rng(0)
    lines = ["time,sensor,hum,temp,load"]
    for t in range(40):
        for k in ("a", "b"):
            lines.append(f"{t},{k},{rng.normal():.3f},{20 + rng.normal():.3f},{50 + 5 * np.sin(t / 5):.3f}")
    (d / "data.csv").write_text("\n".join(lines) + "\n")
    (d / "live.csv").write_text("time,x,load\n" + "".join(f"{t},{np.cos(t / 3):.3f},{np.sin(t / 5):.3f}\n"
                                                          for t in range(80)))
    r = bash("streamlstm run sensors.csv --target temp --key sensor_id --save model.slstm -q > /dev/null", d)
    assert r.returncode == 0, r.stderr  # for `streamlstm info model.slstm` in the help
    (d / "series.csv").write_text("timestamp,value\n" + "".join(f"2024-01-{1 + t // 24:02d} {t % 24:02d}:00,"
                                                                 f"{10 + np.sin(t / 4):.3f}\n" for t in range(96)))
    (d / "nohead.csv").write_text("".join(f"{t};{np.sin(t):.3f};{np.cos(t):.3f}\n" for t in range(30)))
    return d


def bash(cmd: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_live(cmd: str, cwd: Path, rows: int) -> str:
    """A `tail -f` pipeline never ends: read its output until every row is answered, stop it."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    p = subprocess.Popen(["bash", "-c", cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    out = b""
    deadline = time.monotonic() + 300
    try:
        while out.count(b"\n") < rows + 1 and time.monotonic() < deadline:
            ready, _, _ = select.select([p.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert out.count(b"\n") == rows + 1, (out, err)  # the header line and every row: tail -n +1 keeps the header
    return out.decode()


def test_the_setup_commands_are_what_ci_runs_in_order():
    setup = [c for c in readme_commands() if c.startswith("pip install")]
    assert len(setup) == 2, setup
    ci = (ROOT / ".ci" / "run").read_text()
    cmds = [c.split("#")[0].strip() for c in setup]
    positions = [ci.find(c) for c in cmds]
    assert all(p >= 0 for p in positions), (cmds, "not in .ci/run")
    assert positions == sorted(positions)
    assert "export NUMBA_CACHE_DIR" not in ci  # the per-user cache of a fresh install is what is tested


def test_readme_commands_run_as_written(folder):
    cmds = [c for c in readme_commands() if not c.startswith("pip install")]
    assert any(c.startswith("tail ") for c in cmds) and any("streamlstm info" in c for c in cmds)
    for cmd in cmds:
        if cmd.startswith("tail "):
            out = run_live(cmd, folder, rows=80)
            assert out.startswith("time,load,forecast_load_t,error,forecast_load_t+1\n"), out[:200]
            info = bash("streamlstm info state.slstm --json", folder)
            assert info.returncode == 0 and json.loads(info.stdout)["input_rows_consumed"] == 80, info.stderr
            continue
        r = bash(cmd, folder)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (cmd, r.stdout, r.stderr)
    assert len((folder / "preds.csv").read_text().splitlines()) == 121
    assert len((folder / "new_preds.csv").read_text().splitlines()) == 21


def test_help_examples_run_as_written(folder):
    cmds = help_commands() + help_commands("run")
    assert len(cmds) >= 8, cmds
    for cmd in cmds:
        r = bash(cmd, folder)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (cmd, r.stdout, r.stderr)
    assert (folder / "temp.slstm").exists()
    assert len((folder / "kept.csv").read_text().splitlines()) == 81
