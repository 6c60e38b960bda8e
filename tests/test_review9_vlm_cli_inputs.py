"""VLM commands' input errors (review 9, newcomer walkthrough): said before any model loads,
naming the option the user gave.

- `mmalign chat RUN/checkpoints/checkpoint-20` (or a folder of runs) ended in transformers'
  traceback ("Unrecognized processing class"); `eval vlm` said it cleanly. Both now refuse a
  folder with no config.json before anything loads, naming a training checkpoint as such.
- `data diagnose` said `model:` for its `--model`, `data prism-mcts` `model:` for `--judge`;
  `chat` spoke of "the row has 2 images" for two `--image` flags and one `<image>`.
- `eval vlm --out FOLDER` ran the whole evaluation and then failed (`Is a directory`);
  `data diagnose --out FILE` failed after the model pass (`File exists`).
- A rerun of `data diagnose --out D` without `--filter` left the earlier `D/filtered/`.
- `eval vlm --help` did not show `--n`'s default."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmalign.cli import main
from mmalign.config import InputError


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the input was checked")


def _checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "run" / "checkpoints" / "checkpoint-20"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{}\n")
    (folder / "trainable.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize("command", [["chat"], ["eval", "vlm"]])
def test_a_training_checkpoint_is_refused_cleanly(tmp_path, capsys, command):
    folder = _checkpoint(tmp_path)
    extra = ["--prompt", "hi"] if command == ["chat"] else ["--task", "safety", "--n", "2"]
    assert main([*command, str(folder), *extra, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Unrecognized" not in err
    assert f"model: {folder} is not an image-text-to-text model" in err
    assert "training checkpoint" in err and "output_dir" in err


def test_chat_on_a_folder_of_runs_is_refused_cleanly(tmp_path, capsys):
    _checkpoint(tmp_path)
    assert main(["chat", str(tmp_path), "--prompt", "hi", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "holds no config.json" in err


def test_chat_names_the_image_flags_and_placeholders(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mmalign.vlm.load.load_vlm", _no_model)
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    argv = ["chat", "toy:vlm", "--image", str(image), "--image", str(image),
            "--prompt", "<image> what is it?"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--prompt has 1 <image> placeholder but 2 --image flags were given" in err
    assert "the row has" not in err


def test_diagnose_names_its_model_option(tmp_path, capsys):
    argv = ["data", "diagnose", "toy:safety", "--model", str(tmp_path / "none"),
            "--out", str(tmp_path / "d"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert f"--model: {tmp_path / 'none'} does not exist" in capsys.readouterr().err


def test_a_vlm_judge_is_named_as_judge(tmp_path):
    from mmalign.vlm.prism.judges import make_judge

    with pytest.raises(InputError, match=r"^--judge: .*none does not exist"):
        make_judge(f"vlm:{tmp_path / 'none'}")


def test_eval_out_a_folder_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mmalign.vlm.cli.load_from_args", _no_model)
    argv = ["eval", "vlm", "toy:vlm", "--task", "safety", "--n", "2", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert f"--out {tmp_path} is an existing folder" in capsys.readouterr().err


def test_diagnose_out_a_file_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mmalign.vlm.cli.load_from_args", _no_model)
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    argv = ["data", "diagnose", "toy:safety", "--model", "toy:vlm", "--out", str(afile),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert f"--out {afile} is an existing file" in capsys.readouterr().err


def test_a_rerun_without_filter_removes_the_earlier_filtered(tmp_path, capsys):
    from datasets import Dataset

    rows = [{"prompt": "what colour?", "chosen": "red", "rejected": "blue"},
            {"prompt": "what shape?", "chosen": "a circle", "rejected": "a square"}]  # fmt: skip
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "diag"
    argv = ["data", "diagnose", str(tmp_path / "data"), "--model", "toy:vlm", "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--filter", "ln_ches:keep_lowest=0.5"]) == 0
    assert (out / "filtered").is_dir()
    capsys.readouterr()
    assert main(argv) == 0
    assert not (out / "filtered").exists()
    assert f"removed {out / 'filtered'}" in capsys.readouterr().err


def test_eval_vlm_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "vlm", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default 2000" in text and "default 4321" in text
