"""KerasTuner's distributed mode through the CLI: a chief serving the oracle and two workers on one root, on loopback."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import write_dataset
from engine.failpoints import ENV as FAILPOINTS, REACHED, RELEASE
from test_cli import REPO, assert_one_line_error

SEARCH = ["--tuner", "random", "--max-trials", "4", "--max-epochs", "1", "--epochs", "1", "--min-accuracy", "0",
          "--json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_chief_and_two_workers_share_one_search_and_one_root(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 200, "t10k": 60})
    port, release, root = _free_port(), tmp_path / "release", tmp_path / "root"
    procs = {}
    for tuner_id in ("chief", "worker1", "worker2"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": str(port)}
        if tuner_id != "chief":  # each worker's trials hold as they start until both workers hold one
            env |= {FAILPOINTS: "trial.start", REACHED: str(tmp_path / f"{tuner_id}.held"), RELEASE: str(release)}
        procs[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root), *SEARCH],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # a failed assertion must not leave a chief waiting for its workers
        give_up = time.monotonic() + 900  # a bound against a hang, not a speed assumption
        while not all((tmp_path / f"{w}.held").exists() for w in ("worker1", "worker2")):
            if any(p.poll() is not None for p in procs.values()) or time.monotonic() > give_up:
                raise AssertionError({w: (p.poll(), p.stderr.read()[-2000:]) for w, p in procs.items()})
            time.sleep(0.05)
        # While the three hold the root's lock together, a run that is not one of them may not start.
        outsider = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root), "--no-wait",
             *SEARCH], cwd=REPO, capture_output=True, text=True, timeout=600,
            env={k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")})
        assert outsider.returncode == 1 and "is running on this root" in outsider.stderr, outsider.stderr
        release.touch()  # both workers run a trial: the search is shared whatever their start-up times
        codes, summaries = {}, {}
        for tuner_id, proc in procs.items():
            out, err = proc.communicate(timeout=900)
            codes[tuner_id] = proc.returncode
            assert out, f"{tuner_id}: {err[-2000:]}"
            summaries[tuner_id] = json.loads(out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()

    chief, workers = summaries["chief"], {w: summaries[w] for w in ("worker1", "worker2")}
    assert codes == {"chief": 0, "worker1": 0, "worker2": 0}
    assert chief["status"] == "pushed" and chief["pushed_model"] == str(root / "serving" / "1")
    assert all(s["status"] == "tuned" and s["pushed_model"] is None for s in workers.values())
    assert all("train" not in s["components"] for s in workers.values())  # a worker stops after its trials
    assert {s["tuning"]["tuner_id"] for s in summaries.values()} == {"chief", "worker1", "worker2"}

    trials = chief["tuning"]["trials"]
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials)
    # Each trial's epochs and curve reached the chief's oracle from the worker that ran it.
    assert all(t["epochs"] == 1 and len(t["curve"]) == 1 and t["epoch_seconds"] > 0 for t in trials), trials
    by_worker = {w: {t["trial_id"] for t in s["tuning"]["trials"]} for w, s in workers.items()}
    assert by_worker["worker1"] and by_worker["worker2"], "both workers should run trials"
    assert not by_worker["worker1"] & by_worker["worker2"]
    assert by_worker["worker1"] | by_worker["worker2"] == {t["trial_id"] for t in trials}
    assert {t["trial_id"]: t["tuner"] for t in trials} == {i: w for w, ids in by_worker.items() for i in ids}
    best = max(trials, key=lambda t: t["score"])
    assert chief["tuning"]["best_hyperparameters"] == best["hyperparameters"]
    assert all(s["tuning"]["best_hyperparameters"] == {} for s in workers.values())  # the result is the chief's

    # Each member's run is recorded in the one metadata store of the root they shared.
    listed = subprocess.run([sys.executable, "-m", "pipeline", "runs", "list", "--root", str(root), "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert listed.returncode == 0, listed.stderr
    statuses = {r["run_id"]: r["status"] for r in json.loads(listed.stdout)}
    assert statuses == {s["run_id"]: s["status"] for s in summaries.values()}


def _member(tuner_id, port, data, root, tmp_path, *extra, env=None):
    env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
           "KERASTUNER_ORACLE_PORT": str(port), **(env or {})}
    stderr = open(tmp_path / f"{tuner_id}.log", "w")  # a file: the test reads it while the member runs
    return subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root),
                             *SEARCH, *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            start_new_session=True)


def _wait_for(condition, procs, what):
    give_up = time.monotonic() + 900  # a bound against a hang, not a speed assumption
    while not condition():
        if time.monotonic() > give_up or any(p.poll() is not None for p in procs):
            raise AssertionError(f"waiting for {what}: {[p.poll() for p in procs]}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_has_its_trial_run_again_by_another(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 200, "t10k": 60})
    port, release, root = _free_port(), tmp_path / "release", tmp_path / "root"
    timeout = ["--worker-timeout", "40s"]  # ample for the workers' first word too
    held = {w: tmp_path / f"{w}.held" for w in ("worker1", "worker2")}
    chief = _member("chief", port, data, root, tmp_path, *timeout)
    workers = {w: _member(w, port, data, root, tmp_path, *timeout,
                          env={FAILPOINTS: "trial.start#1", REACHED: str(held[w]), RELEASE: str(release)})
               for w in held}
    procs = [chief, *workers.values()]
    try:
        _wait_for(lambda: all(p.exists() for p in held.values()), procs, "both workers in a trial")
        os.killpg(workers["worker1"].pid, signal.SIGKILL)  # the worker and its trial's process
        workers["worker1"].wait()
        log = tmp_path / "chief.log"
        _wait_for(lambda: "worker worker1 lost" in log.read_text(), [chief, workers["worker2"]], "the chief to notice")
        release.touch()  # worker2 now finishes its trial, then runs worker1's again
        out, _ = chief.communicate(timeout=900)
        workers["worker2"].communicate(timeout=900)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert chief.returncode == 0 and workers["worker2"].returncode == 0, log.read_text()[-2000:]
    summary = json.loads(out)
    assert summary["status"] == "pushed" and summary["tuning"]["ended"] == "done"
    trials = summary["tuning"]["trials"]
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials), trials
    lost = [t for t in trials if t["lost"]]
    assert [t["lost"] for t in lost] == [["worker1"]] and lost[0]["tuner"] == "worker2"
    assert "its trial %s goes back to the queue" % lost[0]["trial_id"] in log.read_text()


def _chief_whose_only_worker_dies(tmp_path, failpoint: str) -> tuple[int, dict, str]:
    """Runs a chief and one worker, kills the worker (its process group) where it holds at `failpoint`, and
    returns the chief's exit code, summary and log."""
    data = write_dataset(tmp_path / "data", {"train": 200, "t10k": 60})
    port, root, held = _free_port(), tmp_path / "root", tmp_path / "held"
    # The timeout also bounds how long the chief waits for the worker's first word (its TensorFlow import
    # included): ample, so that only the kill ends the search.
    chief = _member("chief", port, data, root, tmp_path, "--worker-timeout", "40s")
    worker = _member("worker1", port, data, root, tmp_path, "--worker-timeout", "40s",
                     env={FAILPOINTS: failpoint, REACHED: str(held)})
    try:
        _wait_for(held.exists, [chief, worker], f"the worker at {failpoint}")
        os.killpg(worker.pid, signal.SIGKILL)
        out, _ = chief.communicate(timeout=900)  # ends: KerasTuner's own chief waits for ever
    finally:
        for proc in (chief, worker):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return chief.returncode, json.loads(out) if out else {}, (tmp_path / "chief.log").read_text()


@pytest.mark.slow
def test_a_chief_whose_workers_died_ends_the_search_in_one_line(tmp_path):
    code, summary, err = _chief_whose_only_worker_dies(tmp_path, "trial.start")  # in its first trial
    assert code == 1, err[-2000:]
    assert_one_line_error(err)
    assert "error: tune: no trial finished and no worker of the distributed search was heard from for 40s" in err
    assert "worker worker1 lost (not heard from for 40s)" in err
    assert summary["status"] == "failed"


@pytest.mark.slow
def test_a_chief_whose_workers_died_after_a_trial_trains_and_pushes_the_best_it_has(tmp_path):
    code, summary, err = _chief_whose_only_worker_dies(tmp_path, "tune.trial_end")  # its first trial is in
    assert code == 0, err[-2000:]
    assert summary["status"] == "pushed" and summary["tuning"]["ended"] == "no_workers"
    trials = {t["trial_id"]: t for t in summary["tuning"]["trials"]}
    done = [t for t in trials.values() if t["status"] == "COMPLETED"]
    assert len(trials) == 1 and len(done) == 1
    assert summary["tuning"]["best_hyperparameters"] == done[0]["hyperparameters"]
    assert "no worker heard from for 40s: the search ends with the trials it has" in err
