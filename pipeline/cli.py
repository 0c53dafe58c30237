"""The command line: `run` (exit 0 pushed, 1 error, 2 usage, 3 blocked, 4 not blessed), `step`, `kfp`, `runs`,
`validate`, `drift`, `schema` and `predict`."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from pipeline import config

log = logging.getLogger("pipeline")


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
    silently change what runs. Sub-commands inherit it (argparse makes them of the parent's class)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_prog(), description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the production pipeline on this machine: ingest to push")
    _pipeline_flags(run)
    components = ", ".join(_order())
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
    step.add_argument("component", metavar="COMPONENT", help=f"one of {', '.join(_order())}")
    step.add_argument("--run-id", required=True, help="the run this step belongs to (e.g. the KFP run's id)")
    _pipeline_flags(step)
    kfp = commands.add_parser("kfp", help="Kubeflow Pipelines: compile the pipeline spec, or run it with kfp.local")
    kfp_commands = kfp.add_subparsers(dest="kfp_command", required=True)
    kfp_compile = kfp_commands.add_parser("compile", help="write a KFP v2 pipeline spec (YAML): one task per component")
    kfp_compile.add_argument("--output", required=True, metavar="PIPELINE.yaml")
    kfp_compile.add_argument("--image", default="mnist-pipeline:latest",
                             help="the project image every task runs in (default mnist-pipeline:latest)")
    kfp_compile.add_argument("--pvc", default="pipeline-root",
                             help="the persistent volume claim holding the root, mounted in every task "
                                  "(default pipeline-root)")
    _pipeline_flags(kfp_compile)
    kfp_run = kfp_commands.add_parser("run", help="run the pipeline's tasks with kfp.local's SubprocessRunner")
    _pipeline_flags(kfp_run)
    runs = commands.add_parser("runs", help="the runs recorded in the metadata store: list, show, lineage")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True)
    runs_list = runs_commands.add_parser("list", help="every run: status, dataset, accuracy, pushed version")
    runs_show = runs_commands.add_parser("show", help="one run: its components, artifacts and effective config")
    runs_show.add_argument("run_id", metavar="RUN_ID")
    runs_lineage = runs_commands.add_parser("lineage", help="what produced a pushed model version")
    runs_lineage.add_argument("version", metavar="VERSION", type=int)
    runs_lineage.add_argument("--serving-dir", help="the serving directory (default: <root>/serving)")
    check = commands.add_parser("validate", help="statistics and anomalies of a dataset: exit 3 on anomalies")
    check.add_argument("--dataset", required=True,
                       help="SPEC or SPEC:SPLIT (NAME, tfds:NAME, idx:DIR, folder:DIR, csv:FILE)")
    check.add_argument("--schema", help="schema file (default: the dataset's curated one)")
    infer = commands.add_parser("schema", help="infer a draft schema from a dataset, for review")
    infer.add_argument("--dataset", required=True, help="NAME, tfds:NAME, idx:DIR, folder:DIR or csv:FILE")
    infer.add_argument("--output", help="write the schema here (default: stdout)")
    drift = commands.add_parser("drift", help="compare a dataset with a baseline: exit 3 when anything drifted")
    drift.add_argument("--baseline", required=True, help="SPEC[:SPLIT] or a saved statistics file (FeatureStats.pb)")
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
    for command in (check, drift):
        command.add_argument("--false-positive-rate", type=float, help=f"{FPR_HELP} (default: "
                             f"{config.ValidateConfig().false_positive_rate})")
        command.add_argument("--invert", choices=config.allowed("data.invert"), default="false",
                             help="polarity as a run's data.invert: false checks the images as delivered; auto "
                                  "or true as a run with that setting ingests them (default: false)")
    for command in (run, step, kfp_compile, kfp_run, runs_list, runs_show, runs_lineage, check, infer, drift,
                    predict):
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


def _order() -> tuple[str, ...]:
    from pipeline.definition import PRODUCTION

    return PRODUCTION.order


def _duration(text: str) -> float:
    try:
        return config.parse_duration(text)
    except config.ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# The flags that set a run's config (`run`, `step`, `kfp`, and the Python API's keyword arguments): flag, the
# config key it sets, argparse options; a `switch` flag takes no value and sets the key to the switch's value.
# A flag's help ends with its default, read from the config's own defaults.
FPR_HELP = "the chance that a check of clean data alarms (skew, drift), shared by all its tests"
CONFIG_FLAGS = (
    ("--dataset", "data.dataset", {"help": "NAME, tfds:NAME[/CONFIG], idx:DIR, folder:DIR or csv:FILE"}),
    ("--invert", "data.invert", {"choices": config.allowed("data.invert"),
                                 "help": "polarity: true inverts every image (255 - x); auto inverts a dataset of "
                                         "dark ink on a light background; recorded in the model, whose serving "
                                         "signature inverts its inputs the same way"}),
    ("--serving-dir", "push.serving_dir", {"help": "where blessed models are pushed (default: <root>/serving)"}),
    ("--schema", "schema.schema_file", {"help": "schema file to validate against (default: the one this root's "
                                                "earlier runs used when curated or given, else the dataset's "
                                                "curated one)"}),
    ("--tuner", "tune.tuner", {"choices": config.allowed("tune.tuner"), "help": "the KerasTuner algorithm"}),
    ("--max-trials", "tune.max_trials", {"type": int, "help": "tuning trials at most"}),
    ("--max-epochs", "tune.max_epochs", {"type": int, "help": "epochs per tuning trial at most"}),
    ("--no-tune", "tune.enabled", {"switch": False,
                                   "help": "skip the search: the reference model and recipe (2 epochs unless "
                                           "--epochs) (default: off)"}),
    ("--retune", "tune.retune", {"switch": True,
                                 "help": "search again although a result for this schema and search space exists"}),
    ("--tune-budget", "tune.budget_seconds", {"metavar": "DURATION", "type": _duration,
                                              "help": "wall clock for the search, e.g. 90s, 10m, 1h (default: "
                                                      "none)"}),
    ("--budget", "budget_seconds", {"metavar": "DURATION", "type": _duration,
                                    "help": "wall clock for the whole build, ingest to push, e.g. 15m: shared "
                                            "between search and final training (default: none)"}),
    ("--schedule", "train.schedule", {"choices": config.allowed("train.schedule"),
                                      "help": "learning rate over training: constant, or cosine decay over the "
                                              "epochs planned; auto: cosine under --budget"}),
    ("--epochs", "train.epochs", {"type": int, "help": "training epochs at most; early stopping may end sooner "
                                                       "(default: 10 after a search, 2 with --no-tune, 50 with "
                                                       "--budget)"}),
    ("--deterministic", "train.deterministic", {"switch": True,
                                                "help": "bit-for-bit repeatable training: op determinism and "
                                                        "ordered input (slower)"}),
    ("--distribute", "train.distribute", {"choices": config.allowed("train.distribute"),
                                          "help": "auto: MirroredStrategy over 2+ GPUs; mirrored: over all GPUs "
                                                  "(or CPUs); none"}),
    ("--mixed-precision", "train.mixed_precision", {"choices": config.allowed("train.mixed_precision"),
                                                    "help": "float16 compute: auto turns it on when a GPU is "
                                                            "present"}),
    ("--min-accuracy", "evaluate.min_accuracy", {"type": float, "help": "test accuracy needed to bless the model "
                                                 f"(default: {', '.join(f'{k} {v}' for k, v in config.DEFAULT_MIN_ACCURACY.items())}"
                                                 f", others {config.FALLBACK_MIN_ACCURACY})"}),
    ("--max-regression", "evaluate.max_regression", {"type": float, "help": "largest accuracy drop allowed "
                                                                            "against the model serving now"}),
    ("--baseline-broken", "evaluate.baseline_broken", {"choices": config.allowed("evaluate.baseline_broken"),
                                                       "help": "when the model serving now cannot be read: fail "
                                                               "naming it, or ignore it (absolute thresholds only)"}),
    ("--seed", "seed", {"type": int, "help": "seeds shuffling, initialisation and the search"}),
    ("--false-positive-rate", "validate.false_positive_rate", {"type": float, "help": FPR_HELP}),
)


def _default(key: str):
    value = config.Config()
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the flags that set a run's config (`CONFIG_FLAGS`), plus `--config` and `--no-cache`."""
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config file with a section per component; "
                                                              "flags override it (default: none)")
    for flag, key, options in CONFIG_FLAGS:
        default = _default(key)
        shown = "off" if isinstance(default, bool) else default
        help_text = options["help"] if "(default" in options["help"] else f"{options['help']} (default: {shown})"
        if "switch" in options:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        metavar = {} if "choices" in options else {"metavar": flag.lstrip("-").upper().replace("-", "_")}
        parser.add_argument(flag, **{**metavar, **options, "help": help_text})
    parser.add_argument("--no-cache", action="store_true",
                        help="execute every component even if cached (default: off)")


