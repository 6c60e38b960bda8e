"""A prompt longer than a scorer's text encoder reads is counted and warned about.

The reference models cut prompts silently: CLIP's tokenizers at 77 tokens (PickScore's
`max_length=77`, open_clip's context length for HPSv2 and CLIP score), ImageReward's BERT at 35.
The scorers did the same without a word, so a long prompt (Pick-a-Pic and PartiPrompts hold
many over 35 BERT tokens) was scored on its beginning only, and a win rate or accuracy on such
prompts said nothing about it. Now `score` warns with how many distinct prompts were cut; the
scores stay the reference's.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from mmalign.rewards import get_scorer, tiny

SHORT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("truncation")
    model, processor = tiny.save_pickscore(tmp / "pick")
    hps, hps_config = tiny.save_hpsv2(tmp / "hps")
    clip, clip_config = tiny.save_openclip(tmp / "clip")
    folder, med, bert = tiny.save_imagereward(tmp / "ir")
    mlp = tiny.save_aesthetic(tmp / "aes")
    return {
        "pickscore": (get_scorer("pickscore", path=model, processor=processor), 77),
        "hpsv2:v2.1": (get_scorer("hpsv2", path=hps, arch=hps_config), 77),
        "clip": (get_scorer(f"clip:{clip_config}", path=clip), 77),
        "imagereward": (
            get_scorer("imagereward", path=folder, med_config=med, tokenizer=bert),
            35,
        ),
        "aesthetic": (get_scorer("aesthetic", path=mlp, clip=f"{clip_config}:{clip}"), None),
    }


def _prompt(words: int) -> str:
    return " ".join(["a"] * words)  # "a" is one token in every tokenizer here


@pytest.mark.parametrize("name", ["pickscore", "hpsv2:v2.1", "clip", "imagereward"])
def test_a_prompt_one_token_too_long_is_warned_about(scorers, name):
    scorer, limit = scorers[name]
    assert scorer.max_tokens == limit
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fits = _prompt(limit - 2)  # the start and end tokens take two places
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        at_limit = scorer.score(images, [fits, SHORT, fits])
    too_long = _prompt(limit - 1)
    prompts = [too_long, SHORT, too_long]
    message = rf"{name.split(':')[0]}.*1 of 2 distinct prompts are longer than the {limit} tokens"
    with pytest.warns(UserWarning, match=message):
        cut = scorer.score(images, prompts)
    # the reference's scores: the long prompt scored as its first `limit` tokens
    assert cut.shape == at_limit.shape and bool(cut.isfinite().all())


def test_hpsv2_and_pickscore_score_a_long_prompt_as_its_beginning(scorers):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for name in ("pickscore", "hpsv2:v2.1"):
        scorer, limit = scorers[name]
        beginning = " ".join(f"a {w}" for w in ["red"] * 40).split()[: limit - 2]
        long = " ".join(beginning + ["blue"] * 10)
        with pytest.warns(UserWarning, match="1 of 1 distinct"):
            got = scorer.score(images, [long, long])
        torch.testing.assert_close(got, scorer.score(images, [" ".join(beginning)] * 2))


def test_the_aesthetic_predictor_reads_no_prompt_and_warns_of_none(scorers):
    scorer, _ = scorers["aesthetic"]
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scorer.score(images, [_prompt(200), SHORT])
