"""Request and params validation of the engine protocol (pure functions, no engine needed)."""

import math

import pytest

from mercury_engine.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    FatalFrameError,
    ProtocolError,
    pack,
    make_unpacker,
    parse_cancel_params,
    parse_infill_params,
    parse_request,
)


def test_defaults_match_the_spec():
    p = parse_infill_params({"prefix": "def f("})
    assert (p.prefix, p.suffix, p.language) == ("def f(", "", "")
    assert (p.max_tokens, p.budget_ms, p.threshold, p.temperature, p.n) == (32, 200.0, 0.9, 0.0, 1)
    assert (p.stop, p.single_line, p.context) == ([], False, [])


def test_all_fields_are_carried():
    p = parse_infill_params(
        {"prefix": "a", "suffix": "b", "language": "python", "max_tokens": 256, "budget_ms": 1, "threshold": 1,
         "temperature": 0.7, "n": 8, "stop": ["\n\n"], "single_line": True, "context": ["import os"], "future_key": 1}
    )
    assert (p.suffix, p.language, p.max_tokens, p.budget_ms, p.threshold, p.temperature, p.n) == ("b", "python", 256, 1.0, 1.0, 0.7, 8)
    assert (p.stop, p.single_line, p.context) == (["\n\n"], True, ["import os"])


@pytest.mark.parametrize(
    "params, field",
    [
        ({}, "prefix"),
        ({"prefix": None}, "prefix"),
        ({"prefix": b"bytes"}, "prefix"),
        ({"prefix": "a", "suffix": 3}, "suffix"),
        ({"prefix": "a", "language": ["py"]}, "language"),
        ({"prefix": "a", "max_tokens": 0}, "max_tokens"),
        ({"prefix": "a", "max_tokens": 257}, "max_tokens"),
        ({"prefix": "a", "max_tokens": 3.0}, "max_tokens"),
        ({"prefix": "a", "max_tokens": True}, "max_tokens"),
        ({"prefix": "a", "budget_ms": 0}, "budget_ms"),
        ({"prefix": "a", "budget_ms": -5}, "budget_ms"),
        ({"prefix": "a", "budget_ms": math.nan}, "budget_ms"),
        ({"prefix": "a", "budget_ms": math.inf}, "budget_ms"),
        ({"prefix": "a", "budget_ms": "200"}, "budget_ms"),
        ({"prefix": "a", "threshold": 1.5}, "threshold"),
        ({"prefix": "a", "threshold": -0.1}, "threshold"),
        ({"prefix": "a", "temperature": -1}, "temperature"),
        ({"prefix": "a", "n": 9}, "n"),
        ({"prefix": "a", "n": 0}, "n"),
        ({"prefix": "a", "stop": "\n"}, "stop"),
        ({"prefix": "a", "stop": [1]}, "stop"),
        ({"prefix": "a", "stop": [""]}, "stop"),
        ({"prefix": "a", "stop": ["x"] * 65}, "stop"),
        ({"prefix": "a", "single_line": 1}, "single_line"),
        ({"prefix": "a", "context": [None]}, "context"),
    ],
)
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ProtocolError) as err:
        parse_infill_params(params)
    assert err.value.code == INVALID_PARAMS
    assert f"params.{field}" in err.value.message


def test_request_shape():
    assert parse_request({"id": 7, "method": "health"}) == (7, "health", {})
    assert parse_request({"id": "a", "method": "infill", "params": None}) == ("a", "infill", {})
    for frame in ({"method": "health"}, {"id": True, "method": "health"}, {"id": 1.5, "method": "health"}, {"id": 1, "method": 5}):
        with pytest.raises(ProtocolError) as err:
            parse_request(frame)
        assert err.value.code == INVALID_REQUEST and not isinstance(err.value, FatalFrameError)
    with pytest.raises(ProtocolError) as err:
        parse_request({"id": 1, "method": "infill", "params": [1]})
    assert err.value.code == INVALID_PARAMS


def test_a_frame_that_is_not_a_map_is_fatal():
    for frame in ([1, 2], "health", 3, None):
        with pytest.raises(FatalFrameError) as err:
            parse_request(frame)
        assert err.value.code == PARSE_ERROR


def test_cancel_needs_an_id():
    assert parse_cancel_params({"id": 3}) == 3
    assert parse_cancel_params({"id": "x"}) == "x"
    for params in ({}, {"id": None}, {"id": False}, {"id": [1]}):
        with pytest.raises(ProtocolError) as err:
            parse_cancel_params(params)
        assert err.value.code == INVALID_PARAMS


def test_framing_round_trip_and_strict_utf8():
    u = make_unpacker()
    u.feed(pack({"id": 1, "method": "infill", "params": {"prefix": "é\u4e2d"}}) + pack({"id": 2}))
    assert [f["id"] for f in u] == [1, 2]
    u = make_unpacker()
    u.feed(b"\x81\xa2id\xa2\xff\xfe")  # {"id": <2 bytes that are not UTF-8>}
    with pytest.raises(UnicodeDecodeError):
        list(u)