def _check_config(args) -> config.Config:
    """The config of `validate`, `drift`, `schema` and `predict`: the defaults, the root, Beam options, a schema."""
    return run_config(None, args.root, args.beam_arg, schema=getattr(args, "schema", None),
                      false_positive_rate=getattr(args, "false_positive_rate", None))


def _validate(args, out) -> int:
    from pipeline.checks import validate_check

    report = validate_check(args.dataset, _check_config(args), args.invert)
    if args.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        counts = ", ".join(f"{s} {n}" for s, n in report["counts"].items())
        out.write(f"{report['dataset']} ({counts}) against {report['schema']}: "
                  f"{'clean' if report['clean'] else _count(len(report['anomalies']), 'anomaly', 'anomalies')}\n")
        for a in report["anomalies"]:
            out.write(f"  {a['split']:<6} {a['feature']:<16} {a['type']}: {a['description']}\n")
    return 0 if report["clean"] else 3


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _schema(args, out) -> int:
    from pipeline.checks import infer_schema_text
    from engine.files import write_text

    text = infer_schema_text(args.dataset, _check_config(args))
    if args.output:
        write_text(Path(args.output), text)
        log.info("schema written to %s", args.output)
    else:
        out.write(text)
    return 0


def _drift(args, out) -> int:
    from pipeline.checks import drift_check

    from pipeline.serving import latest_version

    model = args.model or (str(latest_version(args.serving_dir)) if args.serving_dir else None)
    report = drift_check(args.baseline, args.current, _check_config(args), args.report, model, args.invert)
    if args.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        if "label" in report:
            out.write(f"label: {report['label']}\n")
        out.write(f"{'feature':<18} {'test':<7} {'p-value':>8} {'alpha':>8} {'effect size':<26} {'effect':>7} "
                  f"{'minimum':>7}  result\n")
        for d in report["distances"]:
            out.write(f"{d['feature']:<18} {d['test']:<7} {d['p_value']:>8.1e} {d['alpha']:>8.1e} {d['measure']:<26} "
                      f"{d['distance']:>7.4f} {d['threshold']:>7.4f}  {'DRIFTED' if d['drifted'] else 'ok'}\n")
        for a in report["anomalies"]:
            out.write(f"{a['split']:<7} {a['feature']:<16} {a['type']}: {a['description']}\n")
    return 3 if report["drifted"] else 0


