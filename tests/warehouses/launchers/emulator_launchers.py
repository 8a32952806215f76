"""Run a warehouse loader, as Meltano installed it from meltano.yml, against a local
emulator. Test scaffolding: it adapts what the emulator cannot take from the loader as
is, and nothing of the loader's type mapping or load logic (the README lists it all).

target-snowflake-on-fakesnow (meltanolabs-target-snowflake, fakesnow server at
FAKESNOW_URL):
- Connection: the loader's `get_connect_args` has no host, port or protocol; they are
  added, pointing at the server (with the session's schema, which fakesnow needs for
  a MERGE, and a short network timeout).
- Internal stage: fakesnow has no PUT, no stage in FROM, no REMOVE, cannot drop a file
  format, and cannot run QUALIFY inside MERGE. The staged batch files are put into a
  table instead, keeping the last row per key as the loader's QUALIFY clause does,
  and the loader's own MERGE statement reads from that table. The MERGE, the column
  casts and the types are the loader's.

target-bigquery-on-bqemulator (z3-target-bigquery, bqemulator at
BIGQUERY_EMULATOR_HOST, which the loader's client library reads itself):
- Load files: bqemulator cannot read the gzip-compressed files the loader uploads to
  a load job (real BigQuery can); they are uploaded decompressed. Same rows, same job
  configuration.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from typing import Any
from urllib.parse import urlsplit

GZIP_MAGIC = b"\x1f\x8b"
LOADER_DEDUP = r" QUALIFY ROW_NUMBER\(\) OVER \(PARTITION BY .*? ORDER BY SEQ8\(\) DESC\) = 1"


def target_snowflake_on_fakesnow() -> None:
    from sqlalchemy import text
    from target_snowflake.connector import SnowflakeConnector
    from target_snowflake.target import TargetSnowflake

    server = urlsplit(os.environ["FAKESNOW_URL"])
    connect_args = SnowflakeConnector.get_connect_args
    merge_statement = SnowflakeConnector._get_merge_from_stage_statement
    merge_from_stage = SnowflakeConnector.merge_from_stage

    def stage_table(connector: Any, sync_id: str) -> str:
        name = re.sub(r"\W", "_", sync_id)
        config = connector.config
        return f'{config["database"]}.{config["default_target_schema"]}."stage_{name}"'

    def emulator_connect_args(self: Any) -> dict:
        return {
            **connect_args(self),
            "host": server.hostname,
            "port": server.port,
            "protocol": server.scheme,
            # fakesnow runs a MERGE only in a session with a current schema.
            "schema": self.config["default_target_schema"],
            # Fail in a minute, not after the connector's hundred retries of a 500.
            "network_timeout": 60,
        }

    def put_batches_to_stage(self: Any, sync_id: str, files: list[str]) -> None:
        table = stage_table(self, sync_id)
        with self._connect() as conn, conn.begin():
            conn.execute(text(f"create or replace table {table} (c1 variant, seq integer)"))
            seq = 0
            for uri in files:
                with gzip.open(urlsplit(uri).path, "rt", encoding="utf-8") as handle:
                    for line in handle:
                        insert = f"insert into {table} select parse_json(:row), :seq"
                        conn.execute(text(insert), {"row": line, "seq": seq})
                        seq += 1

    def merge_from_last_rows(self: Any, **kwargs: Any) -> Any:
        table = stage_table(self, kwargs["sync_id"])
        keys = ", ".join(
            f"c1:{self.formatter.format_collation(key)}" for key in kwargs["key_properties"]
        )
        last = f'create or replace table {table[:-1]}_last" as select * from {table} '
        last += f"qualify row_number() over (partition by {keys} order by seq desc) = 1"
        with self._connect() as conn, conn.begin():
            conn.execute(text(last))
        return merge_from_stage(self, **kwargs)

    def merge_from_table(self: Any, **kwargs: Any) -> Any:
        statement, params = merge_statement(self, **kwargs)
        sync_id, file_format = kwargs["sync_id"], kwargs["file_format"]
        sql = statement.text.replace(
            f"'@~/target-snowflake/{sync_id}'(file_format => {file_format})",
            stage_table(self, sync_id)[:-1] + '_last"',
        )
        sql = re.sub(LOADER_DEDUP, "", sql)  # done when the last rows were kept above
        return text(sql.replace("$1:", "c1:")), params

    def drop_stage_tables(self: Any, sync_id: str) -> None:
        table = stage_table(self, sync_id)
        with self._connect() as conn, conn.begin():
            conn.execute(text(f"drop table if exists {table}"))
            conn.execute(text(f'drop table if exists {table[:-1]}_last"'))

    SnowflakeConnector.get_connect_args = emulator_connect_args
    SnowflakeConnector.put_batches_to_stage = put_batches_to_stage
    SnowflakeConnector.merge_from_stage = merge_from_last_rows
    SnowflakeConnector._get_merge_from_stage_statement = merge_from_table
    SnowflakeConnector.remove_staged_files = drop_stage_tables
    SnowflakeConnector.drop_file_format = lambda self, file_format: None
    TargetSnowflake.cli()


def target_bigquery_on_bqemulator() -> None:
    from google.cloud import bigquery
    from target_bigquery.target import TargetBigQuery

    load_table_from_file = bigquery.Client.load_table_from_file

    def load_decompressed(self: Any, file_obj: Any, *args: Any, **kwargs: Any) -> Any:
        data = file_obj.read()
        if data[:2] == GZIP_MAGIC:
            data = gzip.decompress(data)
        return load_table_from_file(self, io.BytesIO(data), *args, **kwargs)

    bigquery.Client.load_table_from_file = load_decompressed
    TargetBigQuery.cli()
