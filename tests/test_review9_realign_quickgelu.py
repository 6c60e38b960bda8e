"""Re-Align's CLIP retrieval embedder builds OpenAI's CLIPs with QuickGELU, as their weights
were trained (open_clip >= 3 builds `ViT-B-32` with nn.GELU under the `openai` tag and only
warns), and other tags as their config says: what `rewards/openclip.py` already did."""

from __future__ import annotations

import open_clip
import pytest

from mmalign.vlm import realign_embed


@pytest.mark.parametrize(("tag", "quick"), [("openai", True), ("laion2b_s34b_b79k", False)])
def test_the_tags_activation_is_used(monkeypatch, tag, quick) -> None:
    seen: dict[str, object] = {}

    def create(name, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop before any weights")

    monkeypatch.setattr(realign_embed, "require_clip_weights", lambda *a, **k: None)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", create)
    with pytest.raises(Exception, match="stop before any weights"):
        realign_embed.OpenClipEmbedder("ViT-B-32", tag)
    assert seen["force_quick_gelu"] is quick
