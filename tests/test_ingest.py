"""Tests of ingest: dataset specs, IDX directories, hash splits, TFDS, bad inputs."""
import contextlib
import gzip
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components import ingest as ingest_module
from components import tfds_source
from components.ingest import DatasetSpec, ingest
from conftest import write_dataset
from components.idx import write_idx
from components.ingest import DataConfig
from engine.errors import ConfigError, DataError


def _read(examples, split):
    ds = tf.data.TFRecordDataset(tf.io.gfile.glob(examples.file_pattern(split)), compression_type="GZIP")
    spec = {"image": tf.io.FixedLenFeature([784], tf.int64), "label": tf.io.FixedLenFeature([1], tf.int64)}
    parsed = [tf.io.parse_single_example(r, spec) for r in ds]
    return np.array([p["image"].numpy() for p in parsed]), np.array([int(p["label"][0]) for p in parsed])


@pytest.mark.parametrize("spec,expected", [
    ("idx:/data/x", DatasetSpec("idx", "/data/x", "", None)),
    ("idx:/data/x:test", DatasetSpec("idx", "/data/x", "", "test")),
    ("tfds:kmnist", DatasetSpec("tfds", "kmnist", "kmnist", None)),
    ("mnist:train", DatasetSpec("tfds", "mnist", "mnist", "train")),
])
def test_spec_parsing(spec, expected, monkeypatch):
    monkeypatch.setattr(ingest_module, "LOCAL_COPIES", {})
    assert DatasetSpec.parse(spec) == expected


def test_default_dataset_prefers_local_debian_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "LOCAL_COPIES", {"fashion_mnist": tmp_path})
    assert DatasetSpec.parse("fashion_mnist") == DatasetSpec("idx", str(tmp_path), "fashion_mnist", None)
    assert DatasetSpec.parse("tfds:fashion_mnist").kind == "tfds"


def test_bad_spec():
    with pytest.raises(ConfigError, match="dataset spec 'ftp:x y': expected NAME, tfds:NAME, idx:DIR, folder:DIR or "
                                        "csv:FILE"):
        DatasetSpec.parse("ftp:x y")


def test_a_path_without_its_kind_is_refused_with_the_kind_it_needs(tmp_path, monkeypatch):
    data = write_dataset(tmp_path / "idx", {"train": 10})
    (tmp_path / "images" / "a").mkdir(parents=True)
    with pytest.raises(ConfigError, match=rf"dataset spec '{data}': a path needs its kind: idx:{data} \(a directory"):
        DatasetSpec.parse(str(data))
    with pytest.raises(ConfigError, match=rf"a path needs its kind: folder:{tmp_path / 'images'} \(one sub-folder"):
        DatasetSpec.parse(str(tmp_path / "images"))
    with pytest.raises(ConfigError, match=r"a run ingests a whole dataset; drop ':test'"):
        DatasetSpec.parse(f"idx:{data}:test", whole=True)
    with pytest.raises(ConfigError, match=rf"^dataset spec 'idx:{data}:bogus': no split ':bogus'; expected "
                                          rf":train\|:eval\|:test\|:all after idx:{data}$"):
        DatasetSpec.parse(f"idx:{data}:bogus")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()  # a folder here named as a TFDS dataset: the name is still the dataset's
    assert DatasetSpec.parse("mnist").kind == "tfds"
    (tmp_path / "my-images").mkdir()  # a relative path that no TFDS name could be
    with pytest.raises(ConfigError, match=r"dataset spec 'my-images': a path needs its kind: folder:my-images"):
        DatasetSpec.parse("my-images")


def test_ingest_writes_every_split_with_content(examples):
    assert examples.counts["train"] + examples.counts["eval"] == 320 and examples.counts["test"] == 64
    assert 10 <= examples.counts["eval"] <= 60  # about 10% by hash
    images, labels = _read(examples, "test")
    assert images.shape == (64, 784) and images.max() <= 255 and set(labels) == set(range(10))
    assert len(examples.fingerprint) == 64 and examples.source.startswith("idx:")
    record = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(examples.file_pattern("test")),
                                               compression_type="GZIP")))
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    from components.image_features import NAMES, summarize

    expected = summarize(images[:1].reshape(1, 28, 28).astype(np.uint8))
    for name in NAMES:
        assert feature[name].float_list.value[0] == pytest.approx(float(expected[name][0]), rel=1e-6)


