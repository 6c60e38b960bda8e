"""Messages name the flag the user typed: `eval accuracy --model` (not `--tuned`, the winrate
flag the shared loader defaulted to) and `--base`, and `eval winrate --prompts pickapic:...`
names `--pickapic-root` where the prompts cannot be found."""

from __future__ import annotations

from mmalign.cli import main


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err[err.index("mmalign: ") :]


def test_eval_accuracy_model_without_base_names_model_and_base(capsys, tmp_path) -> None:
    message = _error(
        capsys, ["eval", "accuracy", "--model", str(tmp_path / "nope"), "--data", "toy:pairs:1"]
    )
    assert "--base" in message and "--model" in message, message
    assert "--tuned" not in message, message
    assert "no such folder" in message, message


def test_winrate_prompts_name_the_pickapic_root_flag(capsys, monkeypatch, tmp_path) -> None:
    """Offline with no local Pick-a-Pic, `eval winrate --prompts pickapic:...` names the option
    it offers for a local copy (`--pickapic-root`), not only the environment variable."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("MMALIGN_PICKAPIC", raising=False)
    (tmp_path / "tuned").mkdir()
    argv = ["eval", "winrate", "--tuned", str(tmp_path / "tuned"), "--base", "toy:sd",
            "--prompts", "pickapic:test_unique", "--out", str(tmp_path / "out")]  # fmt: skip
    message = _error(capsys, argv)
    assert message.startswith("mmalign: error: --pickapic-root"), message
    assert "set --pickapic-root" in message, message


def test_sample_of_a_run_names_its_recorded_base_not_a_flag_it_lacks(capsys, monkeypatch, tmp_path):
    """`mmalign sample RUN` has no --base: a base it cannot load is named as the run's record."""
    import json

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    run = tmp_path / "run"
    run.mkdir()
    final = {"kind": "lora", "path": "final/pytorch_lora_weights.safetensors"}
    record = {"base": "org/no-such-base", "final": final, "kind": "diffusion"}
    (run / "mmalign_run.json").write_text(json.dumps(record))
    argv = ["sample", str(run), "--prompt", "a cat", "--out", str(tmp_path / "grid.png")]
    message = _error(capsys, argv)
    assert f"the base recorded in {run}/mmalign_run.json: org/no-such-base" in message, message
    assert "--base" not in message and "--tuned" not in message, message


def test_data_diagnose_takes_pickapic_root(capsys, tmp_path) -> None:
    """`data diagnose pickapic:<split>` reads the folder --pickapic-root names (the message of
    a missing copy advises that flag, so the command must take it), and refuses it elsewhere."""
    root = tmp_path / "pickapic"
    root.mkdir()
    argv = ["data", "diagnose", "pickapic:train", "--model", "toy:sd", "--out",
            str(tmp_path / "d"), "--pickapic-root", str(root)]  # fmt: skip
    message = _error(capsys, argv)
    assert "no Pick-a-Pic parquet shards or saved dataset in" in message, message
    assert str(root) in message, message
    argv = ["data", "diagnose", "toy:safety", "--model", "toy:vlm", "--out",
            str(tmp_path / "d"), "--pickapic-root", str(root)]  # fmt: skip
    message = _error(capsys, argv)
    assert "--pickapic-root is for DATA pickapic:<split>" in message, message


def test_eval_accuracy_names_a_model_name_without_calling_it_a_folder(capsys) -> None:
    message = _error(capsys, ["eval", "accuracy", "--model", "toy:sd", "--data", "toy:pairs:1"])
    assert "(toy:sd is not one)" in message and "no such folder" not in message, message


def test_a_missing_prompts_file_is_said_to_be_missing() -> None:
    import pytest

    from mmalign.data.prompts import resolve_prompts

    with pytest.raises(FileNotFoundError, match=r"runs/x/val_prompts.txt does not exist \("):
        resolve_prompts("runs/x/val_prompts.txt")
    with pytest.raises(FileNotFoundError, match=r"toyheldout is none of toy:heldout"):
        resolve_prompts("toyheldout")
