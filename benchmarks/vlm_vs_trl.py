"""mmalign's VLM DPO step against TRL's `DPOTrainer`, on the same tiny VLM, rows and batch.

Two parts, one run:

(a) Scores. mmalign's `VLMPairScorer` gives each completion the sum of its tokens' log-probs.
    The check compares them with log-probs computed directly with the model (one plain forward
    over the whole sequence, a full log-softmax; tolerance 1e-4), and with TRL's own
    per-sequence log-probs of the same rows (`DPOTrainer.compute_ref_log_probs` on the batch its
    `DataCollatorForVisionPreference` builds). TRL tokenizes the templated prompt with
    `add_special_tokens=False`, so where the tokenizer adds a BOS token (toy-vlm, the tiny
    LLaVA) its sequences lack the BOS mmalign's (and the model's own processor call) have; the
    check also scores TRL's sequences directly, which shows whether that is the whole gap.

(b) One training step, mmalign vs TRL, each side in its own child process (so its peak memory is
    its own). Both: LoRA (rank 8, alpha = rank, no dropout) on the same linear layers of the
    language model (`mmalign.vlm.lora.lora_targets`), initialised from the same seed; sigmoid
    DPO with beta 0.1; reference = the policy with its adapters disabled; AdamW (same lr, weight
    decay 0.01); gradient clipping at 1.0; float32; no gradient checkpointing; the same rows in
    the same order (TRL: sequential sampler). What one timed step includes:

      mmalign  reading the step's rows from the HF dataset (decoding the PNGs), `PairCollator`
               (chat template, processor, tokenization), moving the batch, `VLMPairScorer`
               (policy + reference), `Objective`, backward, clip, AdamW step, zero_grad.
      TRL      the interval between two consecutive `on_step_end` callbacks of
               `trainer.train()`: the dataloader fetching the rows and running
               `DataCollatorForVisionPreference`, `training_step` (policy and reference
               forwards, loss, TRL's metrics, backward), clip, AdamW step, scheduler, zero_grad.
               Logging runs once, after the last step, outside every timed interval.

    s/step is the median over the timed steps after the warm-up steps. Peak memory: on CPU the
    child's peak RSS (`ru_maxrss`), also shown as "+run MB" (peak minus the RSS after importing
    the same libraries on both sides: torch, transformers, peft, trl, mmalign), on CUDA
    `torch.cuda.max_memory_allocated()`.

Targets (issue 5): mmalign time <= 0.7x TRL's, mmalign peak memory <= TRL's. The ratio table
marks each PASS or MISS with this run's numbers.

Run `python benchmarks/vlm_vs_trl.py --help` for the options; `--quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mmalign.bench import rss_mb as _rss_mb
from mmalign.bench import step_summary
from mmalign.bench import sync as _sync

JSON_MARK = "BENCH_JSON "
MODELS = ("toy", "llava", "qwen")
SIDES = ("mmalign", "mmalign-cached", "trl")  # "trl" is the baseline of every ratio
BETA = 0.1
WEIGHT_DECAY = 0.01  # mmalign's default (train.weight_decay); TRL gets the same
MAX_GRAD_NORM = 1.0  # both libraries' default
SEED = 0
CHECK_ROWS = 8  # rows of part (a)
Clock = tuple[float, float]  # (wall seconds, this process's CPU seconds)
TIME_TARGET = 0.7
QUICK = {"steps": 2, "warmup": 1, "batches": "2", "rounds": 1}
FULL = {"steps": 5, "warmup": 2, "batches": "8,32", "rounds": 2}


# ------------------------------------------------------------------------------ helpers


def _device(requested: str) -> Any:
    import torch

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(requested)


def _import_all() -> None:
    """Both sides import the same libraries before the baseline RSS is read, so "+run MB"
    counts what the run adds (models, optimizer state, activations), not the libraries."""
    import peft  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import mmalign.vlm.collate
    import mmalign.vlm.scorer  # noqa: F401


def conversational(rows: Any) -> Any:
    """The rows in TRL's conversational preference format (prompt / chosen / rejected as chat
    messages, `images` a list), so TRL renders them with the processor's chat template exactly
    as mmalign's `PairCollator` does (images before the text of the user turn)."""

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
            "images": [row["image"]],
        }

    keep = {"prompt", "chosen", "rejected", "image"}
    rows = rows.remove_columns([c for c in rows.column_names if c not in keep])
    return rows.map(convert, remove_columns=list(keep))


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model under test and the benchmark rows (a HF dataset with PIL images)."""
    from datasets import load_from_disk

    from mmalign.vlm.load import load_vlm

    vlm = load_vlm(args.model_path)
    rows = load_from_disk(args.rows)
    return vlm, rows


def _trl_trainer(vlm: Any, rows: Any, args: argparse.Namespace, batch: int, steps: int,
                 device: Any, out_dir: str) -> Any:  # fmt: skip
    """A `DPOTrainer` set up like mmalign's step (see the module docstring)."""
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from mmalign.vlm.lora import lora_targets

    # transformers 5 renamed gradient_checkpointing (still TRL's default name) to this.
    names = {f.name for f in dataclasses.fields(DPOConfig)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names \
        else "gradient_checkpointing"  # fmt: skip
    peft_config = LoraConfig(
        r=args.rank, lora_alpha=args.rank, lora_dropout=0.0,
        target_modules=lora_targets(vlm.model, None), task_type="CAUSAL_LM",
    )  # fmt: skip
    config = DPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=args.lr,
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM,
        optim="adamw_torch",
        lr_scheduler_type="constant",
        beta=BETA,
        loss_type=["sigmoid"],
        # Like for like with mmalign: full precision, no activation checkpointing (TRL's
        # defaults turn on bf16 and gradient checkpointing).
        bf16=False,
        fp16=False,
        **{checkpointing: False},
        max_length=None,  # mmalign never truncates; these rows are short anyway
        train_sampling_strategy="sequential",
        logging_steps=steps,  # one log, after the last step: no timed step pays for logging
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=device.type == "cpu",
        seed=SEED,
    )
    return DPOTrainer(
        model=vlm.model, args=config, train_dataset=conversational(rows),
        processing_class=vlm.processor, peft_config=peft_config,
    )  # fmt: skip


