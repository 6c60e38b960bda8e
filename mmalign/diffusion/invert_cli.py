"""`mmalign invert MODEL --image IMG --prompt "..." --out DIR`: ReNoise inversion of images.

Writes the inverted noise and the images' latents (`renoise-noise.safetensors`, all images
stacked), each reconstruction sampled back from it with deterministic DDIM on the same grid
(`renoise-reconstruction-<i>.png`), the same for plain DDIM inversion (`ddim-*`), the VAE round
trip of each input (`input-vae-<i>.png`) and `invert.json`, and prints both reconstruction
errors (latent MSE and pixel MSE against the VAE round trip of the input), so the gain of the
ReNoise iterations is measured on the user's own images. The model runs on `--device` (default
`auto`: a GPU where torch sees one, else the CPU; `devices.resolve_device`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import InputError


def _images(paths: list[str]) -> list[Any]:
    from PIL import Image

    from ..data.schema import to_rgb

    images = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--image {path}: no such file")
        try:  # read as training reads it: transparency onto white, 16-bit grey at its depth
            with Image.open(path) as image:
                images.append(to_rgb(image))
        except OSError as err:
            raise InputError(f"--image {path}: not an image PIL can read ({err})") from None
    return images


def run(args: argparse.Namespace) -> dict[str, Any]:
    from safetensors.torch import save_file

    from ..devices import resolve_device
    from ..files import make_readable
    from .flow_load import process_of
    from .load import DiffusionModel, load_pipeline
    from .renoise import decode, flow_refused, invert, reconstruct
    from .source import resolve_model

    device = resolve_device(args.device)  # a device the machine lacks: refused first
    prompts = args.prompt
    if len(prompts) == 1 and len(args.image) > 1:
        prompts = prompts * len(args.image)
    if len(prompts) != len(args.image):
        raise InputError(f"give one --prompt, or one per --image ({len(args.image)})")
    for name in ("steps", "iterations"):
        if getattr(args, name) < (1 if name == "steps" else 0):
            raise InputError(f"--{name} must be >= {1 if name == 'steps' else 0}")
    if args.resolution is not None and args.resolution < 1:  # 0 read as "unset" before
        raise InputError(f"--resolution must be >= 1 (or left out), got {args.resolution}")
    average = tuple(args.average) if args.average else None
    if args.iterations == 0:
        average = None
    elif average is None:
        average = (max(args.iterations - 1, 0), args.iterations + 1)  # the last two estimates
    images = _images(args.image)
    source = resolve_model(args.model)  # a local folder (toy:flow too): refused before loading
    if Path(source).is_dir() and process_of(source) == "flow":
        raise InputError(flow_refused(args.model, "mmalign invert"))
    model = load_pipeline(args.model, device=device)
    if not isinstance(model, DiffusionModel):  # a flow model on the hub, known once loaded
        raise InputError(flow_refused(args.model, "mmalign invert"))
    try:
        ren = invert(model, images, prompts, args.steps, args.iterations, average,
                     resolution=args.resolution, progress=True)  # fmt: skip
        ddim = invert(model, images, prompts, args.steps, 0, None,
                      resolution=args.resolution, diffusers_ddim=True)  # fmt: skip
    except ValueError as err:  # a step count beyond the schedule, a bad averaging range
        raise InputError(f"mmalign invert: {err}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = decode(model, ren.latents)
    result: dict[str, Any] = {"steps": args.steps, "iterations": args.iterations,
                              "average": list(average) if average else None}  # fmt: skip
    for name, inv in (("renoise", ren), ("ddim", ddim)):
        rec = reconstruct(model, inv, args.steps)
        pixels = decode(model, rec)
        result[name] = {
            "latent_mse": float((rec - inv.latents).pow(2).mean()),
            "pixel_mse": float((pixels - target).pow(2).mean()),
            "unet_calls": inv.forwards,
        }
        for i, image in enumerate(pixels):
            to_pil(image).save(out / f"{name}-reconstruction-{i}.png")
        tensors = {"noise": inv.noise.contiguous().cpu(), "latents": inv.latents.contiguous().cpu()}
        save_file(tensors, str(out / f"{name}-noise.safetensors"))
        make_readable(out / f"{name}-noise.safetensors")  # safetensors 0.8 leaves it 0600
    for i, image in enumerate(target):
        to_pil(image).save(out / f"input-vae-{i}.png")
    (out / "invert.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def to_pil(image: Any) -> Any:
    """A [3,H,W] tensor in [0,1] as an 8-bit PIL image."""
    from PIL import Image

    array = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
    return Image.fromarray(array)


def _cmd_invert(args: argparse.Namespace) -> int:
    result = run(args)
    print(
        f"reconstruction after {args.steps} steps (latent MSE / pixel MSE vs the VAE round trip):"
    )
    for name, label in (("renoise", f"ReNoise K={args.iterations}"), ("ddim", "plain DDIM")):
        r = result[name]
        print(f"  {label:16s} {r['latent_mse']:.6f} / {r['pixel_mse']:.6f}  "
              f"({r['unet_calls']} UNet calls)")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


def register(sub: Any) -> None:
    from ..devices import add_device_options

    p = sub.add_parser("invert", help="ReNoise inversion of images (and plain DDIM's, compared)")
    p.add_argument("model", help="SD1.5/SDXL folder, hub id or toy:sd")
    p.add_argument("--image", action="append", required=True, help="an image (repeatable)")
    p.add_argument("--prompt", action="append", required=True, help="its prompt (one, or one "
                   "per --image)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=10, help="inversion steps (default 10)")
    p.add_argument("--iterations", type=int, default=9, help="ReNoise iterations per step "
                   "(default 9, the paper's; 0: plain DDIM)")  # fmt: skip
    p.add_argument("--average", type=int, nargs=2, metavar=("LO", "HI"), default=None,
                   help="estimates [LO, HI) averaged (default: the last two)")  # fmt: skip
    p.add_argument("--resolution", type=int, default=None, help="default: the model's")
    add_device_options(p, "the model", dtype=False)
    p.set_defaults(func=_cmd_invert)
