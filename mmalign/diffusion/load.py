"""Load SD1.5- and SDXL-architecture pipelines (and the toy-sd), and build tiny random ones.

`load_pipeline` is the one entry point: a local folder or a hub id, a dtype (full precision
unless asked), a weight variant and a revision; a model of another kind (toy:vlm, a VLM folder)
is refused naming what takes it (`mmalign.model_kind`). The pipeline's own VAE stays in float32 (the
SDXL VAE overflows in fp16, METHODS.md section 2); a VAE given as `vae=` loads in the dtype,
except a `force_upcast` one under float16, which stays float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..hub import Need, hub_errors, require
from ..model_kind import require_kind
from .source import DTYPES, dtype_kwarg, pipeline_class, resolve_model


class _NoEmptyFp32Notice(logging.Filter):
    """Drop diffusers' "modules ... that should be kept in float32: []" warning: its
    `ModelMixin.to` warns on every dtype cast, even when no module is to be kept (an empty
    list, as for every UNet), which reads as a precision problem that is not there. The
    warning with modules named still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_NoEmptyFp32Notice())

Family = Literal["sd", "sdxl"]


@dataclass
class DiffusionModel:
    """A loaded pipeline and what training needs to know about it."""

    pipe: Any  # StableDiffusionPipeline | StableDiffusionXLPipeline
    family: Family
    source: str  # the folder or hub id it came from

    @property
    def unet(self) -> torch.nn.Module:
        return self.pipe.unet

    @property
    def prediction_type(self) -> str:
        return str(self.pipe.scheduler.config.get("prediction_type", "epsilon"))

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def default_resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size) * self.vae_scale


def _family(pipe: Any) -> Family:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if isinstance(pipe, StableDiffusionXLPipeline):
        return "sdxl"
    if isinstance(pipe, StableDiffusionPipeline):
        return "sd"
    raise ValueError(
        f"mmalign trains StableDiffusionPipeline and StableDiffusionXLPipeline models; "
        f"this one is a {type(pipe).__name__}"
    )


def load_pipeline(
    name_or_path: str | Path,
    *,
    dtype: str = "float32",
    variant: str | None = None,
    revision: str | None = None,
    vae: str | None = None,
    device: str | torch.device | None = None,
    drop_t5: bool = False,
    key: str = "model",
    vae_key: str = "vae",
) -> DiffusionModel:
    """Load an SD1.5 or SDXL pipeline (any folder `save_pretrained` wrote, or a hub id); an
    SD3 / FLUX one goes to `load_flow_pipeline`.

    dtype: "float32" (default), "float16" or "bfloat16" for the UNet and text encoders.
    vae: a VAE (folder or hub id) loaded in `dtype`, except float16 for one whose config says
    `force_upcast` (kept float32); without it the pipeline's VAE is float32.
    drop_t5: SD3 without its T5 encoder (flow models only; ignored for SD1.5 / SDXL).
    key, vae_key: where the user named the model and the VAE, for messages (a recipe's
    `model.name_or_path` and `model.vae`; a command's MODEL).
    """
    from diffusers import AutoencoderKL, DiffusionPipeline

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    needer = "a model.kind: diffusion recipe" if key.startswith("model.") else "this command"
    require_kind(name_or_path, key, "diffusion", needer)
    source = resolve_model(name_or_path)
    if Path(source).exists() and pipeline_class(source) is None:
        raise FileNotFoundError(
            f"{source} is not a diffusers pipeline folder (no model_index.json)"
        )
    needs = [Need(source, key, file="model_index.json", revision=revision)]
    if vae is not None:
        needs.append(Need(vae, vae_key, file="config.json"))
    # before any lookup: every missing id named at once (a dead hub too, without each loader
    # retrying it in turn)
    require(needs)
    from .flow_load import load_flow_pipeline, process_of  # source.py: no cycle back

    if vae is None and process_of(source, revision) == "flow":  # SD3 / FLUX (flow_load.py)
        return load_flow_pipeline(  # type: ignore[return-value]
            source, dtype=dtype, variant=variant, revision=revision, device=device,
            drop_t5=drop_t5, key=key,
        )  # fmt: skip
    kwargs: dict[str, Any] = {**dtype_kwarg(DTYPES[dtype]), "variant": variant}
    if revision is not None:
        kwargs["revision"] = revision
    if vae is not None:
        kwargs["vae"] = _explicit_vae(vae, dtype, vae_key)
    elif dtype != "float32":
        with hub_errors(source, key):
            kwargs["vae"] = AutoencoderKL.from_pretrained(
                source, subfolder="vae", variant=variant, revision=revision,
                **dtype_kwarg(torch.float32),
            )  # fmt: skip
    if pipeline_class(source) in (None, "StableDiffusionPipeline"):
        kwargs["safety_checker"] = None  # alignment research: no NSFW filter on the outputs
    with hub_errors(source, key):
        pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    family = _family(pipe)
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return DiffusionModel(pipe, family, source)


