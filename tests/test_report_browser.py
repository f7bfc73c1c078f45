"""report.html in headless Chromium: every image decodes, nothing loads from outside.

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``); skipped without.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from analysis.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium not installed at /usr/bin/chromium "
           "(CI: apt-get install -y chromium)")


def _chromium(tmp_path: Path, page: Path, *args: str) -> str:
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", *args, page.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _body(dom: str) -> str:
    match = re.search(r"<body\b[^>]*>", dom)
    assert match, dom[:500]
    return match.group(0)


def test_report_renders_with_every_image_decoded(tmp_path):
    from _run_dirs import write_run  # the synthetic run-directory writer
    html_path, _ = write_report(write_run(tmp_path / "run"))
    n_images = len(re.findall(r"<img\b", html_path.read_text()))
    body = _body(_chromium(tmp_path, html_path, "--dump-dom"))
    assert 'data-images-ok="true"' in body
    assert f'data-images="{n_images}"' in body
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, html_path, f"--screenshot={shot}", "--window-size=1200,3000")
    from matplotlib.image import imread
    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page


def test_a_broken_image_is_detected(tmp_path):
    from _run_dirs import write_run
    html_path, _ = write_report(write_run(tmp_path / "run", attacked=False))
    broken = tmp_path / "broken.html"
    broken.write_text(html_path.read_text().replace("base64,iVBOR", "base64,AAAA", 1))
    assert 'data-images-ok="false"' in _body(_chromium(tmp_path, broken, "--dump-dom"))
