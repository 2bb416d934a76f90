"""Starting weights (utils/course/weights.py): the shipped MobileNet 0.25 file and its hash check, Keras's file
names, and each CXR_WEIGHTS choice, never touching the network (the probe is replaced in every test that would
reach it)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import time

import pytest

from utils.course import weights
from utils.course.weights import (
    SHIPPED,
    SHIPPED_SHA256,
    WeightsError,
    imagenet_file,
    keras_cache,
    network_problem,
    resolve_weights,
)
from utils.models import DENSENET121, MOBILENET, MOBILENET_025, RESNET50, VGG16

MOBILENET_FILE = "mobilenet_2_5_224_tf_no_top.h5"


@pytest.fixture
def offline(monkeypatch):
    """Every connection attempt fails at once, as on a machine without internet."""
    attempts = []

    def refuse(address, timeout=None):
        attempts.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.fixture
def no_network_allowed(monkeypatch):
    def fail(*_, **__):
        raise AssertionError("the network was probed")

    monkeypatch.setattr(weights, "network_problem", fail)


@pytest.fixture
def damaged_copy(tmp_path, monkeypatch):
    """The course's weights folder with the MobileNet file one byte off."""
    folder = tmp_path / "weights"
    folder.mkdir()
    data = bytearray((SHIPPED / MOBILENET_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / MOBILENET_FILE).write_bytes(bytes(data))
    monkeypatch.setattr(weights, "SHIPPED", folder)
    return folder / MOBILENET_FILE


def test_the_shipped_file_passes_its_sha256_check():
    path = SHIPPED / MOBILENET_FILE
    assert path.stat().st_size == 2_108_140  # the size weights/README.md gives
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHIPPED_SHA256[MOBILENET_FILE]
    assert weights._on_disk(MOBILENET_FILE) == path  # Keras's cache (an empty folder in tests) has no copy


@pytest.mark.parametrize("choice", ["cached", "auto", "imagenet"])
def test_a_damaged_shipped_file_is_refused_with_a_clear_error(damaged_copy, no_network_allowed, capsys, choice):
    with pytest.raises(WeightsError) as caught:
        resolve_weights(MOBILENET_025, choice, 64)
    message = str(caught.value)
    assert str(damaged_copy) in message and "damaged" in message
    assert SHIPPED_SHA256[MOBILENET_FILE][:12] in message  # the expected hash, to compare with sha256sum
    assert "git checkout -- weights/mobilenet_2_5_224_tf_no_top.h5" in message and "CXR_WEIGHTS=none" in message
    assert "RANDOM WEIGHTS" not in capsys.readouterr().out  # refused, not silently replaced by random weights


def test_a_truncated_or_lfs_pointer_file_is_refused(tmp_path, monkeypatch, no_network_allowed):
    (tmp_path / MOBILENET_FILE).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:dbdb03\nsize 2108140\n")
    monkeypatch.setattr(weights, "SHIPPED", tmp_path)
    with pytest.raises(WeightsError, match="is damaged"):
        resolve_weights(MOBILENET_025, "cached", 128)  # via the 224 px file, as at any size without a file


def test_a_damaged_shipped_file_is_not_needed_when_keras_has_a_copy(damaged_copy, no_network_allowed, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    keras_cache().mkdir(parents=True)
    shutil.copy(SHIPPED / MOBILENET_FILE, keras_cache() / MOBILENET_FILE)
    assert resolve_weights(MOBILENET_025, "cached", 64) == (str(keras_cache() / MOBILENET_FILE), "imagenet")


@pytest.mark.parametrize(
    ("backbone", "size", "name"),
    [
        (VGG16, 64, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        (RESNET50, 224, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        (DENSENET121, 128, "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        (MOBILENET, 128, "mobilenet_1_0_128_tf_no_top.h5"),
        (MOBILENET, 64, "mobilenet_1_0_224_tf_no_top.h5"),  # Keras has no 64 px file: it loads the 224 px one
        (MOBILENET_025, 160, "mobilenet_2_5_160_tf_no_top.h5"),
        (MOBILENET_025, 224, MOBILENET_FILE),
    ],
)
def test_keras_file_names(backbone, size, name):
    assert imagenet_file(backbone, size) == name


def test_none_means_random_weights_and_says_so(no_network_allowed, capsys):
    path, used = resolve_weights(VGG16, "none", 64)
    assert path is None and "random" in used
    assert used == "none (random weights, as asked)"
    assert "RANDOM WEIGHTS" not in capsys.readouterr().out  # asked for: no alarm
    assert resolve_weights(None, "imagenet", 64) == (None, "none (trained from scratch)")  # the CNN


def test_cached_finds_the_shipped_mobilenet_025_file(no_network_allowed):
    assert resolve_weights(MOBILENET_025, "cached", 64) == (str(SHIPPED / MOBILENET_FILE), "imagenet")
    assert resolve_weights(MOBILENET_025, "auto", 224) == (str(SHIPPED / MOBILENET_FILE), "imagenet")


def test_keras_cache_is_searched_first(monkeypatch, tmp_path, no_network_allowed):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    (tmp_path / "kh" / "models").mkdir(parents=True)
    file = tmp_path / "kh" / "models" / MOBILENET_FILE
    shutil.copy(SHIPPED / MOBILENET_FILE, file)
    assert keras_cache() == tmp_path / "kh" / "models"
    assert resolve_weights(MOBILENET_025, "imagenet", 64) == (str(file), "imagenet")


def test_cached_without_a_file_gives_random_weights_without_probing_the_network(no_network_allowed, capsys):
    path, used = resolve_weights(VGG16, "cached", 64)
    assert path is None
    assert used.startswith("random") and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 not on disk" in used
    banner = capsys.readouterr().out
    text = " ".join(line.strip("! ") for line in banner.splitlines())  # the box's lines, unwrapped
    assert "RANDOM WEIGHTS: vgg16 starts from random weights" in text and "never downloaded with CXR_WEIGHTS=cached" in text
    assert {len(line) for line in banner.strip().splitlines()} == {100}  # a closed box


def test_imagenet_offline_fails_fast_with_what_to_do(offline):
    started = time.perf_counter()
    with pytest.raises(WeightsError) as caught:
        resolve_weights(RESNET50, "imagenet", 64)
    assert time.perf_counter() - started < 2
    message = str(caught.value)
    assert message.startswith("ImageNet weights for resnet50 are not available")
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 is not in" in message
    assert "Network is unreachable" in message and "CXR_WEIGHTS=auto" in message
    assert offline == [("storage.googleapis.com", 443)]  # one probe, nothing downloaded


def test_auto_offline_falls_back_to_random_weights_loudly(offline, capsys):
    path, used = resolve_weights(DENSENET121, "auto", 64)
    assert path is None and used.startswith("random (ImageNet weights unavailable")
    out = " ".join(line.strip("! ") for line in capsys.readouterr().out.splitlines())
    assert "RANDOM WEIGHTS: densenet121" in out and "NOT transfer learning" in out and "Network is unreachable" in out


def test_imagenet_online_lets_keras_download(monkeypatch):
    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: Connection())
    assert resolve_weights(VGG16, "imagenet", 64) == ("imagenet", "imagenet")
    assert resolve_weights(VGG16, "auto", 64) == ("imagenet", "imagenet")


def test_a_weights_file_is_passed_through(tmp_path, no_network_allowed):
    file = tmp_path / "chest.h5"
    shutil.copy(SHIPPED / MOBILENET_FILE, file)
    assert resolve_weights(MOBILENET_025, str(file), 64) == (str(file), "file chest.h5")


# A file that is not the backbone's: one line naming it, what is wrong and what to do (cli.py prints a
# WeightsError as `error: ...`), never h5py's OSError or Keras's ValueError from deep inside keras.applications.


def test_weights_of_another_network_are_refused_naming_the_file(no_network_allowed):
    file = str(SHIPPED / MOBILENET_FILE)  # a real Keras file, but MobileNet 0.25's
    with pytest.raises(WeightsError) as caught:
        resolve_weights(VGG16, file, 32)
    message = str(caught.value)
    assert message.startswith(f"{file} is not weights for vgg16 (layer count mismatch")
    assert "give a Keras 'no top' weights file for vgg16" in message and "imagenet, auto or none" in message
    assert "\n" not in message
    with pytest.raises(WeightsError, match="is not weights for mobilenet .*shape mismatch"):
        resolve_weights(MOBILENET, file, 32)  # same layers, other widths


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, on every layer the file lacks
def test_keras3_weights_of_another_model_are_refused(tmp_path, no_network_allowed):
    import keras

    tiny = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv1")])
    tiny.save_weights(tmp_path / "tiny.weights.h5")
    with pytest.raises(WeightsError, match=r"tiny\.weights\.h5 is not weights for mobilenet_025 \("):
        resolve_weights(MOBILENET_025, str(tmp_path / "tiny.weights.h5"), 32)


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("junk.h5", b"not HDF5 at all\n", "is not a weights file (not HDF5: file signature not found)"),
    ("weights.pt", b"PK", "is not a Keras weights file (Keras loads .h5, .weights.h5 and .keras files)"),
])  # fmt: skip
def test_a_file_keras_cannot_read_is_refused(tmp_path, no_network_allowed, name, content, problem):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(WeightsError) as caught:
        resolve_weights(MOBILENET_025, str(tmp_path / name), 32)
    assert str(caught.value).startswith(f"{tmp_path / name} {problem}: give a Keras 'no top' weights file")


def test_a_truncated_file_in_keras_cache_is_refused(tmp_path, monkeypatch, no_network_allowed, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    keras_cache().mkdir(parents=True)
    cut = keras_cache() / MOBILENET_FILE  # a download cut short: only the shipped file is hash-checked
    cut.write_bytes((SHIPPED / MOBILENET_FILE).read_bytes()[:1_000_000])
    for choice in ("cached", "auto", "imagenet"):
        with pytest.raises(WeightsError) as caught:
            resolve_weights(MOBILENET_025, choice, 64)
        assert str(caught.value) == (f"{cut} is damaged (truncated: 1,000,000 of 2,108,140 bytes): delete it (the "
                                     "course's copy in weights/ is then used), or set CXR_WEIGHTS=none.")  # fmt: skip
    assert "RANDOM WEIGHTS" not in capsys.readouterr().out  # refused, not replaced by random weights


def test_a_file_for_another_network_in_keras_cache_says_to_delete_it(tmp_path, monkeypatch, no_network_allowed):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    keras_cache().mkdir(parents=True)
    wrong = keras_cache() / imagenet_file(VGG16, 64)
    shutil.copy(SHIPPED / MOBILENET_FILE, wrong)
    with pytest.raises(WeightsError) as caught:
        resolve_weights(VGG16, "cached", 32)
    message = str(caught.value)
    assert message.startswith(f"{wrong} is not weights for vgg16 (layer count mismatch")
    assert message.endswith("delete it (CXR_WEIGHTS=auto or imagenet downloads it again when online), or set "
                            "CXR_WEIGHTS=none.")  # fmt: skip


def test_only_the_load_is_guarded_a_backbone_that_cannot_be_built_is_not_a_weights_error(no_network_allowed):
    with pytest.raises(ValueError) as caught:  # VGG16 needs at least 32 px: Keras's own error, as without a file
        resolve_weights(VGG16, str(SHIPPED / MOBILENET_FILE), 16)
    assert not isinstance(caught.value, WeightsError)


def test_network_probe_gives_up_after_its_timeout(monkeypatch):
    def slow(address, timeout=None):
        time.sleep(1.5)
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", slow)
    started = time.perf_counter()
    problem = network_problem(timeout=0.2)
    assert time.perf_counter() - started < 1.5
    assert problem.startswith("no answer from storage.googleapis.com")