def _predict(args, out) -> int:
    from engine.errors import ConfigError
    from pipeline.serving import predict

    if bool(args.images) == bool(args.dataset):
        raise ConfigError("predict: give IMAGE files or --dataset SPEC, not both and not neither")
    result = predict(args.model, args.serving_dir, args.images, args.dataset, args.limit, _check_config(args))
    for warning in result.get("warnings", []):  # in --json too: a caller reading only stdout still sees them
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        out.write(json.dumps(result, indent=2) + "\n")
        return 0
    for row in result["predictions"]:
        label = f"  label {row['label']}" if "label" in row else ""
        name = f" {row['class']}" if "class" in row and row["class"] != str(row["class_id"]) else ""
        out.write(f"{row['input']}: class {row['class_id']}{name} ({row['probability']:.4f}){label}\n")
    if "accuracy" in result:
        out.write(f"accuracy {result['accuracy']:.4f} on {result['count']} examples of {result['dataset']} "
                  f"({result['split'] or 'all'}), model {result['model']}\n")
    return 0


def _runs(args, out) -> int:
    from engine.metadata import Metadata
    from pipeline.definition import PRODUCTION  # declares the artifact types whose columns a run's row shows

    cfg = config.override(config.Config(), root=args.root,
                          **{"push.serving_dir": getattr(args, "serving_dir", None)})
    store = Metadata.open(cfg, create=False)
    if args.runs_command == "list":
        result = store.runs(cfg.root)
        rows = [f"{'run':<21} {'status':<11} {'started':<25} {'accuracy':>8} {'pushed':>6}  dataset"]
        rows += [f"{r['run_id']:<21} {r['status'] or '':<11} {r['started'] or '':<25} "
                 f"{'' if r['accuracy'] is None else format(r['accuracy'], '.4f'):>8} "
                 f"{'' if r['pushed_version'] is None else r['pushed_version']:>6}  {r['dataset'] or ''}"
                 for r in result]
    elif args.runs_command == "show":
        result = store.run(args.run_id)
        rows = [f"run {result['run_id']}: {result['status']}" + (f" ({result['error']})" if result["error"] else ""),
                f"started {result['started']}, finished {result['finished']}, report {result['report']}"]
        for e in result["executions"]:
            output = e["output"]
            rows.append(f"  {e['component']:<10} {e['state']:<8} {e['seconds'] or 0:7.1f}s  "
                        + (f"{output['type']} {output['uri']}" if output else e["error"] or ""))
        rows += ["config:", *("  " + line for line in (result["config"] or "").splitlines())]
    else:
        result = store.lineage(cfg.serving_dir / str(args.version))
        rows = [f"version {result['version']} ({result['uri']}) pushed by run {result['run_id']}"]
        for key in (kind.lower() for kind in PRODUCTION.output_kinds()):
            if key in result:
                props = result[key]["properties"]
                detail = {"examples": lambda: f"data fingerprint {props.get('fingerprint')}, spec {props.get('spec')}, "
                                              f"span {props.get('span')}, counts {props.get('counts')}",
                          "schema": lambda: f"{props.get('source')}, fingerprint {props.get('fingerprint')}",
                          "hyperparameters": lambda: f"{props.get('tuner')} {json.dumps(props.get('values'))}",
                          "evaluation": lambda: f"accuracy {props.get('accuracy')}, blessed {props.get('blessed')}",
                          }.get(key, lambda: f"fingerprint {props.get('fingerprint')}")()
                rows.append(f"  {key:<16} {result[key]['uri']}\n  {'':<16} {detail}")
    out.write(json.dumps(result, indent=2, default=str) + "\n" if args.json else "\n".join(rows) + "\n")
    return 0


