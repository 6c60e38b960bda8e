"""SmPO soft labels for an image-pair dataset: `mmalign data smooth` and `data.smooth`.

Scores both images of every pair with a registered reward scorer (`pickscore` by default, as
the paper; `toy:fidelity`, `toy:user:<id>`, ...), then writes the rows ordered by the reward
with SmPO's soft label (Lu et al. ICML 2025, Eq. 8; the arithmetic is mmalign/data/smooth.py)
and the scored rewards (`reward_chosen`, `reward_rejected`), so another normalisation needs no
rescoring, plus `smooth_swapped` for the pairs the reward ranks the other way.

Scoring is resumable: rewards are saved per chunk of rows in `<out>.partial/` and a rerun
scores only the missing chunks. The output folder appears only when whole (written to the
partial folder, then renamed), with `smooth.json` holding the report.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.schema import to_pil_image
from ..data.smooth import SoftLabels, describe, soft_labels
from ..rewards.files import CLI

CHUNK_ROWS = 256  # rows scored between two saves of the partial rewards
REPORT = "smooth.json"
# In every key (outputs and partial chunks): 2: rewards of 16-bit greyscale images read at their
# bit depth (they were clipped white) and of transparent ones composited onto white
# (schema.to_rgb, which the scorers apply); the data and scorer keys did not change with them
SMOOTH_VERSION = 2


@dataclass
class SmoothReport:
    scorer: str
    labels: SoftLabels

    def __str__(self) -> str:
        return f"soft labels from {self.scorer}: " + describe(self.labels)

    def to_json(self) -> dict[str, Any]:
        return {
            "scorer": self.scorer,
            "pairs": len(self.labels.label),
            "swapped": self.labels.num_swapped,
            "ties": self.labels.num_ties,
            "reward_min": self.labels.low,
            "reward_max": self.labels.high,
            "label_mean": float(self.labels.label.mean()),
            "histogram": self.labels.histogram(),
        }


def _scorer(
    scorer: Any, device: str | None, files: dict[str, str] | None = None, where: str = CLI
) -> Any:
    """The scorer, loaded; its files (`rewards.files`) are checked first, named as the user
    gives them (`where`: `--scorer-path`, or `data.smooth.scorer_path` in a recipe). Only
    when rows need scoring: a rerun that reuses every saved reward loads nothing."""
    if not isinstance(scorer, str):
        return scorer  # a Scorer object (tests, callers with a loaded model)
    from ..rewards import get_scorer
    from ..rewards.files import require_scorer_files

    kwargs = {**({"device": device} if device else {}), **(files or {})}
    require_scorer_files({scorer: kwargs}, where=where)
    return get_scorer(scorer, **kwargs)


def scorer_key(name: str, files: dict[str, str] | None = None) -> str:
    """What identifies a reward scorer in the cache keys: its name, and for a trained dense head
    (`dense:<path>`) its weight files too, so a head retrained at the same path is another
    scorer (as `diffusion.dense` keys its weights). Local `files` given for it
    (`--scorer-path`) are part of it (the name alone keys the default weights, as before)."""
    if files:
        return f"{scorer_key(name)}{json.dumps(files, sort_keys=True)}"
    if not name.startswith("dense:"):
        return name
    from ..rewards.dense.model import checkpoint_folder
    from ..weights import weight_files

    files = weight_files(checkpoint_folder(name.removeprefix("dense:")))
    return f"{name}{json.dumps(files)}"


def _score_chunk(scorer: Any, rows: Any, start: int, stop: int, batch_size: int, bar: Any):
    chosen, rejected = [], []
    for i in range(start, stop, batch_size):
        part = rows[i : min(i + batch_size, stop)]
        prompts = list(part["prompt"])
        images = [to_pil_image(x) for x in part["chosen"]]
        images += [to_pil_image(x) for x in part["rejected"]]
        # both sides of a batch in one call: one pass of the reward model per batch
        scores = torch.as_tensor(scorer.score(images, prompts + prompts)).detach().float().cpu()
        chosen.append(scores[: len(prompts)])
        rejected.append(scores[len(prompts) :])
        bar.update(len(prompts))
    return torch.cat(chosen), torch.cat(rejected)


def score_pairs(
    rows: Any,
    scorer: Any,
    *,
    batch_size: int = 32,
    device: str | None = None,
    work: Path | None = None,
    progress: bool = True,
    files: dict[str, str] | None = None,
    where: str = CLI,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards (chosen, rejected) of every row; with `work`, saved per chunk and resumed.
    `files`: the scorer's local files by keyword (`path`, `processor`: rewards/files.py)."""
    if batch_size < 1:
        raise ValueError(f"smooth batch_size must be >= 1, got {batch_size}")
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in rows.column_names]
    if missing:
        raise ValueError(f"the data has no {', '.join(missing)} column(s) to score")
    n = len(rows)
    if n == 0:
        raise ValueError("the data has no reward-scorable image pairs (0 rows left to score)")
    model = None
    chosen, rejected = [], []
    with tqdm(total=n, desc="scoring pairs", unit="pair", disable=not progress) as bar:
        for c, start in enumerate(range(0, n, CHUNK_ROWS)):
            stop = min(start + CHUNK_ROWS, n)
            path = work / f"rewards-{c:05d}.pt" if work is not None else None
            if path is not None and path.is_file():
                saved = torch.load(path, weights_only=True)  # never an untrusted pickle
                rc, rr = saved["chosen"], saved["rejected"]
                bar.update(stop - start)
            else:
                model = model or _scorer(scorer, device, files, where)
                rc, rr = _score_chunk(model, rows, start, stop, batch_size, bar)
                if path is not None:  # whole or absent: a crash mid-save leaves no chunk
                    part = path.with_name(path.name + ".tmp")
                    torch.save({"chosen": rc, "rejected": rr}, part)
                    os.replace(part, path)
            chosen.append(rc)
            rejected.append(rr)
    return torch.cat(chosen), torch.cat(rejected)


