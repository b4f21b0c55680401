"""Hardening of the web app (issue 17), against the real app served on a free localhost port
with a login: no server file is readable through a crafted upload payload, oversized uploads are
refused from their header within a memory bound, every number is clamped on the server, and one
sampler runs at a time behind a bounded queue."""

import json
import re
import socket
import struct
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

gr = pytest.importorskip("gradio")
import httpx  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from modality_forcing import app as mf_app  # noqa: E402
from modality_forcing.cli import main  # noqa: E402
from modality_forcing.config import resolve_train_config  # noqa: E402
from modality_forcing.inference.pipeline import ModalityForcingPipeline  # noqa: E402
from modality_forcing.training.loop import train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

RES = 16  # the tiny checkpoint's working resolution
AUTH = ("mf", "a-test-password")
FILE_META = {"_type": "gradio.FileData"}
MEMORY_BOUND_MB = 200  # an oversized upload must be refused long before this much is in use
IMAGE_ARGS = (2, 1.0, 0, 60, 1)  # steps, guidance, seed, fov, ensemble
DEPTH_ARGS = ("a box", 2, 1.0, 0, 60)  # prompt, steps, guidance, seed, fov


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
def url(tiny_ckpt):
    port = _free_port()
    app = mf_app.launch(tiny_ckpt, "127.0.0.1", port, prevent_thread_lock=True, auth=AUTH)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="module")
def client(url):
    return Client(url, auth=AUTH, verbose=False)


def _call(client: Client, api: str, data: list) -> tuple[str, str]:
    """A request as an attacker sends it: raw JSON to Gradio's queued REST route, nothing
    uploaded. Returns the (event, data) that ends its event stream."""
    with httpx.Client(cookies=client.cookies, timeout=120) as http:
        joined = http.post(f"{client.src_prefixed}call/{api}", json={"data": data})
        joined.raise_for_status()
        stream = http.get(f"{client.src_prefixed}call/{api}/{joined.json()['event_id']}").text
    return re.findall(r"event: (\w+)\ndata: (.*)", stream)[-1]


def _peak_growth_mb(run) -> float:
    """Peak resident-memory growth of this process (the server runs in a thread of it) while
    `run()` runs: Linux resets the peak (VmHWM) to the current size through clear_refs."""
    status = Path("/proc/self/status")
    kib = lambda key: int(re.search(rf"{key}:\s+(\d+)", status.read_text())[1])  # noqa: E731
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("measuring peak memory needs Linux's /proc/self/clear_refs")
    before = kib("VmRSS")
    run()
    return (kib("VmHWM") - before) / 1024


