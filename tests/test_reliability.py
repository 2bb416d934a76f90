"""Reliability: no silent wrong results and a one-line error for every user mistake. Every case builds its bad
input in a temporary folder, runs the command line in-process (smoke profile, 64 px, random weights) and checks
the outcome: correct handling, or exit status 2 with one line ``error: ...`` on stderr (no traceback), and the
user's images unchanged. One tiny CNN (one epoch) is trained for the whole module and shared."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import one_line_error, write_image, write_tree
from sklearn.metrics import roc_auc_score

from utils.course.cli import main

pytestmark = pytest.mark.slow


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha1}`` of every file under ``root``: equal before and after means nothing changed."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def set_env(mp: pytest.MonkeyPatch, root: Path) -> None:
    for name in [k for k in os.environ if k.startswith("CXR_")]:
        mp.delenv(name)
    mp.setenv("CXR_DATA_DIR", str(root / "data"))
    mp.setenv("CXR_OUTPUT_DIR", str(root / "out"))
    mp.setenv("CXR_PROFILE", "smoke")
    mp.setenv("CXR_WEIGHTS", "none")


def flat_tree(root: Path, classes: tuple[str, ...], n: int, prefix: str) -> Path:
    """``root/<CLASS>/<prefix><class><i>.png``, ``n`` per class: every file its own patient."""
    return write_tree(root, {f"{c}/{prefix}{c.lower()}{{i}}.png": n for c in classes})


def manifest_of(root: Path, dataset_folder: Path) -> pd.DataFrame:
    from utils.course.datasets import dataset_dir_name, get_dataset

    return pd.read_csv(root / "data" / dataset_dir_name(get_dataset(f"folder:{dataset_folder}")) / "manifest.csv")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    set_env(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Three folders all called ``chest_xray``: A (NORMAL, PNEUMONIA) is prepared, then a CNN is trained on B
    (COVID, NORMAL); C holds other COVID/NORMAL images to evaluate on."""
    root = tmp_path_factory.mktemp("reliability")
    a = flat_tree(root / "x/A/chest_xray", ("NORMAL", "PNEUMONIA"), 8, "a")
    b = flat_tree(root / "x/B/chest_xray", ("COVID", "NORMAL"), 10, "b")
    c = flat_tree(root / "x/C/chest_xray", ("COVID", "NORMAL"), 5, "c")
    before = snapshot(root / "x")
    with pytest.MonkeyPatch.context() as mp:
        set_env(mp, root)
        assert main(["prepare", "--dataset", f"folder:{a}"]) == 0
        assert main(["train", "--dataset", f"folder:{b}", "--model", "cnn", "--epochs", "1"]) == 0
    (model_dir,) = [p.parent for p in (root / "out" / "runs").glob("*/cnn/LATEST")]
    run = model_dir / (model_dir / "LATEST").read_text().strip()
    yield SimpleNamespace(root=root, a=a, b=b, c=c, run=run, model_dir=model_dir, before=before)
    assert snapshot(root / "x") == before  # no command changed, added or removed a user file


@pytest.fixture
def world_env(world, monkeypatch: pytest.MonkeyPatch):
    set_env(monkeypatch, world.root)
    return world


def run_dirs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "out" / "runs").glob("*/*/*") if p.is_dir())


# --- 1. Folder datasets with the same name ------------------------------------------------------------------------


def test_two_folders_with_one_name_keep_their_own_manifest_and_run(world_env):
    w = world_env
    config = json.loads((w.run / "config.json").read_text())
    assert config["dataset"] == f"folder:{w.b}" and config["class_names"] == ["COVID", "NORMAL"]
    predictions = pd.read_csv(w.run / "predictions.csv")
    assert len(predictions) > 0 and predictions["path"].str.startswith(f"{w.b}/").all()
    assert pd.read_csv(w.run / "manifest.csv")["path"].str.startswith(f"{w.b}/").all()
    assert manifest_of(w.root, w.a)["label"].unique().tolist() == ["NORMAL", "PNEUMONIA"]
    assert len(list((w.root / "data").glob("folder-chest_xray-*/manifest.csv"))) == 2


