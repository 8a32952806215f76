"""TapCDR: the settings (each declared once, with its default and range) and the streams."""

from __future__ import annotations

import copy
import re
import sys
from typing import IO, TYPE_CHECKING, Any

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError

from tap_cdr import settings
from tap_cdr.cli import StopOnSignal, main, report_config_errors
from tap_cdr.redact import REDACTOR, secret_paths, value_at
from tap_cdr.streams import CdrByUuidStream, CdrV3Stream
from tap_cdr.writer import BufferedMsgSpecWriter

if TYPE_CHECKING:
    from collections.abc import Mapping

    import click

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

# The SDK words a schema error as "<message> in config['a']['b']"; ours name the
# setting first, as `a.b`. tests/test_settings.py pins the SDK's wording.
_SDK_ERROR = re.compile(r"^(?P<message>.*) in config(?P<path>(?:\[[^]]*\])+)$", re.DOTALL)
_PATH_PART = re.compile(r"\[['\"]?([^]'\"]*)['\"]?\]")


def setting_error(sdk_error: str) -> str:
    """An SDK schema error as ``\\`a.b\\`: message`` (unchanged if not in its form)."""
    match = _SDK_ERROR.match(sdk_error)
    if not match:
        return sdk_error
    name = ".".join(_PATH_PART.findall(match["path"]))
    return f"`{name}`: {match['message']}"


# Upper bounds on counts and durations: past them the arithmetic of dates overflows
# long before any API could be served, and a typo (a timestamp for a count) is caught.
A_YEAR_OF_MINUTES = 366 * 24 * 60


def _without_secret_values(error: str, config: Mapping[str, Any], secrets: list[str]) -> str:
    """A schema error about a secret setting, without its value (jsonschema's messages
    start with the value: ``12345 is not of type 'string'``)."""
    for path in secrets:
        if error.startswith(f"`{path}`"):
            value = value_at(config, path)
            hidden = error.replace(repr(value), "(its value: not shown, a secret)")
            return hidden if hidden != error else f"`{path}`: not valid (its value: not shown)"
    return error


def _minutes(name: str, default: int, description: str) -> th.Property[Any]:
    return th.Property(
        name,
        th.IntegerType(minimum=0, maximum=A_YEAR_OF_MINUTES),
        default=default,
        nullable=False,
        description=description,
    )


