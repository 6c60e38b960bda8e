"""Preference-data diagnostics: CHES / LN-CHES equal a direct computation from the model's
last-layer hidden states (Razin et al., METHODS.md section 1), from a fresh model pass and from
the cached states, ranking and implicit accuracy per pair, duplicates, counted skips and the
filter spelling."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from vlm_helpers import label_zero_copies, pair_rows

from mmalign.config import InputError
from mmalign.data.pair_filter import PairFilter, parse_filter
from mmalign.vlm.collate import PairCollator, user_content
from mmalign.vlm.diagnose import ches_scores, diagnose_batch, diagnose_rows, pair_key
from mmalign.vlm.diagnose_states import StatesKey, load_states
from mmalign.vlm.load import load_vlm
from mmalign.vlm.tiny import tiny_llava, tiny_qwen2vl


def direct_hidden(vlm, prompt: str, images: list, answer: str) -> tuple[torch.Tensor, int]:
    """(sum of the last-layer hidden states from the last prompt token through the
    second-to-last answer token, answer tokens), from the model's own full forward. Per-token
    inputs beside the ids (Qwen2-VL's `mm_token_type_ids`: 0 text, 1 image, which M-RoPE
    places tokens by) are extended over the answer's text tokens with zeros."""
    user = [{"role": "user", "content": user_content(prompt, len(images))}]
    head = vlm.processor.apply_chat_template(user, add_generation_prompt=True)
    turn = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    full = vlm.processor.apply_chat_template([*user, turn])
    assert full.startswith(head)
    inputs = dict(vlm.processor(text=[head], images=images, return_tensors="pt"))
    comp = torch.tensor([vlm.tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"]])
    p = inputs["input_ids"].shape[1]
    for key, value in list(inputs.items()):
        if key != "input_ids" and torch.is_tensor(value) and value.shape[:2] == (1, p):
            inputs[key] = torch.cat([value, torch.zeros_like(comp, dtype=value.dtype)], 1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], comp], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.no_grad():
        out = vlm.model(**inputs, output_hidden_states=True)
    h = out.hidden_states[-1][0].double()
    n = comp.shape[1]
    return h[p - 1 : p - 1 + n].sum(0), n


def _family_vlm(tmp_path, family: str):
    """toy-vlm, or a tiny random LLaVA or Qwen2-VL (M-RoPE, a dynamic image grid) saved and
    loaded as a real checkpoint."""
    if family == "llava":
        tiny_llava(tmp_path / "llava")
        return load_vlm(str(tmp_path / "llava"))
    if family == "qwen2vl":
        tiny_qwen2vl(tmp_path / "qwen")
        vlm = load_vlm(str(tmp_path / "qwen"))
        assert type(vlm.model).__name__ == "Qwen2VLForConditionalGeneration"
        return vlm
    return load_vlm("toy:vlm")


@pytest.mark.parametrize("family", ["toy", "llava", "qwen2vl"])
def test_ches_equals_direct_computation(tmp_path, family):
    vlm = _family_vlm(tmp_path, family)
    rows = pair_rows()
    batch = PairCollator(vlm.processor, ("main",))(rows)
    got = diagnose_batch(vlm.model, batch)
    for i, row in enumerate(rows):
        s_c, n_c = direct_hidden(vlm, row["prompt"], [row["image"]], row["chosen"])
        s_r, n_r = direct_hidden(vlm, row["prompt"], [row["image"]], row["rejected"])
        ches = float(s_c @ s_r - s_c @ s_c)
        ln_ches = float(s_c @ s_r / (n_c * n_r) - s_c @ s_c / n_c**2)
        assert got["chosen_tokens"][i] == n_c and got["rejected_tokens"][i] == n_r
        assert got["ches"][i] == pytest.approx(ches, rel=1e-5, abs=1e-5), family
        assert got["ln_ches"][i] == pytest.approx(ln_ches, rel=1e-5, abs=1e-5), family
        ranked = got["logp_chosen"][i] > got["logp_rejected"][i]
        assert got["ranking_correct"][i] == ranked
    # the two rows have different answers: the scores must differ (not a constant)
    assert got["ches"][0] != got["ches"][1]


@contextmanager
def no_forward() -> Iterator[list[str]]:
    """Any module forward inside raises: what runs inside made no model pass."""
    calls: list[str] = []

    def refuse(module: torch.nn.Module, args: object) -> None:
        calls.append(type(module).__name__)
        raise RuntimeError(f"forward of {type(module).__name__} where none may run")

    handle = torch.nn.modules.module.register_module_forward_pre_hook(refuse)
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("family", ["toy", "llava", "qwen2vl"])
def test_ches_from_cached_states_equals_direct_computation(tmp_path, family):
    """The cached path: a second diagnosis reads the states the first stored (no forward at
    all) and gives the same columns; CHES / LN-CHES from the file's sums and counts equal the
    direct computation of `test_ches_equals_direct_computation`."""
    vlm = _family_vlm(tmp_path, family)
    rows = pair_rows()
    fresh = diagnose_rows(vlm.model, vlm.processor, rows, model_key=vlm.weights_key,
                          progress=False)  # fmt: skip
    assert fresh.notes == []
    with no_forward() as calls:
        cached = diagnose_rows(vlm.model, vlm.processor, rows, model_key=vlm.weights_key,
                               progress=False)  # fmt: skip
    assert calls == [] and "from the cache" in cached.notes[0]
    assert cached.columns == fresh.columns
    keys = [pair_key(r) for r in rows]
    path = StatesKey.of(vlm.weights_key, keys, vlm.processor).path()
    states = load_states(path, "test")
    hidden = vlm.core.get_output_embeddings().weight.shape[-1]
    assert states.meta["hidden_size"] == str(hidden) == str(states.hidden_size)
    t = states.tensors
    ches, ln_ches = ches_scores(t["chosen_sum"], t["rejected_sum"], t["chosen_tokens"],
                                t["rejected_tokens"])  # fmt: skip
    for i, row in enumerate(rows):
        s_c, n_c = direct_hidden(vlm, row["prompt"], [row["image"]], row["chosen"])
        s_r, n_r = direct_hidden(vlm, row["prompt"], [row["image"]], row["rejected"])
        assert float(ches[i]) == pytest.approx(float(s_c @ s_r - s_c @ s_c), rel=1e-5, abs=1e-5)
        direct_ln = float(s_c @ s_r / (n_c * n_r) - s_c @ s_c / n_c**2)
        assert float(ln_ches[i]) == pytest.approx(direct_ln, rel=1e-5, abs=1e-5)
        assert (int(t["chosen_tokens"][i]), int(t["rejected_tokens"][i])) == (n_c, n_r)
        assert torch.allclose(t["chosen_sum"][i], s_c, rtol=1e-5, atol=1e-5)


def test_identical_answers_score_zero_and_duplicates_are_flagged():
    vlm = load_vlm("toy:vlm")
    a, b = pair_rows()
    same = {**a, "rejected": a["chosen"]}  # S- == S+: CHES = LN-CHES = 0 exactly
    diag = diagnose_rows(vlm.model, vlm.processor, [a, same, b, dict(a)], batch_size=3,
                         progress=False)  # fmt: skip
    assert diag.columns["row"] == [0, 1, 2, 3]
    assert diag.columns["ches"][1] == pytest.approx(0.0, abs=1e-6)
    assert diag.columns["ln_ches"][1] == pytest.approx(0.0, abs=1e-9)
    assert diag.columns["ranking_correct"][1] is False  # a tie is not ranked right
    assert diag.columns["duplicate_of"] == [-1, -1, -1, 0]
    assert diag.columns["ches"][3] == pytest.approx(diag.columns["ches"][0], rel=1e-6)


def test_long_rows_are_counted_skips():
    vlm = load_vlm("toy:vlm")
    rows = pair_rows()
    long = {**rows[0], "prompt": "what color is the shape ? " * 30}
    collator = PairCollator(vlm.processor)
    limit = max(collator.lengths(r) for r in rows)
    diag = diagnose_rows(vlm.model, vlm.processor, [rows[0], long, rows[1]], max_length=limit,
                         progress=False)  # fmt: skip
    assert diag.columns["row"] == [0, 2]
    assert diag.report.skipped == {"too_long": 1} and diag.report.examples["too_long"] == [1]


def test_implicit_accuracy_against_the_adapters_off_reference():
    from peft import LoraConfig, get_peft_model

    vlm = load_vlm("toy:vlm")
    model = get_peft_model(vlm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))  # fmt: skip
    rows = pair_rows()
    diag = diagnose_rows(model, vlm.processor, rows, with_reference=True, progress=False)
    cols = diag.columns
    base = diagnose_rows(load_vlm("toy:vlm").model, vlm.processor, rows, progress=False).columns
    assert cols["ref_chosen"] == pytest.approx(base["logp_chosen"], abs=1e-5)
    assert cols["logp_chosen"] != pytest.approx(base["logp_chosen"], abs=1e-5)
    for i in range(len(rows)):
        delta = (cols["logp_chosen"][i] - cols["ref_chosen"][i]) - (
            cols["logp_rejected"][i] - cols["ref_rejected"][i]
        )
        assert cols["implicit_correct"][i] == (delta > 0)


