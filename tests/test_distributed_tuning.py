"""KerasTuner's distributed mode: a chief serving the oracle and two workers running trials, on loopback."""
import json
import os
import socket
import subprocess
import sys
import time

from pipeline.engine.failpoints import ENV as FAILPOINTS, REACHED, RELEASE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_share_one_search(examples, generic_schema, tmp_path, seed):
    port = _free_port()
    script = (
        "import json, sys; from pathlib import Path\n"
        "from components.tune import tune; from pipeline.engine.artifacts import Examples, Schema\n"
        "from pipeline.config import TuneConfig\n"
        "ex = Examples.from_dict({k: v for k, v in json.loads(sys.argv[1]).items() if k != 'type'})\n"
        "out = Path(sys.argv[2]); out.mkdir()\n"
        f"hp = tune(ex, Schema(uri={generic_schema.uri!r}, fingerprint='s', source='generic'), out_dir=out,"
        " batch_size=32,"
        f" seed={seed}, tune=TuneConfig(tuner='random', max_trials=4, max_epochs=1))\n"
        "print(json.dumps({'values': hp.values, 'trials': hp.trials}))\n")
    procs, release = {}, tmp_path / "release"
    for tuner_id in ("chief", "worker1", "worker2"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": str(port)}
        if tuner_id != "chief":  # each worker's trials hold as they start until both workers hold one
            env |= {FAILPOINTS: "trial.start", REACHED: str(tmp_path / f"{tuner_id}.held"), RELEASE: str(release)}
        procs[tuner_id] = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(examples.to_dict()), str(tmp_path / tuner_id)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    give_up = time.monotonic() + 600  # a bound against a hang, not a speed assumption
    while not all((tmp_path / f"{w}.held").exists() for w in ("worker1", "worker2")):
        assert all(p.poll() is None for p in procs.values()) and time.monotonic() < give_up, \
            {w: p.poll() for w, p in procs.items()}
        time.sleep(0.05)
    release.touch()  # both workers run a trial: the search is shared whatever their start-up times
    results = {}
    for tuner_id, proc in procs.items():
        out, err = proc.communicate(timeout=420)
        assert proc.returncode == 0, f"{tuner_id}: {err[-2000:]}"
        results[tuner_id] = json.loads(out.strip().splitlines()[-1])

    chief = results["chief"]
    assert len(chief["trials"]) == 4 and all(t["status"] == "COMPLETED" for t in chief["trials"])
    by_worker = {w: {t["trial_id"] for t in results[w]["trials"]} for w in ("worker1", "worker2")}
    assert by_worker["worker1"] and by_worker["worker2"], "both workers should run trials"
    assert not by_worker["worker1"] & by_worker["worker2"]
    assert by_worker["worker1"] | by_worker["worker2"] == {t["trial_id"] for t in chief["trials"]}
    assert {t["trial_id"]: t["tuner"] for t in chief["trials"]} == {
        trial_id: w for w, ids in by_worker.items() for trial_id in ids}
    best = max(chief["trials"], key=lambda t: t["score"])
    assert chief["values"] == best["hyperparameters"]
    assert results["worker1"]["values"] == {} == results["worker2"]["values"]  # the result is the chief's
