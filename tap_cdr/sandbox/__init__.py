"""A local emulator of the call-centre APIs that tap-cdr reads, for demos and tests.

Run it with ``tap-cdr-sandbox --port 0`` or ``python -m tap_cdr.sandbox``. It binds
127.0.0.1 only and prints the URL it listens on.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from tap_cdr.sandbox.data import V3Dataset, VccDataset, default_anchor
from tap_cdr.sandbox.faults import Faults, parse_cli
from tap_cdr.sandbox.server import SandboxConfig, SandboxServer, start
from tap_cdr.sandbox.webhooks import webhook_config

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

__all__ = ["SandboxConfig", "SandboxServer", "V3Dataset", "main", "start"]


def _anchor(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each default, except where there is none to show."""

    @override
    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, (), [], False):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tap-cdr-sandbox", description=__doc__, formatter_class=_Defaults
    )
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--records", type=int, default=500, help="TEL4VN v3 CDRs to serve")
    parser.add_argument("--seed", type=int, default=1, help="the datasets' random seed")
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
    parser.add_argument(
        "--timezone", default="Asia/Ho_Chi_Minh", help="zone of the v3 API's naive timestamps"
    )
    parser.add_argument("--token", default="sandbox-token", help="the v3 Bearer token")
    parser.add_argument(
        "--api-key", default="sandbox-api-key", help="the v3 api_key, exchanged for a token"
    )
    parser.add_argument(
        "--token-max-uses",
        type=int,
        default=0,
        help="a token fetched with the api_key expires after this many requests (0: never)",
    )
    parser.add_argument(
        "--max-limit", type=int, default=0, help="cap v3 page sizes at this (0: no cap)"
    )
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
    vcc.add_argument("--vcc-records", type=int, default=20, help="VCC Live calls to serve")
    vcc.add_argument(
        "--vcc-step-seconds", type=int, default=3600, help="seconds between VCC calls' starts"
    )
    vcc.add_argument("--vcc-customer", default="sandbox", help="the Basic auth user")
    vcc.add_argument(
        "--vcc-token", default="sandbox-vcc-token", help="the API token (Basic auth password)"
    )
    vcc.add_argument(
        "--vcc-month-basis",
        choices=("local", "utc"),
        default="local",
        help="the month a lookup finds a call under: its start's local or UTC month",
    )
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
    vcc.add_argument(
        "--vcc-pending-style",
        choices=("errors", "404", "empty"),
        default="errors",
        help="how a lookup says a CDR is not available yet",
    )
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


def banner(url: str, config: SandboxConfig) -> str:
    """What the sandbox serves, and the settings that reach it."""
    v3, vcc = config.v3, config.vcc
    v3_section = {"base_url": url, "token": config.token}
    vcc_section = {
        "customer": config.vcc_customer,
        "api_token": config.vcc_token,
        "base_url": url,
    }
    v3_line = (
        f"  TEL4VN v3, GET /v3/cdr: {v3.records:,} CDRs, the newest ending "
        f"{v3.anchor:%Y-%m-%d %H:%M} UTC; Bearer token {config.token!r}, or api_key "
        f"{config.api_key!r} at POST /v3/auth/token"
    )
    vcc_line = (
        "  VCC Live, GET /v2/cdrs/{year}/{month}/{day} (the CDR log) and "
        f"/v2/cdr/{{year}}/{{month}}/{{uuid}}: {vcc.records:,} calls, the newest ending "
        f"around {vcc.anchor:%Y-%m-%d %H:%M} UTC; Basic auth {config.vcc_customer!r} / "
        f"{config.vcc_token!r}"
    )
    return "\n".join(
        [
            f"sandbox: serving on {url} (127.0.0.1 only) until Ctrl-C",
            v3_line,
            f'    tap config: "cdr_v3": {json.dumps(v3_section)}',
            vcc_line,
            f'    tap config: "cdr_by_uuid": {json.dumps(vcc_section)}',
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = config_from_args(args)
    if args.print_vcc_uuids:
        for i in range(min(args.print_vcc_uuids, config.vcc.records)):
            year, month = config.vcc.filed_under(i)
            print(f"{year:04d}/{month:02d}/{config.vcc.uuids[i]}")
        return
    try:
        server = SandboxServer(args.port, config)
    except OSError as exc:
        sys.exit(
            f"tap-cdr-sandbox: cannot listen on 127.0.0.1:{args.port} ({exc.strerror}): "
            "another sandbox may run there; choose another --port, or --port 0 for a free one"
        )
    print(server.url, flush=True)  # the first line: scripts read the URL from it
    print(banner(server.url, config), file=sys.stderr, flush=True)
    server.start_webhooks()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop_webhooks()
        server.server_close()
