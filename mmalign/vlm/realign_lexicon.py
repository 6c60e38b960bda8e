"""Re-Align's masking: the object / attribute / relation words of an answer (colours, objects,
spatial relations, counts, sizes and yes/no existence claims) found as character spans, so the
VLM can re-generate exactly those words (`mmalign.vlm.realign_fill`). The word lists are a
default: `Lexicon` takes any classes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..toy.world import COLORS, POSITIONS, SHAPES, SIZES

DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {
    "color": (
        *COLORS,
        "grey",
        "black",
        "brown",
        "pink",
        "silver",
        "gold",
        "beige",
        "cyan",
        "magenta",
        "golden",
        "dark",
        "light",
        "bright",
    ),
    "object": (
        *SHAPES,
        "background",
        "rectangle",
        "star",
        "oval",
        "diamond",
        "heart",
        "line",
        "dot",
        "shape",
        "person",
        "man",
        "woman",
        "men",
        "women",
        "people",
        "child",
        "children",
        "boy",
        "girl",
        "dog",
        "cat",
        "car",
        "bus",
        "truck",
        "bicycle",
        "bike",
        "motorcycle",
        "train",
        "boat",
        "plane",
        "airplane",
        "tree",
        "flower",
        "grass",
        "table",
        "chair",
        "bench",
        "bed",
        "couch",
        "sofa",
        "cup",
        "bowl",
        "plate",
        "bottle",
        "glass",
        "book",
        "phone",
        "laptop",
        "computer",
        "tv",
        "bird",
        "horse",
        "sheep",
        "cow",
        "elephant",
        "giraffe",
        "zebra",
        "bear",
        "ball",
        "kite",
        "umbrella",
        "bag",
        "hat",
        "shirt",
        "sign",
        "building",
        "house",
        "window",
        "door",
        "road",
        "street",
        "sky",
        "water",
        "food",
        "pizza",
        "cake",
        "sandwich",
        "banana",
        "apple",
        "orange",
        "clock",
        "toilet",
        "sink",
    ),
    "relation": (
        *(p for p in POSITIONS),
        "centre",
        "middle",
        "above",
        "below",
        "under",
        "beneath",
        "behind",
        "beside",
        "near",
        "between",
        "inside",
        "outside",
        "over",
        "across",
        "around",
        "in front of",
        "next to",
        "on top of",
        "on the left",
        "on the right",
        "at the top",
        "at the bottom",
        "in the center",
        "in the middle",
    ),
    "count": (
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "single",
        "several",
        "many",
        "few",
        "both",
        "pair",
        "dozen",
    ),
    "size": (
        *SIZES,
        "big",
        "tiny",
        "huge",
        "little",
        "tall",
        "short",
        "long",
        "wide",
        "narrow",
        "thick",
        "thin",
    ),
    "existence": ("yes", "no"),  # the whole claim of a presence question's answer
}
# A word, for masking and for the bag-of-words embedder alike ("don't" is one word).
WORD = re.compile(r"[A-Za-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    word_class: str


class Lexicon:
    """Word classes whose words (and phrases, and plurals in -s / -es) are masked."""

    def __init__(self, classes: Mapping[str, Iterable[str]] = DEFAULT_CLASSES):
        self.phrases: dict[tuple[str, ...], str] = {}
        for name, words in classes.items():
            for word in words:
                self.phrases[tuple(word.lower().split())] = name
        self.longest = max((len(p) for p in self.phrases), default=1)

    def _lookup(self, words: Sequence[str]) -> str | None:
        key = tuple(words)
        if len(key) == 1 and key[0].isdigit():
            return "count"
        if key in self.phrases:
            return self.phrases[key]
        last = key[-1]
        for stem in (last[:-2] if last.endswith("es") else None, last[:-1]
                     if last.endswith("s") else None):  # fmt: skip
            if stem and (*key[:-1], stem) in self.phrases:
                return self.phrases[(*key[:-1], stem)]
        return None

    def spans(self, text: str) -> list[Span]:
        """Masked spans of `text`, left to right, a phrase preferred over its words."""
        words = [(m.start(), m.end(), m.group().lower()) for m in WORD.finditer(text)]
        out, i = [], 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                name = self._lookup([w for _, _, w in words[i : i + n]])
                if name is not None:
                    out.append(Span(words[i][0], words[i + n - 1][1], name))
                    i += n
                    break
            else:
                i += 1
        return out

    def mask(self, text: str, token: str = "<mask>") -> str:
        for span in reversed(self.spans(text)):
            text = text[: span.start] + token + text[span.end :]
        return text
