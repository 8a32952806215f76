"""`tap-cdr-intake`: a receiver for VCC Live's Call Disposition webhook that stores the
announced calls for the tap (``cdr_by_uuid.intake_store``). Install with
tap-cdr's ``intake`` extra (README: Install).

    TAP_CDR_INTAKE_SECRET_KEY=... tap-cdr-intake --store sqlite:////var/lib/intake.db
    tap-cdr-intake prune --older-than 90d

Secrets come from the environment, never the command line (see ``--help``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import NoReturn

from tap_cdr.intake.store import DEFAULT_STORE

__all__ = ["main"]

MIN_KEY_LENGTH = 16
DEFAULT_MAX_CONNECTIONS = 1000
STORE_VARIABLE = f"""\
  TAP_CDR_INTAKE_STORE       the store's URL, where --store is not given (default
                             {DEFAULT_STORE}); the place for a URL with a password
"""
ENVIRONMENT = f"""environment:
  TAP_CDR_INTAKE_SECRET_KEY  required to serve (prune needs none): the secret key VCC Live
                             sends in the URL (?secret-key=), and the key of the cipher; at
                             least {MIN_KEY_LENGTH} characters, e.g. from `openssl rand -base64 32`
  TAP_CDR_INTAKE_CIPHER      the cipher of encrypted bodies, e.g. aes-256-ctr (default: none,
                             bodies are JSON)
{STORE_VARIABLE}"""
# At most 7 digits: int() of thousands of digits is slow, and a cutoff before the year 1
# cannot be computed.
DURATION = re.compile(r"^([0-9]{1,7})([dh])$")
MAX_AGE = timedelta(days=36500)
log = logging.getLogger("tap_cdr.intake")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tap-cdr-intake",
        description=__doc__.split("\n\n")[0],
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    store_help = (
        "SQLAlchemy URL of the store: sqlite:////path.db, or postgresql://user@host/db for "
        f"several receivers (default: TAP_CDR_INTAKE_STORE, else {DEFAULT_STORE})"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('tap-cdr')}")
    parser.add_argument("--store", help=store_help)
    parser.add_argument("--host", default="127.0.0.1", help="default %(default)s")
    parser.add_argument("--port", type=int, default=8787, help="default %(default)s")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="larger bodies get 413 (default %(default)s)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections and requests at once; beyond, 503 (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default %(default)s (debug adds tracebacks to errors)",
    )
    commands = parser.add_subparsers(dest="command", metavar="{prune}")
    prune = commands.add_parser(
        "prune",
        help="delete old rows from the store, in short transactions",
        description="Delete the rows received before --older-than (by the database's clock), "
        "1,000 at a time, so that receivers keep committing. Safe while they run.",
        epilog=f"environment:\n{STORE_VARIABLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # SUPPRESS: given before `prune`, the option keeps its value (else the subcommand's
    # default would overwrite it).
    prune.add_argument("--store", default=argparse.SUPPRESS, help=store_help)
    prune.add_argument(
        "--older-than",
        required=True,
        help=f"an age in days or hours: 90d, 36h (from 1d to {MAX_AGE.days}d)",
    )
    prune.add_argument(
        "--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning"]
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    store = args.store or os.environ.get("TAP_CDR_INTAKE_STORE") or DEFAULT_STORE
    try:
        from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415 (the intake extra)

        from tap_cdr.intake.store import problem_of, shown  # noqa: PLC0415
    except ImportError as exc:
        sys.exit(
            "tap-cdr-intake needs tap-cdr's `intake` extra: install the wheel as "
            f"'tap_cdr-....whl[intake]' (README: Install) ({exc})"
        )
    try:
        if args.command == "prune":
            _prune(store, args.older_than)
        else:
            _serve(store, args)
    except ImportError as exc:
        sys.exit(
            "tap-cdr-intake needs tap-cdr's `intake` extra: install the wheel as "
            f"'tap_cdr-....whl[intake]' (README: Install) ({exc})"
        )
    except (SQLAlchemyError, ValueError) as exc:
        log.debug("the store failed", exc_info=True)
        sys.exit(
            f"tap-cdr-intake: the store {shown(store)} cannot be opened "
            f"({problem_of(exc, store)}): check --store or TAP_CDR_INTAKE_STORE"
        )


def _usage(message: str) -> NoReturn:
    sys.stderr.write(message + "\n")
    sys.exit(2)  # a wrong command line, as argparse exits


def _serve(store: str, args: argparse.Namespace) -> None:
    from tap_cdr.intake.app import create_app  # noqa: PLC0415 (the intake extra)
    from tap_cdr.intake.crypto import CIPHERS  # noqa: PLC0415
    from tap_cdr.intake.server import connection_limit, serve  # noqa: PLC0415
    from tap_cdr.intake.store import shown  # noqa: PLC0415 (SQLAlchemy, at need)

    secret_key = os.environ.get("TAP_CDR_INTAKE_SECRET_KEY", "")
    cipher = os.environ.get("TAP_CDR_INTAKE_CIPHER", "").strip().lower() or None
    if not secret_key:
        sys.exit("tap-cdr-intake: set TAP_CDR_INTAKE_SECRET_KEY, the secret key VCC Live sends")
    if cipher and cipher not in CIPHERS:
        sys.exit(f"tap-cdr-intake: TAP_CDR_INTAKE_CIPHER {cipher!r} is not one of {CIPHERS}")
    if len(secret_key) < MIN_KEY_LENGTH:
        log.warning(
            "TAP_CDR_INTAKE_SECRET_KEY has %d characters: use at least %d (e.g. from "
            "`openssl rand -base64 32`), and the same in VCC Live",
            len(secret_key),
            MIN_KEY_LENGTH,
        )
    max_connections = connection_limit(args.max_connections)
    app = create_app(store, secret_key, cipher, args.max_body_bytes)
    serve(
        app,
        args.host,
        args.port,
        max_connections,
        listening=lambda: log.info(
            "tap-cdr-intake listening on http://%s:%d; store %s; cipher %s; body limit %d "
            "bytes; at most %d connections",
            args.host,
            args.port,
            shown(store),
            cipher or "off",
            args.max_body_bytes,
            max_connections,
        ),
    )


def _prune(store: str, older_than: str) -> None:
    from tap_cdr.intake.store import (  # noqa: PLC0415
        has_store,
        open_store,
        prune,
        shown,
        store_url,
    )

    found = DURATION.match(older_than.strip().lower())
    age = None
    if found:
        age = timedelta(**{"days" if found[2] == "d" else "hours": int(found[1])})
    if age is None or age > MAX_AGE:
        _usage(
            f"tap-cdr-intake prune: --older-than {older_than!r} is not an age from 1d to "
            f"{MAX_AGE.days}d: give days or hours, such as 90d or 36h"
        )
    if age < timedelta(days=1):
        _usage(
            f"tap-cdr-intake prune: --older-than {older_than!r} must be an age of at least a "
            "day, in days or hours (90d, 36h): a younger row may not have been read by the "
            "tap yet"
        )
    parsed = store_url(store)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        # Opening it would create an empty store, and prune nothing: the wrong store.
        sys.exit(
            f"tap-cdr-intake prune: the store {shown(store)} does not exist: set --store or "
            "TAP_CDR_INTAKE_STORE to the receiver's store"
        )
    if not has_store(store):
        # Opening it would create the tables in, say, a mistyped database: the wrong store.
        sys.exit(
            f"tap-cdr-intake prune: {shown(store)} holds no intake store (no table "
            "announced_calls): set --store or TAP_CDR_INTAKE_STORE to the receiver's store"
        )
    engine = open_store(store)
    try:
        deleted, cutoff = prune(engine, age)
    finally:
        engine.dispose()
    log.info(
        "tap-cdr-intake prune: deleted %d announced calls and %d rejected events received "
        "before %s (the database's clock) from %s",
        deleted["announced_calls"],
        deleted["rejected_events"],
        f"{cutoff:%Y-%m-%d %H:%M:%S}",
        shown(store),
    )
