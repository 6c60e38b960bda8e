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
