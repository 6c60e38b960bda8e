"""The `gpu` extra installs what mmalign uses: bitsandbytes (train.optimizer: adamw8bit).

It listed xformers too, which nothing imports: attention runs through torch's
scaled_dot_product_attention (diffusers' default, with flash and memory-efficient kernels),
and xformers wheels require one exact torch version, so `pip install 'mmalign[gpu]'` could
replace the machine's torch build for a package that was never called.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_extra_lists_only_what_the_code_uses():
    # (tomllib is Python 3.11+; the project supports 3.10)
    line = re.search(r"^gpu = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), flags=re.M)
    specs = re.findall(r'"([^"]+)"', line.group(1))
    names = {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0] for spec in specs}
    assert names == {"bitsandbytes"}
    sources = [p.read_text() for p in (ROOT / "mmalign").rglob("*.py")]
    assert any("bitsandbytes" in text for text in sources)
    assert not any(re.search(r"^\s*(import|from) xformers", t, flags=re.M) for t in sources)
