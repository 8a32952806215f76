{#- Call-centre KPIs per day of `started_at` (in var `kpi_timezone`), vendor,
    direction and queue (a null queue is a group of its own). Definitions:
    transform/README.md. An incremental run rebuilds whole the days of the calls that
    `calls` wrote since this mart's last build; every day, after a change of the vars
    in `kpi_vars` (the row keeps their values). -#}
{%- set kpi_vars = [
    'kpi_timezone', 'service_level_seconds', 'short_abandon_seconds', 'service_level_abandons'
] -%}
{{
    config(
        unique_key='call_date',
        pre_hook="{{ delete_days_to_build(" ~ kpi_vars ~ ") }}",
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'delete+insert'),
        partition_by=(
            {'field': 'call_date', 'data_type': 'date'} if target.type == 'bigquery' else none
        ),
    )
}}
{%- set sl = whole_number_var('service_level_seconds') -%}
{%- set short = whole_number_var('short_abandon_seconds') -%}
{%- set abandons = service_level_abandons() %}

with calls as (
    {{ calls_of_days_to_build(kpi_vars) }}
),

flagged as (
    select
        call_date,
        vendor,
        direction,
        queue_id,
        ended_at,
        case when outcome = 'answered' then 1 else 0 end as is_answered,
        case when outcome = 'abandoned' then 1 else 0 end as is_abandoned,
        case
            when outcome = 'abandoned' and wait_seconds < {{ short }} then 1 else 0
        end as is_short_abandon,
        -- Service level counts only for inbound calls.
        case
            when direction = 'inbound' and outcome = 'answered' and wait_seconds <= {{ sl }}
                then 1 else 0
        end as is_answered_within_sl,
        case
            when outcome = 'abandoned' and wait_seconds >= {{ short }} and wait_seconds <= {{ sl }}
                then 1 else 0
        end as is_long_abandon_within_sl,
        case when outcome = 'answered' then wait_seconds end as answered_wait_seconds,
        case when outcome = 'answered' then handle_seconds end as answered_handle_seconds,
        case when outcome = 'answered' then talk_seconds end as answered_talk_seconds
    from calls
),

grouped as (
    select
        call_date,
        vendor,
        direction,
        queue_id,
        count(*) as offered,
        sum(is_answered) as answered,
        sum(is_abandoned) as abandoned,
        sum(is_short_abandon) as short_abandoned,
        sum(is_answered_within_sl) as answered_within_sl,
        sum(is_long_abandon_within_sl) as long_abandoned_within_sl,
        avg(answered_wait_seconds) as mean_answered_wait,
        avg(answered_handle_seconds) as mean_answered_handle,
        avg(answered_talk_seconds) as mean_answered_talk,
        max(ended_at) as last_ended_at
    from flagged
    group by call_date, vendor, direction, queue_id
)

select
    call_date,
    vendor,
    direction,
    queue_id,
    offered,
    answered,
    abandoned,
    short_abandoned,
    answered_within_sl,
    case when direction = 'inbound' then
        {%- if abandons == 'against' %}
        {{ ratio('answered_within_sl', 'offered - short_abandoned') }}
        {%- elif abandons == 'for' %}
        {{ ratio('answered_within_sl + long_abandoned_within_sl', 'offered - short_abandoned') }}
        {%- else %}
        {{ ratio('answered_within_sl', 'answered') }}
        {%- endif %}
    end as service_level,
    {{ ratio('answered', 'offered') }} as answer_rate,
    {{ ratio('abandoned', 'offered') }} as abandon_rate,
    case when direction = 'inbound' then
        cast(mean_answered_wait as {{ type_double() }})
    end as asa_seconds,
    cast(mean_answered_handle as {{ type_double() }}) as aht_seconds,
    cast(mean_answered_talk as {{ type_double() }}) as avg_talk_seconds,
    last_ended_at,
    {{ build_started_at() }} as built_at,
    -- The vars the row was computed with.
    '{{ kpi_timezone() }}' as kpi_timezone,
    {{ sl }} as service_level_seconds,
    {{ short }} as short_abandon_seconds,
    '{{ abandons }}' as service_level_abandons
from grouped
