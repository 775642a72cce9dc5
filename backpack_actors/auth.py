"""Backpack request signing (ED25519): pure, no I/O.

The signed text is ``instruction=<name>``, then ``&k=v`` for every parameter sorted by key, then
``&timestamp=<ms>&window=<ms>`` (docs/protocol.md §5). Values are written raw (no percent-encoding),
booleans lower-case, numbers as in the JSON. A batch (a list of parameter dicts) repeats the
``instruction=...&params`` block per element and appends the suffix once.

The secret is decoded once into a :class:`~cryptography.hazmat.primitives.asymmetric.ed25519`
private key held only by :class:`Signer`; neither its ``repr`` nor any error it raises shows it.
:class:`ClockOffset` turns one ``/api/v1/time`` answer into the offset added to local time, so a
skewed local clock does not make every request "expired".
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Final

import attrs

from backpack_actors.config import Secret
from backpack_actors.errors import BackpackActorsError

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
except ImportError as _exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "backpack_actors.auth needs the 'private' extra: pip install 'backpack-actors[private]'"
    ) from _exc

__all__ = [
    "DEFAULT_WINDOW_MS",
    "MAX_WINDOW_MS",
    "AuthError",
    "ClockOffset",
    "Signer",
    "format_value",
    "generate_keypair",
    "public_key_of",
    "signing_string",
    "verify_signature",
]

DEFAULT_WINDOW_MS: Final = 5000
MAX_WINDOW_MS: Final = 60_000

Params = Mapping[str, object] | Sequence[Mapping[str, object]]
"""One request's parameters, or a batch (a list of per-order parameter dicts)."""


class AuthError(BackpackActorsError):
    """Credentials are unusable or were refused: retrying the same credentials cannot help.

    ``cause`` names what is wrong (``bad key``, ``invalid signature``, ``expired window``, ...);
    the message never contains the secret.
    """

    def __init__(self, cause: str, detail: str = "") -> None:
        self.cause = cause
        super().__init__(f"authentication failed ({cause})" + (f": {detail}" if detail else ""))


def format_value(value: object) -> str:
    """A parameter value as Backpack signs it: booleans lower-case, everything else as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        # A float cannot be signed exactly as the JSON will carry it; prices are decimal text.
        raise TypeError("float parameters are not signed; pass decimal text or Decimal")
    return str(value)


def _block(params: Mapping[str, object]) -> str:
    return "&".join(
        f"{key}={format_value(params[key])}" for key in sorted(params) if params[key] is not None
    )


def signing_string(instruction: str, params: Params, timestamp_ms: int, window_ms: int) -> str:
    """The exact text to sign (``params`` a dict, or a list of dicts for a batch)."""
    if isinstance(params, Mapping):
        blocks = [_block(params)]
        head = f"instruction={instruction}" + (f"&{blocks[0]}" if blocks[0] else "")
    else:
        head = "&".join(
            f"instruction={instruction}" + (f"&{b}" if b else "") for b in map(_block, params)
        )
    return f"{head}&timestamp={timestamp_ms}&window={window_ms}"


def _seed(secret: str) -> bytes:
    try:
        raw = base64.b64decode(secret.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("bad secret", "api_secret is not valid base64") from None
    if len(raw) < 32:
        raise AuthError("bad secret", f"api_secret decodes to {len(raw)} bytes, needs 32")
    # ccxt accepts a 64-byte value and signs with its first 32 bytes; so do we.
    return raw[:32]


def _public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_of(secret: str | Secret) -> str:
    """The base64 public key (``X-API-Key``) of a base64 secret."""
    text = secret.reveal() if isinstance(secret, Secret) else secret
    return _public_b64(Ed25519PrivateKey.from_private_bytes(_seed(text)))


def generate_keypair() -> tuple[str, Secret]:
    """A fresh ``(public key b64, secret b64)`` pair, the secret wrapped so it never prints."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    return _public_b64(key), Secret(base64.b64encode(seed).decode())


def verify_signature(public_key_b64: str, message: str, signature_b64: str) -> bool:
    """Whether ``signature_b64`` is ``public_key_b64``'s Ed25519 signature of ``message``."""
    try:
        raw_key = base64.b64decode(public_key_b64, validate=True)
        raw_sig = base64.b64decode(signature_b64, validate=True)
        Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_sig, message.encode())
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


@attrs.define
class ClockOffset:
    """Server time minus local time, in ms, from ``/api/v1/time`` answers."""

    offset_ms: int = 0
    measured: bool = False

    def update(self, local_before_ms: int, server_ms: int, local_after_ms: int) -> int:
        """Record one measurement (the server's answer against the request's midpoint)."""
        self.offset_ms = server_ms - (local_before_ms + local_after_ms) // 2
        self.measured = True
        return self.offset_ms


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Signer:
    """Signs REST requests and private WebSocket subscriptions with one key pair.

    ``clock`` gives local milliseconds (wall time by default); ``offset`` corrects it to server
    time. The key given as ``api_key`` must be the secret's public key: a mismatch is caught
    here, before any request could be refused for it.
    """

    __slots__ = ("_key", "api_key", "clock", "offset", "window_ms")

    def __init__(
        self,
        api_key: str | Secret,
        api_secret: str | Secret,
        *,
        window_ms: int = DEFAULT_WINDOW_MS,
        clock: Callable[[], int] = _wall_ms,
        offset: ClockOffset | None = None,
    ) -> None:
        if not 0 < window_ms <= MAX_WINDOW_MS:
            raise AuthError("bad window", f"window must be 1..{MAX_WINDOW_MS} ms, got {window_ms}")
        secret = api_secret.reveal() if isinstance(api_secret, Secret) else api_secret
        self._key = Ed25519PrivateKey.from_private_bytes(_seed(secret))
        key = (api_key.reveal() if isinstance(api_key, Secret) else api_key).strip()
        if key != _public_b64(self._key):
            raise AuthError("bad key", "api_key is not the public key of api_secret")
        self.api_key = key
        self.window_ms = window_ms
        self.clock = clock
        self.offset = offset if offset is not None else ClockOffset()

    def __repr__(self) -> str:
        # Neither credential: logs and errors that show a signer name nothing to an attacker.
        return f"Signer(api_key=***, api_secret=***, window_ms={self.window_ms})"

    def now_ms(self) -> int:
        """Server time by the local clock and the measured offset."""
        return self.clock() + self.offset.offset_ms

    def sign_text(self, text: str) -> str:
        """Base64 Ed25519 signature of ``text``."""
        return base64.b64encode(self._key.sign(text.encode())).decode()

    def headers(
        self, instruction: str, params: Params | None = None, *, timestamp_ms: int | None = None
    ) -> dict[str, str]:
        """The four signing headers of one REST request."""
        params = {} if params is None else params
        ts = self.now_ms() if timestamp_ms is None else timestamp_ms
        text = signing_string(instruction, params, ts, self.window_ms)
        return {
            "X-API-Key": self.api_key,
            "X-Signature": self.sign_text(text),
            "X-Timestamp": str(ts),
            "X-Window": str(self.window_ms),
        }

    def ws_signature(self, *, timestamp_ms: int | None = None) -> list[str]:
        """``[api key, signature, timestamp, window]`` for a private SUBSCRIBE frame."""
        ts = self.now_ms() if timestamp_ms is None else timestamp_ms
        text = signing_string("subscribe", {}, ts, self.window_ms)
        return [self.api_key, self.sign_text(text), str(ts), str(self.window_ms)]
