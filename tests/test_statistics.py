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
    wrong = dataclasses.replace(examples, counts={**examples.counts, "test": examples.counts["test"] + 1})
    with pytest.raises(DataError, match=r"statistics of split 'test' counted 64 examples, but ingest wrote 65"):
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
