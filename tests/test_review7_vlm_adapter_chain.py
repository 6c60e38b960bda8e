"""An adapter trained from an SFT adapter, given on top of its base (review 7).

A LoRA run that started from an SFT run's `adapter/` saves an adapter (X) whose
`base_model_name_or_path` is that SFT folder. `load_vlm(X)` followed the chain, but
`load_vlm(BASE, adapter=X)` (`mmalign chat BASE --adapter X`, `eval vlm`, `data diagnose`)
followed it from BASE only: the SFT adapter was left out without a word and the user chatted
with other weights. The adapter's own chain is now followed too (the start adapters BASE lacks
go between them, merged); an adapter trained from another adapter than the one MODEL holds is
refused, a root that is clearly another model than MODEL is warned about.

The start adapter's path was recorded absolute only: moving or copying the run folders
together broke the chain. `VLMRecipe.save` now also records it relative to the adapter
(`adapter_chain.BASE_LINK`), which wins where that folder exists; `base_model_name_or_path`
stays absolute (PEFT's and transformers' loaders read it as a model to load from anywhere)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from mmalign.config import InputError
from mmalign.train.config import LoraConfig
from mmalign.vlm.adapter_chain import BASE_LINK, check_root, fingerprint, write_base_link
from mmalign.vlm.load import VLMRef, load_vlm, merge_adapter
from mmalign.vlm.lora import add_lora, save_adapter


def _random_lora(model, seed: int):
    """LoRA with a random B, so the adapter is not the identity."""
    torch.manual_seed(seed)
    model = add_lora(model, LoraConfig(rank=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def _adapter_on(start: str | Path, out: Path, seed: int) -> Path:
    """An adapter trained on `start` (an adapter folder) merged in, saved as `VLMRecipe.save`
    saved it before review 7: its base the start folder's absolute path, no link."""
    vlm = load_vlm(start)
    assert merge_adapter(vlm)
    model = _random_lora(vlm.model, seed)
    model.peft_config["default"].base_model_name_or_path = str(Path(start).resolve())
    return save_adapter(model, vlm.processor, out)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """runs/sft/adapter on toy-vlm; runs/dpo/adapter trained from it; runs/sft2/adapter,
    another SFT adapter on toy-vlm."""
    runs = tmp_path_factory.mktemp("runs")
    vlm = load_vlm("toy:vlm")
    sft = save_adapter(_random_lora(vlm.model, 0), vlm.processor, runs / "sft")
    vlm = load_vlm("toy:vlm")
    sft2 = save_adapter(_random_lora(vlm.model, 2), vlm.processor, runs / "sft2")
    return {"runs": runs, "sft": sft, "dpo": _adapter_on(sft, runs / "dpo", 1), "sft2": sft2}


def _merged_state(vlm) -> dict[str, torch.Tensor]:
    merge_adapter(vlm)
    return vlm.model.state_dict()


def _same_weights(a, b) -> bool:
    sa, sb = _merged_state(a), _merged_state(b)
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


def test_an_adapter_on_its_base_brings_the_sft_adapter_it_started_from(chain):
    alone = load_vlm(chain["dpo"])  # the chain as the adapter records it
    on_base = load_vlm("toy:vlm", adapter=chain["dpo"])  # `mmalign chat toy:vlm --adapter X`
    sft = str(chain["sft"].resolve())
    assert alone.adapters == on_base.adapters == (sft, str(chain["dpo"]))
    assert on_base.weights_key == alone.weights_key  # one model to every cache keyed by it
    # the key is known before loading, as caches and prism-mcts read it
    assert VLMRef("toy:vlm", adapter=chain["dpo"]).weights_key == alone.weights_key
    base = load_vlm("toy:vlm")
    assert _same_weights(on_base, alone)
    sft_only = load_vlm(chain["sft"])
    assert not _same_weights(base, sft_only)  # the SFT adapter is no identity: it was lost


def test_the_sft_adapter_as_model_is_not_applied_twice(chain):
    on_sft = load_vlm(chain["sft"], adapter=chain["dpo"])
    assert on_sft.adapters == (str(chain["sft"]), str(chain["dpo"]))
    assert _same_weights(on_sft, load_vlm(chain["dpo"]))


