"""`--user` takes ids or a user set name (`mmalign eval winrate --user heldout`): a mistyped set
name is told the set, and an id typed in the wrong case is told the id, not a neighbour's."""

from __future__ import annotations

import pytest

from mmalign.config import InputError
from mmalign.diffusion.ppd_users import user_embeddings, user_set
from mmalign.toy.rewards import HELDOUT_USERS


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("heldot", "heldout"), ("hedout", "heldout"), ("trian", "train"), ("H03", "h03")],
)
def test_an_unknown_user_gets_the_right_suggestion(typed, meant, tmp_path):
    with pytest.raises(InputError, match=f"did you mean '{meant}'"):
        user_embeddings(tmp_path, user_set(typed))


def test_a_set_name_with_spaces_is_the_set():
    assert user_set(" heldout ") == list(HELDOUT_USERS)
