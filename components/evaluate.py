"""Evaluate: test-split accuracy and loss, and the blessing when accuracy reaches the threshold."""
from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import Evaluation, Examples, Model
from pipeline.runner import Component


def evaluate(model: Model, examples: Examples, *, out_dir: Path, min_accuracy: float,
             batch_size: int = 512) -> Evaluation:
    """Scores the model on the test split; blessed when accuracy >= `min_accuracy`.

    Example:
        >>> ev = evaluate(model, examples, out_dir=Path("/tmp/eval"), min_accuracy=0.88)
        >>> ev.blessed, ev.reasons
        (True, ('accuracy 0.9012 >= min_accuracy 0.8800',))
    """
    import keras

    from components.inputs import make_dataset

    trained = keras.models.load_model(model.path)
    metrics = trained.evaluate(make_dataset(examples.file_pattern("test"), batch_size), verbose=0,
                               return_dict=True)
    accuracy, loss = float(metrics["accuracy"]), float(metrics["loss"])
    blessed = accuracy >= min_accuracy
    reason = f"accuracy {accuracy:.4f} {'>=' if blessed else '<'} min_accuracy {min_accuracy:.4f}"
    return Evaluation(uri=str(out_dir), fingerprint="", accuracy=accuracy, loss=loss, min_accuracy=min_accuracy,
                      blessed=blessed, reasons=(reason,))


COMPONENT = Component(name="evaluate", fn=evaluate, inputs=(Model, Examples), output=Evaluation, version="1")