def _explicit_vae(vae: str, dtype: str, vae_key: str) -> Any:
    """The VAE named by `vae_key`, in `dtype`, except a float16 request for a VAE whose config
    says `force_upcast` (diffusers' default when the config omits it): such a VAE (the SDXL
    one) overflows in fp16, and the Encoder encodes with it as loaded, so it stays float32.
    bfloat16 has float32's range, and diffusers upcasts only fp16 VAEs, so bf16 is kept.
    Loaded in float32 and cast after, so the weights round only once."""
    from diffusers import AutoencoderKL

    with hub_errors(vae, vae_key):
        model = AutoencoderKL.from_pretrained(vae, **dtype_kwarg(torch.float32))
    if dtype == "float32":
        return model
    if dtype == "float16" and getattr(model.config, "force_upcast", True):
        print(
            f"mmalign: {vae_key}: {vae} sets force_upcast (it overflows in float16): kept in "
            f"float32, not float16; give an fp16-safe VAE (force_upcast: false) to run it in "
            f"float16, or use bfloat16"
        )
        return model
    return model.to(DTYPES[dtype])


# ------------------------------------------------------------------ tiny random pipelines


def _toy_tokenizer():
    """The toy world's real CLIP BPE tokenizer (shipped with toy-sd): tests need no download."""
    from transformers import CLIPTokenizer

    from ..toy.paths import model_path

    return CLIPTokenizer.from_pretrained(model_path("sd") / "tokenizer")


def _tiny_text_encoder(tokenizer, seed: int, *, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=32,
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _tiny_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def _scheduler(prediction_type: str):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        prediction_type=prediction_type,
    )


def _tiny_unet(seed: int, **family: Any):
    """A two-level 16x16-latent UNet; `family` adds what SD or SDXL conditioning needs."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        **family,
    )


def tiny_sd_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    """A random SD1.5-architecture pipeline (32 px, about 1 M parameters) for tests."""
    from diffusers import StableDiffusionPipeline

    tokenizer = _toy_tokenizer()
    unet = _tiny_unet(seed, cross_attention_dim=32, attention_head_dim=8)
    return StableDiffusionPipeline(
        unet=unet,
        vae=_tiny_vae(seed + 1),
        text_encoder=_tiny_text_encoder(tokenizer, seed + 2),
        tokenizer=tokenizer,
        scheduler=_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    """A random SDXL-architecture pipeline: two text encoders, pooled embeddings and
    `text_time` micro-conditioning (`add_time_ids`), as in SDXL, at 32 px."""
    from diffusers import StableDiffusionXLPipeline

    tokenizer = _toy_tokenizer()
    unet = _tiny_unet(
        seed,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + 32 pooled
        cross_attention_dim=64,  # the two encoders' hidden states side by side
    )
    return StableDiffusionXLPipeline(
        unet=unet,
        vae=_tiny_vae(seed + 1),
        text_encoder=_tiny_text_encoder(tokenizer, seed + 2),
        text_encoder_2=_tiny_text_encoder(tokenizer, seed + 3, projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=_scheduler(prediction_type),
    )
