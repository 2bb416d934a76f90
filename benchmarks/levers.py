"""Levers against the shifted Kermany test split that need no retraining (issue 13), scored on validation and test.

Usage (from the repository root)::

    python benchmarks/levers.py [--runs DIR ...] [--output DIR] [--n-boot N] [--no-tta] [--no-adabn] [--no-aspect]
        [--quick]

``--runs``: run folders (a model folder stands for its ``LATEST`` run); default: the latest complete run of every
model under ``<output>/runs/pneumonia/`` (``--output`` defaults to ``outputs/benchmarks/``). For each run, at the
decision rule of the course (``p(class 1) >= threshold``), with 95% bootstrap intervals
(``utils.metrics.scores_with_ci``):

1. **baseline**: the saved probabilities at the threshold chosen on validation (``run.threshold``);
2. **EM prior shift**: the probabilities of each split re-weighted to the class prior that EM estimates from that
   split's own unlabelled predictions (:func:`prior_shift_em`; Saerens, Latinne & Decaestecker 2002), at the same
   validation threshold. Three reference ("training") priors: the training split's class shares (``manifest``);
   the prior the loss effectively saw: training uses balanced class weights, so every class counts the same
   (``class-weighted``); and validation's own EM estimate (``EM of val``, EM started from the manifest prior on
   both splits), the domain the threshold was chosen in: then only the difference between the test split's
   estimated prior and validation's moves anything, and validation stays exactly as it was;
3. **BCTS + EM**: EM assumes posteriors calibrated to the reference prior, which a model trained with class weights
   does not give (its probabilities carry the balanced prior, and may be too sure or too unsure). Bias-corrected
   temperature scaling (:func:`fit_bias_corrected_temperature`; Alexandari et al. 2020) is fitted on the labelled
   validation split first, then EM moves each split from validation's class shares to its own estimated prior;
   threshold re-chosen on the calibrated validation probabilities (:func:`calibrated_em`);
4. **TTA**: the mean probability over a few small deterministic shifts and zooms of each image (no flips: a
   mirrored chest X-ray puts the heart on the wrong side), threshold re-chosen on the TTA validation probabilities;
5. **ensemble**: the mean probability of the runs (CNN and MobileNet when both exist), on the images they share,
   threshold chosen on the ensemble's validation probabilities (``choose_threshold``); ``--runs`` with several
   runs of one model trained with different seeds on the same split gives a seed ensemble (rows named by seed);
6. **AdaBN** (Li et al. 2018, "Adaptive batch normalization for practical domain adaptation"): each split is
   predicted by a copy of the model whose BatchNorm moving means and variances are recomputed on that split's own
   images (unlabelled; one forward pass, no weight changes), threshold re-chosen on the adapted validation
   probabilities. Like EM it reads the test images without their labels (transductive);
7. **three-class training, binary decision**: a ``pneumonia3`` run among ``--runs`` is scored as NORMAL against
   PNEUMONIA on ``1 - p(NORMAL)``, with its own threshold chosen on validation;
8. **three-class decisions** for that run, in a table of their own (accuracy, macro-AUC, macro-F1 and each
   class's F1): the argmax (the course's rule); per-class offsets added to ``log p`` before the argmax, chosen on
   validation to maximise its macro-F1 (:func:`class_offsets`, the multi-class counterpart of a threshold); and
   the EM prior shift from each reference prior (the three-class test split has 50 images per class, training
   about 26/48/26%), also after BCTS; with several three-class runs (seeds of one recipe, or the CNN and MobileNet 0.25), also
   their ensemble (mean probability).

A diagnostic besides the levers, the **aspect-ratio probe** (:func:`aspect_probe`, notebook 10's stress test):
every two-class run predicts its validation and test images zoomed in by 1.2 across ("wider"), down ("taller") or
both (the same framing change without another aspect ratio; ``utils.gradcam.zoom_axes``), and the mean p(class 1) and
the share above the validation threshold are printed per true class. The shared images were squashed to a square
from aspect ratios that differ by class in the training split (NORMAL about 1.2 wide per 1 high, pneumonia 1.5),
so a model that reads the squash moves NORMAL images toward PNEUMONIA when they are made "taller".

TTA, the probe and AdaBN predict the images again (``utils.data.load_images``), equalised or cropped for the runs
of ``train_levers.py``'s ``equalize`` and ``crop`` variants (their ``config.json`` records ``benchmark_variant``).
Each run's first validation images are predicted once and compared with its saved predictions first
(:func:`reload_gap`): where they differ (images loaded otherwise in training), those three would be silently
wrong and are skipped for the run, with a note on stderr.

Nothing is chosen on the test split: every threshold comes from validation, and EM reads test predictions without
their labels. Prints a Markdown table and the EM details; writes ``<output>/levers.json``. ``--quick``: two tiny
fake runs (a fixed-weight brightness model on generated images, seconds) under ``<output>`` (default
``outputs/benchmarks/quick-levers/``), 200 bootstrap draws (for the tests).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from loaders import images_loaded_as  # noqa: E402  (train_levers.py's equalised or cropped images)

OUTPUT = ROOT / "outputs" / "benchmarks"
SPLITS = ("val", "test")
METRICS = ("accuracy", "AUC", "sensitivity", "specificity")
# Test-time views: (zoom, shift x, shift y), shifts as fractions of the side; zoom > 1 enlarges the content.
# Within what training augmentation shows (zoom +-10%, shift +-5%, empty borders black).
VIEWS = {"identity": (1.0, 0.0, 0.0), "zoom in 5%": (1.05, 0.0, 0.0), "zoom out 5%": (0.95, 0.0, 0.0),
         "shift +3% x, +3% y": (1.0, 0.03, 0.03), "shift -3% x, -3% y": (1.0, -0.03, -0.03)}  # fmt: skip


# --- label shift: EM re-estimation of the class prior -------------------------------------------------------------


def reweight(probs: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Posteriors moved to another class prior: ``p'(y|x) ∝ p(y|x) · ratio[y]``, rows renormalised to sum 1.
    A ratio equal for every class changes nothing: ``probs`` come back as given (saved float32 rows that sum to
    1 +- 1e-7 are not renormalised, so that a score lying exactly on a threshold stays on its side)."""
    probs, ratio = np.asarray(probs, float), np.asarray(ratio, float)
    if np.all(ratio == ratio.flat[0]):
        return probs.copy()
    weighted = probs * ratio
    return weighted / weighted.sum(axis=1, keepdims=True)


