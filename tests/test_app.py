"""The web app (`modality-forcing app`): served on a free localhost port, driven through
gradio_client tab by tab, and (marked `browser`) loaded in headless Chromium."""

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from modality_forcing.app import launch, render_examples  # noqa: E402
from modality_forcing.cli import build_parser, main  # noqa: E402
from modality_forcing.config import resolve_train_config  # noqa: E402
from modality_forcing.inference.export import load_depth_png16  # noqa: E402
from modality_forcing.inference.pipeline import ModalityForcingPipeline  # noqa: E402
from modality_forcing.training.loop import train  # noqa: E402

RES = 16  # the tiny checkpoint's working resolution


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = resolve_train_config(
        {"preset": "tiny", "out_dir": str(run), "batch_size": 4, "max_steps": 2,
         "precision": "fp32", "sample_every": 0, "data": {"height": RES, "width": RES}}
    )  # fmt: skip
    main(["export-checkpoint", str(train(cfg)), "--out", str(run / "export")])
    return run / "export"


@pytest.fixture(scope="module")
def client(tiny_ckpt):
    port = _free_port()
    app = launch(tiny_ckpt, "127.0.0.1", port, prevent_thread_lock=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        app.close()


def _files(downloads) -> dict[str, Path]:
    """Download paths keyed by file name."""
    return {Path(p).name: Path(p) for p in downloads}


def _check_cloud(glb: Path) -> None:
    scene = trimesh.load(glb)
    clouds = [g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud)]
    assert clouds and len(clouds[0].vertices) > 0


def test_text_tab_writes_rgb_depth_and_cloud(client):
    rgb, depth_color, unc, glb, downloads, info = client.predict(
        "a red sphere on a checkered floor", 2, 3.0, 7, 60, 2.0, 1, api_name="/text_to_rgbd"
    )
    assert np.asarray(Image.open(rgb)).shape == (RES, RES, 3)
    assert np.asarray(Image.open(depth_color)).shape == (RES, RES, 3)
    assert unc is None  # a single sample has no uncertainty
    files = _files(downloads)
    assert {"depth.npy", "depth16.png", "cloud.ply", "cloud.glb", "metadata.json"} <= set(files)
    depth = np.load(files["depth.npy"])
    assert depth.dtype == np.float32 and depth.shape == (RES, RES) and (depth > 0).any()
    with Image.open(files["depth16.png"]) as im:
        assert im.mode.startswith("I") and im.size == (RES, RES)
    _check_cloud(Path(glb))
    assert len(trimesh.load(files["cloud.ply"]).vertices) > 0
    assert "seed 7" in info


def test_image_tab_keeps_a_non_square_upload_size(client, tmp_path):
    photo = tmp_path / "wide.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(photo)
    rgb, _, unc, glb, downloads, _ = client.predict(
        handle_file(str(photo)), 2, 1.0, 0, 60, 2, api_name="/image_to_depth"
    )
    files = _files(downloads)
    # letterboxed to 16x16 inside the model, cropped back: never stretched to a square
    assert np.load(files["depth.npy"]).shape == (24, 40)
    assert np.load(files["uncertainty.npy"]).shape == (24, 40)
    assert np.asarray(Image.open(rgb)).shape == (24, 40, 3)
    assert unc is not None
    _check_cloud(Path(glb))


def test_depth_tab_reads_npy_and_png16(client, tmp_path):
    metres = np.linspace(2.0, 2.5, 20 * 12, dtype=np.float32).reshape(20, 12)  # smooth: no edges
    np.save(tmp_path / "d.npy", metres)
    millimetres = (metres * 1000).astype(np.uint16)
    Image.fromarray(millimetres).save(tmp_path / "d.png")
    for name, given in [("d.npy", metres), ("d.png", millimetres / 1000)]:
        rgb, _, _, glb, downloads, _ = client.predict(
            handle_file(str(tmp_path / name)), "a green box", 2, 3.0, 0, 60,
            api_name="/depth_to_image",
        )  # fmt: skip
        assert np.asarray(Image.open(rgb)).shape == (20, 12, 3)  # non-square, not stretched
        files = _files(downloads)
        out = np.load(files["depth.npy"])
        np.testing.assert_allclose(out, given / given.mean(), rtol=1e-4)  # the given, unit mean
        back, valid = load_depth_png16(files["depth16.png"], [out.min(), out.max()])
        assert valid.all() and np.abs(back - out).max() < 1e-3
        _check_cloud(Path(glb))


@pytest.mark.parametrize(
    ("api", "name", "content", "message"),
    [
        ("/image_to_depth", "notes.png", b"not an image", "is not an image file"),
        ("/depth_to_image", "notes.txt", b"hello", "is not a depth file"),
        ("/depth_to_image", "broken.npy", b"\x93NUMPY garbage", "not a readable .npy"),
        ("/depth_to_image", "colour.png", None, "must be single-channel integer"),
        ("/depth_to_image", "zeros.npy", np.zeros((8, 8), np.float32), "holds no valid depth"),
    ],
)
def test_bad_uploads_show_a_message(client, tmp_path, api, name, content, message):
    path = tmp_path / name
    if content is None:
        Image.new("RGB", (8, 8), "red").save(path)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_bytes(content)
    args = (2, 1.0, 0, 60, 1) if api == "/image_to_depth" else ("", 2, 1.0, 0, 60)
    with pytest.raises(AppError, match=message) as err:
        client.predict(handle_file(str(path)), *args, api_name=api)
    assert "Traceback" not in str(err.value) and str(tmp_path) not in str(err.value)