def apply_labels(rows: Any, labels: SoftLabels) -> Any:
    """The rows ordered by the reward, with `label`, the rewards and `smooth_swapped`."""
    from datasets import Image

    features = rows.features
    raw = rows.cast_column("chosen", Image(decode=False)).cast_column(
        "rejected", Image(decode=False)
    )  # swap the encoded images, never decode and re-encode them
    swapped = labels.swapped.tolist()

    def swap(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        c, r = list(batch["chosen"]), list(batch["rejected"])
        # per-side columns follow their image: a dense pair's heatmaps swap with it
        maps = list(batch["heatmaps"]) if "heatmaps" in batch else None
        for j, i in enumerate(indices):
            if swapped[i]:
                c[j], r[j] = r[j], c[j]
                if maps is not None and maps[j] is not None:
                    maps[j] = {"chosen": maps[j]["rejected"], "rejected": maps[j]["chosen"]}
        return {"chosen": c, "rejected": r, **({"heatmaps": maps} if maps is not None else {})}

    raw = raw.map(swap, with_indices=True, batched=True, desc="ordering pairs")
    raw = raw.cast_column("chosen", features["chosen"]).cast_column(
        "rejected", features["rejected"]
    )
    for name in ("label", "reward_chosen", "reward_rejected", "smooth_swapped"):
        if name in raw.column_names:
            raw = raw.remove_columns(name)
    raw = raw.add_column("label", labels.label.tolist())
    raw = raw.add_column("reward_chosen", labels.reward_chosen.tolist())
    raw = raw.add_column("reward_rejected", labels.reward_rejected.tolist())
    return raw.add_column("smooth_swapped", swapped)


def smooth_dataset(
    rows: Any,
    scorer: Any,
    out: str | Path,
    *,
    batch_size: int = 32,
    device: str | None = None,
    key: str | None = None,
    progress: bool = True,
    files: dict[str, str] | None = None,
    where: str = CLI,
) -> SmoothReport:
    """Score, label and save `rows` to `out` (a `save_to_disk` folder with `smooth.json`).

    An existing whole output with the same `key` (and `SMOOTH_VERSION`) is reused; an
    interrupted run's chunks in `<out>.partial/` are reused when their key matches, else scored
    again. `files`: the scorer's local files by keyword (`{"path": DIR}`: rewards/files.py),
    part of the default key (other weights score otherwise), named in messages as `where`
    gives them.
    """
    from filelock import FileLock

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # two runs smoothing the same data into one folder (side-by-side recipes sharing the
    # cache): the second waits, then reuses the first one's output
    with FileLock(str(out) + ".lock"):
        return _smooth_locked(rows, scorer, out, batch_size=batch_size, device=device, key=key,
                              progress=progress, files=files, where=where)  # fmt: skip


def _smooth_locked(
    rows: Any,
    scorer: Any,
    out: Path,
    *,
    batch_size: int,
    device: str | None,
    key: str | None,
    progress: bool,
    files: dict[str, str] | None = None,
    where: str = CLI,
) -> SmoothReport:
    name = scorer if isinstance(scorer, str) else str(getattr(scorer, "name", "scorer"))
    own = f"{getattr(rows, '_fingerprint', '')};{scorer_key(name, files)}"
    key = f"v{SMOOTH_VERSION};" + (key or own)
    report_path = out / REPORT
    if report_path.is_file() and json.loads(report_path.read_text()).get("key") == key:
        return load_report(out)
    if out.exists() and not report_path.is_file():
        raise ValueError(f"{out} exists and is not a smoothed dataset; choose another --out")
    tmp = out.with_name(out.name + ".partial")
    stamp = tmp / "key.json"
    if tmp.exists() and not (stamp.is_file() and json.loads(stamp.read_text()) == key):
        shutil.rmtree(tmp)  # another data set or scorer: its rewards do not apply
    tmp.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(key))
    work = tmp / "rewards"
    work.mkdir(exist_ok=True)
    rc, rr = score_pairs(
        rows, scorer, batch_size=batch_size, device=device, work=work, progress=progress,
        files=files, where=where,
    )  # fmt: skip
    labels = soft_labels(rc, rr)
    labelled = apply_labels(rows, labels)
    data = tmp / "data"
    shutil.rmtree(data, ignore_errors=True)
    labelled.save_to_disk(str(data))
    report = SmoothReport(name, labels)
    (data / REPORT).write_text(json.dumps({"key": key, **report.to_json()}, indent=2) + "\n")
    torch.save({"chosen": rc, "rejected": rr}, data / "rewards.pt")
    if out.exists():
        shutil.rmtree(out)  # an older output of another key, replaced whole
    data.rename(out)
    shutil.rmtree(tmp)
    return report


