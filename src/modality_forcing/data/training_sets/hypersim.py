"""Hypersim (Roberts et al., ICCV 2021): photorealistic synthetic indoor scenes, dense depth.

Layout as distributed (`<root>` holds the scene folders):
  `<root>/ai_VVV_NNN/images/scene_cam_XX_final_hdf5/frame.IIII.color.hdf5`          HDR RGB
  `<root>/ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5`
  `<root>/ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.render_entity_id.hdf5` (optional)
  `<root>/ai_VVV_NNN/images/scene_cam_XX_final_preview/frame.IIII.tonemap.jpg` (`tonemap="preview"`)
  `<root>/metadata_camera_parameters.csv` (optional: per-scene cameras, from the Hypersim repo's
  `contrib/mikeroberts3000`), `<root>/metadata_images_split_scene_v1.csv` (optional: splits).
Every HDF5 file holds one dataset named `dataset` (float16). `depth_meters` is, despite its name,
the Euclidean distance from the optical centre in metres (NaN where no geometry); it is converted
to planar z-depth with the camera's ray directions: z = distance * |ray_z| / |ray|. The rays come
from the scene's `M_cam_from_uv` (3x3: (u, v, 1) with u, v in [-1, 1], v up -> camera-space ray;
tilt-shift scenes have off-diagonal terms), else from the standard Hypersim camera (60 degree
horizontal field of view: f = 886.81 px at 1024 x 768). The colour is tone-mapped with Hypersim's
own operator (`tonemap="hypersim"`, as in its `scene_generate_images_tonemap.py`: scale so the 90th
brightness percentile maps to 0.8 after gamma 1/2.2) or read from the `.tonemap.jpg` previews.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import decode
from .base import TrainingSet, make_sample, read_image

CAMERA_CSV = "metadata_camera_parameters.csv"
SPLIT_CSV = "metadata_images_split_scene_v1.csv"
STANDARD_FOV_X = math.pi / 3  # every Hypersim camera without tilt-shift: 60 degrees horizontal
GAMMA = 1.0 / 2.2
PERCENTILE, PERCENTILE_TARGET = 90, 0.8  # Hypersim's tonemap: 90th brightness percentile -> 0.8
TONEMAPS = ("hypersim", "preview")


def standard_cam_from_uv(height: int, width: int) -> np.ndarray:
    """`M_cam_from_uv` of the standard camera (60 degree horizontal FOV, square pixels)."""
    tx = math.tan(STANDARD_FOV_X / 2)
    return np.diag([tx, tx * height / width, -1.0])


def ray_directions(m_cam_from_uv: np.ndarray, height: int, width: int) -> np.ndarray:
    """Camera-space ray [H, W, 3] through each pixel centre (u right, v up, both in [-1, 1])."""
    u = (np.arange(width) + 0.5) / width * 2 - 1
    v = 1 - (np.arange(height) + 0.5) / height * 2
    uv1 = np.stack(np.broadcast_arrays(u[None, :], v[:, None], 1.0), axis=-1)  # [H, W, 3]
    return uv1 @ np.asarray(m_cam_from_uv, np.float64).T


def distance_to_depth(distance: np.ndarray, m_cam_from_uv: np.ndarray) -> np.ndarray:
    """Euclidean distance to the optical centre [H, W] -> planar z-depth [H, W] (float32)."""
    rays = ray_directions(m_cam_from_uv, *distance.shape)
    cos = np.abs(rays[..., 2]) / np.linalg.norm(rays, axis=-1)
    return (distance.astype(np.float64) * cos).astype(np.float32)


def intrinsics_from_cam_from_uv(m: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pinhole K [3, 3] (pixel centres at +0.5) of an `M_cam_from_uv` without skew terms."""
    m = np.asarray(m, np.float64) / -m[2, 2]  # rays scaled to z = -1 (Hypersim looks down -z)
    fx, fy = width / (2 * m[0, 0]), height / (2 * m[1, 1])
    cx, cy = width / 2 - fx * m[0, 2], height / 2 + fy * m[1, 2]
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)


