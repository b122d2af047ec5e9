"""Ports picked together for servers started later are distinct and free."""

from __future__ import annotations

import socket

from worker.ops.processes import free_ports


def test_ports_picked_together_are_distinct_and_each_can_be_bound() -> None:
    for _ in range(50):
        ports = free_ports(3)
        assert len(set(ports)) == 3
        for port in ports:
            with socket.socket() as server:
                server.bind(("127.0.0.1", port))
