"""Kubeflow Pipelines v2 back end: one task per node, each running `python -m pipeline step` in the project image."""
import json
from pathlib import Path
from typing import Any, Iterator

import yaml

from pipeline import config as config_module
from pipeline import kfp_config
from pipeline.config import Config
from pipeline.definition import PRODUCTION
from engine.dag import Pipeline
from engine.errors import ConfigError
from engine.files import write_text

MAX_INPUTS = 3  # the most upstream nodes any node reads; each is one input of the task
FINISH = "finish"  # the exit handler's task


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
    The exit handler's task is the same component with `component="--finish"` (`step --finish`).
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
        if component == "--finish":  # done once the run's end is recorded, whatever that end was
            try:
                recorded = json.loads(done.stdout)["state"] in ("executed", "skipped")
            except (ValueError, KeyError, TypeError):
                recorded = False
            if not recorded:
                sys.exit(done.returncode or 1)
            return ""
        if done.returncode != 0:
            sys.exit(done.returncode)  # the task fails with the run's exit code (3 blocked, 4 not blessed)
        output = json.loads(done.stdout).get("output")
        return output["uri"] if output else ""

    step.component_spec.name = name  # names the task and its executor after the node; the code is the same
    return step


def task_root(cfg: Config) -> str:
    """Where tasks see the pipeline root: the root itself when absolute, else `/<root>` on the volume."""
    return cfg.root if Path(cfg.root).is_absolute() else "/" + str(Path(cfg.root))


def _configure(task, cfg: Config, name: str, pvc: str | None, root: str) -> None:
    """Sets the task's retries and resource requests from `cfg.kubeflow`; on a cluster (`pvc`), mounts the root's
    volume and takes the MySQL password from the Kubernetes secret the config names."""
    kubeflow = cfg.kubeflow
    task.set_display_name(name)
    task.set_caching_options(False)  # the project's cache decides what runs again
    task.set_retry(num_retries=kubeflow.retries, backoff_duration=f"{kubeflow.backoff_seconds}s")
    cpu, memory, gpu = kfp_config.requests(kubeflow, name)
    gpu = 0 if name == FINISH else gpu  # the exit handler only writes the run's records
    task.set_cpu_request(cpu)
    task.set_memory_request(memory)
    if gpu > 0:
        task.set_accelerator_type(kubeflow.accelerator)
        task.set_accelerator_limit(gpu)
    if pvc:
        from kfp import kubernetes

        kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=root)
        secret = kfp_config.secret(kubeflow)
        if secret:
            kubernetes.use_secret_as_env(task, secret_name=secret[0],
                                         secret_key_to_env={secret[1]: config_module.PASSWORD_ENV})


