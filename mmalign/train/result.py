"""What `train` returns: the run's folder, its last step, the final metrics, what was saved,
and what this invocation did (a resume runs only the steps left)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    final_metrics: dict[str, float]
    saved: dict[str, Any]
    seconds: float
    start_step: int = 0  # the step this invocation resumed at (0: it started the run)

    @property
    def ran(self) -> int:
        """The steps this invocation ran (`steps` is the run's last step, counted from 0)."""
        return self.steps - self.start_step

    def line(self) -> str:
        """What this invocation did, not the run's total (a resume at its last step ran none):
        "trained 15 steps (resumed at step 5, now at step 20) in 3 s"."""
        from ..words import plural

        resumed = (f" (resumed at step {self.start_step}, now at step {self.steps})"
                   if self.start_step else "")  # fmt: skip
        return f"trained {plural(self.ran, 'step')}{resumed} in {self.seconds:.0f} s"
