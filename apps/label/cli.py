"""`mmalign label`: serve the labeling app, add users, export votes.

    mmalign label --data DIR_OR_ID --users users.txt [--db labels.sqlite] [--overlap K]
    mmalign label --model toy-sd --users users.txt
    mmalign label adduser NAME --users users.txt [--role admin]
    mmalign label --vlm --data VLM_PAIRS --users users.txt    # image + prompt, two responses
    mmalign label --vlm --model VLM --data PROMPTS.jsonl ...  # responses sampled by a VLM
    mmalign label export --db labels.sqlite --out DIR --format pickapic|pairs|trl
        [--criterion NAME] [--exclude-flagged] [--overwrite]
    mmalign label gold add FILE --db labels.sqlite            # pairs with a known answer
    mmalign label stats --db labels.sqlite [--json]           # annotator quality

`--db` is a SQLite file (WAL mode) or a SQLAlchemy URL such as
postgresql+psycopg://label:PASSWORD@db-host/labels for a team server.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import sys
from pathlib import Path

from mmalign.cli_errors import finite_float

_SUBCOMMANDS = ("adduser", "export", "gold", "stats")


MIN_PASSWORD = 8  # NIST SP 800-63B's floor for a password a person chooses


def _existing_db(db: str) -> str:
    """`db` for a command that reads votes (export, stats): a SQLite path must exist (else
    opening it would create an empty database and the command would report nothing)."""
    from mmalign.config import InputError

    if "://" not in db and not Path(db).is_file():
        raise InputError(f"--db {db}: no such database file (this command reads an existing one)")
    return db


def _image_root(db: str, images: str | None) -> Path:
    if images:
        return Path(images)
    if "://" in db:
        raise ValueError("--images FOLDER is needed with a database URL (where pair images live)")
    return Path(db).with_name(Path(db).name + ".images")


def _cmd_serve(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmalign.devices import device_options

    from .app import LabelApp
    from .engines import shown_db
    from .images import import_pairs
    from .server import serve
    from .store import Store
    from .users import Authenticator

    device, dtype = device_options(args)  # --model's; a device the machine lacks: refused here
    for name in ("session_hours", "request_timeout"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a number > 0, got {value}")
    for name, least in (("login_limit", 1), ("account_login_limit", 1),
                        ("connections_per_client", 0)):  # fmt: skip
        if getattr(args, name) < least:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {least}, "
                             f"got {getattr(args, name)}")  # fmt: skip
    if args.limit is not None and args.limit < 1:  # 0 imported pairs: a server with no work
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if not Path(args.users).is_file():  # (the raw OSError named no way out)
        raise ValueError(f"users file {args.users} not found: create it with `mmalign label "
                         f"adduser NAME --users {args.users}`")  # fmt: skip
    auth = Authenticator(args.users)
    if not auth.users():
        raise ValueError(f"{args.users} has no users: add one with `mmalign label adduser`")
    weak = auth.weaker_hashes()
    if weak:  # the server does not rewrite the users file (users.py): the admin upgrades
        shown = ", ".join(weak[:10]) + (", ..." if len(weak) > 10 else "")
        print(f"label: {len(weak)} password hashes in {args.users} have a lower scrypt cost "
              f"than new ones ({shown}); set those passwords again (`mmalign label adduser "
              "NAME`) to raise it", file=sys.stderr)  # fmt: skip
    from .criteria import load_criteria, save_criteria
    from .quality import save_quality_settings
    from .vlm_pairs import add_vlm_pairs, is_vlm, read_vlm_pairs

    store = Store(args.db, overlap=args.overlap, lease_s=args.lease, gold_rate=args.gold_rate)
    save_quality_settings(store, gold_floor=args.gold_floor, bias_ceiling=args.bias_ceiling)
    if args.criteria is not None:
        save_criteria(store, load_criteria(args.criteria))
    root = _image_root(args.db, args.images)
    if args.data is None and args.model is None and store.count_pairs() == 0:
        raise ValueError(
            f"{shown_db(args.db)} has no pairs: give --data DIR_OR_ID or --model MODEL"
        )
    if args.vlm or is_vlm(store):
        if args.model is not None:  # two sampled responses per prompt + image row
            from .vlm_generate import ResponseSampler, generate_vlm_pairs

            if args.data is None:
                raise ValueError("--vlm --model needs --data FILE (prompt and image rows)")
            sampler = ResponseSampler(args.model, temperature=args.temperature,
                                      seed=args.seed or 0, device=device,
                                      dtype=dtype)  # fmt: skip
            rows = generate_vlm_pairs(sampler, args.data, root, limit=args.limit)
            added = add_vlm_pairs(store, rows)
            print(f"label: {added} new VLM pairs from {args.data} with responses of "
                  f"{args.model}; {store.count_pairs()} in {shown_db(args.db)}")  # fmt: skip
        elif args.data is not None:
            rows = read_vlm_pairs(args.data, root, split=args.split, limit=args.limit)
            added = add_vlm_pairs(store, rows)
            print(f"label: {added} new VLM pairs from {args.data}; {store.count_pairs()} in "
                  f"{shown_db(args.db)}")  # fmt: skip
    elif args.data is not None:
        pairs = tqdm(import_pairs(args.data, root, split=args.split, limit=args.limit),
                     desc="import pairs", unit="pair")  # fmt: skip
        added = store.add_pairs(pairs)
        print(
            f"label: {added} new pairs from {args.data}; {store.count_pairs()} in "
            f"{shown_db(args.db)}"
        )
    model = None if is_vlm(store) else args.model  # VLM mode: responses made at import
    app = LabelApp(store, root, auth, model=model, seed=args.seed, steps=args.steps,
                   device=device, dtype=dtype)  # fmt: skip
    print(f"label: http://{args.host}:{args.port} (users: {args.users}, overlap {store.overlap})")
    serve(app, args.host, args.port, login_limit=args.login_limit,
          name_limit=args.account_login_limit, session_hours=args.session_hours,
          request_timeout=args.request_timeout,
          connections_per_client=args.connections_per_client)  # fmt: skip
    return 0


def _cmd_adduser(args: argparse.Namespace) -> int:
    from mmalign.config import InputError

    from .users import add_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():  # getpass would read a piped stdin with a warning, or fail
        raise InputError("no terminal to read the password from: pipe it in with --password-stdin")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            raise InputError("the two passwords differ")
    if len(password) < MIN_PASSWORD:  # the app faces the network
        raise InputError(f"the password must have at least {MIN_PASSWORD} characters")
    user = add_user(args.users, args.name, password, args.role)
    print(f"label: {user.name} ({user.role}) saved in {args.users}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .engines import shown_db
    from .export import earlier_export, export_votes
    from .store import Store

    db = _existing_db(args.db)
    earlier = earlier_export(args.out, args.overwrite)  # refused before the votes are read
    store = Store(db)
    thresholds = {"gold_floor": args.gold_floor, "bias_ceiling": args.bias_ceiling}
    summary = export_votes(store, _image_root(args.db, args.images), args.out, args.format,
                           criterion=args.criterion, exclude_flagged=args.exclude_flagged,
                           thresholds=thresholds, overwrite=args.overwrite)  # fmt: skip
    print(json.dumps(summary, indent=2))
    if earlier:
        print(f"label: --overwrite: replaced the earlier export in {args.out} "
              f"({len(earlier)} file(s))", file=sys.stderr)  # fmt: skip
    if not summary["rows"]:  # a folder of 0 pairs, which a recipe refuses: say so now
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(summary["skipped"].items()))
        print(f"label: nothing exported from {shown_db(args.db)}: "
              + (f"every vote was left out ({why})" if why else "it holds no votes yet"),
              file=sys.stderr)  # fmt: skip
    return 0


def _cmd_gold_add(args: argparse.Namespace) -> int:
    from .engines import shown_db
    from .gold import add_gold
    from .store import Store

    store = Store(args.db)
    summary = add_gold(store, args.file, _image_root(args.db, args.images))
    print(f"label: {summary['rows']} gold rows from {args.file} ({summary['new_pairs']} new "
          f"pairs); {summary['gold_pairs']} gold pairs in {shown_db(args.db)}")  # fmt: skip
    repeats = summary.get("duplicates", 0)
    if repeats:
        rows = "1 row repeats a pair" if repeats == 1 else f"{repeats} rows repeat pairs"
        print(f"label: {rows} named earlier in {args.file} with the same answer (added once)")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from .quality import quality_settings, quality_table, team_quality
    from .store import Store

    store = Store(_existing_db(args.db))
    thresholds = quality_settings(store, gold_floor=args.gold_floor, bias_ceiling=args.bias_ceiling)
    quality = team_quality(store, **thresholds)
    print(json.dumps(quality, indent=2) if args.json else quality_table(quality))
    return 0


def _thresholds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gold-floor", type=finite_float, default=None,
                   help="flag annotators below this gold accuracy (default 0.7)")  # fmt: skip
    p.add_argument("--bias-ceiling", type=finite_float, default=None,
                   help="flag annotators whose left (or right) share is above this "
                   "(default 0.8)")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    """Add `label` (serve), `label adduser` and `label export` to the `mmalign` parser."""
    p = sub.add_parser(
        "label", help="the labeling app: serve it, add users, export votes",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--data", default=None, help="PreferencePair folder or Pick-a-Pic folder/id")
    p.add_argument("--model", default=None, help="generate pairs from typed prompts (toy-sd)")
    p.add_argument("--split", default="train", help="Pick-a-Pic split (default: train)")
    p.add_argument("--limit", type=int, default=None, help="import at most N pairs")
    p.add_argument("--db", default="labels.sqlite", help="SQLite file or SQLAlchemy URL")
    p.add_argument("--images", default=None, help="image folder (default: DB.images)")
    p.add_argument("--users", default="users.txt", help="users file (mmalign label adduser)")
    p.add_argument("--overlap", type=int, default=None, help="annotators per pair (default 1)")
    p.add_argument(
        "--lease",
        type=finite_float,
        default=600.0,
        help="seconds a shown pair stays reserved for its annotator (default 600)",
    )
    p.add_argument("--login-limit", type=int, default=10,
                   help="failed logins per client address (IPv6: per /64) per minute "
                        "(default 10)")  # fmt: skip
    p.add_argument("--account-login-limit", type=int, default=20,
                   help="failed logins per account name per 15 minutes, from any address "
                        "(default 20)")  # fmt: skip
    p.add_argument("--connections-per-client", type=int, default=64,
                   help="open connections per client address (IPv6: per /64); 0: no limit "
                        "(default 64)")  # fmt: skip
    p.add_argument("--session-hours", type=finite_float, default=12.0,
                   help="a login lasts this long (default 12); removing a user or setting a "
                        "new password ends their sessions at once")  # fmt: skip
    p.add_argument("--request-timeout", type=finite_float, default=15.0,
                   help="seconds a client has to send a request's headers, then its body "
                        "(default 15)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--seed", type=int, default=None, help="seed of the left/right coin")
    p.add_argument("--steps", type=int, default=None, help="--model sampler steps (card's)")
    from mmalign.devices import add_device_options

    add_device_options(p, "--model (the image generator or --vlm's response sampler)")
    p.add_argument(
        "--vlm",
        action="store_true",
        help="VLM response pairs: an image and a prompt above two text responses",
    )
    p.add_argument(
        "--temperature",
        type=finite_float,
        default=1.0,
        help="--vlm --model: sampling temperature of the two responses (default 1)",
    )
    p.add_argument("--criteria", default=None, help="YAML file of the questions asked per pair")
    p.add_argument(
        "--gold-rate",
        type=finite_float,
        default=None,
        help="share of each annotator's pairs that are gold pairs (default 0.1)",
    )
    _thresholds(p)
    p.set_defaults(func=_cmd_serve)
    actions = p.add_subparsers(dest="label_command", metavar="ACTION")

    a = actions.add_parser("adduser", help="add an annotator (or reset their password)")
    a.add_argument("name")
    a.add_argument("--users", default="users.txt", help="users file (created if missing)")
    a.add_argument("--role", choices=["annotator", "admin"], default="annotator")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    a.set_defaults(func=_cmd_adduser)

    e = actions.add_parser("export", help="export votes as a Hugging Face dataset")
    e.add_argument("--db", default="labels.sqlite", help="SQLite file or SQLAlchemy URL")
    e.add_argument("--images", default=None, help="image folder (default: DB.images)")
    e.add_argument("--out", required=True, help="output folder (new or empty)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in --out (else refused)")  # fmt: skip
    e.add_argument(
        "--format",
        choices=["pickapic", "pairs", "trl"],
        default="pairs",
        help="pickapic/pairs for image pairs; pairs/trl for VLM response pairs",
    )
    e.add_argument(
        "--criterion",
        default=None,
        help="the question whose answer is the label (default: the criteria's label)",
    )
    e.add_argument(
        "--exclude-flagged",
        action="store_true",
        help="leave out the votes of annotators flagged by `label stats`",
    )
    _thresholds(e)
    e.set_defaults(func=_cmd_export)

    g = actions.add_parser("gold", help="gold pairs (known answers) to measure annotators")
    gold_actions = g.add_subparsers(dest="gold_command", metavar="ACTION", required=True)
    ga = gold_actions.add_parser("add", help="add gold pairs from a JSON Lines file")
    ga.add_argument("file", help="JSON Lines file (or a PreferencePair folder: chosen = answer)")
    ga.add_argument("--db", default="labels.sqlite", help="SQLite file or SQLAlchemy URL")
    ga.add_argument("--images", default=None, help="image folder (default: DB.images)")
    ga.set_defaults(func=_cmd_gold_add)

    st = actions.add_parser("stats", help="annotator quality: gold accuracy, bias, agreement")
    st.add_argument("--db", default="labels.sqlite", help="SQLite file or SQLAlchemy URL")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _thresholds(st)
    st.set_defaults(func=_cmd_stats)
