"""`mmalign label`: serve the labeling app, add users, export votes.

    mmalign label --data DIR_OR_ID --users users.txt [--db labels.sqlite] [--overlap K]
    mmalign label --model toy-sd --users users.txt
    mmalign label adduser NAME --users users.txt [--role admin]
    mmalign label export --db labels.sqlite --out DIR --format pickapic|pairs

`--db` is a SQLite file (WAL mode) or a SQLAlchemy URL such as
postgresql+psycopg://label:PASSWORD@db-host/labels for a team server.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

_SUBCOMMANDS = ("adduser", "export")


def _image_root(db: str, images: str | None) -> Path:
    if images:
        return Path(images)
    if "://" in db:
        raise ValueError("--images FOLDER is needed with a database URL (where pair images live)")
    return Path(db).with_name(Path(db).name + ".images")


def _cmd_serve(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .app import LabelApp
    from .images import import_pairs
    from .server import serve
    from .store import Store
    from .users import Authenticator

    auth = Authenticator(args.users)
    if not auth.users():
        raise ValueError(f"{args.users} has no users: add one with `mmalign label adduser`")
    store = Store(args.db, overlap=args.overlap, lease_s=args.lease)
    root = _image_root(args.db, args.images)
    if args.data is None and args.model is None and store.count_pairs() == 0:
        raise ValueError(f"{args.db} has no pairs: give --data DIR_OR_ID or --model MODEL")
    if args.data is not None:
        pairs = tqdm(import_pairs(args.data, root, split=args.split, limit=args.limit),
                     desc="import pairs", unit="pair")  # fmt: skip
        added = store.add_pairs(pairs)
        print(f"label: {added} new pairs from {args.data}; {store.count_pairs()} in {args.db}")
    app = LabelApp(store, root, auth, model=args.model, seed=args.seed, steps=args.steps)
    print(f"label: http://{args.host}:{args.port} (users: {args.users}, overlap {store.overlap})")
    serve(app, args.host, args.port, login_limit=args.login_limit)
    return 0


def _cmd_adduser(args: argparse.Namespace) -> int:
    from .users import add_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            raise ValueError("the two passwords differ")
    user = add_user(args.users, args.name, password, args.role)
    print(f"label: {user.name} ({user.role}) saved in {args.users}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_votes
    from .store import Store

    store = Store(args.db)
    summary = export_votes(store, _image_root(args.db, args.images), args.out, args.format)
    print(json.dumps(summary, indent=2))
    return 0


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
        type=float,
        default=600.0,
        help="seconds a shown pair stays reserved for its annotator (default 600)",
    )
    p.add_argument("--login-limit", type=int, default=10,
                   help="failed logins per client address per minute (default 10)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--seed", type=int, default=None, help="seed of the left/right coin")
    p.add_argument("--steps", type=int, default=None, help="--model sampler steps (card's)")
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
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--format", choices=["pickapic", "pairs"], default="pairs")
    e.set_defaults(func=_cmd_export)