def test_filter_spelling_and_keep():
    f = parse_filter("ln_ches:keep_lowest=0.5")
    assert f == PairFilter("ln_ches", "keep_lowest", 0.5)
    assert f.keep([3.0, 1.0, float("nan"), 2.0, 0.5]) == [1, 4]
    assert parse_filter("ches:max=2").keep([3.0, 1.0, 2.0]) == [1, 2]
    with pytest.raises(ValueError, match="did you mean 'ln_ches'"):
        parse_filter("ln_chess:keep_lowest=0.05")
    with pytest.raises(ValueError, match="did you mean 'keep_lowest'"):
        parse_filter("ln_ches:keep_lowst=0.05")
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\]"):
        parse_filter("ln_ches:keep_lowest=5")
    with pytest.raises(ValueError, match="METRIC:RULE=VALUE"):
        parse_filter("ln_ches")


def test_cli_writes_table_summary_report_and_filtered_set(tmp_path, capsys):
    import json

    import pandas as pd
    from datasets import Dataset, load_from_disk

    from mmalign.cli import main

    a, b = pair_rows()
    rows = [a, b, {**a, "rejected": "green circle"}, {**b, "rejected": "maybe not"}, dict(a)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "diag"
    code = main(["data", "diagnose", str(tmp_path / "data"), "--model", "toy:vlm", "--out",
                 str(out), "--filter", "ln_ches:keep_lowest=0.4", "--batch-size", "2"])  # fmt: skip
    assert code == 0
    table = pd.read_parquet(out / "pairs.parquet")
    assert list(table["row"]) == [0, 1, 2, 3, 4] and list(table["duplicate_of"])[-1] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 5 and summary["duplicates"] == 1
    assert summary["ranking_accuracy"] == pytest.approx(table["ranking_correct"].mean())
    kept = load_from_disk(str(out / "filtered"))
    lowest = sorted(table.sort_values(["ln_ches", "row"]).head(2)["row"])
    assert sorted(kept["rejected"]) == sorted(rows[i]["rejected"] for i in lowest)
    report = (out / "report.html").read_text()
    assert "highest-LN-CHES" in report and 'alt="histograms"' in report
    # an unknown filter key is a clear input error (exit 2), before the model loads
    code = main(["data", "diagnose", str(tmp_path / "data"), "--model", "toy:vlm", "--out",
                 str(out), "--filter", "ln_chess:keep_lowest=0.4"])  # fmt: skip
    assert code == 2 and "did you mean 'ln_ches'" in capsys.readouterr().err
    code = main(["data", "diagnose", "toy:pairs", "--model", "toy:vlm", "--out", str(out)])
    assert code == 2 and "CHES and LN-CHES are defined for language-model" in (
        capsys.readouterr().err
    )


def test_summary_by_source_means_and_changes():
    from mmalign.data.schema import ValidationReport
    from mmalign.vlm.diagnose import Diagnosis, summarize, summarize_by

    cols = {"row": [0, 1, 2], "duplicate_of": [-1, -1, -1], "chosen_tokens": [2, 3, 4],
            "rejected_tokens": [2, 2, 2], "logp_chosen": [-1.0, -3.0, -2.0],
            "logp_rejected": [-2.0, -1.0, -6.0], "ranking_correct": [True, False, True],
            "ches": [0.0, 1.0, 2.0], "ln_ches": [0.0, -1.0, -2.0],
            "ref_chosen": [-2.0, -1.0, -2.0], "ref_rejected": [-2.0, -2.0, -2.0],
            "implicit_correct": [True, False, False]}  # fmt: skip
    diag = Diagnosis(cols, ValidationReport(name="t"), hidden_size=4)
    by = summarize_by(diag, ["x", "y", "x"])
    assert by["x"] == {"pairs": 2, "ranking_accuracy": 1.0, "implicit_accuracy": 0.5,
                       "mean_logp_chosen": -1.5, "mean_logp_rejected": -4.0,
                       "mean_ref_chosen": -2.0, "mean_ref_rejected": -2.0,
                       "mean_chosen_change": 0.5, "mean_rejected_change": -2.0}  # fmt: skip
    assert by["y"]["pairs"] == 1 and by["y"]["mean_chosen_change"] == -2.0
    assert summarize(diag)["mean_chosen_change"] == pytest.approx(-2 / 3 + 1 / 3)  # -2 - (-5/3)


def test_cli_without_matplotlib_writes_the_report_without_histograms(tmp_path, capsys, monkeypatch):
    """matplotlib is in the optional `eval` extra: without it the command used to do the whole
    model pass and then exit 2 with no report.html. Now it says so up front and the report
    comes without the histograms, naming what to install."""
    import sys

    from datasets import Dataset

    from mmalign.cli import main

    Dataset.from_list(pair_rows()).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "diag"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    code = main(["data", "diagnose", str(tmp_path / "data"), "--model", "toy:vlm", "--out",
                 str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "matplotlib is not installed" in captured.err and "'.[eval]'" in captured.err
    report = (out / "report.html").read_text()
    assert "No histograms:" in report and "pip install -e &#x27;.[eval]&#x27;" in report
    assert 'alt="histograms"' not in report and "highest-LN-CHES" in report
    assert (out / "pairs.parquet").is_file() and (out / "summary.json").is_file()


def test_cli_reference_model_for_a_full_fine_tune(tmp_path, capsys):
    """`--reference BASE`: implicit accuracy of a model with no adapter to switch off, from
    BASE's own pass over the same pairs; a reference that tokenizes differently, or one given
    with --adapter or for image pairs, is a clear error."""
    import copy
    import json

    import pandas as pd
    from datasets import Dataset

    from mmalign.cli import main
    from mmalign.vlm.diagnose import add_reference

    vlm = load_vlm("toy:vlm")
    torch.manual_seed(0)
    with torch.no_grad():  # a "full fine-tune": every weight of one layer moved
        for p in vlm.model.get_output_embeddings().parameters():
            p.add_(0.05 * torch.randn_like(p))
    tuned = tmp_path / "tuned"
    vlm.model.save_pretrained(tuned)
    vlm.processor.save_pretrained(tuned)
    a, b = pair_rows()
    rows = [a, b, {**a, "rejected": "green circle"}, {**b, "rejected": "maybe not"}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "diag"
    args = ["data", "diagnose", str(tmp_path / "data"), "--model", str(tuned), "--out", str(out)]
    assert main([*args, "--reference", "toy:vlm"]) == 0
    assert "implicit accuracy" in capsys.readouterr().out
    table = pd.read_parquet(out / "pairs.parquet")
    data = Dataset.from_list(rows)
    base = diagnose_rows(load_vlm("toy:vlm").model, vlm.processor, data, progress=False).columns
    own = diagnose_rows(load_vlm(str(tuned)).model, vlm.processor, data, progress=False).columns
    assert list(table["ref_chosen"]) == pytest.approx(base["logp_chosen"], abs=1e-6)
    assert list(table["logp_rejected"]) == pytest.approx(own["logp_rejected"], abs=1e-6)
    assert list(table["logp_chosen"]) != pytest.approx(base["logp_chosen"], abs=1e-3)
    margin = (table["logp_chosen"] - table["ref_chosen"]) - (
        table["logp_rejected"] - table["ref_rejected"]
    )
    assert list(table["implicit_correct"]) == list(margin > 0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] and summary["implicit_accuracy"] == pytest.approx(
        table["implicit_correct"].mean()
    )
    # a reference whose token counts differ cannot be lined up with the model's log-probs
    diag = diagnose_rows(vlm.model, vlm.processor, data, progress=False)
    other = copy.deepcopy(diag)
    other.columns["chosen_tokens"][1] += 1
    with pytest.raises(InputError, match=r"tokenizes the answers differently.*pair 1"):
        add_reference(diag, other, "X")
    assert main([*args, "--reference", "toy:vlm", "--adapter", str(tuned)]) == 2
    assert "give one" in capsys.readouterr().err
    code = main(["data", "diagnose", "toy:pairs", "--model", "toy:sd", "--reference", "toy:sd",
                 "--out", str(out)])  # fmt: skip
    assert code == 2 and "for image pairs give the reference as --model" in (
        capsys.readouterr().err
    )


def test_label_zero_pairs_are_ranked_with_rejected_as_the_winner():
    """A pair labelled 0 (the `rejected` answer preferred) is the same preference as its
    swapped copy labelled 1: the same ranking and implicit verdicts, counted in the summary."""
    from peft import LoraConfig, get_peft_model

    from mmalign.vlm.diagnose import summarize

    rows = label_zero_copies()
    vlm = load_vlm("toy:vlm")
    torch.manual_seed(0)
    model = get_peft_model(vlm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))  # fmt: skip
    diag = diagnose_rows(model, vlm.processor, rows, with_reference=True, progress=False)
    cols = diag.columns
    assert cols["rejected_preferred"] == [False, True, False, True]
    assert cols["ranking_correct"][0] == cols["ranking_correct"][1]
    assert cols["ranking_correct"][2] == cols["ranking_correct"][3]
    assert cols["implicit_correct"][0] == cols["implicit_correct"][1]
    assert cols["implicit_correct"][2] == cols["implicit_correct"][3]
    assert cols["logp_chosen"][1] == pytest.approx(cols["logp_rejected"][0], abs=1e-5)
    assert summarize(diag)["rejected_preferred"] == 2
