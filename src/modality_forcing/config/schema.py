"""The config dataclasses of every part of the project and the model size presets.

Configs are plain data: the model, trainer and CLI read them; nothing here imports the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..modalities import DEPTH, IMAGE

T = TypeVar("T")


@dataclass
class TextConfig:
    """Text encoder. `kind`: `small` (trainable, for procedural captions) or `hf` (transformers)."""

    kind: str = "small"
    dim: int = 256  # width of the text tokens handed to the DiT (after projection)
    max_length: int = 64  # tokens per caption, padding included (procedural captions: <= 60)
    num_layers: int = 2  # `small` only
    num_heads: int = 4  # `small` only
    vocab_size: int = 512  # `small` only: word-level vocabulary, hashed beyond the base words
    pretrained: str | None = None  # `hf`: local directory of a transformers encoder
    hidden_layers: tuple[int, ...] = (-1,)  # `hf`: hidden states concatenated along channels
    trainable: bool = True  # `hf` encoders are normally frozen (False)
    chat_template: bool = False  # `hf`: wrap prompts in the tokenizer's chat template (Qwen3)
    dtype: str | None = None  # `hf`: load dtype of the backbone, e.g. "bfloat16"


@dataclass
class CodecConfig:
    """Image codec. `pixel`: RGB pixel patches. `vae`: a diffusers autoencoder from a directory."""

    kind: str = "pixel"
    pretrained: str | None = None
    subfolder: str | None = None


@dataclass
class BackboneConfig:
    """A diffusers T2I backbone post-trained with the depth stream (family flux2, flux or sd3).

    Frozen parts (text encoders, VAE, the trunk under LoRA) are reloaded from `pretrained` whenever
    the model is built, so checkpoints hold only the trained tensors.
    """

    pretrained: str | None = None  # local diffusers pipeline directory (or a transformer dir)
    subfolder: str | None = "transformer"  # transformer subfolder of `pretrained`
    text_encoder: str = "pipeline"  # `pipeline`: the backbone's own encoders | `small`: model.text
    text_max_length: int | None = None  # None: the pipeline's default (FLUX 512, SD3 T5 256)
    vae_subfolder: str | None = "vae"  # None: use `model.codec` instead (e.g. pixel in tests)
    dtype: str | None = None  # load dtype of the frozen parts (encoders, VAE, trunk under LoRA)
    lora_rank: int = 0  # 0 = full fine-tuning of the trunk; > 0 = LoRA (peft) on the trunk
    lora_alpha: float | None = None  # None = lora_rank (scale 1)
    lora_targets: tuple[str, ...] = ()  # module-name suffixes; () = every attention/MLP linear
    depth_weights: str = "copy"  # dual-stream blocks: `copy` (own, init from image) | `shared`
    depth_decoder_layers: int = 2  # depth-only blocks after the trunk, before the fp32 head
    guidance: float = 3.5  # guidance-embedding value for guidance-distilled backbones


@dataclass
class ModelConfig:
    """Native MM-DiT: shared trunk blocks, then `decoder_layers` own blocks per modality."""

    family: str = "native"  # `native` MM-DiT; adapted diffusers backbones register more
    hidden_size: int = 256
    num_layers: int = 6  # joint blocks: per-stream weights (text, image, depth), joint attention
    num_single_layers: int = 0  # then shared-weight blocks with per-token (per-modality) adaLN
    num_heads: int = 4
    patch_size: int = 4  # in codec-latent pixels (for `pixel`, image pixels)
    mlp_ratio: float = 4.0
    decoder_layers: int = 1
    modalities: tuple[str, ...] = (IMAGE, DEPTH)
    rope_theta: float = 100.0
    cross_modality_time: bool = False  # gated mixing of the other modality's timestep embedding
    depth_t_min: float = 0.05  # clamp in v = (x_t - x0_hat) / max(t, t_min)
    depth_prediction: str = "x0"  # what the depth head predicts: `x0` | `velocity`
    image_prediction: str = "velocity"  # what the image head predicts: `velocity` | `x0`
    text_pooled: bool = False  # the caption's mean token, through an MLP, added to every adaLN
    refine_width: int = 0  # > 0: a light conv refinement of each prediction (`PixelRefiner`)
    # Known depth points (depth completion) enter the depth stream as two channels per pixel
    # (value where known, a known/unknown mask) through a zero-initialised patch embedding
    depth_hint: bool = False
    resolution: tuple[int, int] | None = None  # (H, W) trained at; set by the trainer
    text: TextConfig = field(default_factory=TextConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # families other than native


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # Tests: a few thousand parameters, runs in milliseconds.
    "tiny": dict(
        hidden_size=32, num_layers=2, num_heads=2, patch_size=4, decoder_layers=1,
        text=dict(dim=32, num_layers=1, num_heads=2, max_length=16),
    ),
    # CPU: trains in minutes (cpu-s) to an hour (cpu-m) on 2 cores at 32x32 / 64x64. Mostly
    # shared-weight single blocks: the same FLOPs per token as per-stream blocks at a third of
    # the parameters, so the shipped demo checkpoint stays small.
    "cpu-s": dict(
        hidden_size=256, num_layers=1, num_single_layers=5, num_heads=4, patch_size=4,
        decoder_layers=1, text=dict(dim=256, num_layers=2, num_heads=4),
    ),
    "cpu-m": dict(
        hidden_size=384, num_layers=2, num_single_layers=6, num_heads=6, patch_size=4,
        decoder_layers=2, text=dict(dim=384, num_layers=2, num_heads=6),
    ),
    # The paper's from-scratch scale range. DiT parameters (`modality-forcing presets`): ~371M,
    # ~1.0B, ~3.3B. FLUX-like layout: a few per-stream joint blocks, then shared single blocks.
    "mf-370m": dict(
        hidden_size=1024, num_layers=2, num_single_layers=9, num_heads=16, patch_size=2,
        decoder_layers=2, text=dict(dim=1024, num_layers=4, num_heads=16, max_length=128,
        vocab_size=32000), codec=dict(kind="vae"),
    ),
    "mf-1b": dict(
        hidden_size=1536, num_layers=3, num_single_layers=10, num_heads=24, patch_size=2,
        decoder_layers=2, text=dict(dim=1536, num_layers=4, num_heads=24, max_length=128,
        vocab_size=32000), codec=dict(kind="vae"),
    ),
    "mf-3b": dict(
        hidden_size=2304, num_layers=4, num_single_layers=18, num_heads=36, patch_size=2,
        decoder_layers=2, text=dict(dim=2304, num_layers=4, num_heads=36, max_length=128,
        vocab_size=32000), codec=dict(kind="vae"),
    ),
}  # fmt: skip


@dataclass
class ForcingConfig:
    """Per-sample noise-level policy (the "forcing"). Probabilities of the four corners sum to 1."""

    policy: str = "corners"
    # Defaults measured by `bench depth` (docs/depth_quality.md): half the samples learn
    # image -> depth, half of those from pure-noise depth (the one-step readout).
    p_image_clean: float = 0.5  # t_image = 0: learn image -> depth
    p_depth_clean: float = 0.2  # t_depth = 0: learn depth -> image
    p_both_noised: float = 0.3  # independent shifted logit-normal t's
    p_depth_absent: float = 0.0  # t_depth = 1 and no depth loss: plain T2I sample
    shift_mu: float = 1.1  # logit-normal mean; > 0 favours noisier t
    shift_sigma: float = 1.0
    depth_shift_mu: float | None = None  # logit-normal mean of t_depth (None: shift_mu)
    # Image-clean samples whose depth starts from pure noise (t_depth = 1): the one-step x0
    # readout that few-step image -> depth sampling starts from (`docs/depth_quality.md`).
    p_depth_readout: float = 0.5
    # Depth completion (`flow/hints.py`; needs `model.depth_hint`): the share of image-clean
    # samples that get known depth points, held clean in a hint input; the depth of those is
    # normalised by the known points' mean. Points: LiDAR scanlines with `p_completion_lidar`
    # (samples with intrinsics), else a log-uniform count in `completion_points` of random pixels.
    p_completion: float = 0.0
    completion_points: tuple[int, int] = (3, 600)
    p_completion_lidar: float = 0.35


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=lambda: {IMAGE: 1.0, DEPTH: 1.0})
    num_t_bins: int = 10  # per-t-bin loss logging
    # x0 error of masked modalities: `l1` | `mse` (l1 won on val: docs/depth_quality.md)
    depth_loss: str = "l1"
    distill_weight: float = 0.0  # self-distillation toward the frozen T2I model (image stream)
    # Weight of object pixels in the image loss, relative to floor/walls/sky (batches with an
    # `object_mask`, i.e. the procedural world); objects cover ~8% of a 32x32 frame
    object_weight: float = 1.0


@dataclass
class MixtureEntry:
    """One member of `data.source: mixture` (readers in `data/training_sets/`)."""

    name: str = "procedural"  # training-set reader: hypersim | vkitti2 | kitti_depth | points | ...
    root: str | None = None  # dataset root (unused by `procedural`)
    weight: float = 1.0  # sampling weight, relative to the other members
    kind: str | None = None  # `dense` | `sparse`; None: the reader's own (sparse when sparsified)
    sparsify: str | None = None  # sparse-depth simulator for this member, e.g. "lidar:32"
    options: dict[str, Any] = field(default_factory=dict)  # reader keywords, e.g. {raw_root: ...}
    # Random crop after the sparsifier, before the resize to the training size: each side keeps
    # a fraction drawn from U(crop, 1), at a uniform position (1: no crop). Moves the rows a
    # sensor covers around the frame (a LiDAR only sees a band; `docs/sparse_depth.md`).
    # None: `SPARSE_CROP` for a sparse member, no crop for a dense one (the best on val).
    crop: float | None = None


@dataclass
class DataConfig:
    """Where training batches come from: the procedural world on the fly, or webdataset shards."""

    source: str = "procedural"  # `procedural` | `shards` | `mixture`
    shards: list[str] = field(default_factory=list)  # paths or brace patterns for `shards`
    height: int = 32
    width: int = 32
    # e.g. "lidar:32"; applied on the fly to procedural depth, without the random crop that a
    # sparse `mixture` member gets (`MixtureEntry.crop`)
    sparsify: str | None = None
    sparse_fraction: float = 0.0  # fraction of each batch sparsified (the rest stays dense)
    num_workers: int = 0
    shadows: bool = True
    num_scenes: int | None = None  # `procedural`: cycle through the first N training scenes
    mixture: list[MixtureEntry] = field(default_factory=list)  # members of `source: mixture`
    # noisy depth at missing pixels: neutral | noise | nearest (chosen on val: docs/sparse_depth.md)
    depth_fill: str = "nearest"


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: str = "cosine"  # `cosine` | `constant` | `wsd` (constant, then a linear cool-down)
    min_lr_ratio: float = 0.1
    decay_steps: int = 0  # `wsd`: the cool-down's length, ending at `max_steps`
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0 disables EMA


@dataclass
class TrainConfig:
    """Everything a training run needs; saved resolved into the run directory."""

    stage: str = "mf"  # `t2i` (image + captions only) | `mf` (Modality Forcing post-training)
    preset: str | None = "cpu-s"  # model preset applied before `model` overrides
    model: ModelConfig = field(default_factory=ModelConfig)
    forcing: ForcingConfig = field(default_factory=ForcingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    init_from: str | None = None  # checkpoint dir to initialise weights from (e.g. stage 1)
    out_dir: str = "runs/default"
    batch_size: int = 64  # global batch per optimiser step = world_size x grad_accum x micro-batch
    grad_accum: int = 1
    parallel: str = "none"  # `none` | `ddp` | `fsdp2` (under torchrun)
    activation_checkpointing: bool = False  # recompute each block in the backward pass
    compile: bool = False  # torch.compile each block (minutes of compile time, ~2x on CPU)
    max_steps: int = 1000
    max_minutes: float | None = None  # stop (after a checkpoint) past this much training time,
    # counted over all sessions of a resumed run
    # `auto`: bf16 autocast only where the device computes it natively, else fp32 (decided and
    # logged once per run: `precision.resolve_precision`); `bf16` | `fp32` force it.
    precision: str = "auto"
    device: str | None = None  # None: the rank's CUDA device under torchrun, else cuda > mps > cpu
    caption_dropout: float = 0.1
    seed: int = 0
    log_every: int = 10
    sample_every: int = 500
    # Validation: image -> depth (1 step, EMA weights) on `val_scenes` procedural val scenes
    # every `val_every` steps (0: off), into val.jsonl, the log and the reporter.
    val_every: int = 0
    val_scenes: int = 32
    report_to: str = "none"  # `none` | `tensorboard` (scalars under <run>/tensorboard)
    ckpt_every: int = 500
    ckpt_every_minutes: float | None = None  # also checkpoint after this much wall time
    max_bad_steps: int = 10  # consecutive non-finite losses before stopping
    keep_checkpoints: int = 2  # resumable checkpoints kept (0: keep all, e.g. for curves)
