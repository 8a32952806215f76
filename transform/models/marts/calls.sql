{#- One row per call, from both vendors. The definitions: transform/README.md.
    Incremental on `ended_at`: a run re-reads each vendor's calls that ended since
    the newest one of that vendor modelled, less var `lookback_minutes`, and merges
    them on the key. `modelled_at` says which build last wrote a row: the marts
    rebuild the days of the rows written since their own last build. -#}
{{
    config(
        unique_key=['vendor', 'call_id'],
        on_schema_change='sync_all_columns',
        partition_by=(
            {'field': 'started_at', 'data_type': 'timestamp', 'granularity': 'day'}
            if target.type == 'bigquery' else none
        ),
    )
}}
{%- set tel4vn_cutoff = lookback_cutoff(this, 'tel4vn') if is_incremental() else none -%}
{%- set vcc_cutoff = lookback_cutoff(this, 'vcc') if is_incremental() else none -%}
{%- set string = dbt.type_string() -%}

with tel4vn as (
    select
        'tel4vn' as vendor,
        id as call_id,
        case when lower(direction) = 'local' then 'internal' else lower(direction) end
            as direction,
        time_started as started_at,
        time_answered as answered_at,
        time_ended as ended_at,
        case
            when time_answered is not null
                then {{ dbt.datediff('time_started', 'time_answered', 'second') }}
            else {{ dbt.datediff('time_started', 'time_ended', 'second') }}
        end as raw_wait_seconds,
        billsec as talk_seconds,
        cast(null as {{ dbt.type_bigint() }}) as hold_seconds,
        cast(null as {{ dbt.type_bigint() }}) as wrap_seconds,
        case
            when time_answered is not null then 'answered'
            when lower(direction) = 'inbound' then 'abandoned'
            when lower(status) = 'busy' then 'busy'
            when lower(status) = 'no-answer' then 'no_answer'
            else 'failed'
        end as outcome,
        nullif(extension, '') as agent_id,
        case when lower(direction) = 'inbound' then nullif(receive_dest, '') end as queue_id,
        cast(null as {{ string }}) as project_id,
        campaign_uuid as campaign_id,
        cause as disconnect_cause,
        from_number,
        to_number
    from {{ ref('stg_cdr_v3') }}
    {%- if tel4vn_cutoff is not none %}
    where time_ended >= {{ tel4vn_cutoff }}
    {%- endif %}
),

vcc as (
    select
        'vcc' as vendor,
        uuid as call_id,
        lower(direction) as direction,
        start_ts_utc as started_at,
        case when talktime > 0 then billing_ts_utc end as answered_at,
        time_ended as ended_at,
        -- A part not reported counts as 0; neither reported: no wait known.
        case
            when queuetime is not null or ringtime is not null
                then coalesce(queuetime, 0) + coalesce(ringtime, 0)
        end as raw_wait_seconds,
        talktime as talk_seconds,
        holdtime as hold_seconds,
        afterwork as wrap_seconds,
        case
            when talktime > 0 then 'answered'
            when lower(direction) = 'inbound' then 'abandoned'
            -- dc is the Q.850 cause: 17 user busy; 16 normal clearing, 18 no user
            -- responding, 19 no answer; anything else a failure.
            when dc = '17' then 'busy'
            when dc in ('16', '18', '19') then 'no_answer'
            else 'failed'
        end as outcome,
        case when userid <> -1 then cast(userid as {{ string }}) end as agent_id,
        cast(queueid as {{ string }}) as queue_id,
        cast(projectid as {{ string }}) as project_id,
        cast(null as {{ string }}) as campaign_id,
        dc as disconnect_cause,
        source as from_number,
        destination as to_number
    from {{ ref('stg_cdr_by_uuid') }}
    {%- if vcc_cutoff is not none %}
    where time_ended >= {{ vcc_cutoff }}
    {%- endif %}
),

both_vendors as (
    select * from tel4vn
    union all
    select * from vcc
)

select
    vendor,
    call_id,
    direction,
    started_at,
    answered_at,
    ended_at,
    -- A negative wait (answered or ended before it started) is a bad record: unknown,
    -- rather than a wait that pulls ASA down and counts within the service level.
    case when raw_wait_seconds >= 0 then raw_wait_seconds end as wait_seconds,
    talk_seconds,
    hold_seconds,
    wrap_seconds,
    -- A part the vendor does not report (TEL4VN: hold, wrap) counts as 0; without the
    -- talk time, the handle time is unknown too (AHT and talk over the same calls).
    case
        when talk_seconds is not null
            then talk_seconds + coalesce(hold_seconds, 0) + coalesce(wrap_seconds, 0)
    end as handle_seconds,
    outcome,
    agent_id,
    queue_id,
    project_id,
    campaign_id,
    disconnect_cause,
    {%- if var('include_phone_numbers') | string | lower in ('true', 'yes', '1') %}
    from_number,
    to_number,
    {%- endif %}
    {{ build_started_at() }} as modelled_at
from both_vendors
