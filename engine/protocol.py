"""The engine's wire protocol: msgpack framing, error codes, request and params validation.

Torch-free on purpose: the client (CLI, tests, bench) imports this module.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

MAX_FRAME = 1 << 20  # bytes; a bigger frame gets an error reply, then the connection is closed

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_READY = -32002
TOO_MANY_CONNECTIONS = -32003
CANCELLED = -32800

METHODS = ("infill", "cancel", "health", "stats", "shutdown")

MAX_TOKENS_RANGE = (1, 256)
N_RANGE = (1, 8)
MAX_LIST_ITEMS = 64  # stop strings / context snippets


class ProtocolError(Exception):
    """An error that becomes an `{"error": {code, message}}` reply."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class FatalFrameError(ProtocolError):
    """The byte stream cannot be trusted any more: reply, then close the connection."""


READ_CHUNK = 64 * 1024  # bytes read from a socket at a time


def make_unpacker() -> msgpack.Unpacker:
    """Room for one whole frame plus the read that completes it (which may start the next frame);
    the server checks the size of a frame still incomplete against MAX_FRAME itself.
    raw=False decodes strings as strict UTF-8: invalid UTF-8 raises instead of passing through."""
    return msgpack.Unpacker(max_buffer_size=MAX_FRAME + READ_CHUNK, raw=False, strict_map_key=False)


def declares_oversize(partial: bytes) -> bool:
    """True when the start of a frame already declares a string, binary, extension, array or map
    longer than MAX_FRAME, so it can be refused before the bytes arrive. msgpack's C unpacker checks
    lengths only once a value is complete; its pure-Python twin checks each header as it reads it."""
    import msgpack.fallback  # here: clients of this module never need it

    limits = {f"max_{kind}_len": MAX_FRAME for kind in ("str", "bin", "ext", "array", "map")}
    checker = msgpack.fallback.Unpacker(raw=True, strict_map_key=False, max_buffer_size=MAX_FRAME + READ_CHUNK, **limits)
    checker.feed(partial)
    try:
        checker.skip()
    except msgpack.OutOfData:
        return False
    except ValueError as e:  # other malformed bytes are the C unpacker's to report
        return "exceeds max" in str(e)
    return False


def oversize_error() -> FatalFrameError:
    return FatalFrameError(PARSE_ERROR, f"frame larger than {MAX_FRAME} bytes")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def error_reply(req_id: Any, code: int, message: str) -> dict:
    return {"id": req_id, "error": {"code": code, "message": message}}


def result_reply(req_id: Any, result: Any) -> dict:
    return {"id": req_id, "result": result}


def frame_error(exc: Exception) -> FatalFrameError:
    """Translate what msgpack raises while unpacking into the error the peer receives."""
    if isinstance(exc, msgpack.BufferFull):
        return oversize_error()
    if isinstance(exc, UnicodeDecodeError):
        return FatalFrameError(PARSE_ERROR, f"invalid UTF-8 in a string: {exc.reason}")
    if isinstance(exc, msgpack.StackError):
        return FatalFrameError(PARSE_ERROR, "frame nested too deeply")
    return FatalFrameError(PARSE_ERROR, f"invalid msgpack: {type(exc).__name__} {exc}".strip())


def is_valid_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def parse_request(frame: Any) -> tuple[Any, str, dict]:
    """(id, method, params) of a decoded frame, or ProtocolError. Unknown methods pass here;
    the dispatcher answers them with METHOD_NOT_FOUND so the id is known."""
    if not isinstance(frame, dict):
        raise FatalFrameError(PARSE_ERROR, f"a frame must be a msgpack map, got {type(frame).__name__}")
    req_id = frame.get("id")
    if not is_valid_id(req_id):
        raise ProtocolError(INVALID_REQUEST, "request 'id' must be an integer or a string")
    method = frame.get("method")
    if not isinstance(method, str):
        raise ProtocolError(INVALID_REQUEST, "request 'method' must be a string")
    params = frame.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(INVALID_PARAMS, f"'params' must be a map, got {type(params).__name__}")
    return req_id, method, params


def _type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def _string(params: dict, name: str, default: str | None = None) -> str:
    if name not in params:
        if default is None:
            raise ProtocolError(INVALID_PARAMS, f"params.{name} is required (a string)")
        return default
    value = params[name]
    if not isinstance(value, str):
        raise ProtocolError(INVALID_PARAMS, f"params.{name} must be a string, got {_type_name(value)}")
    return value


def _integer(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(INVALID_PARAMS, f"params.{name} must be an integer in {lo}..{hi}, got {_type_name(value)}")
    if not lo <= value <= hi:
        raise ProtocolError(INVALID_PARAMS, f"params.{name} must be in {lo}..{hi}, got {value}")
    return value


def _number(params: dict, name: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(INVALID_PARAMS, f"params.{name} must be a number, got {_type_name(value)}")
    value = float(value)
    too_low = value <= lo if lo_open else value < lo
    if math.isnan(value) or too_low or value > hi:
        bounds = f"{'>' if lo_open else '>='} {lo:g} and <= {hi:g}"
        raise ProtocolError(INVALID_PARAMS, f"params.{name} must be {bounds}, got {value}")
    return value


def _bool(params: dict, name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError(INVALID_PARAMS, f"params.{name} must be a boolean, got {_type_name(value)}")
    return value


def _strings(params: dict, name: str) -> list[str]:
    value = params.get(name, [])
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise ProtocolError(INVALID_PARAMS, f"params.{name} must be a list of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise ProtocolError(INVALID_PARAMS, f"params.{name} has {len(value)} items, at most {MAX_LIST_ITEMS} allowed")
    return list(value)


def parse_infill_params(params: dict):
    """Validated `InfillParams`; ProtocolError(INVALID_PARAMS) naming the first bad field.
    Unknown keys are ignored so newer clients can talk to older engines."""
    from .sampler import InfillParams  # imported here: keeps the client free of torch

    stop = _strings(params, "stop")
    if any(s == "" for s in stop):
        raise ProtocolError(INVALID_PARAMS, "params.stop must not contain empty strings")
    return InfillParams(
        prefix=_string(params, "prefix"),
        suffix=_string(params, "suffix", ""),
        language=_string(params, "language", ""),
        max_tokens=_integer(params, "max_tokens", 32, *MAX_TOKENS_RANGE),
        budget_ms=_number(params, "budget_ms", 200.0, 0.0, 600_000.0, lo_open=True),
        threshold=_number(params, "threshold", 0.9, 0.0, 1.0),
        temperature=_number(params, "temperature", 0.0, 0.0, 100.0),
        n=_integer(params, "n", 1, *N_RANGE),
        stop=stop,
        single_line=_bool(params, "single_line", False),
        context=_strings(params, "context"),
    )


def parse_cancel_params(params: dict) -> Any:
    target = params.get("id")
    if not is_valid_id(target):
        raise ProtocolError(INVALID_PARAMS, "params.id must be the integer or string id of an infill request")
    return target
