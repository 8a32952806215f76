{#- VCC Live calls as loaded: typed, instants in UTC, one row per `uuid` (the newest
    load of it). `time_ended` is the tap's: start_ts_utc + ringtime + billingtime. -#}
{%- set loaded = loaded_columns(source('tap_cdr', 'cdr_by_uuid')) -%}
{%- set read = {
    'uuid': dbt.type_string(),
    'direction': dbt.type_string(),
    'start_ts_utc': dbt.type_timestamp(),
    'billing_ts_utc': dbt.type_timestamp(),
    'time_ended': dbt.type_timestamp(),
    'queuetime': dbt.type_bigint(),
    'ringtime': dbt.type_bigint(),
    'talktime': dbt.type_bigint(),
    'holdtime': dbt.type_bigint(),
    'afterwork': dbt.type_bigint(),
    'userid': dbt.type_bigint(),
    'queueid': dbt.type_bigint(),
    'projectid': dbt.type_bigint(),
    'dc': dbt.type_string(),
    'source': dbt.type_string(),
    'destination': dbt.type_string(),
} -%}

with loaded as (
    select
        cast(uuid as {{ dbt.type_string() }}) as uuid,
        cast(direction as {{ dbt.type_string() }}) as direction,
        {{ utc_timestamp('start_ts_utc', loaded.get('start_ts_utc', '')) }} as start_ts_utc,
        {{ utc_timestamp('billing_ts_utc', loaded.get('billing_ts_utc', '')) }} as billing_ts_utc,
        {{ utc_timestamp('time_ended', loaded.get('time_ended', '')) }} as time_ended,
        cast(queuetime as {{ dbt.type_bigint() }}) as queuetime,
        cast(ringtime as {{ dbt.type_bigint() }}) as ringtime,
        cast(talktime as {{ dbt.type_bigint() }}) as talktime,
        cast(holdtime as {{ dbt.type_bigint() }}) as holdtime,
        cast(afterwork as {{ dbt.type_bigint() }}) as afterwork,
        cast(userid as {{ dbt.type_bigint() }}) as userid,
        cast(queueid as {{ dbt.type_bigint() }}) as queueid,
        cast(projectid as {{ dbt.type_bigint() }}) as projectid,
        cast(dc as {{ dbt.type_string() }}) as dc,
        cast(source as {{ dbt.type_string() }}) as source,
        cast(destination as {{ dbt.type_string() }}) as destination,
        row_number() over (
            partition by uuid order by {{ newest_load_first(loaded, 'time_ended') }}
        ) as load_rank
    from {{ loaded_or_empty(source('tap_cdr', 'cdr_by_uuid'), read) }}
)

select
    uuid, direction, start_ts_utc, billing_ts_utc, time_ended, queuetime, ringtime,
    talktime, holdtime, afterwork, userid, queueid, projectid, dc, source, destination
from loaded
where load_rank = 1
