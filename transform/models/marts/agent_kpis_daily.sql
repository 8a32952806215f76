{#- Per agent and day of `started_at` (in var `kpi_timezone`): the calls the agent
    answered, their talk, hold and wrap, and AHT. Hold and wrap are null for a vendor
    that does not report them (TEL4VN). Incremental as call_kpis_daily. -#}
{{
    config(
        unique_key='call_date',
        pre_hook="{{ delete_days_to_build(['kpi_timezone']) }}",
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        partition_by=(
            {'field': 'call_date', 'data_type': 'date'} if target.type == 'bigquery' else none
        ),
    )
}}

with calls as (
    {{ calls_of_days_to_build(['kpi_timezone']) }}
)

select
    call_date,
    vendor,
    agent_id,
    count(*) as answered,
    sum(talk_seconds) as talk_seconds,
    sum(hold_seconds) as hold_seconds,
    sum(wrap_seconds) as wrap_seconds,
    cast(avg(handle_seconds) as {{ type_double() }}) as aht_seconds,
    max(ended_at) as last_ended_at,
    {{ build_started_at() }} as built_at,
    -- The var the row was computed with.
    '{{ kpi_timezone() }}' as kpi_timezone
from calls
where outcome = 'answered' and agent_id is not null
group by call_date, vendor, agent_id
