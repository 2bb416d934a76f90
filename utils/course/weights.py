"""Which starting weights a backbone gets: ImageNet when the file is here or can be downloaded, random otherwise,
and always said loudly (``weights_used`` in the run, a banner on screen).

Choices (``CXR_WEIGHTS`` / ``--weights``): ``imagenet`` (fail within seconds, saying what to do, when the file is
neither on disk nor downloadable), ``auto`` (ImageNet, else random weights with a banner), ``cached`` (ImageNet
only when the file is already on disk: never downloads), ``none`` (random) or a weights file. Files are looked
for in Keras's cache (``$KERAS_HOME/models/``, default ``~/.keras/models/``) and in the course's ``weights/``.
Every file but the hash-checked shipped one is loaded into the backbone once before it is used, so that a damaged
file or one for another network fails with a :class:`WeightsError` naming it, not with h5py's or Keras's traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from .config import PROJECT_ROOT
from .download import connection_problem

if TYPE_CHECKING:
    from ..models import Backbone

SHIPPED = PROJECT_ROOT / "weights"
SHIPPED_SHA256 = {"mobilenet_2_5_224_tf_no_top.h5": "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"}
WEIGHTS_HOST = ("storage.googleapis.com", 443)  # where keras.applications downloads from
FILES = {"vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
         "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
         "densenet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"}  # fmt: skip


class WeightsError(ValueError):
    """The requested weights cannot be used; the message says what to do."""


def keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "models"


def imagenet_file(backbone: Backbone, image_size: int) -> str:
    """Keras's file name for ``backbone``'s ImageNet weights (MobileNet's depend on width and input size)."""
    if backbone.application.__name__ != "MobileNet":
        return FILES[backbone.name]
    alpha = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[float(backbone.options.get("alpha", 1.0))]
    return f"mobilenet_{alpha}_{image_size if image_size in (128, 160, 192, 224) else 224}_tf_no_top.h5"


def _on_disk(name: str) -> Path | None:
    """The file in Keras's cache or among the course's shipped weights (a :class:`WeightsError` when a shipped file
    fails its hash check: never used, never silently replaced by random weights)."""
    if (keras_cache() / name).is_file():
        return keras_cache() / name
    shipped = SHIPPED / name
    if name not in SHIPPED_SHA256 or not shipped.is_file():
        return None
    found = hashlib.sha256(shipped.read_bytes()).hexdigest()
    if found != SHIPPED_SHA256[name]:  # damaged, truncated, or a Git LFS pointer instead of the file
        raise WeightsError(f"{shipped} is damaged (SHA-256 {found[:12]}..., expected {SHIPPED_SHA256[name][:12]}...): "
                           f"restore it (`git checkout -- weights/{name}`, or `git lfs pull`), delete it, or set "
                           "CXR_WEIGHTS=none.")  # fmt: skip
    return shipped


def network_problem(timeout: float = 3.0) -> str | None:
    """None when Keras's download host answers within ``timeout`` seconds, else why not."""
    return connection_problem(*WEIGHTS_HOST, timeout)


def random_banner(name: str, reason: str) -> str:
    """A boxed warning, as loud as the synthetic-data one, that says why and how to get the ImageNet weights."""
    text = [f"RANDOM WEIGHTS: {name} starts from random weights, not ImageNet: this is NOT transfer learning.",
            f"Why: {reason}", f"Fix: connect to the internet, put the file in {keras_cache()}/, or set "
            "CXR_WEIGHTS=/path/to/file.h5."]  # fmt: skip
    lines = [part for paragraph in text for part in textwrap.wrap(paragraph, 94)]
    return "\n".join(["!" * 100, *(f"!! {line:<94} !!" for line in lines), "!" * 100])


def _load_problem(backbone: Backbone, path: str, err: Exception, in_cache: bool) -> str:
    """What is wrong with the weights file ``path`` that Keras failed to load into ``backbone``, and what to do."""
    why = " ".join(str(err).split()).rstrip(".")
    why = why[:1].lower() + (why[1:] if len(why) <= 200 else f"{why[1:197]}...")
    if in_cache:  # found under Keras's own file name
        shipped = "the course's copy in weights/ is then used" if (SHIPPED / Path(path).name).is_file() else (
            "CXR_WEIGHTS=auto or imagenet downloads it again when online")  # fmt: skip
        fix = f"delete it ({shipped}), or set CXR_WEIGHTS=none."
    else:
        fix = (f"give a Keras 'no top' weights file for {backbone.name}, or set CXR_WEIGHTS (or --weights) to "
               "imagenet, auto or none.")  # fmt: skip
    if isinstance(err, OSError) and "truncated file" in why:
        sizes = re.search(r"eof = (\d+).*stored_eof = (\d+)", why)
        size = f": {int(sizes[1]):,} of {int(sizes[2]):,} bytes" if sizes else ""
        again = "" if in_cache else "copy or download it again, or "
        return f"{path} is damaged (truncated{size}): {again}{fix}"
    if isinstance(err, OSError) and "signature not found" in why:
        return f"{path} is not a weights file (not HDF5: file signature not found): {fix}"
    if isinstance(err, OSError):
        return f"{path} cannot be read ({why}): {fix}"
    if "format not supported" in why.lower():
        return f"{path} is not a Keras weights file (Keras loads .h5, .weights.h5 and .keras files): {fix}"
    return f"{path} is not weights for {backbone.name} ({why}): {fix}"


def check_loads(backbone: Backbone, path: str, image_size: int, in_cache: bool = False) -> None:
    """Load the weights file ``path`` into ``backbone`` as ``build_transfer_model`` will (``keras.applications``
    calls ``load_weights``); a :class:`WeightsError` naming the file, what is wrong and what to do when it fails.
    Only the load is guarded: a problem building the backbone itself is raised as it is."""
    shape = (image_size, image_size, 3)
    net = backbone.application(include_top=False, weights=None, input_shape=shape, **backbone.options)
    try:
        net.load_weights(path)
    except (OSError, ValueError) as err:  # h5py: not HDF5, truncated; Keras: another network, another format
        raise WeightsError(_load_problem(backbone, path, err, in_cache)) from err


def resolve_weights(backbone: Backbone | None, choice: str, image_size: int) -> tuple[str | None, str]:
    """``(what keras.applications gets, what the run records)``: a file path, ``"imagenet"`` (Keras downloads it)
    or None (random weights; printed loudly unless they were asked for). A file is loaded into ``backbone`` once
    first (:func:`check_loads`), unless it is the shipped file that passed its hash check."""
    if backbone is None:
        return None, "none (trained from scratch)"
    if choice == "none":
        return None, "none (random weights, as asked)"
    if choice not in ("imagenet", "auto", "cached"):
        check_loads(backbone, choice, image_size)
        return choice, f"file {Path(choice).name}"
    name = imagenet_file(backbone, image_size)
    found = _on_disk(name) or (_on_disk(imagenet_file(backbone, 224)) if "mobilenet" in name else None)
    if found is not None:
        if found.parent != SHIPPED:  # Keras's cache: a download cut short or a file copied there, unchecked
            check_loads(backbone, str(found), image_size, in_cache=True)
        return str(found), "imagenet" + ("" if found.name == name else f" (the 224 px file, at {image_size} px)")
    problem = "it is never downloaded with CXR_WEIGHTS=cached" if choice == "cached" else network_problem()
    if problem is None:
        return "imagenet", "imagenet"
    reason = f"{name} is not in {keras_cache()}/ and {problem}"
    if choice == "imagenet":
        raise WeightsError(f"ImageNet weights for {backbone.name} are not available: {reason}. Connect to the internet, "
                           f"copy the file there, or use CXR_WEIGHTS=auto (random weights, clearly marked).")  # fmt: skip
    print(random_banner(backbone.name, reason))
    return None, f"random (ImageNet weights unavailable: {name} not on disk, no download)"