def prior_shift_em(
    probs: np.ndarray, train_prior: np.ndarray, max_iter: int = 1000, tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, int]:
    """Adapt a classifier's posteriors to the unknown class prior of new, unlabelled data (label shift).

    Saerens, Latinne & Decaestecker (2002), "Adjusting the outputs of a classifier to new a priori probabilities:
    a simple procedure", Neural Computation 14(1). Assumes that only the class shares changed, not what each class
    looks like, and that ``probs`` are calibrated posteriors under ``train_prior``. Starting from the training
    prior, EM alternates

    - E step: re-weight every posterior to the current prior estimate,
      ``p'(y|x) ∝ p(y|x) · prior(y) / train_prior(y)``;
    - M step: the new prior estimate is the mean of the re-weighted posteriors;

    until no class share moves by ``tol`` or more (at most ``max_iter`` rounds). Each round cannot lower the
    likelihood of the unlabelled data; the fixed point is the maximum-likelihood prior.

    Args:
        probs: ``(N, C)`` posteriors of the new data (rows sum to 1), in class order.
        train_prior: ``(C,)`` class shares the posteriors are calibrated to (positive, summing to 1).
        max_iter: at most this many E+M rounds.
        tol: convergence: the largest change of a class share in the last round is below ``tol``.

    Returns:
        ``(adjusted_probs, test_prior, iterations)``: the posteriors re-weighted to the estimated prior, the
        estimated prior ``(C,)``, and the rounds run. Data whose mean posterior already equals ``train_prior``
        is returned unchanged after one round.
    """
    probs = np.asarray(probs, float)
    train_prior = np.asarray(train_prior, float)
    if probs.ndim != 2 or train_prior.shape != (probs.shape[1],):
        raise ValueError(f"probs must be (N, C) and train_prior (C,); got {probs.shape} and {train_prior.shape}")
    if np.any(train_prior <= 0) or not np.isclose(train_prior.sum(), 1):
        raise ValueError(f"train_prior must be positive and sum to 1; got {train_prior}")
    prior, iterations = train_prior.copy(), 0
    while iterations < max_iter:
        iterations += 1
        new_prior = reweight(probs, prior / train_prior).mean(axis=0)  # E step, then M step
        change = np.abs(new_prior - prior).max()
        prior = new_prior
        if change < tol:
            break
    return reweight(probs, prior / train_prior), prior, iterations


def moved_threshold(threshold: float, train_prior: np.ndarray, new_prior: np.ndarray) -> float:
    """For two classes: the cutoff on the unadjusted ``p(class 1)`` that gives the same decisions as ``threshold``
    on the posteriors re-weighted from ``train_prior`` to ``new_prior`` (odds scaled by the prior ratios)."""
    if threshold >= 1:
        return 1.0
    r0, r1 = np.asarray(new_prior, float) / np.asarray(train_prior, float)
    odds = threshold / (1 - threshold) * r0 / r1
    return float(odds / (1 + odds))


def train_priors(run) -> dict[str, np.ndarray]:
    """The class shares of the run's training split (``manifest``) and the prior the loss effectively saw with
    the course's class weights, shares x weights renormalised (``class-weighted``; uniform for balanced weights)."""
    from utils.data import class_weights

    labels = run.manifest().query("split == 'train'")["label"]
    counts = labels.value_counts().reindex(run.class_names, fill_value=0).to_numpy(float)
    weights = class_weights(labels, run.class_names)
    weighted = counts * np.array([weights[i] for i in range(len(run.class_names))])
    return {"manifest": counts / counts.sum(), "class-weighted": weighted / weighted.sum()}


# --- calibration before EM: bias-corrected temperature scaling --------------------------------------------------


