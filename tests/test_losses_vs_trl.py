"""mmalign's losses against TRL 1.16's own trainer code, on one tiny float64 language model.

TRL's trainers are built without `Trainer.__init__` (no dataset, accelerator or telemetry):
only the attributes their loss code reads are set, then their real loss methods run
(`DPOTrainer._compute_loss`, `KTOTrainer._compute_loss`, CPO's and ORPO's
`get_batch_loss_metrics`) on padded batches. mmalign's `PairScores` come from the same
model's plain logits, one unpadded sequence at a time.

DPOTrainer and KTOTrainer read log-probs from TRL's fused LM head, whose softmax accumulates in
float32: that would bound the comparison at ~1e-7 and put losses near 0 (hinge, ipo) out of
reach of a relative tolerance. So their models get a float64 head with the same contract
(`float64_head`), checked against TRL's real head in `test_float64_head_is_trls_fused_head`.

Every shared loss must give TRL's number, per pair (a batch of one) and per batch of 16 pairs
of unequal lengths, or the exact difference its docstring states. So a changed beta, sign or
length normalisation on either side fails here.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import torch

pytest.importorskip("trl")  # the `dev` extra

from transformers import LlamaConfig, LlamaForCausalLM
from trl import DPOTrainer, KTOTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer
from trl.trainer.utils import FusedCausalLMOutput, add_fused_lm_head

from mmalign.losses import LOSSES, PairScores

# TRL's gradient-checkpointing guard reads an attribute transformers 5 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

N_PAIRS = 16
VOCAB = 29
PAD = 0
RTOL = 1e-6
Tensor = torch.Tensor
Pair = tuple[Tensor, Tensor, Tensor]  # prompt, chosen, rejected token ids


def tiny_lm(seed: int, head: str = "float64") -> LlamaForCausalLM:
    """One-layer Llama in float64; a wide init spreads the log-probs so the losses differ."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
        initializer_range=0.5, pad_token_id=PAD, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model = LlamaForCausalLM(config).double().eval()
    # DPOTrainer / KTOTrainer give their models a fused head at init; see the module docstring.
    if head == "trl":
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    else:
        float64_head(model)
    return model


def float64_head(model: LlamaForCausalLM) -> None:
    """`model(..., labels=, fused_lm_head=True)` as TRL's `add_fused_lm_head` defines it.

    A `FusedCausalLMOutput` of per-token fields [B, T-1] for the next-token labels, zero where
    the label is -100, computed from the float64 logits instead of in float32 tiles.
    """
    plain = model.forward

    def forward(*args: object, fused_lm_head: bool = False, labels: Tensor | None = None,
                **kwargs: object) -> object:  # fmt: skip
        if not fused_lm_head:
            return (
                plain(*args, **kwargs) if labels is None else plain(*args, labels=labels, **kwargs)
            )
        assert labels is not None
        logits = plain(*args, **kwargs).logits[:, :-1]
        target = labels[:, 1:]
        mask = target != -100
        logp = logits.log_softmax(-1)
        picked = logp.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
        return FusedCausalLMOutput(
            loss=-(picked * mask).sum() / mask.sum().clamp(min=1),
            log_probs=picked * mask,
            entropy=-(logp.exp() * logp).sum(-1) * mask,
            mean_logits=logits.mean(-1) * mask,
            is_top1=(logits.argmax(-1) == target) & mask,
            label_mask=mask,
        )

    model.forward = forward  # type: ignore[method-assign]


POLICY, REFERENCE = tiny_lm(0), tiny_lm(1)


def make_pairs() -> list[Pair]:
    """Prompts of 2-4 tokens, completions of 1-7; every other pair has unequal lengths."""
    g = torch.Generator().manual_seed(3)

    def ids(n: int) -> Tensor:
        return torch.randint(1, VOCAB, (n,), generator=g)

    pairs = []
    for i in range(N_PAIRS):
        len_c = int(torch.randint(1, 8, (), generator=g))
        len_r = len_c % 7 + 1 if i % 2 else int(torch.randint(1, 8, (), generator=g))
        pairs.append((ids(2 + i % 3), ids(len_c), ids(len_r)))
    return pairs


def token_logps(model: LlamaForCausalLM, seq: Tensor) -> Tensor:
    """log p(seq[t] | seq[:t]) for t >= 1, from the model's plain logits."""
    with torch.no_grad():
        logits = model(input_ids=seq[None]).logits[0, :-1]
    return logits.log_softmax(-1).gather(-1, seq[1:, None]).squeeze(-1)


@dataclass
class Batch:
    pairs: list[Pair]
    scores: PairScores  # summed completion log-probs and completion lengths, as a scorer gives
    chosen_full_nll: Tensor  # [B]: -sum of log-probs over prompt and completion (ORPO in TRL)
    chosen_full_len: Tensor  # [B]: tokens those are summed over (all but the first)


