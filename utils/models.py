"""The course's models (notebooks 04-08): a small CNN trained from scratch, and ImageNet backbones with a new head.

Every model is one flat functional ``keras.Model`` that takes raw images, ``float32`` in [0, 255], shape
``(B, S, S, 3)``, scales them itself (``preprocess_*`` layers), and ends in the same head: ``head_pool``
(global average pooling of the last feature map) -> ``head_dropout`` -> ``head_output`` (softmax). A saved
``model.keras`` therefore loads with plain ``keras.models.load_model`` and takes raw images anywhere.
The backbone is built with ``input_tensor=`` so that its layers sit in the model itself: fine-tuning and
Grad-CAM can reach any of them (a nested backbone hides them, keras#16123).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
from keras import layers


# saved in utils/models.py
def add_head(inputs: keras.KerasTensor, features: keras.KerasTensor, num_classes: int, name: str) -> keras.Model:
    """Global average pooling of the feature map, dropout, and one softmax probability per class."""
    x = layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = layers.Dropout(0.3, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="head_output")(x)
    return keras.Model(inputs, outputs, name=name)


# saved in utils/models.py
def build_cnn(num_classes: int, image_size: int, filters: tuple[int, ...] = (32, 64, 128, 256)) -> keras.Model:
    """Blocks of two 3x3 convolutions (each with BatchNorm and ReLU), max-pooling between blocks; the very first
    convolution moves two pixels at a time (a stride-2 stem), so every block works at half the input's size."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1 / 255, name="preprocess_rescale")(inputs)
    for block, width in enumerate(filters, start=1):
        for conv in (1, 2):
            stride = 2 if (block, conv) == (1, 1) else 1
            x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < len(filters):
            x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return add_head(inputs, x, num_classes, name="cnn")


# saved in utils/models.py
@dataclass(frozen=True)
class Backbone:
    """What the course needs to know about one ImageNet network of ``keras.applications``."""

    name: str
    application: Callable[..., keras.Model]  # e.g. keras.applications.VGG16
    preprocessing: str  # how its ImageNet weights expect pixels: "caffe", "tf" or "torch"
    feature_layer: str  # its last convolutional feature map: the head pools it, Grad-CAM explains it
    unfreeze_from: str  # fine-tuning trains this layer and every layer above it
    options: dict = field(default_factory=dict)  # more arguments for the application, e.g. {"alpha": 0.25}


# saved in utils/models.py
def preprocess(x: keras.KerasTensor, kind: str) -> keras.KerasTensor:
    """Layers that do what each backbone's ``preprocess_input`` does, inside the model."""
    if kind == "tf":  # [0, 255] -> [-1, 1]
        return layers.Rescaling(1 / 127.5, offset=-1, name="preprocess_tf")(x)
    if kind == "torch":  # [0, 1], then ImageNet's mean and standard deviation per channel
        x = layers.Rescaling(1 / 255, name="preprocess_rescale")(x)
        std = (0.229, 0.224, 0.225)
        return layers.Normalization(mean=(0.485, 0.456, 0.406), variance=[s * s for s in std], name="preprocess_torch")(x)
    if kind == "caffe":  # RGB -> BGR, minus ImageNet's mean per channel
        x = keras.ops.flip(x, axis=-1)
        return layers.Normalization(mean=(103.939, 116.779, 123.68), variance=(1, 1, 1), name="preprocess_caffe")(x)
    raise ValueError(f"Unknown preprocessing {kind!r}: use 'caffe', 'tf' or 'torch'.")


# saved in utils/models.py
def build_transfer_model(backbone: Backbone, num_classes: int, image_size: int, weights: str | None) -> keras.Model:
    """The backbone without its ImageNet classifier (``include_top=False``), and the course's head on its
    ``feature_layer``. ``weights``: "imagenet", a weights file, or None for random weights."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = preprocess(inputs, backbone.preprocessing)
    net = backbone.application(include_top=False, weights=weights, input_tensor=x, **backbone.options)
    return add_head(inputs, net.get_layer(backbone.feature_layer).output, num_classes, name=backbone.name)


# Taught one by one in notebooks 05-08; saved here for the command line and the later notebooks.
VGG16 = Backbone("vgg16", keras.applications.VGG16, "caffe", feature_layer="block5_conv3", unfreeze_from="block5_conv1")
RESNET50 = Backbone(
    "resnet50", keras.applications.ResNet50, "caffe", feature_layer="conv5_block3_out", unfreeze_from="conv5_block1_1_conv"
)
MOBILENET = Backbone("mobilenet", keras.applications.MobileNet, "tf", feature_layer="conv_pw_13_relu", unfreeze_from="conv_dw_12")
MOBILENET_025 = Backbone(
    "mobilenet_025", keras.applications.MobileNet, "tf", feature_layer="conv_pw_13_relu", unfreeze_from="conv1",
    options={"alpha": 0.25},
)  # fmt: skip
DENSENET121 = Backbone(
    "densenet121", keras.applications.DenseNet121, "torch", feature_layer="relu", unfreeze_from="conv5_block9_0_bn"
)
BACKBONES = {b.name: b for b in (VGG16, RESNET50, MOBILENET, MOBILENET_025, DENSENET121)}
MODELS = ("cnn", *BACKBONES)
GRADCAM_LAYERS = {"cnn": "block4_relu2"} | {b.name: b.feature_layer for b in BACKBONES.values()}
