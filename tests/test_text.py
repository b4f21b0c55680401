"""Text encoders: small word-level transformer, and local transformers models (tiny, random)."""

from __future__ import annotations

import pytest
import torch

from modality_forcing.config import TextConfig
from modality_forcing.model.text import (
    BOS_ID,
    PAD_ID,
    HFTextEncoder,
    SmallTextEncoder,
    TextTokens,
    WordTokenizer,
    build_text_encoder,
)

CAPTIONS = ["a red sphere left of a blue box", "a green cylinder on a floor"]


def _small(**kw) -> SmallTextEncoder:
    torch.manual_seed(0)
    cfg = TextConfig(dim=32, num_layers=1, num_heads=2, max_length=8, **kw)
    enc = build_text_encoder(cfg)
    assert isinstance(enc, SmallTextEncoder)
    return enc


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"unknown text encoder 'clip'; choose from \['hf', "):
        build_text_encoder(TextConfig(kind="clip"))


def test_small_shapes_mask_and_truncation() -> None:
    enc = _small()
    out = enc([*CAPTIONS, "", "one two three four five six seven eight nine"])
    assert isinstance(out, TextTokens)
    assert out.tokens.shape == (4, 8, 32) and out.mask.shape == (4, 8)
    assert out.mask.dtype == torch.bool
    # BOS + 7 words; BOS + 6 words; BOS only for "", BOS + 8 words truncated to 8.
    assert out.mask.sum(1).tolist() == [8, 7, 1, 8]
    assert torch.isfinite(out.tokens).all()


def test_small_deterministic_distinct_and_train_eval_equal() -> None:
    enc = _small()
    a, b = enc(CAPTIONS), enc(CAPTIONS)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.allclose(a.tokens[0], a.tokens[1])
    enc.eval()
    with torch.no_grad():  # eval/no-grad may take torch's fused path; outputs must agree
        torch.testing.assert_close(enc(CAPTIONS).tokens, a.tokens)


def test_word_tokenizer_oov_hashes_stably() -> None:
    tok = WordTokenizer(vocab_size=64, max_length=6, words=["a", "red", "sphere"])
    ids, mask = tok(["A  red, SPHERE!", "zebra zebra quokka", ""])
    assert ids[0, :4].tolist() == [BOS_ID, 2, 3, 4]  # case/punctuation ignored
    assert ids[1, 1] == ids[1, 2] and ids[1, 1] >= 5  # OOV in the hash buckets, same word same id
    assert ids[1, 1].item() == tok.word_id("zebra")
    # Stable across instances (crc32, never the salted builtin hash()).
    assert WordTokenizer(64, 6, ["a", "red", "sphere"]).word_id("quokka") == ids[1, 3].item()
    assert ids[2].tolist() == [BOS_ID] + [PAD_ID] * 5 and mask[2].tolist() == [True] + [False] * 5
    assert int(ids.max()) < 64
    with pytest.raises(ValueError, match="hash buckets"):
        WordTokenizer(vocab_size=5, max_length=4, words=["a", "b", "c"])


def test_small_gradients_and_unconditional() -> None:
    enc = _small()
    enc(CAPTIONS).tokens.square().mean().backward()
    assert enc.token_embed.weight.grad is not None and enc.pos_embed.grad.abs().sum() > 0
    assert all(p.grad is not None for p in enc.layers.parameters())
    null = enc.unconditional(3)
    assert null.tokens.shape == (3, 8, 32)
    torch.testing.assert_close(null.tokens[2], enc([""]).tokens[0])
    assert null.mask.sum(1).tolist() == [1, 1, 1]


# ---------------------------------------------------------------------------------------------
# HF encoders: tiny random models + a WordLevel tokenizer built offline, saved, loaded by path.
# ---------------------------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
WORDS += ["user", "assistant", "<think>", "</think>", "a", "red", "blue", "sphere", "box", "of"]
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> "
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant "
    "{% if enable_thinking is defined and not enable_thinking %}<think> </think> {% endif %}"
    "{% endif %}"
)


