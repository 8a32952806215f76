{#- The instant that `sql` selects (one row, one column) as a naive UTC datetime;
    none when it is null. Warehouses return a datetime, some emulators text. -#}
{% macro query_instant(sql) %}
  {%- if not execute -%}{{ return(none) }}{%- endif -%}
  {%- set value = run_query(sql).columns[0].values()[0] -%}
  {%- if value is none -%}{{ return(none) }}{%- endif -%}
  {%- if value is string -%}
    {%- set value = modules.datetime.datetime.fromisoformat(value.replace('Z', '+00:00')) -%}
  {%- endif -%}
  {%- if value.tzinfo is not none -%}
    {%- set value = value.astimezone(modules.pytz.utc).replace(tzinfo=none) -%}
  {%- endif -%}
  {{ return(value) }}
{% endmacro %}

{#- Where `calls` starts re-reading one vendor's staged calls: the newest `ended_at`
    it holds of that vendor, less var `lookback_minutes` (the tap's own lookback, so
    that every call the tap re-read is modelled again). Per vendor, because each
    vendor's calls arrive on their own schedule: one loaded hours behind the other,
    or added to the pipeline a month later, is still read whole. None (read every
    call of the vendor) when `calls` holds none of it. A constant, so that warehouses
    can prune partitions on it. -#}
{% macro lookback_cutoff(relation, vendor) %}
  {%- set newest_end = query_instant(
    'select max(ended_at) from ' ~ relation ~ " where vendor = '" ~ vendor ~ "'") -%}
  {%- if newest_end is none -%}{{ return(none) }}{%- endif -%}
  {%- set cutoff = newest_end - modules.datetime.timedelta(minutes=var('lookback_minutes') | int) -%}
  {{ return(timestamp_literal(cutoff)) }}
{% endmacro %}

{% macro timestamp_literal(moment) -%}
  {{ return("cast('" ~ moment.strftime('%Y-%m-%d %H:%M:%S.%f') ~ "' as " ~ dbt.type_timestamp() ~ ")") }}
{%- endmacro %}

{#- This build's start (UTC): `calls.modelled_at` and a mart's `built_at`. -#}
{% macro build_started_at() -%}
  {{ return(timestamp_literal(run_started_at.astimezone(modules.pytz.utc))) }}
{%- endmacro %}

{#- The calls of the days (in var `kpi_timezone`) that a mart must rebuild, with
    their `call_date`: every day on a full build; on an incremental one, the days of
    the calls that `calls` wrote since the mart was last built (`modelled_at` after
    the mart's newest `built_at`), whatever their vendor or age. Those days are
    rebuilt whole and replace their rows (delete+insert on `call_date`;
    insert_overwrite of its partitions on BigQuery). -#}
{% macro calls_of_days_to_build() %}
  {%- set call_date = local_date('started_at', var('kpi_timezone')) -%}
  {%- set since = query_instant('select max(built_at) from ' ~ this) if is_incremental() else none -%}
  {%- if since is none %}
  select calls.*, {{ call_date }} as call_date from {{ ref('calls') }} as calls
  {%- else -%}
    {%- set changed = 'modelled_at > ' ~ timestamp_literal(since) -%}
    {#- The changed calls' days start at most a day before their first start. -#}
    {%- set first_start = query_instant(
      'select min(started_at) from ' ~ ref('calls') ~ ' where ' ~ changed) -%}
    {%- if first_start is none %}
  select calls.*, {{ call_date }} as call_date from {{ ref('calls') }} as calls where 1 = 0
    {%- else -%}
      {%- set earliest = timestamp_literal(first_start - modules.datetime.timedelta(days=1)) %}
  select * from (
    select calls.*, {{ call_date }} as call_date
    from {{ ref('calls') }} as calls
    where started_at >= {{ earliest }}
  ) as recent
  where call_date in (
    select distinct {{ call_date }} from {{ ref('calls') }}
    where {{ changed }} and started_at >= {{ earliest }}
  )
    {%- endif -%}
  {%- endif %}
{% endmacro %}
