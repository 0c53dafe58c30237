"""Tests of the progress bars: drawn in place on a terminal, silent in logs."""
import io

from engine import progress
from engine.progress import Bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_redraws_in_place_on_a_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    stream = Terminal()
    with Bar("ingest train", total=4, stream=stream, unit="examples") as bar:
        for _ in range(4):
            bar.update()
    frames = stream.getvalue().split("\r")[1:]
    assert len(frames) == 5 and frames[-1].endswith("\n")
    assert "ingest train [" + "#" * 6 + "." * 18 + "] 1/4 examples" in frames[0]
    assert "[" + "#" * 24 + "] 4/4 examples" in frames[-1]


def test_bar_is_silent_in_a_log_or_on_ci(monkeypatch):
    log = io.StringIO()
    with Bar("train epoch 1/2", total=3, stream=log) as bar:
        bar.update(3)
    assert log.getvalue() == ""
    monkeypatch.setenv("CI", "true")
    assert not Bar("x", 1, stream=Terminal()).live


def test_a_child_process_bar_is_followed_through_its_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    report = tmp_path / "progress.json"
    bar = Bar("trial 0", total=2, stream=Terminal())
    progress.follow(report, bar)  # nothing written yet: unchanged
    assert bar.done == 0
    report.write_text('{"epoch": 1, "epochs": 2, "step": 5, "steps": 10}')
    progress.follow(report, bar)
    assert (bar.done, bar.total) == (15, 20) and "15/20" in bar.stream.getvalue()