def test_split_and_fingerprint_are_deterministic(idx_dir, tmp_path):
    results = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        results.append(ingest(out_dir=tmp_path / name, data=DataConfig(dataset=f"idx:{idx_dir}")))
    assert results[0].fingerprint == results[1].fingerprint and results[0].counts == results[1].counts
    np.testing.assert_array_equal(_read(results[0], "eval")[0], _read(results[1], "eval")[0])


def test_single_split_directory_is_divided_by_hash(tmp_path):
    data = write_dataset(tmp_path / "one", {"all": 200}, gz=False)
    (tmp_path / "out").mkdir()
    examples = ingest(out_dir=tmp_path / "out", data=DataConfig(dataset=f"idx:{data}", test_fraction=0.2))
    assert sum(examples.counts.values()) == 200
    assert 20 <= examples.counts["test"] <= 60 and examples.counts["eval"] > 0
    train, test = _read(examples, "train")[0], _read(examples, "test")[0]
    assert not {r.tobytes() for r in train} & {r.tobytes() for r in test}


def _ingest(tmp_path, data_dir):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return ingest(out_dir=out, data=DataConfig(dataset=f"idx:{data_dir}"))


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match=r"absent: no such directory"):
        _ingest(tmp_path, tmp_path / "absent")


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no IDX files"):
        _ingest(tmp_path, tmp_path / "empty")


def test_labels_missing_from_one_split_only(idx_dir, tmp_path):
    (idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"some splits have labels and some do not \(labelled: train\)"):
        _ingest(tmp_path, idx_dir)


def test_labels_without_images(idx_dir, tmp_path):
    (idx_dir / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: no matching images file"):
        _ingest(tmp_path, idx_dir)


def test_a_directory_of_test_files_is_its_test_split_whole(tmp_path):
    data = write_dataset(tmp_path / "today", {"t10k": 50})
    examples = _ingest(tmp_path, data)
    assert examples.counts == {"train": 0, "eval": 0, "test": 50} and examples.labelled


def test_images_without_labels_are_an_unlabeled_batch(tmp_path):
    data = write_dataset(tmp_path / "today", {"t10k": 40})
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    examples = _ingest(tmp_path, data)
    assert examples.counts["test"] == 40 and not examples.labelled
    record = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(examples.file_pattern("test")), "GZIP")))
    assert "label" not in tf.train.Example.FromString(record.numpy()).features.feature


@pytest.mark.parametrize("whole, expected", [("never", None), ("single", None), ("always", 192)])
def test_whole_puts_every_example_in_test(idx_dir, tmp_path, whole, expected):
    (tmp_path / "out").mkdir()
    examples = ingest(out_dir=tmp_path / "out", data=DataConfig(dataset=f"idx:{idx_dir}"), whole=whole)
    assert examples.counts["test"] == (expected or 64) and sum(examples.counts.values()) == 192


def test_whole_single_reads_a_sole_split_whole(tmp_path):
    data = write_dataset(tmp_path / "one", {"all": 100}, gz=False)
    (tmp_path / "out").mkdir()
    examples = ingest(out_dir=tmp_path / "out", data=DataConfig(dataset=f"idx:{data}"), whole="single")
    assert examples.counts == {"train": 0, "eval": 0, "test": 100}


def test_counts_differ(idx_dir, tmp_path):
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(63, np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: 64 images but t10k-labels-idx1-ubyte.gz "
                                        r"has 63 labels"):
        _ingest(tmp_path, idx_dir)


def test_truncated_gz(idx_dir, tmp_path):
    path = idx_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: not a readable gzip file"):
        _ingest(tmp_path, idx_dir)


def test_wrong_magic(idx_dir, tmp_path):
    with gzip.open(idx_dir / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"PK\x03\x04junk")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: wrong magic number 504b0304"):
        _ingest(tmp_path, idx_dir)


def test_zero_size_images_name_the_file(idx_dir, tmp_path):
    write_idx(idx_dir / "t10k-images-idx3-ubyte.gz", np.zeros((16, 0, 0), np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: images of 0x0 pixels; expected at least one row"):
        _ingest(tmp_path, idx_dir)


def test_other_image_size_is_kept_for_validation_to_flag(tmp_path):
    examples = _ingest(tmp_path, write_dataset(tmp_path / "big", {"train": 40, "t10k": 20}, side=32))
    assert _read_len(examples) == 1024


def _read_len(examples):
    record = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(examples.file_pattern("test")),
                                               compression_type="GZIP")))
    return len(tf.train.Example.FromString(record.numpy()).features.feature["image"].int64_list.value)


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(DataError, match=r"tfds:no_such_dataset: unknown TFDS dataset"):
        ingest(out_dir=tmp_path, data=DataConfig(dataset="tfds:no_such_dataset", tfds_data_dir=str(tmp_path)))


