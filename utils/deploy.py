"""Deployment (notebook 11): export a trained model to SavedModel, LiteRT and ONNX, check that every file gives the
Keras model's probabilities, and serve a Gradio demo with the decision and a Grad-CAM overlay.

Every exported file takes what ``model.keras`` takes, raw 0-255 images ``float32 (B, S, S, 3)``, and returns the class
probabilities: the scaling lives inside the model, so no runtime needs the course's code. ``python -m utils export
RUN`` and ``python -m utils demo RUN`` call these functions. The runtimes (tf2onnx, onnxruntime, ai-edge-litert,
gradio) are imported where they are used, so ``import utils.deploy`` needs none of them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
import pandas as pd

from .data import load_images
from .gradcam import gradcam_heatmap, overlay
from .metrics import predict_classes, scores

FORMATS = ("savedmodel", "litert", "onnx")
TOLERANCE = 1e-4  # the largest difference of a class probability a float32 file may show against Keras
MAX_PIXELS = 50_000_000  # a bigger upload is refused (a large digital X-ray has about 9 million pixels)
MAX_UPLOAD = "30mb"
DISCLAIMER = ("**Educational demo, not a medical device.** It was trained on a small course dataset; it must not be "
              "used to diagnose, treat or triage anyone.")  # fmt: skip


class Run(Protocol):
    """What the demo reads of a run: :class:`utils.course.runs.Run` (the run folders are the command line's
    business) has all of it."""

    path: Path
    config: dict
    class_names: list[str]
    threshold: float | None
    title: str

    def load_model(self) -> keras.Model: ...


# saved in utils/deploy.py
def export_savedmodel(model: keras.Model, folder: Path) -> Path:
    """A TensorFlow SavedModel; its ``serve`` signature maps raw 0-255 images to class probabilities."""
    path = Path(folder) / "savedmodel"
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


# saved in utils/deploy.py
def export_litert(model: keras.Model, folder: Path) -> dict[str, Path]:
    """Two LiteRT (TFLite) files: float32, and dynamic-range quantised (int8 weights, about a quarter the size)."""
    import tensorflow as tf

    paths = {"litert": Path(folder) / "model.tflite", "litert_int8": Path(folder) / "model_int8.tflite"}
    model.export(str(paths["litert"]), format="litert", verbose=False)
    model.export(str(paths["litert_int8"]), format="litert", verbose=False, optimizations=[tf.lite.Optimize.DEFAULT])
    return paths


# saved in utils/deploy.py
def export_onnx(savedmodel: Path, folder: Path) -> Path:
    """ONNX (opset 17) converted from the SavedModel by tf2onnx. Keras's own ``format="onnx"`` turns the constants
    of ``Normalization`` layers (VGG16, ResNet50, DenseNet121) into extra graph inputs; the SavedModel route
    freezes them into the graph."""
    import tf2onnx
    from tf2onnx import tf_loader

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    graph, inputs, outputs, _, renames = tf_loader.from_saved_model(
        str(savedmodel), None, None, "serve", ["serve"], return_initialized_tables=True, return_tensors_to_rename=True
    )
    path = Path(folder) / "model.onnx"
    tf2onnx.convert.from_graph_def(graph, input_names=inputs, output_names=outputs, opset=17,
                                   tensors_to_rename=renames, output_path=str(path))  # fmt: skip
    return path


# saved in utils/deploy.py
def export_model(model: keras.Model, folder: Path, formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    """Export ``model`` into ``folder`` in ``formats``; ``{name: file}``. ONNX is converted from the SavedModel."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    files = {}
    if "savedmodel" in formats or "onnx" in formats:
        files["savedmodel"] = export_savedmodel(model, folder)
    if "litert" in formats:
        files |= export_litert(model, folder)
    if "onnx" in formats:
        files["onnx"] = export_onnx(files["savedmodel"], folder)
    return files


