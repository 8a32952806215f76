"""The edges of the `tap-cdr` command: every fatal error as one line, and honest exit
codes for a run that was stopped.

- A failure the user can fix ends the run with one ERROR line that names the stream,
  the setting and the fix, and exit status 1; the traceback is logged at DEBUG only
  (``TAP_CDR_LOGLEVEL=DEBUG``).
- SIGINT and SIGTERM end the run at once, but never in the middle of a message: the
  records already read and the last STATE are written, so the output ends with the
  state a resumed run starts from, and the exit status is 130 or 143 (128 + the
  signal), as a shell reports it. A scheduler then knows the load is partial.

Only the standard library is imported before `main` runs, so that a Ctrl-C while the
SDK loads is an exit code too, not a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

    from tap_cdr.writer import BufferedMsgSpecWriter

# How long a stopped run may take to write its last messages: long enough for a loader
# that pauses its reading while it commits a batch, short enough for a service
# manager's stop timeout. A loader that never reads again would hold the run forever.
STOP_GRACE_SECONDS = 15.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

log = logging.getLogger("tap-cdr")
# Signals that the process was started with ignored (nohup, a background job): they
# stay ignored.
_ignored_at_start: set[int] = set()


class Interrupted(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM. A BaseException, so that no
    ``except Exception`` on the way (the SDK's, a retry loop's) takes it for an error.
    ``writer`` is None when no sync was running (discovery): nothing is to be written."""

    def __init__(self, signum: int, writer: BufferedMsgSpecWriter | None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.writer = writer


class StopOnSignal:
    """SIGINT and SIGTERM raise `Interrupted`, after the message being written if any."""

    def __init__(self, writer: BufferedMsgSpecWriter, *, syncing: bool) -> None:
        self.writer = writer
        self.syncing = syncing

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                ignored = signum in _ignored_at_start
                signal.signal(signum, signal.SIG_IGN if ignored else self.handle)

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        # One stop at a time: a second signal (a supervisor's SIGTERM after a Ctrl-C)
        # must not break the stop under way, which the watchdog bounds anyway. A no-op
        # rather than SIG_IGN: a signal already on its way would be reported as a race.
        for other in STOP_SIGNALS:
            signal.signal(other, _after_the_first)
        threading.Thread(target=_watchdog, args=(signum,), daemon=True).start()
        writer = self.writer if self.syncing else None

        def interrupt() -> None:
            raise Interrupted(signum, writer)

        if self.writer.writing:
            self.writer.after_write = interrupt
        else:
            interrupt()


def _after_the_first(_signum: int, _frame: FrameType | None) -> None:
    """A stop is under way: further SIGINT and SIGTERM change nothing."""


def _watchdog(signum: int) -> None:
    """End a stop that cannot complete: a write blocked on a loader that stopped reading."""
    threading.Event().wait(STOP_GRACE_SECONDS)
    log.error(
        "tap-cdr: stopped by %s, but the loader has not read the output for %.0f s: exiting "
        "now; the last line of the output may be cut",
        signal.Signals(signum).name,
        STOP_GRACE_SECONDS,
    )
    os._exit(128 + signum)  # not _exit_now: the main thread may hold what it would flush


def main() -> None:
    """`tap-cdr`: the SDK's command line, with the edges described above."""
    _ignored_at_start.update(s for s in STOP_SIGNALS if signal.getsignal(s) is signal.SIG_IGN)
    try:
        _run()
    except Interrupted as stop:
        if stop.writer is None:
            log.warning("tap-cdr: stopped by %s before a sync began", stop)
        else:
            log.warning(
                "tap-cdr: stopped by %s; the output ends with the last complete STATE, from "
                "which the next run resumes",
                stop,
            )
            with contextlib.suppress(Exception):  # the loader is gone: no one to tell
                stop.writer.end_interrupted()
        _exit_now(128 + stop.signum)
    except KeyboardInterrupt:  # before the tap set its handlers
        _exit_now(128 + signal.SIGINT)


def _run() -> None:
    from singer_sdk.exceptions import ConfigValidationError  # noqa: PLC0415

    from tap_cdr.tap import TapCDR  # noqa: PLC0415 (the tap imports this module)

    try:
        command = TapCDR.cli  # sets up the SDK's logging, or Meltano's
        _check_inputs()
        command()
    except ConfigValidationError as exc:
        report_config_errors(exc.errors)
        _exit_now(1)
    except Exception as exc:  # noqa: BLE001 (every failure ends as one line)
        # As text: Meltano shows a DEBUG line's message, not its exception.
        log.debug("tap-cdr failed:\n%s", traceback.format_exc())
        log.error("%s", one_line(exc))  # noqa: TRY400 (the traceback is at DEBUG)
        _exit_now(1)


class InputError(Exception):
    """A problem with the command line's input, which the user must fix."""


def _check_inputs() -> None:
    if sys.stdout is None:
        raise InputError("tap-cdr: standard output is closed: nothing could be written")
    for problem in input_file_problems(sys.argv[1:]):
        raise InputError(problem)


def input_file_problems(argv: list[str]) -> list[str]:
    """What is wrong with the --config, --state and --catalog files, before the SDK
    reads them (it would fail with a bare exception)."""
    problems = []
    for option, path in _file_options(argv):
        if option == "--config" and path == "ENV":
            continue
        try:
            value = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append(f"tap-cdr: {option} {path} cannot be read: {exc.strerror}")
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"tap-cdr: {option} {path} is not valid JSON ({exc})")
            continue
        shape = _shape_problem(option, value)
        if shape:
            problems.append(f"tap-cdr: {option} {path}: {shape}")
    return problems


def _file_options(argv: list[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for at, arg in enumerate(argv):
        for option in ("--config", "--state", "--catalog"):
            if arg == option and at + 1 < len(argv):
                found.append((option, argv[at + 1]))
            elif arg.startswith(option + "="):
                found.append((option, arg.split("=", 1)[1]))
    return found


def _shape_problem(option: str, value: object) -> str | None:
    if not isinstance(value, dict):
        return f"expected a JSON object, found {type(value).__name__}"
    if option == "--state":
        bookmarks = value.get("bookmarks", {})
        if not isinstance(bookmarks, dict) or not all(
            isinstance(stream, dict) for stream in bookmarks.values()
        ):
            return '`bookmarks` must map each stream to an object: {"bookmarks": {"cdr_v3": {...}}}'
    if option == "--catalog" and not isinstance(value.get("streams"), list):
        return "expected a Singer catalog, with a `streams` list"
    return None


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
    from singer_sdk.exceptions import FatalAPIError  # noqa: PLC0415

    from tap_cdr.writer import OutputError, output_error  # noqa: PLC0415

    if isinstance(exc, (FatalAPIError, OutputError, InputError)):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ENOSPC):
        text = str(output_error(exc))  # written by the SDK, not our writer (--discover)
    elif _raised_in_stream_maps(exc):
        text = (
            f"tap-cdr: a `stream_maps` expression failed ({type(exc).__name__}: {exc}): "
            "check the expressions of the setting"
        )
    else:
        text = (
            f"tap-cdr: unexpected {type(exc).__name__}: {exc}. This is a bug in tap-cdr: "
            "rerun with TAP_CDR_LOGLEVEL=DEBUG for the traceback and report it"
        )
    return " ".join(text.split())


def _raised_in_stream_maps(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return any(
        "singer_sdk" in frame.filename and "mapper" in frame.filename for frame in frames[-3:]
    )


def _exit_now(status: int) -> None:
    """Exit without waiting for the fetching threads, which may sit in a request for
    up to the request timeout: what they would return is not needed any more."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(status)
