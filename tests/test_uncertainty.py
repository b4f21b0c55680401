"""Spearman rank correlation of uncertainty maps with errors, against scipy."""

import math

import pytest
import torch
from scipy.stats import spearmanr

from modality_forcing.metrics.uncertainty import spearman_per_image


def test_spearman_matches_scipy_with_ties_and_masks():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 6, 6, generator=g)
    b = a + 0.7 * torch.randn(3, 6, 6, generator=g)
    a[1] = a[1].round()  # many ties
    mask = torch.rand(3, 6, 6, generator=g) > 0.3
    rho = spearman_per_image(a, b, mask)
    for i in range(3):
        expected = spearmanr(a[i][mask[i]].numpy(), b[i][mask[i]].numpy()).statistic
        assert rho[i].item() == pytest.approx(expected, abs=1e-12)


def test_spearman_extremes_and_degenerate_images():
    x = torch.arange(16.0).view(1, 4, 4)
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    assert spearman_per_image(x, x.exp(), full).item() == pytest.approx(1.0)  # monotone
    assert spearman_per_image(x, -x, full).item() == pytest.approx(-1.0)
    assert math.isnan(spearman_per_image(x, torch.ones(1, 4, 4), full).item())  # constant
    few = torch.zeros(1, 4, 4, dtype=torch.bool)
    few[0, 0, :2] = True
    assert math.isnan(spearman_per_image(x, x, few).item())  # fewer than 3 pixels
