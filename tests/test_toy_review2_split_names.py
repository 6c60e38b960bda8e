"""A mistyped prompt split (`prompt_split` of every toy builder, `sample_prompts`) is told every
valid split: "all" is one, but the message left it out ("valid: heldout, train" for "al")."""

from __future__ import annotations

import pytest

from mmalign.toy.world import prompts, sample_prompts


@pytest.mark.parametrize(("typed", "hint"), [("al", "did you mean 'all'"), ("ALL", "'all'")])
def test_a_mistyped_all_is_told_all(typed, hint):
    with pytest.raises(ValueError, match=hint):
        prompts(typed)


def test_an_unknown_split_lists_all_three():
    with pytest.raises(ValueError, match="all") as err:
        sample_prompts(4, "test")  # type: ignore[arg-type]
    assert all(name in str(err.value) for name in ("train", "heldout", "all"))
