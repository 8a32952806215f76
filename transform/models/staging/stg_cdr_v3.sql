{#- TEL4VN v3 calls as loaded: typed, instants in UTC, one row per `id` (the newest
    load of it). -#}
{%- set loaded = loaded_columns(source('tap_cdr', 'cdr_v3')) -%}

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
    from {{ source('tap_cdr', 'cdr_v3') }}
)

select
    id, direction, status, cause, time_started, time_answered, time_ended, billsec,
    extension, receive_dest, campaign_uuid, from_number, to_number
from loaded
where load_rank = 1
