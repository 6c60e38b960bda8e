"""An adapter trained from a merged/ folder, given on another model (review 8).

runs/sft (LoRA, `vlm.merge: true`) writes merged/ with `mmalign_merged.json`: toy-vlm with
runs/sft/adapter merged in. runs/dpo trained a LoRA from runs/sft/merged, so its
adapter_config.json's base is that folder. `load_vlm(toy:vlm, adapter=dpo)` (`mmalign chat
toy:vlm --adapter runs/dpo/adapter`) warned that the root was another model and applied DPO
on toy-vlm alone: the SFT weights DPO was trained on were lost, though the merged folder's
record names them. The record is now read there too: its adapters are DPO's start adapters, on
its base (`adapter_chain.starts_below`), as for an adapter trained from an adapter. So:

- toy:vlm --adapter dpo loads toy-vlm + SFT (merged) + DPO, the weights `load_vlm(dpo)` gives,
  with no warning; runs/sft/adapter or runs/sft/merged itself as MODEL is no longer warned
  about either (merged/ was compared with its own base, toy-vlm);
- merged --adapter B, where B was trained from runs/dpo/adapter, was refused ("holds
  runs/sft/adapter (merged in), which it was not trained on"): it loads DPO and B now;
- where the record's adapter is gone, the warning says what the merged folder holds.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from test_review7_vlm_adapter_chain import _adapter_on, _same_weights
from test_vlm_train import vlm_config

from mmalign.config import InputError
from mmalign.train.loop import train
from mmalign.vlm.adapter_chain import MERGED_RECORD
from mmalign.vlm.load import VLMRef, load_vlm
from mmalign.vlm.recipe import VLMRecipe

STEPS = {"max_steps": 1, "batch_size": 4, "learning_rate": 1e-2, "checkpoint_every": 100}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """runs/sft (LoRA on toy-vlm, `vlm.merge: true`), runs/dpo (LoRA from runs/sft/merged),
    both trained by `mmalign train`'s loop, and runs/b (an adapter on runs/dpo/adapter)."""
    root = tmp_path_factory.mktemp("runs")
    sft = train(vlm_config(root / "sft", data={"toy": {"n": 8}}, vlm={"merge": True},
                           train=STEPS), VLMRecipe)  # fmt: skip
    merged = Path(sft.saved["merged"])
    dpo = train(vlm_config(root / "dpo", model={"name_or_path": str(merged)},
                           data={"toy": {"n": 8}}, train=STEPS), VLMRecipe)  # fmt: skip
    dpo_path = Path(dpo.saved["path"])
    assert json.loads((dpo_path / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == str(merged)  # fmt: skip
    return {"root": root, "sft": Path(sft.saved["path"]), "merged": merged, "dpo": dpo_path,
            "b": _adapter_on(dpo_path, root / "b", 5)}  # fmt: skip


@pytest.fixture(autouse=True)
def warn_afresh(monkeypatch):
    """Each test sees its warnings (one is said once per process, `adapter_chain._WARNED`)."""
    from mmalign.vlm import adapter_chain

    monkeypatch.setattr(adapter_chain, "_WARNED", set())


def _quiet_load(model, adapter):
    """`load_vlm(model, adapter=...)`, failing on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_vlm(model, adapter=adapter, adapter_key="--adapter")


def test_an_adapter_from_a_merged_folder_brings_its_adapters_on_the_base(runs):
    on_base = _quiet_load("toy:vlm", runs["dpo"])  # warned, and loaded DPO alone
    sft, dpo = str(runs["sft"].resolve()), str(runs["dpo"])
    assert on_base.adapters == (sft, dpo)
    assert _same_weights(on_base, load_vlm(runs["dpo"]))  # toy-vlm + SFT + DPO, as merged + DPO
    assert VLMRef("toy:vlm", adapter=runs["dpo"]).weights_key == on_base.weights_key


def test_the_sft_adapter_as_model_is_not_warned_about(runs):
    on_sft = _quiet_load(runs["sft"], runs["dpo"])  # the loaded adapters were right already
    assert on_sft.adapters == (str(runs["sft"]), str(runs["dpo"]))


def test_the_merged_folder_as_model_takes_the_adapter_alone_unwarned(runs):
    assert _quiet_load(runs["merged"], runs["dpo"]).adapters == (str(runs["dpo"]),)


def test_an_adapter_on_an_adapter_from_the_merged_folder_loads_on_it(runs):
    on_merged = _quiet_load(runs["merged"], runs["b"])  # was refused
    assert on_merged.adapters == (str(runs["dpo"].resolve()), str(runs["b"]))
    assert _same_weights(on_merged, load_vlm(runs["b"]))
    on_base = _quiet_load("toy:vlm", runs["b"])
    assert on_base.adapters == (str(runs["sft"].resolve()), str(runs["dpo"].resolve()),
                                str(runs["b"]))  # fmt: skip


def test_another_adapter_as_model_is_refused_naming_the_merged_folder(runs, tmp_path):
    other = _adapter_on(runs["sft"], tmp_path / "other", 7)  # on SFT, not what DPO started on
    with pytest.raises(InputError) as err:
        load_vlm(other, adapter=runs["dpo"], adapter_key="--adapter")
    message = str(err.value)
    assert f"was trained on {runs['merged']}, which holds " in message
    assert f"{runs['sft'].resolve()} merged in" in message and "not trained on" in message


def _gone_copies(runs, tmp_path) -> tuple[Path, Path, str]:
    """Copies of merged/ (its record's adapter moved away), of DPO on it and of B on DPO."""
    merged = tmp_path / "merged"
    shutil.copytree(runs["merged"], merged)
    record = json.loads((merged / MERGED_RECORD).read_text())
    gone = str(tmp_path / "gone" / "adapter")
    record["adapters"][0]["path"] = gone
    (merged / MERGED_RECORD).write_text(json.dumps(record))
    dpo, b = tmp_path / "dpo", tmp_path / "b"
    for src, dst, base in ((runs["dpo"], dpo, merged), (runs["b"], b, dpo)):
        shutil.copytree(src, dst)
        config = json.loads((dst / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(base)
        (dst / "adapter_config.json").write_text(json.dumps(config))
    return dpo, b, gone


def test_a_merged_adapter_that_is_gone_is_warned_about_exactly(runs, tmp_path):
    """The record's adapter is no longer where it says: the merged folder stays the root, and
    the warning names what it holds and what is missing."""
    dpo, _, gone = _gone_copies(runs, tmp_path)
    merged = tmp_path / "merged"
    record = json.loads((merged / MERGED_RECORD).read_text())
    with pytest.warns(UserWarning, match=f"was trained on {merged} ") as caught:
        loaded = load_vlm("toy:vlm", adapter=dpo, adapter_key="--adapter")
    said = str(caught[0].message)
    assert f"it holds {record['base']} with the adapter(s) {gone} merged in" in said
    assert f"{gone} is no longer there as it was" in said
    assert loaded.adapters == (str(dpo),)  # applied on MODEL as given, as warned


def test_a_start_above_a_gone_merged_adapter_is_refused_naming_what_is_gone(runs, tmp_path):
    """B on DPO on merged/ whose SFT adapter is gone, given on toy-vlm: DPO alone would go on
    toy-vlm without SFT, so it is refused, and the message says why (it said "a merged/ folder
    written before mmalign recorded what it holds", which this one does)."""
    _, b, gone = _gone_copies(runs, tmp_path)
    with pytest.raises(InputError) as err:
        load_vlm("toy:vlm", adapter=b, adapter_key="--adapter")
    message = str(err.value)
    assert f"{gone} is no longer there as it was" in message
    assert "written before mmalign recorded" not in message


def test_a_model_that_may_be_the_merged_folder_gets_the_adapter_alone_warned(runs):
    """MODEL a hub id, the merged folder's base a local folder: MODEL may be the merged folder
    on the hub (it holds SFT already) as well as the base, so SFT is not stacked on it a
    second time unasked: DPO goes on alone, and the warning says how to get either."""
    from mmalign.vlm.adapter_chain import starts_below

    dpo = str(runs["dpo"])
    with pytest.warns(UserWarning, match="cannot be told from their names") as caught:
        below = starts_below("someone/toy-vlm-sft", [], dpo, dpo, "--adapter", "x", "MODEL")
    assert below == []  # SFT was stacked below DPO here: twice on a merged copy
    said = str(caught[0].message)
    assert f"Give {dpo} alone as the model to load it on {runs['merged']}" in said