def _png(path: Path, width: int, height: int, bit_depth: int, colour: int, rows: int) -> Path:
    """A PNG whose header says width x height but which holds only `rows` rows (all of them
    when rows == height): bytes 0x07D0 (2000 mm in 16 bits) everywhere. Tiny on disk."""
    channels = {0: 1, 2: 3}[colour]
    row = b"\x00" + bytes([0x07, 0xD0]) * (width * channels * bit_depth // 16)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def _result(downloads) -> dict:
    return json.loads(
        next(Path(p) for p in downloads if Path(p).name == "metadata.json").read_text()
    )


# --------------------------------------------------------------------------------------------
# no file on the server is readable through the app
# --------------------------------------------------------------------------------------------


@pytest.fixture
def secret(tmp_path):
    """A server file outside the upload folder: a valid image and depth map, so only the path
    checks stand between a request and its bytes."""
    marker = f"MF-SECRET-{uuid.uuid4().hex}"
    info = PngInfo()
    info.add_text("secret", marker)
    png = tmp_path / "secret.png"
    Image.fromarray(np.full((24, 40), 2000, np.uint16)).save(png, pnginfo=info)
    return png, marker


@pytest.fixture
def link_in_upload_folder(secret):
    """A symlink inside Gradio's upload folder pointing at the secret (as a file some other
    process might leave there)."""
    folder = Path(get_upload_folder()) / f"mf-security-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    link = folder / "photo.png"
    link.symlink_to(secret[0])
    yield link
    link.unlink()
    folder.rmdir()


def _paths(secret: Path, link: Path) -> dict[str, str]:
    up = Path(get_upload_folder())
    return {
        "absolute": str(secret),
        "dotdot": f"{up}/{'../' * len(up.parts)}{str(secret).lstrip('/')}",
        "relative": f"{'../' * 40}{str(secret).lstrip('/')}",
        "symlink": str(link),
    }


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "relative", "symlink"])
@pytest.mark.parametrize("api", ["image_to_depth", "depth_to_image"])
def test_server_files_are_not_readable(client, secret, link_in_upload_folder, kind, api):
    path = _paths(secret[0], link_in_upload_folder)[kind]
    args = IMAGE_ARGS if api == "image_to_depth" else DEPTH_ARGS
    assert Path(path).resolve() == secret[0].resolve()  # the payload does name the secret
    # Without Gradio's FileData meta, Gradio checks nothing for an image: the app must refuse
    # it (a gr.File payload without meta fails Gradio's validation first).
    message = "not uploaded to it" if api == "image_to_depth" else None
    with pytest.raises(AppError, match=message) as err:
        client.predict({"path": path, "orig_name": "x.png"}, *args, api_name=f"/{api}")
    assert secret[1] not in str(err.value)
    # with the meta, Gradio's own upload-folder check refuses it (ours would next); a bare
    # string is no file payload at all
    for payload in [{"path": path, "meta": FILE_META}, path]:
        event, data = _call(client, api, [payload, *args])
        assert event == "error" and secret[1] not in data and str(secret[0]) not in data


def test_upload_check_follows_symlinks_by_itself(link_in_upload_folder, tmp_path):
    """Our check alone (not Gradio's) refuses a FileData payload whose link leaves the upload
    folder, and accepts a real upload and an example file."""
    with pytest.raises(gr.Error, match="not uploaded"):
        mf_app._upload({"path": str(link_in_upload_folder), "meta": FILE_META}, "x", ())
    real = link_in_upload_folder.parent / "real.png"
    real.write_bytes(b"png")
    try:
        path, name = mf_app._upload({"path": str(real), "meta": FILE_META}, "x", ())
        assert path == real.resolve() and name == "real.png"
    finally:
        real.unlink()
    example = tmp_path / "examples" / "scene.png"
    example.parent.mkdir()
    example.write_bytes(b"png")
    payload = {"path": str(example), "meta": FILE_META, "orig_name": "../../scene.png"}
    assert mf_app._upload(payload, "x", (example.parent,)) == (example.resolve(), "scene.png")


def test_queue_cannot_be_skipped_and_login_is_required(client, url):
    # Gradio's direct /run route would skip the queue and its concurrency limit
    direct = httpx.post(f"{client.src_prefixed}run/text_to_rgbd", cookies=client.cookies,
                        json={"data": ["a box", *IMAGE_ARGS, 1]})  # fmt: skip
    assert direct.status_code == 404
    anonymous = httpx.post(f"{client.src_prefixed}call/text_to_rgbd",
                           json={"data": ["a box", 2, 1.0, 0, 60, 0.0, 1]})  # fmt: skip
    assert anonymous.status_code == 401
    with pytest.raises(ValueError, match="Could not login"):
        Client(url, auth=(AUTH[0], "wrong"), verbose=False)


# --------------------------------------------------------------------------------------------
# oversized uploads
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "side", "bits", "colour", "complete"),
    [
        ("depth_to_image", 8000, 16, 0, True),  # decodable: 128 MB as uint16, 5.8 GB before
        ("depth_to_image", 20000, 16, 0, False),  # only the header: 800 MB if decoded
        ("image_to_depth", 20000, 8, 2, False),  # 1.2 GB RGB if decoded
        ("image_to_depth", 8000, 16, 0, True),
    ],
)
def test_oversized_png_is_refused_from_its_header(client, tmp_path, api, side, bits, colour,
                                                  complete):  # fmt: skip
    png = _png(tmp_path / "big.png", side, side, bits, colour, side if complete else 4)
    assert png.stat().st_size < 1_000_000  # tiny on disk
    args = IMAGE_ARGS if api == "image_to_depth" else DEPTH_ARGS

    def request() -> None:
        with pytest.raises(AppError, match=r"'big.png' is .*limit of"):
            client.predict(handle_file(str(png)), *args, api_name=f"/{api}")

    assert _peak_growth_mb(request) < MEMORY_BOUND_MB


