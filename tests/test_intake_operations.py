"""tap-cdr-intake as an operator meets it: what it keeps of implausible and hostile
bodies, how its store URL is shown, its command line (prune, --store, --version), what
/metrics offers an alert from the start, and the README's procedures (cron prune, the
systemd unit, the move to another store) run as written."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import threading
from datetime import date, datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import text as sql

from tap_cdr.intake.metrics import NULLED, REJECTED, STATUSES, UNAVAILABLE
from tap_cdr.intake.source import GAP_HORIZON
from tap_cdr.intake.store import (
    IDLE_IN_TRANSACTION_SECONDS,
    StoreError,
    open_reader,
    open_store,
    redact,
    shown,
)
from tests.conftest import run_tap, vcc_config
from tests.intake_support import (
    PG_URL,
    RECEIVER,
    Receiver,
    event,
    execute,
    post,
    rows,
    uuid_n,
)
from tests.test_intake_unattended import lock_store, metrics_of

README = (Path(__file__).parent.parent / "README.md").read_text()


def marked(name: str) -> str:
    """The README's text between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""
    return README.split(f"<!-- {name}:begin -->")[1].split(f"<!-- {name}:end -->")[0]


def month_start(months: int, today: date) -> str:
    """A call_start_time ``months`` months after today's month (UTC)."""
    year, month = divmod(today.year * 12 + today.month - 1 + months, 12)
    return f"{year:04d}-{month + 1:02d}-15 10:00:00"


def test_a_call_start_month_where_the_cdr_cannot_be_is_stored_as_null(tmp_path):
    """By the receiver's own clock: months from 13 before to 1 after this one are kept;
    years 9999, 2099, 1970 and the months just outside are stored as null, with a
    warning naming the field (never the value) and the metric."""
    store = f"sqlite:///{tmp_path / 'intake.db'}"
    intake = Receiver(store, tmp_path / "intake.log", received_on=None).start()
    today = datetime.now(timezone.utc).date()
    starts = {
        1: "9999-01-01 00:00:00",
        2: "2099-06-30 23:59:59",
        3: "1970-01-01 00:00:00",
        4: month_start(-14, today),
        5: month_start(2, today),
        6: month_start(-13, today),
        7: month_start(1, today),
        8: month_start(0, today),
    }
    try:
        for n, start in starts.items():
            assert post(intake.post_url(), event(uuid_n(n), call_start_time=start)) == 200
        samples = metrics_of(intake)
    finally:
        intake.stop()
    stored = dict(rows(store, "select uuid, month from announced_calls"))
    kept = {n: start[:7].replace("-", "/") for n, start in starts.items() if n >= 6}
    assert stored == {uuid_n(n): kept.get(n) for n in starts}
    assert samples['tap_cdr_intake_fields_nulled_total{"field": "call_start_time"}'] == 5
    log = intake.log.read_text()
    for n in range(1, 6):
        assert f"uuid {uuid_n(n)}: its call_start_time is unusable and is stored as null" in log
    for start in list(starts.values())[:5]:
        assert start[:7] not in log


def test_a_rejected_body_keeps_at_most_50_keys_of_64_characters(tmp_path):
    store = f"sqlite:///{tmp_path / 'intake.db'}"
    intake = Receiver(store, tmp_path / "intake.log").start()
    hostile = {f"{n:05d}" + "k" * 100: n for n in range(3000)}  # 330 kB
    try:
        assert post(intake.post_url(), hostile) == 400
    finally:
        intake.stop()
    ((reason, keys),) = rows(store, "select reason, keys from rejected_events")
    kept = json.loads(keys)
    assert reason == "no uuid"
    assert kept == [key[:64] for key in sorted(hostile)[:50]]
    assert [len(key) for key in kept] == [64] * 50


SECRET = "s3cr3t+P/w=d"  # a test value
HIDDEN_FORMS = {
    # name: (the store URL, how it is shown)
    "userinfo": (
        "postgresql://intake:s3cr3tpw@127.0.0.1:9/intake",
        "postgresql://intake:***@127.0.0.1:9/intake",
    ),
    "percent-encoded": (
        f"postgresql://intake:{quote(SECRET, safe='')}@127.0.0.1:9/intake",
        "postgresql://intake:***@127.0.0.1:9/intake",
    ),
    "query": (
        f"postgresql://intake@127.0.0.1:9/intake?password={quote(SECRET, safe='')}",
        "postgresql://intake@127.0.0.1:9/intake?password=%2A%2A%2A",
    ),
    "libpq keyword": (
        f"host=127.0.0.1 port=9 user=intake password={SECRET} dbname=intake",
        "host=127.0.0.1 port=9 user=intake password=*** dbname=intake",
    ),
    "@ in the password": (
        "postgresql://intake:p@ss@127.0.0.1:9/intake",
        "postgresql://***@127.0.0.1:9/intake",
    ),
    "1-character password": (
        "postgresql://intake:p@127.0.0.1:9/intake",
        "postgresql://intake:***@127.0.0.1:9/intake",
    ),
}


