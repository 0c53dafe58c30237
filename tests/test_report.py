"""Tests of the self-contained HTML drift report, rendered in headless Chromium."""
import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from components.drift import boundaries, compare
from components.libs import load_tfdv
from components.schema import load_schema
from components.drift_report import drift_html

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
              "moved": [{"feature": "mean_intensity", "low": 0.0, "high": 9.107, "baseline_share": 0.001,
                         "current_share": 0.1}],
              "anomalies": [{"split": "current", "feature": "label", "type": "X", "description": "<b>escaped</b>"}]}
    page = tmp_path / "drift.html"
    drift_html(report, train, test, page, {"mean_intensity": np.zeros((3, 28, 28), np.uint8)})
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page.read_text()
    seen = rendered(page, (*SECTIONS, "moved"), {"svg_bars": "#histograms svg rect", "drift_rows": "#drift tr",
                                                  "moved_images": "#moved img"}, tmp_path)
    assert all(seen[section] for section in SECTIONS), seen
    assert seen["moved_images"] == 3 and seen["broken_images"] == 0, seen
    # The label's histogram spans its 10 classes, not the 64 buckets kept for any class count.
    buckets = sum(10 if d.feature == "label" else len(boundaries()[d.feature]) - 1 for d in distances)
    assert "label" in {d.feature for d in distances} and ">class 9</text>" in page.read_text()
    assert seen["drift_rows"] == len(distances) + 1 and seen["svg_bars"] == 2 * buckets


def test_the_run_report_has_its_own_tuning_headers_axis_values_and_skew_histograms(stats, tmp_path):
    from pipeline.definition import PRODUCTION
    from pipeline.report import run_html

    tfdv = load_tfdv()
    train, test = (tfdv.load_stats_binary(stats.path(s)).datasets[0] for s in ("train", "test"))
    skew = [dataclasses.asdict(d) for d in compare(train, test, load_schema(SCHEMA), "skew: train vs test")]
    trials = [{"trial_id": "0000", "status": "COMPLETED", "score": 0.812345678, "epochs": 2, "seconds": 12.3456,
               "tuner": "tuner0", "hyperparameters": {"conv_blocks": 2, "learning_rate": 0.001}},
              {"trial_id": "0001", "status": "COMPLETED", "score": 0.9, "epochs": 1, "seconds": 8.0,
               "tuner": "tuner0", "hyperparameters": {"conv_blocks": 3, "learning_rate": 0.000316227766}}]
    summary = {"run_id": "r", "status": "pushed", "error": None, "anomalies": [], "drift": skew,
               "components": {"validate": {"state": "executed", "seconds": 1.0, "uri": "/x"}},
               "tuning": {"tuner": "random", "trials": trials, "reused": False,
                          "best_hyperparameters": {"conv_blocks": 3, "learning_rate": 0.000316227766}},
               "training": {"history": {"accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.55, 0.72, 0.79],
                                        "loss": [1.2, 0.8, 0.6], "val_loss": [1.1, 0.85, 0.7]}}}
    page = tmp_path / "report.html"
    run_html(PRODUCTION, summary, {"statistics": stats}, None, page)
    tuning = page.read_text().split('<section id="tuning">')[1].split("</section>")[0]
    assert re.findall(r"<th>(.*?)</th>", tuning) == ["trial_id", "status", "score", "epochs", "seconds", "tuner",
                                                     "conv_blocks", "learning_rate"]
    assert "<td>0.8123</td>" in tuning and "<td>12.35</td>" in tuning and "<td>0.0003162</td>" in tuning
    assert "best: conv_blocks 3, learning_rate 0.0003162" in tuning
    seen = rendered(page, ("validation", "tuning", "training"),
                    {"ticks": "#training text.tick", "skew_bars": "#validation svg rect"}, tmp_path)
    assert seen["validation"] and seen["tuning"] and seen["training"], seen
    assert seen["ticks"] == 2 * (3 + 3)  # two charts: three values up the side, three epochs along the bottom
    buckets = sum(10 if d["feature"] == "label" else len(boundaries()[d["feature"]]) - 1 for d in skew)
    assert seen["skew_bars"] == 2 * buckets  # the label's 10 classes, not its 64 buckets
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'shot-profile'}", f"--screenshot={shot}", "--window-size=1200,2200",
                    page.as_uri()], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    shutil.copy(shot, Path(os.environ.get("REPORT_SCREENSHOT", tmp_path / "kept.png")))


@pytest.mark.parametrize("inverted", [True, False])
def test_the_dataset_section_says_when_ingest_inverted_the_images(inverted):
    from components.ingest_report import report_section as dataset_section

    summary = {"dataset": {"spec": "folder:d", "source": "folder:/d", "fingerprint": "f", "counts": {"train": 3},
                           "classes": ["0", "1"], "inverted": inverted}}
    html_text = dataset_section(summary, {})[2]
    assert ("<th>polarity</th><td>inverted (255 - x): the source had dark ink on a light background"
            in html_text) is inverted
