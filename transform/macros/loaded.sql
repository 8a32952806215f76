{#- What the loader made of a stream: its columns, name -> data type (both lower
    case). Types differ by loader and warehouse; the `_sdc_*` metadata columns exist
    only where the loader writes them. Empty while dbt parses (no connection). -#}
{% macro loaded_columns(relation) %}
  {%- set columns = {} -%}
  {%- if execute -%}
    {%- for column in adapter.get_columns_in_relation(relation) -%}
      {%- do columns.update({column.name | lower: column.data_type | lower}) -%}
    {%- endfor -%}
  {%- endif -%}
  {{ return(columns) }}
{% endmacro %}

{#- The order in which a key's rows are read newest load first: by `_sdc_batched_at`
    and `_sdc_sequence` where the loader writes them (append-only loads keep every
    read of a call), then by `tiebreak` so that the choice is always the same. -#}
{% macro newest_load_first(columns, tiebreak) %}
  {%- set order = [] -%}
  {%- for name in ['_sdc_batched_at', '_sdc_sequence'] if name in columns -%}
    {%- do order.append(name ~ ' desc nulls last') -%}
  {%- endfor -%}
  {%- do order.append(tiebreak ~ ' desc nulls last') -%}
  {{ return(order | join(', ')) }}
{% endmacro %}

{#- A stream's loaded table, or, before the loader has made it (a pipeline with one
    vendor, or the other vendor not loaded yet), an empty relation of the `columns`
    (name -> type) that staging reads: the models build for one vendor as for two. -#}
{% macro loaded_or_empty(relation, columns) %}
  {%- if execute and load_relation(relation) is none -%}
    {{- log(relation ~ ' does not exist: no ' ~ relation.identifier ~ ' calls are loaded yet, so none are modelled', info=true) -}}
    (select
      {%- for name, type in columns.items() %}
      cast(null as {{ type }}) as {{ name }}{{ ',' if not loop.last }}
      {%- endfor %}
    from (select 1 as one) as one_row
    where 1 = 0) as not_loaded
  {%- else -%}
    {{ relation }}
  {%- endif -%}
{% endmacro %}
