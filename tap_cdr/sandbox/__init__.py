"""A local emulator of the call-centre APIs that tap-cdr reads, for demos and tests.

Run it with ``tap-cdr-sandbox --port 0`` or ``python -m tap_cdr.sandbox``. It binds
127.0.0.1 only and prints the URL it listens on.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from tap_cdr.sandbox.data import V3Dataset, VccDataset, default_anchor
from tap_cdr.sandbox.faults import Faults, parse_cli
from tap_cdr.sandbox.server import SandboxConfig, SandboxServer, start
from tap_cdr.sandbox.webhooks import webhook_config

__all__ = ["SandboxConfig", "SandboxServer", "V3Dataset", "main", "start"]


def _anchor(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tap-cdr-sandbox", description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--records", type=int, default=500, help="v3 CDRs to serve")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--anchor",
        type=_anchor,
        default=None,
        help="UTC end time of the newest call (default: the start of the last hour)",
    )
    parser.add_argument(
        "--step-seconds",
        type=int,
        default=0,
        help="seconds between consecutive calls (default: spread over a week)",
    )
    parser.add_argument("--timezone", default="Asia/Ho_Chi_Minh")
    parser.add_argument("--token", default="sandbox-token")
    parser.add_argument("--api-key", default="sandbox-api-key")
    parser.add_argument("--token-max-uses", type=int, default=0)
    parser.add_argument("--max-limit", type=int, default=0)
    faults = parser.add_argument_group("faults (also POST /_sandbox/faults at run time)")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="delay per data request")
    faults.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="e.g. status_503=3 (next 3 requests), rate_429=0.1, retry_after=2, reset=1, "
        "truncate=1, malformed=1, no_data=1, data_not_list=1, hang=1, expire_tokens=1",
    )
    faults.add_argument(
        "--late",
        type=int,
        default=0,
        metavar="N",
        help="hide the N newest v3 calls (late registration) until POST /_sandbox/release",
    )
    vcc = parser.add_argument_group("VCC Live API: the CDR log listing and the lookup by uuid")
    vcc.add_argument("--vcc-records", type=int, default=20)
    vcc.add_argument(
        "--vcc-step-seconds", type=int, default=3600, help="seconds between VCC calls' starts"
    )
    vcc.add_argument("--vcc-customer", default="sandbox")
    vcc.add_argument("--vcc-token", default="sandbox-vcc-token")
    vcc.add_argument("--vcc-month-basis", choices=("local", "utc"), default="local")
    vcc.add_argument(
        "--vcc-day-basis",
        choices=("local", "utc"),
        default="local",
        help="the date the CDR log lists a call under: its start's local or UTC date",
    )
    vcc.add_argument(
        "--vcc-list-max-num",
        type=int,
        default=500,
        help="most rows per CDR log page, whatever `num` asks (10 without `num`)",
    )
    vcc.add_argument(
        "--vcc-list-ignore-num", action="store_true", help="serve 10 rows a page whatever `num`"
    )
    vcc.add_argument(
        "--vcc-list-shape",
        choices=("rows", "rows-no-total", "array"),
        default="rows",
        help="the listing's `response`: rows and totalCount, rows only, or the array",
    )
    vcc.add_argument(
        "--vcc-list-forbidden", action="store_true", help="the token may not list (403)"
    )
    vcc.add_argument(
        "--vcc-token-projects",
        type=lambda text: tuple(int(p) for p in text.split(",")),
        default=(),
        metavar="ID,ID",
        help="the token may only list with a `projectid` among these",
    )
    vcc.add_argument(
        "--vcc-late",
        type=int,
        default=0,
        metavar="N",
        help="hide the N newest VCC calls (listing and lookup) until POST /_sandbox/release",
    )
    vcc.add_argument("--vcc-pending-style", choices=("errors", "404", "empty"), default="errors")
    vcc.add_argument(
        "--vcc-delay-requests",
        action="append",
        default=[],
        metavar="UUID=K",
        help="the uuid answers 'not available' to its first K requests",
    )
    vcc.add_argument(
        "--vcc-delay-seconds",
        action="append",
        default=[],
        metavar="UUID=T",
        help="the uuid answers 'not available' for T seconds after the sandbox starts",
    )
    hooks = parser.add_argument_group(
        "VCC Live Call Disposition webhooks (the secret key from "
        "TAP_CDR_SANDBOX_WEBHOOK_SECRET_KEY)"
    )
    hooks.add_argument(
        "--vcc-webhook-url",
        metavar="URL",
        help="post each VCC call's Call Disposition event here (e.g. "
        "http://127.0.0.1:8787/vcc/call-disposition)",
    )
    hooks.add_argument(
        "--vcc-webhook-cipher", metavar="CIPHER", help="encrypt the bodies (e.g. aes-256-ctr)"
    )
    hooks.add_argument("--vcc-webhook-rate", type=float, default=50.0, help="events per second")
    hooks.add_argument(
        "--vcc-webhook-skip-every",
        type=int,
        default=5,
        metavar="N",
        help="every Nth call gets no webhook, as with a supervisor's disposition (0: none)",
    )
    hooks.add_argument(
        "--vcc-webhook-duplicate-every",
        type=int,
        default=4,
        metavar="N",
        help="every Nth event is delivered twice (0: none)",
    )
    vcc.add_argument(
        "--print-vcc-uuids",
        type=int,
        metavar="N",
        help="print the first N VCC calls as YYYY/MM/uuid items and exit",
    )
    return parser.parse_args(argv)


def _pairs(values: list[str], convert: type) -> dict:
    pairs = {}
    for value in values:
        key, _, number = value.partition("=")
        pairs[key.strip()] = convert(number)
    return pairs


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    faults = Faults(latency_ms=args.latency_ms)
    faults.update(parse_cli(args.fault))
    config = SandboxConfig(
        faults=faults,
        v3=V3Dataset(
            records=args.records,
            seed=args.seed,
            anchor=args.anchor or default_anchor(),
            step_seconds=args.step_seconds,
            zone=args.timezone,
        ),
        vcc=VccDataset(
            records=args.vcc_records,
            seed=args.seed,
            anchor=args.anchor or default_anchor(),
            step_seconds=args.vcc_step_seconds,
            month_basis=args.vcc_month_basis,
            day_basis=args.vcc_day_basis,
        ),
        vcc_customer=args.vcc_customer,
        vcc_token=args.vcc_token,
        vcc_delay_requests=_pairs(args.vcc_delay_requests, int),
        vcc_delay_seconds=_pairs(args.vcc_delay_seconds, float),
        vcc_pending_style=args.vcc_pending_style,
        vcc_list_max_num=args.vcc_list_max_num,
        vcc_list_ignore_num=args.vcc_list_ignore_num,
        vcc_list_shape=args.vcc_list_shape,
        vcc_list_forbidden=args.vcc_list_forbidden,
        vcc_token_projects=args.vcc_token_projects,
        token=args.token,
        api_key=args.api_key,
        token_max_uses=args.token_max_uses,
        max_limit=args.max_limit,
        webhooks=webhook_config(
            args.vcc_webhook_url,
            args.vcc_webhook_cipher,
            args.vcc_webhook_rate,
            args.vcc_webhook_skip_every,
            args.vcc_webhook_duplicate_every,
        ),
    )
    records = config.v3.records
    config.v3.hidden.update(range(max(0, records - args.late), records))
    vcc_records = config.vcc.records
    config.vcc.hidden.update(range(max(0, vcc_records - args.vcc_late), vcc_records))
    return config


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = config_from_args(args)
    if args.print_vcc_uuids:
        for i in range(min(args.print_vcc_uuids, config.vcc.records)):
            year, month = config.vcc.filed_under(i)
            print(f"{year:04d}/{month:02d}/{config.vcc.uuids[i]}")
        return
    server = SandboxServer(args.port, config)
    print(server.url, flush=True)
    print(
        f"sandbox: {args.records} v3 CDRs ending at {server.config.v3.anchor:%Y-%m-%d %H:%M} UTC",
        file=sys.stderr,
        flush=True,
    )
    server.start_webhooks()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop_webhooks()
        server.server_close()