@pytest.mark.parametrize(("url", "expected"), HIDDEN_FORMS.values(), ids=HIDDEN_FORMS)
def test_the_store_url_is_shown_with_only_its_password_hidden(url, expected):
    assert shown(url) == expected
    # An error that echoes the URL: its password goes, the words around it stay.
    redacted = redact(f'could not connect to "{url}" as user "intake": port 9 refused', url)
    assert redacted.startswith('could not connect to "')
    assert redacted.endswith('" as user "intake": port 9 refused')
    for secret in ("s3cr3t", quote(SECRET, safe=""), "p@ss", ":p@"):
        assert secret not in redacted


def refused(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """The one line on stderr of `tap-cdr-intake` run with ``args``, which exits 1."""
    proc = subprocess.run(
        [str(RECEIVER), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize("form", ["@ in the password", "1-character password"])
def test_a_store_that_cannot_be_opened_shows_the_url_whole_but_the_password(form):
    url, expected = HIDDEN_FORMS[form]
    line = refused("prune", "--older-than", "90d", env={"TAP_CDR_INTAKE_STORE": url})
    assert line.startswith(f"tap-cdr-intake: the store {expected} cannot be opened (")
    assert line.endswith("): check --store or TAP_CDR_INTAKE_STORE")
    assert "p@ss" not in line and '"ss@' not in line
    assert "(OperationalError: " in line and "127.0.0.1" in line  # no "O***erationalError"


PIECES = "postgresql://intake:Tr0ub4dor@x:SuperSecretTail@127.0.0.1/db"


def test_no_piece_of_a_password_with_an_unencoded_at_and_colon_is_shown():
    line = refused("prune", "--older-than", "90d", env={"TAP_CDR_INTAKE_STORE": PIECES})
    assert "check --store or TAP_CDR_INTAKE_STORE" in line
    for piece in ("Tr0ub4dor", "SuperSecretTail"):
        assert piece not in line


def test_the_tap_reads_such_a_store_url_as_one_line_without_the_password():
    with pytest.raises(StoreError) as raised:
        open_reader(PIECES)
    message = str(raised.value)
    assert message.startswith("the intake store ")
    for piece in ("Tr0ub4dor", "SuperSecretTail"):
        assert piece not in message


def test_a_receivers_transaction_cannot_outlive_the_taps_watch_of_its_id(tmp_path):
    """A receiver frozen mid-transaction is rolled back by the server long before the
    tap forgets the id it holds (GAP_HORIZON)."""
    probe = subprocess.run(
        ["psql", PG_URL, "-c", "select 1"], capture_output=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        pytest.skip("PostgreSQL is not reachable")
    engine = open_store(PG_URL)
    try:
        with engine.connect() as conn:
            shown_value = conn.execute(sql("show idle_in_transaction_session_timeout")).scalar()
    finally:
        engine.dispose()
    assert shown_value == "1min"
    assert timedelta(seconds=IDLE_IN_TRANSACTION_SECONDS) < GAP_HORIZON / 5


def old_rows(store: str) -> None:
    """A store with one call and one rejected event received in 2020."""
    open_store(store).dispose()
    execute(
        store,
        "insert into announced_calls (uuid, received_at, deliveries) "
        f"values ('{uuid_n(1)}', '2020-01-01 00:00:00', 1)",
    )
    execute(
        store,
        "insert into rejected_events (received_at, reason, size, keys) "
        "values ('2020-01-01 00:00:00', 'no uuid', 2, '[]')",
    )


@pytest.mark.parametrize("where", ["before prune", "after prune"])
def test_prune_takes_store_on_either_side_of_the_subcommand(tmp_path, where):
    store = f"sqlite:///{tmp_path / 'intake.db'}"
    old_rows(store)
    prune = ["prune", "--older-than", "90D"]
    args = ["--store", store, *prune] if where == "before prune" else [*prune, "--store", store]
    pruned = subprocess.run(
        [str(RECEIVER), *args], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 1 announced calls and 1 rejected events" in pruned.stderr
    assert rows(store, "select count(*) from announced_calls") == [(0,)]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["intake.db"]


def test_prune_refuses_a_sqlite_store_that_does_not_exist(tmp_path):
    missing = tmp_path / "typo.db"
    line = refused("--store", f"sqlite:///{missing}", "prune", "--older-than", "90d", cwd=tmp_path)
    assert line == (
        f"tap-cdr-intake prune: the store sqlite:///{missing} does not exist: set --store or "
        "TAP_CDR_INTAKE_STORE to the receiver's store"
    )
    assert list(tmp_path.iterdir()) == []


def test_prune_refuses_a_database_without_the_store_and_creates_nothing(tmp_path):
    empty = tmp_path / "other.db"
    execute(f"sqlite:///{empty}", "create table something_else (x integer)")
    line = refused("--store", f"sqlite:///{empty}", "prune", "--older-than", "90d")
    assert line == (
        f"tap-cdr-intake prune: sqlite:///{empty} holds no intake store (no table "
        "announced_calls): set --store or TAP_CDR_INTAKE_STORE to the receiver's store"
    )
    assert rows(f"sqlite:///{empty}", "select name from sqlite_master where type = 'table'") == [
        ("something_else",)
    ]


def test_a_store_url_of_another_database_is_one_line_naming_the_setting(tmp_path):
    line = refused(
        "--store",
        "mysql://intake@127.0.0.1/intake",
        env={"PATH": "/usr/bin:/bin", "TAP_CDR_INTAKE_SECRET_KEY": "k" * 32},
    )
    assert "mysql:// is not a store: use sqlite:///... or postgresql://..." in line
    assert "check --store or TAP_CDR_INTAKE_STORE" in line


def test_a_port_in_use_is_never_logged_as_listened_on(tmp_path):
    first = Receiver(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "a.log").start()
    try:
        second = subprocess.run(
            [str(RECEIVER), "--port", str(first.port), "--store", f"sqlite:///{tmp_path / 'b.db'}"],
            env={"PATH": "/usr/bin:/bin", "TAP_CDR_INTAKE_SECRET_KEY": "k" * 32},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        first.stop()
    assert second.returncode != 0
    assert "address already in use" in second.stderr
    assert "listening on" not in second.stderr
    assert "listening on" in (tmp_path / "a.log").read_text()


def test_help_says_the_key_is_for_serving_and_version_says_the_version():
    def run(*args: str) -> str:
        return subprocess.run(
            [str(RECEIVER), *args], capture_output=True, text=True, check=True
        ).stdout

    helped = " ".join(run("--help").split())
    assert "TAP_CDR_INTAKE_SECRET_KEY required to serve (prune needs none)" in helped
    pruning = run("prune", "--help")
    assert "TAP_CDR_INTAKE_SECRET_KEY" not in pruning
    assert "TAP_CDR_INTAKE_STORE" in pruning
    assert run("--version").strip() == f"tap-cdr-intake {version('tap-cdr')}"


def test_the_readme_cron_line_prunes_with_the_environment_file(tmp_path):
    """The README's crontab line, as cron runs it: /bin/sh with an empty environment,
    the store's URL (with characters the shell would take) in the environment file."""
    (line,) = [x.strip() for x in marked("prune-cron").splitlines() if "15 3 * * * " in x]
    command = line.removeprefix("15 3 * * * ")
    store_path = tmp_path / "intake&store.db"
    store = f"sqlite:///{store_path}"
    old_rows(store)
    environment = tmp_path / "tap-cdr-intake.env"
    environment.write_text(
        marked("environment-file").split("```sh\n")[1].split("```")[0]
        .replace("sqlite:////var/lib/tap-cdr-intake/intake.db", store)
    )  # fmt: skip
    command = command.replace("/etc/tap-cdr-intake.env", str(environment)).replace(
        "/opt/tap-cdr/bin/tap-cdr-intake", str(RECEIVER)
    )
    pruned = subprocess.run(
        ["/usr/bin/env", "-i", "/bin/sh", "-c", command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 1 announced calls and 1 rejected events" in pruned.stderr
    assert rows(store, "select count(*) from announced_calls") == [(0,)]


def unit_text(name: str) -> str:
    """A README ``ini`` block, its indentation gone, its command the venv's."""
    block = marked(name).split("```ini\n")[1].split("```")[0]
    text = "\n".join(line.strip() for line in block.splitlines()) + "\n"
    return text.replace("/opt/tap-cdr/bin/tap-cdr-intake", str(RECEIVER))


def test_the_readme_systemd_units_are_valid(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = unit_text("systemd-unit")
    for needed in (
        "After=network-online.target", "Wants=network-online.target",
        "StartLimitIntervalSec=0", "RestartSec=2", "WantedBy=multi-user.target",
        "User=tap-cdr", "StateDirectory=tap-cdr-intake", "LimitNOFILE=65536",
    ):  # fmt: skip
        assert needed in unit.splitlines(), needed
    service, timer = unit_text("prune-timer").split("# tap-cdr-intake-prune.timer\n")
    units = {
        "tap-cdr-intake.service": unit,
        "tap-cdr-intake-prune.service": service,
        "tap-cdr-intake-prune.timer": timer,
    }
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    verified = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / name) for name in units)],
        capture_output=True,
        text=True,
        check=False,
    )
    said = [line for line in verified.stderr.splitlines() if "tap-cdr-intake" in line]
    assert verified.returncode == 0 and said == [], verified.stderr


def test_metrics_show_every_series_from_the_start_and_whether_the_store_is_healthy(
    tmp_path, any_store
):
    intake = Receiver(any_store, tmp_path / "intake.log").start()
    try:
        samples = metrics_of(intake)
        locked, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=lock_store, args=(any_store, locked, release))
        holder.start()
        try:
            assert locked.wait(30)
            while_locked = metrics_of(intake)
        finally:
            release.set()
            holder.join()
        after = metrics_of(intake)
    finally:
        intake.stop()
    series = {
        "responses": ("status", STATUSES),
        "rejected": ("reason", REJECTED),
        "fields_nulled": ("field", NULLED),
        "unavailable": ("reason", UNAVAILABLE),
    }
    for name, (label, values) in series.items():
        for value in values:
            assert samples[f'tap_cdr_intake_{name}_total{{"{label}": "{value}"}}'] == 0
    assert samples["tap_cdr_intake_healthy{}"] == 1
    assert while_locked["tap_cdr_intake_healthy{}"] == 0
    assert after["tap_cdr_intake_healthy{}"] == 1
    # The README's table names exactly these values.
    for name, (_, values) in series.items():
        (row,) = [x for x in README.splitlines() if f"`tap_cdr_intake_{name}_total{{" in x]
        assert set(re.findall(r"`([a-z_0-9]+)`", row.split("|")[2])) == set(values), name


def test_moving_to_another_store_as_the_readme_says_loses_no_call(vcc, tmp_path, caplog):
    """README production step 8, from one SQLite store to another (what matters is that
    the store changes): calls received within first_attempt_delay of the last run on the
    old store are read by a run after, as the tap's line says, before the switch."""
    server = vcc()
    uuids = server.config.vcc.uuids
    old, new = (f"sqlite:///{tmp_path / name}" for name in ("old.db", "new.db"))
    receiver = Receiver(old, tmp_path / "old.log").start()
    try:
        assert post(receiver.post_url(), event(uuids[1])) == 200
        first = run_tap(vcc_config(server, intake_store=old))
        emitted, state = first.ids_of("uuid"), first.final_state
        assert emitted == []  # received less than first_attempt_delay_minutes ago
        assert post(receiver.post_url(), event(uuids[2])) == 200
    finally:
        receiver.stop()
    # (1) The webhooks go to the new store now.
    receiver = Receiver(new, tmp_path / "new.log").start()
    try:
        assert post(receiver.post_url(), event(uuids[3])) == 200
    finally:
        receiver.stop()
    step = marked("store-move")
    waits = "wait for the next run"
    assert waits in " ".join(step.split())
    # (2) Runs on the old store until its line no longer says that calls wait.
    config, said, runs = vcc_config(server, intake_store=old), [waits], 0
    while any(waits in line for line in said):
        runs += 1
        caplog.clear()
        with caplog.at_level(logging.INFO):
            result = run_tap(config, state)
        said = [x for x in caplog.messages if "the intake store announced" in x]
        assert said
        emitted += result.ids_of("uuid")
        state = result.final_state
        # As time passes: the old store's calls become due.
        execute(old, "update announced_calls set received_at = '2020-01-01 00:00:00'")
    assert runs == 2  # the first said that 2 calls wait
    # (3) The new store: read from its start.
    execute(new, "update announced_calls set received_at = '2020-01-01 00:00:00'")
    result = run_tap(vcc_config(server, intake_store=new), state)
    emitted += result.ids_of("uuid")
    assert sorted(emitted) == sorted(uuids[1:4])
