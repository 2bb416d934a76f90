"""The model registry: a small custom CNN and ImageNet backbones from ``keras.applications``.

Every model is one flat functional ``keras.Model`` that takes raw images, float32 in [0, 255], shape
(B, S, S, 3):

``input -> preprocess_* layers -> backbone layers -> head_pool -> head_dropout -> head_output``

- **Preprocessing lives inside the model**, built from serialisable Keras layers (``Rescaling``,
  ``Normalization``, ``keras.ops.flip``) equal to each backbone's ``preprocess_input``, so a saved
  ``model.keras`` loads with plain ``keras.models.load_model`` in any process and takes raw images.
- **Flat graph**: the backbone is built with ``input_tensor=`` so its layers sit directly in the model (a
  nested backbone Model breaks Grad-CAM and fine-tuning, keras#16123, tf#44462). Backbone layers are all layers
  that are neither the input, nor ``preprocess_*``, nor ``head_*`` (:func:`backbone_layer_names`).
- **Weights** (``CXR_WEIGHTS`` or the ``weights`` argument): ``imagenet`` | ``none`` | ``auto`` | a file
  path. ``imagenet`` uses the Keras cache (``$KERAS_HOME/models/``, default ``~/.keras/models/``) and fails
  within seconds, saying what to do, when the file is neither cached nor downloadable. ``auto`` falls back to
  random weights with a loud banner, and ``weights_used`` says so. A cached file is passed to Keras as an
  explicit path, so Keras never re-downloads or deletes it (VGG16/ResNet50/DenseNet check an md5 and delete a
  cached file that does not match when the re-download fails).
- **MobileNet sizes**: Keras publishes MobileNet weights for 128/160/192/224 px (V2 also 96). Other sizes use
  the 224 px file (as Keras does); a missing size-specific file falls back to a cached 224 px one. Either case is
  recorded in ``BuiltModel.weights_note``.
- **Random weights** (``none``, the custom CNN, ``auto`` offline): BatchNormalization momentum is lowered to
  0.9 (Keras: 0.99) so the moving statistics follow the fast-changing activations of a network trained from
  scratch; :mod:`utils.training` also re-estimates them before each validation. Without that, MobileNet trained
  from random weights predicted a single class on validation (measured).
- **EfficientNet** brings its own Rescaling/Normalization layers. Keras adds its ImageNet variance correction
  only for ``weights="imagenet"``, so an EfficientNet weights *file path* gives slightly different input
  scaling; the cached ImageNet file is therefore loaded through Keras itself (md5-checked).
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

WEIGHT_CHOICES = ("imagenet", "none", "auto")
RANDOM_INIT_BN_MOMENTUM = 0.9
WEIGHTS_HOST = ("storage.googleapis.com", 443)  # where keras.applications downloads from
NETWORK_PROBE_TIMEOUT_S = 3.0
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """The requested weights cannot be used; the message says what to do."""


class WeightsUnavailableError(WeightsError):
    """ImageNet weights are neither in the Keras cache nor downloadable."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ModelInfo:
    """One registry entry: how to build a backbone and preprocess its input."""

    name: str
    description: str
    application: str | None  # keras.applications constructor name; None for the custom CNN
    preprocessing: (
        str  # "unit" (x/255), "tf" ([-1, 1]), "caffe" (BGR - mean), "torch" (ImageNet z-score), "builtin"
    )
    min_size: int = 32
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights_file: Callable[[int, dict[str, Any]], str] | None = None  # Keras cache name for (size, kwargs)
    imagenet_sizes: tuple[int, ...] | None = None  # sizes with their own ImageNet file (MobileNets)
    course: bool = False  # one of the five models the notebooks compare

    @property
    def is_transfer(self) -> bool:
        return self.application is not None

    @property
    def preprocess_input(self) -> Callable[[Any], Any] | None:
        """The Keras ``preprocess_input`` the in-model preprocessing reproduces (None for the custom CNN)."""
        if self.application is None:
            return None
        module = {
            "VGG16": "vgg16",
            "ResNet50": "resnet50",
            "MobileNet": "mobilenet",
            "MobileNetV2": "mobilenet_v2",
            "DenseNet121": "densenet",
            "DenseNet201": "densenet",
            "EfficientNetB0": "efficientnet",
        }[self.application]
        return getattr(keras.applications, module).preprocess_input


