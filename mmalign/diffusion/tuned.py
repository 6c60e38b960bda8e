"""Load what training produced: a pipeline folder, a LoRA folder or a training output_dir."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..config import InputError
from ..hub import hub_errors, looks_local, require_one
from ..model_kind import require_kind
from .load import DiffusionModel, dtype_kwarg, load_pipeline
from .lora import LORA_FILE


def _lora_params(unet: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)


class _NoTextEncoderNotice(logging.Filter):
    """Drops diffusers' "No LoRA keys associated to CLIPTextModel..." notice: mmalign's LoRAs
    adapt the UNet only, so the text encoders having none is expected, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("No LoRA keys associated to") and "Text" in message)


@contextmanager
def _quiet_text_encoder_notice() -> Iterator[None]:
    loggers = [logging.getLogger(f"diffusers.loaders.{m}") for m in ("lora_base", "peft")]
    notice = _NoTextEncoderNotice()
    for logger in loggers:
        logger.addFilter(notice)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(notice)


def check_lora(lora: str | Path, key: str = "lora") -> str:
    """A LoRA given as `key` (`--lora`), checked before any model loads: a local one (it
    exists, or is spelled as a path) must hold `pytorch_lora_weights.safetensors` and is never
    looked up on the hub; a model of another kind (a VLM run or adapter) is named as such; a
    hub id must be usable (`hub.require_one`: cached offline, or a hub that answers)."""
    name = str(lora)
    if not looks_local(name):
        return require_one(name, key, file=LORA_FILE)
    require_one(name, key)  # "does not exist (no such local folder or file)"
    require_kind(name, key, "diffusion", key, noun="a diffusion LoRA folder")
    path = Path(name).expanduser()
    if not path.is_dir() or not (path / LORA_FILE).is_file():
        raise InputError(
            f"{key}: {name} holds no {LORA_FILE}; {key} takes a diffusion LoRA folder (a LoRA "
            "training run's output_dir, or a folder `save_lora_weights` wrote)"
        )
    return name


def apply_lora(model: DiffusionModel, lora: str | Path, key: str = "lora") -> DiffusionModel:
    """`pipe.load_lora_weights(lora)`, failing clearly when the LoRA does not fit the model.
    `key`: where the user named it (`--lora`), for messages."""
    path = Path(check_lora(lora, key)).expanduser()
    before = _lora_params(model.unet)
    try:
        with _quiet_text_encoder_notice(), hub_errors(str(lora), key):
            model.pipe.load_lora_weights(str(path) if path.exists() else str(lora))
    except InputError:  # a hub id that could not be fetched (`hub_errors`)
        raise
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(
            f"{key}: the LoRA at {path} does not fit the model {model.source}: {err}"
        ) from None
    if _lora_params(model.unet) == before:
        raise ValueError(
            f"{key}: the LoRA at {path} does not fit the model {model.source}: none of its "
            "layers matched the UNet (was it trained on another architecture?)"
        )
    return model


def load_tuned(
    tuned: str | Path,
    base: str | None = None,
    *,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    key: str = "--tuned",
    base_key: str = "--base",
) -> DiffusionModel:
    """`tuned`: a pipeline folder, a LoRA folder (needs `base`), a full-UNet folder (needs
    `base`) or a training output_dir (its final weights; the base comes from its run file).
    `dtype`: the pipeline's precision, as `load_pipeline` takes it. `device`: where the whole
    pipeline is moved once its tuned weights are in (None: it stays on the CPU).
    key, base_key: where the user named `tuned` and the base, for messages (`eval winrate`'s
    --tuned and --base; a command that names the tuned model otherwise passes its own, as
    `eval accuracy --model`). The base is named `base_key` even where the run file gave it:
    that option is how to give another."""
    model = _load_tuned(tuned, base, dtype, key, base_key)
    if device is not None:
        model.pipe.to(device)  # the LoRA, UNet or transformer just put in included
    return model


def _load_tuned(
    tuned: str | Path, base: str | None, dtype: str, key: str, base_key: str
) -> DiffusionModel:
    from diffusers import UNet2DConditionModel

    path = Path(tuned)
    if not path.exists():
        raise FileNotFoundError(f"{key} {path} does not exist")
    require_kind(tuned, key, "diffusion", "this command")  # a VLM run or folder
    run_file = path / "mmalign_run.json"
    run: dict = {}
    if run_file.is_file():
        run = json.loads(run_file.read_text())
        final = run.get("final")
        if not final:
            raise ValueError(f"{path} is a training run that has not finished (no final weights)")
        if final.get("kind") == "ppd":  # a user branch: it needs a user to condition on
            from ..config import InputError

            raise InputError(
                f"{tuned} is a PPD run (a user branch, {Path(final['path']).name}): sample it "
                f"with `mmalign sample BASE --ppd {tuned} --user ID` and evaluate it with "
                f"`mmalign eval winrate --tuned {tuned} --user IDS`"
            )
        base = base or run["base"]
        # the weights sit in the run folder itself; the recorded path is where it was at the
        # end of training, so a moved or copied run would miss them or read another run's
        path = Path(tuned) / Path(final["path"]).name
        if final["kind"] == "lora":
            path = path.parent
    if (path / "model_index.json").is_file():
        return load_pipeline(path, dtype=dtype, key=key)
    if base is None:
        raise ValueError(
            f"{path} holds LoRA or UNet weights only: give the base model ({base_key})"
        )
    # a flow run samples with the text encoders and T5 length it trained with (flow_recipe)
    model = load_pipeline(base, dtype=dtype, drop_t5=run.get("t5") is False, key=base_key)
    if run.get("max_sequence_length") and hasattr(model.pipe, "transformer"):
        model.pipe.mmalign_max_sequence_length = int(run["max_sequence_length"])
    if (path / LORA_FILE).is_file():
        return apply_lora(model, path, key=key)
    if (path / "config.json").is_file() and hasattr(model.pipe, "transformer"):  # SD3 / FLUX
        cls = type(model.pipe.transformer)
        transformer = cls.from_pretrained(path, **dtype_kwarg(model.pipe.transformer.dtype))
        model.pipe.register_modules(transformer=transformer)
        return model
    if (path / "config.json").is_file():
        unet = UNet2DConditionModel.from_pretrained(path, **dtype_kwarg(model.unet.dtype))
        model.pipe.register_modules(unet=unet)
        return model
    raise ValueError(
        f"{path} is neither a pipeline, a LoRA ({LORA_FILE}), a UNet folder nor a training run"
    )
