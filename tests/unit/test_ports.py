"""Ports handed to servers that start later: never from the range outgoing connections draw from."""

import random
import socket

import pytest

from deploy.local import process


def test_picked_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice():
    low, _ = process.ephemeral_port_range()
    ports = [process.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(process.LOWEST_PICKED_PORT <= p < low for p in ports)


def test_a_port_something_listens_on_is_not_picked(monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        monkeypatch.setattr(process, "LOWEST_PICKED_PORT", taken)
        monkeypatch.setattr(process, "ephemeral_port_range", lambda: (taken + 1002, 60999))
        rng = random.Random(0)
        # the first draws in [taken, taken + 1001] include ``taken``; it is skipped each time
        picks = [process.free_port(rng=rng) for _ in range(50)]
    assert taken not in picks
    assert all(taken < p <= taken + 1001 for p in picks)


def test_an_outgoing_connection_cannot_hold_a_picked_port():
    """The race that failed CI: a client's local port is drawn from the ephemeral range."""
    low, high = process.ephemeral_port_range()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        clients = [socket.create_connection(server.getsockname()) for _ in range(20)]
        try:
            local = [c.getsockname()[1] for c in clients]
        finally:
            for c in clients:
                c.close()
    assert all(low <= p <= high for p in local)
    assert all(process.free_port() < low for _ in range(20))


def test_no_free_port_left_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(process, "port_is_free", lambda host, port: False)
    with pytest.raises(process.PortInUseError, match="no free port"):
        process.free_port()
