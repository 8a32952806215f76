{#- TEL4VN v3 calls as loaded: typed, instants in UTC, one row per `id` (the newest
    load of it). -#}
{%- set loaded = loaded_columns(source('tap_cdr', 'cdr_v3')) -%}
{%- set read = {
    'id': dbt.type_string(),
    'direction': dbt.type_string(),
    'status': dbt.type_string(),
    'cause': dbt.type_string(),
    'time_started': dbt.type_timestamp(),
    'time_answered': dbt.type_timestamp(),
    'time_ended': dbt.type_timestamp(),
    'billsec': dbt.type_bigint(),
    'extension': dbt.type_string(),
    'receive_dest': dbt.type_string(),
    'campaign_uuid': dbt.type_string(),
    'from_number': dbt.type_string(),
    'to_number': dbt.type_string(),
} -%}

with loaded as (
    select
        cast(id as {{ dbt.type_string() }}) as id,
        cast(direction as {{ dbt.type_string() }}) as direction,
        cast(status as {{ dbt.type_string() }}) as status,
        cast(cause as {{ dbt.type_string() }}) as cause,
        {{ utc_timestamp('time_started', loaded.get('time_started', '')) }} as time_started,
        {{ utc_timestamp('time_answered', loaded.get('time_answered', '')) }} as time_answered,
        {{ utc_timestamp('time_ended', loaded.get('time_ended', '')) }} as time_ended,
        cast(billsec as {{ dbt.type_bigint() }}) as billsec,
        cast(extension as {{ dbt.type_string() }}) as extension,
        cast(receive_dest as {{ dbt.type_string() }}) as receive_dest,
        cast(campaign_uuid as {{ dbt.type_string() }}) as campaign_uuid,
        cast(from_number as {{ dbt.type_string() }}) as from_number,
        cast(to_number as {{ dbt.type_string() }}) as to_number,
        row_number() over (
            partition by id order by {{ newest_load_first(loaded, 'time_ended') }}
        ) as load_rank
    from {{ loaded_or_empty(source('tap_cdr', 'cdr_v3'), read) }}
)

select
    id, direction, status, cause, time_started, time_answered, time_ended, billsec,
    extension, receive_dest, campaign_uuid, from_number, to_number
from loaded
where load_rank = 1
