"""Every hub id a recipe needs, checked together before anything loads (`mmalign train`).

An SDXL recipe needs its pipeline, its VAE and its data set; a SmPO recipe the reward scorer of
its soft labels (`data.smooth`: PickScore and its processor), a PPD recipe its user encoder
(`ppd.encoder`), a dense one its heatmap head (`diffusion.dense.scorer: dense:<path>`).
Offline, or online with a hub that cannot be reached, each one missing from the local cache is
named in one message with how to get it, instead of the first loader's traceback minutes or
hours later (the scorer loads after the data is read). A model of another kind than
`model.kind` (toy:sd in a VLM recipe), an `output_dir` that is a file (or lies under one), a
`toy:<kind>` data set that does not exist, a `data.path` that holds no data or pairs of the
other model's kind (`data_problem`), an `output_dir` holding another run's checkpoints and a
`train.resume_from` that is no checkpoint (or one of another recipe) are named with them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import InputError
from ..hub import Need, problems
from ..model_kind import kind_problem
from .config import Config
from .existing_run import existing_run_problem

if TYPE_CHECKING:
    from ..rewards.files import ScorerFile

# The file that shows a model repo is in the cache, by what loads it.
MARKERS = {"diffusion": "model_index.json", "vlm": "config.json", "reward": "config.json"}


def recipe_needs(cfg: Config) -> list[Need]:
    """The model, VAE, data and PPD user encoder a recipe loads, as `Need`s (toy names need
    nothing). The scorers' files are `scorer_problems`' (a scorer names them its own way)."""
    m = cfg.model
    needs = []
    if not m.name_or_path.startswith("toy:"):
        needs.append(Need(m.name_or_path, "model.name_or_path", file=MARKERS[m.kind],
                          revision=m.revision))  # fmt: skip
    if m.vae is not None and m.kind == "diffusion":
        needs.append(Need(m.vae, "model.vae", file="config.json"))
    if not cfg.data.path.startswith("toy:"):
        needs.append(Need(cfg.data.path, "data.path", repo_type="dataset"))
    p = cfg.ppd
    # given embeddings are read instead of computed: the encoder is then only their record
    if m.kind == "diffusion" and p is not None and p.embeddings is None:
        if not p.encoder.startswith("toy:"):  # its config and processor key the embeddings
            needs.append(Need(p.encoder, "ppd.encoder", file=MARKERS["vlm"]))
    return needs


def _file_problems(files: Sequence[ScorerFile], key: str) -> list[str]:
    """`rewards.files.file_problems` of `files`, after `key`: offline, or online with a hub
    that cannot be reached, every hub id not in the local cache is named."""
    from ..rewards.files import file_problems

    return [f"{key}: {p}" for p in file_problems(files)]


def _smoothed_before(name: str, files: dict[str, str]) -> bool:
    """Whether mmalign's cache holds a whole SmPO labelling scored by scorer `name` with these
    `files` (diffusion/smooth.py's key ends with the scorer's): a rerun reuses its rewards and
    loads no scorer, so an offline rerun must not be refused for a scorer it will not load."""
    from ..data.cache import cache_root
    from ..diffusion.smooth import REPORT, SMOOTH_VERSION, scorer_key

    try:
        tail = f";{scorer_key(name, files)}"
    except (InputError, OSError):  # a dense head that is not there: nothing was scored by it
        return False
    for report in (cache_root() / "smoothed").glob(f"*/{REPORT}"):
        try:
            key = json.loads(report.read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(key, str) and key.startswith(f"v{SMOOTH_VERSION};") and key.endswith(tail):
            return True
    return False


def _smooth_problems(spec: dict[str, Any]) -> list[str]:
    """`scorer_problems` of `data.smooth`, unless its labels are cached (`_smoothed_before`)."""
    from ..diffusion.smooth import RECIPE_KEY, recipe_files
    from ..rewards.files import scorer_files

    name = str(spec.get("scorer", "pickscore"))
    try:
        files = recipe_files(name, spec.get("scorer_path"))
    except InputError as err:  # a malformed data.smooth.scorer_path, named by its message
        return [str(err)]
    try:
        found = _file_problems(scorer_files(name, where=RECIPE_KEY, **files), "data.smooth.scorer")
    except (InputError, ValueError, OSError) as err:  # an unknown OpenCLIP tag, no open_clip
        found = [f"data.smooth.scorer: {err}"]
    return found if found and not _smoothed_before(name, files) else []


def scorer_problems(cfg: Config) -> list[str]:
    """What the reward models of a diffusion recipe miss, one line each: the scorer of SmPO's
    soft labels (`data.smooth`, its files as `data.smooth.scorer_path` gives them: PickScore's
    model and processor, an OpenCLIP tag's hub repo, ...) and the dense head of
    `diffusion.dense.scorer: dense:<path>` (a local folder; its weight files key the cached
    weights, so it is read even on a rerun). Nothing loads."""
    if cfg.model.kind != "diffusion":  # data.smooth and diffusion.dense are diffusion's
        return []
    found = [] if cfg.data.smooth is None else _smooth_problems(cfg.data.smooth)
    dense = cfg.diffusion.dense
    if dense is not None and dense.scorer.startswith("dense:"):
        from ..rewards.dense.model import checkpoint_folder

        path = dense.scorer.removeprefix("dense:")
        try:
            checkpoint_folder(path)
        except InputError as err:
            hint = "" if Path(path).expanduser().exists() else (
                " (train one first with a model.kind: reward recipe, e.g. `mmalign train "
                "configs/toy/dense_reward.yaml`)"
            )  # fmt: skip
            found.append(f"diffusion.dense.scorer: {err}{hint}")
    return found


def ppd_problem(cfg: Config) -> str | None:
    """Why `ppd.embeddings` cannot be read, or None: they are read after the model loads."""
    p = cfg.ppd
    if cfg.model.kind != "diffusion" or p is None or p.embeddings is None:
        return None
    if Path(p.embeddings).expanduser().exists():
        return None
    return (
        f"ppd.embeddings: {p.embeddings} does not exist (make it with `mmalign data "
        "user-embed`, or remove ppd.embeddings to compute them with ppd.encoder)"
    )


def output_dir_problem(output_dir: str) -> str | None:
    """Why `output_dir` cannot be made a folder (it, or a folder above it, is a file), or None."""
    path = Path(output_dir).expanduser()
    for where in (path, *path.parents):
        if where.exists():
            if where.is_dir():
                return None
            return f"output_dir: {where} is a file, not a folder; choose another output_dir"
    return None


def prompts_problem(cfg: Config) -> str | None:
    """Why a diffusion recipe's `validation.prompts` file cannot be read, or None: its prompts
    are drawn after the last step, and a missing file must not wait for the end of a run."""
    from ..data.prompts import prompts_file

    v = cfg.validation
    if cfg.model.kind != "diffusion" or not v.enabled or not isinstance(v.prompts, str):
        return None
    path = prompts_file(v.prompts)
    if path is None or path.exists():
        return None
    return (
        f"validation.prompts: {v.prompts}: {path} does not exist (toy:heldout[:N], "
        "pickapic:<split>, parti:<tsv>, hps:<json or folder>, or a text file)"
    )


def toy_data_problem(cfg: Config) -> str | None:
    """Why `data.path: toy:<kind>` names no toy dataset, or None: a diffusion or VLM recipe
    builds it only after its model has loaded. (A reward recipe's toy names are its own:
    `toy:flaws[:heldout]`, `toy:sd-samples`.)"""
    from ..toy.cache import TOY_PREFIX, unknown_kind
    from ..toy.datasets import KINDS

    path = cfg.data.path
    if cfg.model.kind == "reward" or not path.startswith(TOY_PREFIX):
        return None
    kind = path[len(TOY_PREFIX) :]
    return None if kind in KINDS else unknown_kind(kind)


def data_problem(cfg: Config) -> str | None:
    """Why a diffusion or VLM recipe's `data.path` cannot be its data, or None, said before
    the model loads and the data is built: a toy kind of the other model's pairs (image pairs
    for diffusion, text pairs for VLMs: `toy:pairs` samples toy-sd for minutes first), a local
    folder that holds no data (`folder_kind.folder_problem`: empty, a training run, a toy or
    prism-mcts output folder instead of its pairs/), or a saved dataset of the other kind."""
    from ..data.folder_kind import folder_problem, kind_problem, pairs_kind
    from ..toy.cache import toy_pairs_kind

    kind = cfg.model.kind
    if kind not in ("diffusion", "vlm"):
        return None
    path = cfg.data.path
    wanted = "image" if kind == "diffusion" else "text"
    wants = f"a model.kind: {kind} recipe"
    found = toy_pairs_kind(path)
    if found is not None:
        return kind_problem(found, wanted, "data.path", path, wants)  # type: ignore[arg-type]
    if path.startswith("toy:"):
        return None  # (an unknown kind: toy_data_problem names it)
    return folder_problem(path, "data.path") or kind_problem(
        pairs_kind(path, cfg.data.split), wanted, "data.path", path, wants)  # fmt: skip


def resume_problem(cfg: Config) -> str | None:
    """Why `train.resume_from` names no checkpoint, or None: the loop resolves it only after
    the data is built and the model loaded. `latest` is left to the loop (it may recover a
    checkpoint an interrupted rotation set aside, which a check must not do)."""
    from .checkpoint import resolve_resume

    resume_from = cfg.train.resume_from
    if resume_from is None or resume_from == "latest":
        return None
    try:
        resolve_resume(cfg.output_dir, resume_from)
    except FileNotFoundError as err:  # its message, with the hint for the likely mistake
        return str(err)
    return None


def check_sources(cfg: Config) -> None:
    """Raise one `InputError` naming every input of `cfg` that cannot be used as it stands."""
    m = cfg.model
    noun = "toy:dense or a CLIP checkpoint" if m.kind == "reward" else None  # its backbone
    wrong_kind = kind_problem(m.name_or_path, "model.name_or_path", m.kind,
                              f"a model.kind: {m.kind} recipe", noun)  # fmt: skip
    needs = recipe_needs(cfg)
    if wrong_kind is not None:  # named as such: not also looked up as a hub id
        needs = [n for n in needs if n.key != "model.name_or_path"]
    found = [p for p in [wrong_kind, *problems(needs)] if p is not None]
    found += [p for p in (output_dir_problem(cfg.output_dir), prompts_problem(cfg)) if p]
    found += [p for p in (toy_data_problem(cfg), resume_problem(cfg), ppd_problem(cfg)) if p]
    found += [p for p in (data_problem(cfg), existing_run_problem(cfg)) if p]
    found += scorer_problems(cfg)
    if found:
        raise InputError("\n".join(found))