def test_evaluate_source_scores_that_folders_images(world_env, capsys):
    import keras

    from utils.data import load_images

    w = world_env
    manifests = {p: p.read_bytes() for p in (w.root / "data").rglob("manifest.csv")}
    assert main(["evaluate", str(w.model_dir), "--source", str(w.c)]) == 0
    result = json.loads(capsys.readouterr().out)
    paths = sorted(str(p) for p in w.c.rglob("*.png"))
    assert result["evaluated"] == str(w.c) and result["images"] == len(paths) == 10
    probs = keras.models.load_model(w.run / "model.keras", compile=False).predict(load_images(paths, 64), verbose=0)
    y = [int("/NORMAL/" in p) for p in paths]  # class 1 of ["COVID", "NORMAL"]
    assert result["scores"]["AUC"]["value"] == pytest.approx(roc_auc_score(y, probs[:, 1]), abs=2e-4)
    assert {p: p.read_bytes() for p in (w.root / "data").rglob("manifest.csv")} == manifests  # none written
    assert main(["evaluate", str(w.model_dir), "--source", str(w.a)]) == 2
    assert "Classes ['PNEUMONIA'] of" in one_line_error(capsys)


# --- 2. Re-preparing under existing runs ----------------------------------------------------------------------------


def test_a_run_keeps_its_split_when_the_dataset_is_prepared_again(world_env, monkeypatch, capsys):
    w = world_env
    own = pd.read_csv(w.run / "manifest.csv")
    monkeypatch.setenv("CXR_SEED", "7")
    assert main(["prepare", "--dataset", f"folder:{w.b}", "--force"]) == 0
    monkeypatch.delenv("CXR_SEED")
    new = manifest_of(w.root, w.b)
    test_now, test_then = (set(m.loc[m["split"] == "test", "path"].str.rsplit("/", n=1).str[-1]) for m in (new, own))
    assert test_now != test_then  # the re-split moved images: some of the run's training images are "test" now
    assert len(list((w.root / "data").glob("folder-chest_xray-*/manifest-*.csv"))) == 1  # the seed-42 one, kept
    capsys.readouterr()
    assert main(["evaluate", str(w.run), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    test = pd.read_csv(w.run / "predictions.csv").query("split == 'test'")
    assert result["images"] == len(test) == (own["split"] == "test").sum()
    auc = roc_auc_score(test["label"] == "NORMAL", test["p_NORMAL"])
    assert result["scores"]["AUC"]["value"] == pytest.approx(auc, abs=2e-4)  # the run's own test images
    assert main(["evaluate", str(w.run), "--split", "train"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == (own["split"] == "train").sum()


# --- 4. Nonsense settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--model", "cnn", "--epochs", "0"], "leave at least one epoch to train, got 0"),
        (["--model", "mobilenet_025", "--epochs", "0", "0"], "leave at least one epoch to train, got 0"),
        (["--model", "mobilenet_025", "--epochs", "-1", "1"], "Epochs must be >= 0"),
        (["--model", "mobilenet_025", "--epochs", "1", "-1"], "Epochs must be >= 0"),
        (["--model", "cnn", "--image-size", "0"], "at least 32 px (the models need it), got 0"),
        (["--model", "cnn", "--image-size", "16"], "at least 32 px (the models need it), got 16"),
    ],
)
def test_nonsense_numbers_are_refused_before_any_run_starts(world_env, capsys, options, says):
    w = world_env
    runs, latest = run_dirs(w.root), (w.model_dir / "LATEST").read_text()
    assert main(["train", "--dataset", f"folder:{w.b}", *options]) == 2
    assert says in one_line_error(capsys)
    assert run_dirs(w.root) == runs and (w.model_dir / "LATEST").read_text() == latest


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_out_of_range_is_refused(env, monkeypatch, capsys, seed):
    tree = flat_tree(env / "xr", ("A", "B"), 3, "")
    monkeypatch.setenv("CXR_SEED", seed)
    assert main(["prepare", "--dataset", f"folder:{tree}"]) == 2
    assert f"CXR_SEED must be a whole number from 0 to 4294967295, got {seed!r}." in one_line_error(capsys)
    assert not (env / "data").exists()


# --- Tracebacks turned into one-line errors ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "missing"])
def test_a_damaged_model_file_is_one_line(world_env, tmp_path, capsys, damage):
    w = world_env
    original = (w.run / "model.keras").read_bytes()
    run = Path(shutil.copytree(w.run, tmp_path / "run"))
    model = run / "model.keras"
    if damage == "missing":
        model.unlink()
    else:
        model.write_bytes({"garbage": b"not a keras file" * 100, "truncated": original[: len(original) // 2],
                           "empty": b""}[damage])  # fmt: skip
    says = "has no model.keras" if damage == "missing" else "cannot be read as a Keras model"
    assert main(["evaluate", str(run)]) == 2
    message = one_line_error(capsys)
    assert says in message and message.endswith(("train the model again.", "train it again."))
    image = next(w.c.rglob("*.png"))
    assert main(["predict", str(run), str(image)]) == 2
    assert says in one_line_error(capsys)
    assert (w.run / "model.keras").read_bytes() == original


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"train/NORMAL/n{i}.png": 3, "train/PNEUMONIA/p{i}.png": 3, "train/EMPTY/": 0}, "EMPTY holds no JPEG/PNG"),
        ({"val/NORMAL/n{i}.png": 3, "val/PNEUMONIA/p{i}.png": 3, "test/NORMAL/t{i}.png": 2}, "but no train/ folder"),
        ({"NORMAL/n{i}.png": 6}, "Found 6 images in 1 class folder(s) under"),
        ({"NORMAL/n{i}.png": 3, "TIFFS/t{i}.tif": 3}, "TIFFS holds no JPEG/PNG"),
    ],
    ids=["empty-class", "no-train", "one-class", "tiff-class"],
)
def test_unusable_layouts_are_one_line_and_write_nothing(env, capsys, files, says):
    tree = write_tree(env / "xr", files)
    for folder in [f for f, n in files.items() if n == 0]:
        (tree / folder).mkdir(parents=True)
    before = snapshot(tree)
    for command in (["prepare"], ["train", "--model", "cnn", "--epochs", "1"]):
        assert main([*command, "--dataset", f"folder:{tree}"]) == 2
        assert says in one_line_error(capsys)
    assert snapshot(tree) == before
    assert not list(env.rglob("manifest.csv")) and not (env / "out").exists()


