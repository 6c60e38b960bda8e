"""The child side of `benchmarks/vlm_vs_trl.py`: one training side's timed steps, and the
score check of part (a). The parent (that file) starts each in its own process; the module
docstring there says what is measured and how.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from typing import Any

from mmalign.bench import rss_mb as _rss_mb
from mmalign.bench import step_summary
from mmalign.bench import sync as _sync

SIDES = ("mmalign", "mmalign-cached", "trl")  # "trl" is the baseline of every ratio
BETA = 0.1
WEIGHT_DECAY = 0.01  # mmalign's default (train.weight_decay); TRL gets the same
MAX_GRAD_NORM = 1.0  # both libraries' default
SEED = 0
CHECK_ROWS = 8  # rows of part (a)
Clock = tuple[float, float]  # (wall seconds, this process's CPU seconds)


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
