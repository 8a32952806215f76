"""The edges of the `tap-cdr` command: every fatal error as one line, and honest exit
codes for a run that was stopped.

- A failure the user can fix ends the run with one ERROR line that names the stream,
  the setting and the fix, and exit status 1; the traceback is logged at DEBUG only
  (``TAP_CDR_LOGLEVEL=DEBUG``).
- SIGINT and SIGTERM end the run at once, but never in the middle of a message: the
  records already read and the last STATE are written, so the output ends with the
  state a resumed run starts from, and the exit status is 130 or 143 (128 + the
  signal), as a shell reports it. A scheduler then knows the load is partial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from singer_sdk.exceptions import ConfigValidationError, FatalAPIError

from tap_cdr.writer import BufferedMsgSpecWriter, OutputError

if TYPE_CHECKING:
    from types import FrameType

# How long a stopped run may take to write its last messages: long enough for a
# megabyte of buffered records, short enough for a container's stop timeout. A
# loader that no longer reads would otherwise hold the run forever.
STOP_GRACE_SECONDS = 5.0

log = logging.getLogger("tap-cdr")


class Interrupted(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM. A BaseException, so that no
    ``except Exception`` on the way (the SDK's, a retry loop's) takes it for an error."""

    def __init__(self, signum: int, writer: BufferedMsgSpecWriter) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.writer = writer


class StopOnSignal:
    """SIGINT and SIGTERM raise `Interrupted`, after the message being written if any."""

    def __init__(self, writer: BufferedMsgSpecWriter) -> None:
        self.writer = writer

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.handle)
            signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        # Whatever happens next, the process ends: the watchdog covers a stop that
        # cannot complete (a write blocked on a loader that stopped reading).
        watchdog = threading.Timer(STOP_GRACE_SECONDS, os._exit, (128 + signum,))
        watchdog.daemon = True
        watchdog.start()
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends it the hard way

        def interrupt() -> None:
            raise Interrupted(signum, self.writer)

        if self.writer.writing:
            self.writer.after_write = interrupt
        else:
            interrupt()


def main() -> None:
    """`tap-cdr`: the SDK's command line, with the edges described above."""
    from tap_cdr.tap import TapCDR  # noqa: PLC0415 (the tap imports this module)

    try:
        TapCDR.cli()
    except Interrupted as stop:
        log.warning(
            "tap-cdr: stopped by %s; the output ends with the last complete STATE, from "
            "which the next run resumes",
            stop,
        )
        with contextlib.suppress(OutputError):  # the loader is gone: no one to tell
            stop.writer.end_interrupted()
        _exit_now(128 + stop.signum)
    except KeyboardInterrupt:  # before the tap set its handlers
        _exit_now(128 + signal.SIGINT)
    except ConfigValidationError as exc:
        report_config_errors(exc.errors)
        _exit_now(1)
    except Exception as exc:  # every failure ends as one line
        log.debug("tap-cdr failed", exc_info=True)
        log.error("%s", one_line(exc))  # noqa: TRY400 (the traceback is at DEBUG)
        _exit_now(1)


def report_config_errors(errors: list[str]) -> None:
    """One ERROR line per problem. With several, a last line says how many: the one
    line that `meltano config test` shows of a failed run."""
    for error in errors:
        log.error("%s", " ".join(error.split()))
    if len(errors) > 1:
        log.error("tap-cdr: %d problems in the config (above); nothing was requested", len(errors))


def one_line(exc: BaseException) -> str:
    """The message of a failure, on one line: ours are written to be read as they
    are; anything else is named by its type, with a pointer to the traceback."""
    if isinstance(exc, (FatalAPIError, OutputError)):
        text = str(exc)
    else:
        text = (
            f"tap-cdr: unexpected {type(exc).__name__}: {exc}. This is a bug in tap-cdr: "
            "rerun with TAP_CDR_LOGLEVEL=DEBUG for the traceback and report it"
        )
    return " ".join(text.split())


def _exit_now(status: int) -> None:
    """Exit without waiting for the fetching threads, which may sit in a request for
    up to the request timeout: what they would return is not needed any more."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
