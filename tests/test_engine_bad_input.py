"""Bad input against a live engine: an error reply or a clean close of that one connection, while
every other client keeps being served."""

import socket

import pytest

from mercury_engine.client import EngineClient, EngineError
from mercury_engine.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_FRAME,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    pack,
)

TIMEOUT = 60.0


@pytest.fixture
def bystander(engine):
    """A client connected before the bad input; it must keep being served after it."""
    with EngineClient(engine, timeout=TIMEOUT) as c:
        assert c.request("health")["ready"]
        yield c
        assert c.request("health")["ready"]
        assert c.infill("ok = ", max_tokens=2)["completions"]


def assert_closed(c: EngineClient) -> None:
    with pytest.raises((EOFError, ConnectionError)):
        c.receive(timeout=TIMEOUT)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"suffix": "x"}, "prefix"),
        ({"prefix": 12}, "prefix"),
        ({"prefix": "a", "max_tokens": "32"}, "max_tokens"),
        ({"prefix": "a", "max_tokens": 1000}, "max_tokens"),
        ({"prefix": "a", "n": -1}, "n"),
        ({"prefix": "a", "budget_ms": 0}, "budget_ms"),
        ({"prefix": "a", "stop": "x"}, "stop"),
        ({"prefix": "a", "context": {"a": 1}}, "context"),
    ],
)
def test_bad_params_get_an_error_naming_the_field_and_the_connection_stays(engine, bystander, params, field):
    with EngineClient(engine, timeout=TIMEOUT) as c:
        with pytest.raises(EngineError) as err:
            c.request("infill", params)
        assert err.value.code == INVALID_PARAMS
        assert field in err.value.message
        assert c.request("health")["ready"]


def test_request_shape_errors_keep_the_connection(engine, bystander):
    with EngineClient(engine, timeout=TIMEOUT) as c:
        c.send_raw(pack({"method": "health"}))
        assert c.receive() == {"id": None, "error": {"code": INVALID_REQUEST, "message": "request 'id' must be an integer or a string"}}
        c.send_raw(pack({"id": [1], "method": "health"}))
        assert c.receive()["error"]["code"] == INVALID_REQUEST
        c.send_raw(pack({"id": 4, "params": {}}))
        assert c.receive()["error"]["code"] == INVALID_REQUEST
        c.send_raw(pack({"id": 5, "method": "infill", "params": "prefix"}))
        assert c.receive() == {"id": 5, "error": {"code": INVALID_PARAMS, "message": "'params' must be a map, got str"}}
        c.send_raw(pack({"id": 6, "method": "cancel", "params": {"id": None}}))
        assert c.receive()["error"]["code"] == INVALID_PARAMS
        with pytest.raises(EngineError) as err:
            c.request("make_coffee")
        assert err.value.code == METHOD_NOT_FOUND and "make_coffee" in err.value.message
        assert c.request("health")["ready"]


@pytest.mark.parametrize(
    "data, why",
    [
        (pack([1, "health"]), "a frame must be a msgpack map"),
        (pack("health"), "a frame must be a msgpack map"),
        (b"\xc1", "invalid msgpack"),  # a byte msgpack never uses
        (b"\x81\xa2id\xa2\xff\xfe", "invalid UTF-8"),
        (pack({"id": 1, "method": "health"}) + b"\x81\xa2id\xa2\xc3\x28", "invalid UTF-8"),
        (b"\x91" * 5000, "nested too deeply"),
        (b"\xdd\xff\xff\xff\xff", "invalid msgpack"),  # an array claiming 4 billion items
    ],
)
def test_unparseable_frames_get_a_parse_error_then_a_close(engine, bystander, data, why):
    with EngineClient(engine, timeout=TIMEOUT) as c:
        c.send_raw(data)
        reply = c.receive()
        if reply.get("id") == 1:  # the valid frame in front of the bad one is answered first
            assert reply["result"]["ready"]
            reply = c.receive()
        assert reply["id"] is None
        assert reply["error"]["code"] == PARSE_ERROR
        assert why in reply["error"]["message"]
        assert_closed(c)


def test_a_frame_over_the_limit_gets_an_error_then_a_close(engine, bystander):
    with EngineClient(engine, timeout=TIMEOUT) as c:
        big = pack({"id": 1, "method": "infill", "params": {"prefix": "a" * (MAX_FRAME + 10)}})
        try:
            c.send_raw(big)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the engine stopped reading at the limit; its reply is still there to read
        reply = c.receive()
        assert reply["error"]["code"] == PARSE_ERROR and "larger than" in reply["error"]["message"]
        assert_closed(c)


@pytest.mark.parametrize("header", [b"\xdb", b"\xc6", b"\xc9"])  # str32, bin32, ext32
def test_a_header_declaring_more_than_the_limit_is_refused_at_once(engine, bystander, header):
    import struct
    import time

    with EngineClient(engine, timeout=TIMEOUT) as c:
        start = time.monotonic()
        c.send_raw(b"\x83\xa2id\x01\xa6method\xa6infill\xa6params\x81\xa6prefix" + header + struct.pack(">I", MAX_FRAME + 1) + b"ab")
        reply = c.receive(timeout=5.0)  # not after 1 MiB more, nor after the frame timeout
        assert reply["error"]["code"] == PARSE_ERROR and "larger than" in reply["error"]["message"]
        assert time.monotonic() - start < 5.0
        assert_closed(c)


def test_a_frame_just_under_the_limit_is_served(engine, bystander):
    with EngineClient(engine, timeout=TIMEOUT) as c:
        prefix = "x = 1\n" * ((MAX_FRAME - 200) // 6)
        result = c.infill(prefix, "", max_tokens=2)
        assert len(result["completions"]) == 1


def test_big_frames_sent_back_to_back_are_each_within_the_limit(engine, bystander):
    """Each frame is under 1 MiB though together they are not: both are served."""
    with EngineClient(engine, timeout=TIMEOUT) as c:
        pad = "p" * (MAX_FRAME - 1000)
        c.send_raw(pack({"id": 1, "method": "health", "params": {"pad": pad}}) + pack({"id": 2, "method": "health", "params": {"pad": pad}}))
        assert c.wait_for(1)["result"]["ready"] and c.wait_for(2)["result"]["ready"]


def test_random_bytes_then_a_clean_close(engine, bystander):
    with EngineClient(engine, timeout=TIMEOUT) as c:
        c.send_raw(bytes(range(0xC1, 0x100)) * 4)
        reply = c.receive()
        assert reply["error"]["code"] == PARSE_ERROR
        assert_closed(c)


def test_a_client_that_disconnects_mid_frame_does_no_harm(engine, bystander):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(engine))
    s.sendall(pack({"id": 1, "method": "infill", "params": {"prefix": "abc" * 100}})[:50])
    s.close()


def test_half_a_frame_then_silence_is_closed_after_the_frame_timeout(start_engine):
    eng = start_engine("--frame-timeout", "1")
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as other:
        with EngineClient(eng.socket_path, timeout=TIMEOUT) as c:
            c.send_raw(pack({"id": 1, "method": "health"})[:5])
            assert_closed(c)
        assert other.request("health")["ready"]  # idle without a partial frame: kept open
