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
  {#- A call that claims to end in the future (a bad upstream value) must not stop the
      vendor's later calls from being read until then. -#}
  {%- set now = run_started_at.astimezone(modules.pytz.utc).replace(tzinfo=none) -%}
  {%- set newest_end = [newest_end, now] | min -%}
  {%- set cutoff = newest_end - modules.datetime.timedelta(minutes=whole_number_var('lookback_minutes')) -%}
  {{ return(timestamp_literal(cutoff)) }}
{% endmacro %}

{% macro timestamp_literal(moment) -%}
  {{ return("cast('" ~ moment.strftime('%Y-%m-%d %H:%M:%S.%f') ~ "' as " ~ dbt.type_timestamp() ~ ")") }}
{%- endmacro %}

{#- This build's start (UTC): `calls.modelled_at` and a mart's `built_at`. -#}
{% macro build_started_at() -%}
  {{ return(timestamp_literal(run_started_at.astimezone(modules.pytz.utc))) }}
{%- endmacro %}

{#- The days (in var `kpi_timezone`, as 'YYYY-MM-DD') that a mart must rebuild; none
    for every day: on a full build, and when the mart's rows were built with other
    values of the vars in `var_names` (its columns of the same names), so that a
    changed var never leaves days of both values side by side. Otherwise the days of
    the calls that `calls` wrote since the mart was last built (`modelled_at` after
    the mart's newest `built_at`), whatever their vendor or age. Constants, computed
    before the query, so that the mart's old rows of exactly those days are deleted
    first (a day rebuilt into no rows must not keep its old ones) and warehouses
    prune partitions. -#}
{% macro days_to_build(var_names) %}
  {%- if not execute or not is_incremental() -%}{{ return(none) }}{%- endif -%}
  {%- set same = [] -%}
  {%- for name, literal in kpi_var_literals(var_names).items() -%}
    {%- do same.append(name ~ ' = ' ~ literal) -%}
  {%- endfor -%}
  {%- set other = run_query(
    'select count(*) from ' ~ this ~ ' where not (' ~ same | join(' and ') ~ ')'
  ).columns[0].values()[0] -%}
  {%- if other > 0 -%}{{ return(none) }}{%- endif -%}
  {%- set since = query_instant('select max(built_at) from ' ~ this) -%}
  {%- if since is none -%}{{ return(none) }}{%- endif -%}
  {%- set days = run_query(
    'select distinct ' ~ local_date('started_at', kpi_timezone()) ~ ' from ' ~ ref('calls')
    ~ ' where modelled_at > ' ~ timestamp_literal(since)
  ).columns[0].values() -%}
  {%- set dates = [] -%}
  {%- for day in days -%}{%- do dates.append((day | string)[:10]) -%}{%- endfor -%}
  {{ return(dates | sort) }}
{% endmacro %}

{% macro date_list(days) -%}
  {%- for day in days -%}cast('{{ day }}' as date){{ ', ' if not loop.last }}{%- endfor -%}
{%- endmacro %}

{#- A mart's pre-hook: its rows of the days about to be rebuilt, deleted in the same
    transaction as the rebuild. -#}
{% macro delete_days_to_build(var_names) %}
  {%- if execute and is_incremental() -%}
    {%- set days = days_to_build(var_names) -%}
    {%- if days is none -%}
      {#- Said here, once: the model's body asks days_to_build too. -#}
      {{ log(this ~ ' holds rows built with other values of ' ~ var_names | join(', ')
             ~ ', or none: rebuilding every day', info=true) }}
      delete from {{ this }}
    {%- elif days -%}
      delete from {{ this }} where call_date in ({{ date_list(days) }})
    {%- endif -%}
  {%- endif -%}
{% endmacro %}

{#- The calls of the days that a mart must rebuild (`days_to_build`), with their
    `call_date`. -#}
{% macro calls_of_days_to_build(var_names) %}
  {%- set call_date = local_date('started_at', kpi_timezone()) -%}
  {%- set days = days_to_build(var_names) -%}
  {%- if days is none %}
  select calls.*, {{ call_date }} as call_date from {{ ref('calls') }} as calls
  {%- elif not days %}
  select calls.*, {{ call_date }} as call_date from {{ ref('calls') }} as calls where 1 = 0
  {%- else -%}
    {#- A local day starts at most 14 hours before its date in UTC, and lasts at most
        25 hours: two days of margin hold every call of it, and prune the rest. -#}
    {%- set first_day = modules.datetime.datetime.strptime(days[0], '%Y-%m-%d') -%}
    {%- set earliest = timestamp_literal(first_day - modules.datetime.timedelta(days=2)) %}
  select * from (
    select calls.*, {{ call_date }} as call_date
    from {{ ref('calls') }} as calls
    where started_at >= {{ earliest }}
  ) as recent
  where call_date in ({{ date_list(days) }})
  {%- endif %}
{% endmacro %}
