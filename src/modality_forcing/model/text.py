"""Text encoders for the MM-DiT: a small trainable word-level transformer (procedural captions) and
any local transformers model (BERT/T5/Qwen3...) whose chosen hidden layers are concatenated and
projected, as the official FLUX.2-based release does with Qwen3 layers 9/18/27.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import TextConfig


@dataclass
class TextTokens:
    """Encoded captions.

    Attributes:
        tokens: [B, L, D] float text tokens handed to the DiT.
        mask: [B, L] bool, True on real tokens, False on padding; None: every token is real.
    """

    tokens: torch.Tensor
    mask: torch.Tensor | None


class TextEncoder(nn.Module):
    """Captions -> `TextTokens` of fixed length `max_length` and width `dim`.

    `trim=True` drops the trailing padding that no caption uses before encoding, so the output
    is only as long as the longest caption. Exact for the real tokens (padding is masked, or
    comes after them in a causal model); the MM-DiT drops that padding anyway, so training pays
    only for real tokens.
    """

    dim: int
    max_length: int

    def forward(self, captions: Sequence[str], trim: bool = False) -> TextTokens:
        raise NotImplementedError

    def unconditional(self, batch_size: int) -> TextTokens:
        """The embedding of the empty caption "" repeated `batch_size` times (the CFG null)."""
        out = self([""])
        return TextTokens(
            tokens=out.tokens.expand(batch_size, -1, -1),
            mask=out.mask.expand(batch_size, -1),
        )


def trim_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) [B, L] without the trailing columns that are padding in every row."""
    keep = max(1, int(mask.sum(1).max()))
    return ids[:, :keep], mask[:, :keep]


# ---------------------------------------------------------------------------------------------
# Small word-level encoder
# ---------------------------------------------------------------------------------------------

# Words of the procedural captions and common scene words; anything else hashes into a bucket.
_BASE_TEXT = """
    a an the and of on in at with near next to left right above below behind front under over
    between beside by is are this that its one two three four five six many several some small
    large big tiny huge tall short wide narrow round flat dark light bright pale shiny matte
    red green blue yellow orange purple pink brown black white gray grey cyan magenta gold silver
    sphere spheres ball box boxes cube cubes cylinder cylinders cone pyramid torus object objects
    floor wall walls ground ceiling sky room corner table chair shelf window door
    checkered striped plain wooden stone metal marble tiled textured glossy rough smooth
    scene view camera image photo picture shadow shadows lights lit sun lamp
    far close distant foreground background center middle top bottom side
    indoor outdoor street road car tree trees house building person grass water
    """
# The procedural world's caption words (`data.scene_graph.CAPTION_VOCAB` when the tokenizer was
# made) come first so each has its own id, never a hash bucket. Written out, not imported: token
# ids are part of every trained checkpoint, so they must not move when the world gains a word
# (tests/test_text.py checks that every caption word still has its own id).
_WORLD_TEXT = """
    a an and behind black blue box brown checkered cyan cylinder floor front gray green in left
    of on orange pink purple red right speckled sphere striped the wall white with yellow
    """
BASE_WORDS: tuple[str, ...] = tuple(dict.fromkeys([*_WORLD_TEXT.split(), *_BASE_TEXT.split()]))
PAD_ID, BOS_ID = 0, 1
NUM_SPECIAL = 2
_WORD_RE = re.compile(r"[^\W\d_]+")  # runs of letters (any script)


