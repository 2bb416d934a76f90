"""Grad-CAM and Grad-CAM++ heatmaps, a randomisation sanity check and localisation scores.

The course models follow one contract: a flat functional ``keras.Model`` that takes raw 0-255 images, with a
``GlobalAveragePooling2D(name="head_pool")`` whose input is the last convolutional feature map, and a final
``Dense(..., activation="softmax", name="head_output")``. Everything here works on any such model:

* :func:`gradcam_maps` explains a batch of images (Grad-CAM, Selvaraju et al. 2017; Grad-CAM++, Chattopadhay et
  al. 2018). The explained score is the class **logit** (the pre-softmax value of ``head_output``, recomputed
  from its input and kernel) whenever it can be reached; otherwise the class probability is used and a warning
  says so. :func:`score_kind` tells which one a model gets.
* :func:`cascading_randomization` re-initialises the layers of a *copy* of the model from the top down and
  measures how fast the maps stop resembling the trained ones (Adebayo et al. 2018, "Sanity checks for
  saliency maps"): a method that explains the model must be sensitive to its weights.
* :func:`pointing_game`, :func:`heat_inside_ratio`, :func:`heat_inside_share`, :func:`random_baseline` and
  :func:`localisation_scores` compare maps with known lesion masks (the synthetic dataset has them).
* :func:`overlay_heatmap`, :func:`plot_gradcam_grid` and :func:`plot_sanity_check` draw the results.

TensorFlow only: gradients come from ``tf.GradientTape``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure

METHODS = ("gradcam", "gradcam++")
_EPS = 1e-7


# --------------------------------------------------------------------------------------------------- layers
def _is_4d(tensor: Any) -> bool:
    shape = getattr(tensor, "shape", None)
    return shape is not None and len(shape) == 4


def _producer(model: keras.Model, tensor: Any) -> str | None:
    """Name of the layer of ``model`` whose output is ``tensor`` (None if there is none)."""
    for layer in model.layers:
        try:
            if layer.output is tensor:
                return layer.name
        except (AttributeError, ValueError):  # a layer called several times has no single output
            continue
    history = getattr(tensor, "_keras_history", None)
    return getattr(history[0], "name", None) if history else None


def find_target_layer(model: keras.Model) -> str:
    """Name of the layer whose output is the feature map Grad-CAM explains.

    That is the layer feeding ``head_pool`` (the course contract); for a model without ``head_pool`` it is the
    last layer with a 4-D output (batch, height, width, channels).
    """
    try:
        pool = model.get_layer("head_pool")
    except ValueError:
        pool = None
    if pool is not None:
        name = _producer(model, pool.input)
        if name is not None and model.get_layer(name).__class__.__name__ != "InputLayer":
            return name
    for layer in reversed(model.layers):
        if layer.__class__.__name__ == "InputLayer":
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):
            continue
        if _is_4d(output):
            return layer.name
    raise ValueError(
        f"Model {model.name!r} has no layer with a 4-D (batch, height, width, channels) output: Grad-CAM needs "
        "a convolutional feature map. Pass layer_name= to choose one."
    )


def _score_source(model: keras.Model) -> tuple[Any, Any, str]:
    """(tensor, fn turning it into class scores, 'logit' | 'probability') for the score to explain."""
    import keras
    import tensorflow as tf

    last = model.get_layer(_producer(model, model.outputs[0]) or model.layers[-1].name)
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if isinstance(last, keras.layers.Dense) and activation in ("softmax", "sigmoid"):
        kernel, bias = last.kernel, (last.bias if last.use_bias else None)

        def dense_logits(h: tf.Tensor) -> tf.Tensor:
            z = tf.matmul(tf.cast(h, kernel.dtype), kernel)
            return z + bias if bias is not None else z

        return last.input, dense_logits, "logit"
    if activation == "linear" and isinstance(last, (keras.layers.Dense, keras.layers.Activation)):
        return model.outputs[0], tf.identity, "logit"  # the model already outputs logits
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and activation in ("softmax", "sigmoid")
    ):
        return last.input, tf.identity, "logit"
    return model.outputs[0], tf.identity, "probability"


def score_kind(model: keras.Model) -> str:
    """``"logit"`` when the pre-softmax class score is reachable (course models), else ``"probability"``."""
    return _score_source(model)[2]


# --------------------------------------------------------------------------------------------------- maps
def _as_images(images: Any) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(
            f"images must be a batch (N, height, width, channels); got shape {x.shape}. "
            "For one image pass image[None]."
        )
    return x


def _class_indices(class_index: Any, n: int, num_classes: int) -> np.ndarray | None:
    """Per-image class indices (None = use the predicted class)."""
    if class_index is None:
        return None
    classes = np.asarray(class_index)
    if classes.ndim == 0:
        classes = np.full(n, int(classes))
    if classes.shape != (n,) or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(
            f"class_index must be None, an int or one int per image ({n}); got {np.asarray(class_index)!r}."
        )
    if classes.min(initial=0) < 0 or classes.max(initial=0) >= num_classes:
        raise ValueError(f"class_index must lie in 0..{num_classes - 1}; got {classes.tolist()}.")
    return classes.astype(np.int64)


def _weighted_cam(features: Any, grads: Any, method: str) -> Any:
    """Low-resolution map: ReLU(sum_k w_k A_k) with Grad-CAM or Grad-CAM++ channel weights w_k."""
    import tensorflow as tf

    if method == "gradcam":
        weights = tf.reduce_mean(grads, axis=(1, 2))  # GAP of the gradients
    else:
        # Grad-CAM++ closed form with the exponential score S = exp(Y): the higher-order derivatives of S become
        # powers of dY/dA and exp(Y) cancels, so only first-order gradients of the logit Y are needed.
        g2, g3 = grads**2, grads**3
        sum_a = tf.reduce_sum(features, axis=(1, 2), keepdims=True)
        denom = 2.0 * g2 + sum_a * g3
        alpha = tf.where(tf.abs(denom) > _EPS, g2 / tf.where(tf.abs(denom) > _EPS, denom, 1.0), 0.0)
        weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
    return tf.nn.relu(tf.einsum("bhwk,bk->bhw", features, weights))


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Divide each map by its maximum; all-zero (or non-finite) maps become zeros."""
    maps = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    peak = maps.reshape(len(maps), -1).max(axis=1, initial=0.0)
    scale = np.where(peak > _EPS, peak, 1.0)[:, None, None]
    out = np.where(peak[:, None, None] > _EPS, maps / scale, 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _explain(
    model: keras.Model, x: np.ndarray, class_index: Any, method: str, layer_name: str | None, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N, H, W) in [0, 1], explained class per image)."""
    import keras
    import tensorflow as tf

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    if len(model.inputs) != 1:
        raise ValueError(
            f"Grad-CAM needs a single-input model; {model.name!r} has {len(model.inputs)} inputs."
        )
    name = layer_name or find_target_layer(model)
    try:
        features = model.get_layer(name).output
    except ValueError as err:
        raise ValueError(
            f"Model {model.name!r} has no layer {name!r}; pick one from model.summary()."
        ) from err
    if not _is_4d(features):
        raise ValueError(f"Layer {name!r} outputs shape {features.shape}; Grad-CAM needs a 4-D feature map.")
    source, to_scores, kind = _score_source(model)
    if kind == "probability":
        warnings.warn(
            f"Model {model.name!r} does not end in a softmax/sigmoid Dense or activation layer: Grad-CAM explains "
            "the class probability instead of the pre-softmax logit (saturated outputs give weaker maps).",
            stacklevel=3,
        )
    grad_model = keras.Model(model.inputs[0], [features, source])
    num_classes = int(model.outputs[0].shape[-1])
    fixed = _class_indices(class_index, len(x), num_classes)
    maps, classes = [], []
    for start in range(0, len(x), batch_size):
        batch = tf.convert_to_tensor(x[start : start + batch_size])
        with tf.GradientTape() as tape:
            tape.watch(batch)  # records every op, even through frozen (non-trainable) layers
            fmap, hidden = grad_model(batch, training=False)
            scores = tf.cast(to_scores(hidden), tf.float32)
            chosen = (
                tf.argmax(scores, axis=-1)
                if fixed is None
                else tf.constant(fixed[start : start + len(batch)])
            )
            target = tf.reduce_sum(tf.gather(scores, chosen, axis=1, batch_dims=1))
        grads = tape.gradient(target, fmap)
        if grads is None:
            raise ValueError(
                f"The class score does not depend on layer {name!r}: pick a layer on the path to the output."
            )
        cam = _weighted_cam(tf.cast(fmap, tf.float32), tf.cast(grads, tf.float32), method)
        cam = tf.image.resize(cam[..., None], x.shape[1:3], method="bilinear")[..., 0]
        maps.append(cam.numpy())
        classes.append(np.asarray(chosen))
    return _normalise(np.concatenate(maps)), np.concatenate(classes).astype(np.int64)


def gradcam_maps(
    model: keras.Model,
    images: Any,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    *,
    method: str = "gradcam",
    layer_name: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) heatmaps for a batch of images.

    Args:
        model: a course model (raw 0-255 images in, softmax out).
        images: (N, H, W, 3) array of raw 0-255 images.
        class_index: class to explain: None = each image's predicted class, an int for all images, or one int
            per image.
        method: ``"gradcam"`` (channel weights = mean gradient) or ``"gradcam++"`` (closed-form
            higher-order weights, better for several instances of a class in one image).
        layer_name: feature-map layer; default :func:`find_target_layer`.
        batch_size: images per gradient computation.

    Returns:
        (N, H, W) float32 maps in [0, 1], upsampled bilinearly to the input size, each divided by its maximum.
        A map with no positive evidence is all zeros. The explained score is the class logit (see
        :func:`score_kind`).
    """
    x = _as_images(images)
    return _explain(model, x, class_index, method, layer_name, batch_size)[0]


