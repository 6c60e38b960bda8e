"""`mmalign chat` and `mmalign eval vlm` on toy-vlm, and `mmalign train` with a VLM recipe."""

from __future__ import annotations

import json

import torchvision.transforms.functional as F

from mmalign.cli import main
from mmalign.toy.render import render


def test_chat_answers_about_an_image(tmp_path, capsys):
    image = tmp_path / "red.png"
    F.to_pil_image(render("a red circle on a blue background")).save(image)
    assert main(["chat", "toy:vlm", "--image", str(image), "--prompt", "What color is the shape?",
                 "--max-new-tokens", "4"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == "red"
    assert main(["chat", "toy:vlm", "--image", str(tmp_path / "missing.png"), "--prompt", "x"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_train_then_eval_a_toy_vlm_run(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "train", "configs/toy/vlm_bpo.yaml", f"output_dir={out}", "data.toy.n=24",
        "train.max_steps=2", "train.batch_size=4",
    ])  # fmt: skip
    assert code == 0
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert main(["eval", "vlm", str(out), "--task", "safety", "--n", "16",
                 "--out", str(tmp_path / "r.json")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "refusal_rate:" in printed and "benign_accuracy:" in printed
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["refusal_rate_n"] + results["benign_accuracy_n"] == 16


def test_bad_pair_name_is_a_config_error(tmp_path, capsys):
    code = main([
        "train", "configs/toy/vlm_dpo.yaml", f"output_dir={tmp_path}",
        "objective=[{pair: visaul, loss: dpo}]",
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "objective.0.pair: 'visaul'" in err and "did you mean 'visual'" in err
