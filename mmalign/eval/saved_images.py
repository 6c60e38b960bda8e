"""The images `mmalign eval winrate` draws, saved and reused: their seeds and file names, the
settings they were drawn with, and drawing only those not yet saved.

Images are saved as PNGs under `out_dir/images/{base,tuned}/` and reused by a later run with the
same models and sampler (resumable); the models are told apart by their ids, weight files or hub
snapshot commit (`fingerprint`) and, for flow models, the T5 setting they sample with
(`text_encoding`); a tuned model loaded on its base (a LoRA, a UNet, a training run) also by the
base's id and weights (`on_base`). The device type and dtype each model samples in are recorded
too (`devices.sampling_precision`): one seed draws other images on a GPU or in bfloat16.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..devices import CPU_FLOAT32
from ..diffusion.sample import generate_seeded, to_pil_images
from ..weights import hub_commit

# What a saved-images record without a model's device and dtype was drawn with: before
# `--device` / `--dtype`, every image was drawn on the CPU in float32.
BEFORE_PRECISION = {f"{m}_{k}": v for m in ("base", "tuned") for k, v in CPU_FLOAT32.items()}
SEED_STRIDE = 100_000  # seed offset between a prompt's images k and k+1


def image_seed(seed: int, prompt_index: int, k: int = 0) -> int:
    """The generator seed of image k of prompt i: `seed + i` for the first image (as before
    several seeds existed), then `seed + i + k * SEED_STRIDE`, so truncating the prompt list
    (`--n`) never changes a prompt's seeds."""
    return seed + prompt_index + k * SEED_STRIDE


def image_file(model: str, prompt_index: int, prompt: str, seed: int) -> str:
    """`images/<model>/<index>-<prompt hash>-seed<seed>.png`: another prompt list in the same
    folder never picks up an image made for a different prompt."""
    tag = hashlib.sha1(prompt.encode()).hexdigest()[:8]
    return f"images/{model}/{prompt_index:05d}-{tag}-seed{seed}.png"


def fingerprint(source: str | None) -> str | None:
    """Names, sizes and modification times of the weight files under a local model folder (a
    retrained run at the same path gets a new fingerprint); for a hub id the commit of the
    cached snapshot it was loaded from (`weights.hub_commit`: a new revision on the hub, once
    downloaded, is another model); None for a toy name or a hub id not in the cache."""
    if source is None:
        return None
    if not Path(source).exists():
        commit = hub_commit(source)
        return None if commit is None else f"hub:{commit}"
    root = Path(source)
    files = [root] if root.is_file() else sorted(
        p for ext in ("*.safetensors", "*.bin", "*.pt") for p in root.rglob(ext)
        if "checkpoints" not in p.relative_to(root).parts
    )  # fmt: skip
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        name = f.name if f == root else f.relative_to(root)
        digest.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def text_encoding(pipe: Any) -> dict[str, Any] | None:
    """What a flow pipeline (SD3 / SD3.5, FLUX) encodes prompts with when it samples: whether it
    has its T5 encoder and the T5 length it pads to (`sampling_kwargs`, else the family's
    default); None for a pipeline without T5 (SD1.5 / SDXL).

    Recorded with the saved images because neither a model's id nor its weights show it:
    `mmalign eval winrate` loads a run's base with the run's T5 setting, so the same base
    draws other images for a run with T5 dropped or another T5 length."""
    from ..diffusion.flow_load import (
        FlowModel,
        default_max_sequence,
        flow_family,
        is_flow_scheduler,
        sampling_kwargs,
    )

    if getattr(pipe, "transformer", None) is None or not is_flow_scheduler(pipe.scheduler):
        return None
    family = flow_family(pipe)
    length = sampling_kwargs(pipe).get("max_sequence_length") or default_max_sequence(pipe, family)
    return {"t5": FlowModel(pipe, family, "").has_t5, "max_sequence_length": int(length)}


def on_base(tuned: str | None) -> bool:
    """Whether the tuned model's images depend on the base it is loaded on: all but a whole
    pipeline folder (a LoRA, a UNet, a training output_dir sit on `--base`)."""
    return tuned is None or not (Path(tuned) / "model_index.json").is_file()


def sync_settings(out_dir: Path, settings: dict[str, Any], tuned_on_base: bool = False) -> None:
    """Reuse images in out_dir/images only when they came from the same model and sampler: a
    changed sampler clears both models' images, a changed model only its own (a changed base
    id or weights the tuned model's too where it sits on that base, `tuned_on_base`: a LoRA
    on another base draws other images); said aloud. A setting the old record lacks reads as
    None: records written before `text_encoding` existed lack it, so a flow model's images
    from them are drawn again (they may have used another T5 setting), while a model whose
    setting is None (no T5) keeps its images. A missing device or dtype reads as CPU float32
    (`BEFORE_PRECISION`), the only way images were drawn before they were recorded."""
    path = out_dir / "images" / "settings.json"
    if path.is_file():
        old = {**BEFORE_PRECISION, **json.loads(path.read_text())}
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        stale = set()
        for key in changed:
            stale |= {key.split("_")[0]} if key.startswith(("base", "tuned")) else {"base", "tuned"}
            if tuned_on_base and key in ("base", "base_weights"):
                stale.add("tuned")
        for model in sorted(stale):
            folder = out_dir / "images" / model
            if folder.is_dir():
                print(
                    f"mmalign: {folder} was generated with other settings "
                    f"({', '.join(changed)}); generating again"
                )
                shutil.rmtree(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def generate_or_reuse(
    pipe,
    model: str,
    prompts: Sequence[str],
    seeds: Sequence[int],
    prompt_index: Sequence[int],
    out_dir: Path,
    **sampler: Any,
) -> tuple[torch.Tensor, int]:
    """Images for (prompt, seed) pairs, reading PNGs already under out_dir/images/<model> and
    generating (and saving) only the missing ones; returns (images [N,3,H,W], generated).
    Generated images are quantised to 8 bits before scoring, as the saved PNGs are, so a
    resumed run scores exactly the same pixels."""
    from PIL import Image

    files = [
        out_dir / image_file(model, i, p, s)
        for i, p, s in zip(prompt_index, prompts, seeds, strict=True)
    ]
    missing = [j for j, f in enumerate(files) if not f.is_file()]
    if missing:
        files[0].parent.mkdir(parents=True, exist_ok=True)
    step = sampler.pop("batch_size")
    with tqdm(total=len(missing), desc=model, unit="img", disable=not missing) as bar:
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            new = generate_seeded(
                pipe, [prompts[j] for j in chunk], [seeds[j] for j in chunk], batch_size=step,
                desc=model, progress=False, **sampler,
            )  # fmt: skip
            # saved per chunk: resumable. Written under another name, then renamed: a run
            # killed mid-write leaves no half-written PNG to be taken for a saved image
            for j, image in zip(chunk, to_pil_images(new), strict=True):
                part = files[j].with_name(files[j].name + ".part")
                image.save(part, format="PNG")
                part.replace(files[j])
            bar.update(len(chunk))
    images = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in files]
    return torch.stack(images).permute(0, 3, 1, 2).float() / 255, len(missing)
