"""What `tap-cdr-intake` shows at ``GET /metrics``, in the Prometheus text format.

Every label takes its values from a fixed set (reasons, fields, statuses), never from a
request: no secret and no personal datum can reach a metric.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.core import Metric

PREFIX = "tap_cdr_intake"
# Every label's values, each series shown from the start at 0: `increase()` and `rate()`
# see no first event in a series that appears with it.
STATUSES = ("200", "400", "401", "408", "413", "415", "503")
REJECTED = (
    "unauthorized", "content_type", "too_large", "timeout", "disconnected", "decrypt",
    "not_json", "too_deep", "not_object", "no_uuid", "bad_uuid", "unreadable",
    "headers_too_large", "headers_timeout", "request_timeout",  # closed by the server
    "too_many_connections",
)  # fmt: skip
NULLED = ("projectid", "call_start_time")
UNAVAILABLE = ("store_error", "timeout", "writer_stopped", "error")
# A `_created` series beside each counter says nothing an operator alerts on.
disable_created_metrics()


class Metrics:
    """The receiver's counters, histograms and gauges, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)
        self.responses = Counter(
            f"{PREFIX}_responses",
            "Webhook requests answered, by HTTP status (503: the store could not commit).",
            ["status"],
            registry=registry,
        )
        self.stored = Counter(
            f"{PREFIX}_events_stored", "Calls stored for the first time.", registry=registry
        )
        self.duplicates = Counter(
            f"{PREFIX}_duplicates",
            "Deliveries of a call already stored (counted, not stored again).",
            registry=registry,
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected",
            "Requests refused, by reason (the 400s are also rows of rejected_events).",
            ["reason"],
            registry=registry,
        )
        self.nulled = Counter(
            f"{PREFIX}_fields_nulled",
            "Events stored with a field set to null because its value was unusable.",
            ["field"],
            registry=registry,
        )
        self.unavailable = Counter(
            f"{PREFIX}_unavailable",
            "Webhook requests answered 503, by reason.",
            ["reason"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            f"{PREFIX}_commit_seconds",
            "Time of one transaction of the writer (its events, and the sync to disk).",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=registry,
        )
        self.batch_events = Histogram(
            f"{PREFIX}_batch_events",
            "Events committed in one transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        for counter, values in (
            (self.responses, STATUSES),
            (self.rejected, REJECTED),
            (self.nulled, NULLED),
            (self.unavailable, UNAVAILABLE),
        ):
            for value in values:
                counter.labels(value)
        self.healthy = Gauge(
            f"{PREFIX}_healthy",
            "1 when the store took a commit at this scrape (the probe of /healthz), else 0.",
            registry=registry,
        )
        self.last_commit = time.monotonic()  # the start, until the first commit
        Gauge(
            f"{PREFIX}_last_commit_age_seconds",
            "Seconds since an event was last committed (since the start, before the first).",
            registry=registry,
        ).set_function(lambda: time.monotonic() - self.last_commit)

    @staticmethod
    def total(counter: Counter) -> int:
        """The sum of a counter's samples, over its labels. (Not through the registry,
        whose every collect counts the store's rows.)"""
        return int(
            sum(
                sample.value
                for metric in counter.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
        )

    def watch(
        self, queue_depth: Callable[[], int], row_counts: Callable[[], dict[str, int]]
    ) -> None:
        """Gauges read at each scrape: the writer's queue, and the rows in the store."""
        Gauge(
            f"{PREFIX}_writer_queue", "Events waiting for the writer.", registry=self.registry
        ).set_function(queue_depth)
        self.registry.register(_StoreRows(row_counts))


class _StoreRows(Collector):
    def __init__(self, row_counts: Callable[[], dict[str, int]]) -> None:
        self.row_counts = row_counts

    def describe(self) -> Iterator[Metric]:
        # What the registry asks at registration, instead of a first collect().
        yield self._family()

    @override
    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for table, count in self.row_counts().items():  # none when the store cannot say
            family.add_metric([table], count)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            f"{PREFIX}_store_rows", "Rows in the store, by table.", labels=["table"]
        )
