"""A real `mercury-engine serve` process over its real socket: round trips, concurrency, cancel."""

import threading
import time

import pytest

from mercury_engine.client import EngineClient, EngineError
from mercury_engine.protocol import CANCELLED, INVALID_REQUEST

TIMEOUT = 60.0  # generous: the machine is shared


def connect(sock) -> EngineClient:
    return EngineClient(sock, timeout=TIMEOUT)


def check_infill_result(result: dict, n: int = 1, max_tokens: int = 32) -> None:
    assert set(result) == {"completions", "timings", "truncated"}
    assert 1 <= len(result["completions"]) <= n  # distinct candidates only
    confidences = [c["confidence"] for c in result["completions"]]
    assert confidences == sorted(confidences, reverse=True)
    for c in result["completions"]:
        assert isinstance(c["text"], str)
        assert isinstance(c["tokens"], int) and 0 <= c["tokens"] <= max_tokens
        assert 0.0 <= c["confidence"] <= 1.0
    t = result["timings"]
    assert set(t) == {"queue_ms", "model_ms", "total_ms", "steps", "forwards"}
    assert t["steps"] >= 1 and t["forwards"] >= 1
    assert 0 <= t["queue_ms"] <= t["total_ms"]
    assert isinstance(result["truncated"], bool)


def test_health_reports_the_loaded_model(engine, tiny_model_dir):
    with connect(engine) as c:
        h = c.request("health")
    assert h["ready"] is True
    assert h["model"] == str(tiny_model_dir.resolve())
    assert h["device"] == "cpu"
    assert isinstance(h["pid"], int) and h["uptime_s"] >= 0
    assert h["version"]


def test_infill_round_trip(engine):
    with connect(engine) as c:
        result = c.infill("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", language="python", max_tokens=16)
    check_infill_result(result, max_tokens=16)


def test_n_candidates_and_string_ids(engine):
    with connect(engine) as c:
        c.send("infill", {"prefix": "import ", "n": 3, "max_tokens": 8, "temperature": 0.8}, req_id="req-α")
        reply = c.wait_for("req-α")
    assert reply["id"] == "req-α"
    check_infill_result(reply["result"], n=3, max_tokens=8)


def test_pipelined_requests_on_one_connection_are_matched_by_id(engine):
    with connect(engine) as c:
        ids = [c.send("infill", {"prefix": f"x{i} = ", "max_tokens": 4 + i, "n": 1 + i % 3}) for i in range(6)]
        hid = c.send("health")
        replies = {}
        while len(replies) < 7:
            frame = c.receive()
            replies[frame["id"]] = frame
    assert replies[hid]["result"]["ready"] is True
    for i, rid in enumerate(ids):
        check_infill_result(replies[rid]["result"], n=1 + i % 3, max_tokens=4 + i)


def test_an_id_still_pending_cannot_be_reused(engine):
    with connect(engine) as c:
        c.send("infill", {"prefix": "a", "max_tokens": 256, "threshold": 1.0, "budget_ms": 60000}, req_id=5)
        c.send("infill", {"prefix": "b"}, req_id=5)
        first = c.receive()
        assert first["id"] == 5 and first["error"]["code"] == INVALID_REQUEST
        assert c.request("cancel", {"id": 5}) == {"cancelled": True}
        assert c.wait_for(5)["error"]["code"] == CANCELLED


