"""The Gradio demo as a person uses it: a real (headless) Chromium opens the page, uploads an X-ray, clicks
Classify, and reads the probabilities, the Grad-CAM overlay and the disclaimer. The page is saved as
``outputs/demo.png``. Needs Chromium or Google Chrome (``.ci/run`` installs Debian's ``chromium`` when neither is
there); skipped, saying so, without one."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from utils.course.config import PROJECT_ROOT, get_settings

pytestmark = pytest.mark.slow
BROWSERS = ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("google-chrome"))  # Debian; GitHub's runners
CHROMIUM = next((p for p in BROWSERS if p and Path(p).is_file()), None)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory, synthetic_source):
    """A tiny trained cnn run (64 px, 1 epoch) served by its demo on 127.0.0.1."""
    if CHROMIUM is None:
        pytest.skip("no chromium or google-chrome binary: `apt-get install chromium` to run the browser test")
    from utils.course.experiment import train_model
    from utils.course.manifest import prepare_dataset
    from utils.deploy import MAX_UPLOAD, build_demo

    root = tmp_path_factory.mktemp("browser")
    settings = get_settings("smoke").with_(dataset="synthetic", data_dir=root / "data", output_dir=root / "outputs",
                                           source=synthetic_source, image_size=64, epochs=1)  # fmt: skip
    prepare_dataset(settings, "synthetic")
    run = train_model(settings, "cnn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_demo(run)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, max_file_size=MAX_UPLOAD)
    yield app.local_url, run
    app.close()


def test_upload_classify_and_read_the_page(demo_url):
    from playwright.sync_api import expect, sync_playwright

    from utils.data import load_images
    from utils.metrics import predict_classes

    url, run = demo_url
    xray = run.manifest().query("split == 'test'")["path"].iloc[0]
    probs = run.load_model().predict(load_images([xray], int(run.config["image_size"])), verbose=0)
    decided = run.class_names[int(predict_classes(probs, run.threshold)[0])]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url, wait_until="domcontentloaded")
        expect(page.get_by_text("Educational demo, not a medical device")).to_be_visible(timeout=30_000)
        expect(page.get_by_text(run.title, exact=False)).to_be_visible()
        page.locator("input[type=file]").first.set_input_files(xray)
        page.get_by_role("button", name="Classify").click()
        decision = page.get_by_text("Decision:")
        expect(decision).to_be_visible(timeout=30_000)
        assert f"Decision: {decided}" in decision.inner_text()  # the run's own rule, computed below
        for name in run.class_names:  # gr.Label lists every class with its probability
            expect(page.get_by_test_id("label").get_by_text(name).first).to_be_visible()
        overlay = page.locator("img[src*='image.webp'], img[src*='/file=']").last  # the Grad-CAM output image
        expect(overlay).to_be_visible(timeout=10_000)
        assert page.evaluate("(img) => img.naturalWidth", overlay.element_handle()) == 320  # 64 px x 5
        out = PROJECT_ROOT / "outputs" / "demo.png"
        out.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    assert out.stat().st_size > 10_000