def test_tfds_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_source, "TFDS_HOST", "tfds-host.invalid")
    with pytest.raises(DataError, match=r"tfds:mnist: not prepared in .* and no network to download it"):
        ingest(out_dir=tmp_path, data=DataConfig(dataset="tfds:mnist", tfds_data_dir=str(tmp_path)))


def test_tfds_dataset_is_read(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds_source, "_require_network", lambda *args: None)  # mock_data serves it
    with tfds.testing.mock_data(num_examples=30):
        examples = ingest(out_dir=tmp_path, data=DataConfig(dataset="tfds:kmnist"))
    assert examples.source == "tfds:kmnist" and examples.name == "kmnist"
    assert sum(examples.counts.values()) == 60 and _read(examples, "train")[0].shape[1] == 784


def test_source_fingerprint_follows_file_content(idx_dir):
    data = DataConfig(dataset=f"idx:{idx_dir}")
    before = ingest_module.source_fingerprint(data)
    write_dataset(idx_dir, {"t10k": 64}, seed=99)
    assert ingest_module.source_fingerprint(data) != before



def test_empty_split_is_kept_for_validation_to_block(idx_dir, tmp_path):
    write_idx(idx_dir / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", np.zeros((0,), np.uint8))
    assert _ingest(tmp_path, idx_dir).counts["test"] == 0  # validate reports EMPTY_SPLIT: exit 3


def test_encoded_examples_hold_pixels_label_and_summaries():
    import tensorflow as tf

    from components import image_features
    from components.tfrecords import encode_examples

    images = np.arange(3 * 784, dtype=np.int64).reshape(3, 28, 28) % 256
    images = images.astype(np.uint8)
    summaries = image_features.summarize(images)
    labelled = [tf.train.Example.FromString(r) for r in encode_examples(images, np.array([4, 0, 9]), summaries)]
    for i, example in enumerate(labelled):
        feature = example.features.feature
        assert list(feature["image"].int64_list.value) == images[i].reshape(-1).tolist()
        assert list(feature["label"].int64_list.value) == [[4, 0, 9][i]]
        assert feature["ink_fraction"].float_list.value[0] == pytest.approx(summaries["ink_fraction"][i], rel=1e-6)
    first = {name: values[:1] for name, values in summaries.items()}
    unlabeled = tf.train.Example.FromString(encode_examples(images[:1], None, first)[0])
    assert "label" not in unlabeled.features.feature and "image" in unlabeled.features.feature


@pytest.mark.parametrize("invert, inverted", [("auto", True), ("true", True), ("false", False)])
def test_invert_normalises_dark_ink_on_light_and_records_it(tmp_path, invert, inverted):
    from components.idx import read_idx

    source = write_dataset(tmp_path / "data", {"train": 60, "t10k": 30})
    for name in ("train", "t10k"):  # dark ink on a light background, as scanned digits are
        path = source / f"{name}-images-idx3-ubyte.gz"
        write_idx(path, 255 - read_idx(path))
    (tmp_path / "out").mkdir()
    examples = ingest(out_dir=tmp_path / "out", data=DataConfig(dataset=f"idx:{source}", invert=invert))
    assert examples.inverted is inverted
    assert ingest_module.summarize(examples, {})["dataset"]["inverted"] is inverted
    images = _read(examples, "test")[0]
    assert (np.median(images, axis=1) < 128).all() == inverted  # light ink on dark once inverted


def test_invert_auto_leaves_light_ink_on_dark_as_it_is(idx_dir, tmp_path):
    examples = _ingest(tmp_path, idx_dir)
    assert examples.inverted is False and (np.median(_read(examples, "test")[0], axis=1) < 128).all()


def test_invert_auto_on_inverted_data_validates_clean(tmp_path):
    from components.idx import read_idx
    from components.schema import schema
    from components.statistics import statistics
    from components.validate import validate

    source = write_dataset(tmp_path / "data", {"train": 100, "t10k": 50})
    for name in ("train", "t10k"):
        path = source / f"{name}-images-idx3-ubyte.gz"
        write_idx(path, 255 - read_idx(path))
    found = {}
    for invert in ("false", "auto"):
        for sub in ("ex", "stats", "schema", "anomalies"):
            (tmp_path / invert / sub).mkdir(parents=True)
        examples = ingest(out_dir=tmp_path / invert / "ex", data=DataConfig(dataset=f"idx:{source}", invert=invert))
        stats = statistics(examples, out_dir=tmp_path / invert / "stats")
        curated = schema(stats, out_dir=tmp_path / invert / "schema",
                         curated=Path(__file__).parent.parent / "schemas" / "mnist_family.pbtxt")
        found[invert] = validate(stats, curated, out_dir=tmp_path / invert / "anomalies").anomalies
    assert {a.feature for a in found["false"]} == {"background"} and found["auto"] == ()


def _parsed(examples):
    """Every split's examples as protos, shard by shard in file order (their serialized bytes vary by process)."""
    def shard(path):
        return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]

    return {split: [shard(path) for path in sorted(tf.io.gfile.glob(examples.file_pattern(split)))]
            for split in ingest_module.SPLITS}