# saved in utils/deploy.py
def litert_predictor(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A LiteRT interpreter as a function images -> probabilities (``tf.lite.Interpreter`` is deprecated)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    shape = [None]

    def run(images: np.ndarray) -> np.ndarray:
        if shape[0] != images.shape:  # the batch size changed: new buffers
            interpreter.resize_tensor_input(inp["index"], images.shape)
            interpreter.allocate_tensors()
            shape[0] = images.shape
        interpreter.set_tensor(inp["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return run


# saved in utils/deploy.py
def load_predictor(path: Path, batch_size: int = 32) -> Callable[[np.ndarray], np.ndarray]:
    """A function raw images ``float32 (N, S, S, 3)`` -> probabilities ``(N, C)`` for an exported file, run by its own
    runtime: ONNX Runtime (.onnx), LiteRT (.tflite) or TensorFlow (a SavedModel folder); in batches."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        run = lambda x: session.run(None, {name: x})[0]  # noqa: E731
    elif path.suffix == ".tflite":
        run = litert_predictor(path)
    else:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        run = lambda x: loaded.serve(x).numpy()  # noqa: E731
    return lambda images: np.concatenate([run(np.ascontiguousarray(images[i : i + batch_size], np.float32))
                                          for i in range(0, len(images), batch_size)])  # fmt: skip


# saved in utils/deploy.py
def parity_table(model: keras.Model, files: dict[str, Path], images: np.ndarray, y_true: np.ndarray,
                 threshold: float | None) -> pd.DataFrame:  # fmt: skip
    """Each file against the Keras model on the same images: its size, the largest difference of a class
    probability, and accuracy and AUC at the run's decision rule (with their change). A float32 file passes
    (``ok``) when the difference is at most TOLERANCE; a quantised one (``_int8``) is ``reported``, not judged."""
    reference = model.predict(images, verbose=0)
    base = scores(y_true, reference, threshold)
    rows = [{"format": "keras", "MB": np.nan, "max |dp|": 0.0, "accuracy": base["accuracy"], "AUC": base["AUC"],
             "d accuracy": 0.0, "d AUC": 0.0, "status": "reference"}]  # fmt: skip
    for name, path in files.items():
        probs = load_predictor(path)(images)
        s, diff = scores(y_true, probs, threshold), float(np.abs(probs - reference).max())
        size = sum(f.stat().st_size for f in Path(path).rglob("*")) if Path(path).is_dir() else Path(path).stat().st_size
        status = "reported" if name.endswith("_int8") else "ok" if diff <= TOLERANCE else "FAIL"
        rows.append({"format": name, "MB": round(size / 1e6, 2), "max |dp|": diff, "accuracy": s["accuracy"],
                     "AUC": s["AUC"], "d accuracy": round(s["accuracy"] - base["accuracy"], 4),
                     "d AUC": round(s["AUC"] - base["AUC"], 4), "status": status})  # fmt: skip
    return pd.DataFrame(rows).set_index("format")


# saved in utils/deploy.py
def read_xray(path: str | None, image_size: int) -> np.ndarray:
    """An uploaded file as the model takes it, ``(1, S, S, 3)``, decoded like the training images; anything else
    (no file, not an image, too many pixels) raises a ``gr.Error`` whose message the page shows."""
    import gradio as gr
    from PIL import Image

    if not path:
        raise gr.Error("Upload a chest X-ray first (JPEG or PNG).")
    try:
        with Image.open(path) as image:
            kind, pixels = image.format, image.width * image.height
    except (OSError, Image.DecompressionBombError):
        kind, pixels = None, 0
    if kind not in ("JPEG", "PNG"):  # what the training pipeline decodes (utils/data.py)
        raise gr.Error("This file is not an image the demo can read: upload a chest X-ray as JPEG or PNG.")
    if pixels > MAX_PIXELS:
        raise gr.Error(f"The image has {pixels / 1e6:.0f} million pixels; the demo takes at most "
                       f"{MAX_PIXELS / 1e6:.0f} million: make it smaller.")  # fmt: skip
    try:
        return load_images([path], image_size)
    except Exception:  # e.g. a truncated file: TensorFlow cannot decode it
        raise gr.Error("The image could not be decoded (a damaged file?): try another one.") from None


# saved in utils/deploy.py
def explain_xray(model: keras.Model, run: Run, image: np.ndarray) -> tuple[dict[str, float], np.ndarray, str]:
    """Class probabilities, the Grad-CAM overlay of the decided class (enlarged to about 320 px), and the decision
    at the run's threshold (chosen on validation; the most probable class when there is none, as for 3 classes)."""
    probs = keras.ops.convert_to_numpy(model(image, training=False))
    decided = int(predict_classes(probs, run.threshold)[0])
    heatmap = gradcam_heatmap(model, image, np.array([decided]), run.config["gradcam_layer"])
    if run.threshold is None:
        rule = "the most probable class"
    else:
        rule = f"p({run.class_names[1]}) {'>=' if decided else '<'} {run.threshold:.3f}, the threshold chosen on validation"
    labels = {c: float(p) for c, p in zip(run.class_names, probs[0], strict=True)}
    zoom = max(1, 320 // len(heatmap[0]))  # pixel blocks: shown at about 320 px, at the model's own resolution
    shown = overlay(image[0], heatmap[0]).repeat(zoom, axis=0).repeat(zoom, axis=1)
    return labels, shown, f"**Decision: {run.class_names[decided]}** ({rule})"


# saved in utils/deploy.py
def build_demo(run: Run):
    """The Gradio page: upload an X-ray; see the probabilities, the decision and where the model looked."""
    import gradio as gr

    model, size = run.load_model(), int(run.config["image_size"])

    def predict(upload: dict | None) -> tuple[dict[str, float], np.ndarray, str]:
        # preprocess=False: the upload arrives as a file record, so read_xray can refuse non-images itself
        return explain_xray(model, run, read_xray((upload or {}).get("path"), size))

    with gr.Blocks(title="Chest X-ray classifier (educational demo)", analytics_enabled=False) as demo:
        gr.Markdown(f"# Chest X-ray classifier\n**Model:** {run.title}, {size} px input; weights: "
                    f"{run.config['weights_used']}; run `{run.path.name}`.\n\n{DISCLAIMER}")  # fmt: skip
        with gr.Row():
            with gr.Column():
                upload = gr.Image(type="filepath", label="Chest X-ray (JPEG or PNG, any size, grey or colour)", height=320)
                button = gr.Button("Classify", variant="primary")
            cam = gr.Image(label="Grad-CAM of the decided class", interactive=False, height=320)
            with gr.Column():
                decision = gr.Markdown()
                probabilities = gr.Label(label="Class probabilities", show_heading=False)  # the decision is above
        button.click(predict, upload, [probabilities, cam, decision], api_name="predict", preprocess=False)
    return demo
