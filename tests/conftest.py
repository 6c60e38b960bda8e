"""Shared test helpers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from mmalign.losses import PairScores


def _bind_library_log_handlers() -> None:
    """huggingface_hub, transformers and diffusers give their loggers a StreamHandler bound to
    sys.stderr when first configured. Configured inside a test that captures output (capsys),
    the handler keeps that test's capture stream, closed after the test, and every later
    warning prints "--- Logging error ---" with a traceback into some other test's stderr. So
    they are configured here, once, before any test runs."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    for module in (hub_logging, transformers_logging, diffusers_logging):
        module.get_logger()


_bind_library_log_handlers()


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that sets torch's thread count (a benchmark run in-process with --threads 1)
    gives it back, so later tests run as they would alone."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def make_scores(batch: int = 8, seed: int = 0, *, lengths: bool = False) -> PairScores:
    """Random scores that look like log-likelihoods (negative)."""
    g = torch.Generator().manual_seed(seed)
    neg = lambda: -torch.rand(batch, generator=g, dtype=torch.float64) * 3 - 0.05  # noqa: E731
    s = PairScores(chosen=neg(), rejected=neg(), ref_chosen=neg(), ref_rejected=neg())
    if lengths:
        s.chosen_len = torch.randint(1, 20, (batch,), generator=g).double()
        s.rejected_len = torch.randint(1, 20, (batch,), generator=g).double()
    return s


@pytest.fixture
def scores() -> PairScores:
    return make_scores()


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
    """Built toy data and pre-encoding caches go to a per-session temporary folder."""
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path_factory.getbasetemp() / "mmalign-cache"))


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server for the session (mmalign_label.pgtemp: the pgserver
    wheel's binaries, else the system's), started on first use in about 1.5 s. Never skipped:
    without PostgreSQL binaries the tests that need it fail with the reason."""
    from mmalign_label.pgtemp import TempPostgres

    with TempPostgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def label_db(request, tmp_path) -> str:
    """A fresh labeling database on each backend: a SQLite file, or a new database on the
    session's PostgreSQL server (its URL); test ids end in [sqlite] / [postgresql]."""
    if request.param == "sqlite":
        return str(tmp_path / "labels.sqlite")
    return request.getfixturevalue("postgres").database(f"t{uuid.uuid4().hex[:12]}")


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a CUDA device: without one they are skipped, with the reason."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def _cheap_password_hashes(request):
    """The labeling app's tests make their users' hashes at the old scrypt cost (N = 2^14),
    so many users and logins stay fast; test_label_login.py checks the real cost itself."""
    name = request.module.__name__.rpartition(".")[2]
    if not name.startswith("test_label") or name == "test_label_login":
        yield
        return
    from mmalign_label.testing import cheap_password_hashes

    with cheap_password_hashes():
        yield


@pytest.fixture
def pretend_cuda(monkeypatch):
    """torch says it has a GPU; nothing may be moved there (the device tests' loaders record
    where they were asked to load, tests/device_helpers.py)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for a test (022 unless the test sets another) and restore it."""
    old = os.umask(0o022)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(old)