@pytest.mark.parametrize("invert", ["auto", "true"])
def test_ingest_streams_idx_files_in_chunks_and_writes_what_one_chunk_would(tmp_path, monkeypatch, invert):
    """Ingest reads an IDX split a chunk of images at a time (here 7), never the whole file, and its output is
    the one of reading each split at once: the same carve, fingerprint, counts and examples in each shard."""
    from components import idx, layout, tfrecords

    data = write_dataset(tmp_path / "data", {"train": 150})  # one split: test and eval carved by hash
    monkeypatch.setattr(tfrecords, "SHARD_SIZE", 40)  # several shards, each written from many chunks
    config = DataConfig(dataset=f"idx:{data}", invert=invert)
    monkeypatch.setattr(layout, "CHUNK", 10_000)
    (tmp_path / "whole").mkdir()
    whole = ingest(out_dir=tmp_path / "whole", data=config)

    reads, written, opened = [], [], idx._opened

    class Recording:  # the file ingest reads, counting the bytes each read returns
        def __init__(self, f):
            self.f = f

        def read(self, size=-1):
            data = self.f.read(size)
            reads.append(len(data))
            return data

    @contextlib.contextmanager
    def recording(path):
        with opened(path) as f:
            yield Recording(f)

    def counted(chunks, count, directory, write=tfrecords.write_split):
        def passing():
            for images, labels in chunks:
                written.append(len(images))
                yield images, labels
        write(passing(), count, directory)

    monkeypatch.setattr(layout, "CHUNK", 7)
    monkeypatch.setattr(idx, "_opened", recording)
    monkeypatch.setattr(ingest_module, "write_split", counted)
    (tmp_path / "chunked").mkdir()
    chunked = ingest(out_dir=tmp_path / "chunked", data=config)

    assert 0 < max(reads) <= 7 * 784  # no read of a whole file: 150 images are 117,600 bytes
    assert max(written) <= 7 and sum(written) == 150
    assert (chunked.fingerprint, chunked.counts, chunked.inverted) == (whole.fingerprint, whole.counts, whole.inverted)
    assert chunked.counts["test"] > 0 and chunked.counts["eval"] > 0
    assert len(tf.io.gfile.glob(chunked.file_pattern("train"))) > 1
    assert _parsed(chunked) == _parsed(whole)


def test_polarity_from_chunks_decides_as_the_median_of_all_backgrounds():
    """`light_background` counts values instead of keeping them; its decision is np.median's over the whole,
    odd and even counts, the two middle values straddling the threshold included."""
    from components.image_features import LIGHT, light_background

    rng = np.random.default_rng(0)
    values = np.array([LIGHT - 1, LIGHT - 0.5, LIGHT, LIGHT + 0.25, LIGHT + 1], np.float32)
    for _ in range(500):
        frames = rng.choice(values, rng.integers(1, 12)).astype(np.float32)
        chunks = np.array_split(frames, rng.integers(1, 4))
        assert light_background(chunks) == (float(np.median(frames)) > LIGHT), frames
    assert light_background([np.array([LIGHT - 1, LIGHT + 2], np.float32)]) is True  # the mean of the middle two
    assert light_background([]) is False
