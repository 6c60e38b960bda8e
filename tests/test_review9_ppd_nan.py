"""An undefined Spearman correlation (samples that do not vary with the user) is null in
results.json (valid JSON: `NaN` is not) and "undefined (constant)" where printed, not `nan`."""

from __future__ import annotations

import json
import math

from mmalign.eval.ppd_winrate import json_safe, shown_rho, spearman


def test_constant_samples_give_null_not_nan() -> None:
    rho = spearman([0.1, 0.5, 0.9], [0.3, 0.3, 0.3])
    assert math.isnan(rho)
    results = {"taste_response": {"spearman": {"size": rho, "outline": 0.5}}, "w": [rho, 1.0]}
    text = json.dumps(json_safe(results), allow_nan=False)  # raises on a NaN left in
    back = json.loads(text)
    assert back["taste_response"]["spearman"] == {"size": None, "outline": 0.5}
    assert back["w"] == [None, 1.0]
    assert shown_rho(rho) == "undefined (constant)"
    assert shown_rho(0.5) == "+0.50" and shown_rho(0.5, sign=False) == "0.50"


def test_diffusers_empty_fp32_notice_is_dropped(caplog) -> None:
    """diffusers warns on every dtype cast that no module (`[]`) must stay in float32; mmalign
    drops that notice and keeps the warning where modules are named."""
    import logging

    import mmalign.diffusion.load  # noqa: F401  (installs the filter)

    log = logging.getLogger("diffusers.models.modeling_utils")
    with caplog.at_level(logging.WARNING, logger=log.name):
        log.warning("There are modules in UNet2DConditionModel that should be kept in float32: [].")
        log.warning("There are modules in T5 that should be kept in float32: ['wo'].")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["There are modules in T5 that should be kept in float32: ['wo']."]


def test_a_user_the_run_lacks_embedded_at_another_width_is_named(monkeypatch, tmp_path) -> None:
    """A run trained on given embeddings (`ppd.embeddings`, e.g. 5-wide oracle tastes) asked
    for a toy user it does not hold: the recorded encoder embeds that user 2048 wide, and the
    error says the run's users came from elsewhere, not 'use the encoder it was trained on'."""
    import pytest
    import torch

    from mmalign.config import InputError
    from mmalign.diffusion import ppd, ppd_users

    def wide(users, *args):
        return {u: torch.zeros(2048) for u in users}

    monkeypatch.setattr(ppd_users, "run_embeddings", lambda run: {"big": torch.zeros(5)})
    monkeypatch.setattr(ppd, "adapter_meta", lambda run: {"encoder": "toy:vlm"})
    monkeypatch.setattr(ppd_users, "_toy_embeddings", wide)
    monkeypatch.setattr("mmalign.diffusion.recipe.run_info", lambda run: {"base": "toy:sd"})
    widths = r"h00: not in .* embeds them 2048 wide where the run's users are 5"
    with pytest.raises(InputError, match=widths):
        ppd_users.user_embeddings(tmp_path, ["big", "h00"])
    assert ppd_users.user_embeddings(tmp_path, ["big"])["big"].shape == (5,)
