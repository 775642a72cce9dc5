"""Feed configuration: YAML format, interpolation, validation messages, secrets."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from backpack_actors.config import (
    L2_BOOK,
    TRADES,
    FeedConfig,
    Secret,
    config_from_mapping,
    load_config,
)
from backpack_actors.core.restart import Backoff
from backpack_actors.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "seed.yaml"
KEY = "key-4f1c9e7a-visible-only-via-reveal"
SECRET = "c2VjcmV0LXNpZ25pbmcta2V5LWRvLW5vdC1wcmludA=="
ENV = {"BACKPACK_KEY": KEY, "BACKPACK_SECRET": SECRET}

SEED_YAML = """\
exchanges:
  ccxt_backpack:
    class: CcxtBackpackFeed
    exchange: backpack
    symbols: ["BTC-USDT", "ETH-USDT"]
    channels: [TRADES, L2_BOOK]
    snapshot_interval: 30          # seconds between REST snapshots
    websocket: true                 # disable if region restrictions block WS
    rest_only: false
    api_key: ${BACKPACK_KEY}        # optional for private channels
    api_secret: ${BACKPACK_SECRET}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feed.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def feed(**settings: object) -> dict[str, Any]:
    entry: dict[str, object] = {"symbols": ["BTC-USDC"]}
    entry.update(settings)
    return {"exchanges": {"ccxt_backpack": entry}}


def assert_no_secret(text: str) -> None:
    assert KEY not in text
    assert SECRET not in text


# --- the seed format -------------------------------------------------------------------------


def test_seed_yaml_loads_with_every_value(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_YAML), env=ENV)
    assert config.symbols == ("BTC-USDT", "ETH-USDT")
    assert config.channels == (TRADES, L2_BOOK)
    assert config.snapshot_interval == 30.0
    assert isinstance(config.snapshot_interval, float)
    assert (config.websocket, config.rest_only, config.use_websocket) == (True, False, True)
    assert config.api_key is not None
    assert config.api_key.reveal() == KEY
    assert config.api_secret is not None
    assert config.api_secret.reveal() == SECRET
    assert config.rest_url == "https://api.backpack.exchange"
    assert config.ws_url == "wss://ws.backpack.exchange"


def test_example_file_is_the_seed_config() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert "\n".join(body) + "\n" == SEED_YAML
    assert "BTC-USDC" in text  # the comment points real-exchange users at listed markets
    public = load_config(EXAMPLE, env={"BACKPACK_KEY": "", "BACKPACK_SECRET": ""})
    assert (public.api_key, public.api_secret) == (None, None)
    assert public.symbols == ("BTC-USDT", "ETH-USDT")


def test_defaults() -> None:
    config = FeedConfig.from_kwargs(symbols=["BTC-USDC"])
    assert config.channels == (TRADES, L2_BOOK)
    assert (config.snapshot_interval, config.stale_timeout) == (30.0, 30.0)
    assert (config.max_ws_failures, config.restart_intensity, config.restart_period) == (
        5,
        10,
        60.0,
    )
    assert config.history_rate_per_min == 30.0
    # Since 4246755 trades default to drop_newest ("block" is an accepted alias of it).
    assert (config.book_depth, config.trade_policy, config.book_policy) == (
        0,
        "drop_newest",
        "conflate",
    )
    assert (config.api_key, config.api_secret) == (None, None)
    backoff = config.make_backoff()
    assert (backoff.base, backoff.factor, backoff.cap, backoff.jitter, backoff.stable_after) == (
        0.5,
        2.0,
        30.0,
        0.2,
        30.0,
    )
    assert isinstance(backoff, Backoff)
    window = config.make_restart_window()
    assert (window.intensity, window.period) == (10, 60.0)


@pytest.mark.parametrize(
    ("given_channels", "expected"),
    [
        (["TRADES"], (TRADES,)),
        (["trades"], (TRADES,)),
        (["L2_BOOK"], (L2_BOOK,)),
        (["l2_book"], (L2_BOOK,)),
        (["l2_book", "Trades"], (L2_BOOK, TRADES)),
        (["TRADES", "trades"], (TRADES,)),
    ],
)
def test_channel_names_in_any_case(given_channels: list[str], expected: tuple[str, ...]) -> None:
    assert FeedConfig.from_kwargs(symbols=["X-Y"], channels=given_channels).channels == expected
    assert config_from_mapping(feed(channels=given_channels)).channels == expected


