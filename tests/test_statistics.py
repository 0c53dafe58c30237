"""Tests of statistics: per-split TFDV statistics, categorical label, count checks."""
import dataclasses

import pytest

from components.libs import load_tfdv
from components.statistics import statistics
from engine.errors import DataError


def test_statistics_per_split_with_categorical_label(examples, stats):
    tfdv = load_tfdv()
    for split in ("train", "eval", "test"):
        data = tfdv.load_stats_binary(stats.path(split)).datasets[0]
        assert data.num_examples == examples.counts[split]
        features = {f.path.step[0]: f for f in data.features}
        assert features["image"].num_stats.max <= 255
        assert features["image"].num_stats.common_stats.min_num_values == 784
        assert features["label"].WhichOneof("stats") == "string_stats"  # categorical: counts per class
    train = tfdv.load_stats_binary(stats.path("train")).datasets[0]
    label = next(f for f in train.features if f.path.step[0] == "label")
    assert label.string_stats.unique == 10


def test_lost_records_are_an_error(examples, tmp_path):
    """A runner that loses records (Beam's DaskRunner counts 0 with no error) is refused in one line naming both
    counts: statistics counting fewer examples than ingest wrote."""
    wrong = dataclasses.replace(examples, counts={**examples.counts, "test": examples.counts["test"] + 1})
    with pytest.raises(DataError, match=r"^statistics of split 'test' counted 64 examples, but ingest wrote 65 to "
                                        r"\S+: the Beam runner lost records$"):
        statistics(wrong, out_dir=tmp_path)


def test_multi_processing_runner_counts_like_single_process(examples, stats, tmp_path):
    from components.drift import fixed_histogram

    tfdv = load_tfdv()
    parallel = statistics(examples, out_dir=tmp_path, beam_args=("--direct_running_mode=multi_processing",
                                                                   "--direct_num_workers=2"))
    for split in ("train", "eval", "test"):
        single = tfdv.load_stats_binary(stats.path(split)).datasets[0]
        multi = tfdv.load_stats_binary(parallel.path(split)).datasets[0]
        assert multi.num_examples == single.num_examples == examples.counts[split]
        for feature in ("label", "mean_intensity", "center_col"):
            assert (fixed_histogram(multi, feature) == fixed_histogram(single, feature)).all()


def test_multi_processing_workers_print_nothing_without_v(tmp_path):
    """Beam's worker processes import TensorFlow, TFDV and Google's libraries afresh: without `-v` their
    FutureWarnings and TFDV's IPython notice stay off stderr, which keeps the pipeline's own lines."""
    import os
    import subprocess
    import sys

    from conftest import write_dataset
    from test_cli import REPO

    data = write_dataset(tmp_path / "data", {"train": 40, "t10k": 20})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "TF_CPP_MIN_LOG_LEVEL")}  # a shell's
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root",
                           str(tmp_path / "root"), "--to", "statistics",
                           "--beam-arg=--direct_running_mode=multi_processing", "--beam-arg=--direct_num_workers=2"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and done.stdout.endswith(": partial\n"), done.stderr
    assert [line.split()[:2] for line in done.stderr.splitlines()] == [["ingest", "executed"],
                                                                        ["statistics", "executed"]], done.stderr