# ------------------------------------------------------------------ child: one training side


def _mmalign_steps(vlm: Any, rows: Any, args: argparse.Namespace, device: Any, total: int,
                   marks: dict[str, float]) -> tuple[list[Clock], list[float], int]:  # fmt: skip
    """mmalign's step, as `mmalign train` runs it for a VLM LoRA recipe."""
    import torch

    from mmalign.losses import Objective
    from mmalign.train.config import LoraConfig
    from mmalign.vlm.collate import PairCollator
    from mmalign.vlm.lora import add_lora
    from mmalign.vlm.scorer import VLMPairScorer

    collator = PairCollator(vlm.processor, ("main",))
    b = args.batch
    reference, cached = "adapters", None
    if args.side == "mmalign-cached":
        # `vlm.reference: precomputed`: one no-grad pass of the base model over the rows before
        # training (as VLMRecipe._reference_pass does); the steps then run no reference forward.
        from mmalign.vlm.scorer import image_features, pack_batch, sequence_logps

        started, cached = time.perf_counter(), {}
        with torch.no_grad():
            for i in range(total):
                ids = list(range(i * b, (i + 1) * b))
                batch = collator([rows[j] for j in ids], row_ids=ids).to(device)
                feats = image_features(vlm.core, batch)
                logps = sequence_logps(vlm.core, batch, feats, pack_batch(vlm.core, batch))[0]
                for (row, variant, text), s in zip(batch.sequence_keys, logps.tolist(),
                                                   strict=True):  # fmt: skip
                    cached[(batch.rows[row], variant, text)] = s
        marks["reference_pass_s"] = time.perf_counter() - started
        reference = "precomputed"
    torch.manual_seed(SEED)  # the LoRA initialisation (TRL seeds the same way)
    model = add_lora(vlm.model, LoraConfig(rank=args.rank, dropout=0.0)).to(device)
    model.train()
    scorer = VLMPairScorer(model, reference, cached)  # type: ignore[arg-type]
    objective = Objective.from_config([{"loss": "dpo", "beta": BETA}])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=WEIGHT_DECAY)
    ends, losses = [], []
    marks["setup_rss_mb"] = _rss_mb()
    for i in range(total):
        ids = list(range(i * b, (i + 1) * b))
        items = [rows[j] for j in ids]  # decoded from the dataset, as the loop's loader does
        batch = collator(items, row_ids=ids).to(device)
        loss = objective(scorer(model, batch, with_reference=True)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))  # waits for the device
        _sync(device)
        ends.append((time.perf_counter(), time.process_time()))
    return ends, losses, sum(p.numel() for p in params)


