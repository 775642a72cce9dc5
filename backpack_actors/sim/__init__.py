"""Backpack exchange simulator: seeded markets, REST + WebSocket on one port, fault injection.

``open_simulator()`` serves it over real sockets (hypercorn on trio); ``SimExchange`` alone runs
in-process (``handle_http``, ``connect_memory_ws``) for virtual-time tests.
"""

from __future__ import annotations

from backpack_actors.sim.exchange import EPOCH_BASE_US, HttpResponse, SimConfig, SimExchange
from backpack_actors.sim.faults import Faults, FaultSpec, parse_fault_spec
from backpack_actors.sim.market import DEFAULT_MARKETS, MarketSpec, ModelParams, SimTrade
from backpack_actors.sim.server import SimServer, open_simulator

__all__ = [
    "DEFAULT_MARKETS",
    "EPOCH_BASE_US",
    "FaultSpec",
    "Faults",
    "HttpResponse",
    "MarketSpec",
    "ModelParams",
    "SimConfig",
    "SimExchange",
    "SimServer",
    "SimTrade",
    "open_simulator",
    "parse_fault_spec",
]
