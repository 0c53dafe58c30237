"""Tests of the run records: finding the model serving now (the evaluation baseline)."""
import json

from pipeline.records import latest_blessed, write_json


def _pushed_version(serving, version: int, model_fingerprint: str):
    path = serving / str(version)
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"pb")
    (path / "model_info.json").write_text(json.dumps({"model_fingerprint": model_fingerprint}))
    return path


def test_latest_blessed_is_the_newest_push_of_another_model(tmp_path):
    serving = tmp_path / "serving"
    one, two = _pushed_version(serving, 1, "m1"), _pushed_version(serving, 2, "m2")
    # An older record names only `pushed_model`; a newer one has the `push` section.
    write_json(tmp_path / "runs" / "20260101T000000-aaaa" / "summary.json",
               {"status": "pushed", "pushed_model": str(one)})
    write_json(tmp_path / "runs" / "20260102T000000-bbbb" / "summary.json",
               {"status": "pushed", "pushed_model": str(two), "push": {"uri": str(two), "version": 2}})
    write_json(tmp_path / "runs" / "20260103T000000-cccc" / "summary.json", {"status": "not_blessed"})
    found = latest_blessed(tmp_path, serving, "m3")
    assert (found.version, found.model_fingerprint, found.uri) == (2, "m2", str(two))
    assert latest_blessed(tmp_path, serving, "m2").version == 1  # a model is not its own baseline
    assert latest_blessed(tmp_path, serving, "m2").fingerprint == latest_blessed(tmp_path, serving, "m2").fingerprint
    (one / "saved_model.pb").unlink()  # removed from serving: no longer a baseline
    assert latest_blessed(tmp_path, serving, "m2") is None
    assert latest_blessed(tmp_path, tmp_path / "elsewhere", "m3") is None  # another serving directory
