"""Target for ``config.load_config``: any bytes as a YAML config file.

Invariants: the only exception is ``ConfigError``, with a bounded message that never shows a
credential (the environment holds one, which seeds interpolate into ``api_secret``); a loaded
config's repr does not show it either. Time and memory are bounded by the fuzzer's limits: an
alias bomb must be refused before it is expanded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from backpack_actors.config import load_config
from backpack_actors.errors import _CREDENTIAL_KEY, ConfigError

__all__ = ["config_yaml"]

SECRET = "s3cr3t-fuzz-value-0123456789"
ENV = {"BP_SECRET": SECRET, "BP_SYMBOLS": "BTC-USDC", "BP_DEPTH": "20"}
MAX_MESSAGE = 1200

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
_PATH = _DIR / f"config-{os.getpid()}.yaml"


def config_yaml(data: bytes) -> None:
    """One config file."""
    _PATH.write_bytes(data)
    try:
        config = load_config(_PATH, env=ENV)
    except ConfigError as exc:
        message = str(exc)
        assert len(message) <= MAX_MESSAGE, len(message)
        if _CREDENTIAL_KEY.search(exc.key):
            assert SECRET not in message
        return
    assert SECRET not in repr(config)
