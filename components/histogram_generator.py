"""A TFDV statistics generator for shared-bucket histograms (module level, so Beam can pickle it)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from tensorflow_metadata.proto.v0 import path_pb2, statistics_pb2

from components.libs import load_tfdv

tfdv = load_tfdv()


class FixedHistograms(tfdv.CombinerStatsGenerator):
    """Counts each feature's values into fixed buckets and emits them as a custom statistic."""

    def __init__(self, edges: dict[str, np.ndarray], stat_name: str):
        super().__init__("FixedHistograms")
        self._edges, self._stat_name = edges, stat_name

    def create_accumulator(self):
        return {name: np.zeros(len(e) - 1, np.int64) for name, e in self._edges.items()}

    def add_input(self, accumulator, batch: pa.RecordBatch):
        for name, e in self._edges.items():
            index = batch.schema.get_field_index(name)
            if index < 0 or pa.types.is_null(batch.column(index).type):
                continue
            values = batch.column(index).flatten().to_numpy(zero_copy_only=False)
            # Values beyond the range land in the edge buckets, so no example goes uncounted.
            accumulator[name] += np.histogram(np.clip(values, e[0], e[-1]), bins=e)[0]
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for name in merged:
                merged[name] += accumulator[name]
        return merged

    def extract_output(self, accumulator):
        result = statistics_pb2.DatasetFeatureStatistics()
        for name, counts in accumulator.items():
            if not counts.sum():  # an absent feature (no label in unlabeled images): TFDV aborts on a
                continue          # feature that has custom statistics but no common ones
            feature = result.features.add(path=path_pb2.Path(step=[name]))
            histogram = feature.custom_stats.add(name=self._stat_name).histogram
            histogram.type = statistics_pb2.Histogram.STANDARD
            edges = self._edges[name]
            for low, high, count in zip(edges[:-1], edges[1:], counts):
                histogram.buckets.add(low_value=float(low), high_value=float(high), sample_count=float(count))
        return result