def test_many_concurrent_clients_each_get_their_own_replies(engine):
    """24 connections at once, each pipelining 3 infills with ids of its own and its own n and
    max_tokens: each must get exactly its 3 replies, nothing foreign. Requests arriving together
    are decoded in shared batches."""
    clients = 24
    with connect(engine) as c:
        before = c.request("stats")
    go = threading.Barrier(clients)
    outcomes: dict[int, object] = {}

    def client(k: int) -> None:
        try:
            with connect(engine) as c:
                n, max_tokens = 1 + k % 4, 2 + k
                ids = [k * 10 + i for i in (1, 2, 3)]
                go.wait(TIMEOUT)
                for rid in ids:
                    c.send("infill", {"prefix": f"value_{k} = ", "n": n, "max_tokens": max_tokens, "temperature": 0.5}, req_id=rid)
                replies = [c.wait_for(rid) for rid in ids]
                for reply in replies:
                    check_infill_result(reply["result"], n=n, max_tokens=max_tokens)
                assert c.request("health")["ready"]  # and nothing foreign arrived in between
                assert not c.unclaimed, f"stray replies: {c.unclaimed}"
                outcomes[k] = [r["id"] - k * 10 for r in replies]
        except BaseException as exc:  # reported by the main thread
            outcomes[k] = exc

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    for k in range(clients):
        assert outcomes.get(k) == [1, 2, 3], f"client {k}: {outcomes.get(k)!r}"

    with connect(engine) as c:
        after = c.request("stats")
    jobs = after["batches"] * after["mean_batch_size"] - before["batches"] * before["mean_batch_size"]
    batches = after["batches"] - before["batches"]
    assert after["completed"] - before["completed"] == clients * 3
    assert jobs / batches > 1.0, "requests that arrived together were not batched"


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


LONG = {"prefix": "def long_one(", "max_tokens": 256, "threshold": 1.0, "budget_ms": 120000, "n": 8}


def test_cancel_a_queued_infill(engine):
    with connect(engine) as c:
        rid = c.send("infill", LONG)
        assert c.request("cancel", {"id": rid}) == {"cancelled": True}
        assert c.wait_for(rid)["error"]["code"] == CANCELLED
        assert c.request("cancel", {"id": rid}) == {"cancelled": False}  # already over
        assert c.request("cancel", {"id": 999_999}) == {"cancelled": False}  # never sent
        check_infill_result(c.infill("x = ", max_tokens=4), max_tokens=4)


def test_cancel_a_running_infill_leaves_the_others_alone(engine):
    with connect(engine) as c, connect(engine) as other, connect(engine) as watcher:
        batches = watcher.request("stats")["batches"]
        rid = c.send("infill", LONG)
        wait_until(lambda: watcher.request("stats")["batches"] > batches, what="the long infill to start")
        oid = other.send("infill", {"prefix": "y = ", "max_tokens": 4})
        assert c.request("cancel", {"id": rid}) == {"cancelled": True}
        assert c.wait_for(rid)["error"]["code"] == CANCELLED
        check_infill_result(other.wait_for(oid)["result"], max_tokens=4)


def test_cancel_only_reaches_requests_of_the_same_connection(engine):
    with connect(engine) as c, connect(engine) as stranger:
        rid = c.send("infill", {"prefix": "z = ", "max_tokens": 4})
        assert stranger.request("cancel", {"id": rid}) == {"cancelled": False}
        assert "result" in c.wait_for(rid)


def test_a_vanished_client_stops_its_requests(engine):
    with connect(engine) as watcher:
        cancelled = watcher.request("stats")["cancelled"]
        gone = connect(engine)
        gone.send("infill", LONG)
        gone.send("infill", LONG)
        gone.close()
        wait_until(lambda: watcher.request("stats")["cancelled"] >= cancelled + 2, what="the vanished client's requests to be cancelled")
        check_infill_result(watcher.infill("w = ", max_tokens=4), max_tokens=4)


def test_stats_count_what_happened(engine):
    with connect(engine) as c:
        before = c.request("stats")
        c.infill("s = ", max_tokens=4)
        with pytest.raises(EngineError):
            c.request("no_such_method")
        after = c.request("stats")
    assert after["completed"] == before["completed"] + 1
    assert after["errors"] == before["errors"] + 1
    assert after["requests"] == before["requests"] + 3  # infill, bad method, and this stats itself
    assert after["forwards"] > before["forwards"]
    assert after["clients"] >= 1 and after["ready"] is True
    for key in ("latency_ms", "queue_ms", "model_ms"):
        lat = after[key]
        assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"]
    assert after["latency_ms"]["p50"] > 0