@pytest.mark.parametrize(
    ("websocket", "rest_only", "use_websocket"),
    [(True, False, True), (False, False, False), (True, True, False), (False, True, False)],
)
def test_rest_only_selection(websocket: bool, rest_only: bool, use_websocket: bool) -> None:
    config = FeedConfig.from_kwargs(symbols=["A-B"], websocket=websocket, rest_only=rest_only)
    assert config.use_websocket is use_websocket


def test_python_api_takes_the_same_keys_as_yaml() -> None:
    settings: dict[str, object] = {
        "class": "CcxtBackpackFeed",
        "exchange": "backpack",
        "symbols": ["SOL-USDC"],
        "channels": ["L2_BOOK"],
        "snapshot_interval": 0,
        "rest_url": "http://127.0.0.1:8080/",
        "ws_url": "ws://127.0.0.1:8081",
        "reconciler_inbox": 64,
        "trade_policy": "drop_oldest",
        "reconnect_cap": 5,
    }
    from_yaml = config_from_mapping(yaml.safe_load(yaml.safe_dump(feed(**settings))))
    from_kwargs = FeedConfig.from_kwargs(**settings)
    assert from_yaml == from_kwargs
    assert from_kwargs.rest_url == "http://127.0.0.1:8080"  # trailing slash dropped
    assert from_kwargs.snapshot_interval == 0.0
    assert from_kwargs.reconciler_inbox == 64


def test_direct_constructor_validates_too() -> None:
    with pytest.raises(ConfigError, match="'snapshot_interval'"):
        FeedConfig(symbols=("BTC-USDC",), snapshot_interval=-1.0)
    config = FeedConfig(symbols=("BTC-USDC",), api_key=Secret(KEY), api_secret=Secret(SECRET))
    assert config.api_key == Secret(KEY)


@given(
    snapshot_interval=st.floats(0, 1e6, allow_nan=False),
    stale_timeout=st.floats(0.001, 1e6),
    max_ws_failures=st.integers(1, 1000),
    book_depth=st.integers(0, 5000),
    jitter=st.floats(0, 0.99),
    websocket=st.booleans(),
)
def test_yaml_and_kwargs_agree_on_valid_values(
    snapshot_interval: float,
    stale_timeout: float,
    max_ws_failures: int,
    book_depth: int,
    jitter: float,
    websocket: bool,
) -> None:
    settings: dict[str, object] = {
        "snapshot_interval": snapshot_interval,
        "stale_timeout": stale_timeout,
        "max_ws_failures": max_ws_failures,
        "book_depth": book_depth,
        "reconnect_jitter": jitter,
        "websocket": websocket,
    }
    from_yaml = config_from_mapping(yaml.safe_load(yaml.safe_dump(feed(**settings))))
    assert from_yaml == FeedConfig.from_kwargs(symbols=["BTC-USDC"], **settings)
    assert from_yaml.snapshot_interval == snapshot_interval
    assert from_yaml.book_depth == book_depth


# --- interpolation ---------------------------------------------------------------------------


def test_interpolation_with_defaults_and_typed_values() -> None:
    mapping = feed(
        rest_url="http://${HOST:-127.0.0.1}:${PORT}",
        snapshot_interval="${INTERVAL}",
        websocket="${WS:-true}",
        symbols=["${BASE}-USDC", "ETH-USDC"],
    )
    env = {"PORT": "9000", "INTERVAL": "12.5", "BASE": "SOL"}
    config = config_from_mapping(mapping, env=env)
    assert config.rest_url == "http://127.0.0.1:9000"
    assert config.snapshot_interval == 12.5
    assert config.websocket is True
    assert config.symbols == ("SOL-USDC", "ETH-USDC")
    overridden = config_from_mapping(mapping, env={**env, "HOST": "10.0.0.1", "WS": "false"})
    assert overridden.rest_url == "http://10.0.0.1:9000"
    assert overridden.websocket is False


