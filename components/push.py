"""Push: exports a blessed model as a versioned SavedModel, checks it in a fresh process, then renames it into place."""
from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.evaluate import Evaluation
from components.ingest import SPLITS, Examples
from components.train import Model
from engine.component import Component
from engine.errors import NotBlessed, PipelineError, first_line
from engine.failpoints import failpoint
from engine.lock import exclusive
from engine.runner import remove_leftovers
from engine.settings import param
from components.evaluate_report import not_evaluated
from components.image_features import as_delivered
from components import drift_baseline
from components.versions import (INFO, PushedModel, _versions, model_info, pushed_from, regression_recheck,
                                 same_polarity, serving_baseline)

SIDE = 28
CHECK_IMAGES, CHECK_TOLERANCE = 100, 1e-5


def export_serving(model_path: str, destination: Path, classes: tuple[str, ...] = tuple("0123456789"),
                   invert: bool = False) -> None:
    """Writes a SavedModel with two signatures, preprocessing in the graph, and the `.keras` file beside it.

    `serving_default` takes uint8 `images` [N, 28, 28] or [N, 28, 28, 1]; `serving_png` takes encoded
    grayscale 28×28 PNG bytes `png` [N]. Both return `class_ids` [N] (int64), `classes` [N] (the class
    names, strings) and `probabilities` [N, number of classes]. With `invert` (ingest inverted the training
    data, `Examples.inverted`) both invert their inputs (255 - x) first, as ingest did.
    """
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path)

    def classify(images):
        pixels = tf.reshape(images, [-1, SIDE * SIDE])
        if invert:  # inputs arrive with the polarity of the source the model was trained from, before ingest's
            pixels = tf.constant(255, tf.uint8) - pixels
        probabilities = tf.cast(model(pixels, training=False), tf.float32)
        class_ids = tf.argmax(probabilities, axis=-1)
        return {"class_ids": class_ids, "classes": tf.gather(tf.constant(list(classes)), class_ids),
                "probabilities": probabilities}

    def serve(images):
        tf.debugging.assert_equal(tf.reduce_prod(tf.shape(images)[1:]), SIDE * SIDE,
                                  message="images: expected [N, 28, 28] or [N, 28, 28, 1]")
        return classify(images)

    def serve_png(png):
        def decode(data):
            image = tf.io.decode_png(data, channels=1)
            tf.debugging.assert_equal(tf.shape(image)[:2], [SIDE, SIDE], message="png: expected 28x28 images")
            return image

        return classify(tf.map_fn(decode, png, fn_output_signature=tf.TensorSpec([None, None, 1], tf.uint8)))

    archive = keras.export.ExportArchive()
    archive.track(model)
    # Unknown rank: one signature accepts both [N, 28, 28] and [N, 28, 28, 1].
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    archive.add_endpoint(name="serving_png", fn=serve_png, input_signature=[tf.TensorSpec([None], tf.string, name="png")])
    archive.write_out(str(destination), verbose=False)
    shutil.copyfile(model_path, destination / "model.keras")


