"""Hypothesis fuzzing of frames and params against the live engine: every frame gets a well-formed
reply or a clean close, and the engine keeps answering `health` afterwards."""

import math
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mercury_engine.client import EngineClient
from mercury_engine.protocol import pack

TIMEOUT = 60.0
KNOWN_CODES = {-32700, -32600, -32601, -32602, -32603, -32800, -32002}
FIELDS = ["prefix", "suffix", "language", "max_tokens", "budget_ms", "threshold", "temperature", "n", "stop", "single_line", "context"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

# Params that are often valid enough to reach the sampler, with cheap sizes so the run stays short.
plausible_params = st.fixed_dictionaries(
    {"prefix": st.one_of(st.text(max_size=200), values)},
    optional={
        "suffix": st.one_of(st.text(max_size=200), values),
        "language": st.one_of(st.sampled_from(["python", "rust", ""]), values),
        "max_tokens": st.one_of(st.integers(min_value=-2, max_value=12), values),
        "budget_ms": st.one_of(st.floats(min_value=-1, max_value=300), values),
        "threshold": st.one_of(st.floats(min_value=-0.5, max_value=1.5), values),
        "temperature": st.one_of(st.floats(min_value=-1, max_value=3), values),
        "n": st.one_of(st.integers(min_value=-1, max_value=9), values),
        "stop": st.one_of(st.lists(st.text(max_size=4), max_size=3), values),
        "single_line": st.one_of(st.booleans(), values),
        "context": st.one_of(st.lists(st.text(max_size=40), max_size=3), values),
    },
)
methods = st.one_of(st.sampled_from(["infill", "cancel", "health", "stats", "no_such"]), values)
frames = st.one_of(
    st.fixed_dictionaries({"id": st.one_of(st.integers(0, 2**31), st.text(max_size=8)), "method": st.just("infill"), "params": plausible_params}),
    st.fixed_dictionaries({"id": values, "method": methods, "params": values}),
    st.dictionaries(st.text(max_size=8), values, max_size=5),
    values,
)


def exchange(sock, frame) -> list[dict]:
    """Send one frame on a fresh connection; collect replies until a `health` probe sent behind it
    is answered (and, for an infill, its own reply too) or the engine closes the connection."""
    replies = []
    infill_id = None
    if isinstance(frame, dict) and frame.get("method") == "infill":
        fid = frame.get("id")
        if (isinstance(fid, int) and not isinstance(fid, bool)) or isinstance(fid, str):
            infill_id = fid
    with EngineClient(sock, timeout=TIMEOUT) as c:
        try:
            c.send_raw(pack(frame))
            c.send("health", req_id="fuzz-probe")
            while True:
                reply = c.receive()
                if reply.get("id") == "fuzz-probe" and "result" in reply:
                    break
                replies.append(reply)
            if infill_id is not None and all(r.get("id") != infill_id for r in replies):
                replies.append(c.wait_for(infill_id))
        except (EOFError, ConnectionError):
            pass  # closed after a parse error: allowed
    return replies


def exchange_bytes(sock, data: bytes) -> list[dict]:
    """Send raw bytes, close our sending side, read every reply until the engine closes."""
    replies = []
    with EngineClient(sock, timeout=TIMEOUT) as c:
        try:
            c.send_raw(data)
            c.sock.shutdown(socket.SHUT_WR)
            while True:
                replies.append(c.receive())
        except (EOFError, ConnectionError):
            pass
    return replies


def check_reply(frame) -> None:
    assert isinstance(frame, dict) and "id" in frame
    assert ("result" in frame) != ("error" in frame)
    if "error" in frame:
        assert frame["error"]["code"] in KNOWN_CODES
        assert frame["error"]["code"] != -32603, f"internal error: {frame['error']['message']}"  # a bug
        assert isinstance(frame["error"]["message"], str) and frame["error"]["message"]


def still_healthy(sock) -> None:
    with EngineClient(sock, timeout=TIMEOUT) as c:
        assert c.request("health")["ready"] is True


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frame=frames)
def test_fuzzed_frames(engine, frame):
    replies = exchange(engine, frame)
    for reply in replies:
        check_reply(reply)
    if isinstance(frame, dict) and frame.get("method") == "infill" and isinstance(frame.get("params"), dict):
        params = frame["params"]
        budget = params.get("budget_ms", 200)
        valid_id = isinstance(frame.get("id"), (int, str)) and not isinstance(frame.get("id"), bool)
        if valid_id and isinstance(budget, float) and (math.isnan(budget) or budget <= 0):
            assert replies and replies[0]["error"]["code"] == -32602
    still_healthy(engine)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(min_size=1, max_size=300))
