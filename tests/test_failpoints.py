"""Tests of failpoints: a process holds where a crash test asks, the nth time, and nowhere else."""
import os
import subprocess
import sys

import pytest

from conftest import start_held

SCRIPT = ("from engine.failpoints import failpoint\n"
          "for i in range(3):\n"
          "    print(i, flush=True); failpoint('loop.step')\n"
          "print('done', flush=True)\n")


@pytest.mark.parametrize("point, printed", [("loop.step", "0\n"), ("loop.step#2", "0\n1\n"),
                                            ("other.point,loop.step#3", "0\n1\n2\n")])
def test_the_process_holds_at_the_named_hit_until_killed(tmp_path, point, printed):
    marker = tmp_path / "reached"
    proc = start_held([sys.executable, "-c", SCRIPT], point, marker, stdout=subprocess.PIPE, text=True)
    assert proc.poll() is None and marker.read_text().split() == ["loop.step", str(proc.pid)]
    proc.kill()
    assert proc.communicate()[0] == printed  # nothing after the held hit ran


def test_a_held_process_goes_on_once_released(tmp_path):
    marker, release = tmp_path / "reached", tmp_path / "release"
    proc = start_held([sys.executable, "-c", SCRIPT], "loop.step#2", marker, stdout=subprocess.PIPE, text=True,
                      env_extra={"PIPELINE_FAILPOINT_RELEASE": str(release)})
    assert proc.poll() is None  # held
    release.touch()
    assert proc.communicate(timeout=120)[0] == "0\n1\n2\ndone\n"


def test_without_the_variable_or_with_another_name_it_runs_through(tmp_path):
    for env in ({}, {"PIPELINE_FAILPOINTS": "loop.step#4"}):
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
        assert done.stdout.splitlines()[-1] == "done", done.stderr


def test_a_failpoint_can_raise_a_signal_there_and_go_on(tmp_path):
    script = ("import signal\n"
              "signal.signal(signal.SIGUSR1, lambda *_: print('signal', flush=True))\n" + SCRIPT)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PIPELINE_FAILPOINTS": "loop.step#2=SIGUSR1"})
    assert done.stdout == "0\n1\nsignal\n2\ndone\n", done.stderr  # its handler ran at the second hit, no later
