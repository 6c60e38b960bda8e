"""What README.md and docs/*.md tell a new user, checked against the code (results.md, the
dated record of measurements, is left out).

Each check reads the docs and the code and fails on drift: a command, option, `make` target,
file, loss, config key or recipe the docs name that does not exist, or one the code has that
the docs' reference tables leave out."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from mmalign.losses import LOSSES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS = [doc for doc in DOCS if doc.name != "results.md"]


def _code_spans(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every fenced code line (continuations joined) and inline code span."""
    spans: list[tuple[int, str]] = []
    fenced, pending = False, None
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            pending = (pending[0], pending[1][:-1] + " " + line.strip()) if pending else (i, line)
            if not pending[1].rstrip().endswith("\\"):
                spans.append(pending)
                pending = None
        else:
            spans += [(i, m.group(1)) for m in re.finditer(r"`([^`]*)`", line)]
    return spans


def _commands() -> dict[tuple[str, ...], set[str]]:
    """Every `mmalign` (sub)command path and the option strings it accepts."""
    from mmalign.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> dict:
        found = {path: {s for a in parser._actions for s in a.option_strings}}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found.update(walk(child, (*path, name)))
        return found

    return walk(build_parser(), ())


def test_every_documented_command_and_option_exists() -> None:
    commands = _commands()
    wrong = []
    for doc in DOCS:
        for line, text in _code_spans(doc):
            command = r"(?:^|[$;&|(] *)mmalign ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)*)(.*)"
            for m in re.finditer(command, text.strip()):
                words = m.group(1).split()
                n = next((k for k in range(len(words), 0, -1) if tuple(words[:k]) in commands), 0)
                if n == 0:
                    wrong.append(f"{doc.name}:{line}: no command `mmalign {m.group(1)}`")
                    continue
                rest = " ".join(words[n:]) + m.group(2)
                rest = re.split(r"\bmmalign\b", rest.split("#")[0])[0]  # this command only
                for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
                    if option not in commands[tuple(words[:n])] | {"--debug"}:
                        wrong.append(f"{doc.name}:{line}: `mmalign {' '.join(words[:n])}` has "
                                     f"no {option}")  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_every_documented_make_target_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    named = {
        (doc.name, target)
        for doc in [*DOCS, ROOT / "benchmarks" / "README.md"]
        for _, text in _code_spans(doc)
        for target in re.findall(r"(?:^|[;&|] *)make ([a-z][\w-]*)", text)
    }
    assert named, "no `make` command found in the docs"
    unknown = sorted(f"{doc}: make {t}" for doc, t in named if t not in targets)
    assert not unknown, f"not Makefile targets: {unknown}"


def _expand(path: str) -> list[str]:
    brace = re.search(r"\{([^}]*)\}", path)
    if not brace:
        return [path]
    return [path[: brace.start()] + alt + path[brace.end() :] for alt in brace.group(1).split(",")]


def test_every_repository_path_the_docs_name_exists() -> None:
    pattern = re.compile(
        r"(?<![\w./-])((?:configs|benchmarks|mmalign|datasets|apps|docs|tests|\.ci)/"
        r"[\w./{},*-]*[\w}*])"
    )
    missing, seen = [], 0
    for doc in DOCS:
        for line, text in enumerate(doc.read_text().splitlines(), 1):
            for m in pattern.finditer(text):
                for path in _expand(m.group(1)):
                    seen += 1
                    found = list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
                    if not found:
                        missing.append(f"{doc.name}:{line}: {path}")
    assert seen > 100  # the pattern still finds the paths
    assert not missing, "\n".join(missing)


# The README's methods table names some losses by their paper's name.
README_NAMES = {
    "simpo": "SimPO", "ipo": "IPO", "hinge": "hinge", "nca_pair": "NCA", "bco_pair": "BCO",
    "kto": "KTO", "cpo": "CPO", "orpo": "ORPO", "dpop": "DPO-Positive",
}  # fmt: skip


def _readme_methods_column() -> list[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("| method (loss) |", 1)[1].split("\n\n", 1)[0]
    return [row.split("|")[1] for row in table.splitlines()[2:]]


def test_readme_methods_table_matches_the_loss_registry() -> None:
    methods = " ".join(_readme_methods_column())
    absent = [
        name for name in LOSSES
        if f"`{name}`" not in methods
        and not re.search(rf"(?<![\w-]){re.escape(README_NAMES.get(name, '~'))}(?![\w-])", methods)
    ]  # fmt: skip
    assert not absent, f"registered losses missing from the README's methods table: {absent}"
    ticked = set(re.findall(r"`([a-z_]+)`", methods)) - {"main", "visual", "blind", "ppd"}
    assert ticked <= set(LOSSES), f"not registered: {sorted(ticked - set(LOSSES))}"


def test_loss_counts_in_the_docs_are_the_registry_size() -> None:
    counts = [
        (doc.name, int(n))
        for doc in (ROOT / "README.md", ROOT / "docs" / "methods.md")
        for n in re.findall(r"\b(\d+) (?:registered |preference )?losses\b", doc.read_text())
    ]
    assert counts and all(n == len(LOSSES) for _, n in counts), counts


def test_methods_loss_table_lists_every_loss_with_its_defaults() -> None:
    text = (ROOT / "docs" / "methods.md").read_text()
    table = text.split("<!-- loss-table -->", 1)[1].strip().split("\n\n", 1)[0].splitlines()[2:]
    rows = {re.match(r"\| `(\w+)`", r).group(1): r.split("|")[3] for r in table}
    assert set(rows) == set(LOSSES)
    for name, cell in rows.items():
        stated = sorted(float(x) for x in re.findall(r"(?<![\w.])\d+(?:\.\d+)?", cell))
        assert stated == sorted(float(v) for v in LOSSES[name].defaults.values()), (name, cell)


def _section_rows() -> dict[str, str]:
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text.split("| section | main keys (default) |", 1)[1].split("\n\n", 1)[0]
    return {
        m.group(1): row for row in table.splitlines()[2:] if (m := re.match(r"\| `(\w+)` \|", row))
    }


@pytest.mark.parametrize("section", ["model", "data", "lora", "diffusion", "vlm", "train",
                                     "validation", "ppd"])  # fmt: skip
def test_cli_md_recipe_table_names_every_config_key(section: str) -> None:
    from mmalign.train import config

    hints = {f.name: f.type for f in dataclasses.fields(config.Config)}
    name = re.search(r"\b([A-Z]\w*Config)\b", str(hints[section])).group(1)
    fields = {f.name for f in dataclasses.fields(getattr(config, name))}
    row = _section_rows()[section]
    missing = sorted(k for k in fields if f"`{k}`" not in row)
    assert not missing, f"{section}: keys missing from docs/cli.md's table: {missing}"


def test_cli_md_recipe_table_names_every_shipped_recipe() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text.split("| folder | recipes | runs on |", 1)[1].split("\n\n", 1)[0]
    listed = {
        f"{folder}/{recipe}"
        for row in table.splitlines()[2:]
        for folder in re.findall(r"`configs/(\w+)/`", row.split("|")[1])
        for recipe in re.findall(r"`(\w+)`", row.split("|")[2])
    }
    shipped = {f"{p.parent.name}/{p.stem}" for p in (ROOT / "configs").glob("*/*.yaml")}
    # a row with two folders lists both folders' recipes; each shipped one must be there
    unlisted = sorted(s for s in shipped if s not in listed)
    assert not unlisted, f"shipped recipes missing from docs/cli.md's table: {unlisted}"
