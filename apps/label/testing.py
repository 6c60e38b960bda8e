"""Helpers shared by the tests and the load benchmark: a synthetic pair dataset and a
server in a subprocess on a free port, always killed on exit."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 38, 38), "blue": (37, 99, 235), "green": (22, 163, 74),
          "yellow": (234, 179, 8), "purple": (147, 51, 234)}  # fmt: skip
SHAPES = ("circle", "square", "triangle")


def _shape(color: str, shape: str, background: str, size: int, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (size, size), COLORS[background])
    draw = ImageDraw.Draw(image)
    r = int(size * rng.uniform(0.18, 0.32))
    cx, cy = (int(size * rng.uniform(0.35, 0.65)) for _ in range(2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        draw.rectangle(box, fill=COLORS[color])
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLORS[color])
    return image


def make_pairs_dataset(out: str | Path, n: int, *, size: int = 96, seed: int = 0) -> Path:
    """A PreferencePair dataset of `n` shape pairs: chosen matches its prompt, rejected
    has the wrong colour (drawn with PIL: fast, no model needed)."""
    from mmalign.data.schema import write_pairs

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        color, background = rng.sample(sorted(COLORS), 2)
        shape = rng.choice(SHAPES)
        wrong = rng.choice([c for c in COLORS if c not in (color, background)])
        rows.append({
            "prompt": f"a {color} {shape} on a {background} background",
            "chosen": _shape(color, shape, background, size, rng),
            "rejected": _shape(wrong, shape, background, size, rng),
        })  # fmt: skip
    write_pairs(rows, out, "image")
    return Path(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`mmalign label ...` in a subprocess; `url` once it answers."""

    def __init__(self, args: Sequence[str], *, log: Path, port: int | None = None) -> None:
        self.args, self.log, self.fixed_port = list(args), log, port is not None
        self._launch(port or free_port())

    def _launch(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        cmd = [sys.executable, "-m", "mmalign.cli", "label", *self.args, "--port", str(port)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)  # fmt: skip

    def wait(self, timeout: float = 120) -> Server:
        deadline = time.monotonic() + timeout
        relaunches = 3
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                text = self.log.read_text(errors="replace")
                # the free port was taken before the server bound it (another process's
                # outgoing connection got it): start again on another one
                if "address already in use" in text[self._log_start :] and relaunches > 0:
                    if not self.fixed_port:
                        relaunches -= 1
                        self._launch(free_port())
                        continue
                raise RuntimeError(f"server exited ({code}):\n{text}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.25)
        self.kill()
        raise TimeoutError(f"server did not start in {timeout} s:\n{self.log.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # its own session: the server and nothing else
            self.proc.wait(timeout=30)


@contextmanager
def cheap_password_hashes(n: int = 2**14) -> Iterator[None]:
    """New password hashes at scrypt N=`n` (the cost before 2^17: 8x less CPU) while inside,
    for tests and benchmarks that make many users. The hashes carry their parameters, so a
    server started meanwhile checks them, and pads unknown names, at that cost."""
    from . import users

    old = users.SCRYPT_N
    users.SCRYPT_N = n
    try:
        yield
    finally:
        users.SCRYPT_N = old


@contextmanager
def serve(args: Sequence[str], *, log: Path, timeout: float = 120) -> Iterator[Server]:
    server = Server(args, log=log)
    try:
        yield server.wait(timeout)
    finally:
        server.kill()