def _trl_steps(vlm: Any, rows: Any, args: argparse.Namespace, device: Any, total: int,
               marks: dict[str, float]) -> tuple[list[Clock], list[float], int]:  # fmt: skip
    from transformers import TrainerCallback

    ends: list[Clock] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            _sync(device)
            ends.append((time.perf_counter(), time.process_time()))

    with tempfile.TemporaryDirectory(prefix="mmalign-bench-trl-") as out_dir:
        trainer = _trl_trainer(vlm, rows, args, args.batch, total, device, out_dir)
        trainer.add_callback(StepClock())
        losses: list[Any] = []
        step = trainer.training_step

        def training_step(*a: Any, **kw: Any) -> Any:
            loss = step(*a, **kw)
            losses.append(loss)  # a detached tensor; read after training, no sync here
            return loss

        trainer.training_step = training_step  # type: ignore[method-assign]
        marks["setup_rss_mb"] = _rss_mb()
        trainer.train()
        params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return ends, [float(x) for x in losses], params


def run_step_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    _import_all()
    torch.set_num_threads(args.threads)
    device = _device(args.device)
    base_rss = _rss_mb()
    vlm, rows = _load(args)
    total = args.warmup + args.steps
    if len(rows) < total * args.batch:
        raise SystemExit(f"{len(rows)} rows; {total} steps of {args.batch} pairs need more")
    rows = rows.select(range(total * args.batch))
    vlm.model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = (time.perf_counter(), time.process_time())
    run = _trl_steps if args.side == "trl" else _mmalign_steps
    marks: dict[str, float] = {}
    ends, losses, trainable = run(vlm, rows, args, device, total, marks)
    if len(ends) != total:
        raise RuntimeError(f"{args.side}: {len(ends)} step ends recorded for {total} steps")
    # A step's time: from the end of the previous step (the start, for step 0) to its end.
    pairs = list(zip([start, *ends[:-1]], ends, strict=True))[args.warmup :]
    times = [b[0] - a[0] for a, b in pairs]
    cpu_times = [b[1] - a[1] for a, b in pairs]
    return {
        "side": args.side,
        "model": args.model,
        "device": str(device),
        "threads": args.threads,
        "batch": args.batch,
        "warmup": args.warmup,
        "steps": args.steps,
        **step_summary(times, device, base_rss),
        "cpu_s_per_step": statistics.median(cpu_times),
        "cpu_step_times": cpu_times,
        # RSS once the model, adapters, optimizer (and TRL's trainer) are set up, before step 0
        "setup_rss_mb": marks["setup_rss_mb"],
        "reference_pass_s": marks.get("reference_pass_s"),  # mmalign-cached: the one-off pass
        "trainable_params": trainable,
        "losses": losses,
    }


# ---------------------------------------------------------------- child: (a) score equality


