"""Semantic exceptions of the pipeline, each with the exit code the CLI returns for it."""
from __future__ import annotations


class PipelineError(Exception):
    """A failure the user can act on; its message is one line naming what was wrong."""

    exit_code = 1


class DataError(PipelineError):
    """Input data that cannot be read: a missing, truncated or malformed file or dataset."""


class ConfigError(PipelineError):
    """A config file or flag value that is unknown or of the wrong type."""


class ValidationFailed(PipelineError):
    """Data validation found anomalies or drift: the run stops before training."""

    exit_code = 3

    def __init__(self, anomalies):
        self.anomalies = tuple(anomalies)
        first = self.anomalies[0]
        more = f" (and {len(self.anomalies) - 1} more)" if len(self.anomalies) > 1 else ""
        super().__init__(f"data validation failed: split '{first.split}', feature '{first.feature}': "
                         f"{first.type}: {first.description}{more}")


class MetadataError(PipelineError):
    """The ML Metadata store cannot be opened or has no record of what was asked for."""


class LockedError(PipelineError):
    """Another run holds the lock on the pipeline root."""
