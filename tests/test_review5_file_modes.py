"""The safetensors files mmalign writes get the umask's permissions.

safetensors 0.8 writes every file through a 0600 temporary file renamed into place
(safetensors/safetensors#782), so a trained LoRA, a checkpoint or a shared cache entry was
readable by its owner only under any umask: another user of a team server (or a Docker image
built as root, run as another user) could not load it. They now get the mode any new file
gets: 0644 under umask 022, and still 0600 under 077.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusion_helpers import save_tiny, tiny_config
from file_helpers import modes


def test_a_training_run_leaves_its_weights_and_checkpoints_readable(tmp_path, umask):
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.loop import train

    run = tmp_path / "run"
    cfg = tiny_config(
        save_tiny(tmp_path), run, data={"toy": {"n": 4}},
        train={"max_steps": 2, "batch_size": 2, "checkpoint_every": 1},
    )  # fmt: skip
    train(cfg, DiffusionRecipe)
    found = modes(run)
    assert {"pytorch_lora_weights.safetensors", "checkpoints/checkpoint-1/trainable.safetensors",
            "checkpoints/checkpoint-2/trainable.safetensors"} <= set(found)  # fmt: skip
    assert found == dict.fromkeys(found, 0o644)  # before: all 0o600


def test_a_checkpoint_is_readable_before_the_run_ends(tmp_path, umask):
    from mmalign.train.checkpoint import save_checkpoint

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler)
    assert modes(path) == {"trainable.safetensors": 0o644}


def test_the_pre_encoding_cache_and_dense_weights_are_readable(tmp_path, umask, monkeypatch):
    from mmalign.diffusion.dense import pair_weights
    from mmalign.diffusion.encode import precompute
    from mmalign.train.diffusion_config import DenseConfig

    class Encoder:
        def encode(self, batch: dict[str, Any], rows: list[int]) -> dict[str, torch.Tensor]:
            return {"latents": batch["pixels"] * 2, "label": batch["label"]}

        def empty(self) -> dict[str, torch.Tensor]:
            return {"prompt_embeds": torch.zeros(1, 3, 5)}

    pairs = [{"prompt": f"p{i}", "pixels": torch.full((2, 3, 4, 4), float(i)),
              "label": torch.tensor(1.0)} for i in range(3)]  # fmt: skip
    folder = precompute(Encoder(), pairs, tmp_path / "encoded" / "k", "k", batch_size=2,
                        progress=False)  # fmt: skip
    assert modes(folder) == {"empty.safetensors": 0o644, "shard-00000.safetensors": 0o644}

    class Flaws:
        def dense(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
            return {"artifact": images[:, :1].clamp(0, 1)}

    monkeypatch.setattr("mmalign.rewards.get_scorer", lambda name, **kw: Flaws())
    images = [{"prompt": "p", "pixels": torch.rand(2, 3, 8, 8) * 2 - 1} for _ in range(2)]
    pair_weights(DenseConfig(scorer="toy:flaws"), images, 4, cache_dir=tmp_path / "dense")
    found = modes(tmp_path / "dense")
    assert len(found) == 1 and set(found.values()) == {0o644}


def test_user_embeddings_and_states_files_are_readable(tmp_path, umask):
    from mmalign.vlm.diagnose_states import PairStates, save_states
    from mmalign.vlm.user_embed import _write_entry, write_embeddings

    path = write_embeddings({"u0": torch.zeros(4)}, tmp_path / "users", {"model": "m"})
    assert path.stat().st_mode & 0o777 == 0o644
    _write_entry(tmp_path / "entry.safetensors", {"u0": torch.zeros(4)})
    assert (tmp_path / "entry.safetensors").stat().st_mode & 0o777 == 0o644
    save_states(tmp_path / "states.safetensors", PairStates({"s": torch.zeros(2, 3)}, {}))
    assert (tmp_path / "states.safetensors").stat().st_mode & 0o777 == 0o644


def test_the_mode_follows_the_umask(tmp_path, umask):
    from mmalign.files import make_readable, umask_mode
    from mmalign.vlm.user_embed import write_embeddings

    umask(0o077)
    assert umask_mode() == 0o600
    path = write_embeddings({"u0": torch.zeros(4)}, tmp_path / "a", {"model": "m"})
    assert path.stat().st_mode & 0o777 == 0o600  # not forced to 0644
    umask(0o027)
    assert umask_mode() == 0o640
    make_readable(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o640
    other = tmp_path / "a" / "user_embeddings.json"  # not a safetensors file: left alone
    other.chmod(0o600)
    make_readable(tmp_path)
    assert other.stat().st_mode & 0o777 == 0o600
    path.chmod(0o400)  # chmodded on purpose: left alone
    make_readable(path)
    assert path.stat().st_mode & 0o777 == 0o400
