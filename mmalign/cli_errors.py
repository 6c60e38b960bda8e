"""Which exceptions end an `mmalign` command as bad input (a message, exit status 2) and which
are bugs (their traceback). `--debug` or MMALIGN_DEBUG=1 shows the traceback of both.

Input errors are: `InputError` (and `ConfigError`) anywhere; a `ValueError` or `ImportError`
raised by mmalign's or the labeling app's own code (their messages are written for the user,
and the labeling app raises plain ValueError); a missing, existing or unreadable file that the
operating system names; and a hub or network failure of a loader. A ValueError raised inside
torch, diffusers or another library is a bug in how mmalign called it, and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from .config import InputError

_OWN = (
    str(Path(__file__).resolve().parent),  # mmalign
    str(Path(__file__).resolve().parents[1] / "apps" / "label"),  # mmalign_label, in a checkout
)
_FILE_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES}


def debug_requested(argv: list[str], parser: argparse.ArgumentParser) -> tuple[bool, list[str]]:
    """(whether to show tracebacks, argv without `--debug`): the flag is taken anywhere on
    the line, since a user adds it after the command they are debugging, but only where it
    stands as a flag. A `--debug` that is the value of the option before it (`--prompt
    --debug`) or comes after `--` is left where it is, for argparse to read as it would any
    such token. `parser`: the command line's (`mmalign.cli.build_parser()`, handed in: this
    module is imported by the CLI, not the other way round)."""
    env = os.environ.get("MMALIGN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    if "--debug" not in argv:
        return env, list(argv)
    kept: list[str] = []
    found = False
    command, values = parser, 0.0  # values: tokens the last option still takes
    for i, token in enumerate(argv):
        if token == "--":  # every token after it is a positional, as argparse reads them
            kept.extend(argv[i:])
            break
        if values:
            values -= 1
            kept.append(token)
            continue
        if token == "--debug":
            found = True
            continue
        kept.append(token)
        action = _option(command, token)
        if action is not None:
            values = _values_taken(action)
        elif not token.startswith("-"):
            command = _subcommand(command, token) or command
    return env or found, kept


def _option(command: argparse.ArgumentParser, token: str) -> argparse.Action | None:
    """The option `token` names in `command`, as argparse matches it (an unambiguous prefix of
    a long option too); None for a positional, an unknown option, or `--opt=value`."""
    if not token.startswith("-") or "=" in token:
        return None
    options = command._option_string_actions
    if token in options:
        return options[token]
    if token.startswith("--") and command.allow_abbrev:
        matches = {a for name, a in options.items() if name.startswith(token)}
        if len(matches) == 1:
            return matches.pop()
    return None


def _values_taken(action: argparse.Action) -> float:
    """How many of the next tokens belong to `action`: argparse reads them as its values, or
    reports a value missing where one looks like an option, so a `--debug` among them is no
    flag. An optional count (`?`, `*`) ends at an option-like token: none."""
    nargs = action.nargs
    if nargs is None:
        return 1
    if isinstance(nargs, int):
        return nargs
    if nargs == argparse.REMAINDER:
        return float("inf")
    return 1 if nargs == argparse.ONE_OR_MORE else 0


def _subcommand(command: argparse.ArgumentParser, token: str) -> argparse.ArgumentParser | None:
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(token)
    return None


def _raised_by_own_code(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    where = str(Path(frames[-1].filename).resolve())
    own = (*_OWN, _label_package())
    return any(where.startswith(root + os.sep) for root in own if root)


def _label_package() -> str:
    """The installed labeling app's folder, if it ran (an error from it means it is loaded)."""
    app = sys.modules.get("mmalign_label")
    return str(Path(app.__file__).resolve().parent) if app and app.__file__ else ""