class TapCDR(Tap):
    """Call detail records from call-centre APIs."""

    name = "tap-cdr"
    message_writer_class = BufferedMsgSpecWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Earliest call end time (time_ended) to extract on a first run. "
            "Default: 30 days before the run.",
        ),
        th.Property(
            "end_date",
            th.DateTimeType,
            description="Latest call end time to extract (exclusive). Default: the run's "
            "start time minus a 5-minute settle delay.",
        ),
        _minutes(
            "lookback_minutes",
            120,
            "Each incremental run re-reads this many minutes before the bookmark, because "
            "CDRs are registered some minutes after a call ends.",
        ),
        th.Property(
            "allow_insecure_http",
            th.BooleanType,
            default=False,
            nullable=False,
            description="Allow a plain http:// base_url to a non-loopback host.",
        ),
        th.Property(
            "request_timeout_seconds",
            th.DecimalType(exclusive_minimum=0, maximum=3600),
            default=60,
            nullable=False,
            description="Seconds to wait for an API response before retrying the request.",
        ),
        th.Property(
            "max_request_tries",
            th.IntegerType(minimum=1, maximum=100),
            default=6,
            nullable=False,
            description="Attempts per request (timeouts, 429, 5xx, malformed bodies) before "
            "the sync fails.",
        ),
        th.Property(
            "max_retry_wait_seconds",
            th.DecimalType(minimum=0, maximum=86400),
            default=300,
            nullable=False,
            description="Longest wait between attempts, including a server's Retry-After.",
        ),
        th.Property(
            "metrics_log_level",
            th.StringType(pattern=f"(?i)^({'|'.join(settings.LOG_LEVELS)})$"),
            default="WARNING",
            nullable=False,
            description="Level of the SDK's metrics logger (DEBUG, INFO, WARNING, ERROR). Its "
            "METRIC lines (records, requests, timings) are logged at INFO: the default "
            "WARNING keeps them out of the log; INFO lets them through, for Meltano to parse.",
        ),
        th.Property(
            "user_agent",
            th.StringType,
            description="The User-Agent header of the API requests (read by the SDK). "
            "Default: singer-sdk/<version>.",
        ),
        th.Property(
            "emit_activate_version_messages",
            th.BooleanType,
            description="Emit the SDK's ACTIVATE_VERSION messages (read by the SDK).",
        ),
        th.Property(
            "cdr_v3",
            th.ObjectType(
                th.Property(
                    "base_url",
                    th.StringType,
                    required=True,
                    description="API root, e.g. https://api.example.vn",
                ),
                th.Property(
                    "token",
                    th.StringType,
                    secret=True,
                    description="Secret. Bearer token. Set this or api_key.",
                ),
                th.Property(
                    "api_key",
                    th.StringType,
                    secret=True,
                    description="Secret. API key, exchanged for a token at POST "
                    "{base_url}/v3/auth/token. Set this or token.",
                ),
                th.Property(
                    "timezone",
                    th.StringType,
                    default="Asia/Ho_Chi_Minh",
                    nullable=False,
                    description="IANA zone of the API's naive timestamps.",
                ),
                th.Property(
                    "page_size",
                    th.IntegerType(minimum=1, maximum=100_000),
                    default=500,
                    nullable=False,
                    description="Rows per request (the `limit` parameter).",
                ),
                th.Property(
                    "window_hours",
                    th.IntegerType(minimum=1, maximum=366 * 24),
                    default=24,
                    nullable=False,
                    description="Size of the date windows a sync is read in; state "
                    "is saved after each.",
                ),
                th.Property(
                    "max_concurrency",
                    th.IntegerType(minimum=1, maximum=64),
                    default=4,
                    nullable=False,
                    description="Most page requests in flight at once, used once the API "
                    "proves slower than the records are written: the current window's "
                    "pages, then the next windows' (1: sequential). Halved for the rest "
                    "of a window after a 429.",
                ),
                th.Property(
                    "filters",
                    th.ObjectType(
                        *(
                            th.Property(
                                name,
                                th.StringType,
                                description=f"Only CDRs with this {name}.",
                            )
                            for name in settings.V3_FILTERS
                        ),
                    ),
                    description="Server-side filters, passed through as query parameters.",
                ),
            ),
            description="The TEL4VN v3 CDR list API. Its presence enables the cdr_v3 stream.",
        ),
        th.Property(
            "cdr_by_uuid",
            th.ObjectType(
                th.Property(
                    "customer",
                    th.StringType(pattern=r"^[A-Za-z0-9_-]+$"),
                    required=True,
                    description="Your call centre's id (its subdomain); the Basic auth user.",
                ),
                th.Property(
                    "api_token",
                    th.StringType(min_length=1),
                    required=True,
                    secret=True,
                    description="Secret. The API token; the Basic auth password.",
                ),
                th.Property(
                    "base_url",
                    th.StringType,
                    description="Default https://{customer}.asp.virtual-call-center.eu "
                    "(override for the sandbox or a proxy).",
                ),
                th.Property(
                    "timezone",
                    th.StringType,
                    default="Europe/Budapest",
                    nullable=False,
                    description="IANA zone of the call centre: the local fields' zone, and "
                    "the day a call may be filed under in the CDR log.",
                ),
                th.Property(
                    "list_cdrs",
                    th.BooleanType,
                    default=True,
                    nullable=False,
                    description="Sweep the CDR log (GET /v2/cdrs/{year}/{month}/{day}) for "
                    "every call that ended in the sync range. Set false for a token that "
                    "may not list: then only the uuids given are loaded.",
                ),
                th.Property(
                    "page_size",
                    th.IntegerType(minimum=1, maximum=100_000),
                    default=500,
                    nullable=False,
                    description="Rows per CDR log request (the `num` parameter).",
                ),
                th.Property(
                    "project_ids",
                    th.ArrayType(th.IntegerType),
                    description="List the CDR log per project (`projectid`), for tokens "
                    "limited to some projects. Default: one listing of all projects.",
                ),
                th.Property(
                    "max_call_hours",
                    th.IntegerType(minimum=1, maximum=30 * 24),
                    default=24,
                    nullable=False,
                    description="Longest call to expect: the sweep also lists the days this "
                    "many hours before the range, so a call that started then and ended "
                    "inside the range is found.",
                ),
                th.Property(
                    "max_concurrency",
                    th.IntegerType(minimum=1, maximum=64),
                    default=4,
                    nullable=False,
                    description="Most requests in flight at once (lookups, and CDR log "
                    "pages once the API proves the slow part). Halved after a 429.",
                ),
                th.Property(
                    "uuids",
                    th.ArrayType(th.StringType),
                    description="Calls to fetch: each a uuid or YYYY/MM/uuid. An item "
                    "fetched in an earlier run is not requested again.",
                ),
                th.Property(
                    "uuids_file",
                    th.StringType,
                    description="A file of calls to fetch, one uuid or YYYY/MM/uuid per "
                    "line (blank lines and # comments ignored), meant to be appended to: "
                    "each run reads only the lines added since the last.",
                ),
                th.Property(
                    "intake_store",
                    th.StringType,
                    secret=True,
                    description="Secret (a database URL may hold a password). The store "
                    "of tap-cdr-intake, the Call Disposition webhook receiver, as its "
                    "--store URL (sqlite:///path.db or postgresql://...): each run looks "
                    "up the calls announced since the last.",
                ),
                _minutes(
                    "first_attempt_delay_minutes",
                    5,
                    "Minutes after a webhook's receipt before its call is first looked "
                    "up (VCC Live registers a CDR some minutes after the call).",
                ),
                _minutes(
                    "retry_interval_minutes",
                    5,
                    "Minutes between attempts at a uuid that is not available yet.",
                ),
                th.Property(
                    "max_attempts",
                    th.IntegerType(minimum=1, maximum=100_000),
                    default=20,
                    nullable=False,
                    description="Attempts before a uuid is given up (logged as an ERROR).",
                ),
                _minutes(
                    "wait_for_pending_minutes",
                    0,
                    "Keep retrying pending uuids in-process for up to this many minutes "
                    "(for pipelines that run rarely).",
                ),
            ),
            description="The VCC Live API. Its presence enables the cdr_by_uuid stream.",
        ),
    ).to_dict()

    def __init__(self, **kwargs: Any) -> None:
        validating = kwargs.get("validate_config", True)
        schema_errors: list[str] = []
        crash: Exception | None = None
        try:
            super().__init__(**kwargs)
        except ConfigValidationError as exc:
            schema_errors = exc.errors
        except (AttributeError, TypeError) as exc:
            # The SDK's validator, filling in defaults, fails on a section that is not
            # an object (`"cdr_v3": null`); settings.validate names it.
            if "_config" not in vars(self):
                raise
            crash = exc
        schema = copy.deepcopy(self.config_jsonschema)
        self.append_builtin_config(schema)
        secrets = list(secret_paths(schema))
        for path in secrets:
            REDACTOR.add_url(value_at(self.config, path))
        REDACTOR.install()
        if validating or crash:
            errors = [
                _without_secret_values(setting_error(error), self.config, secrets)
                for error in schema_errors
            ] + settings.validate(self.config, schema)
            if errors:
                raise ConfigValidationError("Config validation failed", errors=errors)
            if crash:
                raise crash
            for warning in settings.warnings(self.config):
                self.logger.warning("%s", warning)
        level = str(self.config.get("metrics_log_level") or "WARNING").upper()
        self.metrics_logger.setLevel(level if level in settings.LOG_LEVELS else "WARNING")
        if isinstance(self.message_writer, BufferedMsgSpecWriter):
            # A stopped run ends with the state it started from if it committed nothing.
            self.message_writer.starting_state(dict(self.state))
            StopOnSignal(self.message_writer, syncing=validating).install()

    @override
    @classmethod
    def invoke(  # type: ignore[override] # the SDK's own signature, as Tap declares it
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: Any = None,
        state: IO[str] | None = None,
        catalog: IO[str] | None = None,
    ) -> None:
        # The SDK reports a bad config itself, ending with a fixed "Config validation
        # failed" line; tap_cdr.cli reports it so that the last line names the problem.
        try:
            super().invoke(
                about=about, about_format=about_format, config=config, state=state, catalog=catalog
            )
        except ConfigValidationError as exc:
            report_config_errors(exc.errors)
            sys.exit(1)

    @override
    def discover_streams(self) -> list[Stream]:
        streams: list[Stream] = []
        if "cdr_v3" in self.config:
            streams.append(CdrV3Stream(self))
        if "cdr_by_uuid" in self.config:
            streams.append(CdrByUuidStream(self))
        return streams

    @override
    def run_discovery(self) -> str:
        if not self.streams:
            self.logger.warning("%s", settings.NO_STREAM)
        return super().run_discovery()

    @override
    @classmethod
    def get_singer_command(cls) -> click.Command:
        command = super().get_singer_command()
        command.help = (
            "Sync call detail records (TEL4VN v3, VCC Live) as a Singer tap. The settings: "
            "tap-cdr --about --format=markdown. To try it without credentials, run the "
            "bundled API emulator: tap-cdr-sandbox --help."
        )
        return command


if __name__ == "__main__":
    main()