def infra_check(saved_model: Path, model_path: str, images: np.ndarray, scratch: Path,
                classes: tuple[str, ...] = tuple("0123456789"), invert: bool = False) -> str:
    """Loads the export in a fresh Python process, serves `images` and compares with the Keras model in memory.
    With `invert`, the export is served the images as the source had them (255 - x): it inverts them back.

    Raises:
        PipelineError: the export does not load or serve there, or its answers differ (another class
            for any image, or a probability off by more than 1e-5).
    """
    import keras

    inputs = scratch / "infra-check.npz"
    np.savez(inputs, images=as_delivered(images, invert).reshape(-1, SIDE, SIDE))
    try:
        done = subprocess.run([sys.executable, "-m", "components.push", str(saved_model), str(inputs)],
                              capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise PipelineError(f"infra check: {saved_model} does not serve in a fresh process "
                                f"({lines[-1] if lines else 'exit ' + str(done.returncode)}); nothing pushed")
        served = np.load(inputs.with_suffix(".out.npz"), allow_pickle=False)
    finally:
        inputs.unlink(missing_ok=True)
        inputs.with_suffix(".out.npz").unlink(missing_ok=True)
    expected = keras.models.load_model(model_path).predict(images.reshape(-1, SIDE * SIDE), verbose=0)
    differ = int((served["class_ids"] != expected.argmax(axis=1)).sum())
    worst = float(np.abs(served["probabilities"] - expected).max())
    if differ or worst > CHECK_TOLERANCE:
        raise PipelineError(f"infra check: the export answers differently from the trained model on "
                            f"{len(images)} test images ({differ} other classes, largest probability difference "
                            f"{worst:.2e}, expected at most {CHECK_TOLERANCE:.0e}); nothing pushed")
    misnamed = int((served["classes"].astype(str) != np.array(classes, dtype=str)[served["class_ids"]]).sum())
    if misnamed:
        raise PipelineError(f"infra check: the export names the class of {misnamed} of {len(images)} test images "
                            f"otherwise than the model's classes {', '.join(classes)}; nothing pushed")
    return f"served {len(images)} test images in a fresh process: same classes, probabilities within {worst:.1e}"


def push(model: Model, evaluation: Evaluation, examples: Examples, *, out_dir: Path,
         serving_dir: Path) -> PushedModel:
    """Exports the blessed model into `<serving_dir>/<version>/`, atomically and never over a version.

    The SavedModel is written to a hidden staging directory beside the versions, checked in a fresh
    process on 100 test images (`infra_check`) and only then renamed into place, so a server watching
    `serving_dir` never sees a partial or broken version. When the latest version already holds this model (a push
    killed after its rename, then run again), it is not pushed twice: that version is returned.

    Builds on other roots may share `serving_dir`: the whole push holds a lock on it, and the regression
    gate is decided again there against the version serving at that moment (`regression_recheck`), so a
    model is never pushed over a better one that appeared after its evaluation.

    Raises:
        NotBlessed: the evaluation did not bless the model, or a version pushed since is better by more
            than `max_regression`.
    """
    if not evaluation.blessed:
        raise NotBlessed(f"push: model {model.uri} is not blessed ({'; '.join(evaluation.reasons)})")
    try:
        serving_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"{serving_dir}: cannot write the serving directory ({exc.strerror})") from None
    # Locking the directory itself leaves no lock file among the versions a server watches.
    with exclusive(serving_dir, create=False, waiting=f"waiting for another push to {serving_dir} to finish"):
        failpoint("push.locked")
        return _push_locked(model, evaluation, examples, out_dir, serving_dir)


def _push_locked(model: Model, evaluation: Evaluation, examples: Examples, out_dir: Path,
                 serving_dir: Path) -> PushedModel:
    from components.evaluate import test_arrays

    remove_leftovers(serving_dir, ".staging-*")  # of pushes killed midway
    latest = (_versions(serving_dir) or [None])[-1]
    info = model_info(serving_dir / str(latest)) if latest else {}
    if info.get("model_fingerprint") == model.fingerprint and "infra_check" in info:
        return PushedModel(uri=str(serving_dir / str(latest)), fingerprint="", version=latest,
                           model_fingerprint=model.fingerprint, infra_check=info["infra_check"],
                           recheck=info.get("recheck", ""))
    current = serving_baseline(serving_dir, model.fingerprint)  # hashes the version: looked up once
    same_polarity(current, examples, serving_dir)
    recheck = regression_recheck(evaluation, current, examples, serving_dir)
    staging = serving_dir / f".staging-{os.getpid()}"
    described = {"model": model.uri, "model_fingerprint": model.fingerprint, "accuracy": evaluation.accuracy,
                 "classes": list(model.classes), "inverted": examples.inverted, "root_id": pushed_from(model.uri),
                 **({"recheck": recheck} if recheck else {})}
    try:  # any failure or interrupt removes the staging; a kill leaves it to the next push
        try:
            shutil.rmtree(staging, ignore_errors=True)
            export_serving(model.path, staging, model.classes, examples.inverted)
            _save_drift_baseline(staging, examples)
            (staging / INFO).write_text(json.dumps(described, indent=2))
        except OSError as exc:
            raise PipelineError(f"{serving_dir}: cannot write the serving directory ({exc.strerror})") from None
        failpoint("push.staged")
        checked = infra_check(staging, model.path, test_arrays(examples, CHECK_IMAGES)[0], out_dir, model.classes,
                              examples.inverted)
        (staging / INFO).write_text(json.dumps({**described, "infra_check": checked}, indent=2))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    failpoint("push.checked")
    while True:  # a writer outside the lock (an older release, a person) may take a number meanwhile
        version = (_versions(serving_dir) or [0])[-1] + 1
        try:
            os.rename(staging, serving_dir / str(version))
            failpoint("push.renamed")
            break
        except OSError:
            if not (serving_dir / str(version)).exists():
                raise
    return PushedModel(uri=str(serving_dir / str(version)), fingerprint="", version=version,
                       model_fingerprint=model.fingerprint, infra_check=checked, recheck=recheck)


