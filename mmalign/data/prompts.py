"""Prompt sets by name: one resolver for evaluation, validation samples and the demo.

- `toy:heldout[:N]`, `toy:train[:N]`: the toy grammar's fixed prompts (default N 200).
- `pickapic:<split>`: unique captions of a Pick-a-Pic v2 split, e.g. `test_unique` (500 prompts),
  read from `pickapic_root` or `$MMALIGN_PICKAPIC` (a local folder of v2 Parquet shards or a
  `save_to_disk` folder), else from the hub id `yuvalkirstain/pickapic_v2`.
- `parti:<file>`: PartiPrompts (Yu et al. 2022), the `Prompt` column of `PartiPrompts.tsv`.
- `hps:<file or folder>`: the HPS v2 benchmark prompts (Wu et al. 2023), JSON lists, one file
  per style (anime, concept-art, paintings, photo); a folder reads every `*.json` by name.
- any other spec: a text file, one prompt per line.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

PICKAPIC_HUB = "yuvalkirstain/pickapic_v2"
PICKAPIC_ENV = "MMALIGN_PICKAPIC"
PICKAPIC_FLAG = "--pickapic-root"  # the option of the commands that read Pick-a-Pic (eval/cli.py)


def pickapic_source(root: str | Path | None = None) -> str:
    """A local Pick-a-Pic folder (`root`, else `$MMALIGN_PICKAPIC`) or the hub id."""
    return str(root or os.environ.get(PICKAPIC_ENV) or PICKAPIC_HUB)


def pickapic_key(root: str | Path | None = None, flag: str | None = None) -> str:
    """Where `pickapic_source(root)` was named, for messages (the `key` of `hub.require`):
    `flag` (default `--pickapic-root`) for a `root` given, `$MMALIGN_PICKAPIC` when that is set,
    else, for the hub id, what would name a local copy instead: the command's `flag` and the
    variable (`--pickapic-root (or $MMALIGN_PICKAPIC)`), or the variable alone where there is
    no flag (a recipe's `validation.prompts`)."""
    if root:
        return flag or PICKAPIC_FLAG
    if os.environ.get(PICKAPIC_ENV):
        return f"${PICKAPIC_ENV}"
    return f"{flag} (or ${PICKAPIC_ENV})" if flag else f"${PICKAPIC_ENV}"


def _parti(path: Path) -> list[str]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if "Prompt" not in (reader.fieldnames or []):
            raise ValueError(
                f"{path}: no 'Prompt' column (PartiPrompts.tsv has Prompt, Category, ...)"
            )
        return [row["Prompt"].strip() for row in reader if row["Prompt"].strip()]


def _hps(path: Path) -> list[str]:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no HPS v2 benchmark *.json files")
    prompts = []
    for file in files:
        data = json.loads(file.read_text())
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise ValueError(f"{file}: expected a JSON list of prompt strings")
        prompts += data
    return prompts


TOY_SPLITS = ("heldout", "train")
FAMILIES = ("toy", "pickapic", "parti", "hps")  # any other spec is a text file's path


def _toy_parts(spec: str) -> tuple[str, int]:
    """(split, N) of `toy:heldout[:N]` / `toy:train[:N]`; a ValueError naming what is wrong."""
    from ..suggest import did_you_mean

    parts = spec.split(":")
    split = parts[1] if len(parts) > 1 else "heldout"
    if split not in TOY_SPLITS or len(parts) > 3:
        hint = f" ({did_you_mean(split, TOY_SPLITS)})" if split not in TOY_SPLITS else ""
        raise ValueError(f"prompts {spec!r}: use toy:heldout[:N] or toy:train[:N]{hint}")
    if len(parts) < 3:
        return split, 200
    try:
        n = int(parts[2])
    except ValueError:
        raise ValueError(
            f"prompts {spec!r}: N must be a whole number of prompts (toy:{split}:8), "
            f"not {parts[2]!r}"
        ) from None
    if n < 1:
        raise ValueError(f"prompts {spec!r}: N must be >= 1, got {n}")
    return split, n


def check_prompts(spec: str) -> None:
    """Raise a ValueError for a spec whose form is wrong (`toy:held:4`, `toy:heldout:abc`,
    `pickapic:` without its split), reading no file and loading nothing: a recipe checks its
    `validation.prompts` so when it loads. A file's existence is the command's to check."""
    from ..suggest import closest

    family, sep, rest = spec.partition(":")
    if family == "toy":
        _toy_parts(spec)
    elif family == "pickapic" and not rest:
        raise ValueError("prompts pickapic: name the split, e.g. pickapic:test_unique")
    elif family in ("parti", "hps") and not rest:
        raise ValueError(f"prompts {spec!r}: name the file, e.g. {family}:FILE")
    elif sep and family not in FAMILIES and not Path(spec).expanduser().exists():
        guess = closest(family, FAMILIES)  # `tyo:heldout:8`: a family misspelt, not a file
        if guess is not None:
            raise ValueError(
                f"prompts {spec!r}: no prompt set {family!r} and no such file; "
                f"did you mean '{guess}:{rest}'?"
            )


def prompts_file(spec: str) -> Path | None:
    """The local file (or folder) a spec reads, None for a toy or Pick-a-Pic set."""
    family, _, rest = spec.partition(":")
    if family in ("toy", "pickapic"):
        return None
    return Path(rest if family in ("parti", "hps") else spec).expanduser()


def _toy(spec: str) -> list[str]:
    """`toy:heldout[:N]` / `toy:train[:N]`: the first N prompts of that split (seed 0)."""
    from ..toy.world import sample_prompts

    split, n = _toy_parts(spec)
    return [p.text for p in sample_prompts(n, split, 0)]  # type: ignore[arg-type]


def _existing(spec: str, path: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"prompts {spec}: {p} does not exist")
    return p


def resolve_prompts(
    spec: str, *, pickapic_root: str | Path | None = None, pickapic_flag: str | None = None
) -> list[str]:
    """The prompts a spec names (see the module docstring). `pickapic_flag`: the command's option
    that gives `pickapic_root` (`--pickapic-root`), named in messages; None where there is none."""
    family, _, rest = spec.partition(":")
    if family == "toy":
        return _toy(spec)
    if family == "pickapic":
        from ..data.pickapic import pickapic_prompts

        if not rest:
            raise ValueError("prompts pickapic: name the split, e.g. pickapic:test_unique")
        key = pickapic_key(pickapic_root, pickapic_flag)
        return pickapic_prompts(pickapic_source(pickapic_root), rest, key=key)
    if family == "parti":
        return _parti(_existing(spec, rest))
    if family == "hps":
        return _hps(_existing(spec, rest))
    path = Path(spec).expanduser()
    if not path.is_file():
        # a path-like spec is a prompts file the user meant: say it is missing (or a folder)
        looks_like_file = path.suffix != "" or "/" in spec or path.exists()
        what = ("is a folder" if path.is_dir() else "does not exist") if looks_like_file else ""
        kinds = ("toy:heldout[:N], pickapic:<split>, parti:<tsv>, hps:<json or folder>, or a "
                 "text file of one prompt per line")  # fmt: skip
        if what:
            raise FileNotFoundError(f"prompts: {spec} {what} (prompts are {kinds})")
        raise FileNotFoundError(f"prompts: {spec} is none of {kinds}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
