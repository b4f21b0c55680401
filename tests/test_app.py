"""The web app (`modality-forcing app`): served on a free localhost port, driven through
gradio_client tab by tab, and (marked `browser`) loaded in headless Chromium."""

import json
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

from modality_forcing.app import FILE_DATA, MAX_SIDE, launch, render_examples  # noqa: E402
from modality_forcing.app import requests as app_requests  # noqa: E402
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


def _metadata(downloads) -> dict:
    return json.loads(_files(downloads)["metadata.json"].read_text())


def _photo(path: Path, height: int, width: int) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_completion_tab_keeps_the_points_of_a_points_file(client, tmp_path):
    photo = _photo(tmp_path / "wide.png", 12, 20)
    given = np.zeros((12, 20), np.float32)
    given[[0, 3, 7, 11], [0, 19, 5, 12]] = [1.5, 4.0, 2.25, 7.5]  # metres, 0 = unknown
    np.save(tmp_path / "map.npy", given)
    rows, cols = np.nonzero(given)
    np.save(tmp_path / "rows.npy", np.stack([cols, rows, given[rows, cols]], 1))  # x, y, metres
    for name in ["map.npy", "rows.npy"]:
        rgb, depth_color, _, _, downloads, info = client.predict(
            handle_file(str(photo)), handle_file(str(tmp_path / name)), None, 500, 2, 0, 60,
            api_name="/depth_completion",
        )  # fmt: skip
        depth = np.load(_files(downloads)["depth.npy"])
        assert depth.shape == (12, 20) and np.asarray(Image.open(rgb)).shape == (12, 20, 3)
        np.testing.assert_allclose(depth[rows, cols], given[rows, cols], rtol=1e-4)
        meta = _metadata(downloads)
        assert meta["depth_space"] == "metric" and meta["mode"] == "depth_completion"
        assert meta["known_points"] == 4 and f"4 known points from '{name}'" in info
        assert "metres" in info and np.asarray(Image.open(depth_color)).shape == (12, 20, 3)


def test_completion_tab_samples_points_from_a_dense_depth(client, tmp_path):
    photo = _photo(tmp_path / "tall.png", 20, 12)
    metres = np.linspace(1.0, 6.0, 20 * 12, dtype=np.float32).reshape(20, 12)
    metres[:5] = 0  # invalid: never sampled
    np.save(tmp_path / "d.npy", metres)
    millimetres = (metres * 1000).astype(np.uint16)
    Image.fromarray(millimetres).save(tmp_path / "d.png")
    for name, dense in [("d.npy", metres), ("d.png", millimetres / 1000)]:
        runs = [client.predict(handle_file(str(photo)), None, handle_file(str(tmp_path / name)),
                               30, 2, seed, 60, api_name="/depth_completion")
                for seed in (3, 3, 4)]  # fmt: skip
        depths = [np.load(_files(r[4])["depth.npy"]) for r in runs]
        for depth, (*_, downloads, info) in zip(depths, runs, strict=True):
            assert _metadata(downloads)["depth_space"] == "metric"
            assert "30 known points from the dense depth map" in info
            kept = np.isclose(depth, dense, rtol=1e-4, atol=0) & (dense > 0)
            assert kept.sum() >= 30  # the 30 drawn pixels (others match only by chance)
        np.testing.assert_array_equal(depths[0], depths[1])  # the seed draws the same points
        assert not np.array_equal(depths[0], depths[2])


@pytest.mark.parametrize(
    ("points", "dense", "message"),
    [
        ("rows.npy", "d.npy", "both were given"),
        (None, None, "neither was given"),
        ("zeros.npy", None, "'zeros.npy' has no known point"),
        ("outside.npy", None, "1 of 1 points lie outside the 20x12 image"),
        (None, "small.npy", "dense depth map is 8x8 pixels but the image is 20x12"),
    ],
)
def test_completion_tab_needs_one_set_of_points(client, tmp_path, points, dense, message):
    photo = _photo(tmp_path / "wide.png", 12, 20)
    np.save(tmp_path / "rows.npy", np.array([[1, 2, 3.0]], np.float32))
    np.save(tmp_path / "d.npy", np.ones((12, 20), np.float32))
    np.save(tmp_path / "zeros.npy", np.zeros((12, 20), np.float32))
    np.save(tmp_path / "outside.npy", np.array([[20, 2, 3.0]], np.float32))
    np.save(tmp_path / "small.npy", np.ones((8, 8), np.float32))
    files = [None if f is None else handle_file(str(tmp_path / f)) for f in (points, dense)]
    with pytest.raises(AppError, match=message) as err:
        client.predict(handle_file(str(photo)), *files, 500, 2, 0, 60,
                       api_name="/depth_completion")  # fmt: skip
    assert "Traceback" not in str(err.value) and str(tmp_path) not in str(err.value)