def test_too_few_patients_for_a_validation_split_is_one_line(env, capsys):
    tree = flat_tree(env / "xr", ("NORMAL", "PNEUMONIA"), 2, "")
    assert main(["prepare", "--dataset", f"folder:{tree}"]) == 0
    assert main(["train", "--dataset", f"folder:{tree}", "--model", "cnn", "--epochs", "1"]) == 2
    message = one_line_error(capsys)
    assert "has no images of NORMAL in val, PNEUMONIA in val after the split by patient" in message
    assert "at least 3 patients" in message and not (env / "out").exists()


def test_images_deleted_or_changed_after_prepare_say_prepare_force(env, capsys):
    tree = flat_tree(env / "xr", ("NORMAL", "PNEUMONIA"), 8, "")
    assert main(["prepare", "--dataset", f"folder:{tree}"]) == 0
    manifest_file = next((env / "data").glob("folder-xr-*/manifest.csv"))
    made = manifest_file.read_bytes()
    (tree / "NORMAL" / "normal3.png").unlink()
    write_image(tree / "PNEUMONIA" / "pneumonia5.png", size=(60, 60), seed=99)
    before = snapshot(tree)
    for command in (["prepare"], ["train", "--model", "cnn", "--epochs", "1"]):
        assert main([*command, "--dataset", f"folder:{tree}"]) == 2
        message = one_line_error(capsys)
        assert "2 image(s) of" in message and "are missing or changed since it was made" in message
        assert f"run `python -m utils prepare --dataset folder:{tree} --force`" in message
    assert manifest_file.read_bytes() == made and not (env / "out").exists()
    assert main(["prepare", "--dataset", f"folder:{tree}", "--force"]) == 0
    rebuilt = pd.read_csv(manifest_file).set_index("path")
    assert len(rebuilt) == 15 and not rebuilt.index.str.endswith("normal3.png").any()
    changed = (tree / "PNEUMONIA" / "pneumonia5.png").stat().st_size
    assert rebuilt.loc[rebuilt.index.str.endswith("pneumonia5.png"), "width"].tolist() == [60]
    assert rebuilt.loc[rebuilt.index.str.endswith("pneumonia5.png"), "bytes"].tolist() == [changed]
    assert snapshot(tree) == before


