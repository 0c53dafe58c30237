"""Tests of the folder and CSV readers, dataset names from specs, and N-class schemas."""
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components import formats, schema
from components.ingest import DatasetSpec, ingest
from components.inputs import split_arrays
from components.ingest import DataConfig
from engine.errors import DataError
from conftest import make_images

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def write_png_folder(directory: Path, classes: list[str], per_class: int, seed: int = 0,
                     colour_every: int = 0, large_every: int = 0) -> Path:
    """One sub-folder per class of learnable images; every n-th as RGB, every m-th as a 32x32 JPEG-free PNG."""
    rng = np.random.default_rng(seed)
    count = 0
    for k, name in enumerate(classes):
        (directory / name).mkdir(parents=True)
        for image in make_images(np.full(per_class, k), rng):
            pixels = image[..., None]
            if large_every and count % large_every == 0:
                pixels = tf.cast(tf.image.resize(pixels, [32, 32], method="nearest"), tf.uint8).numpy()
            if colour_every and count % colour_every == 1:
                pixels = np.repeat(pixels, 3, axis=-1)
            (directory / name / f"{count:04d}.png").write_bytes(tf.io.encode_png(pixels).numpy())
            count += 1
    return directory


def test_folder_of_class_folders_reads_colour_and_other_sizes(tmp_path, caplog):
    write_png_folder(tmp_path / "d", ["cat", "dog", "emu"], 4, colour_every=3, large_every=5)
    (tmp_path / "d" / "notes.txt").write_text("not an image: skipped, and counted")
    (tmp_path / "d" / "dog" / "Thumbs.db").write_text("")
    (tmp_path / "d" / "emu" / ".DS_Store").write_text("")  # hidden: neither read nor counted
    loaded = formats.load_folder(tmp_path / "d")
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: 2 files skipped, not PNG or JPEG images ({tmp_path / 'd' / 'dog' / 'Thumbs.db'} and 1 more)"]
    assert loaded.classes == ("cat", "dog", "emu")
    split = loaded.splits["all"]
    assert split.images.shape == (12, 28, 28) and split.images.dtype == np.uint8
    assert split.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert split.sources[0].endswith("cat/0000.png")
    assert "4 of 12 images were colour, 3 resized" in loaded.preprocessing
    # A grey RGB image decodes to the same pixels as its grayscale original.
    grey = formats.decode_images([tmp_path / "d" / "cat" / "0001.png"])[0][0]
    assert np.abs(grey.astype(int) - make_images(np.zeros(4, int), np.random.default_rng(0))[1]).max() <= 1


def test_train_and_test_folders_are_the_splits(tmp_path):
    write_png_folder(tmp_path / "d" / "train", ["a", "b"], 3)
    write_png_folder(tmp_path / "d" / "test", ["b", "c"], 2, seed=1)
    loaded = formats.load_folder(tmp_path / "d")
    assert loaded.classes == ("a", "b", "c") and set(loaded.splits) == {"train", "test"}
    assert loaded.splits["test"].labels.tolist() == [1, 1, 2, 2]


