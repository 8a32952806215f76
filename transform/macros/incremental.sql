{#- The incremental window, as a timestamp literal: the newest `column` that
    `relation` holds, less var `lookback_minutes` (the tap's own lookback, so that
    every call the tap re-read is modelled again). A constant, so that warehouses can
    prune partitions on it; none when the relation is empty. -#}
{% macro lookback_cutoff(relation, column) %}
  {%- if not execute -%}{{ return(none) }}{%- endif -%}
  {%- set newest = run_query('select max(' ~ column ~ ') from ' ~ relation).columns[0].values()[0] -%}
  {%- if newest is none -%}{{ return(none) }}{%- endif -%}
  {%- if newest is string -%}
    {%- set newest = modules.datetime.datetime.fromisoformat(newest[:19]) -%}
  {%- endif -%}
  {%- set cutoff = newest - modules.datetime.timedelta(minutes=var('lookback_minutes') | int) -%}
  {{ return(timestamp_literal(cutoff)) }}
{% endmacro %}

{% macro timestamp_literal(moment) -%}
  {{ return("cast('" ~ moment.strftime('%Y-%m-%d %H:%M:%S') ~ "' as " ~ dbt.type_timestamp() ~ ")") }}
{%- endmacro %}

{#- The calls of the days (in var `kpi_timezone`) that a mart must rebuild, with
    their `call_date`: every day on a full build; on an incremental one, the days of
    the calls that ended since the mart's newest `last_ended_at`, less the lookback.
    Those days are rebuilt whole and replace their rows (delete+insert on
    `call_date`; insert_overwrite of its partitions on BigQuery). -#}
{% macro calls_of_days_to_build() %}
  {%- set call_date = local_date('started_at', var('kpi_timezone')) -%}
  {%- set cutoff = lookback_cutoff(this, 'last_ended_at') if is_incremental() else none -%}
  {%- if cutoff is none %}
  select calls.*, {{ call_date }} as call_date from {{ ref('calls') }} as calls
  {%- else -%}
    {#- The changed calls' days start at most a day before their first start. -#}
    {%- set first_start = run_query(
      'select min(started_at) from ' ~ ref('calls') ~ ' where ended_at >= ' ~ cutoff
    ).columns[0].values()[0] if execute else none -%}
    {%- if first_start is none %}
  select calls.*, {{ call_date }} as call_date from {{ ref('calls') }} as calls where 1 = 0
    {%- else -%}
      {%- if first_start is string -%}
        {%- set first_start = modules.datetime.datetime.fromisoformat(first_start[:19]) -%}
      {%- endif -%}
      {%- set earliest = timestamp_literal(first_start - modules.datetime.timedelta(days=1)) %}
  select * from (
    select calls.*, {{ call_date }} as call_date
    from {{ ref('calls') }} as calls
    where started_at >= {{ earliest }}
  ) as recent
  where call_date in (
    select distinct {{ call_date }} from {{ ref('calls') }}
    where ended_at >= {{ cutoff }} and started_at >= {{ earliest }}
  )
    {%- endif -%}
  {%- endif %}
{% endmacro %}
