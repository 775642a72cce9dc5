"""Hostile configs (issue 12): bounded parsing, bounded error messages, no credential echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from backpack_actors.config import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    config_from_mapping,
    load_config,
)
from backpack_actors.errors import ECHO_LIMIT, ConfigError

PASSWORD = "Pw-7f3a9c1e-UNIQUE"


def _laughs(levels: int) -> str:
    """The "billion laughs" value: each level a list of nine aliases of the one below (one line,
    as a YAML flow sequence or an environment variable holds it)."""
    items = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        items.append(f"&a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "[" + ", ".join(items) + "]"


def _load(tmp_path: Path, text: str | bytes) -> ConfigError:
    path = tmp_path / "c.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return info.value


def test_billion_laughs_is_refused_before_anything_expands(tmp_path: Path) -> None:
    # The file: a few hundred bytes inside a known key, 9**9 "lol"s once the value is
    # walked (the old loader ran out of memory interpolating it). Refused at the first anchor,
    # so this returns at once.
    text = "exchanges:\n  x:\n    symbols: " + _laughs(9) + "\n"
    assert len(text) < 700
    error = _load(tmp_path, text)
    assert "anchors and aliases" in str(error)
    assert "at line 3, column 15" in str(error)
    assert error.key.endswith("c.yaml")


def test_an_alias_inside_a_known_key_is_refused_with_its_position(tmp_path: Path) -> None:
    # The old loader expanded this into ['BTC-USDC', 'BTC-USDC'] and then blamed a duplicate.
    error = _load(tmp_path, "exchanges:\n  x:\n    symbols: [&s BTC-USDC, *s]\n")
    assert "anchors and aliases (&name, *name) are not allowed" in str(error)
    assert "at line 3, column" in str(error)


def test_an_anchor_alone_is_refused_too(tmp_path: Path) -> None:
    error = _load(tmp_path, "exchanges:\n  x: &feed\n    symbols: [BTC-USDC]\n")
    assert "anchors and aliases" in str(error)
    assert "at line 2, column" in str(error)


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    body = "exchanges:\n  x:\n    symbols: [BTC-USDC]\n"
    error = _load(tmp_path, body + "#" * (MAX_CONFIG_BYTES - len(body) + 1))
    assert f"a config file of at most {MAX_CONFIG_BYTES} bytes" in str(error)
    # Exactly at the bound still loads.
    path = tmp_path / "ok.yaml"
    path.write_text(body + "#" * (MAX_CONFIG_BYTES - len(body)), encoding="utf-8")
    assert load_config(path).symbols == ("BTC-USDC",)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    depth = 10_000
    error = _load(tmp_path, "exchanges:\n  x:\n    symbols: " + "[" * depth + "]" * depth + "\n")
    assert f"nesting deeper than {MAX_YAML_DEPTH} levels" in str(error)


def test_an_integer_python_cannot_convert_is_a_config_error(tmp_path: Path) -> None:
    error = _load(tmp_path, "exchanges:\n  x:\n    symbols: [A-B]\n    book_depth: " + "9" * 5000)
    assert "valid YAML" in str(error)
    assert len(str(error)) < 400


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    error = _load(tmp_path, b"exchanges:\n  x:\n    symbols: [\xff]\n")
    assert "a UTF-8 text file (invalid byte at offset 30)" in str(error)


def _feed(**values: object) -> dict[str, object]:
    return {"exchanges": {"x": {"symbols": ["BTC-USDC"], **values}}}


def test_a_short_env_value_cannot_expand_into_a_huge_message() -> None:
    # Five levels: 59,049 "lol"s, a message of ~350 kB under the old code.
    value = _laughs(5)
    assert len(value) < 300
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_feed(stale_timeout="${T}"), env={"T": value})
    message = str(info.value)
    assert message.startswith("config key 'exchanges.x.stale_timeout': expected a number")
    assert len(message) < 200
    assert message.endswith("…")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stale_timeout", "x" * 100_000),
        ("trade_policy", "y" * 100_000),
        ("symbols", [["z" * 1000] * 1000] * 1000),
        ("channels", ["q" * 100_000]),
        ("class", "C" * 100_000),
    ],
)
def test_every_echoed_value_is_shortened(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_feed(**{key: value}))
    message = str(info.value)
    got = message.partition(", got ")[2]
    assert got, message
    assert len(got) <= ECHO_LIMIT + 1
    assert got.endswith("…")


def test_a_credential_value_is_never_echoed() -> None:
    error = ConfigError("exchanges.x.api_secret", "a string", PASSWORD)
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_feed(api_key=[PASSWORD], api_secret="s"))
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("rest_url", f"ftp://user:{PASSWORD}@api.example"),
        ("rest_url", f"user:{PASSWORD}@api.example"),
        ("rest_url", f"https://user:{PASSWORD}@"),
        ("rest_url", f"https://user:{PASSWORD}@[::1"),
        ("ws_url", f"https://user:{PASSWORD}@ws.example/stream"),
        ("ws_url", f"user:{PASSWORD}@ws.example"),
    ],
)
def test_url_errors_never_echo_the_password(key: str, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_feed(**{key: url}))
    assert key in str(info.value)
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(info.value)
    assert "***" in str(info.value)


def test_a_url_with_credentials_is_kept_for_use() -> None:
    config = config_from_mapping(_feed(rest_url=f"https://user:{PASSWORD}@api.example/"))
    assert config.rest_url == f"https://user:{PASSWORD}@api.example"


def test_100k_symbols_are_checked_for_duplicates_in_one_pass() -> None:
    symbols = [f"S{i}-USDC" for i in range(100_000)]
    config = config_from_mapping({"exchanges": {"x": {"symbols": symbols}}})
    assert config.symbols == tuple(symbols)
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"exchanges": {"x": {"symbols": [*symbols, " S50000-USDC "]}}})
    assert info.value.key == "exchanges.x.symbols[100000]"
    assert "each symbol once, got 'S50000-USDC'" in str(info.value)


def test_an_unknown_key_and_a_crowd_of_feeds_are_shown_bounded() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_feed(**{"k" * 100_000: 1}))
    assert str(info.value).startswith("config key 'exchanges.x.kkkk")
    assert len(str(info.value)) < 300
    feeds = {f"feed{i}": {"symbols": ["A-B"]} for i in range(1000)}
    with pytest.raises(ConfigError) as crowd:
        config_from_mapping({"exchanges": feeds})
    assert "pick one of: feed0, feed1, feed10, feed100, " in str(crowd.value)
    assert str(crowd.value).endswith(" and 990 more")
    assert len(str(crowd.value)) < 300
