"""Tests of the root lock: one run at a time, a clear message for the second, no stale lock after a kill."""
import logging
import signal
import subprocess
import sys
import threading
import time

import pytest

from engine.errors import LockedError, PipelineError
from engine.lock import root_lock


def test_a_second_run_fails_at_once_or_waits_saying_for_whom(tmp_path, caplog):
    order = []
    with root_lock(tmp_path, "20260101T000000-aaaa"):
        with pytest.raises(LockedError, match=r"run 20260101T000000-aaaa \(pid \d+\) is running on this root; wait"):
            with root_lock(tmp_path, "20260101T000001-bbbb", wait=False):
                pass

        def second():
            with root_lock(tmp_path, "20260101T000001-bbbb"):
                order.append("second")

        with caplog.at_level(logging.INFO, logger="pipeline"):
            waiter = threading.Thread(target=second)
            waiter.start()
            for _ in range(1200):  # until the waiter has logged whom it waits for, however slow the machine
                if "waiting for run" in caplog.text:
                    break
                time.sleep(0.05)
            assert order == [] and "waiting for run 20260101T000000-aaaa" in caplog.text
            order.append("first done")
    waiter.join(timeout=10)
    assert order == ["first done", "second"]


def test_members_of_a_distributed_search_share_it_and_a_normal_run_waits(tmp_path):
    with root_lock(tmp_path, "chief", shared=True), root_lock(tmp_path, "worker1", shared=True):
        with pytest.raises(LockedError):
            with root_lock(tmp_path, "normal", wait=False):
                pass


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from engine.lock import root_lock\n"
                               f"with root_lock({str(tmp_path)!r}, 'killed'):\n"
                               "    print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(LockedError, match="run killed"):
        with root_lock(tmp_path, "next", wait=False):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    with root_lock(tmp_path, "next", wait=False):  # the kernel released it with the process
        pass


def test_a_lock_that_is_a_directory_or_a_dangling_link_is_refused_in_one_line(tmp_path):
    (tmp_path / "a" / ".lock").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".lock").symlink_to(tmp_path / "nowhere" / "lock")
    for root, what in (("a", "a directory"), ("b", "a symbolic link to nothing")):
        with pytest.raises(PipelineError, match=rf"^{tmp_path / root / '.lock'}: {what}, not the root's lock file; "
                                                r"remove it \(the pipeline makes it again\) and run again$"):
            with root_lock(tmp_path / root, "20260101T000000-aaaa"):
                pass
    assert not (tmp_path / "nowhere").exists()  # the link was not followed
