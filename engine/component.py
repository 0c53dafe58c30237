"""A component's declaration: its function, typed inputs and output, settings, summary, report section and gate."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from engine.artifacts import Artifact


@dataclass(frozen=True)
class Component:
    """Everything the pipeline knows of a component, declared once beside its work.

    `fn(*inputs, out_dir=..., **params)` writes its files into `out_dir` and returns the output
    artifact with `uri=out_dir`; a blank fingerprint is filled with a hash of the execution's cache key
    and the files written, so a rebuilt output that differs invalidates what was computed from it.
    `source_key(**params)` fingerprints inputs from outside the pipeline (ingest's data files).
    A function that takes `work_dir` gets a directory that survives a crash, so a killed execution can
    resume from it (training's epoch backups, a search's finished trials); it is deleted once the output
    is committed. One that takes `run_dir` gets this run's directory, for logs (TensorBoard); one that takes
    `deadline` gets the time (`time.time()` seconds) at which the run's budget ends, or None. None of the
    three is part of the cache key.
    Bump `version` when a change to the code changes what the component produces.

    What the application derives from it:
    - `settings`: a frozen dataclass of `engine.settings.param`s, the component's section of the config
      tree under the key `section` (default: its name): YAML keys, flags, `--help` lines, the API's keywords.
    - `params(cfg, outputs, metadata)`: the keyword parameters of `fn` from the config, this run's outputs so
      far and the metadata store (where a setting carries over between runs); default: none.
    - `reuse(cfg, outputs, metadata)`: an earlier output to take instead of executing, or None.
    - `rerun(cfg)`: True to execute even when cached (`--retune`).
    - `gate(output, cfg)`: a `Stop` to end the run after it, or None.
    - `summary(output, info)`: its sections of the run summary; `headline(summary)`: what the run's one-line
      result says of it (", test accuracy 0.9812"), or ""; `report(summary, outputs)`: its section of the run
      report as (id, title, html).

    Example:
        >>> def card(model, *, out_dir, title):  # writes the card into out_dir
        ...     return Artifact(uri=str(out_dir))
        >>> CARD = Component(name="card", fn=card, inputs=(Artifact,), output=Artifact, section="model_card",
        ...                  params=lambda cfg, out, metadata: {"title": cfg.model_card.title})
        >>> CARD.key
        'model_card'
    """

    name: str
    fn: Callable[..., Artifact]
    inputs: tuple[type | tuple[type, ...], ...]
    output: type
    version: str = "1"
    source_key: Callable[..., str] | None = None
    settings: type | None = None
    section: str | None = None
    params: Callable[[Any, Any, Any], dict[str, Any]] | None = None
    reuse: Callable[[Any, Any, Any], Artifact | None] | None = None
    rerun: Callable[[Any], bool] | None = None
    gate: Callable[[Artifact, Any], Any] | None = None
    summary: Callable[[Artifact | None, dict[str, Any]], dict[str, Any]] | None = None
    report: Callable[[dict[str, Any], Any], tuple[str, str, str]] | None = None
    headline: Callable[[dict[str, Any]], str] | None = None

    @property
    def key(self) -> str:
        """Its section's key in the config tree."""
        return self.section or self.name
