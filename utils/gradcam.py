"""Grad-CAM (notebook 10): which regions of an X-ray raised a class score, a randomisation sanity check,
localisation scores against known lesion masks, and a stress test that changes only the aspect ratio.

Grad-CAM (Selvaraju et al. 2017) weighs the feature maps of one convolutional layer by the gradient of the class
score, keeps the positive part and upsamples it to the image. The score explained is the class LOGIT (the
pre-softmax value of ``head_output``, computed from its input and weights): the probability saturates near 0 and
1 and then has almost no gradient. Maps come back divided by their maximum, in [0, 1].
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from scipy.stats import spearmanr


# saved in utils/gradcam.py
def weight_feature_maps(features: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM's map ``ReLU(sum_k w_k A_k)``: each feature map A_k weighted by its mean gradient w_k, summed over
    the channels, and only the positive evidence kept. ``features``, ``grads``: (N, h, w, K) -> (N, h, w)."""
    weights = tf.reduce_mean(grads, axis=(1, 2))  # one weight per channel and image
    return tf.nn.relu(tf.einsum("nhwk,nk->nhw", features, weights))


# saved in utils/gradcam.py
def gradcam_heatmap(model: keras.Model, images: np.ndarray, class_index: np.ndarray, layer_name: str) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of the classes ``class_index`` (one per image) for raw 0-255 images."""
    head = model.get_layer("head_output")
    grad_model = keras.Model(model.input, [model.get_layer(layer_name).output, head.input])
    images = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        features, pooled = grad_model(images, training=False)
        logits = tf.matmul(pooled, head.kernel) + head.bias  # the scores before the softmax
        score = tf.gather(logits, class_index, axis=1, batch_dims=1)
    grads = tape.gradient(score, features)
    cam = weight_feature_maps(features, grads)
    cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-8)
    return tf.image.resize(cam[..., None], images.shape[1:3])[..., 0].numpy()


# saved in utils/gradcam.py
def zoom_axes(images: np.ndarray, across: float, down: float) -> np.ndarray:
    """``images`` (N, H, W, C) zoomed in about the centre by ``across`` horizontally and ``down`` vertically: the
    central (H / down) x (W / across) part resized back to H x W. Another aspect ratio or framing, no empty border."""
    height, width = images.shape[1:3]
    keep_h, keep_w = round(height / down), round(width / across)
    top, left = (height - keep_h) // 2, (width - keep_w) // 2
    centre = images[:, top : top + keep_h, left : left + keep_w]
    return tf.image.resize(centre, (height, width)).numpy()


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The heatmap in the ``jet`` colours over a grey 0-255 image (H, W) or (H, W, 1|3): uint8 RGB (H, W, 3)."""
    import matplotlib

    grey = np.asarray(image, dtype=np.float32)
    grey = grey[..., 0] if grey.ndim == 3 else grey
    colour = matplotlib.colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255
    return np.clip((1 - alpha) * grey[..., None] + alpha * colour, 0, 255).astype(np.uint8)


def randomize_layers(model: keras.Model, images: np.ndarray, layer_name: str, steps: int = 4, seed: int = 0) -> list[dict]:
    """The sanity check of Adebayo et al. (2018): re-initialise the filters of a copy's layers (convolutions, dense) from the output down, cumulatively,
    and measure how much the maps still resemble the trained model's (Spearman rank correlation per image).
    Maps that explain the model must change; maps that show only the image's edges do not.

    Returns one dict per step (the first is the trained model): ``layer``, ``spearman`` (mean; a blank map, which
    resembles nothing, counts as 0), ``maps``.
    """
    classes = model.predict(images, verbose=0).argmax(axis=1)
    reference = gradcam_heatmap(model, images, classes, layer_name)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    names = [layer.name for layer in reversed(model.layers) if getattr(layer, "kernel", None) is not None]
    stops = set(np.round(np.linspace(0, len(names) - 1, min(steps, len(names)))).astype(int))
    rng = np.random.default_rng(seed)
    results = [{"layer": "trained", "spearman": 1.0, "maps": reference}]
    for i, name in enumerate(names):
        layer = copy.get_layer(name)  # new random filters, as wide as the trained ones; biases to zero
        layer.kernel.assign(rng.normal(0, float(np.std(layer.kernel.numpy())), layer.kernel.shape))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.zeros(layer.bias.shape))
        if i in stops:
            maps = gradcam_heatmap(copy, images, classes, layer_name)
            rhos = [spearmanr(a.ravel(), b.ravel()).statistic if b.std() > 0 and a.std() > 0 else 0.0
                    for a, b in zip(reference, maps, strict=True)]  # fmt: skip
            results.append({"layer": name, "spearman": float(np.mean(rhos)), "maps": maps})
    return results


def pointing_game(maps: np.ndarray, masks: np.ndarray) -> float:
    """Share of maps whose hottest pixel lies inside the lesion mask (a blank map counts as a miss)."""
    flat, inside = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1).astype(bool)
    hit = inside[np.arange(len(maps)), flat.argmax(axis=1)]
    return float(np.mean(hit & (flat.max(axis=1) > flat.min(axis=1))))


def localisation(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """The pointing game against its chance level (a random pixel hits the lesion as often as the lesion's share
    of the image), and the mean heat inside the lesion over the mean heat outside it (1 = no preference)."""
    masks = masks.astype(bool)
    return {
        "pointing game": round(pointing_game(maps, masks), 3),
        "random pixel": round(float(masks.mean()), 3),
        "heat inside / outside": round(float(maps[masks].mean() / max(maps[~masks].mean(), 1e-8)), 2),
        "images": len(maps),
    }
