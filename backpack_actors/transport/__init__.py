"""Thin adapters between the trio shell and the outside world (REST via ccxt, WebSocket)."""
