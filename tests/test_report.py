"""Tests of the self-contained HTML drift report, rendered in headless Chromium."""
import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.drift import boundaries, compare
from components.libs import load_tfdv
from components.schema import load_schema
from pipeline.report import drift_html

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "mnist_family.pbtxt"
SECTIONS = ("summary", "drift", "anomalies", "statistics", "histograms")
# Appended by the test only: reports carry no scripts. It records what the browser laid out.
PROBE = """<script>
const seen = {};
for (const id of %s) {
  const el = document.getElementById(id);
  const box = el ? el.getBoundingClientRect() : null;
  seen[id] = !!el && box.height > 0 && box.width > 0 && getComputedStyle(el).visibility !== 'hidden';
}
for (const [name, selector] of Object.entries(%s)) seen[name] = document.querySelectorAll(selector).length;
seen.broken_images = [...document.images].filter(img => !img.complete || img.naturalWidth === 0).length;
document.body.insertAdjacentHTML('beforeend', '<pre id="probe">' + JSON.stringify(seen) + '</pre>');
</script>"""


def rendered(page: Path, sections, counts: dict[str, str], tmp_path: Path) -> dict:
    """Opens `page` in headless Chromium (offline) and returns which sections are visible, and the number of
    elements matching each selector of `counts`."""
    text = page.read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", text) and "<script" not in text
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE % (json.dumps(list(sections)), json.dumps(counts)) + "</body>"))
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                          "--no-first-run", "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    return json.loads(re.findall(r'<pre id="probe">(.*?)</pre>', dom)[-1])  # the first is the script's text


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and not os.environ.get("CI"):
        pytest.skip("chromium is not installed (the README's install command installs it)")
    assert path, "CI must have chromium: the README install command installs it"
    return path


def test_report_renders_every_section_offline(stats, tmp_path):
    tfdv = load_tfdv()
    train = tfdv.load_stats_binary(stats.path("train")).datasets[0]
    test = tfdv.load_stats_binary(stats.path("test")).datasets[0]
    distances = compare(train, test, load_schema(SCHEMA), "drift: train vs test")
    report = {"baseline": "train", "current": "test", "schema": str(SCHEMA),
              "counts": {"baseline": train.num_examples, "current": test.num_examples},
              "drifted": False, "distances": [dataclasses.asdict(d) for d in distances],
              "anomalies": [{"split": "current", "feature": "label", "type": "X", "description": "<b>escaped</b>"}]}
    page = tmp_path / "drift.html"
    drift_html(report, train, test, page)
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page.read_text()
    seen = rendered(page, SECTIONS, {"svg_bars": "#histograms svg rect", "drift_rows": "#drift tr"}, tmp_path)
    assert all(seen[section] for section in SECTIONS), seen
    buckets = sum(len(boundaries()[d.feature]) - 1 for d in distances)
    assert seen["drift_rows"] == len(distances) + 1 and seen["svg_bars"] == 2 * buckets