def build(cfg: Config, image: str = "mnist-pipeline:latest", pvc: str | None = None,
          pipeline: Pipeline = PRODUCTION):
    """The KFP pipeline function over `pipeline`'s nodes, inside an exit handler whose task (`step --finish`)
    ends a run that a killed task left `running`. `pvc`: the persistent volume claim mounted at the root in
    every task (a cluster run); None for `kfp.local`, where the root is this machine's."""
    _, dsl = _kfp()
    root = task_root(cfg) if pvc else cfg.root
    # One line of JSON (which YAML reads): KFP copies defaults into the spec's header comment, and a
    # multi-line one there breaks the spec's YAML.
    config_yaml = json.dumps(yaml.safe_load(config_module.to_yaml(config_module.override(cfg, root=root))))

    @dsl.pipeline(name=f"mnist-{pipeline.name}", description=" -> ".join(pipeline.order))
    def kfp_pipeline(run_id: str = "", config_yaml: str = config_yaml):
        common = {"run_id": run_id, "job_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER, "root": root, "config_yaml": config_yaml}
        finish = _step_component(image, FINISH)(component="--finish", **common)
        _configure(finish, cfg, FINISH, pvc, root)
        tasks: dict[str, Any] = {}
        with dsl.ExitHandler(finish, name="run"):
            for node in pipeline.nodes:
                upstream = node.upstream()
                if len(upstream) > MAX_INPUTS:
                    raise ConfigError(f"kfp: {node.name} reads {len(upstream)} nodes; the KFP step takes {MAX_INPUTS}")
                inputs = {f"input_{i + 1}": tasks[u].output for i, u in enumerate(upstream)}
                tasks[node.name] = _step_component(image, node.name)(component=node.name, **common, **inputs)
                _configure(tasks[node.name], cfg, node.name, pvc, root)

    return kfp_pipeline


def _mysql_password(cfg: Config) -> str | None:
    """The MySQL password the config itself holds (none when masked or left to the environment).

    Raises:
        ConfigError: the config holds one but names no secret for the tasks to take it from, or names a
            secret without a MySQL store to use it for.
    """
    mysql, secret = cfg.metadata.mysql, cfg.kubeflow.mysql_secret
    if secret and mysql is None:
        raise ConfigError(f"kubeflow.mysql_secret {secret!r}: the config has no metadata.mysql to use it for; "
                          "expected a MySQL store, or no secret")
    password = mysql.password if mysql and mysql.password != config_module.MASKED else ""
    if password and not secret:
        raise ConfigError("metadata.mysql.password: a compiled spec never carries the password; expected the "
                          "Kubernetes secret holding it (--mysql-secret NAME[:KEY] or kubeflow.mysql_secret)")
    return password or None


def _strings(value: Any) -> Iterator[str]:
    """Every string in parsed YAML, and in the JSON or YAML mappings such strings hold (the config parameter)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value
        if value.startswith("{"):
            try:
                yield from _strings(yaml.safe_load(value))
            except yaml.YAMLError:
                pass


def compile_spec(cfg: Config, output: str | Path, image: str = "mnist-pipeline:latest", pvc: str = "pipeline-root",
                 pipeline: Pipeline = PRODUCTION) -> list[str]:
    """Writes the KFP v2 pipeline spec (YAML) and returns its task names, in order.

    Raises:
        ConfigError: the config holds a MySQL password without naming the secret the tasks take it from, or
            the spec would carry the password (it is refused, and nothing is written).
    """
    _kfp()  # a one-line error when kfp is not installed
    from kfp import compiler

    password = _mysql_password(cfg)
    tmp = Path(output).with_name(f".{Path(output).stem}.tmp.yaml")
    compiler.Compiler().compile(build(cfg, image, pvc, pipeline), str(tmp))
    text = tmp.read_text()
    tmp.unlink()
    # The recorded config masks the password; this holds for whatever else reaches the spec. A password of 8
    # characters or more is looked for inside every string; a shorter one only as a whole string, as it
    # would be found inside unrelated words.
    strings = list(_strings(list(yaml.safe_load_all(text))))
    if password and (password in strings or len(password) >= 8 and any(password in s for s in strings)):
        raise ConfigError(f"kfp compile {output}: the spec would carry metadata.mysql.password; nothing written")
    write_text(Path(output), text)
    return list(pipeline.order) + [FINISH]


def run_locally(cfg: Config, use_cache: bool = True, pipeline: Pipeline = PRODUCTION) -> dict[str, Any]:
    """Runs the pipeline's tasks with `kfp.local`'s SubprocessRunner (offline, this machine's Python) and
    returns the run's summary, as `python -m pipeline run` does.

    `kfp.local` runs the exit handler's task only when every task succeeded; so the same finishing
    (`pipeline.step.finish_steps`) runs here after the tasks, and a run whose task was killed is recorded
    `failed`, naming that task, in the store and its summary.
    """
    _kfp()  # a one-line error when kfp is not installed
    from kfp import local

    from pipeline.local import new_run_id
    from pipeline.step import finish_steps

    if not use_cache:
        raise ConfigError("kfp run --no-cache: not supported; the project's cache is what makes a task's retry "
                          "idempotent")
    run_id = new_run_id()
    workdir = Path(cfg.root) / "kfp-local"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir), raise_on_error=False)
    build(cfg, pipeline=pipeline)(run_id=run_id)
    return finish_steps(cfg, run_id, pipeline)["summary"]
