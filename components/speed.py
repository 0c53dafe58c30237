"""Cheaper training steps where this machine rewards them: a short measured probe of steps per call and bfloat16."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("pipeline")
STEPS_PER_EXECUTION = (1, 16)  # training steps per tf.function call: 16 saves the per-call overhead of small models
WARMUP, TIMED = 32, 64  # probe steps: the first trace the graphs, the rest are timed (multiples of 16)
PLAIN = {"precision": "float32", "steps_per_execution": 1}  # float32: train.mixed_precision's own choice
GAIN = 1.05  # a setting other than the plain one must be this much faster to be chosen: probes are noisy
SAVED = "step_probe.json"  # the probe's result, in training's work directory
PAYS_BACK = 10  # a probe runs only for a training of at least this many times its own steps


def bfloat16_native() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (AMX or AVX-512 BF16, from /proc/cpuinfo)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def candidates(gpu: bool, mixed_precision: str = "auto") -> list[dict]:
    """The settings a probe compares: steps per call, and bfloat16 compute on a CPU that has it natively
    unless `mixed_precision` (train.mixed_precision) is not auto (on a GPU, float16 is that setting's)."""
    native = not gpu and mixed_precision == "auto" and bfloat16_native()
    precisions = ["float32"] + (["mixed_bfloat16"] if native else [])
    return [{"precision": p, "steps_per_execution": n} for p in precisions for n in STEPS_PER_EXECUTION]


def worth_probing(steps: int, settings: int) -> bool:
    """Whether a probe of `settings` settings is a small part of a training of `steps` steps at most: that
    training has its steps at least `PAYS_BACK` times over. A shorter training runs as configured.

    Example:
        >>> worth_probing(steps=18 * 422, settings=4), worth_probing(steps=3 * 47, settings=4)
        (True, False)
    """
    return steps >= PAYS_BACK * settings * (WARMUP + TIMED)


def probe(build, data, settings: list[dict]) -> dict:
    """Times `TIMED` training steps of the model `build(setting)` returns, under each setting, on batches of
    `data` (a tf.data dataset of training batches), after `WARMUP` untimed ones. The chosen setting is the
    fastest, unless it is within `GAIN` of the first (plain) one. The models are thrown away.

    Returns:
        {"chosen": setting, "step_ms": {name: milliseconds per step}, "probe_seconds": seconds spent,
        "at": when it ended (wall-clock seconds)}.

    Example:
        >>> result = probe(lambda s: build_model(REFERENCE, **s), batches, candidates(gpu=False))  # doctest: +SKIP
    """
    start, step_ms = time.monotonic(), {}
    batches = data.repeat().take(WARMUP + TIMED).cache()  # the same batches for every setting
    for setting in settings:
        model = build(setting)
        model.fit(batches.take(WARMUP), epochs=1, verbose=0)
        began = time.perf_counter()
        model.fit(batches.skip(WARMUP), epochs=1, verbose=0)
        step_ms[_name(setting)] = round(1000 * (time.perf_counter() - began) / TIMED, 2)
        del model
    chosen = choose(settings, step_ms)
    result = {"chosen": chosen, "step_ms": step_ms, "probe_seconds": round(time.monotonic() - start, 1),
              "at": round(time.time(), 2)}
    log.info("  step probe: %s; chosen %s (%.0fs)", ", ".join(f"{k} {v} ms" for k, v in step_ms.items()),
             _name(chosen), result["probe_seconds"])
    return result


def choose(settings: list[dict], step_ms: dict[str, float]) -> dict:
    """The setting with the fewest milliseconds a step, unless it is within `GAIN` of the first (plain) one.

    Example:
        >>> plain, many = PLAIN, {**PLAIN, "steps_per_execution": 16}
        >>> choose([plain, many], {"float32/spe1": 10.0, "float32/spe16": 9.8}) == plain
        True
    """
    fastest = min(settings, key=lambda s: step_ms[_name(s)])
    return fastest if step_ms[_name(fastest)] * GAIN < step_ms[_name(settings[0])] else settings[0]


def fastest_step(data, values: dict, classes: int, mixed_precision: str = "auto", steps: int | None = None,
                 saved: Path | None = None) -> dict | None:
    """`probe` of the model with hyperparameter `values` and a `classes`-way head over this machine's
    `candidates`, `mixed_precision` being train.mixed_precision; None when the training's `steps` (at most)
    are too few for a probe to pay back (`worth_probing`). The result is kept at `saved`: a training resumed
    after a kill goes on with the setting its backed-up epochs were trained with, without probing again."""
    import tensorflow as tf

    from components.cnn import build_model
    from engine.files import write_json

    if saved is not None and saved.is_file():
        try:
            return json.loads(saved.read_text())
        except ValueError:
            pass  # written atomically, so only a damaged disk gets here: probe again
    settings = candidates(gpu=bool(tf.config.list_logical_devices("GPU")), mixed_precision=mixed_precision)
    if steps is not None and not worth_probing(steps, len(settings)):
        log.info("  step probe skipped: %d training steps at most, too few to pay back its own", steps)
        return None
    result = probe(lambda s: build_model(values, classes=classes, **compiled(s, mixed_precision)), data, settings)
    if saved is not None:
        write_json(saved, result)
    return result


def compiled(setting: dict, mixed_precision: str = "auto") -> dict:
    """build_model's arguments for a probe's `setting`; its float32 stands for `mixed_precision`'s own choice
    (train.mixed_precision: float16 on a GPU under auto).

    Example:
        >>> compiled({"precision": "mixed_bfloat16", "steps_per_execution": 16})
        {'mixed_precision': 'mixed_bfloat16', 'steps_per_execution': 16}
    """
    from components.devices import mixed_precision_enabled

    precision = setting["precision"]
    return {"mixed_precision": precision if precision != "float32" else mixed_precision_enabled(mixed_precision),
            "steps_per_execution": setting["steps_per_execution"]}


def chosen_ms(result: dict) -> float:
    """The milliseconds a step of a probe `result`'s chosen setting.

    Example:
        >>> chosen_ms({"chosen": PLAIN, "step_ms": {"float32/spe1": 12.5}})
        12.5
    """
    return result["step_ms"][_name(result["chosen"])]


def _name(setting: dict) -> str:
    return f"{setting['precision']}/spe{setting['steps_per_execution']}"