class WordTokenizer:
    """Lower-cased word-level tokenizer with a fixed base vocabulary and hashed OOV buckets.

    Ids: 0 = PAD, 1 = BOS, then the base words in order, then `vocab_size - 2 - len(words)`
    buckets that out-of-vocabulary words land in by `zlib.crc32` (stable across processes).
    Every sequence starts with BOS, so "" encodes to [BOS, PAD, ...] with one real token.
    """

    def __init__(self, vocab_size: int, max_length: int, words: Sequence[str] | None = None):
        words = list(dict.fromkeys(w.lower() for w in (BASE_WORDS if words is None else words)))
        self.num_buckets = vocab_size - NUM_SPECIAL - len(words)
        if self.num_buckets < 1:
            raise ValueError(
                f"vocab_size {vocab_size} leaves no hash buckets for {len(words)} base words; "
                f"use at least {NUM_SPECIAL + len(words) + 1}"
            )
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.word_to_id = {w: NUM_SPECIAL + i for i, w in enumerate(words)}

    def word_id(self, word: str) -> int:
        """Id of one (lower-case) word: its base id, or its hash bucket."""
        if word in self.word_to_id:
            return self.word_to_id[word]
        bucket = zlib.crc32(word.encode("utf-8")) % self.num_buckets
        return NUM_SPECIAL + len(self.word_to_id) + bucket

    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (ids [B, L] long, mask [B, L] bool), BOS first, truncated/right-padded."""
        ids = torch.full((len(captions), self.max_length), PAD_ID, dtype=torch.long)
        mask = torch.zeros(len(captions), self.max_length, dtype=torch.bool)
        for row, caption in enumerate(captions):
            words = _WORD_RE.findall(caption.lower())
            seq = [BOS_ID, *(self.word_id(w) for w in words)][: self.max_length]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = True
        return ids, mask


class SmallTextEncoder(TextEncoder):
    """Trainable word-level transformer: token + position embeddings, pre-norm encoder layers.

    Args:
        cfg: `dim`, `max_length`, `num_layers`, `num_heads`, `vocab_size` are used.
        words: base vocabulary (default `BASE_WORDS`); other words hash into the remaining ids.
    """

    def __init__(self, cfg: TextConfig, words: Sequence[str] | None = None) -> None:
        super().__init__()
        self.dim, self.max_length = cfg.dim, cfg.max_length
        self.tokenizer = WordTokenizer(cfg.vocab_size, cfg.max_length, words)
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_length, cfg.dim))
        layer = nn.TransformerEncoderLayer(
            cfg.dim,
            cfg.num_heads,
            dim_feedforward=4 * cfg.dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # No nested tensors: padded positions get the same outputs in train and eval mode.
        self.layers = nn.TransformerEncoder(
            layer, cfg.num_layers, enable_nested_tensor=False, mask_check=False
        )
        self.norm = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, captions: Sequence[str], trim: bool = False) -> TextTokens:
        """Captions (B strings) -> tokens [B, L, dim], mask [B, L]; L = max_length, or with
        `trim` the longest caption's length."""
        device = self.pos_embed.device
        ids, mask = self.tokenizer(captions)
        if trim:
            ids, mask = trim_padding(ids, mask)
        ids, mask = ids.to(device), mask.to(device)
        x = self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]  # [B, L, D]
        # Every row has its BOS, so no row is fully masked; without padding, no mask at all
        # (exact, and it spares the attention an additive mask).
        x = self.layers(x, src_key_padding_mask=None if mask.all() else ~mask)
        return TextTokens(tokens=self.norm(x), mask=mask)


# ---------------------------------------------------------------------------------------------
# Any transformers model from a local directory
# ---------------------------------------------------------------------------------------------


