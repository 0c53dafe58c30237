"""Docstring examples run: every `>>>` line in the modules below passes under doctest.

A module whose source has no `>>>` is not imported, so modules that load TensorFlow cost nothing here.
Add a module's name to MODULES once its examples run (or are removed).
"""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import signal
from pathlib import Path

import pytest

MODULES = [
    "components.budget", "components.checkpoint", "components.cnn", "components.devices", "components.drift",
    "components.drift_report", "components.formats", "components.histogram_generator", "components.idx",
    "components.image_features", "components.ingest_report", "components.inputs", "components.libs",
    "components.model_drift", "components.search", "components.train_report", "components.trial",
    "components.tune_report", "components.versions",
    "pipeline.api", "pipeline.cli", "pipeline.config", "pipeline.flags", "pipeline.kubeflow", "pipeline.local",
    "pipeline.parser", "pipeline.report", "pipeline.serving", "pipeline.step", "pipeline.views",
]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
SECONDS = 30  # per module: an example that blocks (on a lock, say) fails instead of hanging the suite


def _blocked(signum, frame):
    raise TimeoutError(f"a docstring example ran for more than {SECONDS} s")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name):
    if ">>>" not in Path(importlib.util.find_spec(name).origin).read_text():
        return  # no examples
    module = importlib.import_module(name)
    runner, report = doctest.DocTestRunner(optionflags=FLAGS), []
    previous = signal.signal(signal.SIGALRM, _blocked)
    signal.alarm(SECONDS)
    try:
        for test in doctest.DocTestFinder().find(module):
            runner.run(test, out=report.append)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
    assert results.attempted > 0, f"{name}: `>>>` outside the docstrings doctest finds"
