"""The course's embedded dataset: deterministic chest-X-ray-like images with lesion masks, made with NumPy.

Each image is drawn in an "attenuation" map (bright = dense), in patient coordinates where the body's half
width is 1, ``x`` runs to the image's right (the patient's left) and ``y`` runs down from about the lung apices
(0) to below the costophrenic angles (~1.7). The anatomy model, one smooth soft-edged shape per structure:

* soft tissue: a cylinder (brighter in the middle, fading at the edges) with a narrower neck above the shoulders;
* lung fields: two rounded super-ellipses, narrower at the apex, cut below by dome-shaped hemidiaphragms (the
  image-left one, over the liver, sits higher) and medially by the mediastinum; they are the dark regions;
* mediastinum and spine: a bright central band with faint vertebral periodicity; the heart shadow is a tilted
  ellipse resting on the diaphragm, shifted to the image's right (the patient's left);
* ribs: posterior ribs as arches (a periodic band pattern along a curved coordinate, wider apart lower down) and
  fainter anterior ribs sloping down towards the midline; clavicles as two bright bands near the top;
* vessels: radial streaks from each hilum, fading towards the periphery, in every image;
* acquisition: size, aspect, field of view, small rotation, blur, window/level, gamma, exposure gradient and
  noise vary per image, so that brightness and contrast overlap across classes (no global-intensity shortcut).

The classes differ only inside the lungs:

* NORMAL: clean lungs (vessels only);
* BACTERIA: one lobar consolidation, an irregular blob (a circle with random harmonics) in one lung field, upper,
  middle or lower zone, of random size and density (from faint to dense), with air-bronchogram texture;
* VIRUS: diffuse bilateral interstitial change: a reticular network plus peribronchial streaks and haze in both
  lungs, strongest around the hila, of random extent and strength.

The lesion mask (PNG, 0/255, the image's size) is the consolidation, or the interstitial region for VIRUS;
both are clipped to the visible lung fields. A patient's anatomy and lesion come from a patient seed; each of
their 1-3 images adds its own acquisition from an image seed, so patient-grouped splits matter.

The folder follows the Kermany Kaggle layout (``train|test/NORMAL/IM-0001-0001.png``,
``train|test/PNEUMONIA/person12_bacteria_3.png``), with masks in ``<class folder>/masks/<same name>``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .datasets import COMPLETE, DatasetError, kermany_three_class

SYNTHETIC_VERSION = "2.0"
CLASSES = ("NORMAL", "BACTERIA", "VIRUS")
MASK_FOLDER = "masks"
IMAGES_PER_PATIENT = {1: 0.55, 2: 0.3, 3: 0.15}  # probabilities, the same for every class
# Images per split and class: NORMAL is 27% of train and 37.5% of test, as in Kermany's official splits.
COUNTS = {"train": {"NORMAL": 90, "BACTERIA": 125, "VIRUS": 115}, "test": {"NORMAL": 45, "BACTERIA": 38, "VIRUS": 37}}

_TEXTURE_SCALE = (0.03, 0.08)  # patient units: the reticular pattern is noise band-passed between these
_POLAR_SHAPE = (192, 24)  # angle cells x radius cells of the streak field
_POLAR_RADIUS = 1.5
_STEP = 2  # the anatomy is drawn on a grid this many times coarser than the image


@dataclass(frozen=True)
class SyntheticCase:
    """One rendered image: uint8 pixels (H, W), its lesion mask and the visible lung fields (bool, H x W)."""

    image: np.ndarray
    lesion: np.ndarray
    lungs: np.ndarray


# --- Small shape helpers -----------------------------------------------------------------------------------------
# Arrays are float32; scalars are Python floats so that they do not promote arrays to float64.


def _smooth(d: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 smooth step across ``d`` = 0, ``width`` wide (signed distance-like ``d``, positive inside)."""
    t = np.clip(d * (1.0 / width) + 0.5, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _dog_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    small: tuple[float, float],
    large: tuple[float, float],
    wrap: bool = False,
) -> np.ndarray:
    """Band-pass (difference of Gaussians) white noise scaled to unit standard deviation."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    mode = "wrap" if wrap else "reflect"
    field = ndimage.gaussian_filter(noise, small, mode=mode, truncate=2.5) - ndimage.gaussian_filter(
        noise, large, mode=mode, truncate=2.5
    )
    return field / float(field.std() + 1e-6)


def _sample(field: np.ndarray, rows: np.ndarray, cols: np.ndarray, wrap: bool = False) -> np.ndarray:
    """Bilinear look-up of ``field`` at fractional indices (rows wrap around when ``wrap``)."""
    return ndimage.map_coordinates(
        field, [rows, cols], order=1, mode="grid-wrap" if wrap else "nearest", prefilter=False
    )


def _upsample(field: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float32 map to ``height`` x ``width``."""
    return np.asarray(Image.fromarray(field, "F").resize((width, height), Image.Resampling.BILINEAR))


