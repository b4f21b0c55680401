"""Bad inputs a user can hand us (issue 17): each case errs clearly or comes out right.

Cases of the audit covered here: 16-bit and float images, extreme aspect ratios, 8-bit depth
PNGs, overflowing depth, decompression bombs, string/pickled `.npy`, one bad image in a folder
run, and the CLI's one-line errors. The app, checkpoint, resume and config cases are tested in
`test_app_security.py` and `test_hardening_training.py`; `test_every_audit_case_has_a_test`
below keeps the whole list covered.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modality_forcing.cli import main
from modality_forcing.config import model_preset
from modality_forcing.data import decode
from modality_forcing.data.benchmarks.base import read_rgb
from modality_forcing.data.inputs import InputError, read_depth, read_image
from modality_forcing.inference.evaluate import PredictionFolder
from modality_forcing.inference.pipeline import ModalityForcingPipeline
from modality_forcing.modalities import valid_mean
from modality_forcing.model.denoiser import ModalityForcingModel

pytestmark = pytest.mark.usefixtures("one_thread")
RES = 16


@pytest.fixture(scope="module")
def pipe() -> ModalityForcingPipeline:
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.resolution = (RES, RES)
    model = ModalityForcingModel(cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random (not zero-initialised) weights, so outputs vary with input
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return ModalityForcingPipeline(model)


@pytest.fixture(scope="module")
def ckpt(pipe, tmp_path_factory) -> Path:
    return pipe.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


def _photo(h: int = 24, w: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 1x1 PNG whose header is rewritten to claim width x height (CRC fixed)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC of type + data
    path.write_bytes(bytes(data))
    return path


def _one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    last = err.rstrip("\n").split("\n")[-1]  # earlier lines: progress bars
    assert "Traceback" not in err and last.startswith(f"modality-forcing {argv[0]}: error: "), err
    return last


# ------------------------------------------------------------------------------- images


def test_16bit_png_images_are_scaled_not_clipped(tmp_path):
    grey16 = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    path = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(path)
    expected = np.round(grey16 / 257).astype(np.uint8)
    for read in (read_image, read_rgb, lambda p: decode.decode_image(p.read_bytes(), str(p))):
        rgb = read(path)
        assert rgb.dtype == np.uint8 and rgb.shape == (8, 32, 3)
        np.testing.assert_array_equal(rgb[..., 0], expected)  # before: 255 almost everywhere


def test_float_and_uint16_arrays_match_uint8_in_the_pipeline(pipe):
    photo = _photo()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    call = {"mode": "image_to_depth", "num_inference_steps": 2}
    ref = pipe(image=photo, generator=g(), **call).depth
    as_tensor = torch.from_numpy(photo).permute(2, 0, 1) / 255.0  # [0, 1], as the pt output
    for same in (photo / 255.0, (photo.astype(np.uint16) * 257), Image.fromarray(photo),
                 as_tensor, [photo], [Image.fromarray(photo)]):  # fmt: skip
        np.testing.assert_allclose(pipe(image=same, generator=g(), **call).depth, ref, atol=1e-4)
    with pytest.raises(InputError, match=r"float array must lie in \[0, 1\]"):
        pipe(image=photo.astype(np.float32), **call)  # 0-255 floats: refused, not white
    with pytest.raises(InputError, match=r"tensor must lie in \[0, 1\].*\(x \+ 1\) / 2"):
        pipe(image=as_tensor * 2 - 1, **call)  # a [-1, 1] tensor: refused, not misread
    with pytest.raises(InputError, match=r"tensor must lie in \[0, 1\]"):
        pipe(image=torch.full((3, 8, 8), 200.0), **call)
    with pytest.raises(InputError, match=r"images of different sizes"):
        pipe(image=[photo, photo[:, :-2]], **call)
    pair = pipe(image=[photo, photo], generator=g(), **call)
    assert pair.depth.shape[0] == 2  # a list is a batch
    with pytest.raises(InputError, match="dtype int64"):
        pipe(image=photo.astype(np.int64), **call)


def test_outputs_go_back_in_and_return_dict_false_gives_a_tuple(pipe):
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    joint = pipe(prompt="a red box", mode="joint", num_inference_steps=2, generator=g(),
                 output_type="pt")  # fmt: skip
    as_np = pipe(prompt="a red box", mode="joint", num_inference_steps=2, generator=g())
    call = {"mode": "image_to_depth", "num_inference_steps": 1, "output_type": "pt"}
    from_pt = pipe(image=joint.image, generator=g(), **call).depth
    from_np = pipe(image=as_np.image[0], generator=g(), **call).depth
    # the same image up to the np output's 8-bit rounding; read as [-1, 1] it would be darker
    misread = pipe(image=(joint.image + 1) / 2, generator=g(), **call).depth
    gap = (from_pt - from_np).abs().max()
    assert gap < 1e-2 and (misread - from_np).abs().max() > 5 * gap
    image, depth, uncertainty = pipe(image=joint.image, generator=g(), return_dict=False, **call)
    assert image is not None and uncertainty is None and torch.equal(depth, from_pt)


def test_extreme_aspect_ratio_is_tiled_for_depth_and_refused_for_images(pipe):
    wide = np.concatenate([_photo(20, 20, s) for s in range(15)], axis=1)  # 300x20: 15:1
    with pytest.warns(UserWarning, match="overlapping windows"):
        out = pipe(image=wide, mode="image_to_depth", num_inference_steps=1)
    depth = out.depth[0]
    assert depth.shape == (20, 300) and np.isfinite(depth).all()
    assert depth.mean() == pytest.approx(1.0, rel=1e-3)
    # Each window was predicted at the working size: the depth varies inside every 20-px
    # column band, which a 16x1 letterboxed strip (the old behaviour) cannot give.
    bands = depth.reshape(20, 15, 20)
    assert (bands.std(axis=(0, 2)) > 0).all()
    with pytest.raises(InputError, match="more elongated than the model's"):
        pipe(prompt="x", depth=np.ones((20, 300), np.float32), mode="depth_to_image")


def test_a_normal_aspect_ratio_is_not_tiled(pipe, recwarn):
    pipe(image=_photo(20, 60), mode="image_to_depth", num_inference_steps=1)  # 3:1 letterboxed
    assert not [w for w in recwarn if "overlapping windows" in str(w.message)]


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    bomb = _png_claiming(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(InputError, match=r"bomb\.png"):
        read_image(bomb)
    moderate = _png_claiming(tmp_path / "big.png", 9000, 8000)  # 72 MP: above our 50 MP
    with pytest.raises(InputError, match="above the limit of 50 MP"):
        read_image(moderate)
    with pytest.raises(InputError, match="above the limit"):
        read_image(_png_claiming(tmp_path / "small.png", 300, 300), max_pixels=1000)


# ------------------------------------------------------------------------------- depth


def test_8bit_depth_png_is_refused_not_read_as_millimetres(tmp_path):
    path = tmp_path / "depth8.png"
    Image.fromarray(np.full((8, 8), 120, np.uint8)).save(path)
    with pytest.raises(InputError, match=r"depth8.png.*8-bit"):
        read_depth(path)
    path16 = tmp_path / "depth16.png"
    Image.fromarray(np.full((8, 8), 1500, np.uint16)).save(path16)
    np.testing.assert_allclose(read_depth(path16), 1.5)


def test_huge_depth_values_do_not_overflow_the_mean(pipe, tmp_path):
    depth = np.full((RES, RES), 1e38, np.float32)
    assert torch.isfinite(valid_mean(torch.from_numpy(depth)[None], torch.ones(1, RES, RES) > 0))
    out = pipe(prompt="x", depth=depth, mode="depth_to_image", num_inference_steps=1)
    np.testing.assert_allclose(out.depth[0], 1.0, rtol=1e-5)  # before: all-invalid output
    np.save(tmp_path / "far.npy", np.full((4, 4), 1e300))  # float64 beyond float32
    with pytest.raises(InputError, match="too large for float32"):
        read_depth(tmp_path / "far.npy")


@pytest.mark.parametrize("array", [np.array(["a", "b"]), np.array([{"x": 1}], dtype=object)])
def test_string_or_pickled_npy_is_refused(tmp_path, array):
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(InputError, match=r"bad\.npy"):
        read_depth(path)
    (tmp_path / "pred").mkdir()
    np.save(tmp_path / "pred" / "k.npy", array, allow_pickle=True)
    with pytest.raises(decode.CorruptFileError, match=r"k.npy"):
        PredictionFolder(tmp_path / "pred")({"key": "k"})


def test_depth_without_valid_pixels_names_the_file(tmp_path):
    np.save(tmp_path / "zeros.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match=r"zeros.npy' holds no valid depth"):
        read_depth(tmp_path / "zeros.npy")


# ------------------------------------------------------------------------------- CLI


def test_folder_run_skips_and_counts_a_truncated_image(ckpt, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(_photo(seed=i)).save(photos / f"p{i}.png")
    data = (photos / "p1.png").read_bytes()
    (photos / "p1.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match="p1.png"):
        main(["sample", "--ckpt", str(ckpt), "--mode", "image_to_depth", "--image", str(photos),
              "--steps", "1", "--out", str(out)])  # fmt: skip
    done = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(done) == 2 and not any("p1" in name for name in done)
    assert "skipped 1 of 3" in capsys.readouterr().out


def test_cli_errors_are_one_line_and_debug_shows_the_traceback(ckpt, tmp_path, capsys):
    bomb = _png_claiming(tmp_path / "bomb.png", 20000, 20000)
    argv = ["sample", "--ckpt", str(ckpt), "--mode", "image_to_depth", "--image", str(bomb)]
    assert "bomb.png" in _one_line_error(capsys, argv)
    np.save(tmp_path / "s.npy", np.array(["x"]))
    depth_argv = ["sample", "--ckpt", str(ckpt), "--mode", "depth_to_image",
                  "--depth", str(tmp_path / "s.npy"), "--prompt", "a"]  # fmt: skip
    err = _one_line_error(capsys, depth_argv)
    assert "s.npy" in err
    with pytest.raises(InputError):
        main([*argv, "--debug"])


# ------------------------------------------------------------------------------- the list

# Every case of the issue-17 audit and the test that covers it (file::name). The test below
# fails when a listed test is renamed or removed, so the list stays covered.
AUDIT = {
    "app reads server files through a crafted payload": "test_app_security.py::test_server_files",
    "app: symlink out of the upload folder": "test_app_security.py::test_upload_check_follows",
    "oversized uploads (header)": "test_app_security.py::test_oversized_png_is_refused",
    "oversized uploads (file size)": "test_app_security.py::test_uploads_above_max_file_size",
    "large 16-bit upload downsized": "test_app_security.py::test_large_16bit_image_is_downsized",
    "server-side slider limits": "test_app_security.py::test_out_of_range_settings_are_clamped",
    "one sampler for all tabs, bounded queue": "test_app_security.py::test_tabs_share_one",
    "exposed host without a login": "test_app_security.py::test_exposed_host_without_login",
    "tampered resume state": "test_hardening_training.py::test_resume_refuses_an_edited",
    "crash between the renames of final/": "test_hardening_training.py::test_crash_while",
    "metrics.jsonl repeats steps after resume": "test_hardening_training.py::test_resume_trims",
    "skip counts only in warnings": "test_hardening_training.py::test_bad_shard_samples",
    "compile='false', max_steps=2.9, ckpt_every=0, data=5": "test_hardening_training.py::test_bad_",
    "invalid YAML / a list as config": "test_hardening_training.py::test_config_files_name",
    "truncated or garbage model.safetensors": "test_hardening_training.py::test_unreadable_weights",
    "invalid YAML in a checkpoint": "test_hardening_training.py::test_bad_checkpoint_config",
    "prepare-data keeps a truncated shard": "test_hardening_training.py::test_a_truncated_shard",
    "16-bit PNG images clipped to white": "test_bad_inputs.py::test_16bit_png_images_are_scaled",
    "extreme aspect ratio squeezed": "test_bad_inputs.py::test_extreme_aspect_ratio_is_tiled",
    "float / uint16 arrays to the pipeline": "test_bad_inputs.py::test_float_and_uint16_arrays",
    "8-bit grey depth PNG read as millimetres": "test_bad_inputs.py::test_8bit_depth_png",
    "1e38 depth overflows the mean": "test_bad_inputs.py::test_huge_depth_values",
    "decompression bomb header": "test_bad_inputs.py::test_decompression_bomb_header",
    "string .npy": "test_bad_inputs.py::test_string_or_pickled_npy",
    "one bad image aborts a folder run": "test_bad_inputs.py::test_folder_run_skips_and_counts",
    "tracebacks instead of one-line errors": "test_bad_inputs.py::test_cli_errors_are_one_line",
}


def test_every_audit_case_has_a_test():
    here = Path(__file__).parent
    missing = []
    for case, ref in AUDIT.items():
        file, prefix = ref.split("::")
        names = re.findall(r"^def (test_\w+)", (here / file).read_text(), re.M)
        if not any(n.startswith(prefix) for n in names):
            missing.append(f"{case}: {ref}")
    assert not missing, missing


def test_a_pil_photo_is_turned_upright_by_its_exif_orientation(pipe, tmp_path):
    photo = _photo(16, 24)  # landscape pixels, stored with "rotate 90" in EXIF: portrait shown
    img = Image.fromarray(photo)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    with Image.open(tmp_path / "phone.jpg") as opened:
        out = pipe(image=opened, mode="image_to_depth", num_inference_steps=1)
    assert out.depth.shape == (1, 24, 16)  # upright, as a viewer shows it
