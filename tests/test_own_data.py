"""The README's "Your own data" walk-through, run as written on tiny generated data: its code and its output."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_dataset

REPO = Path(__file__).resolve().parents[1]
SOURCE = "/usr/share/datasets/fashion-mnist"  # what the README's make_data.py reads; here, tiny generated data


def blocks() -> dict[str, str]:
    """The section's fenced blocks by their `<!-- own-data:NAME -->` marker."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Your own data"):]
    section = section[:re.search(r"\n##+ ", section[4:]).start() + 4]
    return dict(re.findall(r"<!-- own-data:(\S+) -->\n```\w*\n(.*?)```", section, re.S))


def expected(line: str, names: list[str]) -> str:
    """A regex of a README output line: a run id, a number and a class name stand for any other."""
    tokens = r"(\d{8}T\d{6}-[0-9a-f]{4})|(\d+(?:\.\d+)?)|(" + "|".join(sorted(map(re.escape, names), key=len,
                                                                            reverse=True)) + r")\b"
    out, at = "", 0
    for m in re.finditer(tokens, line):
        out += re.escape(line[at:m.start()]) + (r"\S+" if m[1] else r"\d+(?:\.\d+)?" if m[2] else "(?:[a-z-]+)")
        at = m.end()
    return out + re.escape(line[at:])


def run_commands(script: str, cwd: Path, quick: tuple[str, ...] = ()) -> list[tuple[int, str, str]]:
    """Each line of a bash block as typed, from `cwd` with this checkout's `pipeline`; `quick` flags are added
    to `run` lines (the last of a repeated flag wins), since tiny data reaches no real accuracy."""
    results = []
    for line in script.strip().splitlines():
        words = shlex.split(line)
        assert words[:3] == ["python", "-m", "pipeline"], line
        extra = quick if words[3] == "run" else ()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, *words[1:], *extra], cwd=cwd, capture_output=True, text=True,
                              env=env, timeout=600)
        results.append((proc.returncode, proc.stdout, proc.stderr))
    return results


def assert_prints(results, output: str, names: list[str]) -> None:
    """Every command exited 0 and together printed the README's output, line for line in shape."""
    printed = [line for code, out, err in results for line in out.splitlines()]
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
    shown = output.strip().splitlines()
    assert len(printed) == len(shown), printed
    for line, readme in zip(printed, shown):
        assert re.fullmatch(expected(readme, names), line), (line, readme)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An empty directory after the README's make_data.py (all three parts), reading 300 generated images
    where the README reads Fashion-MNIST's test split; returns (directory, the script's class names)."""
    here = tmp_path_factory.mktemp("own")
    write_dataset(here / "source", {"t10k": 300})
    code = blocks()
    script = "\n".join([code["make"], code["make-csv"], code["make-idx"]])
    assert SOURCE in script
    scope: dict = {}
    cwd = os.getcwd()
    os.chdir(here)
    try:
        exec(compile(script.replace(SOURCE, str(here / "source")), "make_data.py", "exec"), scope)
    finally:
        os.chdir(cwd)
    return here, scope["names"]


def test_the_folder_walk_through_pushes_a_model_that_names_its_classes_and_takes_scans(made):
    here, names = made
    code = blocks()
    assert sorted(p.name for p in (here / "clothes").iterdir()) == sorted(names) and len(list(
        (here / "new").iterdir())) == 5
    results = run_commands(code["folder"], here, quick=("--min-accuracy", "0"))
    assert_prints(results, code["folder-output"], names)
    classes = sorted(names)  # numbered alphabetically, as the README says (`bag` is class 0)
    for line in results[1][1].splitlines():
        class_id, name = re.search(r"class (\d+) (\S+) ", line).groups()
        assert classes[int(class_id)] == name, line
    assert "polarity" not in results[1][2]  # the scans are served as scanned: no polarity warning
    info = json.loads((here / "clothes_root" / "serving" / "1" / "model_info.json").read_text())
    assert info["inverted"] is True and info["classes"] == classes

    [(code_, out, err)] = run_commands(code["unlabeled"], here)
    assert code_ == 2 and out == "", err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [code["unlabeled-output"].strip()]
    assert len(list((here / "clothes_root" / "runs").iterdir())) == 1  # the refused run was not recorded


@pytest.mark.parametrize("layout", ["csv", "idx"])
def test_the_csv_and_idx_walk_throughs_pass_validation_with_numbered_classes(made, layout):
    here, names = made
    code = blocks()
    assert_prints(run_commands(code[layout], here), code[f"{layout}-output"], names)
    [summary] = (here / f"{layout}_root" / "runs").glob("*/summary.json")
    summary = json.loads(summary.read_text())
    assert summary["status"] == "partial" and not summary["anomalies"]
    assert summary["schema"]["classes"] == [str(i) for i in range(10)] and summary["dataset"]["inverted"] is False