def direct_logp(vlm: Any, prompt: str, images: list[Any], answer: str, *,
                special_tokens: bool = True) -> float:  # fmt: skip
    """A completion's log-prob from one plain forward of the model over the whole sequence and
    a full log-softmax (the slow, obvious way). `special_tokens=False` tokenizes the prompt as
    TRL's collator does (no BOS added by the tokenizer)."""
    import torch

    from mmalign.vlm.collate import user_content

    user = [{"role": "user", "content": user_content(prompt, len(images))}]
    head = vlm.processor.apply_chat_template(user, add_generation_prompt=True)
    turn = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    full = vlm.processor.apply_chat_template([*user, turn])
    inputs = dict(vlm.processor(text=[head], images=images, return_tensors="pt",
                                add_special_tokens=special_tokens))  # fmt: skip
    comp = torch.tensor([vlm.tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"]])
    inputs["input_ids"] = torch.cat([inputs["input_ids"], comp], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(comp)], 1
        )
    with torch.no_grad():
        logits = vlm.model(**inputs).logits[0, :-1].float()
    n = comp.shape[1]
    return float(logits[-n:].log_softmax(-1).gather(-1, comp[0, :, None]).sum())


def run_check_child(args: argparse.Namespace) -> dict[str, Any]:
    """mmalign's scores vs direct log-probs, and vs TRL's per-sequence log-probs."""
    import torch

    from mmalign.vlm.collate import PairCollator
    from mmalign.vlm.scorer import VLMPairScorer

    torch.set_num_threads(args.threads)
    vlm, rows = _load(args)
    rows = rows.select(range(CHECK_ROWS))
    items = [rows[i] for i in range(len(rows))]
    vlm.model.eval()
    batch = PairCollator(vlm.processor, ("main",))(items)
    with torch.no_grad():
        main = VLMPairScorer(vlm.model, "none")(vlm.model, batch, with_reference=False)["main"]
    ours = torch.cat([main.chosen, main.rejected]).double()
    answers = [r["chosen"] for r in items] + [r["rejected"] for r in items]
    prompts = [(r["prompt"], [r["image"]]) for r in items] * 2
    direct = torch.tensor([direct_logp(vlm, p, ims, a) for (p, ims), a in
                           zip(prompts, answers, strict=True)], dtype=torch.float64)  # fmt: skip
    direct_trl_tokens = torch.tensor(
        [direct_logp(vlm, p, ims, a, special_tokens=False) for (p, ims), a in
         zip(prompts, answers, strict=True)], dtype=torch.float64,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mmalign-bench-trl-") as out_dir:
        trainer = _trl_trainer(vlm, rows, args, len(rows), 1, _device("cpu"), out_dir)
        conv = conversational(rows)
        inputs = trainer._prepare_inputs(trainer.data_collator([conv[i] for i in
                                                                range(len(conv))]))  # fmt: skip
        # Reference log-probs: the policy with its (freshly initialised) adapters disabled.
        trl_c, trl_r = trainer.compute_ref_log_probs(trainer.model, inputs)
    trl = torch.cat([trl_c, trl_r]).detach().double().cpu()
    trl_has_bos = _starts_with_bos(vlm, inputs["input_ids"], inputs["attention_mask"])
    ours_has_bos = _starts_with_bos(vlm, batch.input_ids, batch.attention_mask)
    diff = (ours - direct).abs().max().item()
    return {
        "model": args.model,
        "sequences": len(answers),
        "mmalign_vs_direct_max_abs": diff,
        "tolerance": 1e-4,
        "verdict": "PASS" if diff <= 1e-4 else "MISS",
        "trl_vs_mmalign_max_abs": (trl - ours).abs().max().item(),
        "trl_vs_direct_trl_tokens_max_abs": (trl - direct_trl_tokens).abs().max().item(),
        "mmalign_prompt_starts_with_bos": ours_has_bos,
        "trl_prompt_starts_with_bos": trl_has_bos,
        "mmalign_logps": ours.tolist(),
        "direct_logps": direct.tolist(),
        "trl_logps": trl.tolist(),
    }


def _starts_with_bos(vlm: Any, ids: Any, mask: Any) -> bool | None:
    bos = vlm.tokenizer.bos_token_id
    if bos is None:
        return None
    firsts = [int(row[m.bool()][0]) for row, m in zip(ids, mask, strict=True)]
    return all(f == bos for f in firsts)


# ------------------------------------------------------------------------------ the parent


def prepare(workdir: Path, models: list[str], n_rows: int) -> tuple[dict[str, str], str]:
    """Save the tiny random models and build the toy hallucination rows (once per run)."""
    from datasets import load_from_disk

    from mmalign.toy.datasets import build_dataset
    from mmalign.vlm.tiny import tiny_llava, tiny_qwen2vl

    paths = {}
    for name in models:
        if name == "toy":
            paths[name] = "toy:vlm"
        else:
            folder = workdir / name
            (tiny_llava if name == "llava" else tiny_qwen2vl)(folder, seed=SEED)
            paths[name] = str(folder)
    data = workdir / "data"
    # Some rows are skipped by the builder (no similar image to retrieve): ask for more.
    build_dataset("hallucination", data, n=2 * n_rows + 16, seed=SEED)
    rows = load_from_disk(str(data / "pairs"))
    if len(rows) < n_rows:
        raise SystemExit(f"the toy builder made {len(rows)} rows; the run needs {n_rows}")
    rows.select(range(n_rows)).save_to_disk(str(workdir / "rows"))
    return paths, str(workdir / "rows")


def _child(args: argparse.Namespace, mode: str, model: str, path: str, rows: str,
           side: str = "mmalign", batch: int = 0) -> dict[str, Any]:  # fmt: skip
    argv = [
        "--child", mode, "--side", side, "--model", model, "--model-path", path,
        "--rows", rows, "--batch", str(batch), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--rank", str(args.rank), "--lr", str(args.lr),
        "--device", args.device, "--threads", str(args.threads),
    ]  # fmt: skip
    result = run_child(argv, args.threads, args.mmap_threshold)
    if "error" in result:
        result.update(model=model, side=side, batch=batch)
    return result


def run_child(argv: list[str], threads: int, mmap_threshold: int | None = None) -> dict[str, Any]:
    """This file in a child process with `argv`; its JSON line, or the error it ended with."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    if mmap_threshold is not None:
        # glibc: blocks from this size up are mmapped and go back to the system when freed, so
        # the peak RSS follows the live memory instead of what the heap happened to keep.
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(JSON_MARK):
            return dict(json.loads(line[len(JSON_MARK) :]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {"error": "\n".join(tail), "returncode": proc.returncode}


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds as one result: medians over the timed steps of every round, the
    largest peak of any round (memory hardly varies between rounds; the max is conservative)."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return {**failed[0], "rounds": runs}
    times = [t for r in runs for t in r["step_times"]]
    cpu = [t for r in runs for t in r["cpu_step_times"]]
    first = runs[0]
    return {
        **{k: first[k] for k in ("side", "model", "device", "threads", "batch", "warmup",
                                 "steps", "trainable_params")},
        "s_per_step": statistics.median(times),
        "s_per_step_min": min(times),
        "cpu_s_per_step": statistics.median(cpu),
        "step_times": times,
        "cpu_step_times": cpu,
        "peak_mb": max(r["peak_mb"] for r in runs),
        "train_rss_mb": max(r["train_rss_mb"] for r in runs),
        "step_rss_mb": max(r["peak_rss_mb"] - r["setup_rss_mb"] for r in runs),
        "losses": first["losses"],
        "reference_pass_s": first.get("reference_pass_s"),
        "rounds": runs,
    }  # fmt: skip


# (metric, target): mmalign / TRL must be <= target; None: shown, no target.
RATIO_METRICS = (
    ("s_per_step", TIME_TARGET),
    ("cpu_s_per_step", TIME_TARGET),
    ("peak_mb", 1.0),
    ("train_rss_mb", None),
    ("step_rss_mb", None),
)


def compute_ratios(steps: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> list[dict]:
    """mmalign side / TRL for every (model, batch) where both ran."""
    out = []
    for model, by_batch in steps.items():
        for batch, sides in by_batch.items():
            trl = sides.get("trl", {})
            for side, ours in sides.items():
                if side == "trl":
                    continue
                for metric, target in RATIO_METRICS:
                    if "error" in ours or "error" in trl or metric not in ours or \
                            metric not in trl or not trl[metric] > 0:  # fmt: skip
                        continue
                    value = ours[metric] / trl[metric]
                    verdict = "-" if target is None else ("PASS" if value <= target else "MISS")
                    out.append({"model": model, "batch": int(batch), "side": side,
                                "metric": metric, "value": value, "target": target,
                                "verdict": verdict})  # fmt: skip
    return out


def _print_tables(checks: dict[str, Any], steps: dict[str, Any], ratios: list[dict]) -> None:
    if checks:
        print("\n(a) scores: max |difference| of summed completion log-probs "
              f"({CHECK_ROWS} rows, chosen and rejected)")  # fmt: skip
        print(f"{'model':<6} {'mmalign-direct':>15} {'<=1e-4':>7} {'TRL-mmalign':>12} "
              f"{'TRL-direct(TRL tokens)':>23}  BOS mmalign/TRL")  # fmt: skip
    for model, c in checks.items():
        if "error" in c:
            print(f"{model:<6} FAILED: {c['error'].splitlines()[-1:]}")
            continue
        bos = f"{c['mmalign_prompt_starts_with_bos']}/{c['trl_prompt_starts_with_bos']}"
        print(f"{model:<6} {c['mmalign_vs_direct_max_abs']:>15.2e} {c['verdict']:>7} "
              f"{c['trl_vs_mmalign_max_abs']:>12.2e} "
              f"{c['trl_vs_direct_trl_tokens_max_abs']:>23.2e}  {bos}")  # fmt: skip
    device = next((r["device"] for b in steps.values() for s in b.values() for r in s.values()
                   if "device" in r), "?")  # fmt: skip
    peak = "peak MB (cuda)" if device.startswith("cuda") else "peak MB (RSS)"
    print(f"\n(b) one DPO step on {device} (medians over the timed steps of every round)")
    print(f"{'model':<6} {'batch':>5} {'side':<14} {'s/step':>8} {'min s':>8} {'cpu s':>8} "
          f"{peak:>14} {'+run MB':>8} {'+step MB':>8} {'loss first->last':>17}")  # fmt: skip
    for model, by_batch in steps.items():
        for batch, sides in by_batch.items():
            for side, r in sides.items():
                if "error" in r:
                    print(
                        f"{model:<6} {batch:>5} {side:<14} FAILED: {r['error'].splitlines()[-1:]}"
                    )
                    continue
                losses = f"{r['losses'][0]:.4f}->{r['losses'][-1]:.4f}"
                print(f"{model:<6} {batch:>5} {side:<14} {r['s_per_step']:>8.4f} "
                      f"{r['s_per_step_min']:>8.4f} {r['cpu_s_per_step']:>8.4f} "
                      f"{r['peak_mb']:>14.1f} {r['train_rss_mb']:>8.1f} {r['step_rss_mb']:>8.1f} "
                      f"{losses:>17}")  # fmt: skip
    print(f"\nratios mmalign / TRL (targets: time <= {TIME_TARGET}, peak memory <= 1)")
    print(f"{'model':<6} {'batch':>5} {'side':<14} {'metric':<15} {'value':>7} {'target':>7}  "
          "verdict")  # fmt: skip
    for r in ratios:
        target = "-" if r["target"] is None else f"{r['target']:g}"
        print(f"{r['model']:<6} {r['batch']:>5} {r['side']:<14} {r['metric']:<15} "
              f"{r['value']:>7.3f} {target:>7}  {r['verdict']}")  # fmt: skip


def run_parent(args: argparse.Namespace) -> int:
    import trl

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"--models: unknown model {m!r} (use {', '.join(MODELS)})")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if "trl" not in sides or any(s not in SIDES for s in sides):
        raise SystemExit(f"--sides: a comma list of {', '.join(SIDES)} that includes trl")
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not batches or min(batches) < 1:
        raise SystemExit(f"--batches: positive pair counts, got {args.batches!r}")
    n_rows = max(max(batches) * (args.warmup + args.steps), CHECK_ROWS)
    start = time.perf_counter()
    checks: dict[str, Any] = {}
    steps: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="mmalign-bench-vlm-") as tmp:
        paths, rows = prepare(Path(tmp), models, n_rows)
        print(f"[{time.perf_counter() - start:6.1f}s] built models and {n_rows} rows", flush=True)
        for model in models:
            if not args.skip_check:
                checks[model] = c = _child(args, "check", model, paths[model], rows)
                done = "FAILED" if "error" in c else c["verdict"]
                print(f"[{time.perf_counter() - start:6.1f}s] {model} scores: {done}", flush=True)
            steps[model] = {}
            for batch in batches:
                runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
                # Rounds alternate the sides, so a load change on a shared machine hits both.
                for i in range(args.rounds):
                    for side in sides:
                        r = _child(args, "step", model, paths[model], rows, side, batch)
                        runs[side].append(r)
                        done = "FAILED" if "error" in r else f"{r['s_per_step']:.4f} s/step"
                        print(f"[{time.perf_counter() - start:6.1f}s] {model} batch {batch} "
                              f"{side} round {i + 1}: {done}", flush=True)  # fmt: skip
                steps[model][str(batch)] = {side: combine(runs[side]) for side in sides}
    ratios = compute_ratios(steps)
    _print_tables(checks, steps, ratios)
    report = {
        "benchmark": "vlm_vs_trl",
        "config": {
            "models": models, "sides": sides, "batches": batches, "steps": args.steps,
            "warmup": args.warmup,
            "rounds": args.rounds, "rank": args.rank, "lr": args.lr, "beta": BETA,
            "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
            "device": args.device, "threads": args.threads, "quick": args.quick,
            "mmap_threshold": args.mmap_threshold,
            "trl": trl.__version__, "python": sys.version.split()[0],
        },
        "checks": checks,
        "steps": steps,
        "ratios": ratios,
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    failed = any("error" in c or c.get("verdict") == "MISS" for c in checks.values()) or any(
        "error" in r for b in steps.values() for s in b.values() for r in s.values()
    )
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="mmalign's VLM DPO step and scores against TRL's DPOTrainer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", default="toy,llava", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--sides", default="mmalign,trl",
                   help="comma list of mmalign (reference = disabled adapters, like TRL), "
                        "mmalign-cached (reference log-probs precomputed by one pass before "
                        "training), trl")  # fmt: skip
    p.add_argument("--batches", default=None,
                   help=f"comma list of pairs per step ({FULL['batches']}; quick "
                        f"{QUICK['batches']})")  # fmt: skip
    for name, what in (("steps", "timed steps"), ("warmup", "untimed steps first"),
                       ("rounds", "child runs per side, alternating the sides")):  # fmt: skip
        p.add_argument(f"--{name}", type=int, default=None,
                       help=f"{what} ({FULL[name]}; quick {QUICK[name]})")  # fmt: skip
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = rank)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (both sides)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: cuda if available")  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
        help="torch / OpenMP threads of each child (default: $OMP_NUM_THREADS, else 1)",
    )  # fmt: skip
    p.add_argument("--skip-check", action="store_true", help="skip part (a), the score check")
    p.add_argument(
        "--mmap-threshold", type=int, default=None,
        help="CPU memory runs: set glibc's MALLOC_MMAP_THRESHOLD_ (bytes) in the children, so "
        "peak RSS tracks live memory rather than heap caching (it slows the steps: take the "
        "times from a run without it)",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a smoke run: few small steps")
    p.add_argument("--out", default="runs/bench/vlm_vs_trl.json", help="results as JSON")
    # The child side.
    p.add_argument("--child", choices=["step", "check"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--side", choices=SIDES, default="mmalign", help=argparse.SUPPRESS)
    p.add_argument("--model", default="toy", help=argparse.SUPPRESS)
    p.add_argument("--model-path", default="toy:vlm", help=argparse.SUPPRESS)
    p.add_argument("--rows", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        raise SystemExit("--steps and --rounds must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        run = run_step_child if args.child == "step" else run_check_child
        print(JSON_MARK + json.dumps(run(args)), flush=True)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