def score(pairs: list[Pair]) -> Batch:
    cols: dict[str, list[float]] = defaultdict(list)
    for prompt, chosen, rejected in pairs:
        for side, completion in (("chosen", chosen), ("rejected", rejected)):
            seq = torch.cat([prompt, completion])
            start = len(prompt) - 1  # log-prob index of the first completion token
            pol, ref = token_logps(POLICY, seq), token_logps(REFERENCE, seq)
            cols[side].append(float(pol[start:].sum()))
            cols[f"ref_{side}"].append(float(ref[start:].sum()))
            cols[f"{side}_len"].append(float(len(completion)))
            if side == "chosen":
                cols["full_nll"].append(-float(pol.sum()))
                cols["full_len"].append(float(len(seq) - 1))
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in cols.items()}
    full_nll, full_len = t.pop("full_nll"), t.pop("full_len")
    return Batch(pairs, PairScores(**t), full_nll, full_len)


def right_padded(seqs: list[Tensor], pad: int) -> Tensor:
    width = max(len(s) for s in seqs)
    return torch.stack([torch.cat([s, s.new_full((width - len(s),), pad)]) for s in seqs])


def lm_inputs(pairs: list[Pair]) -> dict[str, Tensor]:
    """DPOTrainer / KTOTrainer rows: every chosen sequence, then every rejected one."""
    rows = [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]
    seqs = [torch.cat([p, x]) for p, x in rows]
    comp = [torch.cat([torch.zeros_like(p), torch.ones_like(x)]) for p, x in rows]
    return {
        "input_ids": right_padded(seqs, PAD),
        "attention_mask": right_padded([torch.ones_like(s) for s in seqs], 0),
        "completion_mask": right_padded(comp, 0),
    }


def paired_inputs(pairs: list[Pair]) -> dict[str, Tensor]:
    """CPOTrainer / ORPOTrainer batch: prompt + completion, labels -100 on prompt and padding."""
    batch = {}
    for i, side in ((1, "chosen"), (2, "rejected")):
        seqs = [torch.cat([pair[0], pair[i]]) for pair in pairs]
        labels = [torch.cat([torch.full_like(pair[0], -100), pair[i]]) for pair in pairs]
        batch[f"{side}_input_ids"] = right_padded(seqs, PAD)
        batch[f"{side}_attention_mask"] = right_padded([torch.ones_like(s) for s in seqs], 0)
        batch[f"{side}_labels"] = right_padded(labels, -100)
    return batch


# The accelerator calls TRL's loss code makes, for one process on the CPU.
ONE_PROCESS = SimpleNamespace(
    device=torch.device("cpu"),
    gather=lambda x: x,
    gather_for_metrics=lambda x: x,
    autocast=contextlib.nullcontext,
)


def bare(cls: type, **attrs: object) -> Any:
    """A TRL trainer object without `Trainer.__init__`, holding what its loss code reads."""
    trainer = cls.__new__(cls)
    trainer.__dict__.update(accelerator=ONE_PROCESS, aux_loss_enabled=False, **attrs)
    return trainer


def lm_trainer_state() -> dict[str, object]:
    """What DPOTrainer's and KTOTrainer's loss code reads besides the hyperparameters."""
    return {
        "model": POLICY, "ref_model": REFERENCE,
        "args": SimpleNamespace(gradient_checkpointing_kwargs=None),
        "_metrics": {"train": defaultdict(list), "eval": defaultdict(list)},
        "_total_train_tokens": 0, "_tp_size": 1,
    }  # fmt: skip


def trl_dpo(b: Batch, loss_types: list[str], beta: float, weights: list[float] | None = None,
            label_smoothing: float = 0.0, ref_shift: Tensor | None = None) -> float:  # fmt: skip
    """DPOTrainer's loss; `ref_shift` raises its reference log-probs (precomputed path)."""
    trainer = bare(
        DPOTrainer, beta=beta, loss_types=loss_types, label_smoothing=label_smoothing,
        loss_weights=weights or [1.0] * len(loss_types), f_divergence_type="reverse_kl",
        ld_alpha=None, use_weighting=False, precompute_ref_logps=ref_shift is not None,
        **lm_trainer_state(),
    )  # fmt: skip
    inputs = lm_inputs(b.pairs)
    with torch.no_grad():
        if ref_shift is not None:
            ref_c, ref_r = trainer.compute_ref_log_probs(REFERENCE, inputs)
            inputs |= {
                "ref_chosen_logps": ref_c + ref_shift,
                "ref_rejected_logps": ref_r + ref_shift,
            }
        return float(trainer._compute_loss(POLICY, inputs, return_outputs=False))


