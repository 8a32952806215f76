"""TapCDR: the settings schema and the streams; nothing else."""

from __future__ import annotations

from typing import Any

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError

from tap_cdr import settings
from tap_cdr.streams import CdrByUuidStream, CdrV3Stream
from tap_cdr.writer import BufferedMsgSpecWriter


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
        th.Property(
            "lookback_minutes",
            th.IntegerType,
            default=settings.DEFAULT_LOOKBACK_MINUTES,
            description="Each incremental run re-reads this many minutes before the "
            "bookmark, because CDRs are registered some minutes after a call ends.",
        ),
        th.Property(
            "allow_insecure_http",
            th.BooleanType,
            default=False,
            description="Allow a plain http:// base_url to a non-loopback host.",
        ),
        th.Property(
            "request_timeout_seconds",
            th.NumberType,
            default=settings.DEFAULT_REQUEST_TIMEOUT_SECONDS,
            description="Seconds to wait for an API response before retrying the request.",
        ),
        th.Property(
            "max_request_tries",
            th.IntegerType,
            default=settings.DEFAULT_MAX_REQUEST_TRIES,
            description="Attempts per request (timeouts, 429, 5xx, malformed bodies) before "
            "the sync fails.",
        ),
        th.Property(
            "max_retry_wait_seconds",
            th.NumberType,
            default=settings.DEFAULT_MAX_RETRY_WAIT_SECONDS,
            description="Longest wait between attempts, including a server's Retry-After.",
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
                    default=settings.DEFAULT_TIMEZONE,
                    description="IANA zone of the API's naive timestamps.",
                ),
                th.Property(
                    "page_size",
                    th.IntegerType,
                    default=settings.DEFAULT_PAGE_SIZE,
                    description="Rows per request (the `limit` parameter).",
                ),
                th.Property(
                    "window_hours",
                    th.IntegerType,
                    default=settings.DEFAULT_WINDOW_HOURS,
                    description="Size of the date windows a sync is read in; state "
                    "is saved after each.",
                ),
                th.Property(
                    "max_concurrency",
                    th.IntegerType,
                    default=settings.DEFAULT_MAX_CONCURRENCY,
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
                        additional_properties=False,
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
                    th.StringType,
                    required=True,
                    description="Your call centre's id (its subdomain); the Basic auth user.",
                ),
                th.Property(
                    "api_token",
                    th.StringType,
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
                    "uuids",
                    th.ArrayType(th.StringType),
                    description="Calls to fetch: each a uuid or YYYY/MM/uuid.",
                ),
                th.Property(
                    "uuids_file",
                    th.StringType,
                    description="A file of calls to fetch, one uuid or YYYY/MM/uuid per "
                    "line; blank lines and # comments are ignored.",
                ),
                th.Property(
                    "retry_interval_minutes",
                    th.IntegerType,
                    default=settings.DEFAULT_RETRY_INTERVAL_MINUTES,
                    description="Minutes between attempts at a uuid that is not available yet.",
                ),
                th.Property(
                    "max_attempts",
                    th.IntegerType,
                    default=settings.DEFAULT_MAX_ATTEMPTS,
                    description="Attempts before a uuid is given up (logged as an ERROR).",
                ),
                th.Property(
                    "wait_for_pending_minutes",
                    th.IntegerType,
                    default=0,
                    description="Keep retrying pending uuids in-process for up to this "
                    "many minutes (for pipelines that run rarely).",
                ),
            ),
            description="The VCC Live CDR-by-uuid API. Its presence enables the "
            "cdr_by_uuid stream.",
        ),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if kwargs.get("validate_config", True):
            errors = settings.validate(self.config)
            if errors:
                raise ConfigValidationError("Config validation failed", errors=errors)

    def discover_streams(self) -> list:
        streams = []
        if "cdr_v3" in self.config:
            streams.append(CdrV3Stream(self))
        if "cdr_by_uuid" in self.config:
            streams.append(CdrByUuidStream(self))
        return streams


if __name__ == "__main__":
    TapCDR.cli()