def _load_backbone(path: Path, **kwargs: object) -> nn.Module:
    """The bare model of a local checkpoint; for encoder-decoders (T5) only the encoder."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    kwargs = {**kwargs, "use_safetensors": True}  # never unpickle a `.bin` checkpoint
    # SD3/FLUX.1 ship `T5EncoderModel` (config says not encoder-decoder, but AutoModel would build
    # the full T5Model with a random decoder): load the named encoder class itself.
    names = [a for a in config.architectures or [] if a.endswith("EncoderModel")]
    if names and hasattr(transformers, names[0]):
        return getattr(transformers, names[0]).from_pretrained(str(path), **kwargs)
    if config.is_encoder_decoder:
        return transformers.AutoModel.from_pretrained(str(path), **kwargs).get_encoder()
    try:
        return transformers.AutoModel.from_pretrained(str(path), **kwargs)
    except ValueError:  # a config without a bare-model mapping: decoder-only LMs
        return transformers.AutoModelForCausalLM.from_pretrained(str(path), **kwargs)


class HFTextEncoder(TextEncoder):
    """A local transformers model; hidden states at `hidden_layers` concatenated, then projected.

    Follows the official release (reference section 6): optional Qwen3 chat template
    (`add_generation_prompt=True, enable_thinking=False`, no system message); tokenise with
    truncation to `max_length`, then right-pad by hand with `pad_token_id` (0 if none); run with
    `output_hidden_states=True`; `hidden_states[k]` (HF convention: 0 = embedding output, k = after
    layer k, negative from the end) for each k, concatenated along channels in the given order,
    cast to fp32, then a trainable `nn.Linear` to `dim` (unless `project=False`). Padded
    positions keep their hidden states (the release feeds them to the DiT); `mask` says which are
    real. Encoder-decoder models (T5) use their encoder only. The backbone is frozen (no grad,
    eval mode) unless `cfg.trainable`.

    Args:
        cfg: `pretrained` (local directory), `hidden_layers`, `dim`, `max_length`, `trainable`.
        chat_template: wrap each caption as a single user message with the tokenizer's template.
        dtype: dtype to load the backbone in (None: transformers' default for the checkpoint).
        project: add the trainable projection to `dim`; False feeds the concatenated hidden
            states as they are (the release's txt_in takes them directly; `dim` must equal
            their width).
    """

    def __init__(
        self,
        cfg: TextConfig,
        chat_template: bool = False,
        dtype: torch.dtype | None = None,
        project: bool = True,
    ) -> None:
        super().__init__()
        import transformers

        if not cfg.pretrained:
            raise ValueError("text encoder 'hf' needs `pretrained`: a local transformers directory")
        path = Path(cfg.pretrained)
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder directory '{path}' does not exist")
        kwargs = {"local_files_only": True}
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **kwargs)
        if dtype is not None:
            kwargs["dtype"] = dtype
        self.backbone = _load_backbone(path, **kwargs)
        self.chat_template = chat_template
        self.trainable = cfg.trainable
        self.dim, self.max_length = cfg.dim, cfg.max_length
        self.hidden_layers = tuple(cfg.hidden_layers)
        if not self.hidden_layers:
            raise ValueError("`hidden_layers` must name at least one hidden state")
        config = self.backbone.config.get_text_config()
        num_states = config.num_hidden_layers + 1
        for k in self.hidden_layers:
            if not -num_states <= k < num_states:
                raise ValueError(
                    f"hidden layer {k} out of range for a model with {num_states} hidden states"
                )
        self.pad_id = self.tokenizer.pad_token_id or 0
        width = len(self.hidden_layers) * config.hidden_size
        if not project and width != cfg.dim:
            raise ValueError(f"without a projection `dim` must be {width} (the concatenated "
                             f"hidden states), got {cfg.dim}")  # fmt: skip
        self.proj = nn.Linear(width, cfg.dim) if project else nn.Identity()
        if not self.trainable:
            self.backbone.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> HFTextEncoder:
        """A frozen backbone stays in eval mode whatever the parent does."""
        super().train(mode)
        if not self.trainable:
            self.backbone.eval()
        return self

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (input_ids [B, L] long, mask [B, L] bool), truncated then right-padded."""
        texts = list(captions)
        if self.chat_template:
            texts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": t}],
                    tokenize=False,
                    add_generation_prompt=True,
                    enable_thinking=False,
                )
                for t in texts
            ]
        encoded = self.tokenizer(texts, padding=False, truncation=True, max_length=self.max_length)
        ids = torch.full((len(texts), self.max_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(texts), self.max_length, dtype=torch.bool)
        for row, seq in enumerate(encoded["input_ids"]):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = True
        return ids, mask

    def forward(self, captions: Sequence[str], trim: bool = False) -> TextTokens:
        """Captions (B strings) -> tokens [B, L, dim], mask [B, L]; L = max_length, or with
        `trim` the longest caption's length."""
        device = self.backbone.get_input_embeddings().weight.device
        ids, mask = self.tokenize(captions)
        if trim:
            ids, mask = trim_padding(ids, mask)
        ids, mask = ids.to(device), mask.to(device)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            out = self.backbone(
                input_ids=ids,
                attention_mask=mask.long(),
                output_hidden_states=True,
                use_cache=False,
            )
        states = [out.hidden_states[k].float() for k in self.hidden_layers]  # k x [B, L, H]
        x = torch.cat(states, dim=-1)  # [B, L, k * H]
        if isinstance(self.proj, nn.Linear):
            x = self.proj(x.to(self.proj.weight.dtype))
        return TextTokens(tokens=x, mask=mask)


def _build_hf(cfg: TextConfig) -> HFTextEncoder:
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise ValueError(f"text.dtype '{cfg.dtype}' is not a torch dtype (e.g. bfloat16)")
    return HFTextEncoder(cfg, chat_template=cfg.chat_template, dtype=dtype)


TEXT_ENCODERS: dict[str, Callable[[TextConfig], TextEncoder]] = {
    "small": SmallTextEncoder,
    "hf": _build_hf,
}


def build_text_encoder(cfg: TextConfig) -> TextEncoder:
    """Build the text encoder named by `cfg.kind` (`small` or `hf`)."""
    if cfg.kind not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder '{cfg.kind}'; choose from {sorted(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[cfg.kind](cfg)