def test_large_16bit_image_is_downsized_and_not_white(client, tmp_path):
    """A 12 MP 16-bit grey PNG (at most MAX_PIXELS) is accepted, shrunk to MAX_SIDE, and its grey
    levels kept: PIL's convert("RGB") used to clip every 16-bit value above 255 to white."""
    levels = np.linspace(0, 65535, 3000).astype(np.uint16)
    png = tmp_path / "grey16.png"
    Image.fromarray(np.repeat(levels[:, None], 4000, axis=1)).save(png)  # [3000, 4000]
    outputs = []

    def request() -> None:
        outputs.append(client.predict(handle_file(str(png)), 1, 1.0, 0, 60, 1,
                                      api_name="/image_to_depth"))  # fmt: skip

    assert _peak_growth_mb(request) < 400  # measured: ~160 MB, outputs included
    rgb = np.asarray(Image.open(outputs[0][0]))
    assert rgb.shape == (768, 1024, 3)  # 4000x3000 -> at most 1024 a side, aspect kept
    expected = np.linspace(0, 255, 768)
    assert np.abs(rgb[:, 512, 0] - expected).max() < 3  # a grey ramp, not white


def test_exr_declaring_too_many_pixels_is_refused_from_its_header(client, tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    exr = tmp_path / "big.exr"
    header = {"compression": openexr.ZIP_COMPRESSION, "type": openexr.scanlineimage}
    with openexr.File(header, {"Z": np.zeros((4000, 4100), np.float16)}) as f:  # 16.4 MP
        f.write(str(exr))
    assert exr.stat().st_size < 1_000_000

    def request() -> None:
        with pytest.raises(AppError, match=r"'big.exr' declares 16.4 MP .*limit of 16 MP"):
            client.predict(handle_file(str(exr)), *DEPTH_ARGS, api_name="/depth_to_image")

    assert _peak_growth_mb(request) < MEMORY_BOUND_MB


def test_uploads_above_max_file_size_are_refused(client):
    big = b"\0" * (20 * 1024 * 1024 + 1)
    response = httpx.post(client.upload_url, cookies=client.cookies, timeout=60,
                          files=[("files", ("big.npy", big))])  # fmt: skip
    assert response.status_code == 413


def test_elongated_image_cannot_multiply_sampler_runs(client, tmp_path):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.zeros((2, 1024, 3), np.uint8)).save(strip)  # 1023 windows of 2x2
    with pytest.raises(AppError, match="1023 windows"):
        client.predict(handle_file(str(strip)), 2, 1.0, 0, 60, 1, api_name="/image_to_depth")


# --------------------------------------------------------------------------------------------
# settings clamped on the server
# --------------------------------------------------------------------------------------------


def test_out_of_range_settings_are_clamped(client):
    *_, downloads, info = client.predict(
        "a red sphere", 300, 1e9, -3, 1000, -5.0, 0, api_name="/text_to_rgbd"
    )
    assert "100 steps" in info and "seed 0" in info and "moved into the sliders' range" in info
    meta = _result(downloads)
    assert meta["steps"] == 100 and meta["guidance"] == 10.0
    assert meta["log2_alpha"] == 0.0 and meta["ensemble"] == 1 and meta["seed"] == 0


def test_junk_numbers_fall_back_to_defaults(client, tiny_ckpt):
    steps = ModalityForcingPipeline.from_pretrained(tiny_ckpt).defaults["joint"].steps
    event, data = _call(client, "text_to_rgbd", ["a box", "NaN", None, "seven", 60, [], 1])
    assert event == "complete"
    assert f"{steps} steps" in data and "seed 0" in data