def test_a_model_holding_another_adapter_is_refused_naming_both(chain):
    with pytest.raises(InputError) as err:
        load_vlm(chain["sft2"], adapter=chain["dpo"], adapter_key="--adapter")
    message = str(err.value)
    assert f"--adapter {chain['dpo']} was trained from the adapter" in message
    assert str(chain["sft"].resolve()) in message and str(chain["sft2"]) in message


def test_an_adapter_trained_on_a_plain_model_stacks_as_before(chain):
    """No recorded start adapter: MODEL's adapters stay under it, as the user asks."""
    stacked = load_vlm(chain["sft2"], adapter=chain["sft"])
    assert stacked.adapters == (str(chain["sft2"]), str(chain["sft"]))


def test_a_root_that_is_clearly_another_model_is_warned_about(chain, tmp_path):
    other = tmp_path / "elsewhere"
    shutil.copytree(chain["sft"], other)
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "some-other-model")
    (other / "adapter_config.json").write_text(json.dumps(config))
    (tmp_path / "some-other-model").mkdir()
    dpo = tmp_path / "dpo"
    shutil.copytree(chain["dpo"], dpo)
    config = json.loads((dpo / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(other)
    (dpo / "adapter_config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="was trained on .*some-other-model") as caught:
        loaded = load_vlm("toy:vlm", adapter=dpo, adapter_key="--adapter")
    assert "toy-vlm" in str(caught[0].message)  # both named
    assert loaded.adapters == (str(other.resolve()), str(dpo))  # loaded on MODEL, as given


def test_check_root_warns_only_where_the_names_clearly_differ(tmp_path):
    with pytest.warns(UserWarning, match="org/model-a .*org/model-b"):
        check_root("org/model-a", "org/model-b", "X", "--adapter", "model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_root("org/model-a", str(tmp_path), "X", "--adapter", "model")  # a local copy?
        check_root("org/model-a", "org/model-a", "X", "--adapter", "model")
        check_root(str(tmp_path / "a" / ".."), str(tmp_path), "X", "--adapter", "model")
        check_root("", "org/model-a", "X", "--adapter", "model")  # no base recorded


# --------------------------------------------------------- moving the run folders together


def test_run_folders_moved_together_keep_their_chain(chain, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(chain["runs"] / "sft", runs / "sft")
    shutil.copytree(chain["runs"] / "dpo", runs / "dpo")
    write_base_link(runs / "dpo" / "adapter", runs / "sft" / "adapter")
    link = json.loads((runs / "dpo" / "adapter" / BASE_LINK).read_text())
    # (and the start adapter's fingerprint, checked when the link is followed)
    sft_print = fingerprint(runs / "sft" / "adapter")
    assert link == {"relative": "../../sft/adapter", "fingerprint": sft_print}
    moved = tmp_path / "moved"
    runs.rename(moved)  # the folders the link was written in are gone
    loaded = load_vlm(moved / "dpo" / "adapter")
    sft = str((moved / "sft" / "adapter").resolve())
    assert loaded.adapters == (sft, str(moved / "dpo" / "adapter"))
    on_base = load_vlm("toy:vlm", adapter=moved / "dpo" / "adapter")
    assert on_base.adapters == loaded.adapters
    # a copy of the adapter alone (its link points nowhere) uses the absolute path
    alone = tmp_path / "alone"
    shutil.copytree(moved / "dpo" / "adapter", alone)
    assert load_vlm(alone).adapters == (str(chain["sft"].resolve()), str(alone))


def test_a_relative_base_path_is_read_against_the_adapter_folder(chain, tmp_path):
    """A hand-written relative `base_model_name_or_path` that is no folder from the working
    directory is read against the adapter folder (one that is, as PEFT reads it)."""
    shutil.copytree(chain["runs"] / "sft", tmp_path / "sft")
    dpo = tmp_path / "dpo" / "adapter"
    shutil.copytree(chain["dpo"], dpo)
    config = json.loads((dpo / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "../../sft/adapter"
    (dpo / "adapter_config.json").write_text(json.dumps(config))
    assert load_vlm(dpo).adapters == (str((tmp_path / "sft" / "adapter").resolve()), str(dpo))
