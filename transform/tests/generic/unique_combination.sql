{#- The rows are unique on these columns together (nulls count as equal: a null
    queue is a group of its own). -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as rows_of_key
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
