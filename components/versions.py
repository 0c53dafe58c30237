"""The versions of a serving directory: which serves now, the regression gate decided again against it at
push time, and which this root pushed without its metadata store knowing."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from components.image_features import as_delivered
from components.ingest import Examples
from engine import paths
from engine.artifacts import Artifact
from engine.errors import NotBlessed, PipelineError, first_line

if TYPE_CHECKING:  # evaluate imports this module for PushedModel, its baseline's type
    from components.evaluate import Evaluation

INFO = "model_info.json"  # beside saved_model.pb: which model and evaluation a version came from


@dataclass(frozen=True)
class PushedModel(Artifact):
    """A SavedModel in the serving directory, `<serving_dir>/<version>/`; `uri` is that directory."""

    version: int
    model_fingerprint: str = ""  # the Model artifact it was exported from
    infra_check: str = ""  # what the pre-push check in a fresh process found
    recheck: str = ""  # the regression gate decided again at push against a version pushed meanwhile
    kind: ClassVar[str] = "PushedModel"
    run_columns: ClassVar[tuple[tuple[str, str], ...]] = (("pushed_version", "version"),)

    def intact(self) -> bool:
        return (Path(self.uri) / "saved_model.pb").is_file()


def model_info(version: Path) -> dict:
    """A pushed version's `model_info.json` (model, classes, polarity, root id); empty when it has none (a
    version pushed by hand, or before the file existed)."""
    try:
        return json.loads((version / INFO).read_text())
    except (OSError, ValueError):
        return {}


def _versions(serving_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in serving_dir.iterdir() if p.name.isdigit()) if serving_dir.is_dir() else []


def serving_baseline(serving_dir: str | Path, model_fingerprint: str) -> PushedModel | None:
    """The model serving now, read from the serving directory itself: its newest version, whoever pushed it.

    The directory is the truth a server sees, so the regression gate holds when the metadata store does
    not know its versions (roots sharing a serving directory, a store moved aside). A version emptied of
    its `saved_model.pb` was removed from serving; a pushed copy of the model being evaluated
    (`model_fingerprint`) is skipped, as a model is not its own baseline. A version that cannot be read
    is still returned: evaluate says so (`evaluate.baseline_broken`). Its fingerprint covers the version's
    number, `saved_model.pb` and `model_info.json` (not where the directory is), so a replaced version is
    a new baseline and a moved one is not.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as serving:
        ...     (Path(serving) / "3").mkdir()
        ...     (Path(serving) / "3" / "saved_model.pb").touch()
        ...     serving_baseline(serving, "fingerprint of the model evaluated").version
        3
    """
    import hashlib

    serving = Path(serving_dir)
    for number in reversed(_versions(serving)):
        version = serving / str(number)
        if not (version / "saved_model.pb").is_file():
            continue
        info = model_info(version)
        if info.get("model_fingerprint") == model_fingerprint:
            continue
        digest = hashlib.sha256(str(number).encode())  # not its path: a moved root keeps its baseline
        for name in ("saved_model.pb", INFO):
            if (version / name).is_file():
                digest.update((version / name).read_bytes())
        return PushedModel(uri=str(version), fingerprint=digest.hexdigest(), version=number,
                           model_fingerprint=str(info.get("model_fingerprint", "")))
    return None


def regression_recheck(evaluation: Evaluation, current: PushedModel | None, examples: Examples,
                       serving_dir: Path) -> str:
    """The regression gate decided again when the version serving now (`current`, `serving_baseline`) is not
    the one the evaluation compared with (another build pushed to this serving directory meanwhile); "" when
    it is the same.

    Raises:
        NotBlessed: the model is worse than the version serving now by more than the evaluation's
            `max_regression`.
        PipelineError: the version serving now cannot be read.
    """
    import numpy as np

    from components import slices
    from components.evaluate import PREDICTIONS, regression, serving_predictions, test_arrays

    if evaluation.max_regression is None or (current.fingerprint if current else "") == evaluation.baseline_fingerprint:
        return ""
    if current is None:  # the version it was compared with is gone; the absolute thresholds were met
        return f"baseline version {evaluation.baseline_version} no longer serves: absolute thresholds only"
    images, labels = test_arrays(examples)
    try:
        # A served model takes images as delivered: with the polarity the source had before ingest inverted it.
        theirs = serving_predictions(current.uri, as_delivered(images, examples.inverted))
    except Exception as exc:  # any way a SavedModel can be broken
        why = f"{current.uri}: version {current.version}, pushed after this model was evaluated, cannot be read " \
              f"as the regression baseline ({first_line(exc, 200)})"
        if evaluation.baseline_broken == "ignore":
            return f"{why}: ignored (baseline_broken ignore); only absolute thresholds apply"
        raise PipelineError(f"push: {why}; nothing pushed: repair or remove that version, or pass "
                            "--baseline-broken ignore") from None
    ok, compared = regression(evaluation.accuracy, float((theirs == labels).mean()), f"version {current.version}",
                              evaluation.max_regression)
    failed = [] if ok else [compared]
    gates = evaluation.slice_gates or {}
    ours = Path(evaluation.uri) / PREDICTIONS
    if gates.get("max_regression") is not None and ours.is_file():
        with np.load(ours) as saved:  # the slices evaluate measured, on the same test split
            right = saved["predicted"] == labels
            masks = list(np.unpackbits(saved["masks"], axis=1, count=len(labels)).astype(bool))
        checks = slices.gate(slices.measure(list(evaluation.slices), masks, right, theirs == labels), masks, right,
                             theirs == labels, None, gates["max_regression"], f"version {current.version}")
        failed += [reason for passed, reason in checks if not passed]
        compared = "; ".join([compared] + [reason for _, reason in checks])
    if failed:
        raise NotBlessed(f"model not blessed: version {current.version} of {serving_dir} was pushed after this "
                         f"model was evaluated; {'; '.join(failed)}; nothing pushed")
    return f"decided again against version {current.version}, pushed after evaluation: {compared}"


def same_polarity(current: PushedModel | None, examples: Examples, serving_dir: Path) -> None:
    """Refuses a model whose data were delivered with the other polarity than the version serving now
    (`current`): its clients send images as they always did, which the new version would read inverted.

    Raises:
        NotBlessed: the version serving now records the other polarity (`inverted` in `model_info.json`).
    """
    served = model_info(Path(current.uri)).get("inverted") if current else None
    if served is not None and bool(served) != examples.inverted:
        light = "dark ink on a light background"
        shown = {True: light, False: "light ink on a dark background"}
        raise NotBlessed(f"model not blessed: version {current.version} of {serving_dir} takes images of "
                         f"{shown[bool(served)]}, this model's data came as {shown[examples.inverted]} "
                         "(data.invert auto inverted one of them); its clients would be answered as if their "
                         "images were inverted: push to another serving directory, or deliver the data as before")


def pushed_from(model_uri: str) -> str | None:
    """The id of the root whose artifacts hold the model at `model_uri` (`<root>/artifacts/train/<key>`), for
    `model_info.json`: which root pushed a version, wherever either is later moved."""
    parents = Path(model_uri).parents
    return paths.root_id(parents[2]) if len(parents) > 2 and parents[1].name == "artifacts" else None


def unrecorded_versions(serving_dir: str | Path, root: str | Path, recorded: list[str]) -> list[str]:
    """The versions in `serving_dir` pushed from `root` (their `model_info.json` names its id) that are not
    among `recorded`, the metadata store's pushed models: a store that failed while a push was recorded.
    """
    serving, rid = Path(serving_dir), paths.root_id(root)
    known = {Path(uri).resolve() for uri in recorded}
    return [str(serving / str(n)) for n in _versions(serving) if rid and (serving / str(n) / "saved_model.pb").is_file()
            and model_info(serving / str(n)).get("root_id") == rid and (serving / str(n)).resolve() not in known]
