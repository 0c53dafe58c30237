"""Semantic exceptions of the pipeline, each with the exit code the CLI returns for it."""
from __future__ import annotations


def first_line(exc: BaseException | str, limit: int | None = None, default: str | None = None) -> str:
    """The first line of an exception's message (or of a message), at most `limit` characters; for an empty
    one `default`, else the exception's type name: how a library's multi-line error becomes part of a
    one-line message.

    Example:
        >>> first_line(ValueError("bad value\\nat line 3"))
        'bad value'
        >>> first_line(ValueError(), default="")
        ''
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if default is None else default
    return text.splitlines()[0][:limit]


class PipelineError(Exception):
    """A failure the user can act on; its message is one line naming what was wrong."""

    exit_code = 1


class DataError(PipelineError):
    """Input data that cannot be read: a missing, truncated or malformed file or dataset."""


class ConfigError(PipelineError):
    """A config key, config value or flag that is unknown, of the wrong type or out of its range: usage."""

    exit_code = 2


class ValidationFailed(PipelineError):
    """Data validation found anomalies or drift: the run stops before training."""

    exit_code = 3

    def __init__(self, anomalies):
        self.anomalies = tuple(anomalies)
        first = self.anomalies[0]
        others = len(self.anomalies) - 1
        more = f" (and {others} more anomal{'y' if others == 1 else 'ies'})" if others else ""
        super().__init__(f"data validation failed: split '{first.split}', feature '{first.feature}': "
                         f"{first.type}: {first.description}{more}")


class NotBlessed(PipelineError):
    """The model failed a blessing check: the run ends `not_blessed` and nothing is pushed."""

    exit_code = 4


class TrainingDiverged(PipelineError):
    """Training's loss became NaN or infinite: every later epoch would learn nothing, so the run fails."""


class WorkerLost(PipelineError):
    """A member of a multi-worker training stopped answering: the others cannot go on without it."""


class RunFailed(PipelineError):
    """A run ended `failed` (Python API): the message is the run's error, `summary` its summary."""

    def __init__(self, summary: dict):
        self.summary = summary
        super().__init__(summary["error"])


class MetadataError(PipelineError):
    """The ML Metadata store cannot be opened or has no record of what was asked for."""


class LockedError(PipelineError):
    """Another run holds the lock on the pipeline root."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT (Ctrl-C) or SIGTERM: it is recorded `interrupted` with its summary.

    A KeyboardInterrupt, not a PipelineError: code that turns an Exception into a failure (KerasTuner
    marks a trial failed and goes on) lets it through.
    """

    exit_code = 130

    def __init__(self, signal_name: str):
        self.signal_name = signal_name
        super().__init__(f"interrupted by {signal_name}; run the same command again: finished components are reused")
