"""`tap-cdr-intake`: a receiver for VCC Live's Call Disposition webhook that stores the
announced calls for the tap (``cdr_by_uuid.intake_store``). Install with
``pip install 'tap-cdr[intake]'``.

    TAP_CDR_INTAKE_SECRET_KEY=... tap-cdr-intake --store sqlite:///intake.db --port 8787

Secrets come from the environment, never the command line: TAP_CDR_INTAKE_SECRET_KEY
(required) and TAP_CDR_INTAKE_CIPHER (none, or e.g. aes-256-ctr).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tap_cdr.intake.store import DEFAULT_STORE, store_url

__all__ = ["main"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tap-cdr-intake", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        help="SQLAlchemy URL of the store (default %(default)s; postgresql://... for several "
        "receivers)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger bodies get 413")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    secret_key = os.environ.get("TAP_CDR_INTAKE_SECRET_KEY", "")
    cipher = os.environ.get("TAP_CDR_INTAKE_CIPHER", "").strip().lower() or None
    try:
        import uvicorn  # noqa: PLC0415 (the intake extra)

        from tap_cdr.intake.app import create_app  # noqa: PLC0415
        from tap_cdr.intake.crypto import CIPHERS  # noqa: PLC0415
    except ImportError as exc:
        sys.exit(f"tap-cdr-intake needs the intake extra: pip install 'tap-cdr[intake]' ({exc})")
    if not secret_key:
        sys.exit("tap-cdr-intake: set TAP_CDR_INTAKE_SECRET_KEY, the secret key VCC Live sends")
    if cipher and cipher not in CIPHERS:
        sys.exit(f"tap-cdr-intake: TAP_CDR_INTAKE_CIPHER {cipher!r} is not one of {CIPHERS}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        app = create_app(args.store, secret_key, cipher, args.max_body_bytes)
    except (SQLAlchemyError, ImportError, ArgumentError) as exc:
        shown = _shown(args.store)
        problem = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        sys.exit(f"tap-cdr-intake: the store {shown} cannot be opened: {problem}")
    # SIGTERM: uvicorn stops accepting, lets the requests in flight finish (each commits
    # before it answers), then exits.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )


def _shown(url: str) -> str:
    try:
        return store_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"