def test_known_points_shrink_with_a_large_image(tmp_path):
    """An image above MAX_SIDE is shrunk (aspect kept) and its points move with it; two points
    landing on one pixel are averaged."""
    _photo(tmp_path / "big.png", 1000, 1100)
    rows = np.array([[6, 0, 2.0], [7, 0, 4.0], [1099, 999, 5.0]])  # x, y, metres
    np.save(tmp_path / "rows.npy", rows)
    upload = lambda name: {"path": str(tmp_path / name), "meta": {"_type": FILE_DATA}}  # noqa: E731
    known = app_requests.read_known_points(upload("big.png"), upload("rows.npy"), None, 500, 0,
                                           roots=(tmp_path,))  # fmt: skip
    assert known.image.shape == (931, MAX_SIDE, 3) and known.depth.shape == (931, MAX_SIDE)
    assert known.count == 2 and known.depth[0, 6] == 3.0 and known.depth[930, 1023] == 5.0
    assert "shrunk with the image from 1100x1000" in known.source


def test_completion_reads_only_uploaded_files(tmp_path):
    """Each of the tab's three files passes the upload check: a path outside the upload folder
    (here: outside `roots`) is refused before anything is opened."""
    (tmp_path / "up").mkdir()
    _photo(tmp_path / "up" / "photo.png", 12, 20)
    np.save(tmp_path / "up" / "d.npy", np.ones((12, 20), np.float32))
    np.save(tmp_path / "server.npy", np.ones((12, 20), np.float32))  # not an upload
    upload = lambda path: {"path": str(path), "meta": {"_type": FILE_DATA}}  # noqa: E731
    photo, dense, server = (
        upload(tmp_path / p) for p in ("up/photo.png", "up/d.npy", "server.npy")
    )
    for files in [(server, None, dense), (photo, server, None), (photo, None, server)]:
        with pytest.raises(gr.Error, match="not uploaded to it"):
            app_requests.read_known_points(*files, 10, 0, roots=(tmp_path / "up",))
    assert app_requests.read_known_points(photo, None, dense, 10, 0, (tmp_path / "up",)).count == 10


def test_examples_and_progress_callback(tiny_ckpt, tmp_path):
    rows = render_examples(tmp_path, (RES, RES), num=2)
    assert len(rows["joint"]) == 2 and all(r[0] for r in rows["joint"])
    (png,), (npy, caption) = rows["image_to_depth"][0], rows["depth_to_image"][0]
    assert np.asarray(Image.open(png)).shape == (4 * RES, 4 * RES, 3)
    assert np.load(npy).shape == (4 * RES, 4 * RES) and caption
    image, points, dense = rows["depth_completion"][0]
    x, y, z = np.load(points).T  # [N, 3] rows on the example image's grid, at its depth
    assert image == png and dense is None and len(z) == 500
    np.testing.assert_array_equal(z, np.load(npy)[y.astype(int), x.astype(int)])
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
    """Load the page; run Text -> RGB + Depth on a typed prompt, Depth -> Image, Image + Points
    -> Depth and Image -> Depth on an example each; screenshot the last result.

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
        # run only once an example's depth file is in the input (a run before it has loaded
        # gets no depth and never reports "depth to image ... steps")
        loaded = f"{panel}//a[contains(@href, '_depth.npy')]"
        wait.until(ec.presence_of_element_located((By.XPATH, loaded)))
        run("run-depth-to-image", "depth to image", ["rgb.png"])
        # Image + Points -> Depth: the first example (an image and its known points)
        open_tab("Image + Points -> Depth")
        row = wait.until(ec.element_to_be_clickable((By.XPATH, f"({panel}//tr[.//img])[1]")))
        name = Path(row.find_element(By.TAG_NAME, "img").get_attribute("src")).name
        row.click()
        loaded = f"{panel}//img[contains(@src, '{name}')]"  # the thumbnail and the input
        wait.until(lambda d: len(d.find_elements(By.XPATH, loaded)) >= 2)
        points = f"{panel}//a[contains(@href, '{row.text.strip()}')]"  # the loaded points file
        wait.until(ec.presence_of_element_located((By.XPATH, points)))
        run("run-depth-completion", "depth completion", ["depth_color.png"])
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