@pytest.mark.parametrize(
    ("prompt", "message"), [("x" * 1001, "at most 1000"), (["a", "b"], "must be text")]
)
def test_prompt_must_be_short_text(client, prompt, message):
    event, data = _call(client, "text_to_rgbd", [prompt, 2, 1.0, 0, 60, 0.0, 1])
    assert event == "error" and message in data


def test_bound_clamp_is_exact():
    steps, guidance = mf_app.BOUNDS["steps"], mf_app.BOUNDS["guidance"]
    assert [steps.clamp(v, 25) for v in (300, 0, -1e308, 7.6, float("nan"))] == [100, 1, 1, 8, 25]
    assert [steps.clamp(v, 25) for v in (None, "12", "abc", 10**400, float("inf"))] == [
        25, 12, 25, 25, 100]  # fmt: skip
    assert guidance.clamp(2.25, 3.0) == 2.25 and guidance.clamp(float("-inf"), 3.0) == 1.0


# --------------------------------------------------------------------------------------------
# one sampler at a time, a bounded queue
# --------------------------------------------------------------------------------------------


def _progress(job) -> float | None:
    """Fraction of sampler steps a running job has reported, None before its first step."""
    status = job.status()
    if status.code != Status.PROGRESS or not status.progress_data:
        return None
    unit = status.progress_data[-1]
    return unit.index / unit.length if unit.index is not None and unit.length else None


def test_tabs_share_one_sampler_and_the_queue_is_bounded(client, tmp_path):
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    slow = client.submit("a box", 100, 3.0, 0, 60, 0.0, 1, api_name="/text_to_rgbd")  # one run
    deadline = time.time() + 60
    while _progress(slow) is None:
        assert time.time() < deadline and not slow.done()
        time.sleep(0.02)
    waiting = [client.submit(handle_file(str(photo)), 1, 1.0, 0, 60, 1, api_name="/image_to_depth")
               for _ in range(mf_app.QUEUE_SIZE + 1)]  # fmt: skip
    # While the text sampler is well short of its last step (so surely still running on the
    # server), no image -> depth job may have started: they share one sampler slot.
    snapshots = 0
    while (done := _progress(slow)) is None or done < 0.8:
        if done is not None:
            for status in (job.status() for job in waiting):  # queue-full ones end unsuccessful
                assert status.code not in (Status.PROCESSING, Status.PROGRESS), status
                assert status.code != Status.FINISHED or status.success is False, status
            snapshots += 1
        assert not slow.done()
        time.sleep(0.02)
    assert snapshots > 0
    slow.result()
    finished = full = 0
    for job in waiting:
        try:
            job.result(timeout=120)
            finished += 1
        except Exception as err:
            full += "Queue is full" in str(err)
    assert finished == mf_app.QUEUE_SIZE and full == 1


# --------------------------------------------------------------------------------------------
# authentication
# --------------------------------------------------------------------------------------------


def test_exposed_host_without_login_warns(recwarn):
    for host in ["127.0.0.1", "::1", "localhost", "127.0.0.2"]:
        mf_app.warn_if_exposed(host, 7860, None)
    mf_app.warn_if_exposed("0.0.0.0", 7860, AUTH)
    assert not recwarn.list
    for host in ["0.0.0.0", "::", "192.168.1.5", "my-server"]:
        with pytest.warns(UserWarning, match=f"serving on {host} without a login"):
            mf_app.warn_if_exposed(host, 7860, None)


def test_resolve_auth_reads_the_password_from_the_environment(monkeypatch):
    monkeypatch.setenv(mf_app.PASSWORD_ENV, "pw")
    assert mf_app.resolve_auth("ann") == ("ann", "pw")
    assert mf_app.resolve_auth(None) is None
    with pytest.raises(ValueError, match="user name"):
        mf_app.resolve_auth("")