def load_report(out: str | Path) -> SmoothReport:
    """The report of a smoothed folder, its labels recomputed from the saved rewards."""
    out = Path(out)
    meta = json.loads((out / REPORT).read_text())
    saved = torch.load(out / "rewards.pt", weights_only=True)
    return SmoothReport(meta["scorer"], soft_labels(saved["chosen"], saved["rejected"]))


RECIPE_KEY = "data.smooth.scorer_path"


def recipe_files(name: str, given: Any) -> dict[str, str]:
    """`data.smooth.scorer_path` (a `NAME=PATH` string or a list of them, as `--scorer-path`
    takes: rewards/files.py) as the scorer's keyword arguments."""
    from ..rewards.files import parse_scorer_paths

    items = [given] if isinstance(given, str) else list(given or [])
    return parse_scorer_paths(items, [name], flag=RECIPE_KEY).get(name, {})


def smoothed_rows(rows: Any, spec: dict[str, Any], accelerator: Any) -> tuple[Any, SmoothReport]:
    """`data.smooth` of a recipe: the rows with soft labels, built once in the cache by the
    main process (every process then reads the same folder). `scorer_path`: the scorer's
    local files (`recipe_files`)."""
    from datasets import load_from_disk

    from ..data.cache import cache_root, digest

    name = str(spec.get("scorer", "pickscore"))
    files = recipe_files(name, spec.get("scorer_path"))
    key = f"{rows._fingerprint};{scorer_key(name, files)}"
    folder = cache_root() / "smoothed" / digest(key)
    if accelerator.is_main_process:
        smooth_dataset(
            rows, name, folder, key=key, batch_size=int(spec.get("batch_size", 32)),
            device=spec.get("device"), files=files, where=RECIPE_KEY,
        )  # fmt: skip
    accelerator.wait_for_everyone()
    return load_from_disk(str(folder)), load_report(folder)
