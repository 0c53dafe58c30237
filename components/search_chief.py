"""The distributed search's chief: serves the oracle, hears its workers, re-queues a lost worker's trial, ends when none is left."""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from keras_tuner.src.engine.oracle import synchronized  # imported only when a distributed search runs

log = logging.getLogger("pipeline")
WHO = "pipeline-tuner-id"  # the gRPC metadata key a worker's heartbeat names itself with


def heartbeat_seconds(worker_timeout: float) -> float:
    """How often a worker says it is alive: often enough that a few lost heartbeats are not a lost worker."""
    return min(30.0, max(0.2, worker_timeout / 5))


def serve(oracle, worker_timeout: float) -> str:
    """Serves `oracle` to the search's workers (KerasTuner's chief) until the search ends; returns why.

    "done": the oracle stopped the search and every worker's trial ended, as KerasTuner's own chief waits
    for. A worker not heard from (a heartbeat, a request) for `worker_timeout` seconds is lost: its trial
    in flight goes back to the queue for another worker (once; a second loss fails it). "no_workers": no
    worker was heard from for `worker_timeout` seconds, so the search ends with the trials it has.

    Example:
        In the chief's tuner, instead of KerasTuner's `oracle_chief.start_server(oracle)`:
        `ended = serve(oracle, worker_timeout=300)`, then the best of the finished trials is taken.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    seen: dict[str, float] = {}
    started = time.monotonic()
    oracle.max_retries_per_trial = max(oracle.max_retries_per_trial, 1)  # a lost worker's trial runs again

    def owner(trial_id: str) -> str | None:
        return next((t for t, trial in list(oracle.ongoing_trials.items()) if trial.trial_id == trial_id), None)

    class Listening(OracleServicer):
        """KerasTuner's servicer, noting when each worker was last heard from."""

        def heard(self, tuner_id: str | None) -> None:
            if tuner_id:
                seen[tuner_id] = time.monotonic()

        def GetSpace(self, request, context):
            self.heard(dict(context.invocation_metadata()).get(WHO))
            return super().GetSpace(request, context)

        def CreateTrial(self, request, context):
            self.heard(request.tuner_id)
            return super().CreateTrial(request, context)

        def UpdateTrial(self, request, context):
            self.heard(owner(request.trial_id))
            return super().UpdateTrial(request, context)

        def EndTrial(self, request, context):
            self.heard(owner(request.trial.trial_id))
            if not _claim(oracle, request.trial.trial_id):  # a late word from a worker taken for lost
                return protos.get_service().EndTrialResponse()
            return super().EndTrial(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = Listening(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}")
    server.start()
    tick = started
    try:
        while True:
            time.sleep(min(1.0, worker_timeout / 10))
            now = time.monotonic()
            if now - tick > worker_timeout / 2:  # this process was stopped, not its workers: hear them anew
                seen.update((t, now) for t in list(seen))
                started = now
            tick = now
            for tuner_id in set(oracle.tuner_ids) | set(oracle.ongoing_trials):
                if now - seen.get(tuner_id, started) > worker_timeout:
                    _lose(oracle, tuner_id, worker_timeout, lambda t=tuner_id: seen.get(t, started))
            if servicer.stop_triggered and exit_chief(oracle):
                return "done"
            if now - max(seen.values(), default=started) > worker_timeout:
                log.warning("  tune: no worker heard from for %gs: the search ends with the trials it has",
                            worker_timeout)
                return "no_workers"
    finally:
        server.stop(grace=None)


@synchronized  # with the oracle's own calls, which the server's threads make meanwhile
def _lose(oracle, tuner_id: str, worker_timeout: float, last_heard) -> None:
    """Ends the trial of a worker that went silent as INVALID, which re-queues it, and forgets the worker
    (unless it was heard from while this waited for the oracle's lock: `last_heard()`)."""
    if time.monotonic() - last_heard() <= worker_timeout:
        return
    trial = oracle.ongoing_trials.get(tuner_id)
    if trial is not None:
        oracle.info.setdefault(trial.trial_id, {}).setdefault("lost", []).append(tuner_id)
        trial.status = "INVALID"
        trial.message = f"worker {tuner_id} not heard from for {worker_timeout:g}s"
        oracle.end_trial(trial)
        log.warning("  tune: worker %s lost (not heard from for %gs); its trial %s %s", tuner_id, worker_timeout,
                    trial.trial_id, "goes back to the queue" if trial.trial_id in oracle._retry_queue else "failed")
    oracle.tuner_ids.discard(tuner_id)


@synchronized
def _claim(oracle, trial_id: str) -> bool:
    """Whether a trial's result is still wanted: not when the trial already ended (a worker taken for lost,
    and its trial run again by another, reports after all); a result for a trial waiting in the queue is
    taken, and the trial leaves the queue."""
    if trial_id in oracle._retry_queue:
        oracle._retry_queue.remove(trial_id)
        return True
    return oracle.trials[trial_id].status not in ("COMPLETED", "FAILED")


@contextmanager
def heartbeat(tuner_id: str, worker_timeout: float) -> Iterator[None]:
    """Tells the chief every `heartbeat_seconds` that this worker is alive, while the block runs (its trials
    included: a trial can take longer than the chief waits for a word)."""
    import grpc
    from keras_tuner.src import protos

    stop = threading.Event()
    interval = heartbeat_seconds(worker_timeout)

    def beat() -> None:
        channel = grpc.insecure_channel(f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}")
        stub = protos.get_service_grpc().OracleStub(channel)
        while not stop.wait(interval):
            try:
                stub.GetSpace(protos.get_service().GetSpaceRequest(), metadata=((WHO, tuner_id),), timeout=interval)
            except grpc.RpcError:
                pass  # the chief is busy or gone: the search's own calls say which
        channel.close()

    thread = threading.Thread(target=beat, name="tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 1)