def test_flat_folder_is_unlabeled_and_ingests_without_labels(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "flat").mkdir()
    for i, image in enumerate(make_images(np.arange(40) % 10, rng)):
        (tmp_path / "flat" / f"{i}.png").write_bytes(tf.io.encode_png(image[..., None]).numpy())
    loaded = formats.load_folder(tmp_path / "flat")
    assert loaded.classes == () and loaded.splits["all"].labels is None
    (tmp_path / "out").mkdir()
    examples = ingest(out_dir=tmp_path / "out", data=DataConfig(dataset=f"folder:{tmp_path / 'flat'}"))
    assert not examples.labelled and sum(examples.counts.values()) == 40
    images, labels = split_arrays(examples.file_pattern("train"))
    assert len(images) == examples.counts["train"] and (labels == -1).all()


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\nbroken", "broken.png: not a readable PNG or JPEG image"),
    (b"", "broken.png: not a readable PNG or JPEG image"),
])
def test_corrupt_image_names_the_file(tmp_path, content, message):
    write_png_folder(tmp_path / "d", ["a", "b"], 2)
    (tmp_path / "d" / "b" / "broken.png").write_bytes(content)
    with pytest.raises(DataError, match=message):
        formats.load_folder(tmp_path / "d")


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="nothing: no such directory"):
        formats.load_folder(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no PNG or JPEG files and no class sub-folders"):
        formats.load_folder(tmp_path / "empty")
    (tmp_path / "hollow" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="class sub-folders hold no PNG or JPEG files"):
        formats.load_folder(tmp_path / "hollow")


def write_csv(path: Path, labels: np.ndarray | None, images: np.ndarray, first_pixel: int = 0) -> Path:
    """Kaggle's layout: a header `label,pixel0,...,pixel783`, one image per line."""
    header = (["label"] if labels is not None else []) + [f"pixel{i + first_pixel}" for i in range(784)]
    rows = [",".join(map(str, ([int(labels[i])] if labels is not None else []) + images[i].reshape(-1).tolist()))
            for i in range(len(images))]
    path.write_text("\n".join([",".join(header), *rows]) + "\n")
    return path


def test_csv_with_and_without_labels(tmp_path):
    labels = np.arange(12) % 4
    images = make_images(labels, np.random.default_rng(0))
    loaded = formats.load_csv(write_csv(tmp_path / "train.csv", labels, images))
    assert loaded.classes == ()  # numbered labels: the schema says how many classes there are
    assert (loaded.splits["all"].images == images).all() and loaded.splits["all"].labels.tolist() == labels.tolist()
    assert loaded.splits["all"].sources[1] == f"{tmp_path / 'train.csv'}:3"
    unlabeled = formats.load_csv(write_csv(tmp_path / "test.csv", None, images, first_pixel=1))
    assert unlabeled.splits["all"].labels is None and (unlabeled.splits["all"].images == images).all()
    # A directory holding Kaggle's pair: a labelled train file, an unlabeled test file, cannot be trained on.
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="some splits have labels and some do not"):
        ingest(out_dir=tmp_path / "out", data=DataConfig(dataset=f"csv:{tmp_path}"))


@pytest.mark.parametrize("edit, message", [
    (lambda lines: [lines[0].replace(",pixel783", "")] + [l.rsplit(",", 1)[0] for l in lines[1:]],
     "783 pixel columns, expected 784"),
    (lambda lines: lines[:2] + [lines[2].replace(",", ",x", 1)] + lines[3:], r"line 3: column \w+ is 'x"),
    (lambda lines: lines[:3] + [lines[3].replace(",", ",300,", 1).replace(",0,", ",", 1)] + lines[4:],
     r"line 4: column pixel0 is 300, expected 0-255"),
    (lambda lines: [lines[0], "-1" + lines[1][lines[1].index(","):]] + lines[2:], "line 2: label -1"),
    (lambda lines: lines[:2] + [lines[2].replace(",0,", ",,", 1)] + lines[3:], r"line 3: column pixel0 is empty, "
                                                                            "expected a whole number"),
    # Kaggle's file cut off mid-row: the row's field count, not a 'nan' pixel.
    (lambda lines: lines[:-1] + [",".join(lines[-1].split(",")[:314])], r"d.csv: line 5 has 314 fields of 785 "
                                                                          r"\(cut off\?\): complete it or delete it$"),
    (lambda lines: lines[1:], r"d.csv: the first line is data \(785 numbers\), not a header: add the header line "
                              r"'label,pixel0,...,pixel783' \(without 'label,' for images without labels\)$"),
    (lambda lines: [l.replace(",", ";") for l in lines], r"d.csv: the first line is separated by semicolons \(;\) "
                                                         r"\(785 fields\), not commas: expected comma-separated"),
    (lambda lines: [l.replace(",", "\t") for l in lines], r"the first line is separated by tabs \(785 fields\)"),
])
def test_bad_csv_names_the_file_and_line(tmp_path, edit, message):
    labels = np.arange(4) % 2
    path = write_csv(tmp_path / "d.csv", labels, np.zeros((4, 28, 28), np.uint8))
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    with pytest.raises(DataError, match=message):
        formats.load_csv(path)


def test_a_csv_header_is_read_whatever_its_case(tmp_path):
    labels = np.arange(4) % 2
    images = make_images(labels, np.random.default_rng(2))
    path = write_csv(tmp_path / "d.csv", labels, images)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace("label", "Label").replace("pixel", "Pixel"), *lines[1:]]) + "\n")
    loaded = formats.load_csv(path).splits["all"]
    assert loaded.labels.tolist() == labels.tolist() and (loaded.images == images).all()


