"""First runs on fresh machines: the README's first command in new virtual environments.

Each round makes a new venv (no site packages, so every compiled-on-first-use cache is
cold), installs the project as the README says (``pip install -e ".[test]"``), and runs
the quickstart into a new run directory, then reports whether the run finished and
how long each part took. Usage, from the repository root::

    python bench/first_runs.py          # five fresh environments, one after another
    python bench/first_runs.py -n 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timed(cmd: list[str], **kw) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return res.returncode, time.perf_counter() - t0, res.stdout + res.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="fresh environments")
    parser.add_argument("--scenario", default="scenarios/quickstart.yaml")
    args = parser.parse_args()
    print(f"{'run':>4}{'install s':>11}{'run s':>8}  {'exit':>4}  status", flush=True)
    ok = 0
    for i in range(args.n):
        tmp = Path(tempfile.mkdtemp(prefix="siftsim-fresh-"))
        try:
            venv = tmp / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            py = str(venv / "bin" / "python")
            code, t_install, log = _timed([py, "-m", "pip", "install", "-q", "-e",
                                           ".[test]"], cwd=REPO)
            if code != 0:
                print(f"{i + 1:>4}{t_install:>11.0f}{'-':>8}  {code:>4}  install failed:\n"
                      f"{log[-2000:]}", flush=True)
                continue
            out = tmp / "run"
            code, t_run, log = _timed([str(venv / "bin" / "siftsim"), "run",
                                       args.scenario, "--out", str(out)], cwd=REPO)
            status = json.loads((out / "manifest.json").read_text()).get("status") \
                if (out / "manifest.json").is_file() else "no manifest"
            ok += code == 0 and status == "complete"
            tail = "" if code == 0 else "\n" + log[-2000:]
            print(f"{i + 1:>4}{t_install:>11.0f}{t_run:>8.0f}  {code:>4}  {status}{tail}",
                  flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{ok} of {args.n} first runs finished", flush=True)


if __name__ == "__main__":
    main()
