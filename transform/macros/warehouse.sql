{#- The few expressions that differ by warehouse, dispatched by adapter. Seconds
    between two timestamps are dbt's own `dbt.datediff(start, end, 'second')`. -#}

{#- The local date of a UTC timestamp in an IANA zone. -#}
{% macro local_date(utc_timestamp, zone) -%}
  {{ return(adapter.dispatch('local_date', 'tap_cdr_kpis')(utc_timestamp, zone)) }}
{%- endmacro %}

{% macro default__local_date(utc_timestamp, zone) -%}
  cast(({{ utc_timestamp }} at time zone 'UTC') at time zone '{{ zone }}' as date)
{%- endmacro %}

{% macro duckdb__local_date(utc_timestamp, zone) -%}
  cast(timezone('{{ zone }}', timezone('UTC', {{ utc_timestamp }})) as date)
{%- endmacro %}

{% macro snowflake__local_date(utc_timestamp, zone) -%}
  cast(convert_timezone('UTC', '{{ zone }}', {{ utc_timestamp }}) as date)
{%- endmacro %}

{% macro bigquery__local_date(utc_timestamp, zone) -%}
  date({{ utc_timestamp }}, '{{ zone }}')
{%- endmacro %}

{#- A loaded instant as a timestamp in UTC (without a zone; BigQuery's TIMESTAMP).
    The tap emits UTC instants; loaders land them as naive timestamps (target-duckdb,
    target-postgres), with a zone (Snowflake's TIMESTAMP_TZ) or as text, so the
    loaded column's type (`loaded_type`, lower case) says how to read it. -#}
{% macro utc_timestamp(column, loaded_type) -%}
  {{ return(adapter.dispatch('utc_timestamp', 'tap_cdr_kpis')(column, loaded_type)) }}
{%- endmacro %}

{% macro default__utc_timestamp(column, loaded_type) -%}
  {%- if 'with time zone' in loaded_type or loaded_type == 'timestamptz' -%}
    ({{ column }} at time zone 'UTC')
  {%- elif 'char' in loaded_type or loaded_type in ('text', 'string') -%}
    (cast({{ column }} as timestamp with time zone) at time zone 'UTC')
  {%- else -%}
    {{ column }}
  {%- endif -%}
{%- endmacro %}

{% macro duckdb__utc_timestamp(column, loaded_type) -%}
  {%- if 'with time zone' in loaded_type or loaded_type == 'timestamptz' -%}
    timezone('UTC', {{ column }})
  {%- elif 'char' in loaded_type or loaded_type in ('text', 'string') -%}
    timezone('UTC', cast({{ column }} as timestamptz))
  {%- else -%}
    {{ column }}
  {%- endif -%}
{%- endmacro %}

{% macro snowflake__utc_timestamp(column, loaded_type) -%}
  {%- if loaded_type.startswith('timestamp_tz') or loaded_type.startswith('timestamp_ltz') -%}
    cast(convert_timezone('UTC', {{ column }}) as timestamp_ntz)
  {%- elif 'char' in loaded_type or loaded_type in ('text', 'string') -%}
    cast(convert_timezone('UTC', to_timestamp_tz({{ column }})) as timestamp_ntz)
  {%- else -%}
    {{ column }}
  {%- endif -%}
{%- endmacro %}

{% macro bigquery__utc_timestamp(column, loaded_type) -%}
  {%- if loaded_type in ('string', 'datetime') -%}
    timestamp({{ column }})
  {%- else -%}
    {{ column }}
  {%- endif -%}
{%- endmacro %}

{#- A double-precision float (dbt's type_float is a 4-byte REAL on DuckDB). -#}
{% macro type_double() -%}
  {{ return(adapter.dispatch('type_double', 'tap_cdr_kpis')()) }}
{%- endmacro %}

{% macro default__type_double() -%}
  {{ return(dbt.type_float()) }}
{%- endmacro %}

{% macro duckdb__type_double() -%}
  {{ return('double') }}
{%- endmacro %}

{#- numerator / denominator as a float: null, never an error, when the denominator is 0. -#}
{% macro ratio(numerator, denominator) -%}
  cast({{ numerator }} as {{ type_double() }}) / nullif({{ denominator }}, 0)
{%- endmacro %}