def test_dataset_names_pick_curated_schemas(tmp_path):
    assert DatasetSpec.parse("tfds:emnist/balanced").name == "emnist_balanced"
    assert DatasetSpec.parse("tfds:mnist/3.0.1").name == "mnist"
    assert DatasetSpec.parse(f"folder:{tmp_path}:test") == DatasetSpec("folder", str(tmp_path), "", "test")
    assert DatasetSpec.parse(f"csv:{tmp_path}/train.csv").kind == "csv"
    from components.idx import write_idx

    for split in ("train", "test"):
        write_idx(tmp_path / f"emnist-balanced-{split}-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
        write_idx(tmp_path / f"emnist-balanced-{split}-labels-idx1-ubyte.gz", np.array([0, 46, 5], np.uint8))
    spec = DatasetSpec.parse(f"idx:{tmp_path}")
    assert spec.name == "emnist_balanced"
    path = schema.curated_schema_path(SCHEMAS, spec.name)
    names = schema.class_names(schema.load_schema(path))
    assert path.name == "emnist_balanced.pbtxt" and len(names) == 47 and names[10] == "A" and names[-1] == "t"


def test_generic_schema_follows_the_data_classes(stats, tmp_path):
    names = tuple(f"class {i}" for i in range(12))
    (tmp_path / "g").mkdir()
    generic = schema.schema(stats, out_dir=tmp_path / "g", curated=SCHEMAS / "mnist_family.pbtxt", classes=names)
    proto = schema.load_schema(Path(generic.path))
    label = next(f for f in proto.feature if f.name == "label")
    assert schema.classes_of(generic) == names and label.int_domain.max == 11
    assert label.drift_comparator.infinity_norm.threshold == pytest.approx(0.025)
    assert "12 classes from the data" in generic.source
    (tmp_path / "f").mkdir()  # a dataset's own curated schema keeps its classes whatever the data says
    own = schema.schema(stats, out_dir=tmp_path / "f", curated=SCHEMAS / "fashion_mnist.pbtxt", classes=names)
    assert schema.classes_of(own)[:2] == ("T-shirt/top", "Trouser")
    (tmp_path / "i").mkdir()
    inferred = schema.schema(stats, out_dir=tmp_path / "i", curated=None, classes=("a", "b", "c"))
    assert schema.classes_of(inferred) == ("a", "b", "c")


def write_huge_png(path: Path, side: int = 20_000) -> Path:
    """A PNG whose header declares side x side grayscale pixels, with one compressed all-black row as its data:
    a few hundred bytes that a decoder would expand to side² bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(bytes(side + 1))) + chunk(b"IEND", b""))
    return path


def test_an_image_over_the_size_limit_is_refused_from_its_header(tmp_path):
    write_png_folder(tmp_path / "d", ["a", "b"], 2)
    huge = write_huge_png(tmp_path / "d" / "b" / "huge.png")
    assert huge.stat().st_size < 1000
    with pytest.raises(DataError, match=r"^\S*d/b/huge.png: 20000x20000 pixels, over the limit of 16777216 pixels "
                                        r"\(4096x4096\); scale it down"):
        formats.load_folder(tmp_path / "d")
    assert formats.image_size(huge, huge.read_bytes(), limit=20_000 ** 2) == (20_000, 20_000)
    jpeg = tmp_path / "wide.jpg"
    jpeg.write_bytes(tf.io.encode_jpeg(np.zeros((10, 5000, 1), np.uint8)).numpy())
    with pytest.raises(DataError, match=r"wide.jpg: 5000x10 pixels, over the limit of 40000 pixels"):
        formats.image_size(jpeg, jpeg.read_bytes(), limit=200 * 200)


def test_images_beside_class_folders_are_refused_naming_them(tmp_path):
    write_png_folder(tmp_path / "d", ["a", "b"], 2)
    for name in ("loose.png", "corrupt.png"):
        (tmp_path / "d" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DataError, match=r"d: 2 images beside the class sub-folders \(corrupt.png, loose.png\); "
                                        r"move them into a class sub-folder"):
        formats.load_folder(tmp_path / "d")
    write_png_folder(tmp_path / "s" / "train", ["a", "b"], 2)
    (tmp_path / "s" / "train" / "stray.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"train: 1 images beside the class sub-folders \(stray.png\)"):
        formats.load_folder(tmp_path / "s")
