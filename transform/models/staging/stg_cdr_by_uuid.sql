{#- VCC Live calls as loaded: typed, instants in UTC, one row per `uuid` (the newest
    load of it). `time_ended` is the tap's: start_ts_utc + ringtime + billingtime. -#}
{%- set loaded = loaded_columns(source('tap_cdr', 'cdr_by_uuid')) -%}

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
    from {{ source('tap_cdr', 'cdr_by_uuid') }}
)

select
    uuid, direction, start_ts_utc, billing_ts_utc, time_ended, queuetime, ringtime,
    talktime, holdtime, afterwork, userid, queueid, projectid, dc, source, destination
from loaded
where load_rank = 1
