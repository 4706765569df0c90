"""The Socket.IO manager finds a leaving socket's rooms without scanning every room."""

from __future__ import annotations

import inspect
import re
import time

import socketio

from hub.sockets.server import HubManager

NAMESPACE = "/chat"


def populate(manager: socketio.AsyncManager, sockets: int) -> None:
    for i in range(sockets):
        sid = f"s{i}"
        manager.basic_enter_room(sid, NAMESPACE, None, eio_sid=f"e{i}")
        manager.basic_enter_room(sid, NAMESPACE, sid, eio_sid=f"e{i}")
        if i % 3:  # some enter rooms of their own, shared with others
            manager.basic_enter_room(sid, NAMESPACE, f"tenant{i % 5}")
            manager.basic_enter_room(sid, NAMESPACE, f"user{i}")


def test_disconnect_leaves_the_same_rooms_as_python_socketio() -> None:
    ours, stock = HubManager(), socketio.AsyncManager()
    for manager in (ours, stock):
        populate(manager, 60)
        manager.basic_leave_room("s1", NAMESPACE, "user1")
        manager.basic_close_room("tenant2", NAMESPACE)
        manager.callbacks["s4"] = {1: print}
        manager.pending_disconnect[NAMESPACE] = {"s4"}
        for i in range(0, 60, 2):
            manager.basic_disconnect(f"s{i}", NAMESPACE)
    assert ours.rooms == stock.rooms
    assert ours.callbacks == stock.callbacks == {}
    assert ours.pending_disconnect == stock.pending_disconnect == {}
    for i in range(1, 60, 2):
        ours.basic_disconnect(f"s{i}", NAMESPACE)
    assert ours.rooms == {}
    assert ours._entered == {}


def test_a_disconnect_costs_the_same_with_many_sockets() -> None:
    manager = HubManager()
    populate(manager, 10_000)
    started = time.perf_counter()
    for i in range(10_000):
        manager.basic_disconnect(f"s{i}", NAMESPACE)
    # python-socketio's scan takes ~0.7 ms per disconnect here, 3-4 s in all.
    assert time.perf_counter() - started < 1.0
    assert manager.rooms == {}


def test_the_manager_state_basic_disconnect_clears_is_what_we_clear() -> None:
    """An upgrade that has basic_disconnect clear more state must fail here: update
    hub/sockets/server.py RoomsBySid.basic_disconnect."""
    source = inspect.getsource(socketio.base_manager.BaseManager.basic_disconnect)
    assert set(re.findall(r"self\.(\w+)", source)) == {
        "rooms",
        "basic_leave_room",
        "callbacks",
        "pending_connect",
        "pending_disconnect",
    }