def test_unset_variable_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(feed(ws_url="${WS_ENDPOINT}"), env={})
    assert info.value.key == "exchanges.ccxt_backpack.ws_url"
    assert "WS_ENDPOINT" in str(info.value)


def test_interpolated_non_number_is_a_type_error() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(feed(stale_timeout="${T}"), env={"T": "soon"})
    assert info.value.key == "exchanges.ccxt_backpack.stale_timeout"
    assert "number of seconds" in str(info.value)


def test_malformed_reference_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"\$\{NAME\}") as info:
        config_from_mapping(feed(ws_url="wss://${HOST"), env={"HOST": "x"})
    assert info.value.key == "exchanges.ccxt_backpack.ws_url"


@pytest.mark.parametrize("env", [{"BACKPACK_KEY": "", "BACKPACK_SECRET": ""}, {}])
def test_empty_secret_means_no_credentials(env: dict[str, str]) -> None:
    mapping = feed(api_key="${BACKPACK_KEY:-}", api_secret="${BACKPACK_SECRET:-}")
    config = config_from_mapping(mapping, env=env)
    assert (config.api_key, config.api_secret) == (None, None)


# --- secrets ---------------------------------------------------------------------------------


def test_secret_never_prints() -> None:
    secret = Secret(SECRET)
    assert repr(secret) == "***"
    assert str(secret) == "***"
    assert f"{secret} {secret!r}" == "*** ***"
    assert secret.reveal() == SECRET
    assert secret == Secret(SECRET)
    assert secret != Secret(KEY)


def test_config_repr_and_logs_hide_secrets(caplog: pytest.LogCaptureFixture) -> None:
    config = config_from_mapping(yaml.safe_load(SEED_YAML), env=ENV)
    assert_no_secret(repr(config))
    assert_no_secret(str(config))
    assert "api_key=***" in repr(config)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("config %s / %r / %s", config, config, config.api_key)
    assert "api_key=***" in caplog.text
    assert_no_secret(caplog.text)


def test_secrets_never_appear_in_config_errors(tmp_path: Path) -> None:
    messages: list[str] = []
    cases: list[dict[str, Any]] = [
        feed(api_key=KEY),  # api_secret missing
        feed(api_secret=SECRET),  # api_key missing
        feed(api_key=KEY, api_secret=SECRET, stale_timeout="never"),  # another key is wrong
        feed(api_key=KEY, api_secret=SECRET, snapshot_intervall=1),  # unknown key
    ]
    for mapping in cases:
        with pytest.raises(ConfigError) as info:
            config_from_mapping(mapping)
        messages.append(str(info.value))
    with pytest.raises(ConfigError) as info:
        FeedConfig.from_kwargs(symbols=["A-B"], api_key=KEY, api_secret=12345678901234567)
    messages.append(str(info.value))
    assert "12345678901234567" not in messages[-1]
    # A YAML syntax error on the credential's own line must not quote that line.
    broken = SEED_YAML.replace("${BACKPACK_SECRET}", f'"{SECRET}')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, broken), env=ENV)
    messages.append(str(info.value))
    assert "line" in messages[-1]
    for message in messages:
        assert_no_secret(message)


# --- validation messages ---------------------------------------------------------------------


