"""Property tests of the envelope checks: any body is either accepted with the
documented shape or refused with a message; never an unrelated exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tap_cdr.streams import CdrByUuidStream, CdrV3Stream

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
v3_like = st.fixed_dictionaries(
    {},
    optional={
        "data": json_values
        | st.lists(st.dictionaries(st.text(max_size=5), json_values), max_size=3),
        "total": json_values | st.integers(min_value=-2, max_value=10),
        "limit": json_values,
        "offset": json_values,
    },
)


@given(st.one_of(json_values, v3_like))
def test_v3_envelope_is_accepted_only_with_a_data_list_and_a_count(body):
    problem = CdrV3Stream.envelope_problem(body)
    if problem is None:
        assert isinstance(body["data"], list)
        assert isinstance(body["total"], int) and body["total"] >= 0
    else:
        assert isinstance(problem, str) and problem


vcc_like = st.fixed_dictionaries({}, optional={"response": json_values, "errors": json_values})


@given(st.one_of(json_values, vcc_like))
def test_vcc_envelope_is_accepted_only_in_the_documented_shape(body):
    problem = CdrByUuidStream.envelope_problem(body)
    if problem is None:
        assert isinstance(body, dict)
        assert isinstance(body.get("response"), (dict, list, type(None)))
        assert isinstance(body.get("errors", []), (list, type(None)))
    else:
        assert isinstance(problem, str) and problem


def test_the_documents_samples_are_accepted():
    assert (
        CdrV3Stream.envelope_problem({"data": [{"id": "x"}], "limit": 2, "offset": -1, "total": 6})
        is None
    )
    assert CdrByUuidStream.envelope_problem({"response": {"uuid": "x"}, "errors": []}) is None
    assert "data" in CdrV3Stream.envelope_problem({"message": "ok"})
    assert "total" in CdrV3Stream.envelope_problem({"data": [], "total": "6"})
