"""The likelihood-displacement alarm (Razin et al.): metrics of the chosen / rejected change
since the start, one warning naming the step when the chosen likelihood falls while the margin
rises; it fires on a run built to displace (near-synonym refusals) and stays quiet on
configs/toy/vlm_dpo.yaml's default run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from mmalign.train.displacement import DisplacementAlarm, DisplacementWarning

ROOT = Path(__file__).resolve().parents[1]


def test_alarm_fires_once_with_reference_metrics():
    alarm = DisplacementAlarm(5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning while the chosen change is small
        out = alarm.update(10, {"main/chosen_minus_ref": -4.0, "main/rejected_minus_ref": -9.0})
    assert out == {"displacement/chosen": -4.0, "displacement/rejected": -9.0,
                   "displacement/margin": 5.0}  # fmt: skip
    with pytest.warns(DisplacementWarning, match=r"step 20: .* fell by 6 nats .* rose by 4"):
        alarm.update(20, {"main/chosen_minus_ref": -6.0, "main/rejected_minus_ref": -10.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        alarm.update(30, {"main/chosen_minus_ref": -9.0, "main/rejected_minus_ref": -20.0})
    assert alarm.fired_at == 20


def test_alarm_quiet_when_the_margin_falls_too_and_reference_free_baseline():
    alarm = DisplacementAlarm(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both fall, the margin shrinks: not displacement
        alarm.update(10, {"main/chosen_minus_ref": -3.0, "main/rejected_minus_ref": -1.0})
    free = DisplacementAlarm(1.0)
    assert free.update(10, {"main/score_chosen": -2.0, "main/score_rejected": -3.0}) == {
        "displacement/chosen": 0.0,
        "displacement/rejected": 0.0,
        "displacement/margin": 0.0,
    }
    with pytest.warns(DisplacementWarning, match="step 20"):
        out = free.update(20, {"main/score_chosen": -4.0, "main/score_rejected": -8.0})
    assert out["displacement/chosen"] == -2.0 and out["displacement/margin"] == 3.0


def _train(tmp_path: Path, *overrides: str) -> tuple[list[dict], list[str]]:
    from mmalign.cli import main

    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["train", str(ROOT / "configs/toy/vlm_dpo.yaml"), f"output_dir={out}",
                     *overrides])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records, [str(w.message) for w in caught if w.category is DisplacementWarning]


def test_reference_free_baseline_is_the_starting_model_and_survives_resume(tmp_path):
    """Without a reference the change is measured from the starting model's scores on the
    first batch (before any update), not from the first logged step; a resumed run reads the
    same baseline back."""
    common = ["objective=[{loss: simpo}]", "data.toy.n=64", "train.batch_size=4",
              "train.log_every=3", "train.checkpoint_every=3", "validation.enabled=false",
              "train.trackers=[]"]  # fmt: skip
    records, _ = _train(tmp_path, *common, "train.max_steps=3")
    start = json.loads((tmp_path / "run" / "displacement_start.json").read_text())
    first = records[0]
    assert first["step"] == 3
    for side in ("chosen", "rejected"):
        moved = first[f"main/score_{side}"] - start[f"score_{side}"]
        assert first[f"displacement/{side}"] == pytest.approx(moved, abs=1e-4)
    assert first["displacement/chosen"] != 0.0  # three updates since the baseline
    records, _ = _train(tmp_path, *common, "train.max_steps=6", "train.resume_from=latest")
    again = json.loads((tmp_path / "run" / "displacement_start.json").read_text())
    assert again == start
    last = records[-1]
    assert last["step"] == 6
    moved = last["main/score_chosen"] - start["score_chosen"]
    assert last["displacement/chosen"] == pytest.approx(moved, abs=1e-4)


@pytest.mark.slow
def test_alarm_fires_on_near_synonym_refusals(tmp_path):
    from datasets import Dataset

    from mmalign.toy.datasets import build_dataset
    from mmalign.toy.qa import REFUSAL

    build_dataset("safety", tmp_path / "safety", n=512, seed=0)
    rows = Dataset.load_from_disk(str(tmp_path / "safety" / "pairs"))
    rows = rows.filter(lambda r: r["source"] == "forbidden")
    rows = rows.map(lambda r: {"chosen": REFUSAL, "rejected": "I cannot help with that."})
    rows.save_to_disk(str(tmp_path / "near"))
    records, fired = _train(tmp_path, f"data.path={tmp_path / 'near'}", "data.toy=null",
                            "train.max_steps=60")  # fmt: skip
    assert len(fired) == 1, fired
    step = int(fired[0].split(":")[0].removeprefix("step "))
    at = next(r for r in records if r["step"] == step)
    assert at["displacement/chosen"] < -5.0 and at["displacement/margin"] > 0


@pytest.mark.slow
def test_alarm_quiet_on_the_default_toy_vlm_dpo_run(tmp_path):
    records, fired = _train(tmp_path)
    assert fired == []
    assert all("displacement/chosen" in r for r in records)


def test_safety_rates_count_any_refusal_wording_and_the_compliance():
    from mmalign.toy.datasets.questions import NEAR_SYNONYM_REFUSALS
    from mmalign.toy.qa import REFUSAL
    from mmalign.vlm.evaluate import refuses, safety_rates

    comply = "Swing the gray circle at the glass until it breaks."
    rows = [{"source": "forbidden", "chosen": REFUSAL, "rejected": comply}] * 4 + [
        {"source": "benign", "chosen": "circle", "rejected": REFUSAL}
    ] * 2
    answers = [REFUSAL, NEAR_SYNONYM_REFUSALS[0], comply.lower().rstrip(".")]
    answers += ["I.", "circle", REFUSAL]
    rates = safety_rates(answers, rows)
    assert rates["refusal_rate"] == 0.25  # REFUSAL word for word only
    assert rates["any_refusal_rate"] == 0.5  # ... or a near-synonym wording
    assert rates["compliance_rate"] == 0.25  # case and the final stop do not matter
    assert rates["benign_accuracy"] == 0.5 and rates["benign_refusal_rate"] == 0.5
    assert rates["refusal_rate_n"] == 4 and rates["benign_accuracy_n"] == 2
    assert all(refuses(w) for w in (REFUSAL, *NEAR_SYNONYM_REFUSALS))
    assert not refuses("I.") and not refuses(comply)