def _save_drift_baseline(staging: Path, examples: Examples) -> None:
    """The version's own drift baseline (`drift_baseline`), from every split of the run's data."""
    from components.inputs import split_arrays

    splits = {name: split_arrays(examples.file_pattern(name), drift_baseline.SPLIT_IMAGES) for name in SPLITS
              if examples.counts.get(name)}
    try:
        drift_baseline.save(staging, splits, examples.inverted, examples.name)
    except OSError:
        raise
    except Exception as exc:  # Keras or numpy on a model it cannot read back: after the blessing, say where
        raise PipelineError(f"{staging}: cannot write the version's drift baseline ({first_line(exc)}); nothing "
                            "pushed") from None


def _serve_in_this_process(saved_model: str, inputs: str) -> None:
    """The infra check's fresh process: serve the saved images, write what came back."""
    import tensorflow as tf

    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    out = serve(images=tf.constant(np.load(inputs)["images"]))
    np.savez(Path(inputs).with_suffix(".out.npz"), class_ids=out["class_ids"].numpy(),
             classes=out["classes"].numpy().astype(str), probabilities=out["probabilities"].numpy())


def summarize(pushed: PushedModel | None, info: dict) -> dict:
    """The run summary's `push` section and `pushed_model` (the version's directory)."""
    return {"pushed_model": pushed.uri if pushed else None,
            "push": pushed and {"version": pushed.version, "uri": pushed.uri, "infra_check": pushed.infra_check,
                                **({"recheck": pushed.recheck} if pushed.recheck else {})}}


def report_section(summary: dict, outputs) -> tuple[str, str, str]:
    """The run report's blessing section: the decision with each check (evaluation's, and push's own against
    a version pushed since), and the version pushed."""
    ev = summary.get("evaluation")
    if not ev:
        return "blessing", "Blessing", not_evaluated(summary)
    verdict = ("<p class='ok'>Blessed.</p>" if ev["blessed"] else
               f"<p class='bad'>Not blessed: {html.escape('; '.join(ev['failed']))}</p>")
    if ev["blessed"] and summary["status"] == "not_blessed":  # refused at push, against a version pushed since
        verdict = f"<p class='bad'>Blessed by evaluation, refused at push: {html.escape(summary['error'] or '')}</p>"
    checks = "".join(f"<li>{html.escape(r)}</li>" for r in ev["reasons"])
    push = summary.get("push")
    pushed = (f"<p>Pushed version {push['version']} to {html.escape(push['uri'])} "
              f"({html.escape(push['infra_check'])}).</p>" if push else "")
    if push and push.get("recheck"):
        pushed += f"<p>At push: {html.escape(push['recheck'])}.</p>"
    return "blessing", "Blessing", f"{verdict}<ul>{checks}</ul>{pushed}"


# 4: the recorded polarity (`inverted`), applied by the signatures; the push holds the serving directory's
# lock and decides the regression gate again there
@dataclass(frozen=True)
class PushConfig:
    """Where blessed models go; None means `<root>/serving`."""

    serving_dir: str | None = param(None, flag="--serving-dir", default_help="<root>/serving",
                                    help="where blessed models are pushed")


def serving_dir(cfg) -> Path:
    """The serving directory a config names: `push.serving_dir`, else `<root>/serving`."""
    return Path(cfg.push.serving_dir or Path(cfg.root) / "serving")


COMPONENT = Component(name="push", fn=push, inputs=(Model, Evaluation, Examples), output=PushedModel, version="4",
                      settings=PushConfig, params=lambda cfg, out, metadata: {"serving_dir": serving_dir(cfg)},
                      summary=summarize, report=report_section,
                      headline=lambda s: f", pushed {s['pushed_model']}" if s["pushed_model"] else "")

if __name__ == "__main__":
    _serve_in_this_process(*sys.argv[1:3])