def test_bad_yaml_reports_line_and_column(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        exchanges:
          ccxt_backpack:
            symbols: [BTC-USDC
            channels: [TRADES]
        """
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert info.value.key == str(tmp_path / "feed.yaml")
    assert "valid YAML" in message
    assert "line 4, column 13" in message


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    text = SEED_YAML + "    snapshot_interval: 5\n"
    with pytest.raises(ConfigError, match="line 12") as info:
        load_config(write(tmp_path, text), env=ENV)
    assert info.value.key == "snapshot_interval"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable config file"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("mapping", "key", "suggestion"),
    [
        (
            feed(snapshot_intervall=5),
            "exchanges.ccxt_backpack.snapshot_intervall",
            "snapshot_interval",
        ),
        (feed(rest_onyl=True), "exchanges.ccxt_backpack.rest_onyl", "rest_only"),
        (feed(wsurl="wss://x"), "exchanges.ccxt_backpack.wsurl", "ws_url"),
        ({"exchange": {}}, "exchange", "exchanges"),
    ],
)
def test_unknown_key_suggests_the_closest(mapping: Any, key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(mapping)
    assert info.value.key == key
    assert f"did you mean {suggestion!r}" in str(info.value)


def test_unknown_kwarg_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as info:
        FeedConfig.from_kwargs(symbols=["A-B"], stale_timout=3)
    assert info.value.key == "stale_timout"
    assert "did you mean 'stale_timeout'" in str(info.value)


@pytest.mark.parametrize(
    ("settings", "key", "expected"),
    [
        ({"snapshot_interval": "soon"}, "snapshot_interval", "a number of seconds >= 0"),
        ({"snapshot_interval": -1}, "snapshot_interval", "a number of seconds >= 0"),
        ({"stale_timeout": 0}, "stale_timeout", "a number of seconds > 0"),
        ({"websocket": 1}, "websocket", "true or false"),
        ({"symbols": "BTC-USDC"}, "symbols", "a non-empty list of symbols"),
        ({"symbols": []}, "symbols", "a non-empty list of symbols"),
        ({"symbols": ["BTC-USDC", 7]}, "symbols[1]", "a symbol such as"),
        ({"symbols": ["BTC-USDC", "BTC-USDC"]}, "symbols[1]", "each symbol once"),
        ({"channels": ["TRADES", "L2BOOK"]}, "channels[1]", "did you mean 'L2_BOOK'"),
        ({"channels": []}, "channels", "a non-empty list of channels"),
        ({"reconciler_inbox": 0}, "reconciler_inbox", "an integer >= 1"),
        ({"consumer_queue": 2.5}, "consumer_queue", "an integer >= 1"),
        ({"max_ws_failures": True}, "max_ws_failures", "an integer >= 1"),
        ({"reconnect_jitter": 1.0}, "reconnect_jitter", "a number in [0, 1)"),
        ({"reconnect_factor": 0.5}, "reconnect_factor", "a number >= 1"),
        ({"reconnect_base": 10, "reconnect_cap": 1}, "reconnect_cap", ">= reconnect_base"),
        ({"rest_url": "ftp://host"}, "rest_url", "https:// URL"),
        ({"ws_url": "https://ws.example"}, "ws_url", "wss:// URL"),
        ({"trade_policy": "lossy"}, "trade_policy", "'drop_newest' or 'drop_oldest' or 'block'"),
        ({"book_policy": "drop"}, "book_policy", "'conflate'"),
        ({"book_depth": -5}, "book_depth", "an integer >= 0"),
        ({"class": "BinanceFeed"}, "class", "'CcxtBackpackFeed'"),
        ({"exchange": "binance"}, "exchange", "'backpack'"),
    ],
)
def test_wrong_values_name_the_key_and_the_expectation(
    settings: dict[str, object], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(feed(**settings))
    assert info.value.key == f"exchanges.ccxt_backpack.{key}"
    assert expected in str(info.value)
    with pytest.raises(ConfigError) as kwargs_info:
        FeedConfig.from_kwargs(**{"symbols": ["BTC-USDC"], **settings})
    assert kwargs_info.value.key == key


def test_missing_symbols() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"exchanges": {"bp": {"channels": ["TRADES"]}}})
    assert info.value.key == "exchanges.bp.symbols"


def test_feed_selection_among_several_entries() -> None:
    mapping = {
        "exchanges": {
            "main": {"symbols": ["BTC-USDC"]},
            "backup": {"symbols": ["ETH-USDC"], "rest_url": "https://proxy.example"},
        }
    }
    with pytest.raises(ConfigError, match="backup, main"):
        config_from_mapping(mapping)
    backup = config_from_mapping(mapping, name="backup")
    assert (backup.symbols, backup.rest_url) == (("ETH-USDC",), "https://proxy.example")
    with pytest.raises(ConfigError, match="did you mean 'backup'"):
        config_from_mapping(mapping, name="backpu")


@pytest.mark.parametrize("mapping", [["exchanges"], None, {"exchanges": []}, {"exchanges": {}}])
def test_wrong_top_level_shapes(mapping: object) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        config_from_mapping(mapping)
