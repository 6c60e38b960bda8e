"""An adapter given on a merged model, and adapters compared by their weights (review 7).

1. `mmalign chat runs/sft/merged --adapter runs/dpo/adapter` (merged/ written by the SFT run's
   `vlm.merge: true`; the DPO run started from runs/sft/adapter) applied the SFT adapter a
   second time on the merged SFT model: `stacked` took MODEL for a plain model holding no
   adapter. merged/ now records the adapters merged into it (`adapter_chain.MERGED_RECORD`,
   with their fingerprints) and they count as MODEL's own. A merged folder written without
   the record (the root the adapter names is then clearly another model than MODEL, and its
   start adapters would be stacked) is refused: the adapter alone loads the same weights.
2. MODEL's adapters were matched to the start adapters by path: a byte-identical copy of the
   SFT adapter given as MODEL was refused. They are matched by fingerprint now. And
   `BASE_LINK` won with no check: the DPO run copied next to another SFT run used that SFT
   silently. The link holds the start adapter's fingerprint: on a mismatch the absolute
   path is used if it holds that adapter, else the link is refused naming both.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from test_review7_vlm_adapter_chain import _adapter_on, _random_lora, _same_weights
from test_vlm_train import vlm_config

from mmalign.config import InputError
from mmalign.train.loop import train
from mmalign.vlm.adapter_chain import (
    BASE_LINK,
    MERGED_RECORD,
    check_root,
    fingerprint,
    write_base_link,
)
from mmalign.vlm.load import VLMRef, load_vlm
from mmalign.vlm.lora import save_adapter, save_merged
from mmalign.vlm.recipe import VLMRecipe

STEPS = {"max_steps": 1, "batch_size": 4, "learning_rate": 1e-2, "checkpoint_every": 100}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """runs/sft (LoRA on toy-vlm, `vlm.merge: true`) and runs/dpo (LoRA from runs/sft/adapter),
    both trained by `mmalign train`'s loop; runs/sft2, another SFT adapter on toy-vlm."""
    root = tmp_path_factory.mktemp("runs")
    sft = train(vlm_config(root / "sft", data={"toy": {"n": 8}}, vlm={"merge": True},
                           train=STEPS), VLMRecipe)  # fmt: skip
    dpo = train(vlm_config(root / "dpo", model={"name_or_path": sft.saved["path"]},
                           data={"toy": {"n": 8}}, train=STEPS), VLMRecipe)  # fmt: skip
    vlm = load_vlm("toy:vlm")
    sft2 = save_adapter(_random_lora(vlm.model, 2), vlm.processor, root / "sft2")
    return {"root": root, "sft": Path(sft.saved["path"]), "merged": Path(sft.saved["merged"]),
            "dpo": Path(dpo.saved["path"]), "sft2": sft2}  # fmt: skip


def test_the_merged_folder_records_the_adapters_it_holds(runs):
    record = json.loads((runs["merged"] / MERGED_RECORD).read_text())
    assert record["adapters"] == [
        {"path": str(runs["sft"].resolve()), "fingerprint": fingerprint(runs["sft"])}
    ]
    assert Path(record["base"]).name == "toy-vlm"


def test_an_adapter_on_the_merged_start_is_not_given_its_start_again(runs):
    alone = load_vlm(runs["dpo"])  # toy-vlm + SFT (merged) + DPO
    assert alone.adapters == (str(runs["sft"].resolve()), str(runs["dpo"]))
    on_merged = load_vlm(runs["merged"], adapter=runs["dpo"], adapter_key="--adapter")
    assert on_merged.adapters == (str(runs["dpo"]),)  # was (sft, dpo): SFT twice
    assert _same_weights(on_merged, alone)
    # the key read before loading names the same adapters
    assert VLMRef(runs["merged"], adapter=runs["dpo"]).weights_key == on_merged.weights_key


def test_a_moved_merged_folder_still_holds_its_adapters(runs, tmp_path):
    moved = tmp_path / "merged"
    shutil.copytree(runs["merged"], moved)
    assert load_vlm(moved, adapter=runs["dpo"]).adapters == (str(runs["dpo"]),)


def test_a_merged_folder_holding_another_adapter_is_refused(runs, tmp_path):
    vlm = load_vlm("toy:vlm")
    model = _random_lora(vlm.model, 2)
    other = save_merged(model, vlm.processor, tmp_path, vlm.source, [runs["sft2"]])
    with pytest.raises(InputError, match=r"sft2/adapter \(merged in\), which it was not trained"):
        load_vlm(other, adapter=runs["dpo"], adapter_key="--adapter")


