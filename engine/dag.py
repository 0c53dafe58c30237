"""A pipeline declared as data: nodes, where each input comes from, parameters, gates; order and slicing follow."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from engine.artifacts import Artifact
from engine.component import Component
from engine.errors import ConfigError

Outputs = Mapping[str, Artifact]  # the outputs of the nodes run so far in this run, by node name


class StopRun(Exception):
    """Raised after the component named by `--to` finished: the rest of the pipeline is not run."""


@dataclass(frozen=True)
class Stop:
    """What a gate returns to end the run after its node: the run's status and why."""

    status: str
    error: str | None = None


@dataclass(frozen=True)
class Resolver:
    """An input found in earlier runs rather than produced in this run (TFX's resolver nodes):
    `resolve(cfg, outputs, metadata)` returns an earlier artifact (from the metadata store, or elsewhere),
    or None. `after` names the nodes whose outputs it reads, so it is asked only once they ran."""

    name: str
    resolve: Callable[[Any, Outputs, Any], Artifact | None]
    after: tuple[str, ...] = ()


def _no_params(cfg, outputs: Outputs, metadata) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Node:
    """One step of a pipeline: its component and the upstream node (or resolver) feeding each input.

    What the component declares (`params`, `reuse`, `gate`, `summary`, `report`; see `Component`) applies
    unless the node gives its own.
    """

    component: Component
    inputs: tuple[str | Resolver, ...] = ()
    params: Callable[[Any, Outputs, Any], dict[str, Any]] | None = None
    reuse: Callable[[Any, Outputs, Any], Artifact | None] | None = None
    gate: Callable[[Artifact, Any], Stop | None] | None = None
    summary: Callable[[Artifact | None, dict[str, Any]], dict[str, Any]] | None = None
    report: Callable[[dict[str, Any], Outputs], tuple[str, str, str]] | None = None

    def __post_init__(self):
        for name in ("params", "reuse", "gate", "summary", "report"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(self.component, name))
        if self.params is None:
            object.__setattr__(self, "params", _no_params)

    @property
    def name(self) -> str:
        return self.component.name

    def upstream(self) -> tuple[str, ...]:
        """The nodes this one needs to have run: its inputs' producers and what its resolvers read."""
        names: list[str] = []
        for ref in self.inputs:
            names += list(ref.after) if isinstance(ref, Resolver) else [ref]
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Pipeline:
    """Nodes in a valid execution order; checked when declared: every input names an earlier node whose
    output type the component accepts, and node names are unique.

    Example:
        >>> def component(name, *inputs):
        ...     return Component(name=name, fn=lambda *inputs, out_dir: Artifact(uri=str(out_dir)), inputs=inputs,
        ...                      output=Artifact)
        >>> p = Pipeline("demo", (Node(component("load")), Node(component("count", Artifact), inputs=("load",))))
        >>> p.order, p.between("count", None)
        (('load', 'count'), ('count',))
    """

    name: str
    nodes: tuple[Node, ...]
    final_status: str = "completed"  # the status of a run that went through every node
    # Sections of the run summary drawn from several nodes' (`summary(summary_so_far, info)`), e.g. a budget.
    summary: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    node: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        seen: dict[str, Node] = {}
        for node in self.nodes:
            if node.name in seen:
                raise ConfigError(f"pipeline {self.name}: two nodes are named {node.name}")
            if len(node.inputs) != len(node.component.inputs):
                raise ConfigError(f"pipeline {self.name}: {node.name} declares {len(node.inputs)} inputs, its "
                                  f"component takes {len(node.component.inputs)}")
            for ref, expected in zip(node.inputs, node.component.inputs):
                for name in (ref.after if isinstance(ref, Resolver) else (ref,)):
                    if name not in seen:
                        raise ConfigError(f"pipeline {self.name}: {node.name} reads {name}, which is not an "
                                          f"earlier node")
                if isinstance(ref, str) and not _accepts(expected, seen[ref].component.output):
                    raise ConfigError(f"pipeline {self.name}: {node.name} cannot take {ref}'s "
                                      f"{seen[ref].component.output.__name__}")
            seen[node.name] = node
        object.__setattr__(self, "node", seen)

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def between(self, start: str | None, stop: str | None) -> tuple[str, ...]:
        """The node names from `start` to `stop` inclusive (see `between`)."""
        return between(self.order, start, stop)

    def sections(self) -> dict[str, type]:
        """Each node's config section, in pipeline order: its key and its component's settings class."""
        return {n.component.key: n.component.settings for n in self.nodes if n.component.settings}

    def rerun(self, cfg) -> frozenset[str]:
        """The nodes the config says to execute even when cached (`Component.rerun`)."""
        return frozenset(n.name for n in self.nodes if n.component.rerun and n.component.rerun(cfg))

    def output_kinds(self) -> tuple[str, ...]:
        """The artifact kinds the nodes produce, in order (lineage and reports are keyed by them)."""
        return tuple(n.component.output.kind for n in self.nodes)


def between(order: tuple[str, ...], start: str | None, stop: str | None) -> tuple[str, ...]:
    """The names of `order` from `start` to `stop` inclusive (either None: from the first, to the last):
    what `--from` and `--to` select.

    Raises:
        ConfigError: a name is not in `order`, or `start` comes after `stop`.
    """
    for flag, name in (("--from", start), ("--to", stop)):
        if name is not None and name not in order:
            near = difflib.get_close_matches(name, order, n=1)
            raise ConfigError(f"{flag} {name}: unknown component; {f'did you mean {near[0]}? ' if near else ''}"
                              f"expected one of {', '.join(order)}")
    first = order.index(start) if start else 0
    last = order.index(stop) if stop else len(order) - 1
    if start and stop and first > last:
        raise ConfigError(f"--from {start} --to {stop}: {start} comes after {stop} in the pipeline")
    return order[first:last + 1]


def _accepts(expected: type | tuple[type, ...], produced: type) -> bool:
    options = expected if isinstance(expected, tuple) else (expected,)
    return any(isinstance(t, type) and issubclass(produced, t) for t in options if t is not type(None))


def run_node(node: Node, cfg, runner, metadata) -> Stop | None:
    """Executes one node in `runner` (or takes its cached or reusable output) and applies its gate.

    Its inputs are the outputs of this run's earlier nodes (`runner.outputs`) and what its resolvers
    find in `metadata` (the metadata store, `engine.metadata.Metadata`). Returns the gate's `Stop`, or None to go on.

    Raises:
        KeyError: an upstream node has not run in this run.
        StopRun: the node is the run's last (`--to`) and its gate let it through.
    """
    outputs = runner.outputs
    inputs = tuple(ref.resolve(cfg, outputs, metadata) if isinstance(ref, Resolver) else outputs[ref]
                   for ref in node.inputs)
    earlier = node.reuse(cfg, outputs, metadata) if node.reuse and not runner.forced(node.name) else None
    try:
        output = runner.reuse(node.component, earlier) if earlier else runner(
            node.component, *inputs, **node.params(cfg, outputs, metadata))
    except StopRun:
        # `--to` ends the run here, but the node's verdict still stands: a partial run whose data failed
        # validation is `blocked`, never `partial` with exit 0.
        stopped = node.gate(runner.outputs[node.name], cfg) if node.gate else None
        if stopped:
            return stopped
        raise
    return node.gate(output, cfg) if node.gate else None

