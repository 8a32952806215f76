-- On every row but outbound ones, answered + abandoned <= offered.
select *
from {{ ref('call_kpis_daily') }}
where direction <> 'outbound' and answered + abandoned > offered