def tonemap(rgb: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Hypersim's tone mapping: HDR float [H, W, 3] -> uint8 [H, W, 3].

    `valid` (pixels with geometry, `render_entity_id != -1`) picks the pixels whose brightness
    percentile sets the exposure; default: every finite pixel.
    """
    rgb = np.nan_to_num(rgb.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    brightness = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]
    pool = brightness[valid] if valid is not None and valid.any() else brightness.ravel()
    current = np.percentile(pool, PERCENTILE)
    scale = 0.0 if current < 1e-4 else PERCENTILE_TARGET ** (1 / GAMMA) / current
    out = np.clip(np.maximum(scale * rgb, 0) ** GAMMA, 0, 1)
    return np.round(out * 255).astype(np.uint8)


def read_hdf5(path: Path) -> np.ndarray:
    """The `dataset` array of a Hypersim HDF5 file; CorruptFileError when unreadable."""
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["dataset"][()])
    except (OSError, KeyError) as err:
        raise decode.CorruptFileError(f"cannot read HDF5 {path}: {err}") from err


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class Hypersim(TrainingSet):
    """Hypersim frames (module docstring): dense planar depth in metres, tone-mapped RGB.

    Args:
        root: folder of the `ai_VVV_NNN` scene folders.
        tonemap: `hypersim` (tone-map the HDR colour) or `preview` (the `.tonemap.jpg` files).
        camera_csv: per-scene `metadata_camera_parameters.csv` (default `<root>/` if present).
        split: `train` / `val` / `test` rows of the split CSV (None: every frame found).
        split_csv: the split CSV (default `<root>/metadata_images_split_scene_v1.csv`).
        stats: skip counter.
    """

    name = "hypersim"
    kind = "dense"

    def __init__(
        self,
        root: str | Path,
        tonemap: str = "hypersim",
        camera_csv: str | Path | None = None,
        split: str | None = None,
        split_csv: str | Path | None = None,
        stats: decode.SkipCounter | None = None,
    ) -> None:
        if tonemap not in TONEMAPS:
            raise ValueError(f"unknown tonemap '{tonemap}'; choose from {list(TONEMAPS)}")
        self.tonemap, self.split = tonemap, split
        root = Path(root)
        self.split_csv = Path(split_csv) if split_csv else root / SPLIT_CSV
        camera_csv = Path(camera_csv) if camera_csv else root / CAMERA_CSV
        self.cameras: dict[str, np.ndarray] = {}
        if camera_csv.is_file():
            for row in _read_csv(camera_csv):
                m = [[float(row[f"M_cam_from_uv_{i}{j}"]) for j in range(3)] for i in range(3)]
                self.cameras[row["scene_name"]] = np.array(m)
        super().__init__(root, stats)

    def _list_entries(self) -> list[tuple[str, str, str]]:
        """(scene, camera, frame) triples, e.g. ("ai_001_001", "cam_00", "0007")."""
        pattern = "*/images/scene_cam_*_geometry_hdf5/frame.*.depth_meters.hdf5"
        found = []
        for path in sorted(self.root.glob(pattern)):
            scene = path.parents[2].name
            camera = path.parent.name[len("scene_") : -len("_geometry_hdf5")]
            found.append((scene, camera, path.name.split(".")[1]))
        if self.split is None:
            return found
        if not self.split_csv.is_file():
            raise FileNotFoundError(f"hypersim: split '{self.split}' needs {self.split_csv}")
        keep = {
            (r["scene_name"], r["camera_name"], f"{int(r['frame_id']):04d}")
            for r in _read_csv(self.split_csv)
            if r["split_partition_name"] == self.split
            and r.get("included_in_public_release", "True").strip().lower() == "true"
        }
        return [e for e in found if e in keep]

    def _load(self, entry: tuple[str, str, str]) -> dict[str, Any]:
        scene, camera, frame = entry
        images = self.root / scene / "images"
        geometry = images / f"scene_{camera}_geometry_hdf5"
        depth_path = geometry / f"frame.{frame}.depth_meters.hdf5"
        distance = read_hdf5(depth_path).astype(np.float32)
        if distance.ndim != 2:
            raise decode.CorruptFileError(f"{depth_path}: want [H, W], got {distance.shape}")
        height, width = distance.shape
        if self.tonemap == "preview":
            color_path = images / f"scene_{camera}_final_preview" / f"frame.{frame}.tonemap.jpg"
            image = read_image(color_path)
        else:
            color_path = images / f"scene_{camera}_final_hdf5" / f"frame.{frame}.color.hdf5"
            hdr = read_hdf5(color_path)
            if hdr.shape[:2] != (height, width):  # checked here: tonemap() needs the same grid
                raise ValueError(
                    f"{color_path}: colour is {hdr.shape[:2]} but depth is {(height, width)}"
                )
            entity_path = geometry / f"frame.{frame}.render_entity_id.hdf5"
            geometry_mask = read_hdf5(entity_path) != -1 if entity_path.is_file() else None
            image = tonemap(hdr, geometry_mask)
        m = self.cameras.get(scene, standard_cam_from_uv(height, width))
        depth = distance_to_depth(distance, m)  # NaN (no geometry) stays NaN -> invalid
        return make_sample(
            f"{color_path} + {depth_path}", image, depth, None, f"{scene}/{camera}/{frame}",
            self.stats, intrinsics=intrinsics_from_cam_from_uv(m, height, width),
        )  # fmt: skip
