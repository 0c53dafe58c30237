"""Statistics: TFDV feature statistics for every split, computed in one Beam pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from components.drift import histogram_generator
from components.libs import children_quiet, load_tfdv
from components.ingest import SPLITS, Examples
from engine.artifacts import Artifact
from engine.component import Component
from engine.errors import DataError
from engine.settings import param

LABEL = "label"


@dataclass(frozen=True)
class Statistics(Artifact):
    """TFDV DatasetFeatureStatisticsList per split: `<uri>/<split>/FeatureStats.pb`."""

    splits: tuple[str, ...]
    kind: ClassVar[str] = "Statistics"

    def path(self, split: str) -> str:
        return str(Path(self.uri) / split / "FeatureStats.pb")


def stats_options():
    """StatsOptions marking the label categorical (per-class counts) and adding fixed-bucket histograms."""
    tfdv = load_tfdv()
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    feature = schema.feature.add(name=LABEL, type=schema_pb2.INT)
    feature.int_domain.is_categorical = True
    return tfdv.StatsOptions(schema=schema, generators=[histogram_generator()])


def statistics(examples: Examples, *, out_dir: Path, beam_args: tuple[str, ...] = ()) -> Statistics:
    """Computes TFDV statistics of each split of `examples` into `<out_dir>/<split>/FeatureStats.pb`.

    Args:
        examples: the ingested TFRecords.
        out_dir: the artifact directory to fill.
        beam_args: Beam pipeline options, e.g. `("--direct_running_mode=multi_processing",)`.

    Raises:
        DataError: the statistics counted a different number of examples than ingest wrote
            (some Beam runners have been known to drop records).
    """
    import apache_beam as beam
    tfdv = load_tfdv()
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
    from tfx_bsl.public import tfxio

    result = Statistics(uri=str(out_dir), fingerprint="", splits=SPLITS)
    options = stats_options()
    beam_options = PipelineOptions(list(beam_args))
    workers = beam_options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    with children_quiet(workers), beam.Pipeline(options=beam_options) as pipeline:
        for split in SPLITS:
            (out_dir / split).mkdir(parents=True)
            source = tfxio.TFExampleRecord(file_pattern=examples.file_pattern(split),
                                           telemetry_descriptors=["pipeline", "statistics"])
            _ = (pipeline
                 | f"Read[{split}]" >> source.BeamSource(options.desired_batch_size)
                 | f"Stats[{split}]" >> tfdv.GenerateStatistics(options)
                 | f"Write[{split}]" >> tfdv.WriteStatisticsToBinaryFile(result.path(split)))
    for split in SPLITS:
        counted = tfdv.load_stats_binary(result.path(split)).datasets[0].num_examples
        if counted != examples.counts[split]:
            raise DataError(f"statistics of split '{split}' counted {counted} examples, but ingest wrote "
                            f"{examples.counts[split]} to {examples.file_pattern(split)}: the Beam runner lost records")
    return result


# Version 3: 64 label buckets; features absent from the data (an unlabeled label) are left out.
# Version 4: the bounding box's centre (examples of the same pixels now carry two more features). 5: `background`. 6:
# `max_intensity`, `bbox_offset`, `mass_offset_col`.
@dataclass(frozen=True)
class StatisticsConfig:
    """Beam options for statistics generation (e.g. `--runner=FlinkRunner`): every command's `--beam-arg`."""

    beam_args: tuple[str, ...] = param((), prefix="--")


COMPONENT = Component(name="statistics", fn=statistics, inputs=(Examples,), output=Statistics, version="6",
                      settings=StatisticsConfig,
                      params=lambda cfg, out, metadata: {"beam_args": cfg.statistics.beam_args})
