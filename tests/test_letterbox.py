"""Aspect-preserving letterbox and its inverse."""

import pytest
import torch

from modality_forcing.data.letterbox import letterbox, unletterbox


def test_letterbox_round_trip_restores_size_and_content():
    x = torch.rand(2, 3, 30, 60)
    framed, box = letterbox(x, (32, 32), pad_value=-1.0)
    assert framed.shape == (2, 3, 32, 32)
    assert (box.height, box.width) == (16, 32) and box.top == 8 and box.left == 0
    assert (framed[..., :8, :] == -1).all() and (framed[..., 24:, :] == -1).all()
    back = unletterbox(framed, box)
    assert back.shape == x.shape
    # A smooth image survives the down/up resize closely; a constant one exactly.
    const = torch.full((1, 1, 30, 60), 0.25)
    f2, b2 = letterbox(const, (32, 32))
    torch.testing.assert_close(unletterbox(f2, b2), const)


def test_letterbox_is_identity_at_the_target_size():
    x = torch.rand(1, 1, 24, 32)
    framed, box = letterbox(x, (24, 32))
    torch.testing.assert_close(framed, x)
    assert torch.equal(unletterbox(framed, box), framed)


def test_portrait_input_is_pillarboxed():
    _, box = letterbox(torch.rand(1, 3, 64, 32), (32, 32))
    assert (box.height, box.width, box.left) == (32, 16, 8)


def test_stretch_round_trip_and_frame_by_name():
    from modality_forcing.data.letterbox import frame, stretch, unletterbox

    x = torch.rand(1, 1, 12, 30)
    framed, box = stretch(x, (16, 16))
    assert framed.shape == (1, 1, 16, 16) and (box.top, box.left) == (0, 0)
    assert unletterbox(framed, box).shape == (1, 1, 12, 30)
    const = torch.full((1, 1, 12, 30), 3.0)
    torch.testing.assert_close(unletterbox(*frame(const, (16, 16), "stretch")), const)
    with pytest.raises(ValueError, match="unknown frame"):
        frame(x, (16, 16), "crop")
