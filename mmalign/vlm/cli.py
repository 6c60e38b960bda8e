"""`mmalign chat` (a model's answer about an image) and `mmalign eval vlm` (toy-world rates)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import InputError
from ..devices import add_device_options


def ref_from_args(args: argparse.Namespace, needer: str = "this command", key: str = "model"):
    """What `load_from_args` loads, as a `VLMRef` (its processor read, nothing loaded), after
    the same checks: a device the machine lacks, a model of another kind. `key`: how the
    user named the model, for messages (`model` for the positional MODEL, `--model`)."""
    from ..devices import device_options
    from ..model_kind import require_kind
    from .load import VLMRef

    device, dtype = device_options(args)  # a device the machine lacks: refused first
    require_kind(args.model, key, "vlm", needer)
    return VLMRef(args.model, adapter=args.adapter, dtype=dtype, device=device, key=key,
                  adapter_key="--adapter")  # fmt: skip


def load_from_args(args: argparse.Namespace, needer: str = "this command", key: str = "model"):
    """MODEL (a training output_dir: its saved adapter or model) with `--adapter`, on
    `--device` in `--dtype`. A model of another kind (toy:sd, a diffusion run) is refused
    before anything loads, naming the commands that take it and `needer` ("`mmalign chat`").
    A training output_dir resolves to its final weights in load_vlm (in the folder itself)."""
    return ref_from_args(args, needer, key).load()


def check_out_file(out: str | None) -> None:
    """Refuse `--out` for a JSON file where it cannot be written, before any model loads: an
    existing folder, or a path under a file (the results were lost after the whole run)."""
    if out is None:
        return
    path = Path(out).expanduser()
    if path.is_dir():
        raise InputError(f"--out {out} is an existing folder: give the path of the JSON file "
                         f"to write (e.g. {Path(out, 'eval.json')})")  # fmt: skip
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise InputError(f"--out {out}: {above} is a file, not a folder")


def evaluated(args: argparse.Namespace, vlm) -> dict:
    """What `eval vlm` scored, for its results JSON: MODEL and --adapter as given, the model
    loaded, the adapter chain applied on it (innermost first, with fingerprints), device and
    dtype as the weights hold them."""
    from ..devices import precision_of
    from .adapter_chain import fingerprint, is_adapter

    chain = [{"path": str(Path(a).resolve()) if is_adapter(a) else a,
              "fingerprint": fingerprint(a) if is_adapter(a) else None}
             for a in vlm.adapters]  # fmt: skip
    return {"model": str(args.model), "adapter": args.adapter, "base": vlm.source,
            "adapters": chain, **precision_of(vlm.model)}  # fmt: skip


def _cmd_chat(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..data.schema import IMAGE_PLACEHOLDER, to_rgb
    from ..words import plural
    from .blind import generate_answers
    from .chat_format import ChatFormat, RowError
    from .collate import user_content

    for path in args.image or []:  # before the model loads
        if not Path(path).is_file():
            raise FileNotFoundError(f"--image {path}: no such file")
    ref = ref_from_args(args, "`mmalign chat`")
    try:  # as training refuses it, with the processor alone: before the model loads
        ChatFormat(ref.processor).check_prompt(args.prompt)
    except RowError as err:
        raise InputError(f"--prompt: {err.detail}") from None
    wanted = args.prompt.count(IMAGE_PLACEHOLDER)
    given = len(args.image or [])
    if wanted and wanted != given:  # before the model loads, naming the flags
        raise InputError(
            f"--prompt has {plural(wanted, IMAGE_PLACEHOLDER + ' placeholder')} but "
            f"{plural(given, '--image flag')} {'was' if given == 1 else 'were'} given: give one "
            f"--image per {IMAGE_PLACEHOLDER}, or no {IMAGE_PLACEHOLDER} (the images then go "
            "before the text)"
        )
    vlm = ref.load()
    images = []
    for path in args.image or []:
        try:
            images.append(to_rgb(Image.open(path)))
        except OSError as err:  # PIL's UnidentifiedImageError: not an image file
            raise InputError(f"--image {path}: not an image PIL can read ({err})") from None
    conversation = [{"role": "user", "content": user_content(args.prompt, len(images))}]
    reply = generate_answers(vlm.model, vlm.processor, [conversation], [images],
                             batch_size=1, max_new_tokens=args.max_new_tokens,
                             desc="generating")[0]  # fmt: skip
    print(reply)
    return 0


def _cmd_eval_vlm(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_toy
    from .rates import format_rate

    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    check_out_file(args.out)
    vlm = load_from_args(args, "`mmalign eval vlm`")
    results = evaluate_toy(vlm, args.task, n=args.n, seed=args.seed)
    results["evaluated"] = evaluated(args, vlm)  # so a results file says what it scored
    rates = {k: v for k, v in results.items()
             if k.endswith(("_rate", "accuracy")) or k == "format_compliance"}  # fmt: skip
    for key in rates:
        print(f"{key}: {format_rate(results, key)}")  # n/a for a group with no rows
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {Path(args.out).resolve()}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("chat", help="a VLM's answer about an image")
    p.add_argument("model", help="folder, hub id, toy:vlm, adapter folder or training output_dir")
    p.add_argument("--adapter", help="a PEFT adapter folder applied on top of MODEL")
    p.add_argument("--image", action="append", help="an image file (repeat for several)")
    p.add_argument("--prompt", required=True, help="the question; <image> marks image places")
    p.add_argument("--max-new-tokens", type=int, default=64)
    add_device_options(p, "the VLM")
    p.set_defaults(func=_cmd_chat)


def register_eval(eval_sub) -> None:
    from .evaluate import TASKS

    p = eval_sub.add_parser("vlm", help="toy-world hallucination, safety or PRISM rates of a VLM")
    p.add_argument("model", help="folder, hub id, toy:vlm, adapter folder or training output_dir")
    p.add_argument("--adapter", help="a PEFT adapter folder applied on top of MODEL")
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--n", type=int, default=2000, help="items drawn (held-out prompts; "
                   "default 2000)")  # fmt: skip
    p.add_argument("--seed", type=int, default=4321, help="default 4321")
    p.add_argument("--out", help="JSON file to write the results to (with what was evaluated: "
                   "model, adapter chain, device, dtype)")  # fmt: skip
    add_device_options(p, "the VLM")
    p.set_defaults(func=_cmd_eval_vlm)