def _save_tokenizer(path, *, bert: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.add_special_tokens([w for w in WORDS if w.startswith(("<", "["))])  # split out like Qwen's
    kwargs = {"unk_token": "[UNK]"}
    if bert:  # [CLS] ... [SEP], pad [PAD] = 0
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        kwargs["pad_token"] = "[PAD]"
    else:  # Qwen-like: no BOS, pad <|endoftext|>, chat template
        kwargs["pad_token"] = "<|endoftext|>"
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, **kwargs)
    if not bert:
        tok.chat_template = QWEN_TEMPLATE
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert")
    cfg = transformers.BertConfig(
        vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    transformers.BertModel(cfg).save_pretrained(path)
    _save_tokenizer(path, bert=True)
    return path


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qwen3")
    cfg = transformers.Qwen3Config(
        vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
    )  # fmt: skip
    transformers.Qwen3ForCausalLM(cfg).save_pretrained(path)
    _save_tokenizer(path, bert=False)
    return path


def test_hf_missing_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HFTextEncoder(TextConfig(kind="hf", pretrained=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="pretrained"):
        build_text_encoder(TextConfig(kind="hf"))


def test_hf_bert_layers_padding_and_frozen(bert_dir) -> None:
    cfg = TextConfig(kind="hf", pretrained=str(bert_dir), dim=24, max_length=6,
                     hidden_layers=(0, -1), trainable=False)  # fmt: skip
    enc = build_text_encoder(cfg)
    assert isinstance(enc, HFTextEncoder)
    assert enc.proj.in_features == 2 * 32  # two hidden states concatenated
    ids, mask = enc.tokenize(["a red sphere", "a red sphere of a blue box", ""])
    assert ids.shape == (3, 6)
    assert mask.sum(1).tolist() == [5, 6, 2]  # [CLS] a red sphere [SEP]; truncated; [CLS][SEP]
    assert ids[0].tolist()[-1] == 0 and ids[0, 0] == 2  # right padding with [PAD] = 0

    out = enc(["a red sphere", "a blue box"])
    assert out.tokens.shape == (2, 6, 24) and out.mask.shape == (2, 6)
    # Channels are [hidden_states[0] | hidden_states[-1]], then the projection.
    with torch.no_grad():
        hs = enc.backbone(input_ids=ids[:1], attention_mask=mask[:1].long(),
                          output_hidden_states=True).hidden_states  # fmt: skip
        expected = enc.proj(torch.cat([hs[0], hs[3]], dim=-1))
    torch.testing.assert_close(enc(["a red sphere"]).tokens, expected)

    enc.train()
    assert not enc.backbone.training
    out.tokens.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in enc.backbone.parameters())
    assert enc.proj.weight.grad is not None
    null = enc.unconditional(2)
    assert null.tokens.shape == (2, 6, 24) and null.mask.sum(1).tolist() == [2, 2]


def test_hf_qwen_chat_template_and_trainable(qwen_dir) -> None:
    cfg = TextConfig(kind="hf", pretrained=str(qwen_dir), dim=8, max_length=16,
                     hidden_layers=(1, 2, 3), trainable=True)  # fmt: skip
    enc = HFTextEncoder(cfg, chat_template=True)
    assert enc.proj.in_features == 3 * 16
    ids, mask = enc.tokenize(["a red sphere", ""])
    # <|im_start|> user a red sphere <|im_end|> <|im_start|> assistant <think> </think>
    assert ids[0, :10].tolist() == [4, 7, 11, 12, 14, 5, 4, 8, 9, 10]
    assert mask.sum(1).tolist() == [10, 7]  # "" still carries the template
    assert ids[1, 7:].eq(6).all()  # right-padded with <|endoftext|>

    out = enc(["a red sphere", "a blue box"])
    assert out.tokens.shape == (2, 16, 8)
    assert torch.isfinite(out.tokens).all()
    out.tokens.sum().backward()
    assert any(p.grad is not None for p in enc.backbone.parameters())  # trainable backbone

    plain = HFTextEncoder(cfg.__class__(**{**cfg.__dict__, "trainable": False}))
    _, mask = plain.tokenize(["a red sphere", ""])
    assert mask.sum(1).tolist() == [3, 0]  # no BOS for Qwen: "" is all padding
    assert torch.isfinite(plain.unconditional(2).tokens).all()


@pytest.mark.parametrize("arch", ["T5EncoderModel", "T5Model"])
def test_hf_t5_uses_encoder_only(tmp_path, arch: str) -> None:
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=len(WORDS), d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                num_heads=2)  # fmt: skip
    getattr(transformers, arch)(cfg).save_pretrained(tmp_path)
    _save_tokenizer(tmp_path, bert=True)
    enc = HFTextEncoder(TextConfig(kind="hf", pretrained=str(tmp_path), dim=8, max_length=6,
                                   hidden_layers=(-1,), trainable=False))  # fmt: skip
    assert not any("decoder" in name for name, _ in enc.backbone.named_parameters())
    assert enc(["a red sphere"]).tokens.shape == (1, 6, 8)


def test_every_procedural_caption_word_has_its_own_id():
    from modality_forcing.data.scene_graph import CAPTION_VOCAB
    from modality_forcing.model.text import WordTokenizer

    tok = WordTokenizer(vocab_size=512, max_length=8)
    ids = {tok.word_id(w) for w in CAPTION_VOCAB}
    assert len(ids) == len(CAPTION_VOCAB) and all(i < 2 + len(tok.word_to_id) for i in ids)
