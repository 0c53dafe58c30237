"""The command line: `run` (exit 0 pushed, 1 error, 2 usage, 3 blocked, 4 not blessed), `step`, `kfp`, `runs`,
`validate`, `drift`, `schema` and `predict`."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from engine.dag import Pipeline
from pipeline import config, flags, logs, parser, views
from pipeline.definition import PRODUCTION

log = logging.getLogger("pipeline")


def _check_config(args):
    """The config of `validate`, `drift`, `schema` and `predict`: the defaults, the root, Beam options, a schema
    and the command's own settings flags."""
    return flags.check_config(args.root, args.beam_arg, args.command, getattr(args, "schema", None),
                              **flags.from_args(args, command=args.command))


def _validate(args, out) -> int:
    from pipeline.checks import validate_check

    report = validate_check(args.dataset, _check_config(args), args.invert)
    if args.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        views.validation(report, out)
    return 0 if report["clean"] else 3


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
        views.drift(report, out)
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
    views.predictions(result, out)
    return 0


def _runs(args, out) -> int:
    from engine.metadata import Metadata
    from pipeline.definition import PRODUCTION  # declares the artifact types whose columns a run's row shows

    cfg = flags.run_config(args.config, args.root, None, serving_dir=getattr(args, "serving_dir", None))
    metadata = Metadata.open(cfg, create=False)
    if args.runs_command == "list":
        result = metadata.runs(cfg.root)
        rows = views.runs(result)
    elif args.runs_command == "show":
        result = metadata.run(args.run_id)
        rows = views.run(result)
    elif args.runs_command == "compare":
        from engine.files import write_text
        from pipeline import compare

        result = compare.compare(compare.evaluation_of(metadata, cfg.serving_dir, args.a),
                                 compare.evaluation_of(metadata, cfg.serving_dir, args.b))
        rows = compare.lines(result)
        if args.html:
            write_text(Path(args.html), compare.page(result))
    else:
        result = metadata.lineage(cfg.serving_dir / str(args.version))
        rows = views.lineage(result, PRODUCTION.output_kinds())
    out.write(json.dumps(result, indent=2, default=str) + "\n" if args.json else "\n".join(rows) + "\n")
    return 0


def _run_config(args):
    cls = config.config_for(args.pipeline)
    return flags.run_config(args.config, args.root, args.beam_arg, cls, **flags.from_args(args, cls))


def _print_summary(summary: dict, args, out) -> int:
    """Prints a run's summary (one line, or JSON) and its error; returns the run's exit code."""
    from pipeline.local import EXIT_CODES

    views.summary(summary, args.json, out, args.pipeline)
    return EXIT_CODES[summary["status"]]


def _run(args, out) -> int:
    from pipeline.local import execute

    summary = execute(_run_config(args), use_cache=not args.no_cache, start=args.start, stop=args.stop,
                      wait=not args.no_wait, run_id=args.run_id, pipeline=args.pipeline)
    return _print_summary(summary, args, out)


def _step(args, out) -> int:
    from engine.errors import ConfigError
    from pipeline.step import execute_step, exit_code, finish_steps

    if args.finish == bool(args.component):
        raise ConfigError("step: give COMPONENT or --finish, not both and not neither")
    cfg = _run_config(args)
    result = (finish_steps(cfg, args.run_id, args.pipeline) if args.finish
              else execute_step(cfg, args.component, args.run_id, args.pipeline, use_cache=not args.no_cache))
    if args.json:
        out.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        views.step(result, out)
    if result["error"]:
        print(f"error: {result['error']}", file=sys.stderr)
    return exit_code(result)


def _kfp(args, out) -> int:
    from pipeline import kubeflow

    cfg = _run_config(args)
    if args.kfp_command == "compile":
        cfg = config.override(cfg, **{"kubeflow.mysql_secret": args.mysql_secret})
        tasks = kubeflow.compile_spec(cfg, args.output, image=args.image, pvc=args.pvc)
        print(f"wrote {args.output}: {len(tasks)} tasks ({', '.join(tasks)}), root {kubeflow.task_root(cfg)} on "
              f"volume claim {args.pvc}", file=sys.stderr)
        return 0
    return _print_summary(kubeflow.run_locally(cfg, use_cache=not args.no_cache), args, out)


def main(argv: list[str] | None = None, pipeline: Pipeline = PRODUCTION) -> int:
    """Entry point. Returns the exit code.

    Everything but the result goes to stderr: libraries that print to stdout (KerasTuner, Keras
    progress bars) are redirected at the file-descriptor level, so `--json` output stays parseable.
    """
    args = parser.build(pipeline).parse_args(argv)
    args.pipeline = pipeline
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    logs.quiet(args.verbose)
    from engine.errors import PipelineError, first_line
    from engine.failpoints import failpoint
    from engine.signals import interruptible

    try:
        commands = {"run": _run, "step": _step, "kfp": _kfp, "runs": _runs, "validate": _validate,
                    "schema": _schema, "drift": _drift, "predict": _predict}
        # This process ends with the run it records: a signal after its records are final leaves its exit code be.
        with interruptible(process_ends=True) if args.command in ("run", "step") else contextlib.nullcontext():
            return commands[args.command](args, out)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # outside a run (a run records it and returns its summary)
        print(f"error: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as exc:  # no traceback for users; -v shows it
        log.debug("unexpected error", exc_info=True)
        from pipeline.local import disk_full, quiet_disk_full_cleanup

        if disk_full(exc):
            quiet_disk_full_cleanup()
        message = disk_full(exc) or (f"internal error: {type(exc).__name__}: {first_line(exc, default='')} "
                                     "(rerun with -v for details)")
        print(f"error: {message}", file=sys.stderr)
        return 1
    finally:
        out.flush()
        failpoint("command.exit")
