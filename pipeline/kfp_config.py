"""The `kubeflow` config section: each KFP task's retries and resource requests, and the MySQL password's secret."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine.dag import Pipeline
from engine.settings import param

# Kubernetes quantities as KFP's compiler takes them (kfp.dsl.PipelineTask.set_cpu_request, set_memory_request,
# set_accelerator_limit), so that a bad value is refused with its key when the config is read, not mid-compile.
CPU = (r"([0-9]*[.])?[0-9]+m?", "a CPU quantity such as '2', '0.5' or '500m'")
MEMORY = (r"[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?", "a memory quantity such as '4G' or '512Mi'")
GPUS = (0, 1, 2, 4, 8, 16)
ACCELERATOR = (r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?", "an accelerator type such as 'nvidia.com/gpu'")
# A Secret's name is a DNS subdomain; a key is letters, digits, '-', '_' and '.'.
SECRET = (r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?(:[-._A-Za-z0-9]{1,253})?",
          "NAME[:KEY]: a Kubernetes secret's name (lower-case letters, digits, '-' and '.') and its key")
SECRET_KEY = "password"  # the key of `--mysql-secret NAME` without one


@dataclass(frozen=True)
class Resources:
    """One task's requests; each one set replaces the section's own for that task."""

    cpu: str | None = param(None, pattern=CPU)
    memory: str | None = param(None, pattern=MEMORY)
    gpu: int | None = param(None, choices=GPUS)


@dataclass(frozen=True)
class KubeflowSettings:
    """What every task of the compiled pipeline asks of Kubernetes, unless `resources` says otherwise for it."""

    # A retried task finds every finished output in the project's cache, so a retry redoes only what was lost.
    retries: int = param(2, low=0, high=100)
    backoff_seconds: int = param(30, low=0, high=3600)  # KFP waits at most an hour before a retry
    cpu: str = param("1", pattern=CPU)
    memory: str = param("4G", pattern=MEMORY)
    gpu: int = param(0, choices=GPUS)
    accelerator: str = param("nvidia.com/gpu", pattern=ACCELERATOR)
    mysql_secret: str | None = param(None, pattern=SECRET)


def section(pipeline: Pipeline) -> type:
    """The `kubeflow` section of `pipeline`'s config: `KubeflowSettings` and `resources` with a key per node.

    Example:
        >>> from pipeline.definition import PRODUCTION
        >>> section(PRODUCTION)().resources.train is None  # the section's requests
        True
    """
    per_node = dataclasses.make_dataclass(
        "TaskResources", [(name, Resources | None, field(default=None)) for name in pipeline.order], frozen=True)
    return dataclasses.make_dataclass("KubeflowConfig", [("resources", per_node, field(default_factory=per_node))],
                                      bases=(KubeflowSettings,), frozen=True,
                                      namespace={"__doc__": KubeflowSettings.__doc__})


def requests(kubeflow, name: str) -> tuple[str, str, int]:
    """Task `name`'s CPU, memory and GPU count: its own in `resources`, else the section's.

    Example:
        >>> from engine.settings import build
        >>> from pipeline.definition import PRODUCTION
        >>> cfg = build(section(PRODUCTION), {"resources": {"train": {"cpu": "4", "gpu": 1}}})
        >>> requests(cfg, "train"), requests(cfg, "push")
        (('4', '4G', 1), ('1', '4G', 0))
    """
    own = getattr(kubeflow.resources, name, None) or Resources()
    return (own.cpu if own.cpu is not None else kubeflow.cpu, own.memory if own.memory is not None else kubeflow.memory,
            own.gpu if own.gpu is not None else kubeflow.gpu)


def secret(kubeflow) -> tuple[str, str] | None:
    """The Kubernetes secret's name and key holding the MySQL password (`mysql_secret`), or None."""
    if kubeflow.mysql_secret is None:
        return None
    name, _, key = kubeflow.mysql_secret.partition(":")
    return name, key or SECRET_KEY
