"""The per-utterance join of the graph and fusion services on a real redis-server."""

from __future__ import annotations

import threading

import pytest

from shared.state import StateStore, StateUnavailable, UtteranceJoin
from tests.integration.conftest import isolated_settings

pytestmark = pytest.mark.integration

PARTS = ("utterance", "text", "speech")


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    from deploy.local import stack

    s = isolated_settings(tmp_path_factory, "itest-join")
    stack.up(s, components=["redis"])
    try:
        yield StateStore(s)
    finally:
        stack.down(s, components=["redis"])


def test_the_last_part_completes_once_in_any_order(state):
    join = UtteranceJoin(state, "t1", PARTS)
    assert not join.put("c:1", "speech", b"s").complete
    assert not join.put("c:1", "utterance", b"u").complete
    assert join.put("c:1", "text", b"t").complete
    assert join.parts_of(["c:1"]) == [{"utterance": b"u", "text": b"t", "speech": b"s"}]
    with pytest.raises(ValueError, match="unknown join part"):
        join.put("c:1", "graph", b"g")


def test_replay_before_the_output_is_acknowledged_completes_again_then_never(state):
    join = UtteranceJoin(state, "t2", PARTS)
    for part in PARTS:
        join.put("c:2", part, part.encode())
    # a crash before the output was acknowledged: the replayed part must complete the join again
    assert join.put("c:2", "text", b"text").complete
    join.finish(["c:2"])
    replay = join.put("c:2", "speech", b"speech")
    assert replay.already_done and not replay.complete
    assert join.parts_of(["c:2"]) == [{}] and join.pending() == 0


def test_two_instances_racing_complete_each_utterance_exactly_once(state):
    a, b = UtteranceJoin(state, "t3", PARTS), UtteranceJoin(state, "t3", PARTS)
    completions: list[str] = []
    lock = threading.Lock()

    def feed(join, parts):
        for i in range(200):
            for part in parts:
                if join.put(f"c:{i}", part, b"x").complete:
                    with lock:
                        completions.append(f"c:{i}")

    threads = [
        threading.Thread(target=feed, args=(a, ("utterance", "text"))),
        threading.Thread(target=feed, args=(b, ("speech",))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(completions) == sorted(f"c:{i}" for i in range(200))


def test_state_errors_are_retried_not_swallowed(tmp_path_factory):
    s = isolated_settings(tmp_path_factory, "itest-join-down")  # nothing listens on its Redis port
    store = StateStore(s)
    with pytest.raises(StateUnavailable):
        UtteranceJoin(store, "t4", PARTS).put("c:1", "text", b"t")