def test_a_merged_folder_without_its_record_is_refused_not_stacked(runs, tmp_path):
    """Written before the record (or by hand): its held adapters are unknown, the adapter's
    root (toy-vlm) is clearly another folder, and its SFT start would be stacked on it."""
    bare = tmp_path / "merged"
    shutil.copytree(runs["merged"], bare)
    (bare / MERGED_RECORD).unlink()
    with pytest.raises(InputError) as err:
        load_vlm(bare, adapter=runs["dpo"], adapter_key="--adapter")
    message = str(err.value)
    assert f"model is {bare}" in message and str(runs["sft"].resolve()) in message
    assert f"give {runs['dpo']} alone as the model" in message


# ------------------------------------------------------------------ adapters by their weights


def test_a_copy_of_the_start_adapter_as_model_is_that_adapter(runs, tmp_path):
    copy = tmp_path / "sft-copy"
    shutil.copytree(runs["sft"], copy)
    loaded = load_vlm(copy, adapter=runs["dpo"], adapter_key="--adapter")  # was refused
    assert loaded.adapters == (str(copy), str(runs["dpo"]))
    assert _same_weights(loaded, load_vlm(runs["dpo"]))
    with pytest.raises(InputError, match="which it was not trained on"):
        load_vlm(runs["sft2"], adapter=runs["dpo"], adapter_key="--adapter")


def test_the_link_holds_the_start_adapters_fingerprint(runs):
    link = json.loads((runs["dpo"] / BASE_LINK).read_text())
    assert link == {"relative": "../../sft/adapter", "fingerprint": fingerprint(runs["sft"])}


def test_a_link_to_another_adapter_falls_back_to_the_absolute_path(runs, tmp_path):
    """The DPO run copied next to another SFT run: its link leads there, and the SFT run it
    was trained from (the absolute path) is used, not the other one."""
    shutil.copytree(runs["root"] / "dpo", tmp_path / "dpo")
    shutil.copytree(runs["root"] / "sft2", tmp_path / "sft")  # another SFT under the name
    dpo = tmp_path / "dpo" / "adapter"
    loaded = load_vlm(dpo)
    assert loaded.adapters == (str(runs["sft"].resolve()), str(dpo))  # was tmp/sft/adapter
    assert _same_weights(loaded, load_vlm(runs["dpo"]))


def test_a_link_whose_start_is_nowhere_is_refused_naming_both(runs, tmp_path):
    vlm = load_vlm("toy:vlm")
    sft = save_adapter(_random_lora(vlm.model, 3), vlm.processor, tmp_path / "sft")
    dpo = _adapter_on(sft, tmp_path / "dpo", 4)
    write_base_link(dpo, sft)
    other = tmp_path / "other" / "sft" / "adapter"
    other.parent.mkdir(parents=True)
    shutil.copytree(runs["sft2"], other)
    moved = tmp_path / "other" / "dpo"
    shutil.copytree(tmp_path / "dpo", moved)
    shutil.rmtree(tmp_path / "sft")  # the absolute path is gone too
    config = json.loads((moved / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(runs["sft2"])  # and names yet another adapter
    (moved / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError) as err:
        load_vlm(moved / "adapter")
    assert str(other.resolve()) in str(err.value) and str(runs["sft2"]) in str(err.value)


def test_stacked_starts_on_another_root_are_refused_where_the_root_loads(tmp_path):
    """Start adapters stacked on a MODEL that is clearly not the adapter's root: refused where
    the root can be loaded (the adapter alone gives the same weights), else warned about,
    naming them."""
    from mmalign.toy.paths import model_path

    root, model = str(model_path("vlm")), str(tmp_path / "model")
    with pytest.raises(InputError, match="with the adapter\\(s\\) SFT merged in, but model is"):
        check_root(root, model, "DPO", "--adapter", "model", starts=["SFT"])
    gone = str(tmp_path / "gone")  # the root is not here: MODEL is the only base there is
    with pytest.warns(UserWarning, match="with its start adapter\\(s\\) SFT merged in below it"):
        check_root(gone, model, "DPO", "--adapter", "model", starts=["SFT"])
    with warnings.catch_warnings():  # the base a merged MODEL was merged from is the root
        warnings.simplefilter("error")
        check_root(root, model, "DPO", "--adapter", "model", starts=["SFT"], merged_from=root)