def test_examples_and_progress_callback(tiny_ckpt, tmp_path):
    rows = render_examples(tmp_path, (RES, RES), num=2)
    assert len(rows["joint"]) == 2 and all(r[0] for r in rows["joint"])
    (png,), (npy, caption) = rows["image_to_depth"][0], rows["depth_to_image"][0]
    assert np.asarray(Image.open(png)).shape == (4 * RES, 4 * RES, 3)
    assert np.load(npy).shape == (4 * RES, 4 * RES) and caption
    calls = []
    pipe = ModalityForcingPipeline.from_pretrained(tiny_ckpt, device="cpu")
    pipe(image=np.asarray(Image.open(png)), mode="image_to_depth", num_inference_steps=3,
         ensemble_size=2, callback=lambda k, n: calls.append((k, n)))  # fmt: skip
    assert calls == [(1, 3), (2, 3), (3, 3)]  # the ensemble is one batched run


def test_cli_parses_app():
    args = build_parser().parse_args(["app", "--port", "8000"])
    assert (args.ckpt, args.host, args.port) == (None, "127.0.0.1", 8000)


# --------------------------------------------------------------------------------------------
# headless Chromium (skipped without chromium + chromedriver + selenium)
# --------------------------------------------------------------------------------------------


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("needs chromium and chromedriver (Debian: apt-get install chromium-driver)")
    return browser, driver


@pytest.mark.browser
def test_browser_runs_every_tab(tmp_path):
    """Load the page; run Text -> RGB + Depth on a typed prompt, Depth -> Image and Image ->
    Depth on an example each; screenshot the last result.

    Uses the shipped checkpoint; MF_APP_SCREENSHOT=PATH keeps the screenshot (the docs' one is
    docs/img/app_image_to_depth.png).
    """
    browser, driver_path = _chromium()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    app = launch(None, "127.0.0.1", port, prevent_thread_lock=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1500", "--enable-unsafe-swiftshader"]:  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=opts)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{port}/")
        panel = "//div[@role='tabpanel'][not(contains(@style, 'display: none'))]"

        def open_tab(label: str) -> None:
            tab = f"//button[@role='tab'][contains(., '{label}')]"
            wait.until(ec.element_to_be_clickable((By.XPATH, tab))).click()

        def run(button: str, done: str, outputs: list[str]) -> None:
            wait.until(ec.element_to_be_clickable((By.ID, button))).click()
            info = f"{panel}//p[contains(., '{done}') and contains(., 'steps')]"
            wait.until(ec.visibility_of_element_located((By.XPATH, info)))
            for name in outputs:  # the outputs are on the page
                shown = f"{panel}//img[contains(@src, '{name}')]"
                wait.until(ec.visibility_of_element_located((By.XPATH, shown)))

        # Text -> RGB + Depth: a typed prompt
        box = wait.until(ec.element_to_be_clickable((By.XPATH, f"{panel}//textarea")))
        box.send_keys("a red sphere on a checkered floor")
        run("run-joint", "joint", ["rgb.png", "depth_color.png"])
        # Depth -> Image: the first example (a depth map and its caption)
        open_tab("Depth -> Image")
        first = f"({panel}//div[contains(@class, 'table')][contains(., '_depth.npy')])[1]"
        wait.until(ec.element_to_be_clickable((By.XPATH, first))).click()
        run("run-depth-to-image", "depth to image", ["rgb.png"])
        # Image -> Depth: an example image
        open_tab("Image -> Depth")
        example = f"({panel}//*[contains(@class, 'gallery')]//img)[3]"  # checkered floor
        thumb = wait.until(ec.element_to_be_clickable((By.XPATH, example)))
        name = Path(thumb.get_attribute("src")).name
        thumb.click()
        loaded = f"{panel}//img[contains(@src, '{name}')]"  # the thumbnail and the input
        wait.until(lambda d: len(d.find_elements(By.XPATH, loaded)) >= 2)
        run("run-image-to-depth", "image to depth", ["depth_color.png", "uncertainty.png"])
        time.sleep(2)  # let the 3D viewer draw the point cloud
        shot = Path(os.environ.get("MF_APP_SCREENSHOT", tmp_path / "app_image_to_depth.png"))
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot))
        page = np.asarray(Image.open(shot).convert("RGB"))
        assert page.shape[0] > 500 and page.std() > 10
        assert not driver.find_elements(By.XPATH, "//*[contains(., 'Traceback')]")
    finally:
        driver.quit()
        app.close()
