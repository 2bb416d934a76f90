"""Deployment (utils/deploy.py, notebook 11): every course model exports to files that give the Keras model's
probabilities, a file that does not is caught, ``python -m utils export`` checks a trained run and writes
parity.json, and the Gradio demo answers over its API (also for the uploads it must refuse)."""

from __future__ import annotations

import ast
import hashlib
import json
import socket

import keras
import nbformat
import numpy as np
import pytest
from PIL import Image

from utils import deploy
from utils.course.cli import main
from utils.course.config import PROJECT_ROOT, get_settings
from utils.data import load_images
from utils.metrics import predict_classes, scores
from utils.models import BACKBONES, MODELS, build_cnn, build_transfer_model

pytestmark = pytest.mark.slow
NOTEBOOK = PROJECT_ROOT / "notebooks" / "11_deploy.ipynb"


def raw_images(size: int = 32, n: int = 6) -> np.ndarray:
    """Raw 0-255 images: random pixels, plus an all-black and an all-white one."""
    images = np.random.default_rng(1).uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    images[0], images[1] = 0, 255
    return images


def build(name: str, size: int = 32, seed: int = 0) -> keras.Model:
    """A course model with random weights, scaled like a trained one on :func:`raw_images`. MobileNet's signal fades
    to ~1e-21 with random weights (every image would get p = 0.5, and parity would be void): its BatchNorm layers
    get the statistics of those images. Every head is scaled so that its logits spread by about 2 (with random
    weights VGG16's and DenseNet121's spread by 0.02, all probabilities within 0.02 of 0.5; ResNet50's by 10).
    Both from 64 images: MobileNet's last stages are 1 x 1 at 32 px, and statistics of six values per channel left
    it so ill-conditioned that ONNX Runtime's float32 kernels differed from Keras by 2e-4 on one CPU (1.9e-5 so)."""
    keras.utils.set_random_seed(seed)
    model = build_cnn(2, size) if name == "cnn" else build_transfer_model(BACKBONES[name], 2, size, None)
    calibration = raw_images(size, n=64)
    if name.startswith("mobilenet"):
        norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        for layer in norms:
            layer.momentum = 0.0  # one training-mode pass stores the batch's own statistics
        model(calibration, training=True)
        for layer in norms:
            layer.momentum = 0.99
    head = model.get_layer("head_output")
    pooled = keras.ops.convert_to_numpy(keras.Model(model.input, head.input)(calibration))
    kernel = keras.ops.convert_to_numpy(head.kernel)
    head.kernel.assign(kernel * 2 / (pooled @ kernel).std())
    return model


def test_notebook_cells_saved_in_deploy_are_the_module_code():
    module = {n.name: ast.dump(n) for n in ast.parse((PROJECT_ROOT / "utils" / "deploy.py").read_text()).body
              if isinstance(n, ast.FunctionDef)}  # fmt: skip
    saved = {}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type == "code" and cell.source.startswith("# saved in utils/deploy.py"):
            saved |= {n.name: ast.dump(n) for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef)}
    expected = {"export_savedmodel", "export_litert", "export_onnx", "export_model", "litert_predictor", "load_predictor",
                "parity_table", "read_xray", "explain_xray", "build_demo"}  # fmt: skip
    assert set(saved) == expected
    assert [name for name in saved if saved[name] != module[name]] == []


@pytest.fixture(scope="module")
def exported_cnn(tmp_path_factory):
    """A random-weights cnn exported in every format: ``(model, files)``."""
    model = build("cnn")
    return model, deploy.export_model(model, tmp_path_factory.mktemp("cnn"), ("savedmodel", "litert", "onnx"))


@pytest.mark.parametrize("name", MODELS)
def test_every_course_model_exports_with_parity(name, tmp_path, request):
    """Every model through SavedModel -> ONNX; the cnn also to LiteRT (float32 and int8) and checked in every format
    (the big backbones only in ONNX, which is converted from their SavedModel: loading that again costs time)."""
    if name == "cnn":
        model, files = request.getfixturevalue("exported_cnn")
        assert set(files) == {"savedmodel", "litert", "litert_int8", "onnx"}
    else:
        model = build(name)
        files = deploy.export_model(model, tmp_path, ("onnx",))
        assert set(files) == {"savedmodel", "onnx"} and (files["savedmodel"] / "saved_model.pb").is_file()
        files = {"onnx": files["onnx"]}
    import onnx

    graph = onnx.load(str(files["onnx"])).graph  # Normalization constants frozen, not extra inputs
    assert [i.name for i in graph.input] == ["image"]
    images = raw_images()
    table = deploy.parity_table(model, files, images, np.array([0, 1, 0, 1, 0, 1]), None)
    floats = table.drop(index=["keras", *(["litert_int8"] if "litert_int8" in files else [])])
    assert list(floats.index) == [f for f in files if f != "litert_int8"]
    assert (floats["max |dp|"] <= deploy.TOLERANCE).all(), floats
    assert list(floats["status"]) == ["ok"] * len(floats)
    assert (floats["MB"] > 0).all()
    probs = deploy.load_predictor(files["onnx"])(images)
    assert probs.shape == (6, 2) and probs.std(axis=0).max() > 0  # real, image-dependent outputs
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    if "litert_int8" in files:
        assert table.loc["litert_int8", "status"] == "reported"
        assert table.loc["litert_int8", "MB"] < table.loc["litert", "MB"] / 2  # int8 weights


