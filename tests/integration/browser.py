"""A report as a reader sees it: rendered by headless Chromium (Debian's ``chromium``, installed by ``make test``).

:func:`check_report` loads a copy of ``index.html`` with a small script that counts, after the page's ``load``
event, the images that decoded to a picture and the verdict blocks; Chromium prints the final DOM
(``--dump-dom``) and the counts are read from it. A screenshot of the top of the page is kept in
``.test-artefacts/`` at the repository root for people to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / ".test-artefacts"

_PROBE = """
<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const out = document.createElement("pre");
  out.id = "twin-browser-check";
  out.textContent = JSON.stringify({images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    verdicts: document.querySelectorAll("div.verdict").length});
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str:
    """The Chromium executable; skips the test where there is none, except on CI (where make test installs it)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make test installs Debian's chromium)")
        pytest.skip("chromium is not installed: the report is not checked in a browser (make test installs it)")
    return exe


def _run(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


def check_report(index: Path, name: str) -> dict:
    """Render ``index`` in Chromium; returns ``{"images", "loaded", "verdicts"}`` and keeps a screenshot."""
    exe = chromium()
    probe = index.with_name(".browser-check.html")
    probe.write_text(index.read_text().replace("</body>", _PROBE + "</body>"))
    out = _run(exe, "--virtual-time-budget=20000", "--dump-dom", probe.resolve().as_uri())
    probe.unlink()
    m = re.search(r'<pre id="twin-browser-check">([^<]*)</pre>', out.stdout)
    assert m, f"the report did not load in Chromium: {out.stderr[-1000:]}"
    ARTEFACTS.mkdir(exist_ok=True)
    _run(exe, f"--screenshot={ARTEFACTS / f'{name}.png'}", "--window-size=1200,1600", index.resolve().as_uri())
    return json.loads(m.group(1))