def test_fuzzed_bytes(engine, data):
    for reply in exchange_bytes(engine, data):
        check_reply(reply)
    still_healthy(engine)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def random_value(rng, depth: int = 0):
    makers = [lambda: None, lambda: True, lambda: rng.randint(-2**40, 2**40), lambda: rng.uniform(-1e6, 1e6),
              lambda: "".join(rng.choices("ab(){} \n\x00é😀", k=rng.randrange(12))),
              lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(8))), lambda: float("nan")]
    if depth < 2:
        makers += [lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(3))],
                   lambda: {str(rng.randrange(5)): random_value(rng, depth + 1) for _ in range(rng.randrange(3))}]
    return rng.choice(makers)()


def structured_frame(rng, i: int) -> dict:
    """A map, as a client would send, with random parts: every one is answered exactly once."""
    roll = rng.random()
    if roll < 0.4:  # often valid enough to be decoded, with budgets that keep the run short
        params = {"prefix": "".join(rng.choices("def f(x):\n    return ", k=rng.randrange(30))),
                  "max_tokens": rng.choice([1, 2, 3, 0, -1, "2"]), "budget_ms": rng.choice([1.0, 2.0, 5.0, -1.0, float("nan")])}
        for key in rng.sample(FIELDS[1:], rng.randrange(4)):
            params.setdefault(key, random_value(rng))
        return {"id": i, "method": "infill", "params": params}
    if roll < 0.8:
        return {"id": i, "method": rng.choice(["health", "stats", "cancel", "no_such", 7, None, "infill"]), "params": random_value(rng)}
    frame = {"method": random_value(rng), "params": random_value(rng)}
    if rng.random() < 0.7:
        frame["id"] = rng.choice([None, True, 1.5, [i], {"x": i}, f"s{i}"])
    return frame


def raw_frame(rng, i: int) -> bytes:
    """Bytes a broken client might send: noise, or a real frame cut short or with bytes flipped."""
    data = bytearray(pack(structured_frame(rng, i)))
    roll = rng.random()
    if roll < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if roll < 0.6:
        return bytes(data[: rng.randrange(1, max(2, len(data)))])
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def test_ten_thousand_frames_raw_and_structured_beside_a_client(start_engine):
    import random

    eng = start_engine()
    rng = random.Random(1234)
    structured, raw, batch = 8000, 2000, 200
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as bystander:
        assert bystander.infill("x = ", max_tokens=2)["completions"]
        rss_before = rss_mb(eng.proc.pid)
        replies = 0
        with EngineClient(eng.socket_path, timeout=TIMEOUT) as c:
            for start in range(0, structured, batch):
                c.send_raw(b"".join(pack(structured_frame(rng, i)) for i in range(start, start + batch)))
                for _ in range(batch):
                    check_reply(c.receive())
                    replies += 1
                assert bystander.request("health")["ready"]
        for i in range(raw):
            for reply in exchange_bytes(eng.socket_path, raw_frame(rng, structured + i)):
                check_reply(reply)
            if i % 200 == 0:
                assert bystander.request("health")["ready"]
        assert bystander.infill("y = ", max_tokens=2)["completions"]
        grown = rss_mb(eng.proc.pid) - rss_before
    assert replies == structured and eng.proc.poll() is None
    assert grown < 100, f"engine RSS grew {grown:.0f} MB over {structured + raw} frames"
    print(f"fuzz: {structured} structured frames answered, {raw} raw frames, engine RSS {grown:+.1f} MB")
