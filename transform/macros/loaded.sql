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