def fit_bias_corrected_temperature(y: np.ndarray, probs: np.ndarray) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling (BCTS; Alexandari, Kundaje & Shrikumar 2020, "Maximum likelihood with
    bias-corrected calibration is hard-to-beat at label shift adaptation", ICML): the temperature ``T > 0`` and
    per-class biases ``b`` (class 0's fixed at 0) for which ``softmax(log p / T + b)`` has the smallest negative
    log-likelihood on ``(y, probs)``, the labelled validation split. ``T > 1`` softens an over-confident model;
    ``b`` moves its probabilities to validation's class shares, which EM then takes as the reference prior.
    Returns ``(T, b)``; ``T == 1`` and ``b == 0`` leave ``probs`` as they are."""
    from scipy.optimize import minimize

    y = np.asarray(y, int)

    def nll(params: np.ndarray) -> float:
        calibrated = calibrate(probs, float(np.exp(params[0])), np.r_[0.0, params[1:]])
        return float(-np.log(np.clip(calibrated[np.arange(len(y)), y], 1e-300, 1)).mean())

    fit = minimize(nll, np.zeros(probs.shape[1]), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9})
    return float(np.exp(fit.x[0])), np.r_[0.0, fit.x[1:]]


def calibrate(probs: np.ndarray, temperature: float, bias: np.ndarray) -> np.ndarray:
    """``softmax(log p / temperature + bias)``: the course's temperature scaling (``utils.metrics.apply_temperature``,
    notebook 09), then the biases as a change of prior (:func:`reweight` by ``exp(bias)``)."""
    from utils.metrics import apply_temperature

    return reweight(apply_temperature(np.asarray(probs, float), temperature), np.exp(bias))


def calibrated_em(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict[str, np.ndarray], dict]:
    """BCTS fitted on ``data["val"]`` (``{split: (y, probs)}``), then each split's probabilities moved by EM
    from validation's labelled class shares (the prior the calibrated probabilities now carry) to the prior EM
    estimates from that split's own unlabelled predictions. Returns ``({split: adjusted probs}, details)``."""
    y_val, p_val = data["val"]
    temperature, bias = fit_bias_corrected_temperature(y_val, p_val)
    reference = np.bincount(y_val, minlength=p_val.shape[1]) / len(y_val)
    adjusted, details = {}, {"temperature": round(temperature, 4), "bias": bias.round(4).tolist(),
                             "train_prior": reference.round(4).tolist()}  # fmt: skip
    for split, (y, p) in data.items():
        adjusted[split], estimate, iterations = prior_shift_em(calibrate(p, temperature, bias), reference)
        details[split] = {"estimated_prior": estimate.round(4).tolist(), "iterations": iterations,
                          "true_prior": (np.bincount(y, minlength=p.shape[1]) / len(y)).round(4).tolist()}  # fmt: skip
    return adjusted, details


# --- test-time augmentation ----------------------------------------------------------------------------------------


def view_transform(zoom: float, shift_x: float, shift_y: float, size: int) -> np.ndarray:
    """The 8 numbers of a projective transform (output pixel -> input pixel, as ``keras.ops.image.affine_transform``
    takes them) that zooms about the centre by ``zoom`` and moves the content by the shifts (fractions of ``size``)."""
    centre = (size - 1) / 2
    a = 1 / zoom
    return np.array([a, 0, centre * (1 - a) - shift_x * size, 0, a, centre * (1 - a) - shift_y * size, 0, 0], np.float32)


def tta_probs(model, paths: list[str], image_size: int, batch_size: int = 32) -> dict[str, np.ndarray]:
    """``{view: (N, C) probabilities}`` of every view of :data:`VIEWS` (``{name: (zoom, shift x, shift y)}``; see
    :func:`view_transform`); images decoded like in training."""
    import keras

    from utils.data import load_images

    out: dict[str, list[np.ndarray]] = {name: [] for name in VIEWS}
    for start in range(0, len(paths), batch_size):
        images = load_images(paths[start : start + batch_size], image_size)
        batch = []
        for zoom, dx, dy in VIEWS.values():
            if (zoom, dx, dy) == (1.0, 0.0, 0.0):
                batch.append(images)
            else:
                transform = view_transform(zoom, dx, dy, image_size)
                batch.append(keras.ops.convert_to_numpy(keras.ops.image.affine_transform(
                    images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0)))  # fmt: skip
        probs = keras.ops.convert_to_numpy(model(np.concatenate(batch), training=False))
        for name, part in zip(VIEWS, np.split(probs, len(VIEWS)), strict=True):
            out[name].append(part)
    return {name: np.concatenate(parts) for name, parts in out.items()}


# --- the aspect-ratio probe ---------------------------------------------------------------------------------------


# zoom_axes (notebook 10) factors (across, down); "both" keeps the aspect ratio and cuts every side: framing alone
ASPECTS = {"as is": (1.0, 1.0), "wider x1.2": (1.2, 1.0), "taller x1.2": (1.0, 1.2), "both x1.2": (1.2, 1.2)}


def aspect_probe(model, data: dict, image_size: int, threshold: float, batch_size: int = 64) -> dict:
    """A diagnostic, not a lever: notebook 10's stress test on each split. The images zoomed in by 1.2 across,
    down or both (``utils.gradcam.zoom_axes``: the centre cut and resized, no empty border; "both" changes the
    framing but not the aspect ratio), and per true class the mean p(class 1) and the share at or above
    ``threshold``. The shared images were squashed to a square from aspect ratios that depend on the class in the
    training split, so a model that reads the squash calls a chest made narrower ("taller") pneumonia.
    ``data``: ``{split: (paths, y, probs)}``."""
    from utils.data import load_images
    from utils.gradcam import zoom_axes

    out: dict = {}
    for split, (paths, y, _) in data.items():
        views: dict[str, list[np.ndarray]] = {name: [] for name in ASPECTS}
        for start in range(0, len(paths), batch_size):
            images = load_images(paths[start : start + batch_size], image_size)
            for name, (across, down) in ASPECTS.items():
                views[name].append(model.predict(zoom_axes(images, across, down), verbose=0)[:, 1])
        out[split] = {name: {str(k): [round(float(p[y == k].mean()), 4), round(float(np.mean(p[y == k] >= threshold)), 4)]
                             for k in np.unique(y)} for name, p in ((n, np.concatenate(v)) for n, v in views.items())}  # fmt: skip
    return out


def aspect_table(details: dict, class_names: dict) -> str:
    lines = ["| model | split | class | " + " | ".join(f"{v}: mean p, share >= threshold" for v in ASPECTS) + " |",
             "|" + "---|" * (3 + len(ASPECTS))]  # fmt: skip
    for model, d in details.items():
        for split, views in d.get("aspect", {}).items():
            for k in views["as is"]:
                cells = [f"{views[v][k][0]:.3f}, {views[v][k][1]:.2f}" for v in ASPECTS]
                lines.append(f"| {model} | {split} | {class_names[model][int(k)]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- AdaBN: BatchNorm statistics of the images at hand ----------------------------------------------------------


def adapt_batchnorm(model, images: np.ndarray) -> int:
    """AdaBN (Li et al. 2018): every BatchNormalization layer's moving mean and variance become those of
    ``images``, from one forward pass in training mode with momentum 0; no weight changes. Returns the number
    of layers adapted (0: the model has no BatchNorm, nothing changed)."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.trainable, layer.momentum = True, 0.0  # frozen BatchNorm would ignore training=True
    if norms:
        model(images, training=True)  # the outputs are not used: only the statistics are kept
    for layer in norms:
        layer.trainable = False
    return len(norms)


def adabn_probs(run, paths: dict[str, list[str]]) -> tuple[dict[str, np.ndarray], int]:
    """Each split's probabilities from a fresh copy of the run's model whose BatchNorm statistics are that split's
    own (unlabelled) images; ``({}, 0)`` when the model has no BatchNorm."""
    from utils.data import load_images

    probs, adapted = {}, 0
    for split, split_paths in paths.items():
        model = run.load_model()
        images = load_images(split_paths, int(run.config["image_size"]))
        if not (adapted := adapt_batchnorm(model, images)):
            return {}, 0
        probs[split] = model.predict(images, batch_size=32, verbose=0)
    return probs, adapted


# --- predicting the images again ---------------------------------------------------------------------------------

RELOAD_TOLERANCE = 1e-3  # float noise between the saved and a fresh prediction is about 1e-6


def reload_gap(model, paths: list[str], saved: np.ndarray, image_size: int, n: int = 32) -> float:
    """Max |p - saved p| over the first ``n`` of ``paths``, predicted from ``utils.data.load_images`` as TTA, the
    aspect probe and AdaBN predict them: float noise for a run whose images load as in its training, large for one
    trained on images loaded otherwise (then those rows would be silently wrong)."""
    from utils.data import load_images

    fresh = model.predict(load_images(paths[:n], image_size), verbose=0)
    return float(np.abs(fresh - saved[:n]).max())


# --- scoring -------------------------------------------------------------------------------------------------------


def split_rows(run, split: str):
    """``(paths, y, probs)`` of one split of a run's saved predictions, in their saved order."""
    rows = run.predictions().query("split == @split")
    y, probs = run.arrays(split)
    return rows["path"].astype(str).tolist(), y, probs


def score(y: np.ndarray, probs: np.ndarray, threshold: float, n_boot: int) -> dict[str, list[float]]:
    from utils.metrics import scores_with_ci

    return {name: list(v) for name, v in scores_with_ci(y, probs, threshold, n_boot=n_boot).items() if name in METRICS}


def run_label(run, runs: list) -> str:
    """The run's model name, with its training seed when ``runs`` hold several runs of that model (seeds), and
    with its folder's name when several of those share the seed too (variants of a recipe)."""
    same_model = [other for other in runs if other.model_name == run.model_name]
    if len(same_model) == 1:
        return run.model_name
    label = f"{run.model_name} seed {run.config['seed']}"
    if sum(other.config["seed"] == run.config["seed"] for other in same_model) > 1:
        label += f" ({run.path.name})"
    return label


def levers_of_run(run, runs: list, args: argparse.Namespace) -> tuple[list[dict], dict]:
    """The rows of one run of ``runs`` (baseline, EM with each reference prior, BCTS + EM, TTA, AdaBN) and their
    details (also the :func:`aspect_probe`), as the command line ``args`` ask (``--no-tta`` and so on)."""
    from utils.metrics import choose_threshold

    n_boot = args.n_boot
    name, threshold = run_label(run, runs), run.threshold
    data = {split: split_rows(run, split) for split in SPLITS}
    rows = [{"model": name, "lever": "baseline", "threshold": threshold,
             **{s: score(y, p, threshold, n_boot) for s, (_, y, p) in data.items()}}]  # fmt: skip
    details: dict = {"run_dir": str(run.path), "threshold": threshold, "em": {}}
    priors = train_priors(run)
    estimates = {(prior_name, split): prior_shift_em(p, prior)[1:] for prior_name, prior in priors.items()
                 for split, (_, _, p) in data.items()}  # fmt: skip
    # The threshold was chosen on validation: taking validation's own EM prior as the reference moves the
    # probabilities only by how the test split's estimated prior differs from validation's (none on validation).
    references = priors | {"EM of val": estimates["manifest", "val"][0]}
    for prior_name, reference in references.items():
        source = "manifest" if prior_name == "EM of val" else prior_name
        row = {"model": name, "lever": f"EM prior shift (π_train {prior_name} {fmt_prior(reference)})",
               "threshold": threshold}  # fmt: skip
        em = {"train_prior": reference.round(4).tolist(), "em_started_from": source}
        for split, (_, y, p) in data.items():
            estimate, iterations = estimates[source, split]
            adjusted = reweight(p, estimate / reference)
            row[split] = score(y, adjusted, threshold, n_boot)
            em[split] = {"estimated_prior": estimate.round(4).tolist(), "iterations": iterations,
                         "true_prior": (np.bincount(y, minlength=p.shape[1]) / len(y)).round(4).tolist(),
                         "moved_threshold": round(moved_threshold(threshold, reference, estimate), 4),
                         "max_abs_change": round(float(np.abs(adjusted - p).max()), 4),
                         "decisions_changed": int(((adjusted[:, 1] >= threshold) != (p[:, 1] >= threshold)).sum())}  # fmt: skip
        details["em"][prior_name] = em
        rows.append(row)
    adjusted, details["calibrated_em"] = calibrated_em({split: (y, p) for split, (_, y, p) in data.items()})
    t, b = details["calibrated_em"]["temperature"], details["calibrated_em"]["bias"][1]
    calibrated_threshold = choose_threshold(data["val"][1], adjusted["val"])
    rows.append({"model": name, "lever": f"BCTS on val (T {t:.2f}, bias {b:+.2f}) + EM from val's shares, "
                 "threshold re-chosen on val", "threshold": calibrated_threshold,
                 **{s: score(data[s][1], adjusted[s], calibrated_threshold, n_boot) for s in SPLITS}})  # fmt: skip
    with images_loaded_as(run.config.get("benchmark_variant")):  # equalised or cropped, if trained so
        rows += repredicted_levers(run, name, data, details, args)
    return rows, details


def repredicted_levers(run, name: str, data: dict, details: dict, args: argparse.Namespace) -> list[dict]:
    """TTA and AdaBN rows of :func:`levers_of_run` (and the aspect probe into ``details``): the levers that predict
    the images again, only when that reproduces the run's saved predictions (:func:`reload_gap`)."""
    from utils.metrics import choose_threshold, roc_auc

    n_boot, threshold, rows = args.n_boot, run.threshold, []
    if args.no_tta and args.no_aspect and args.no_adabn:
        return rows
    model, size = run.load_model(), int(run.config["image_size"])
    if (gap := reload_gap(model, data["val"][0], data["val"][2], size)) > RELOAD_TOLERANCE:
        print(f"note: {name}: its images, loaded again, do not give its saved predictions (max |p - saved p| "
              f"{gap:.2f}: loaded otherwise in training, by a train_levers.py run that did not record its variant?); "
              "TTA, the aspect probe and AdaBN are skipped for it.", file=sys.stderr)  # fmt: skip
        details["repredicted_levers_skipped"] = {"max_abs_diff_to_saved": round(gap, 4), "split": "val"}
        return rows
    if not args.no_tta:
        views = {split: tta_probs(model, paths, size) for split, (paths, _, _) in data.items()}
        mean = {split: np.mean(list(v.values()), axis=0) for split, v in views.items()}
        tta_threshold = choose_threshold(data["val"][1], mean["val"])
        rows.append({"model": name, "lever": f"TTA ({len(VIEWS)} views), threshold re-chosen on val",
                     "threshold": tta_threshold,
                     **{s: score(data[s][1], mean[s], tta_threshold, n_boot) for s in SPLITS}})  # fmt: skip
        details["tta"] = {"views": list(VIEWS), "image_size": size, "threshold": tta_threshold,
                          "identity_vs_saved_max_abs_diff": {s: float(np.abs(views[s]["identity"] - data[s][2]).max())
                                                             for s in SPLITS},
                          "per_view_auc": {s: {v: round(roc_auc(data[s][1], p), 4) for v, p in views[s].items()}
                                           for s in SPLITS}}  # fmt: skip
    if not args.no_aspect:
        details["aspect"] = aspect_probe(model, data, size, threshold)
    if not args.no_adabn:
        adapted, layers = adabn_probs(run, {split: paths for split, (paths, _, _) in data.items()})
        if adapted:
            adabn_threshold = choose_threshold(data["val"][1], adapted["val"])
            rows.append({"model": name, "lever": "AdaBN (each split's own BatchNorm statistics), threshold re-chosen on val",
                         "threshold": adabn_threshold,
                         **{s: score(data[s][1], adapted[s], adabn_threshold, n_boot) for s in SPLITS}})  # fmt: skip
        details["adabn"] = {"batchnorm_layers": layers, "threshold": adabn_threshold if adapted else None}
    return rows


def binary_of_three_class(run, n_boot: int) -> dict:
    """A three-class run (NORMAL, BACTERIA, VIRUS) read as NORMAL against PNEUMONIA: p(PNEUMONIA) = 1 - p(NORMAL),
    threshold chosen on its validation split (``choose_threshold``, Youden's J)."""
    from utils.metrics import choose_threshold

    normal = run.class_names.index("NORMAL")
    binary = {}
    for split in SPLITS:
        y, p = run.arrays(split)
        binary[split] = (y != normal).astype(int), np.c_[p[:, normal], 1 - p[:, normal]]
    threshold = choose_threshold(*binary["val"])
    return {"model": f"{run.model_name} ({len(run.class_names)} classes)", "threshold": threshold,
            "lever": "trained on three classes, decided NORMAL vs PNEUMONIA on 1 - p(NORMAL), threshold chosen on val",
            **{s: score(*binary[s], threshold, n_boot) for s in SPLITS}}  # fmt: skip


OFFSET_GRID = np.round(np.arange(-3.0, 3.01, 0.1), 2)  # additive offsets to log p(class), in nats (x20 odds)


def class_offsets(y: np.ndarray, probs: np.ndarray, grid: np.ndarray = OFFSET_GRID) -> np.ndarray:
    """Per-class decision offsets for ``argmax(log p + offsets)``, the multi-class counterpart of a threshold:
    the offsets on ``grid`` (class 0's fixed at 0: only differences matter) that maximise macro-F1 on ``(y,
    probs)``, the validation split; of equally good ones the smallest (sum of absolute offsets)."""
    from sklearn.metrics import f1_score

    log_p = np.log(np.clip(probs, 1e-12, 1))
    candidates = sorted(itertools.product(grid, repeat=probs.shape[1] - 1), key=lambda b: (np.abs(b).sum(), b))
    best, best_f1 = np.zeros(probs.shape[1]), -1.0
    for others in candidates:
        offsets = np.r_[0.0, others]
        f1 = f1_score(y, (log_p + offsets).argmax(axis=1), average="macro", labels=range(probs.shape[1]), zero_division=0)
        if f1 > best_f1 + 1e-12:
            best, best_f1 = offsets, f1
    return best


def shift_probs(probs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``softmax(log p + offsets)``: the probabilities whose argmax is the offset decision."""
    return reweight(probs, np.exp(offsets))


def score_classes(y: np.ndarray, probs: np.ndarray, n_boot: int) -> dict[str, list[float]]:
    """Accuracy, macro one-vs-rest AUC and macro-F1 at the argmax, with 95% intervals; F1 of each class."""
    from sklearn.metrics import f1_score

    from utils.metrics import scores_with_ci

    result = {name: list(v) for name, v in scores_with_ci(y, probs, None, n_boot=n_boot).items()
              if name in ("accuracy", "AUC", "macro-F1")}  # fmt: skip
    per_class = f1_score(y, probs.argmax(axis=1), average=None, labels=range(probs.shape[1]), zero_division=0)
    return result | {"F1 per class": [round(float(f), 4) for f in per_class]}


def three_class_levers(run, n_boot: int, name: str | None = None) -> tuple[list[dict], dict]:
    """A three-class run decided by its argmax (the course's rule), by per-class offsets chosen on validation
    (:func:`class_offsets`), and by the EM prior shift from each reference prior (:func:`train_priors`): the
    three-class test split (50 per class) has other class shares than training (about 26/48/26%)."""
    name = name or f"{run.model_name} ({len(run.class_names)} classes)"
    data = {split: run.arrays(split) for split in SPLITS}
    rows = [{"model": name, "lever": "argmax (the course's rule)", **{s: score_classes(*data[s], n_boot) for s in SPLITS}}]
    offsets = class_offsets(*data["val"])
    rows.append({"model": name, "lever": f"per-class offsets chosen on val ({fmt_offsets(offsets, run.class_names)})",
                 **{s: score_classes(y, shift_probs(p, offsets), n_boot) for s, (y, p) in data.items()}})  # fmt: skip
    details = {"run_dir": str(run.path), "class_names": run.class_names, "offsets": offsets.round(2).tolist(), "em": {}}
    for prior_name, reference in train_priors(run).items():
        row = {"model": name, "lever": f"EM prior shift (π_train {prior_name} {fmt_prior(reference)})"}
        details["em"][prior_name] = {"train_prior": reference.round(4).tolist()}
        for split, (y, p) in data.items():
            adjusted, estimate, iterations = prior_shift_em(p, reference)
            row[split] = score_classes(y, adjusted, n_boot)
            details["em"][prior_name][split] = {
                "estimated_prior": estimate.round(4).tolist(), "iterations": iterations,
                "true_prior": (np.bincount(y, minlength=p.shape[1]) / len(y)).round(4).tolist(),
                "decisions_changed": int((adjusted.argmax(axis=1) != p.argmax(axis=1)).sum())}  # fmt: skip
        rows.append(row)
    adjusted, details["calibrated_em"] = calibrated_em(data)
    rows.append({"model": name, "lever": f"BCTS on val (T {details['calibrated_em']['temperature']:.2f}) + EM from "
                 "val's shares, argmax", **{s: score_classes(data[s][0], adjusted[s], n_boot) for s in SPLITS}})  # fmt: skip
    return rows, details


def fmt_offsets(offsets: np.ndarray, class_names: list[str]) -> str:
    return ", ".join(f"{c} {o:+.1f}" for c, o in zip(class_names, offsets, strict=True))


def three_class_table(rows: list[dict], class_names: list[str]) -> str:
    def cells(s: dict) -> list[str]:
        out = [f"{s['accuracy'][0]:.3f}"]
        for metric in ("AUC", "macro-F1"):
            value, low, high = s[metric]
            out.append(f"{value:.3f} [{low:.3f}, {high:.3f}]")
        return out + ["/".join(f"{f:.2f}" for f in s["F1 per class"])]

    per_class = f"F1 {'/'.join(class_names)}"
    head = ["model", "lever", *(f"{split} {m}" for split in SPLITS for m in
                                ("accuracy", "AUC [95% CI]", "macro-F1 [95% CI]", per_class))]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([row["model"], row["lever"], *cells(row["val"]), *cells(row["test"])]) + " |")
    return "\n".join(lines)


def ensemble(runs: list, n_boot: int) -> tuple[dict, dict]:
    """The mean probability of ``runs`` on the images they all scored, threshold chosen on its validation part."""
    from utils.metrics import choose_threshold

    merged, counts = mean_probs(runs)
    threshold = choose_threshold(*merged["val"])
    name = "+".join(run_label(run, runs) for run in runs)
    row = {"model": name, "lever": "ensemble (mean probability), threshold chosen on val", "threshold": threshold,
           **{s: score(*merged[s], threshold, n_boot) for s in SPLITS}}  # fmt: skip
    return row, {"models": name, "threshold": threshold, "images": counts}


def three_class_ensemble(runs: list, n_boot: int) -> dict:
    """The mean probability of three-class ``runs`` (seeds of one recipe, or different models) on the images they
    share, argmax."""
    merged, counts = mean_probs(runs)
    models = sorted({run.model_name for run in runs})
    if len(models) == 1:
        members = "seeds " + ", ".join(str(run.config.get("seed")) for run in runs)
    else:
        members = ", ".join(f"{run.model_name} seed {run.config.get('seed')}" for run in runs)
    return {"model": f"{'+'.join(models)} ({len(runs[0].class_names)} classes)",
            "lever": f"ensemble of {len(runs)} runs ({members}; mean probability), argmax; images "
                     + ", ".join(f"{s} {n}" for s, n in counts.items()),
            **{s: score_classes(*merged[s], n_boot) for s in SPLITS}}  # fmt: skip


def mean_probs(runs: list) -> tuple[dict, dict]:
    """``({split: (y, mean probs)}, {split: images})`` over the images every run scored (matched by path)."""
    merged, counts = {}, {}
    for split in SPLITS:
        tables = []
        for run in runs:
            paths, y, p = split_rows(run, split)
            tables.append({path: (label, prob) for path, label, prob in zip(paths, y, p, strict=True)})
        shared = [path for path in tables[0] if all(path in t for t in tables[1:])]
        y = np.array([tables[0][path][0] for path in shared])
        if any(t[path][0] != tables[0][path][0] for t in tables[1:] for path in shared):
            raise ValueError(f"The runs disagree about the labels of some {split} images.")
        merged[split] = y, np.mean([[t[path][1] for path in shared] for t in tables], axis=0)
        counts[split] = len(shared)
    return merged, counts


def fmt_prior(prior: np.ndarray) -> str:
    return "/".join(f"{p:.2f}" for p in prior)


def markdown_table(rows: list[dict], images: dict[str, str]) -> str:
    def cells(s: dict) -> list[str]:
        auc = s["AUC"]
        return [f"{s['accuracy'][0]:.3f}", f"{auc[0]:.3f} [{auc[1]:.3f}, {auc[2]:.3f}]", f"{s['sensitivity'][0]:.3f}",
                f"{s['specificity'][0]:.3f}"]  # fmt: skip

    head = ["model", "lever", "threshold", *(f"{split} {m}" for split in SPLITS for m in
                                              ("accuracy", "AUC [95% CI]", "sensitivity", "specificity"))]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        body = [row["model"], row["lever"], f"{row['threshold']:.3f}", *cells(row["val"]), *cells(row["test"])]
        lines.append("| " + " | ".join(body) + " |")
    lines.append("")
    lines.append("Images: " + "; ".join(f"{model}: {text}" for model, text in images.items()))
    return "\n".join(lines)


def em_table(details: dict) -> str:
    lines = ["| model | π_train | split | true prior | EM prior | EM rounds | threshold -> moved | "
             "max abs change of p | decisions changed |", "|" + "---|" * 9]  # fmt: skip
    for model, d in details.items():
        for prior_name, em in d["em"].items():
            for split in SPLITS:
                e = em[split]
                lines.append(f"| {model} | {prior_name} {fmt_prior(em['train_prior'])} | {split} | "
                             f"{fmt_prior(e['true_prior'])} | {fmt_prior(e['estimated_prior'])} | {e['iterations']} | "
                             f"{d['threshold']:.3f} -> {e['moved_threshold']:.3f} | {e['max_abs_change']:.3f} | "
                             f"{e['decisions_changed']} |")  # fmt: skip
    return "\n".join(lines)


# --- runs ----------------------------------------------------------------------------------------------------------


def default_runs(output: Path, dataset: str = "pneumonia") -> list:
    """The latest complete run of every model on ``dataset`` under ``output``."""
    from utils.course.runs import latest_runs

    return list(latest_runs(output, dataset).values())


def make_quick_runs(output: Path) -> list:
    """Two finished runs (``cnn`` and ``mobilenet_025``) of fixed-weight brightness models on small generated
    images whose test split has another class prior (1:1, training and validation 1:3): for the tests, in seconds."""
    import keras
    import pandas as pd
    from PIL import Image

    from utils.course.config import get_settings
    from utils.course.runs import finish_run, start_run
    from utils.data import make_data

    size, classes = 32, ["NORMAL", "PNEUMONIA"]
    rng = np.random.default_rng(0)
    rows = []
    counts = {"train": (10, 30), "val": (16, 48), "test": (30, 30)}
    for split, (n_normal, n_pneumonia) in counts.items():
        for label, n in zip(classes, (n_normal, n_pneumonia), strict=True):
            for i in range(n):
                mean = {"NORMAL": 100, "PNEUMONIA": 135}[label] + rng.normal(0, 12)
                pixels = np.zeros((size, size))
                pixels[4:-4, 4:-4] = rng.normal(mean, 25, (size - 8, size - 8))
                path = output / "images" / split / label / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").save(path)
                rows.append({"path": str(path), "label": label, "split": split, "bytes": path.stat().st_size})
    manifest = pd.DataFrame(rows)
    settings = get_settings("smoke").with_(dataset="synthetic", output_dir=output, image_size=size)
    data = make_data(manifest, classes, size, 16, seed=0)
    made = []
    for model_name, scale in [("cnn", 3.0), ("mobilenet_025", 2.2)]:
        inputs = keras.Input((size, size, 3))
        outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
        model = keras.Model(inputs, outputs)
        # The black border makes an image's mean 0.56 x its inner mean: about N(56, 7) for NORMAL, N(76, 7) for
        # PNEUMONIA. With the training prior 1:3 the Bayes posterior has logit(PNEUMONIA) - logit(NORMAL) =
        # (mean - 66) / 2.2 + log 3: MobileNet's stand-in is about calibrated, the CNN's a little under-confident.
        model.layers[-1].set_weights([np.array([[0.0, 1 / (3 * scale)]] * 3, np.float32),
                                      np.array([0.0, np.log(3) - 66 / scale], np.float32)])  # fmt: skip
        run = start_run(settings, model_name, manifest, classes, "none (fixed weights, quick test)")
        made.append(finish_run(run, model, data, gradcam_layer="", train_seconds=0.0))
    return made


# --- command line ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, metavar="DIR", help="run folders (default: latest runs)")
    parser.add_argument("--output", type=Path, help="where runs are looked for and levers.json goes "
                        "(default outputs/benchmarks, outputs/benchmarks/quick-levers with --quick)")  # fmt: skip
    parser.add_argument("--dataset", default="pneumonia", help="dataset of the default runs (default pneumonia)")
    parser.add_argument("--n-boot", type=int, help="bootstrap draws for the intervals (default 1000)")
    parser.add_argument("--no-tta", action="store_true", help="skip test-time augmentation")
    parser.add_argument("--no-adabn", action="store_true", help="skip AdaBN")
    parser.add_argument("--no-aspect", action="store_true", help="skip the aspect-ratio probe (with --no-tta and "
                        "--no-adabn: no model is run)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="two tiny fake runs (for tests)")
    args = parser.parse_args(argv)
    args.output = args.output or (OUTPUT / "quick-levers" if args.quick else OUTPUT)
    args.n_boot = args.n_boot or (200 if args.quick else 1000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.course.runtime import quiet_libraries

    quiet_libraries()  # before anything imports TensorFlow
    from utils.course.runs import RunError, load_run

    try:
        if args.quick:
            runs = make_quick_runs(args.output)
        elif args.runs:
            runs = [load_run(path) for path in args.runs]
        else:
            runs = default_runs(args.output, args.dataset)
    except RunError as err:
        print(f"Skipped: {err}")
        return 0
    three = [run for run in runs if len(run.class_names) == 3 and "NORMAL" in run.class_names]
    runs = [run for run in runs if run not in three]
    for run in runs + three:
        two_class = len(run.class_names) == 2 and run.threshold is not None
        if run.config.get("status") != "complete" or not (two_class or run in three):
            print(f"error: {run.path} is neither a complete two-class run nor a complete three-class run with NORMAL "
                  f"(status {run.config.get('status')}).", file=sys.stderr)  # fmt: skip
            return 2
    runs = sorted(runs, key=lambda r: (r.model_name, r.config.get("seed", 0)))
    rows, details, images = [], {}, {}
    three_rows = []
    for run in three:
        print(f"{run.model_name} ({', '.join(run.class_names)}): {run.path}", flush=True)
        name = f"{run_label(run, three)} ({len(run.class_names)} classes)"  # seeds of one recipe: by seed
        rows.append(binary_of_three_class(run, args.n_boot) | {"model": name})
        images[name] = ", ".join(f"{s} {len(run.arrays(s)[0])}" for s in SPLITS)
        run_rows, details[name] = three_class_levers(run, args.n_boot, name)
        three_rows += run_rows
    for run in runs:
        name = run_label(run, runs)
        print(f"{name}: {run.path} ({run.config['image_size']} px, threshold {run.threshold:.3f})", flush=True)
        run_rows, details[name] = levers_of_run(run, runs, args)
        rows += run_rows
        images[name] = ", ".join(
            f"{s} {len(y)} ({', '.join(f'{c} {n}' for c, n in zip(run.class_names, np.bincount(y, minlength=2), strict=True))})"
            for s in SPLITS for y in [run.arrays(s)[0]])  # fmt: skip
    if len(three) >= 2:
        three_rows.append(three_class_ensemble(three, args.n_boot))
    if len(runs) >= 2:
        row, details["ensemble"] = ensemble(runs, args.n_boot)
        rows.append(row)
        images[row["model"]] = ", ".join(f"{s} {n} shared" for s, n in details["ensemble"]["images"].items())
    result = {"runs": [str(run.path) for run in runs + three], "n_boot": args.n_boot, "rows": rows,
              "three_class_rows": three_rows, "details": details,
              "note": "every threshold chosen on validation; EM reads test predictions without labels"}  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "levers.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\n{markdown_table(rows, images)}")
    binary_em = {k: v for k, v in details.items() if "em" in v and "threshold" in v}
    if binary_em:
        print(f"\nEM details (estimated from each split's unlabelled predictions):\n\n{em_table(binary_em)}")
    for model, d in details.items():
        if "calibrated_em" in d:
            c = d["calibrated_em"]
            print(f"\nBCTS {model}: T {c['temperature']:.2f}, bias {fmt_prior(c['bias'])}; EM from val's shares "
                  f"{fmt_prior(c['train_prior'])}: " + "; ".join(
                  f"{s} prior {fmt_prior(c[s]['estimated_prior'])} (true {fmt_prior(c[s]['true_prior'])})"
                  for s in SPLITS))  # fmt: skip
    if any("aspect" in d for d in details.values()):
        names = {run_label(run, runs): run.class_names for run in runs}
        print("\nAspect-ratio probe (a diagnostic: images zoomed in by 1.2 across or down, the validation threshold):"
              f"\n\n{aspect_table(details, names)}")  # fmt: skip
    if three_rows:
        print("\nThree classes, decided among all three (every choice made on validation):\n\n"
              + three_class_table(three_rows, three[0].class_names))
    for model, d in details.items():
        if "tta" in d:
            aucs = d["tta"]["per_view_auc"]
            print(f"\nTTA {model}, AUC of each view (val / test): " + "; ".join(
                f"{view} {aucs['val'][view]:.3f} / {aucs['test'][view]:.3f}" for view in VIEWS) +
                "; identity view vs saved predictions, max |diff|: " + ", ".join(
                f"{s} {v:.1e}" for s, v in d["tta"]["identity_vs_saved_max_abs_diff"].items()))  # fmt: skip
    print(f"\n{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
