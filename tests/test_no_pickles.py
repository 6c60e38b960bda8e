"""Never load an untrusted pickle: every `torch.load` in the package, the labeling app and the
benchmarks passes `weights_only=True`, and nothing calls `pickle.load(s)` or `numpy.load` with
`allow_pickle=True`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("mmalign", "apps", "benchmarks")


def _calls() -> list[tuple[Path, ast.Call]]:
    out = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    out.append((path, node))
    return out


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_every_load_refuses_pickled_code() -> None:
    bad = []
    for path, call in _calls():
        owner = call.func.value  # type: ignore[attr-defined]
        name = f"{getattr(owner, 'id', '?')}.{call.func.attr}"  # type: ignore[attr-defined]
        where = f"{path.relative_to(ROOT)}:{call.lineno} {name}"
        if name == "torch.load" and _keyword(call, "weights_only") is not True:
            bad.append(where)
        if name in ("pickle.load", "pickle.loads"):
            bad.append(where)
        if name in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") is True:
            bad.append(where)
    assert not bad, bad


def test_the_check_sees_a_bare_torch_load() -> None:
    call = ast.parse("torch.load(path)").body[0].value  # type: ignore[attr-defined]
    assert isinstance(call, ast.Call) and _keyword(call, "weights_only") is None
    ok = ast.parse("torch.load(p, weights_only=True)").body[0].value  # type: ignore[attr-defined]
    assert _keyword(ok, "weights_only") is True
