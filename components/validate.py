"""Validate: TFDV anomalies of every split against the schema; any anomaly stops the run."""
from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import Anomalies, Anomaly, Schema, Statistics
from pipeline.libs import load_tfdv
from pipeline.runner import Component


def validate(statistics: Statistics, schema: Schema, *, out_dir: Path) -> Anomalies:
    """Checks each split's statistics against the schema in the TRAINING environment.

    An empty split is reported too (TFDV itself raises nothing for it). The TFDV anomalies
    proto of each split is kept as `<out_dir>/<split>/anomalies.pbtxt`.

    Example:
        >>> found = validate(stats, schema, out_dir=Path("/tmp/anomalies")).anomalies
        >>> [(a.split, a.feature, a.type) for a in found]
        [('train', 'label', 'INT_TYPE_BIG_INT')]
    """
    tfdv = load_tfdv()
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    proto_schema = tfdv.load_schema_text(schema.path)
    found: list[Anomaly] = []
    for split in statistics.splits:
        stats = tfdv.load_stats_binary(statistics.path(split))
        if stats.datasets[0].num_examples == 0:
            found.append(Anomaly(split, "*", "EMPTY_SPLIT", f"split '{split}' has no examples"))
            continue
        result = tfdv.validate_statistics(stats, proto_schema, environment="TRAINING")
        (out_dir / split).mkdir()
        (out_dir / split / "anomalies.pbtxt").write_text(text_format.MessageToString(result))
        for feature, info in sorted(result.anomaly_info.items()):
            kinds = ",".join(anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason)
            found.append(Anomaly(split, feature, kinds, info.description))
    return Anomalies(uri=str(out_dir), fingerprint="", anomalies=tuple(found))


COMPONENT = Component(name="validate", fn=validate, inputs=(Statistics, Schema), output=Anomalies, version="1")