@pytest.mark.parametrize("change", ["deleted", "changed"])
def test_evaluating_a_run_whose_images_changed_is_one_line(world_env, tmp_path, capsys, change):
    """A copy of the run whose test images are copies too; one of them is then deleted or rewritten."""
    w = world_env
    run = Path(shutil.copytree(w.run, tmp_path / "run"))
    own = pd.read_csv(run / "manifest.csv")
    copies = tmp_path / "images"
    copies.mkdir()
    test = own["split"] == "test"
    for path in own.loc[test, "path"]:
        shutil.copy(path, copies / Path(path).name)
    own.loc[test, "path"] = [str(copies / Path(p).name) for p in own.loc[test, "path"]]
    own.to_csv(run / "manifest.csv", index=False)
    victim = copies / Path(own.loc[test, "path"].iloc[0]).name
    assert main(["evaluate", str(run)]) == 0  # the copies are the same files
    capsys.readouterr()
    if change == "deleted":
        victim.unlink()
    else:
        write_image(victim, size=(70, 50), seed=5)
    assert main(["evaluate", str(run)]) == 2
    message = one_line_error(capsys)
    assert f"1 image(s) of the run's test split are gone or changed since it was trained, e.g. {victim}" in message
    assert "restore them, or train a new run" in message


def test_predict_resizes_to_the_models_own_size(world_env, monkeypatch, tmp_path, capsys):
    w = world_env
    monkeypatch.setenv("CXR_PROFILE", "laptop")  # 128 px; the run's model takes 64 px
    images = [write_image(tmp_path / "big.jpeg", size=(300, 200), mode="RGB"),
              write_image(tmp_path / "tiny.png", size=(20, 20)),
              write_image(tmp_path / "alpha.PNG", size=(90, 120), mode="RGBA")]  # fmt: skip
    assert main(["predict", str(w.run), *map(str, images)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == list(map(str, images))
    for line in lines:
        cells = line.split("\t")[1].split()
        assert cells[::2] == ["COVID", "NORMAL"] and sum(map(float, cells[1::2])) == pytest.approx(1, abs=2e-3)
    bmp = write_image(tmp_path / "scan.bmp")
    assert main(["predict", str(w.run), str(bmp)]) == 2
    assert one_line_error(capsys) == (f"error: {bmp} is a BMP image, which the pipeline cannot decode (it reads JPEG "
                                      "and PNG): convert it to PNG.")


def test_formats_the_pipeline_cannot_read_are_left_out_and_said(env, capsys):
    import tensorflow as tf
    from PIL import Image

    from utils.data import load_image

    tree = flat_tree(env / "xr", ("NORMAL", "PNEUMONIA"), 4, "")
    for name in ("NORMAL/upper.JPG", "NORMAL/x.jpeg", "PNEUMONIA/y.Png", "NORMAL/scan.bmp", "NORMAL/anim.gif",
                 "PNEUMONIA/scan.tif", "PNEUMONIA/scan.webp"):  # fmt: skip
        write_image(tree / name, mode="RGB")
    Image.new("CMYK", (30, 30), (10, 20, 30, 0)).save(tree / "PNEUMONIA/cmyk.jpg")
    shutil.copy(tree / "NORMAL/scan.bmp", tree / "PNEUMONIA/bmp-in-disguise.png")
    before = snapshot(tree)
    assert main(["prepare", "--dataset", f"folder:{tree}"]) == 0
    out = capsys.readouterr().out
    assert "left out 4 file(s) that could not be decoded (damaged, or BMP, GIF or CMYK: convert them to PNG)" in out
    assert "left out 2 file(s) that are in a format the pipeline cannot read (convert them to PNG)" in out
    manifest = pd.read_csv(next((env / "data").glob("folder-xr-*/manifest.csv")))
    names = sorted(manifest["path"].str.rsplit("/", n=1).str[-1])
    assert names == sorted([*(f"normal{i}.png" for i in range(4)), *(f"pneumonia{i}.png" for i in range(4)),
                            "upper.JPG", "x.jpeg", "y.Png"])  # fmt: skip
    report = json.loads(next((env / "data").glob("folder-xr-*/prepare_report.json")).read_text())
    errors = {Path(r["path"]).name: r["error"].split(",")[0] for r in report["unreadable"]}
    assert errors == {"anim.gif": "a GIF image", "bmp-in-disguise.png": "a BMP image", "scan.bmp": "a BMP image",
                      "cmyk.jpg": "a CMYK JPEG"}  # fmt: skip
    folder = next((env / "data").glob("folder-xr-*"))
    for path in manifest["path"]:  # everything kept is read by the training pipeline
        assert tuple(load_image(tf.constant(str(folder / path)), 64).shape) == (64, 64, 1)
    assert snapshot(tree) == before


@pytest.mark.parametrize("command", [["prepare", "--dataset", "synthetic"], ["train", "--dataset", "synthetic", "--model", "cnn"]])
def test_a_source_that_is_a_file_says_so(env, capsys, command):
    notes = env / "chest_xray.zip"
    notes.write_bytes(b"PK\x03\x04 an archive, not extracted")
    assert main([*command, "--source", str(notes)]) == 2
    message = one_line_error(capsys)
    assert f"Source {notes} is a file: give the folder of the extracted archive." in message
    assert "does not exist" not in message and notes.read_bytes().startswith(b"PK")


# --- 3. Contradictory labels, patients ------------------------------------------------------------------------------


def test_an_image_under_two_labels_is_reported_and_left_out(env, capsys):
    tree = flat_tree(env / "xr", ("NORMAL", "PNEUMONIA"), 6, "")
    shutil.copy(tree / "NORMAL/normal2.png", tree / "PNEUMONIA/copy.png")
    before = snapshot(tree)
    assert main(["prepare", "--dataset", f"folder:{tree}"]) == 0
    out = capsys.readouterr().out
    assert "left out 2 file(s) that appear under two labels" in out
    names = set(pd.read_csv(next((env / "data").glob("folder-xr-*/manifest.csv")))["path"].str.rsplit("/", n=1).str[-1])
    assert len(names) == 11 and not names & {"normal2.png", "copy.png"}
    assert snapshot(tree) == before


@pytest.mark.parametrize("layout", ["splits", "flat"])
def test_kermany_names_keep_their_patients_together_in_a_folder_dataset(env, layout):
    splits = layout == "splits"
    files = {}
    for p in range(10):  # 10 patients per class, 1-3 images each
        files[f"{'train/' if splits else ''}NORMAL/IM-{p:04d}-000{{i}}.jpeg"] = 1 + p % 3
        files[f"{'train/' if splits else ''}PNEUMONIA/person{p}_bacteria_{{i}}.jpeg"] = 1 + p % 3
    if splits:
        files |= {"test/NORMAL/NORMAL2-IM-{i}-0001.jpeg": 3, "test/PNEUMONIA/person1{i}_virus_1.jpeg": 3}
    tree = write_tree(env / "wrap" / "chest_xray", files)
    assert main(["prepare", "--dataset", f"folder:{tree}"]) == 0
    manifest = pd.read_csv(next((env / "data").glob("folder-chest_xray-*/manifest.csv")), dtype={"patient_id": str})
    assert manifest["patient_id"].str.fullmatch(r"(test/)?(IM-\d{4}|person\d+|NORMAL2-IM-\d)").all()
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1  # no patient in two splits
    assert manifest["patient_id"].nunique() == 20 + 6 * splits < len(manifest)
    assert set(manifest["split"]) == {"train", "val", "test"}


# --- State on disk ------------------------------------------------------------------------------------------------


def test_a_failed_start_leaves_no_run_and_a_crash_marks_the_run_failed(world_env, monkeypatch, tmp_path, capsys):
    import utils.course.experiment as experiment

    w = world_env
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(tmp_path / "out"))
    assert main(["train", "--dataset", f"folder:{w.b}", "--model", "nope", "--epochs", "1"]) == 2
    assert "Unknown model 'nope'" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(experiment, "compile_and_fit", crash)
    with pytest.raises(RuntimeError, match="out of memory"):  # a bug or a machine fault: its traceback is shown
        main(["train", "--dataset", f"folder:{w.b}", "--model", "cnn", "--epochs", "1"])
    (run,) = [p for p in (tmp_path / "out" / "runs").glob("*/cnn/*") if p.is_dir()]
    assert json.loads((run / "config.json").read_text())["status"] == "failed"
    assert not (run / "model.keras").exists() and not (run.parent / "LATEST").exists()


def test_a_killed_transfer_run_resumes_in_its_own_folder(world_env, monkeypatch, tmp_path, capsys):
    """Interrupted after its first epoch (the head phase), the run is marked ``interrupted``; a run left
    ``running`` (the process was killed) resumes too, from the next epoch, into the same folder."""
    import keras

    import utils.training as training

    w = world_env
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(tmp_path / "out"))

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    real = training.make_callbacks
    monkeypatch.setattr(training, "make_callbacks", lambda *a, **k: [*real(*a, **k), Stop()])
    train = ["train", "--dataset", f"folder:{w.b}", "--model", "mobilenet_025", "--epochs", "1", "1"]
    assert main(train) == 130
    assert "train --resume RUN" in capsys.readouterr().err
    monkeypatch.setattr(training, "make_callbacks", real)
    (run,) = [p for p in (tmp_path / "out" / "runs").glob("*/mobilenet_025/*") if p.is_dir()]
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "interrupted" and (run / "backup" / "head").is_dir()
    assert not (run.parent / "LATEST").exists()
    (run / "config.json").write_text(json.dumps(config | {"status": "running"}))  # as a killed process leaves it
    assert main(["train", "--resume", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "complete" and config["profile"]["finetune_epochs"] == 1
    history = pd.read_csv(run / "history.csv")
    assert history[["epoch", "phase"]].values.tolist() == [[0, "head"], [1, "finetune"]]
    assert (run.parent / "LATEST").read_text() == run.name and not (run / "backup").exists()
    assert [p.name for p in run.parent.iterdir() if p.is_dir()] == [run.name]


def test_another_source_keeps_the_previous_manifest(env, capsys):
    sources = []
    for name in ("one", "two"):
        sources.append(write_tree(env / name / "chest_xray", {f"train/NORMAL/IM-{name}-{{i}}.png": 6,
                                                               f"train/PNEUMONIA/{name}{{i}}.png": 6,
                                                               f"test/NORMAL/t{name}{{i}}.png": 2,
                                                               f"test/PNEUMONIA/u{name}{{i}}.png": 2}))  # fmt: skip
    made = {}
    for source in (*sources, sources[0]):  # three manifests within a second or two: none overwrites another
        assert main(["prepare", "--dataset", "synthetic", "--source", str(source)]) == 0
        made.setdefault(source, (env / "data" / "synthetic" / "manifest.csv").read_text())
    folder = env / "data" / "synthetic"
    kept = sorted(folder.glob("manifest-*.csv"))
    assert len(kept) == 2 and len(list(folder.glob("prepare_report-*.json"))) == 2
    assert sorted(p.read_text() for p in kept) == sorted(made.values())
    assert json.loads((folder / "prepare_report.json").read_text())["source"] == str(sources[0])
    assert not list(folder.glob(".*"))  # atomic writes leave no temporary file


def test_the_dataset_can_come_from_cxr_dataset(env, monkeypatch, capsys):
    tree = flat_tree(env / "my xrays", ("NORMAL", "PNEUMONIA"), 4, "")
    monkeypatch.setenv("CXR_DATASET", f"folder:{tree}")
    assert main(["prepare"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    manifest = Path(out[-1])
    assert manifest.parent.parent == env / "data" and manifest.parent.name.startswith("folder-my_xrays-")
    assert len(pd.read_csv(manifest)) == 8
    assert [line.split()[0] for line in out[2:-1]] == ["NORMAL", "PNEUMONIA"]  # the label x split table


def test_resuming_a_run_whose_images_are_gone_is_one_line(world_env, tmp_path, capsys):
    """An interrupted run (a copy of the module's run, marked so) whose training images are copies, one deleted."""
    w = world_env
    run = Path(shutil.copytree(w.run, tmp_path / "run"))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"status": "interrupted"}))
    own = pd.read_csv(run / "manifest.csv")
    victim = tmp_path / "gone.png"
    shutil.copy(own.loc[own["split"] == "train", "path"].iloc[0], victim)
    own.loc[own.index[own["split"] == "train"][0], "path"] = str(victim)
    own.to_csv(run / "manifest.csv", index=False)
    victim.unlink()
    assert main(["train", "--resume", str(run)]) == 2
    assert one_line_error(capsys) == (f"error: 1 image(s) of {run} are gone or changed since it started, e.g. {victim}: "
                                      "restore them, or train a new run.")  # fmt: skip
    assert json.loads((run / "config.json").read_text())["status"] == "interrupted"
