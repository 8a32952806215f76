"""The normaliser: naive local times to RFC 3339 UTC, blanks to null, types."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_cdr.normalize import NormalizationError, V3Normalizer, to_int, to_object, to_utc

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
NEW_YORK = ZoneInfo("America/New_York")


def test_dst_free_zone_is_a_fixed_seven_hours():
    assert to_utc("2023-03-07 13:37:09", HCM) == "2023-03-07T06:37:09+00:00"
    assert to_utc("2023-07-07 13:37:09", HCM) == "2023-07-07T06:37:09+00:00"
    assert to_utc("2024-01-01 03:00:00", HCM) == "2023-12-31T20:00:00+00:00"


def test_dst_zone_follows_summer_and_winter_offsets():
    assert to_utc("2024-01-15 12:00:00", NEW_YORK) == "2024-01-15T17:00:00+00:00"
    assert to_utc("2024-07-15 12:00:00", NEW_YORK) == "2024-07-15T16:00:00+00:00"
    # The repeated hour of the fall-back is read as its first occurrence (EDT).
    assert to_utc("2024-11-03 01:30:00", NEW_YORK) == "2024-11-03T05:30:00+00:00"


def test_values_with_an_offset_keep_their_instant():
    assert to_utc("2023-03-07T13:37:09+07:00", NEW_YORK) == "2023-03-07T06:37:09+00:00"
    assert to_utc("2023-03-07T06:37:09Z", HCM) == "2023-03-07T06:37:09+00:00"


@pytest.mark.parametrize("blank", ["", "  ", None, "0000-00-00 00:00:00", "0000-00-00"])
def test_blank_and_zero_times_become_null(blank):
    assert to_utc(blank, HCM) is None


@pytest.mark.parametrize("bad", ["yesterday", "2023-13-01 00:00:00", 1678171029])
def test_bad_times_raise_a_clear_error(bad):
    with pytest.raises(NormalizationError, match="time_ended"):
        to_utc(bad, HCM, "time_ended")


def test_integers():
    assert to_int(27) == 27
    assert to_int("27") == 27
    assert to_int("") is None
    assert to_int(27.0) == 27
    with pytest.raises(NormalizationError):
        to_int("27 seconds")
    with pytest.raises(NormalizationError):
        to_int(True)


def test_press_key_json_string_becomes_an_object():
    assert to_object("{}") == {}
    assert to_object('{"1": "2023-03-07 13:36:50"}') == {"1": "2023-03-07 13:36:50"}
    assert to_object("") is None
    assert to_object([]) == {}
    # Not a JSON object: kept, never dropped.
    assert to_object("1#") == {"raw": "1#"}
    assert to_object("[1, 2]") == {"raw": "[1, 2]"}


SAMPLE = {
    "id": "366d2a16-7d73-47ad-bc94-9bab059f0f85",
    "parent_id": "366d2a16-7d73-47ad-bc94-9bab059f0f85",
    "sip_call_id": "436447b4-3755-123c-18b6-fa163e71cc82",
    "cause": "USER_BUSY",
    "duration": 27,
    "direction": "outbound",
    "recording_url": "",
    "time_started": "2023-03-07 13:36:42",
    "time_answered": "",
    "time_ended": "2023-03-07 13:37:09",
    "time_ringging": "2023-03-07 13:36:42",
    "status": "busy",
    "billsec": 0,
    "press_key": "{}",
    "campaign_uuid": "fdccdbf2-bc4b-4a0f-a7ea-cb0239daaa7d",
    "lead_uuid": "",
    "rate": "",
    "additional": {"data1": 1, "ten": "Đỗ Thị Ngà"},
    "autocall_presskey_epoch": "",
    "time_presskey": "",
    "presskey_delay": 0,
    "brand_new_field": "kept",
}


def test_the_documents_sample_record():
    record = V3Normalizer(HCM)(SAMPLE)
    assert record["time_ended"] == "2023-03-07T06:37:09+00:00"
    assert record["time_started"] == "2023-03-07T06:36:42+00:00"
    assert record["time_answered"] is None
    assert record["time_presskey"] is None
    assert record["lead_uuid"] is None and record["rate"] is None
    assert record["autocall_presskey_epoch"] is None
    assert record["press_key"] == {}
    assert record["additional"] == {"data1": 1, "ten": "Đỗ Thị Ngà"}
    assert record["recording_url"] == ""  # free text stays as sent
    assert record["brand_new_field"] == "kept"
    assert SAMPLE["time_ended"] == "2023-03-07 13:37:09"  # the input is not mutated


def test_record_errors_name_the_record_and_field():
    with pytest.raises(NormalizationError, match=r"id='x'.*duration"):
        V3Normalizer(HCM)({"id": "x", "duration": "long"})


def test_numeric_epoch_keeps_exact_value():
    record = V3Normalizer(HCM)({"id": "x", "autocall_presskey_epoch": "1678171029.25"})
    assert record["autocall_presskey_epoch"] == Decimal("1678171029.25")


@given(
    st.datetimes(
        min_value=datetime(1980, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(HCM)
    )
)
def test_round_trip_of_any_local_time(moment):
    # Ho Chi Minh City has kept UTC+7 without DST since 1975.
    text = moment.replace(microsecond=0).strftime("%Y-%m-%d %H:%M:%S")
    utc = to_utc(text, HCM)
    assert utc.endswith("+00:00")
    assert datetime.fromisoformat(utc) == moment.replace(microsecond=0)


@given(st.one_of(st.text(max_size=30), st.integers(), st.none(), st.floats()))
def test_any_input_gives_a_timestamp_null_or_the_documented_error(value):
    try:
        result = to_utc(value, HCM)
    except NormalizationError:
        return
    assert result is None or result.endswith("+00:00")


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)),
    st.sampled_from(["Asia/Ho_Chi_Minh", "America/New_York", "Australia/Lord_Howe", "UTC"]),
)
def test_minute_cache_gives_the_same_instant_as_a_full_conversion(moment, zone_name):
    zone = ZoneInfo(zone_name)
    normalizer = V3Normalizer(zone)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    # Twice: once filling the cache, once from it.
    assert normalizer.utc(text, "t") == normalizer.utc(text, "t") == to_utc(text, zone)


@given(
    st.one_of(
        st.text(max_size=12), st.integers(), st.floats(), st.decimals(), st.booleans(), st.none()
    )
)
def test_numbers_parse_or_raise_the_documented_error(value):
    from tap_cdr.normalize import to_number

    for convert in (to_int, to_number):
        try:
            result = convert(value)
        except NormalizationError:
            continue
        assert result is None or type(result) in (int, Decimal)


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)),
    st.one_of(st.none(), st.integers(0, 200_000)),
    st.one_of(st.none(), st.integers(0, 200_000)),
)
def test_cached_end_times_equal_the_plain_derivation(start, ring, billing):
    from tap_cdr.normalize import EndTimes, derive_time_ended

    start_utc = start.replace(microsecond=0).isoformat() + "+00:00"
    end_times = EndTimes()
    for _ in range(2):  # computed, then from the cache
        assert end_times(start_utc, ring, billing) == derive_time_ended(start_utc, ring, billing)