def overlay_heatmap(image: Any, heatmap: Any, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped heatmap over an image; returns (H, W, 3) uint8 RGB.

    ``image`` is (H, W), (H, W, 1) or (H, W, 3), uint8 or float in 0-255 (a float image whose maximum is at most
    1 is taken as 0-1 and scaled). ``heatmap`` (h, w) in [0, 1] is resized bilinearly to the image size.
    """
    import matplotlib
    import tensorflow as tf

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}.")
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(
            f"image must be (H, W), (H, W, 1) or (H, W, 3); got shape {np.asarray(image).shape}."
        )
    img = img.astype(np.float32)
    if np.issubdtype(np.asarray(image).dtype, np.floating) and img.max(initial=0.0) <= 1.0:
        img = img * 255.0
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (h, w); got shape {heat.shape}.")
    if heat.shape != img.shape[:2]:
        heat = tf.image.resize(heat[..., None], img.shape[:2], method="bilinear").numpy()[..., 0]
    colour = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(heat), 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * np.clip(img, 0.0, 255.0) + alpha * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------- sanity check
def _initializer_for(layer: Any, variable: Any) -> Any:
    """The layer's own initializer for ``variable`` (e.g. ``kernel_initializer``), or None."""
    name = variable.name.split("/")[-1].split(":")[0]
    candidates = [f"{name}_initializer", f"{name.removesuffix('_kernel')}_initializer"]
    if name == "kernel":
        candidates.append("depthwise_initializer")
    for attr in candidates:
        init = getattr(layer, attr, None)
        if init is not None:
            return init
    return None


def _reinitialise(layer: Any, rng: np.random.Generator) -> None:
    """Re-draw every weight of ``layer`` with its initializer (seeded), else N(0, std of the current weight)."""
    import keras

    for variable in layer.weights:
        shape, dtype = tuple(variable.shape), variable.dtype
        init = _initializer_for(layer, variable)
        if init is not None:
            config = init.get_config()
            if "seed" in config:
                init = init.__class__.from_config({**config, "seed": int(rng.integers(2**31 - 1))})
            value = keras.ops.convert_to_numpy(init(shape, dtype=dtype))
        else:
            std = float(np.std(keras.ops.convert_to_numpy(variable)))
            value = rng.normal(0.0, std, size=shape)
        variable.assign(np.asarray(value).astype(dtype))


def randomizable_layers(model: keras.Model) -> list[str]:
    """Layers with weights, top (output) first; data-statistics layers such as ``Normalization`` are skipped."""
    import keras

    return [
        layer.name
        for layer in reversed(model.layers)
        if layer.weights and not isinstance(layer, keras.layers.Normalization)
    ]


def _spearman(reference: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per image: NaN where the reference map is constant (nothing to rank), 0 where
    only the new map is (a blank map keeps none of the reference's ranking)."""
    from scipy.stats import spearmanr

    rhos = []
    for a, b in zip(reference, maps, strict=True):
        a, b = a.ravel(), b.ravel()
        if a.min() == a.max():
            rhos.append(np.nan)
        else:
            rhos.append(0.0 if b.min() == b.max() else spearmanr(a, b).statistic)
    return np.asarray(rhos, dtype=np.float64)


def _mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def cascading_randomization(
    model: keras.Model,
    images: Any,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    *,
    seed: int = 0,
    n_steps: int | None = None,
    method: str = "gradcam",
    layer_name: str | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Model-parameter randomisation test (Adebayo et al. 2018), cascading from the output layer down.

    A copy of ``model`` (``keras.models.clone_model`` + ``set_weights``; the caller's model is never touched) has
    its layers with weights (:func:`randomizable_layers`) re-initialised one by one from ``head_output``
    downwards, cumulatively, with each weight's own initializer (seeded) or, without one, N(0, same std).
    Maps are recomputed after selected steps and compared with the trained model's maps by Spearman rank
    correlation per image. The explained class stays the trained model's (predicted) class throughout.

    Args:
        n_steps: compute maps after this many steps, evenly spaced over the layers and always including the
            first (output layer) and the last (all layers random); None = after every layer.
        Other arguments as in :func:`gradcam_maps`.

    Returns:
        One dict per step, the first being the trained model: ``step`` (layers randomised so far), ``layer``
        (the lowest layer randomised, ``"trained"`` at step 0), ``spearman`` and ``spearman_abs`` (mean rank
        correlation and mean absolute correlation with the trained maps), ``spearman_per_image`` and ``maps``.
        A randomised map that is constant (e.g. all zeros) counts as correlation 0; an image whose trained map
        is constant has no ranking to compare (NaN, left out of the means).
    """
    import keras

    x = _as_images(images)
    reference, classes = _explain(model, x, class_index, method, layer_name, batch_size)
    target = layer_name or find_target_layer(model)
    rho0 = _spearman(reference, reference)
    results = [
        {"step": 0, "layer": "trained", "spearman": _mean(rho0), "spearman_abs": _mean(np.abs(rho0)),
         "spearman_per_image": rho0, "maps": reference}
    ]  # fmt: skip
    names = randomizable_layers(model)
    if not names:
        raise ValueError(f"Model {model.name!r} has no layers with weights to randomise.")
    if n_steps is None:
        checkpoints = set(range(len(names)))
    else:
        if n_steps < 1:
            raise ValueError(f"n_steps must be at least 1 (or None for every layer); got {n_steps}.")
        checkpoints = {int(i) for i in np.round(np.linspace(0, len(names) - 1, min(n_steps, len(names))))}
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        _reinitialise(clone.get_layer(name), rng)
        if i not in checkpoints:
            continue
        maps = _explain(clone, x, classes, method, target, batch_size)[0]
        rho = _spearman(reference, maps)
        results.append(
            {"step": i + 1, "layer": name, "spearman": _mean(rho), "spearman_abs": _mean(np.abs(rho)),
             "spearman_per_image": rho, "maps": maps}
        )  # fmt: skip
    return results


def plot_sanity_check(results: list[dict[str, Any]], images: Any = None, n_images: int = 3) -> Figure:
    """Figure of :func:`cascading_randomization`: rank correlation per step, then maps of a few images per step."""
    import matplotlib.pyplot as plt

    n_rows = min(n_images, len(results[0]["maps"]))
    n_cols = len(results)
    fig = plt.figure(figsize=(max(6.0, 1.4 * n_cols), 3.0 + 1.4 * n_rows), layout="constrained")
    grid = fig.add_gridspec(1 + n_rows, n_cols, height_ratios=[2.0] + [1.0] * n_rows)
    ax = fig.add_subplot(grid[0, :])
    steps = np.arange(n_cols)
    ax.plot(steps, [r["spearman"] for r in results], "o-", label="Spearman rank correlation")
    ax.plot(steps, [r["spearman_abs"] for r in results], "s--", label="|Spearman|")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(steps, [r["layer"] for r in results], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("similarity to trained maps")
    ax.set_title("Cascading randomisation (output layer first)")
    ax.legend(loc="lower left", fontsize=8)
    for row in range(n_rows):
        for col, result in enumerate(results):
            cell = fig.add_subplot(grid[1 + row, col])
            if images is not None:
                cell.imshow(overlay_heatmap(np.asarray(images)[row], result["maps"][row]))
            else:
                cell.imshow(result["maps"][row], cmap="jet", vmin=0.0, vmax=1.0)
            cell.set_axis_off()
    plt.close(fig)  # shown once, when a notebook cell returns it
    return fig


# --------------------------------------------------------------------------------------- localisation
def _maps_and_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated (N, h, w) maps and boolean masks, the masks resized (nearest) to the map size if needed."""
    import tensorflow as tf

    maps = np.asarray(maps, dtype=np.float32)
    masks = np.asarray(masks)
    if maps.ndim != 3 or masks.ndim != 3 or len(maps) != len(masks):
        raise ValueError(
            f"maps and masks must be (N, height, width) arrays with the same N; got {maps.shape} and {masks.shape}."
        )
    masks = masks.astype(bool)
    if masks.shape[1:] != maps.shape[1:]:
        resized = tf.image.resize(masks[..., None].astype(np.uint8), maps.shape[1:], method="nearest")
        masks = resized.numpy()[..., 0].astype(bool)
    empty = np.flatnonzero(~masks.reshape(len(masks), -1).any(axis=1))
    if empty.size:
        raise ValueError(
            f"masks {empty[:10].tolist()} are empty: localisation needs a lesion in every image. "
            "Pass only images with a lesion (e.g. maps[has_lesion], masks[has_lesion])."
        )
    return maps, masks


def _tolerant(masks: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Masks grown by ``tolerance_px`` pixels (Euclidean distance)."""
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0; got {tolerance_px}.")
    if tolerance_px == 0:
        return masks
    from scipy.ndimage import distance_transform_edt

    return np.stack([distance_transform_edt(~m) <= tolerance_px for m in masks])


def pointing_game(maps: Any, masks: Any, tolerance_px: float = 0) -> float:
    """Share of maps whose peak (first argmax pixel) lies in the mask, or within ``tolerance_px`` of it.

    A constant map (e.g. all zeros) has no peak and counts as a miss. Masks are resized (nearest) to the map
    size when they differ; every mask must contain a lesion.
    """
    maps, masks = _maps_and_masks(maps, masks)
    masks = _tolerant(masks, tolerance_px)
    flat = maps.reshape(len(maps), -1)
    peaks = flat.argmax(axis=1)
    hit = masks.reshape(len(masks), -1)[np.arange(len(maps)), peaks]
    has_peak = flat.max(axis=1) > flat.min(axis=1)
    return float(np.mean(hit & has_peak))


def heat_inside_ratio(maps: Any, masks: Any) -> float:
    """Mean heat inside the masks / mean heat outside, pooled over all images (1 = no localisation).

    Returns ``inf`` when there is heat inside and none outside, NaN when the maps are all zero.
    """
    maps, masks = _maps_and_masks(maps, masks)
    inside, outside = maps[masks], maps[~masks]
    mean_in = float(inside.mean())
    mean_out = float(outside.mean()) if outside.size else 0.0
    if mean_out > 0:
        return mean_in / mean_out
    return float("inf") if mean_in > 0 else float("nan")


def heat_inside_share(maps: Any, masks: Any) -> float:
    """Mean over images of (heat inside the mask / total heat); an all-zero map scores 0."""
    maps, masks = _maps_and_masks(maps, masks)
    total = maps.reshape(len(maps), -1).sum(axis=1)
    inside = (maps * masks).reshape(len(maps), -1).sum(axis=1)
    return float(np.mean(np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)))


def mask_area_fraction(masks: Any, tolerance_px: float = 0) -> float:
    """Mean share of pixels inside the (optionally grown) masks: the expected score of a random peak."""
    masks = np.asarray(masks).astype(bool)
    return float(_tolerant(masks, tolerance_px).mean())


def random_baseline(masks: Any, n: int = 1000, seed: int = 0, tolerance_px: float = 0) -> float:
    """Pointing-game score of uniformly random peaks, averaged over ``n`` random draws per image.

    Its expectation is :func:`mask_area_fraction`; compare it with :func:`pointing_game` on real maps.
    """
    masks = np.asarray(masks).astype(bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, height, width); got shape {masks.shape}.")
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}.")
    flat = _tolerant(masks, tolerance_px).reshape(len(masks), -1)
    peaks = np.random.default_rng(seed).integers(flat.shape[1], size=(n, len(masks)))
    return float(flat[np.arange(len(masks))[None, :], peaks].mean())


def localisation_scores(maps: Any, masks: Any, tolerance_px: float = 0) -> dict[str, float]:
    """All localisation scores with their chance levels, ready for a table.

    Keys: ``pointing_game`` and ``pointing_baseline`` (random peak = mask area fraction), ``heat_inside_ratio``
    (chance 1), ``heat_inside_share`` and ``share_baseline`` (a uniform map), ``n_images``.
    """
    maps, masks = _maps_and_masks(maps, masks)
    return {
        "pointing_game": pointing_game(maps, masks, tolerance_px),
        "pointing_baseline": mask_area_fraction(masks, tolerance_px),
        "heat_inside_ratio": heat_inside_ratio(maps, masks),
        "heat_inside_share": heat_inside_share(maps, masks),
        "share_baseline": mask_area_fraction(masks),
        "n_images": float(len(maps)),
    }


def plot_gradcam_grid(
    images: Any,
    maps: Any,
    titles: Sequence[str] | None = None,
    *,
    masks: Any = None,
    alpha: float = 0.4,
    cmap: str = "jet",
) -> Figure:
    """One row per image: the image | its heatmap overlay (with the mask outline in white when given)."""
    import matplotlib.pyplot as plt

    images, maps = np.asarray(images), np.asarray(maps)
    if len(images) != len(maps):
        raise ValueError(f"Got {len(images)} images but {len(maps)} maps.")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"Got {len(titles)} titles for {len(images)} images.")
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(5.0, 2.5 * n), squeeze=False, layout="constrained")
    for i in range(n):
        image = images[i].astype(np.float32)
        shown = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        axes[i, 0].imshow(np.clip(shown / 255.0, 0, 1), cmap="gray" if shown.ndim == 2 else None)
        axes[i, 1].imshow(overlay_heatmap(images[i], maps[i], alpha=alpha, cmap=cmap))
        if masks is not None:
            axes[i, 1].contour(np.asarray(masks[i]).astype(float), levels=[0.5], colors="white", linewidths=1)
        axes[i, 0].set_title(titles[i] if titles is not None else f"image {i}", fontsize=9)
        axes[i, 1].set_title("Grad-CAM overlay", fontsize=9)
        for ax in axes[i]:
            ax.set_axis_off()
    plt.close(fig)  # shown once, when a notebook cell returns it
    return fig
