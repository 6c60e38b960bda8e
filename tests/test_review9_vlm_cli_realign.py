"""`data realign --out` over an earlier build (review 9, newcomer walkthrough): a rerun wrote
its rows over the earlier ones without a word (39 rows became 24), where `mmalign toy data`
refuses without `--overwrite`. `realign.check_realign_out` follows that convention (before the
model loads), `replace_realign` deletes the earlier build, saying so, once the new rows are
built."""

from __future__ import annotations

import pytest
from datasets import Dataset

from mmalign.config import InputError
from mmalign.vlm.realign import SUMMARY, check_realign_out, earlier_realign, replace_realign


@pytest.fixture
def built(tmp_path):
    out = tmp_path / "realign"
    Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}]).save_to_disk(str(out))
    (out / SUMMARY).write_text("{}\n")
    (out / "notes.txt").write_text("mine\n")
    return out


def test_an_earlier_build_is_refused_without_overwrite(built):
    with pytest.raises(InputError, match=r"--out .* already holds an earlier build .*--overwrite"):
        check_realign_out(str(built), overwrite=False)


def test_a_file_or_a_new_folder(tmp_path):
    (tmp_path / "afile").write_text("x\n")
    with pytest.raises(InputError, match=r"--out .*afile is a file"):
        check_realign_out(str(tmp_path / "afile"), overwrite=True)
    assert check_realign_out(str(tmp_path / "new"), overwrite=False) == []


def test_overwrite_replaces_the_build_and_says_what_stays(built, capsys):
    earlier = check_realign_out(str(built), overwrite=True)
    assert SUMMARY in earlier and "state.json" in earlier
    replace_realign(str(built), earlier)
    assert earlier_realign(built) == [] and (built / "notes.txt").is_file()
    err = capsys.readouterr().err
    assert (
        "--overwrite: replacing the earlier build" in err and "left as they are: notes.txt" in err
    )


def test_the_command_refuses_an_earlier_build_before_the_model_loads(built, monkeypatch, capsys):
    from mmalign.cli import main
    from mmalign.vlm import load

    def no_model(*args, **kwargs):
        raise AssertionError("the VLM loaded before --out was checked")

    monkeypatch.setattr(load, "load_vlm", no_model)
    argv = ["data", "realign", "--model", "toy:vlm", "--data", "toy:vqa", "--out", str(built)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds an earlier build" in err and "--overwrite" in err
