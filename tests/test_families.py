"""What code asks a family instead of its name: the prediction decides the sampler, the native range the
training timesteps."""

from __future__ import annotations

import pytest
import torch

from dardiag.families import DIT_FAMILIES, FAMILIES


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_prediction_says_what_the_target_is(name):
    fam = FAMILIES[name]
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 4, 3, 4, 4, generator=g)
    t = fam.to_native(torch.tensor([0.3, 0.7]))
    target = fam.target(x0, noise, t)
    is_eps = torch.allclose(target, noise)
    is_velocity = torch.allclose(target, x0 - noise) or torch.allclose(target, noise - x0)
    assert (fam.prediction == "epsilon") == is_eps and (fam.prediction == "velocity") == is_velocity
    assert fam.prediction in ("epsilon", "velocity", "v")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_training_timesteps_cover_the_native_range(name):
    fam = FAMILIES[name]
    t = fam.draw_native(4096, torch.Generator().manual_seed(0))
    fam.check_native(t)  # in range, integers where the family's time is
    assert torch.equal(t, t.round()) == fam.integer_time
    span = fam.t_max - fam.t_min
    assert t.min() < fam.t_min + 0.01 * span and t.max() > fam.t_max - 0.01 * span


def test_the_dit_families_are_families():
    assert set(DIT_FAMILIES) <= set(FAMILIES)
    assert [FAMILIES[n].prediction for n in DIT_FAMILIES] == ["epsilon", "velocity", "velocity"]
