"""The toy world's prompt grammar.

`a [small|large] <colour> <shape> [on the left|on the right|at the top|at the bottom]
on a <colour> background` (with "an" before a vowel).

Every prompt is a `ToyPrompt`; `.text` and `parse_prompt` convert both ways. A fixed,
hash-chosen subset of (shape, colour, background) combinations is held out, so evaluation
can measure generalisation to combinations a model never saw in training.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass
from typing import Literal

from ..suggest import did_you_mean

# Standard RGB meanings, chosen far apart: the closest pair (orange, yellow) is 115/255 apart,
# so "nearest palette colour" is unambiguous for renders and tolerant for generated images.
# No black: black is reserved for the dark outline of the `outlined` style.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "orange": (255, 140, 0),
    "yellow": (255, 255, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "purple": (128, 0, 128),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: tuple[str, ...] = ("small", "medium", "large")  # "medium" is left out of the text
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")  # "center" likewise
_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
HELDOUT_PERCENT = 17  # share of (shape, colour, background) combinations held out
_SPLIT_SALT = "mmalign-toy-v1"  # changing it would reshuffle the split: never do

Split = Literal["train", "heldout", "all"]
SPLITS: tuple[str, ...] = ("train", "heldout", "all")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class ToyPrompt:
    """One point of the toy world; `.text` is the caption a model is conditioned on."""

    shape: str
    color: str
    background: str
    size: str = "medium"
    position: str = "center"

    def __post_init__(self) -> None:
        for field, value, vocab in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, COLORS),
            ("background", self.background, COLORS),
            ("size", self.size, SIZES),
            ("position", self.position, POSITIONS),
        ):
            if value not in vocab:
                raise ValueError(f"unknown {field} '{value}'; {did_you_mean(value, vocab)}")
        if self.color == self.background:
            raise ValueError(f"shape and background are both {self.color}: nothing to see")

    @property
    def text(self) -> str:
        noun = (
            f"{self.color} {self.shape}"
            if self.size == "medium"
            else (f"{self.size} {self.color} {self.shape}")
        )
        where = f" {_POSITION_PHRASES[self.position]}" if self.position != "center" else ""
        bg = self.background
        return f"{_article(noun)} {noun}{where} on {_article(bg)} {bg} background"

    @property
    def combination(self) -> tuple[str, str, str]:
        """(shape, colour, background): the unit the train/held-out split is made of."""
        return (self.shape, self.color, self.background)

    def __str__(self) -> str:
        return self.text


def parse_prompt(text: str) -> ToyPrompt:
    """Parse a caption written by `ToyPrompt.text` (case and extra spaces are forgiven)."""
    words = text.lower().replace(",", " ").split()
    original = " ".join(words)
    pos = 0

    def fail(what: str, vocab: tuple[str, ...] | None = None) -> ValueError:
        got = " ".join(words[pos:]) or "(end of text)"
        hint = f"; {did_you_mean(words[pos], vocab)}" if vocab and pos < len(words) else ""
        return ValueError(f"cannot parse toy prompt '{original}': expected {what} at '{got}'{hint}")

    def take(expected: tuple[str, ...]) -> str | None:
        nonlocal pos
        if pos < len(words) and words[pos] in expected:
            pos += 1
            return words[pos - 1]
        return None

    if take(("a", "an")) is None:
        raise fail("'a' or 'an'")
    size = take(("small", "large")) or "medium"
    color = take(COLORS)
    if color is None:
        raise fail("a colour", COLORS)
    shape = take(SHAPES)
    if shape is None:
        raise fail("a shape", SHAPES)
    position = "center"
    for name, phrase in _POSITION_PHRASES.items():
        n = len(phrase.split())
        if words[pos : pos + n] == phrase.split():
            position, pos = name, pos + n
            break
    if take(("on",)) is None or take(("a", "an")) is None:
        raise fail("a position or 'on a <colour> background'")
    background = take(COLORS)
    if background is None:
        raise fail("a background colour", COLORS)
    if take(("background",)) is None or pos != len(words):
        raise fail("'background' as the last word")
    return ToyPrompt(shape, color, background, size, position)


def as_prompt(prompt: ToyPrompt | str) -> ToyPrompt:
    return prompt if isinstance(prompt, ToyPrompt) else parse_prompt(prompt)


def is_heldout(prompt: ToyPrompt) -> bool:
    """Whether the prompt's (shape, colour, background) is held out; fixed by a salted hash."""
    key = ":".join((_SPLIT_SALT, *prompt.combination)).encode()
    return int(hashlib.sha256(key).hexdigest(), 16) % 100 < HELDOUT_PERCENT


def all_prompts() -> list[ToyPrompt]:
    """Every prompt of the world, in a fixed order."""
    return [
        ToyPrompt(shape, color, bg, size, position)
        for shape, color, bg, size, position in itertools.product(
            SHAPES, COLORS, COLORS, SIZES, POSITIONS
        )
        if color != bg
    ]


def prompts(split: Split = "train") -> list[ToyPrompt]:
    """The prompts of one split; `heldout` ones must never be used for training."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; {did_you_mean(split, SPLITS)}")
    everything = all_prompts()
    if split == "all":
        return everything
    return [p for p in everything if is_heldout(p) == (split == "heldout")]


def sample_prompts(n: int, split: Split = "train", seed: int = 0) -> list[ToyPrompt]:
    """`n` prompts drawn uniformly with replacement from a split; the same seed, the same list."""
    return random.Random(seed).choices(prompts(split), k=n)
