"""The Python API for notebooks and scripts: `run`, `step`, `validate`, `drift`, `predict`, mirroring the commands."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterable

from pipeline import logs


def _quietly(fn: Callable) -> Callable:
    """Each function prints on stderr what its command prints: the pipeline's own lines (components, epochs,
    trials), without TensorFlow's, Beam's and the libraries' logs and warnings unless `verbose=True`."""
    @functools.wraps(fn)
    def call(*args, verbose: bool = False, **kwargs):
        logs.quiet(verbose)
        return fn(*args, **kwargs)

    return call


def _config(path: str | Path | None, root: str | Path | None, beam_args: Iterable[str] | None, **values: Any):
    from pipeline.flags import run_config

    return run_config(path, root, beam_args, **values)


@_quietly
def run(dataset: str | None = None, *, config: str | Path | None = None, root: str | Path | None = None,
        beam_args: Iterable[str] | None = None, no_cache: bool = False, start: str | None = None,
        stop: str | None = None, wait: bool = True, run_id: str | None = None, **flags: Any) -> dict[str, Any]:
    """Runs the production pipeline on this machine, as `python -m pipeline run` does, and returns its summary
    (the object `--json` prints). Keyword arguments mirror the flags (`pipeline.flags`): `max_epochs=1` for
    `--max-epochs 1`, `no_tune=True`, `budget="15m"`, `start`/`stop` for `--from`/`--to`.

    A run that is blocked by validation or not blessed returns its summary (`status` says which).

    Raises:
        ConfigError: a bad argument or config value (nothing ran).
        LockedError: another run holds the root and `wait` is False.
        RunFailed: the run failed; its message is the run's error and `.summary` the run's summary.
        KeyboardInterrupt: Ctrl-C (or SIGTERM) stopped the run, which is recorded `interrupted`.
    """
    from engine.errors import RunFailed
    from pipeline.local import execute

    summary = execute(_config(config, root, beam_args, dataset=dataset, **flags), use_cache=not no_cache,
                      start=start, stop=stop, wait=wait, run_id=run_id)
    if summary["status"] == "failed":
        raise RunFailed(summary)
    if summary["status"] == "interrupted":  # recorded; the notebook's cell stops as Ctrl-C asks
        raise KeyboardInterrupt(summary["error"])
    return summary


@_quietly
def step(component: str, run_id: str, *, config: str | Path | None = None, root: str | Path | None = None,
         beam_args: Iterable[str] | None = None, no_cache: bool = False, **flags: Any) -> dict[str, Any]:
    """Runs one component of run `run_id`, as `python -m pipeline step` does; returns the step's result."""
    from pipeline.step import execute_step

    return execute_step(_config(config, root, beam_args, **flags), component, run_id, use_cache=not no_cache)


@_quietly
def validate(dataset: str, *, schema: str | None = None, root: str | Path | None = None,
             beam_args: Iterable[str] | None = None, invert: str = "false", **flags: Any) -> dict[str, Any]:
    """Statistics and anomalies of a dataset or one split (`SPEC[:SPLIT]`), as `python -m pipeline validate`;
    `clean` is False when there are anomalies. `invert` as its `--invert`: "false" checks the images as
    delivered. Other keyword arguments mirror the command's settings flags.
    """
    from pipeline.checks import validate_check
    from pipeline.flags import check_config

    return validate_check(dataset, check_config(root, beam_args, "validate", schema, **flags), invert)


@_quietly
def drift(baseline: str | None, current: str, *, schema: str | None = None, root: str | Path | None = None,
          report: str | Path | None = None, beam_args: Iterable[str] | None = None,
          model: str | Path | None = None, invert: str = "false", **flags: Any) -> dict[str, Any]:
    """Compares a dataset (or saved statistics) with a baseline, as `python -m pipeline drift`; `drifted`
    is True when any feature drifted. With `report`, also writes the HTML report there; with `model` (a
    pushed version's directory), also tests what that model makes of both; `baseline` None is then the
    version's own (its run's data at push). Other keyword arguments mirror the command's settings flags.
    """
    from pipeline.checks import drift_check
    from pipeline.flags import check_config

    return drift_check(baseline, current, check_config(root, beam_args, "drift", schema, **flags),
                       str(report) if report else None, str(model) if model else None, invert)


@_quietly
def predict(images: Iterable[str | Path] = (), *, model: str | Path | None = None,
            serving_dir: str | Path | None = None, dataset: str | None = None, limit: int | None = None,
            root: str | Path | None = None) -> dict[str, Any]:
    """Predictions of a pushed model (`model`, or the latest version in `serving_dir`) for image files or a
    dataset split, as `python -m pipeline predict`; a dataset adds the accuracy.
    """
    from engine.errors import ConfigError
    from pipeline.serving import predict as serve

    images = [str(i) for i in images]
    if bool(images) == bool(dataset) or (model is None) == (serving_dir is None):
        raise ConfigError("predict: give images or a dataset, and a model or a serving directory (one of each)")
    return serve(str(model) if model else None, str(serving_dir) if serving_dir else None, images, dataset, limit,
                 _config(None, root, None))
