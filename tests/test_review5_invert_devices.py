"""`mmalign invert --device cuda` on an SDXL model: the inversion's model function indexes the
conditioning with the rows still climbing, moved to the text embeddings' device
(`renoise._model_fn`). SDXL's time ids were built on the CPU whatever the device, and indexing
a CPU tensor with CUDA indices is an error in torch ("indices should be either on cpu or on the
same device as the indexed tensor"), so every SDXL inversion on a GPU failed at its first
UNet call. The time ids now sit on the embeddings' device.

No GPU here: the text encoders' output is put on the `meta` device, standing for the GPU.
"""

from __future__ import annotations

import torch

from mmalign.diffusion import DiffusionModel, renoise, tiny_sdxl_pipeline
from mmalign.diffusion.encode import Encoder


def test_sdxl_time_ids_sit_with_the_text_embeddings(monkeypatch):
    model = DiffusionModel(tiny_sdxl_pipeline(0), "sdxl", "")
    on_cpu = renoise._conditioning(model, ["a", "b"], 32)
    assert on_cpu["time_ids"].tolist() == [[32.0, 32, 0, 0, 32, 32]] * 2  # values unchanged

    def text_on_device(self, prompts):  # the encoders' output where they run (a GPU)
        return {"prompt_embeds": torch.zeros(len(prompts), 77, 64, device="meta"),
                "pooled": torch.zeros(len(prompts), 32, device="meta")}  # fmt: skip

    monkeypatch.setattr(Encoder, "text", text_on_device)
    cond = renoise._conditioning(model, ["a", "b"], 32)
    device = cond["prompt_embeds"].device
    assert cond["time_ids"].device == device
    # what `_model_fn` indexes them with: the rows, moved to the embeddings' device
    rows = torch.arange(2).to(device)
    assert cond["time_ids"][rows].shape == (2, 6)