def input_error_message(err: BaseException) -> str | None:
    """The message to print for a user-input error, None for anything else (a bug)."""
    if isinstance(err, InputError):
        return str(err)
    if isinstance(err, OSError) and err.errno in _FILE_ERRNOS and err.filename:
        return f"{err.filename}: {err.strerror}"
    if isinstance(err, ValueError | ImportError | OSError) and _raised_by_own_code(err):
        return str(err)
    if type(err).__module__.startswith("sqlalchemy") and "unable to open database" in str(err):
        return f"{str(err).splitlines()[0]} (does the --db folder exist?)"  # the labeling app
    from .hub import hub_error_message

    if hub_error_message(err, "ID", "the input") is not None:  # a loader no `hub_errors` wraps
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (
            f"{first} (a hub id that is not in the local cache, or no network: download it "
            "with `hf download ID` where there is network, or give a local folder)"
        )
    return None


def finite_float(text: str) -> float:
    """An argparse `type` for a float option: `nan`, `inf` and `-inf` (which `float` accepts)
    are refused, so `--guidance nan` is a usage error, not a run of NaN images."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def at_least_one(args: argparse.Namespace, *names: str) -> None:
    """Counts given on the command line (None: the default) must be >= 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def unknown_arguments(
    parser: argparse.ArgumentParser, argv: list[str], extras: list[str]
) -> NoReturn:
    """Exit as argparse does for arguments no parser took, but under the usage of the command
    they were given to, with the option probably meant: for a command that takes recipe
    overrides, `--max-steps 2` is answered with `train.max_steps=2`."""
    command = parser
    for token in argv:  # the (sub)command the arguments were given to
        actions = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            break
        command = actions[0].choices.get(token, command)
    message = f"unrecognized arguments: {' '.join(extras)}"
    flag = next((e for e in extras if e.startswith("--") and len(e) > 2), None)
    if flag is not None:
        name, _, value = flag.partition("=")
        if not value and extras.index(flag) + 1 < len(extras):
            after = extras[extras.index(flag) + 1]
            value = "" if after.startswith("-") else after
        message += "; " + _option_hint(command, name, value)
    command.error(message)


# flags for where training runs: accelerate decides it, so no recipe key is the one meant
DEVICE_FLAGS = {"device", "devices", "cpu", "gpu", "gpus", "cuda", "num_processes", "multi_gpu"}
TRAIN_DEVICE_HINT = (
    "training takes its device from accelerate, not a flag: the GPU when there is one (choose "
    "it with CUDA_VISIBLE_DEVICES=N), the CPU with ACCELERATE_USE_CPU=1; several GPUs or "
    "processes: `accelerate launch --num_processes N -m mmalign.cli train CONFIG`, or set them "
    "once with `accelerate config`"
)


def _option_hint(command: argparse.ArgumentParser, flag: str, value: str) -> str:
    import difflib

    from .suggest import closest

    if any(a.dest == "overrides" for a in command._actions):  # train, config show, demo
        name = flag.lstrip("-").replace("-", "_")
        if name in DEVICE_FLAGS:  # not a recipe key (`diffusion.dense.device` is a scorer's)
            return TRAIN_DEVICE_HINT
        keys = _recipe_keys()
        leaves = {key.rsplit(".", 1)[-1]: key for key in reversed(keys)}  # a leaf: its first key
        near = difflib.get_close_matches(name, [*keys, *leaves], n=1, cutoff=0.8)  # no wild guess
        guess = leaves.get(near[0], near[0]) if near else None
        if guess is not None:
            return f"did you mean '{guess}={value or 'VALUE'}'?"
        return (
            "recipe settings are key=value overrides, e.g. train.learning_rate=1e-5 "
            "(`mmalign config show CONFIG` prints every key)"
        )
    options = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
    guess = closest(flag, options)
    return f"did you mean '{guess}'?" if guess is not None else "see --help"


def _recipe_keys() -> list[str]:
    """Every dotted key of a recipe (mmalign.train.Config) that holds a value, not a section."""
    import dataclasses

    from .config import _field_dataclass
    from .train import Config

    keys: list[str] = []
    pending: list[tuple[str, type]] = [("", Config)]
    while pending:
        prefix, schema = pending.pop(0)
        for f in dataclasses.fields(schema):  # type: ignore[arg-type]
            key = f"{prefix}{f.name}"
            nested = _field_dataclass(schema, f.name)
            if nested is not None:
                pending.append((f"{key}.", nested))
            else:
                keys.append(key)
    return keys
