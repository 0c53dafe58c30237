"""Docstring examples run: every `>>>` line in the engine, components and pipeline packages passes under doctest.

Every `*.py` module of the three packages is checked, so a new module's examples are too. A module whose source
has no `>>>` is not imported, so modules that load TensorFlow on import cost nothing here; running the examples
must not load TensorFlow either.
"""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import signal
import sys
from pathlib import Path

import pytest

PACKAGES = ("engine", "components", "pipeline")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
SECONDS = 30  # per module: an example that blocks (on a lock, say) fails instead of hanging the suite


def _modules() -> dict[str, Path]:
    """Every module of PACKAGES by dotted name (a package's `__init__.py` under the package's own), with its file."""
    found = {}
    for package in PACKAGES:
        for directory in importlib.util.find_spec(package).submodule_search_locations:
            for path in sorted(Path(directory).glob("*.py")):
                found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


MODULES = _modules()


def _blocked(signum, frame):
    raise TimeoutError(f"a docstring example ran for more than {SECONDS} s")


def test_every_module_is_found():
    assert {"engine.lock", "components.train", "pipeline.checks", "pipeline"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_pass(name):
    if ">>>" not in MODULES[name].read_text():
        return  # no examples: not imported
    tensorflow_before = "tensorflow" in sys.modules
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
    assert tensorflow_before or "tensorflow" not in sys.modules, f"{name}: its import or examples load TensorFlow"
