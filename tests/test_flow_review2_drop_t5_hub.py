"""`diffusion.drop_t5` on a FLUX hub id is refused, as on a FLUX folder.

The check read the pipeline class with `pipeline_class`, which reads local folders only: a
hub FLUX id passed `text_encoder_3=None` to `FluxPipeline.from_pretrained`, which ignored it
with a warning, and training went on with T5 although the recipe asked to drop it. The hub is
stood in for by an offline cache holding a tiny FLUX pipeline under the id `tiny/flux`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from flow_helpers import save_tiny_flow

LOAD = """
from mmalign.diffusion.flow_load import load_flow_pipeline
try:
    model = load_flow_pipeline("tiny/flux", drop_t5={drop})
except ValueError as err:
    print("REFUSED", err)
else:
    print("LOADED", model.family, "t5" if model.has_t5 else "no-t5")
"""


def _offline_hub(root: Path) -> dict[str, str]:
    repo = root / "hub" / "models--tiny--flux"
    shutil.copytree(save_tiny_flow(root, "flux"), repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return {**os.environ, "HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "1"}


def _run(env: dict[str, str], drop: bool) -> str:
    out = subprocess.run([sys.executable, "-c", LOAD.format(drop=drop)], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    return out.stdout + out.stderr


def test_drop_t5_on_a_flux_hub_id_is_refused(tmp_path):
    env = _offline_hub(tmp_path)
    assert "LOADED flux t5" in _run(env, drop=False)  # the stand-in hub id loads
    out = _run(env, drop=True)
    assert "REFUSED diffusion.drop_t5: FLUX needs its T5 encoder" in out, out
    assert "LOADED" not in out
