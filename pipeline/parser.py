"""The command line's parser: commands, their own flags, and the run flags derived from the pipeline's settings."""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from engine.dag import Pipeline
from pipeline import config, flags
from pipeline.definition import PRODUCTION

DESCRIPTION = ("The command line: `run` (exit 0 pushed, 1 error, 2 usage, 3 blocked, 4 not blessed), `step`, `kfp`, "
               "`runs`, `validate`, `drift`, `schema` and `predict`.")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mnist-family-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _prog() -> str:
    """The command as the user typed it: `mnist-pipeline`, or `python -m pipeline`."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m pipeline" if invoked in ("__main__.py", "-m", "-c", "") else invoked


class _Parser(argparse.ArgumentParser):
    """argparse without prefix matching: `--epoch 3` is an unknown flag, never `--epochs`, so a typo cannot
    silently change what runs; an unknown flag is named with the nearest one of its command (`--epoch`: did
    you mean --epochs?), and a usage error is one line. Sub-commands inherit it (argparse makes them
    of the parent's class)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)  # for `error`'s nearest flag
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(parsed, _NEAREST):  # the innermost command's parser answers first: its flags
            known = [o for o in self._option_string_actions if o.startswith("--")]
            near = [m[0] for e in extras if e.startswith("--")
                    for m in [difflib.get_close_matches(e.partition("=")[0], known, n=1)] if m]
            setattr(parsed, _NEAREST, (self.prog, near))
        return parsed, extras

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        prog, near = vars(parsed).pop(_NEAREST, (self.prog, []))
        if extras:
            hint = f"; did you mean {near[0]}?" if near else ""
            self._error(f"unrecognized arguments: {' '.join(extras)}{hint}", prog)
        return parsed

    def error(self, message):
        """argparse's own errors; a required flag missing because it was misspelled names the misspelling."""
        if message.startswith("the following arguments are required"):
            known = [o for o in self._option_string_actions if o.startswith("--")]
            unknown = [a.partition("=")[0] for a in getattr(self, "_given", []) if a.startswith("--")
                       and a.partition("=")[0] not in known]
            near = [m[0] for u in unknown for m in [difflib.get_close_matches(u, known, n=1)] if m]
            if near:
                message = f"unrecognized arguments: {' '.join(unknown)}; did you mean {near[0]}?"
        self._error(message, self.prog)

    def _error(self, message: str, prog: str):
        """One line on stderr, exit 2 (argparse's usage text is `--help`'s)."""
        self.exit(2, f"error: {message} (see {prog} --help)\n")


_NEAREST = "_nearest_flags"  # where parse_known_args leaves the command and the nearest flags of unknown ones


def build(pipeline: Pipeline = PRODUCTION) -> argparse.ArgumentParser:
    """The command line's parser, its run flags derived from `pipeline`'s settings (`pipeline.flags`)."""
    cls = config.config_for(pipeline)
    parser = _Parser(prog=_prog(), description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the production pipeline on this machine: ingest to push")
    _pipeline_flags(run, cls)
    components = ", ".join(pipeline.order)
    run.add_argument("--from", dest="start", metavar="COMPONENT",
                     help=f"run COMPONENT and everything after it again; earlier ones must be cached; one of "
                          f"{components} (default: the first)")
    run.add_argument("--to", dest="stop", metavar="COMPONENT",
                     help=f"stop after COMPONENT (status partial); one of {components} (default: the last)")
    run.add_argument("--no-wait", action="store_true",
                     help="fail at once if another run holds the root (default: wait for it)")
    run.add_argument("--run-id", help="the run's id (default: the start time and a random suffix)")
    step = commands.add_parser("step", help="run one component of a run, taking its inputs from the run's "
                                            "earlier steps (what an orchestrator schedules as a task)")
    step.add_argument("component", metavar="COMPONENT", nargs="?", help=f"one of {', '.join(pipeline.order)}")
    step.add_argument("--finish", action="store_true",
                      help="instead of a component: end the run if its steps left it running (a step was killed): "
                           "failed, naming that step; what runs after the tasks however they ended (default: off)")
    step.add_argument("--run-id", required=True, help="the run this step belongs to (e.g. the KFP run's id)")
    _pipeline_flags(step, cls)
    kfp = commands.add_parser("kfp", help="Kubeflow Pipelines: compile the pipeline spec, or run it with kfp.local")
    kfp_commands = kfp.add_subparsers(dest="kfp_command", required=True)
    kfp_compile = kfp_commands.add_parser("compile", help="write a KFP v2 pipeline spec (YAML): one task per component")
    kfp_compile.add_argument("--output", required=True, metavar="PIPELINE.yaml")
    kfp_compile.add_argument("--image", default="mnist-pipeline:latest",
                             help="the project image every task runs in (default mnist-pipeline:latest)")
    kfp_compile.add_argument("--pvc", default="pipeline-root",
                             help="the persistent volume claim holding the root, mounted in every task "
                                  "(default pipeline-root)")
    kfp_compile.add_argument("--mysql-secret", metavar="NAME[:KEY]",
                             help="the Kubernetes secret whose KEY (default password) every task reads as the MySQL "
                                  "password of metadata.mysql (default: kubeflow.mysql_secret, else none)")
    _pipeline_flags(kfp_compile, cls)
    kfp_run = kfp_commands.add_parser("run", help="run the pipeline's tasks with kfp.local's SubprocessRunner")
    _pipeline_flags(kfp_run, cls)
    runs = commands.add_parser("runs", help="the runs recorded in the metadata store: list, show, lineage, compare")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True)
    runs_list = runs_commands.add_parser("list", help="every run: status, dataset, accuracy, pushed version")
    runs_show = runs_commands.add_parser("show", help="one run: its components, artifacts and effective config")
    runs_show.add_argument("run_id", metavar="RUN_ID")
    runs_lineage = runs_commands.add_parser("lineage", help="what produced a pushed model version")
    runs_lineage.add_argument("version", metavar="VERSION", type=int)
    runs_lineage.add_argument("--serving-dir", help="the serving directory (default: <root>/serving)")
    runs_compare = runs_commands.add_parser(
        "compare", help="two evaluated models, overall and per slice: B's accuracy change against A's, with intervals")
    runs_compare.add_argument("a", metavar="A", help="a pushed version's number or a run id")
    runs_compare.add_argument("b", metavar="B", help="a pushed version's number or a run id")
    runs_compare.add_argument("--serving-dir", help="the serving directory (default: <root>/serving)")
    runs_compare.add_argument("--html", metavar="FILE", help="also write the comparison as a self-contained HTML "
                              "page (default: none)")
    for command in (runs_list, runs_show, runs_lineage, runs_compare):
        command.add_argument("--config", metavar="FILE.yaml", help="the runs' YAML config file, as run's --config: "
                             "its root, metadata store (metadata.sqlite or mysql) and serving directory; flags "
                             "override it (default: none)")
    check = commands.add_parser("validate", help="statistics and anomalies of a dataset: exit 3 on anomalies")
    check.add_argument("--dataset", required=True,
                       help="SPEC or SPEC:SPLIT (NAME, tfds:NAME, idx:DIR, folder:DIR, csv:FILE)")
    check.add_argument("--schema", help="schema file (default: the dataset's curated one)")
    infer = commands.add_parser("schema", help="infer a draft schema from a dataset, for review")
    infer.add_argument("--dataset", required=True, help="NAME, tfds:NAME, idx:DIR, folder:DIR or csv:FILE")
    infer.add_argument("--output", help="write the schema here (default: stdout)")
    drift = commands.add_parser("drift", help="compare a dataset with a baseline: exit 3 when anything drifted")
    drift.add_argument("--baseline", help="SPEC[:SPLIT] or a saved statistics file (FeatureStats.pb); default with "
                       "--model or --serving-dir: the version's own, its run's data at push")
    drift.add_argument("--current", required=True, help="SPEC[:SPLIT] or a saved statistics file")
    drift.add_argument("--schema", help="schema with the drift thresholds (default: the current data's curated one)")
    drift.add_argument("--report", metavar="FILE.html", help="also write a self-contained HTML report (default: none)")
    view = drift.add_mutually_exclusive_group()
    view.add_argument("--model", help="also test what this pushed model version makes of both: predicted classes, "
                                      "confidence, embeddings (default: none)")
    view.add_argument("--serving-dir", help="as --model, with the latest version in this serving directory "
                                            "(default: none)")
    predict = commands.add_parser("predict", help="predictions of a pushed model for image files or a dataset split")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a SavedModel directory (one pushed version); this or --serving-dir, "
                                        "no default")
    source.add_argument("--serving-dir", help="a serving directory: its latest version is used; this or --model, "
                                              "no default")
    predict.add_argument("images", nargs="*", metavar="IMAGE", help="PNG or JPEG files, or directories of them, read "
                         "as folder: reads them (colour to grayscale, other sizes resized to 28x28)")
    predict.add_argument("--dataset", help="SPEC[:SPLIT] instead of images (default split test; every image of a "
                         "folder: or csv: source); adds accuracy when the data has labels")
    predict.add_argument("--limit", type=int, help="the first N examples of the split (default: all)")
    for command, name in ((check, "validate"), (drift, "drift")):
        flags.add(command, cls, command=name)
        command.add_argument("--invert", choices=config.allowed("data.invert"), default="false",
                             help="polarity as a run's data.invert: false checks the images as delivered; auto "
                                  "or true as a run with that setting ingests them (default: false)")
    for command in (run, step, kfp_compile, kfp_run, runs_list, runs_show, runs_lineage, runs_compare, check, infer,
                    drift, predict):
        command.add_argument("--root", help="pipeline root: artifacts, cached data and statistics, runs "
                                            f"(default: ./{config.Config().root})")
        command.add_argument("--beam-arg", action="append", default=None, metavar="ARG",
                             help="a Beam pipeline option for statistics, e.g. --beam-arg=--runner=FlinkRunner "
                                  "(repeatable; default: none, the DirectRunner)")
        command.add_argument("-v", "--verbose", action="store_true",
                             help="show TensorFlow, Beam and library logs, and tracebacks (default: off)")
        if command not in (infer, kfp_compile):
            command.add_argument("--json", action="store_true",
                                 help="print the result as JSON on stdout (default: off)")
    return parser


def _pipeline_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds the flags that set a run's config (derived from the settings, `pipeline.flags`), plus `--config`
    and `--no-cache`."""
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config file with a section per component; "
                                                              "flags override it (default: none)")
    flags.add(parser, cls)
    parser.add_argument("--no-cache", action="store_true",
                        help="execute every component even if cached (default: off)")
