"""The HTML matrix and run report open in headless Chromium and render a real page.

Needs Debian's chromium (the CI script installs it); skipped with the reason otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from gpuprobe.store import matrix as mx
from gpuprobe.store import render
from gpuprobe.store import report as rp
from gpuprobe.store.results import read_result
from result_factory import field_report

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path) -> None:
    profile = tempfile.mkdtemp(prefix="gpuprobe-chromium-")
    try:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1400,1000",
                        page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def assert_real_picture(png: Path) -> None:
    assert png.exists() and png.stat().st_size > 10_000, "screenshot missing or tiny"
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, "screenshot is (nearly) one colour"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_html_matrix_and_report_render_in_chromium(tmp_path):
    folder = tmp_path / "reports"
    paths = field_report(folder)
    matrix_html = tmp_path / "matrix.html"
    matrix_html.write_text(render.to_html(mx.build([folder])))
    report_html = tmp_path / "report.html"
    report_html.write_text(rp.render(read_result(paths[0]), "html", paths[0]))
    for page in (matrix_html, report_html):
        png = page.with_suffix(".png")
        screenshot(page, png)
        assert_real_picture(png)
        keep = Path(tempfile.gettempdir()) / f"gpuprobe-{png.name}"  # for a person to look at
        shutil.copy(png, keep)
