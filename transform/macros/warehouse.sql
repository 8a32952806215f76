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

{#- Var `name` as a whole number of at least 0; a compile error naming the var
    otherwise (Jinja's `int` filter would take "abc" for 0, silently). -#}
{% macro whole_number_var(name) %}
  {%- set value = var(name) -%}
  {%- if value is number and value == value | int and value >= 0 -%}
    {{ return(value | int) }}
  {%- elif value is string and modules.re.fullmatch('[0-9]+', value.strip()) -%}
    {{ return(value.strip() | int) }}
  {%- endif -%}
  {{ exceptions.raise_compiler_error(
      "var " ~ name ~ " is '" ~ value ~ "': give a whole number of at least 0") }}
{% endmacro %}

{#- Var `kpi_timezone`, an IANA zone; a compile error naming the var otherwise. -#}
{% macro kpi_timezone() %}
  {%- set zone = var('kpi_timezone') | string -%}
  {%- if zone not in modules.pytz.all_timezones_set -%}
    {{ exceptions.raise_compiler_error(
        "var kpi_timezone is '" ~ zone ~ "': give an IANA time zone, such as UTC or Europe/Budapest") }}
  {%- endif -%}
  {{ return(zone) }}
{% endmacro %}

{#- Var `service_level_abandons`: against, for or ignored; a compile error otherwise. -#}
{% macro service_level_abandons() %}
  {%- set abandons = var('service_level_abandons') | string -%}
  {%- if abandons not in ('against', 'for', 'ignored') -%}
    {{ exceptions.raise_compiler_error(
        "var service_level_abandons is '" ~ abandons ~ "': use against, for or ignored") }}
  {%- endif -%}
  {{ return(abandons) }}
{% endmacro %}

{#- The KPI vars in `names`, checked, as SQL literals (a mart keeps them in columns of
    the same names). -#}
{% macro kpi_var_literals(names) %}
  {%- set literals = {} -%}
  {%- for name in names -%}
    {%- if name == 'kpi_timezone' -%}
      {%- do literals.update({name: "'" ~ kpi_timezone() ~ "'"}) -%}
    {%- elif name == 'service_level_abandons' -%}
      {%- do literals.update({name: "'" ~ service_level_abandons() ~ "'"}) -%}
    {%- else -%}
      {%- do literals.update({name: whole_number_var(name) | string}) -%}
    {%- endif -%}
  {%- endfor -%}
  {{ return(literals) }}
{% endmacro %}