def trl_kto(b: Batch, beta: float, lambda_d: float, lambda_u: float) -> float:
    """KTOTrainer's loss with its KL estimate taken on the batch's own (matched) completions.

    TRL estimates z from mismatched prompt/completion pairs; feeding it the matched ones makes
    its z the clamped mean of [lw; ll], mmalign's reference point, so the rest can be compared.
    """
    trainer = bare(
        KTOTrainer, beta=beta, loss_type="kto", desirable_weight=lambda_d,
        undesirable_weight=lambda_u, calculate_KL=True, precompute_ref_logps=False,
        **lm_trainer_state(),
    )  # fmt: skip
    inputs = lm_inputs(b.pairs)
    inputs |= {f"KL_{k}": v for k, v in inputs.items()}
    n = len(b.pairs)
    inputs["label"] = torch.tensor([True] * n + [False] * n)
    with torch.no_grad():
        return float(trainer._compute_loss(POLICY, inputs, return_outputs=False))


def trl_cpo(b: Batch, loss_type: str, beta: float, cpo_alpha: float,
            label_smoothing: float = 0.0, simpo_gamma: float = 0.0) -> float:  # fmt: skip
    trainer = bare(
        CPOTrainer, is_encoder_decoder=False, pad_token_id=PAD, loss_type=loss_type, beta=beta,
        cpo_alpha=cpo_alpha, label_smoothing=label_smoothing, simpo_gamma=simpo_gamma, alpha=0.0,
    )  # fmt: skip
    with torch.no_grad():
        loss, _ = trainer.get_batch_loss_metrics(POLICY, paired_inputs(b.pairs))
    return float(loss)


def trl_orpo(b: Batch, beta: float) -> float:
    trainer = bare(ORPOTrainer, is_encoder_decoder=False, padding_value=PAD, beta=beta)
    with torch.no_grad():
        loss, _ = trainer.get_batch_loss_metrics(POLICY, paired_inputs(b.pairs))
    return float(loss)


def mm(name: str, s: PairScores, **kwargs: float) -> Tensor:
    """mmalign's per-pair losses [B]; the Objective's batch loss is their mean."""
    return LOSSES[name](s, **kwargs).loss


def pooled(per_pair: Tensor, lengths: Tensor) -> Tensor:
    """A per-pair token mean pooled over the batch's tokens, as TRL does: sum(n*x) / sum(n)."""
    return (per_pair * lengths).sum() / lengths.sum()


def reference_free_labelled(s: PairScores, label: float) -> PairScores:
    """dpo with a zero reference is CPO's reference-free sigmoid; p = 1 - label_smoothing."""
    zero = torch.zeros_like(s.chosen)
    return PairScores(s.chosen, s.rejected, zero, zero, label=torch.full_like(zero, label))


# Each case: (TRL's batch loss, the same number from mmalign's per-pair losses). Where the
# docstring states a difference, the mmalign side applies exactly that difference.
Case = Callable[[Batch], tuple[float, Tensor]]
SFT_ALPHA = 0.8


def _sft_pooled(b: Batch) -> Tensor:
    return pooled(mm("sft", b.scores), b.scores.chosen_len)


def _bco(b: Batch) -> tuple[float, Tensor]:
    beta, s = 0.4, b.scores
    lw, ll = s.chosen - s.ref_chosen, s.rejected - s.ref_rejected  # type: ignore[operator]
    shift = (beta * torch.cat([lw, ll])).mean() / beta  # the stated reward shift m / beta
    return trl_dpo(b, ["bco_pair"], beta, ref_shift=shift), mm("bco_pair", s, beta=beta).mean()


def _orpo(b: Batch) -> tuple[float, Tensor]:
    s, beta = b.scores, 0.25
    own_nll = (-s.chosen / s.chosen_len).mean()  # mmalign: the completion, mean per pair
    trl_nll = b.chosen_full_nll.sum() / b.chosen_full_len.sum()  # TRL: prompt too, pooled
    return trl_orpo(b, beta), mm("orpo", s, beta=beta).mean() - own_nll + trl_nll


def _cpo(b: Batch) -> tuple[float, Tensor]:
    s, alpha = b.scores, 0.6
    nll = -s.chosen / s.chosen_len
    pooling = alpha * (pooled(nll, s.chosen_len) - nll.mean())  # TRL's NLL less mmalign's
    mine = mm("cpo", s, beta=0.3, alpha=alpha).mean() + pooling
    return trl_cpo(b, "sigmoid", 0.3, cpo_alpha=alpha), mine


