"""Kubeflow Pipelines v2 back end: one task per node, each running `python -m pipeline step` in the project image."""
import json
from pathlib import Path
from typing import Any

import yaml

from pipeline import config as config_module
from pipeline.config import Config
from pipeline.definition import PRODUCTION
from engine.dag import Pipeline
from engine.errors import ConfigError, PipelineError
from engine.files import write_text

MAX_INPUTS = 3  # the most upstream nodes any node reads; each is one input of the task


def _kfp():
    try:
        import kfp
        from kfp import dsl
    except ImportError:
        raise ConfigError("kfp: Kubeflow Pipelines is not installed; pip install -e '.[kfp]'") from None
    return kfp, dsl


def _step_component(image: str, name: str):
    """The KFP component of node `name`: it runs the step command and returns its output's uri.

    Its `input_N` parameters carry the upstream tasks' outputs, so KFP orders the tasks by their
    artifacts; the step itself reads its inputs from the metadata store. Gates live in the step (a
    blocked validation exits 3, a model not blessed exits 4), since `kfp.local` rejects `dsl.If`.
    """
    _, dsl = _kfp()

    @dsl.component(base_image=image, install_kfp_package=False)
    def step(component: str, run_id: str, job_id: str, root: str, config_yaml: str, input_1: str = "",
             input_2: str = "", input_3: str = "") -> str:
        import json
        import os
        import subprocess
        import sys
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config_file:
            config_file.write(config_yaml)
        try:
            done = subprocess.run([sys.executable, "-m", "pipeline", "step", component, "--run-id",
                                   run_id or job_id, "--root", root, "--config", config_file.name, "--json"],
                                  stdout=subprocess.PIPE, text=True)
        finally:
            os.unlink(config_file.name)
        if done.returncode != 0:
            sys.exit(done.returncode)  # the task fails with the run's exit code (3 blocked, 4 not blessed)
        output = json.loads(done.stdout)["output"]
        return output["uri"] if output else ""

    step.component_spec.name = name  # names the task and its executor after the node; the code is the same
    return step


def task_root(cfg: Config) -> str:
    """Where tasks see the pipeline root: the root itself when absolute, else `/<root>` on the volume."""
    return cfg.root if Path(cfg.root).is_absolute() else "/" + str(Path(cfg.root))


def build(cfg: Config, image: str = "mnist-pipeline:latest", pvc: str | None = None,
          pipeline: Pipeline = PRODUCTION):
    """The KFP pipeline function over `pipeline`'s nodes. `pvc`: the persistent volume claim mounted at the
    root in every task (a cluster run); None for `kfp.local`, where the root is this machine's."""
    _, dsl = _kfp()
    root = task_root(cfg) if pvc else cfg.root
    # One line of JSON (which YAML reads): KFP copies defaults into the spec's header comment, and a
    # multi-line one there breaks the spec's YAML.
    config_yaml = json.dumps(yaml.safe_load(config_module.to_yaml(config_module.override(cfg, root=root))))

    @dsl.pipeline(name=f"mnist-{pipeline.name}", description=" -> ".join(pipeline.order))
    def kfp_pipeline(run_id: str = "", config_yaml: str = config_yaml):
        tasks: dict[str, Any] = {}
        for node in pipeline.nodes:
            upstream = node.upstream()
            if len(upstream) > MAX_INPUTS:
                raise ConfigError(f"kfp: {node.name} reads {len(upstream)} nodes; the KFP step takes {MAX_INPUTS}")
            inputs = {f"input_{i + 1}": tasks[u].output for i, u in enumerate(upstream)}
            task = _step_component(image, node.name)(component=node.name, run_id=run_id, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, root=root,
                        config_yaml=config_yaml, **inputs)
            task.set_display_name(node.name)
            task.set_caching_options(False)  # the project's cache decides what runs again
            if pvc:
                from kfp import kubernetes

                kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=root)
            tasks[node.name] = task

    return kfp_pipeline


def compile_spec(cfg: Config, output: str | Path, image: str = "mnist-pipeline:latest", pvc: str = "pipeline-root",
                 pipeline: Pipeline = PRODUCTION) -> list[str]:
    """Writes the KFP v2 pipeline spec (YAML) and returns its task names, in order."""
    _kfp()  # a one-line error when kfp is not installed
    from kfp import compiler

    tmp = Path(output).with_name(f".{Path(output).stem}.tmp.yaml")
    compiler.Compiler().compile(build(cfg, image, pvc, pipeline), str(tmp))
    write_text(Path(output), tmp.read_text())
    tmp.unlink()
    return list(pipeline.order)


def run_locally(cfg: Config, use_cache: bool = True, pipeline: Pipeline = PRODUCTION) -> dict[str, Any]:
    """Runs the pipeline's tasks with `kfp.local`'s SubprocessRunner (offline, this machine's Python) and
    returns the run's summary, as `python -m pipeline run` does.

    Raises:
        PipelineError: a task failed before the run recorded a summary.
    """
    _kfp()  # a one-line error when kfp is not installed
    from kfp import local

    from pipeline.local import new_run_id

    if not use_cache:
        raise ConfigError("kfp run --no-cache: not supported; the project's cache is what makes a task's retry "
                          "idempotent")
    run_id = new_run_id()
    workdir = Path(cfg.root) / "kfp-local"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir), raise_on_error=False)
    build(cfg, pipeline=pipeline)(run_id=run_id)
    summary_path = Path(cfg.root) / "runs" / run_id / "summary.json"
    if not summary_path.is_file():
        raise PipelineError(f"kfp run {run_id}: the first task failed before the run was recorded; see the log above")
    summary = json.loads(summary_path.read_text())
    if summary["status"] == "running":  # a task failed without ending the run (a crash, not a gate)
        failed = next((n for n in pipeline.order if n not in summary["components"]), pipeline.order[-1])
        summary |= {"status": "failed", "error": f"kfp task {failed} failed; see its log above"}
    return summary