def _quiet(verbose: bool) -> None:
    """Keeps the terminal to the pipeline's own lines unless -v; must run before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, stream=sys.stderr,
                        format="%(message)s")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        warnings.filterwarnings("ignore")
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
        for name in ("tensorflow", "apache_beam", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)


def run_config(path: str | Path | None, root: str | Path | None, beam_args, **values) -> config.Config:
    """The config of a run: the YAML file at `path` (None: the defaults), then the values of `CONFIG_FLAGS`
    named as the flags are (`max_trials` for `--max-trials`, `no_tune=True`); None or False keeps the file's.

    Raises:
        ConfigError: a name is not a flag's, or a value is not allowed.
    """
    by_name = {flag[2:].replace("-", "_"): (key, options) for flag, key, options in CONFIG_FLAGS}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise config.ConfigError(f"unknown argument '{unknown[0]}'; expected one of {', '.join(sorted(by_name))}")
    overrides = {}
    for name, value in values.items():
        key, options = by_name[name]
        if "switch" in options:
            value = options["switch"] if value else None
        elif isinstance(value, str) and options.get("type") is _duration:
            value = config.parse_duration(value)
        overrides[key] = value
    return config.override(config.load(path), root=str(root) if root else None,
                           **{"statistics.beam_args": tuple(beam_args) if beam_args else None}, **overrides)


def _run_config(args) -> config.Config:
    return run_config(args.config, args.root, args.beam_arg,
                      **{flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
                         for flag, _, _ in CONFIG_FLAGS})


def _print_summary(summary: dict, as_json: bool, out) -> int:
    """Prints a run's summary (one line, or JSON) and its error; returns the run's exit code."""
    from pipeline.local import EXIT_CODES

    if as_json:
        out.write(json.dumps(summary, indent=2, default=str) + "\n")
    else:
        ev = summary["evaluation"]
        out.write(f"run {summary['run_id']}: {summary['status']}"
                  + (f", {len(summary['tuning']['trials'])} trials run for the chief"
                     if summary["status"] == "tuned" else "")
                  + (f", test accuracy {ev['accuracy']:.4f}" if ev else "")
                  + (f", pushed {summary['pushed_model']}" if summary["pushed_model"] else "") + "\n")
    if summary["error"]:
        print(f"error: {summary['error']}", file=sys.stderr)
    return EXIT_CODES[summary["status"]]


def _run(args, out) -> int:
    from pipeline.local import execute

    summary = execute(_run_config(args), use_cache=not args.no_cache, start=args.start, stop=args.stop,
                      wait=not args.no_wait, run_id=args.run_id)
    return _print_summary(summary, args.json, out)


def _step(args, out) -> int:
    from pipeline.step import execute_step, exit_code

    result = execute_step(_run_config(args), args.component, args.run_id, use_cache=not args.no_cache)
    if args.json:
        out.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        output = result["output"]
        out.write(f"step {result['step']} of run {result['run_id']}: {result['state']}"
                  + (f", {output['type']} {output['uri']}" if output else "") + f"; run {result['status']}\n")
    if result["error"]:
        print(f"error: {result['error']}", file=sys.stderr)
    return exit_code(result)


def _kfp(args, out) -> int:
    from pipeline import kubeflow

    cfg = _run_config(args)
    if args.kfp_command == "compile":
        tasks = kubeflow.compile_spec(cfg, args.output, image=args.image, pvc=args.pvc)
        print(f"wrote {args.output}: {len(tasks)} tasks ({', '.join(tasks)}), root {kubeflow.task_root(cfg)} on "
              f"volume claim {args.pvc}", file=sys.stderr)
        return 0
    return _print_summary(kubeflow.run_locally(cfg, use_cache=not args.no_cache), args.json, out)


def main(argv: list[str] | None = None) -> int:
    """Entry point. Returns the exit code.

    Everything but the result goes to stderr: libraries that print to stdout (KerasTuner, Keras
    progress bars) are redirected at the file-descriptor level, so `--json` output stays parseable.
    """
    args = _parser().parse_args(argv)
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    _quiet(args.verbose)
    from engine.errors import PipelineError, first_line

    try:
        commands = {"run": _run, "step": _step, "kfp": _kfp, "runs": _runs, "validate": _validate,
                    "schema": _schema, "drift": _drift, "predict": _predict}
        return commands[args.command](args, out)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # outside a run (a run records it and returns its summary)
        print(f"error: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as exc:  # no traceback for users; -v shows it
        log.debug("unexpected error", exc_info=True)
        from pipeline.local import disk_full

        message = disk_full(exc) or (f"internal error: {type(exc).__name__}: {first_line(exc, default='')} "
                                     "(rerun with -v for details)")
        print(f"error: {message}", file=sys.stderr)
        return 1
    finally:
        out.flush()