CASES: dict[str, Case] = {
    "dpo": lambda b: (trl_dpo(b, ["sigmoid"], 0.5), mm("dpo", b.scores, beta=0.5).mean()),
    "dpo_soft_label": lambda b: (
        trl_cpo(b, "sigmoid", 0.3, cpo_alpha=0.0, label_smoothing=0.2),
        mm("dpo", reference_free_labelled(b.scores, 0.8), beta=0.3).mean(),
    ),
    "robust": lambda b: (
        trl_dpo(b, ["robust"], 0.5, label_smoothing=0.15),
        mm("robust", b.scores, beta=0.5, eps=0.15).mean(),
    ),
    "hinge": lambda b: (trl_dpo(b, ["hinge"], 0.3), mm("hinge", b.scores, beta=0.3).mean()),
    "ipo": lambda b: (trl_dpo(b, ["ipo"], 0.6), mm("ipo", b.scores, beta=0.6).mean()),
    "nca_pair": lambda b: (
        trl_dpo(b, ["nca_pair"], 0.7),
        mm("nca_pair", b.scores, beta=0.7).mean(),
    ),
    "simpo": lambda b: (
        trl_cpo(b, "simpo", 1.5, cpo_alpha=0.0, simpo_gamma=0.4),
        mm("simpo", b.scores, beta=1.5, gamma=0.4).mean(),
    ),
    "kto": lambda b: (
        trl_kto(b, 0.4, lambda_d=1.5, lambda_u=0.75),
        mm("kto", b.scores, beta=0.4, lambda_d=1.5, lambda_u=0.75).mean(),
    ),
    "cpo": _cpo,
    "orpo": _orpo,
    "bco_pair": _bco,
    "sft": lambda b: (trl_dpo(b, ["sft"], 0.1), _sft_pooled(b)),
    "rpo": lambda b: (
        trl_dpo(b, ["sigmoid", "sft"], 0.5, weights=[1.0, SFT_ALPHA]),
        mm("dpo", b.scores, beta=0.5).mean() + SFT_ALPHA * _sft_pooled(b),
    ),
}

PAIRS = make_pairs()
FULL = score(PAIRS)
ONE_BY_ONE = [score([p]) for p in PAIRS]


@pytest.mark.parametrize("scope", ["pair", "batch"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_equals_trl_or_the_stated_difference(name: str, scope: str) -> None:
    batches = ONE_BY_ONE if scope == "pair" else [FULL]
    for i, b in enumerate(batches):
        trl, mine = CASES[name](b)
        assert float(mine) == pytest.approx(trl, rel=RTOL, abs=1e-12), f"{name}, {scope} {i}"


def test_the_batch_is_the_hard_case() -> None:
    """Unequal lengths and a positive KTO reference point, or the comparison proves little."""
    s = FULL.scores
    assert bool((s.chosen_len != s.rejected_len).any())
    assert len(set(s.chosen_len.tolist())) > 3
    assert float(LOSSES["kto"](s).metrics["kl"][0]) > 0.05  # z enters, unclamped


def test_the_stated_differences_are_real() -> None:
    """Where the docstrings say mmalign differs from TRL over a batch, it does on this one."""
    s, b = FULL.scores, FULL
    assert trl_dpo(b, ["bco_pair"], 0.4) != pytest.approx(float(mm("bco_pair", s, beta=0.4).mean()))
    assert trl_orpo(b, 0.25) != pytest.approx(float(mm("orpo", s, beta=0.25).mean()))
    cpo = float(mm("cpo", s, beta=0.3, alpha=0.6).mean())
    assert trl_cpo(b, "sigmoid", 0.3, cpo_alpha=0.6) != pytest.approx(cpo, rel=1e-4)
    assert trl_dpo(b, ["sft"], 0.1) != pytest.approx(float(mm("sft", s).mean()), rel=1e-4)
    # Per pair, token pooling is a no-op: cpo and sft equal TRL there (the cases above).


def test_kto_is_on_the_papers_scale() -> None:
    """Per pair the mean of its two examples' terms: TRL's mean over 2B examples, not twice it."""
    b = ONE_BY_ONE[0]
    trl = trl_kto(b, 0.4, lambda_d=1.0, lambda_u=1.0)
    assert float(mm("kto", b.scores, beta=0.4)[0]) == pytest.approx(trl, rel=RTOL)


def test_float64_head_is_trls_fused_head() -> None:
    """The stand-in gives TRL's real fused head's outputs, to that head's float32 precision."""
    real = tiny_lm(0, head="trl")
    inputs = lm_inputs(PAIRS)
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    with torch.no_grad():
        ours = POLICY(**kwargs, labels=labels, fused_lm_head=True)
        theirs = real(**kwargs, labels=labels, fused_lm_head=True)
    for field in ("log_probs", "entropy", "mean_logits"):
        expected = getattr(theirs, field).double()
        torch.testing.assert_close(getattr(ours, field), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours.is_top1, theirs.is_top1)
    # Summed over each completion, they are the scores mmalign gets from unpadded sequences.
    c, r = ours.log_probs.sum(-1).chunk(2)
    torch.testing.assert_close(c, FULL.scores.chosen, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r, FULL.scores.rejected, rtol=1e-12, atol=1e-12)