def _mobilenet_file(size: int, kwargs: dict[str, Any]) -> str:
    alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[float(kwargs.get("alpha", 1.0))]
    return f"mobilenet_{alpha_text}_{size}_tf_no_top.h5"


def _mobilenetv2_file(size: int, kwargs: dict[str, Any]) -> str:
    return (
        f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(kwargs.get('alpha', 1.0))}_{size}_no_top.h5"
    )


def _fixed(file_name: str) -> Callable[[int, dict[str, Any]], str]:
    return lambda size, kwargs: file_name


MODEL_REGISTRY: dict[str, ModelInfo] = {
    "cnn": ModelInfo(
        "cnn",
        "Custom CNN: 4 blocks of 2 x (conv 3x3 - BatchNorm - ReLU), max-pooling between blocks; trained from scratch",
        None,
        "unit",
        course=True,
    ),
    "vgg16": ModelInfo(
        "vgg16",
        "VGG16 (2014): 13 plain 3x3 conv layers, 14.7 M backbone parameters",
        "VGG16",
        "caffe",
        weights_file=_fixed("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        course=True,
    ),
    "resnet50": ModelInfo(
        "resnet50",
        "ResNet50 (2015): residual bottleneck blocks, 23.6 M backbone parameters",
        "ResNet50",
        "caffe",
        weights_file=_fixed("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        course=True,
    ),
    "mobilenet": ModelInfo(
        "mobilenet",
        "MobileNet v1 (2017), width 1.0: depthwise-separable convolutions, 3.2 M backbone parameters",
        "MobileNet",
        "tf",
        kwargs={"alpha": 1.0},
        weights_file=_mobilenet_file,
        imagenet_sizes=(128, 160, 192, 224),
        course=True,
    ),
    "mobilenet_025": ModelInfo(
        "mobilenet_025",
        "MobileNet v1, width 0.25: a quarter of the filters, 0.2 M backbone parameters",
        "MobileNet",
        "tf",
        kwargs={"alpha": 0.25},
        weights_file=_mobilenet_file,
        imagenet_sizes=(128, 160, 192, 224),
    ),
    "densenet121": ModelInfo(
        "densenet121",
        "DenseNet121 (2017, CheXNet's backbone): densely connected blocks, 7.0 M backbone parameters",
        "DenseNet121",
        "torch",
        weights_file=_fixed("densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        course=True,
    ),
    "densenet201": ModelInfo(
        "densenet201",
        "DenseNet201: deeper DenseNet, 18.3 M backbone parameters",
        "DenseNet201",
        "torch",
        weights_file=_fixed("densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ),
    "mobilenetv2": ModelInfo(
        "mobilenetv2",
        "MobileNetV2 (2018): inverted residual blocks, 2.3 M backbone parameters",
        "MobileNetV2",
        "tf",
        kwargs={"alpha": 1.0},
        weights_file=_mobilenetv2_file,
        imagenet_sizes=(96, 128, 160, 192, 224),
    ),
    "efficientnetb0": ModelInfo(
        "efficientnetb0",
        "EfficientNetB0 (2019): compound-scaled MBConv blocks, 4.0 M backbone parameters; preprocessing built in",
        "EfficientNetB0",
        "builtin",
        weights_file=_fixed("efficientnetb0_notop.h5"),
    ),
}
COURSE_MODELS = tuple(name for name, info in MODEL_REGISTRY.items() if info.course)


@dataclass
class BuiltModel:
    """A built model and what it was built from (``weights_used`` is what really happened)."""

    model: keras.Model
    name: str
    weights_requested: str
    weights_used: str  # "imagenet", "none", "random (ImageNet weights unavailable: ...)" or a file path
    is_transfer: bool
    backbone_layer_names: tuple[str, ...]
    image_size: int
    num_classes: int
    weights_note: str = ""
    description: str = ""

    @property
    def pretrained(self) -> bool:
        """True when the backbone holds learned weights (ImageNet or a file), False for random weights."""
        return self.weights_used not in ("none",) and not self.weights_used.startswith("random")

    def backbone_layers(self) -> list[keras.layers.Layer]:
        return [self.model.get_layer(name) for name in self.backbone_layer_names]


# ------------------------------------------------------------------------------------------------ weights
def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weights: ``$KERAS_HOME/models``, default ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = Path("~").expanduser()
        home = str((base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras")
    return Path(home).expanduser() / "models"


def _network_problem(timeout: float = NETWORK_PROBE_TIMEOUT_S) -> str | None:
    """None when the Keras weights host answers within ``timeout`` seconds, else the reason (DNS included)."""
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection(WEIGHTS_HOST, timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(f"{type(err).__name__}: {err}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return result[0] if result else f"no answer from {WEIGHTS_HOST[0]} within {timeout:.0f} s"


def _unavailable_message(info: ModelInfo, file_name: str, cache: Path, problem: str) -> str:
    return (
        f"ImageNet weights for {info.name} are not available: {file_name} is not in the Keras cache "
        f"{cache}/ and cannot be downloaded ({problem}). Keras caches weights in $KERAS_HOME/models/ "
        f"(default ~/.keras/models/). Fix it with one of: connect to the internet; copy {file_name} into "
        f"{cache}/; use a weights file with CXR_WEIGHTS=/path/to/file.h5 (Keras 'no top' weights of this "
        "architecture); CXR_WEIGHTS=auto (ImageNet when available, else random weights, clearly marked); "
        "CXR_WEIGHTS=none (random weights)."
    )


def _imagenet_source(info: ModelInfo, image_size: int, kwargs: dict[str, Any]) -> tuple[str, str]:
    """``(weights argument for Keras, note)`` for ImageNet weights; raises WeightsUnavailableError fast."""
    assert info.weights_file is not None
    sizes = info.imagenet_sizes
    size = image_size if sizes is None or image_size in sizes else 224
    wanted = info.weights_file(size, kwargs)
    note = (
        ""
        if size == image_size or sizes is None
        else f"ImageNet weights of the {size} px model at {image_size} px"
    )
    cache = keras_cache_dir()
    if (cache / wanted).is_file():
        # EfficientNet adds a rescaling layer only for weights="imagenet": let Keras load (and md5-check) it.
        return ("imagenet" if info.preprocessing == "builtin" else str(cache / wanted)), note
    problem = _network_problem()
    if problem is None:
        return "imagenet", note  # Keras downloads it into its cache
    fallback = info.weights_file(224, kwargs)
    if sizes is not None and (cache / fallback).is_file():
        return str(
            cache / fallback
        ), f"ImageNet weights of the 224 px model at {image_size} px ({wanted} missing)"
    reason = f"{wanted} not in {cache}/ and no network ({problem})"
    raise WeightsUnavailableError(_unavailable_message(info, wanted, cache, problem), reason)


def random_weights_banner(name: str, reason: str) -> str:
    """The loud message printed whenever ImageNet weights were wanted but random weights are used."""
    line = "!" * 100
    return (
        f"{line}\n!! RANDOM WEIGHTS: ImageNet weights unavailable for {name}; its backbone starts from random "
        f"weights.\n!! Results are not transfer learning. Reason: {reason}\n!! Set CXR_WEIGHTS=/path/to/file.h5 or "
        f"put the file in $KERAS_HOME/models/ to use real ImageNet weights.\n{line}"
    )


def _normalise_weights(weights: str | os.PathLike | None) -> str:
    if weights is None:
        return "auto"
    text = str(weights).strip()
    return text.lower() if text.lower() in WEIGHT_CHOICES else text


# ------------------------------------------------------------------------------------------------- layers
def _preprocessing(kind: str, x: Any) -> Any:
    """Keras layers equal to each backbone's ``preprocess_input`` (float32 even under mixed precision)."""
    if kind == "unit":
        return layers.Rescaling(1.0 / 255.0, name="preprocess_rescale", dtype="float32")(x)
    if kind == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_rescale", dtype="float32")(x)
    if kind == "caffe":  # RGB -> BGR, then subtract the ImageNet BGR mean (no scaling)
        x = keras.ops.flip(x, axis=-1)
        return layers.Normalization(
            mean=list(CAFFE_MEAN_BGR), variance=[1.0, 1.0, 1.0], name="preprocess_caffe", dtype="float32"
        )(x)
    if kind == "torch":  # x / 255, then the ImageNet channel z-score
        x = layers.Rescaling(1.0 / 255.0, name="preprocess_rescale", dtype="float32")(x)
        return layers.Normalization(
            mean=list(TORCH_MEAN),
            variance=[s * s for s in TORCH_STD],
            name="preprocess_normalize",
            dtype="float32",
        )(x)
    if kind == "builtin":
        return x
    raise ValueError(f"Unknown preprocessing {kind!r}.")


def _custom_cnn(x: Any, filters: tuple[int, ...] = (32, 64, 128, 256)) -> Any:
    """Conv-BN-ReLU blocks; the last block is not pooled so ``head_pool`` sees the last conv feature map."""
    for block, width in enumerate(filters, start=1):
        for conv in (1, 2):
            prefix = f"cnn_block{block}_{conv}"
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
            x = layers.BatchNormalization(momentum=RANDOM_INIT_BN_MOMENTUM, name=f"{prefix}_bn")(x)
            x = layers.ReLU(name=f"{prefix}_relu")(x)
        if block < len(filters):
            x = layers.MaxPooling2D(name=f"cnn_block{block}_pool")(x)
    return x


def _head(features: Any, num_classes: int, dropout: float, seed: int | None) -> Any:
    x = layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="head_output")(x)


def backbone_layer_names(model: keras.Model) -> tuple[str, ...]:
    """Names of the backbone layers: every layer except the input, ``preprocess_*`` and ``head_*``."""
    return tuple(
        layer.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and not layer.name.startswith(("preprocess_", "head_"))
    )


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; returns how many were changed."""
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = momentum
    return len(bns)


# -------------------------------------------------------------------------------------------------- build
def resolve_name(name: str, alpha: float | None = None) -> tuple[ModelInfo, dict[str, Any], str]:
    """``(registry entry, constructor kwargs, canonical run name)``; ``alpha`` widens MobileNet choices."""
    key = name.strip().lower()
    if key not in MODEL_REGISTRY:
        raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(MODEL_REGISTRY)}.")
    info = MODEL_REGISTRY[key]
    kwargs = dict(info.kwargs)
    if alpha is not None:
        if "alpha" not in kwargs:
            raise ValueError(f"alpha applies to MobileNet models only, not {key!r}.")
        kwargs["alpha"] = float(alpha)
    canonical = key
    if info.application == "MobileNet" and kwargs["alpha"] != 1.0:
        canonical = f"mobilenet_{round(kwargs['alpha'] * 100):03d}"
    elif info.application == "MobileNetV2" and kwargs["alpha"] != 1.0:
        canonical = f"mobilenetv2_{round(kwargs['alpha'] * 100):03d}"
    return info, kwargs, canonical


def _assemble(
    info: ModelInfo,
    kwargs: dict[str, Any],
    name: str,
    num_classes: int,
    image_size: int,
    keras_weights: str | None,
    dropout: float,
    seed: int | None,
) -> keras.Model:
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = _preprocessing(info.preprocessing, inputs)
    if info.application is None:
        features = _custom_cnn(x)
    else:
        constructor = getattr(keras.applications, info.application)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input_shape.*")  # MobileNet's size warning: see note
            backbone = constructor(input_tensor=x, include_top=False, weights=keras_weights, **kwargs)
        features = backbone.output
    return keras.Model(inputs, _head(features, num_classes, dropout, seed), name=name)


def build_model(
    name: str,
    num_classes: int,
    image_size: int,
    weights: str | os.PathLike | None = "auto",
    *,
    dropout: float = 0.3,
    seed: int | None = None,
    alpha: float | None = None,
    verbose: bool = True,
) -> BuiltModel:
    """Build registry model ``name`` for ``num_classes`` classes and ``image_size`` px raw 0-255 images.

    ``weights``: ``"imagenet"`` (fails fast with instructions when unavailable), ``"none"`` (random),
    ``"auto"`` (ImageNet, else random with a printed banner) or a weights file path. The custom CNN has no
    pretrained weights: ``imagenet``/``auto``/``none`` all give random weights there (``weights_used="none"``)
    and a file path loads a file saved with ``model.save_weights``. ``seed`` makes the initial weights and the
    dropout repeatable.
    """
    info, kwargs, canonical = resolve_name(name, alpha)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (binary = 2-class softmax), got {num_classes}.")
    if image_size < info.min_size:
        raise ValueError(f"{canonical} needs images of at least {info.min_size} px, got {image_size}.")
    requested = _normalise_weights(weights)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    path = None if requested in WEIGHT_CHOICES else Path(requested).expanduser()
    if path is not None and not path.is_file():
        raise WeightsError(
            f"Weights file {path} does not exist. Set CXR_WEIGHTS (or weights=) to an existing .h5 file, or to "
            "imagenet, auto or none."
        )

    if info.application is None:
        model = _assemble(info, kwargs, canonical, num_classes, image_size, None, dropout, seed)
        used = "none"
        if path is not None:
            _load_file(model, path, canonical)
            used = str(path)
        elif requested == "imagenet" and verbose:
            print(f"Note: {canonical} is trained from scratch; there are no ImageNet weights for it.")
        return _finish(model, info, canonical, requested, used, image_size, num_classes, "")

    keras_weights, used, note, reason = _choose_weights(info, kwargs, image_size, requested, path)
    try:
        model = _assemble(info, kwargs, canonical, num_classes, image_size, keras_weights, dropout, seed)
    except Exception as err:  # a failed download, or a file that does not fit the architecture
        if keras_weights is None:
            raise
        problem = f"{type(err).__name__}: {str(err)[:300]}"
        if requested == "auto":
            reason, note = problem, ""
            model = _assemble(info, kwargs, canonical, num_classes, image_size, None, dropout, seed)
        elif keras_weights == "imagenet":
            cache = keras_cache_dir()
            wanted = info.weights_file(image_size, kwargs) if info.weights_file else "?"
            raise WeightsUnavailableError(
                _unavailable_message(info, wanted, cache, problem), problem
            ) from err
        else:
            raise WeightsError(
                f"Could not load weights {keras_weights!r} into {canonical}: {problem}. A weights file must hold "
                f"the Keras 'no top' weights of {info.application} (alpha={kwargs.get('alpha', '-')})."
            ) from err
    if reason:
        used = f"random (ImageNet weights unavailable: {reason})"
        if verbose:
            print(random_weights_banner(canonical, reason))
    return _finish(model, info, canonical, requested, used, image_size, num_classes, note)


def _choose_weights(
    info: ModelInfo, kwargs: dict[str, Any], image_size: int, requested: str, path: Path | None
) -> tuple[str | None, str, str, str]:
    """``(weights argument for Keras, weights_used, note, reason for random weights or "")``."""
    if path is not None:
        return str(path), str(path), "", ""
    if requested == "none":
        return None, "none", "", ""
    try:
        keras_weights, note = _imagenet_source(info, image_size, kwargs)
        return keras_weights, "imagenet", note, ""
    except WeightsUnavailableError as err:
        if requested == "imagenet":
            raise
        return None, "", "", err.reason


def _load_file(model: keras.Model, path: Path, name: str) -> None:
    try:
        model.load_weights(str(path))
    except Exception as err:
        raise WeightsError(
            f"Could not load {path} into {name}: {type(err).__name__}: {err}. Use a file written by "
            "model.save_weights() for this architecture."
        ) from err


def _finish(
    model: keras.Model,
    info: ModelInfo,
    name: str,
    requested: str,
    used: str,
    image_size: int,
    num_classes: int,
    note: str,
) -> BuiltModel:
    built = BuiltModel(
        model,
        name,
        requested,
        used,
        info.is_transfer,
        backbone_layer_names(model),
        image_size,
        num_classes,
        note,
        info.description,
    )
    if not built.pretrained:
        set_batchnorm_momentum(model, RANDOM_INIT_BN_MOMENTUM)
    return built


# ------------------------------------------------------------------------------------------------ reports
def count_params(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts (weights, not layers)."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(sum(np.prod(w.shape) for w in model.weights))
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulate operations of one forward pass of one image through the convolutions and dense
    layers (the usual "FLOPs / 2" figure; BatchNorm, activations and pooling are left out as negligible)."""
    total = 0
    for layer in model.layers:
        kernels = [getattr(layer, name, None) for name in ("kernel", "depthwise_kernel", "pointwise_kernel")]
        kernels = [k for k in kernels if k is not None and len(k.shape) >= 2]
        if not kernels:
            continue
        try:
            positions = int(np.prod(layer.output.shape[1:-1]))  # output pixels (1 for a Dense on vectors)
        except (AttributeError, ValueError):
            continue  # a layer that was never called in this graph
        total += positions * sum(int(np.prod(k.shape)) for k in kernels)
    return total


def describe_model(built: BuiltModel) -> dict[str, Any]:
    """A short summary for notebooks: parameters, layers, input size and the weights really used."""
    params = count_params(built.model)
    return {
        "name": built.name,
        "description": built.description,
        "params_total": params["total"],
        "params_trainable": params["trainable"],
        "gmacs_per_image": round(count_macs(built.model) / 1e9, 3),
        "layers": len(built.model.layers),
        "backbone_layers": len(built.backbone_layer_names),
        "input_size": built.image_size,
        "num_classes": built.num_classes,
        "weights_requested": built.weights_requested,
        "weights_used": built.weights_used,
        "weights_note": built.weights_note,
    }