def test_files_of_another_model_fail_parity(exported_cnn):
    model, files = exported_cnn
    images, other = raw_images(), build("cnn", seed=1)
    assert np.abs(other.predict(images, verbose=0) - model.predict(images, verbose=0)).max() > 1e-3
    table = deploy.parity_table(other, files, images, np.array([0, 1, 0, 1, 0, 1]), None)
    assert list(table["status"]) == ["reference", "FAIL", "FAIL", "reported", "FAIL"]
    assert (table.drop(index="keras")["max |dp|"] > deploy.TOLERANCE).all()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, synthetic_source):
    """A tiny trained cnn run (64 px, 1 epoch) on the session's synthetic images."""
    from utils.course.experiment import train_model
    from utils.course.manifest import prepare_dataset

    root = tmp_path_factory.mktemp("deploy")
    settings = get_settings("smoke").with_(dataset="synthetic", data_dir=root / "data", output_dir=root / "outputs",
                                           source=synthetic_source, image_size=64, epochs=1)  # fmt: skip
    prepare_dataset(settings, "synthetic")
    return train_model(settings, "cnn")


def test_cli_export_checks_the_run_and_writes_parity_json(trained_run, capsys):
    model_file = trained_run.path / "model.keras"
    before = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert main(["export", str(trained_run.path.parent)]) == 0  # the model folder stands for its LATEST run
    out = capsys.readouterr().out
    assert "onnx" in out and "FAIL" not in out
    result = json.loads((trained_run.path / "export" / "parity.json").read_text())
    formats = result["formats"]
    assert {k: v["status"] for k, v in formats.items()} == {"keras": "reference", "savedmodel": "ok", "litert": "ok",
                                                            "litert_int8": "reported", "onnx": "ok"}  # fmt: skip
    assert all(formats[f]["max |dp|"] <= 1e-4 for f in ("savedmodel", "litert", "onnx"))
    y, probs = trained_run.arrays("test")  # the Keras row scores the run's own test split at its threshold
    assert result["test_images"] == len(y) and result["threshold"] == trained_run.threshold
    assert formats["keras"]["accuracy"] == scores(y, probs, trained_run.threshold)["accuracy"]
    assert (trained_run.path / result["files"]["onnx"]).is_file()
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == before


def test_cli_export_fails_in_one_line_when_a_file_differs(trained_run, tmp_path, monkeypatch, capsys):
    wrong = deploy.export_savedmodel(build("cnn", size=64, seed=7), tmp_path)  # another model's SavedModel
    real = deploy.export_onnx
    monkeypatch.setattr(deploy, "export_onnx", lambda savedmodel, folder: real(wrong, folder))
    assert main(["export", str(trained_run.path), "--formats", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: onnx differ") and "\n" not in err
    formats = json.loads((trained_run.path / "export" / "parity.json").read_text())["formats"]
    assert formats["savedmodel"]["status"] == "ok" and formats["onnx"]["status"] == "FAIL"
    assert formats["onnx"]["max |dp|"] > 1e-4


def test_cli_export_of_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(trained_run):
    """The demo served in-process on 127.0.0.1, with a gradio_client connected to it."""
    from gradio_client import Client

    app = deploy.build_demo(trained_run)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
               max_file_size=deploy.MAX_UPLOAD)  # fmt: skip
    yield Client(app.local_url, verbose=False)
    app.close()


def test_demo_predicts_probabilities_decision_and_overlay(demo, trained_run, tmp_path):
    from gradio_client import handle_file

    path = trained_run.manifest().query("split == 'test'")["path"].iloc[0]
    colour = tmp_path / "colour.jpg"  # the same X-ray as a colour JPEG of another size
    Image.open(path).convert("RGB").resize((300, 240)).save(colour, quality=95)
    for upload in (path, colour):
        label, overlay_file, decision = demo.predict(handle_file(str(upload)), api_name="/predict")
        probs = trained_run.load_model().predict(load_images([str(upload)], 64), verbose=0)[0]
        got = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert set(got) == set(trained_run.class_names)
        np.testing.assert_allclose([got[c] for c in trained_run.class_names], probs, atol=1e-5)
        decided = trained_run.class_names[int(predict_classes(probs[None], trained_run.threshold)[0])]
        assert decision.startswith(f"**Decision: {decided}**") and f"{trained_run.threshold:.3f}" in decision
        with Image.open(overlay_file) as image:
            assert image.size == (320, 320) and image.mode == "RGB"  # 64 px, each pixel as a 5 x 5 block


@pytest.mark.parametrize("kind, message", [("text", "not an image"), ("none", "Upload a chest X-ray first"),
                                           ("huge", "million pixels"), ("truncated", "could not be decoded")])  # fmt: skip
def test_demo_refuses_bad_uploads_with_a_clear_message(demo, tmp_path, kind, message):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    path = tmp_path / {"text": "notes.txt", "none": "", "huge": "huge.png", "truncated": "cut.png"}[kind]
    if kind == "text":
        path.write_text("not an X-ray")
    elif kind == "huge":  # 56 million pixels, a small file (PNG compresses the black)
        Image.new("L", (8000, 7000)).save(path)
    elif kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(AppError, match=message):
        demo.predict(None if kind == "none" else handle_file(str(path)), api_name="/predict")
