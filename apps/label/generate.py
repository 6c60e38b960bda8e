"""Prompt mode (`mmalign label --model`): two images for a typed prompt from a diffusion
model, two random seeds, stored as a new pair."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .images import encode_png, save_image
from .store import Pair, Store, pair_id_for

GENERATE_GAP_S = 2.0  # seconds between the end of a user's generation and their next
# A Generate that finds another user's generation running waits this long for it to end,
# then is refused ("press Generate again"): a wait, not a stall. Its worker thread is held
# meanwhile, so at most GENERATE_WAITERS Generates wait at once (more are refused at once),
# and each user has one Generate running or waiting at a time.
GENERATE_WAIT_S = 10.0
GENERATE_WAITERS = 4


class GenerateGate:
    """Who may generate now: one generation at a time across users, each user's next one
    GENERATE_GAP_S after their last ended, another user's call waiting for the running one
    (GENERATE_WAIT_S, at most GENERATE_WAITERS waiting).

    The app's queue runs Generate one at a time, but Gradio's REST routes (`/run/predict`
    with the event's fn_index) run it beside the queue: without the lock, parallel direct
    calls all passed the gap and waited on the model in Gradio's worker threads. A user's
    second call while their first runs or waits is refused at once, so one user's parallel
    calls cannot fill the waiting places; a user who queues many gets the rest refused until
    the gap has passed, so one user's queue cannot hold up everyone else's Generate."""

    def __init__(self) -> None:
        self.last_end: dict[str, float] = {}  # user -> when their last generation ended
        self.running = threading.Lock()  # held while a generation runs
        self.users: set[str] = set()  # users with a Generate running or waiting
        self.waiting = 0  # calls waiting for `running` (or about to get it)
        self._state = threading.Lock()  # guards the two above

    def run(self, user: str, make: Callable[[], Any]) -> tuple[str, Any]:
        """("ran", what `make()` returned), or why it did not run: "mine" (this user's
        Generate runs or waits already, or their gap has not passed), "full" (the waiting
        places are taken), "waited" (another user's generation outlasted GENERATE_WAIT_S)."""
        with self._state:
            mine = user in self.users
            full = self.waiting >= GENERATE_WAITERS
            if not (mine or full):
                self.users.add(user)
                self.waiting += 1
        if mine or full:
            return ("mine" if mine else "full"), None
        try:
            got = self.running.acquire(timeout=GENERATE_WAIT_S)
            with self._state:
                self.waiting -= 1
            if not got:
                return "waited", None
            try:
                if time.monotonic() - self.last_end.get(user, float("-inf")) < GENERATE_GAP_S:
                    return "mine", None
                try:
                    return "ran", make()
                finally:
                    self.last_end[user] = time.monotonic()
            finally:
                self.running.release()
        finally:
            with self._state:
                self.users.discard(user)


class PairGenerator:
    """Generates pairs with `model` (loaded on first use, on `device` in `dtype`: `mmalign
    label --device/--dtype`; None runs where it loads, the CPU); one generation at a time."""

    def __init__(
        self,
        store: Store,
        image_root: str | Path,
        model: str,
        *,
        steps: int | None = None,
        device: Any = None,
        dtype: str = "float32",
    ) -> None:
        self.store = store
        self.image_root = Path(image_root)
        self.model_name = model
        self.steps = steps  # sampler steps (default: the model card's)
        self.device, self.dtype = device, dtype
        self._model: Any = None
        self._lock = threading.Lock()

    def generate(self, prompt: str) -> Pair:
        """Generate two images for `prompt` with two random seeds and store them as a pair."""
        from mmalign.data.schema import to_pil_image
        from mmalign.diffusion import load_pipeline
        from mmalign.diffusion.sample import generate, sampling_defaults

        with self._lock:  # the model is not thread-safe
            if self._model is None:
                name = "toy:sd" if self.model_name == "toy-sd" else self.model_name
                self._model = load_pipeline(name, dtype=self.dtype, device=self.device)
            steps, guidance = sampling_defaults(self._model, self.steps, None)
            seed = secrets.randbelow(2**31 - 2)
            images = generate(self._model.pipe, [prompt, prompt], seed=seed, steps=steps,
                              guidance=guidance, batch_size=2, desc="label")  # fmt: skip
        data = [encode_png(to_pil_image(img)) for img in images]
        refs = [save_image(self.image_root, d, f"generated image {i}") for i, d in enumerate(data)]
        pair = Pair(pair_id_for(prompt, *data), prompt, refs[0], refs[1],
                    f"model:{self.model_name}:seeds {seed},{seed + 1}")  # fmt: skip
        self.store.add_pairs([pair])
        return pair