# --- Patient: anatomy and lesion -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patient:
    label: str
    a: dict[str, float]  # anatomy numbers (see _sample_patient)
    lesion: dict[str, float]
    streaks: np.ndarray  # noise over (angle, radius) around the hila: vessels and bronchograms


def _diaphragm(x: np.ndarray, a: dict[str, float]) -> np.ndarray:
    """Height ``y`` of the hemidiaphragm under each ``x``: two domes, the image-left one higher."""
    u = np.abs(x - a["mid_x"])
    medial, lateral = a["med_w"], a["lung_lat"]
    dome_u = medial + a["dome_pos"] * (lateral - medial)
    top = np.where(x < a["mid_x"], np.float32(a["base"] - a["dome_l"]), np.float32(a["base"] - a["dome_r"]))
    bend = np.minimum(np.square((u - dome_u) * (1.0 / (lateral - dome_u))), 1.5)
    return top + (a["base"] - top) * bend


def _lungs(x: np.ndarray, y: np.ndarray, a: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Both lung fields as two signed distance-like maps (positive inside): the rounded outline and the
    height above the diaphragm. ``_smooth`` of their minimum is the soft lung field."""
    u = np.abs(x - a["mid_x"])
    medial, lateral = a["med_w"] + 0.02, a["lung_lat"]
    top, base = a["apex"], a["base"]
    height = base - top
    full = 0.5 * (lateral - medial)
    t = np.sqrt(np.clip((y - top) * (1.0 / (0.6 * height)), 0.0, 1.0))
    half = full * (0.55 + 0.45 * t)  # narrower, slightly medial apex
    du = np.abs((u - (medial + full - 0.25 * (full - half))) / half)
    dy = np.abs((y - (top + 0.5 * height)) * (2.0 / height))
    outline = 0.5 * (1.0 - (du * du * du + dy * dy * dy))  # a super-ellipse of exponent 3
    return outline, _diaphragm(x, a) - y


def _heart(x: np.ndarray, y: np.ndarray, a: dict[str, float], edge: float) -> np.ndarray:
    c, s = float(np.cos(a["heart_angle"])), float(np.sin(a["heart_angle"]))
    dx, dy = x - a["heart_x"], y - a["heart_y"]
    ex, ey = (c * dx + s * dy) * (1.0 / a["heart_rx"]), (c * dy - s * dx) * (1.0 / a["heart_ry"])
    return _smooth(0.5 * (1.0 - np.sqrt(ex * ex + ey * ey)), edge)


def _hilum(a: dict[str, float], side: int) -> tuple[float, float]:
    return a["mid_x"] + side * (a["med_w"] + 0.1), a["apex"] + a["hilum_t"] * (a["base"] - a["apex"])


def _consolidation_centre(a: dict[str, float], rng: np.random.Generator) -> tuple[float, float]:
    """A point well inside the visible lung field of a random side and zone (upper, middle, lower)."""
    side, zone = int(rng.choice([-1, 1])), int(rng.integers(3))
    t = rng.uniform((0.1, 0.36, 0.6)[zone], (0.36, 0.6, 0.82)[zone], 64)
    cy = (a["apex"] + t * (a["base"] - a["apex"])).astype(np.float32)
    cx = (a["mid_x"] + side * rng.uniform(a["med_w"] + 0.12, a["lung_lat"] - 0.1, 64)).astype(np.float32)
    outline, above = _lungs(cx, cy, a)
    score = np.minimum(outline, above) - 0.5 * _heart(cx, cy, a, 0.04)
    best = int(np.argmax(score > 0.08)) if (score > 0.08).any() else int(np.argmax(score))
    return float(cx[best]), float(cy[best])


def _sample_patient(label: str, rng: np.random.Generator) -> _Patient:
    """A patient's anatomy, streak field and lesion, all from ``rng`` (the patient seed)."""
    if label not in CLASSES:
        raise ValueError(f"Unknown synthetic class {label!r}: use one of {', '.join(CLASSES)}.")
    u = rng.uniform
    a = dict(neck_w=u(0.3, 0.42), shoulder_y=u(-0.25, -0.05), tissue=u(0.4, 0.5), mid_x=u(-0.04, 0.04),
             med_w=u(0.12, 0.17), lung_lat=u(0.8, 0.9), apex=u(0.0, 0.12), lung_dark=u(0.24, 0.3),
             dome_pos=u(0.35, 0.55), hilum_t=u(0.38, 0.46), dense=u(0.26, 0.34), heart_rx=u(0.5, 0.6),
             heart_ry=u(0.27, 0.33), heart_angle=u(0.25, 0.5), rib_gap=u(0.15, 0.19), rib_curve=u(0.5, 1.0),
             rib_peak=u(0.3, 0.45), rib_width=u(0.3, 0.42), rib_amp=u(0.06, 0.1), rib_phase=u(0.0, 1.0),
             rib_slope=u(-0.1, 0.2), ant_amp=u(0.3, 0.6), clav_y=u(0.0, 0.1), clav_tilt=u(0.05, 0.25),
             clav_amp=u(0.06, 0.1), spine_amp=u(0.03, 0.06), vessel_amp=u(0.02, 0.04),
             vessel_reach=u(0.45, 0.7))
    a["base"] = a["apex"] + u(1.35, 1.6)
    a["dome_l"] = u(0.16, 0.28)
    a["dome_r"] = a["dome_l"] - u(0.03, 0.08)
    a["heart_x"] = a["mid_x"] + u(0.16, 0.24)
    a["heart_y"] = a["base"] - a["dome_r"] - 0.35 * a["heart_ry"]
    a["rib_phase_r"] = (a["rib_phase"] + u(-0.15, 0.15)) % 1.0
    streaks = _dog_field(rng, _POLAR_SHAPE, (0.8, 3.0), (2.5, 8.0), wrap=True)

    lesion: dict[str, float] = {}
    if label == "BACTERIA":
        cx, cy = _consolidation_centre(a, rng)
        lesion = dict(cx=cx, cy=cy, radius=u(0.18, 0.42), aspect=u(0.7, 1.4), angle=u(0, np.pi),
                      density=float(np.exp(u(np.log(0.1), np.log(0.4)))), edge=u(0.03, 0.1))
        for k in range(2, 6):
            lesion[f"h{k}"] = u(0.0, 0.22 / (k - 1) ** 0.5)
            lesion[f"p{k}"] = u(0, 2 * np.pi)
    elif label == "VIRUS":
        lesion = dict(reach=u(0.45, 0.85), strength=float(np.exp(u(np.log(0.08), np.log(0.25)))),
                      haze=u(0.4, 1.0), streak=u(0.3, 1.0), left=u(0.7, 1.0), right=u(0.7, 1.0))
    return _Patient(label, a, lesion, streaks)


# --- Rendering -------------------------------------------------------------------------------------------------


def _coordinates(
    height: int, width: int, step: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """Patient coordinates (x, y) of a grid ``step`` times coarser than the image, for this acquisition
    (field of view, shift, small rotation), and the size of one image pixel in patient units."""
    unit = min(width / 2.15, height / 2.25) * rng.uniform(0.88, 1.02)  # image pixels per body half width
    angle = rng.uniform(-0.06, 0.06)
    cx = width / 2 + rng.uniform(-0.04, 0.04) * width
    cy = height / 2 + rng.uniform(-0.05, 0.05) * height
    h, w = -(-height // step), -(-width // step)
    # Centre of coarse pixel j in image pixel units, as a bilinear resize back to full size expects.
    cols = ((np.arange(w, dtype=np.float32) + 0.5) * (width / w) - 0.5 - cx) / unit
    rows = ((np.arange(h, dtype=np.float32) + 0.5) * (height / h) - 0.5 - cy) / unit
    c, s = float(np.cos(angle)), float(np.sin(angle))
    x = c * cols[None, :] + s * rows[:, None]
    y = c * rows[:, None] - s * cols[None, :] + 0.85
    return x, y, 1.0 / unit


def _ribs(x: np.ndarray, y: np.ndarray, u: np.ndarray, a: dict[str, float]) -> np.ndarray:
    """Posterior rib arches and fainter anterior ribs, as periodic bands over curved coordinates."""
    phase = np.where(x < a["mid_x"], np.float32(a["rib_phase"]), np.float32(a["rib_phase_r"]))
    v = y + (a["rib_curve"] * np.square(u - a["rib_peak"]) - a["rib_slope"] * u + 0.3 - a["apex"])
    v = v - 0.06 * v * v  # ribs lie further apart lower down
    dist = np.abs(np.mod(v * (1.0 / a["rib_gap"]) + phase, 1.0) - 0.5)
    w = 0.5 * a["rib_width"]
    band = _smooth(w - dist, 0.08) * (0.7 + 0.3 * _smooth(dist - w + 0.05, 0.05))
    ta = np.abs(np.mod((y + 0.45 * u - a["apex"]) * (1.0 / (1.25 * a["rib_gap"])) + 2 * phase, 1.0) - 0.5)
    anterior = _smooth(0.14 - ta, 0.08) * _smooth(u - 0.15, 0.1)
    reach = _smooth(0.97 - u, 0.06) * _smooth(np.minimum(a["base"] + 0.05 - y, y - a["apex"] + 0.25), 0.1)
    return a["rib_amp"] * (band + a["ant_amp"] * anterior) * reach


def _clavicles(y: np.ndarray, u: np.ndarray, a: dict[str, float]) -> np.ndarray:
    centre = a["clav_y"] + a["clav_tilt"] * (0.1 - u) + 0.25 * np.square(u - 0.4)
    along = _smooth(np.minimum(u - 0.08, 0.8 - u), 0.06)
    return a["clav_amp"] * _smooth(0.035 - np.abs(y - centre), 0.02) * along


def _polar(x: np.ndarray, y: np.ndarray, a: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the nearer hilum, and the angle around it (mirrored so both sides look alike, offset so
    they use different parts of the streak field)."""
    left = x < a["mid_x"]
    (hxl, hy), (hxr, _) = _hilum(a, -1), _hilum(a, 1)
    dx = np.where(left, hxl - x, x - hxr)
    dy = y - hy
    r = np.sqrt(dx * dx + dy * dy)
    return r, np.arctan2(dy, dx) + np.where(left, np.float32(0.0), np.float32(1.3))


def _lesion(
    p: _Patient,
    x: np.ndarray,
    y: np.ndarray,
    lungs: np.ndarray,
    streak: np.ndarray,
    texture: np.ndarray,
    r_hilum: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Added attenuation of the patient's lesion, and a map whose positive part is the lesion (None, None for
    NORMAL)."""
    q = p.lesion
    if p.label == "BACTERIA":
        cx, cy = q["cx"] + rng.normal(0, 0.02), q["cy"] + rng.normal(0, 0.02)
        c, s = float(np.cos(q["angle"])), float(np.sin(q["angle"]))
        dx, dy = x - cx, y - cy
        ex, ey = (c * dx + s * dy) * (1.0 / q["aspect"]), c * dy - s * dx
        rho, theta = np.sqrt(ex * ex + ey * ey), np.arctan2(ey, ex)
        wobble = sum(q[f"h{k}"] * np.cos(k * theta + q[f"p{k}"]) for k in range(2, 6))
        inside = q["radius"] * (1.0 + wobble) - rho
        body = _smooth(inside, q["edge"]) * (1.0 - 0.12 * np.clip(-streak, 0, 2) + 0.08 * texture)
        return (q["density"] * rng.uniform(0.85, 1.15)) * body * lungs, inside
    if p.label == "VIRUS":
        gain = np.where(x < p.a["mid_x"], np.float32(q["left"]), np.float32(q["right"]))
        weight = np.exp(-np.square(r_hilum * (1.0 / q["reach"]))) * gain
        reticular = np.square(np.clip(1.0 - np.abs(texture) * (1.0 / 0.9), 0, 1))
        pattern = reticular + (0.5 * q["streak"]) * np.clip(streak, 0, 3) + q["haze"]
        return (q["strength"] * rng.uniform(0.85, 1.15)) * pattern * weight * lungs, weight - 0.35
    return None, None


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    return labels == (1 + int(np.argmax(np.bincount(labels.ravel())[1:])))


def render_case(label: str, patient_seed: int, image_seed: int) -> SyntheticCase:
    """Render one image of class ``label``: anatomy and lesion from ``patient_seed``, acquisition (size,
    position, blur, window, noise) from ``image_seed``. Deterministic for given seeds.

    The smooth anatomy is drawn on a grid half the image's size and resized; noise is added at full size.
    """
    return _render(_sample_patient(label, np.random.default_rng(patient_seed)), image_seed)


def _render(patient: _Patient, image_seed: int) -> SyntheticCase:
    """One acquisition of ``patient`` (see :func:`render_case`)."""
    label = patient.label
    rng = np.random.default_rng(image_seed)
    a = patient.a
    height = int(rng.integers(192, 321))
    width = int(np.clip(round(height * np.exp(rng.uniform(np.log(0.8), np.log(1.25)))), 192, 320))
    x, y, px = _coordinates(height, width, _STEP, rng)
    edge = max(0.03, 2.5 * px)
    u = np.abs(x - a["mid_x"])

    # Body: a soft-tissue cylinder, narrower at the neck; dense mediastinum, heart and abdomen; dark lungs.
    xb = u / (a["neck_w"] + (1.0 - a["neck_w"]) * _smooth(y - a["shoulder_y"], 0.5))
    body = _smooth(1.0 - xb, 4 * edge)
    att = 0.03 + a["tissue"] * (0.35 + 0.65 * np.sqrt(np.clip(1.0 - xb * xb, 0, 1))) * body
    outline, above = _lungs(x, y, a)
    lungs_soft = _smooth(np.minimum(outline, above), edge)
    mediastinum = _smooth(a["med_w"] + 0.03 * np.clip(y - a["apex"], 0, 1.5) - u, 2 * edge) * (
        0.4 + 0.6 * _smooth(y - a["apex"] + 0.1, 0.3)
    )
    dense = np.maximum(np.maximum(mediastinum, _heart(x, y, a, 2 * edge)), _smooth(-above, 2 * edge)) * body
    graded = 0.6 * lungs_soft + 0.4 * _smooth(np.minimum(outline, above), 0.3)
    att += a["dense"] * dense - a["lung_dark"] * graded * (1.0 - dense)
    trachea = _smooth(0.045 - u, edge) * _smooth(a["apex"] + 0.45 * (a["base"] - a["apex"]) - 0.25 - y, 0.1)
    spine = _smooth(0.08 - u, edge) * (0.6 + 0.4 * np.square(np.cos(y * (np.pi / 0.1))))
    att += (
        a["spine_amp"] * spine
        - 0.08 * trachea
        + (_ribs(x, y, u, a) + _clavicles(y, u, a)) * body * (1.0 - 0.6 * dense)
    )

    # Lung texture: vessels from the hila (every class), then the lesion.
    lungs = lungs_soft * (1.0 - dense)
    r_hilum, angle = _polar(x, y, a)
    streak = _sample(
        patient.streaks,
        angle * (_POLAR_SHAPE[0] / (2 * np.pi)),
        np.minimum(r_hilum * ((_POLAR_SHAPE[1] - 1) / _POLAR_RADIUS), _POLAR_SHAPE[1] - 1.0),
        wrap=True,
    )
    cell = _STEP * px  # patient units per grid cell
    texture = _dog_field(rng, x.shape, (_TEXTURE_SCALE[0] / cell,) * 2, (_TEXTURE_SCALE[1] / cell,) * 2)
    att += (
        a["vessel_amp"]
        * np.clip(streak, 0, 3)
        * np.exp(-np.square(r_hilum * (1.0 / a["vessel_reach"])))
        * lungs
    )
    lesion_att, lesion_map = _lesion(patient, x, y, lungs, streak, texture, r_hilum, rng)
    if lesion_att is not None:
        att += lesion_att

    # Acquisition: blur, exposure gradient, auto window then random level/contrast and gamma, noise.
    att = ndimage.gaussian_filter(att, rng.uniform(0.4, 1.3) / _STEP)
    att += rng.uniform(-0.05, 0.05) * (x * (1 / 1.2)) + rng.uniform(-0.04, 0.04) * ((y - 0.85) * (1 / 1.2))
    low, high = (float(v) for v in np.percentile(att, (0.5, 99.8)))
    low, high = low + rng.uniform(-0.15, 0.12) * (high - low), low + rng.uniform(0.95, 1.25) * (high - low)
    img = _upsample(np.clip((att - low) * (1.0 / (high - low)), 0, 1) ** rng.uniform(0.6, 1.2), width, height)
    noise = rng.standard_normal((height, width), dtype=np.float32) * rng.uniform(0.008, 0.04)
    pixels = np.clip(img + noise * (0.5 + 0.5 * img), 0, 1) * 255.0 + 0.5
    region = _upsample(lungs, width, height) > 0.5
    lesion = np.zeros_like(region)
    if lesion_map is not None:
        lesion = (_upsample(lesion_map, width, height) > 0) & region
        if label == "BACTERIA":
            lesion = _largest_component(lesion)
    return SyntheticCase(pixels.astype(np.uint8), lesion, region)


# --- The dataset folder ------------------------------------------------------------------------------------------


def mask_path(image_path: Path) -> Path:
    """Where the lesion mask of ``image_path`` lives: ``<class folder>/masks/<same file name>``."""
    image_path = Path(image_path)
    return image_path.parent / MASK_FOLDER / image_path.name


def load_mask(image_path: Path, size: int | None = None) -> np.ndarray:
    """The lesion mask of an image as a bool array (H, W), or (size, size) resized with nearest neighbour.

    NORMAL images have no mask file and get an all-False mask of the image's size; an abnormal image without a
    mask raises FileNotFoundError.
    """
    image_path = Path(image_path)
    path = mask_path(image_path)
    if path.exists():
        with Image.open(path) as mask:
            mask = mask.convert("L")
            if size is not None:
                mask = mask.resize((size, size), Image.Resampling.NEAREST)
            return np.asarray(mask) > 127
    if kermany_three_class(image_path.parent.name, image_path.name) != "NORMAL":
        raise FileNotFoundError(
            f"No lesion mask for {image_path} (expected {path}). Masks exist only for the "
            "synthetic dataset's BACTERIA and VIRUS images; regenerate it if one is missing."
        )
    if size is not None:
        return np.zeros((size, size), dtype=bool)
    with Image.open(image_path) as image:
        return np.zeros((image.height, image.width), dtype=bool)


def _patient_counts(n_images: int, rng: np.random.Generator) -> list[int]:
    """Images per patient (1-3) adding up to ``n_images``."""
    counts: list[int] = []
    while sum(counts) < n_images:
        counts.append(int(rng.choice(list(IMAGES_PER_PATIENT), p=list(IMAGES_PER_PATIENT.values()))))
    counts[-1] -= sum(counts) - n_images
    return counts


@dataclass(frozen=True)
class _PlannedPatient:
    split: str
    label: str
    seed: int
    images: tuple[tuple[str, int], ...]  # (path relative to the dataset folder, image seed)


def _plan(counts: dict[str, dict[str, int]], seed: int) -> list[_PlannedPatient]:
    """Every patient to draw, with their images' file names and seeds."""
    rng = np.random.default_rng([seed, 0])
    per_patient = {(s, c): _patient_counts(n, rng) for s, by_class in counts.items() for c, n in by_class.items()}
    # Patient numbers: NORMAL (IM-NNNN) and PNEUMONIA (personN) pools, shuffled, so train and test differ.
    n_normal = sum(len(v) for (_, c), v in per_patient.items() if c == "NORMAL")
    normal_ids = iter(rng.permutation(np.arange(1, n_normal + 1)))
    sick_ids = iter(rng.permutation(np.arange(1, sum(map(len, per_patient.values())) - n_normal + 1)))
    plan, image_no = [], 0
    for (split, label), patients in per_patient.items():
        for n in patients:
            patient = int(next(normal_ids) if label == "NORMAL" else next(sick_ids))
            patient_seed, images = int(rng.integers(2**63)), []
            for k in range(n):
                image_no += 1
                rel = (f"{split}/NORMAL/IM-{patient:04d}-{k + 1:04d}.png" if label == "NORMAL"
                       else f"{split}/PNEUMONIA/person{patient}_{label.lower()}_{image_no}.png")  # fmt: skip
                images.append((rel, int(rng.integers(2**63))))
            plan.append(_PlannedPatient(split, label, patient_seed, tuple(images)))
    return plan


def _write_patient(root: Path, planned: _PlannedPatient) -> None:
    """Render and save one patient's images (and lesion masks) under ``root``."""
    patient = _sample_patient(planned.label, np.random.default_rng(planned.seed))
    for rel, image_seed in planned.images:
        case = _render(patient, image_seed)
        path = root / rel
        Image.fromarray(case.image).save(path, compress_level=1)
        if planned.label != "NORMAL":
            Image.fromarray(case.lesion.astype(np.uint8) * 255).save(mask_path(path), compress_level=1)


def _check_existing(dest: Path, params: dict) -> bool:
    """True when ``dest`` already holds this exact dataset; raises when it holds anything else."""
    marker = dest / COMPLETE
    if marker.exists():
        try:
            found = json.loads(marker.read_text())
        except (OSError, ValueError):
            found = {}
        old = {k: found.get(k) for k in params}
        if old == params:
            return True
        raise DatasetError(
            f"{dest} holds a synthetic dataset made with {old}, not {params}. Nothing was changed: generate into "
            f"another folder (CXR_DATA_DIR), or delete {dest} yourself to regenerate it."
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetError(
            f"{dest} exists and is not a complete synthetic dataset (no {COMPLETE} file). Nothing was changed: "
            "generate into another (new or empty) folder, or move that one away first."
        )
    return False


def generate_synthetic(dest: Path, counts: dict[str, dict[str, int]] = COUNTS, seed: int = 0) -> Path:
    """Write the synthetic dataset (Kermany layout, lesion masks) under ``dest`` and return ``dest``.

    ``counts`` gives images per split and class (default :data:`COUNTS`: 27% NORMAL in train, as in Kermany).
    Writes into a temporary folder beside ``dest``, then renames it into place with a ``.complete`` JSON file
    holding the parameters. A complete folder with the same parameters is reused; any other non-empty folder
    raises :class:`~utils.course.datasets.DatasetError` and is left alone.
    """
    dest = Path(dest).expanduser()
    if min(n for by_class in counts.values() for n in by_class.values()) < 1:
        raise ValueError("Every split and class of the synthetic dataset needs at least one image.")
    params = {"version": SYNTHETIC_VERSION, "seed": int(seed), "counts": counts}
    if _check_existing(dest, params):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        plan = _plan(counts, int(seed))
        for split in counts:
            (tmp / split / "NORMAL").mkdir(parents=True)
            (tmp / split / "PNEUMONIA" / MASK_FOLDER).mkdir(parents=True)
        # Threads: NumPy, SciPy and the PNG encoder release the GIL for most of the work.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(lambda planned: _write_patient(tmp, planned), plan))
        (tmp / COMPLETE).write_text(json.dumps({**params, "generator": "utils.course.synthetic"}, indent=1))
        if dest.is_dir():
            dest.rmdir()  # empty (checked above); a non-empty folder makes this fail and is kept
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (dest / COMPLETE).exists() and _check_existing(dest, params):
            return dest  # another process finished the same dataset meanwhile
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
