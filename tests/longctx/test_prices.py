"""The price table: files, lookup, what a result costs, and the ``--max-cost-usd`` rule."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from longctx._errors import CostCapReached, LongctxError
from longctx._prices import (
    DEFAULT_ORIGIN,
    Price,
    PriceTable,
    Pricing,
    SpendCap,
    default_prices,
    endpoint_is_local,
    load_prices,
    manifest_is_local,
    read_price_file,
    result_usd,
    sweep_pricing,
    usd,
    user_price_file,
)
from longctx._records import Result


def result(prompt=None, cached=None, completion=None, model="m") -> Result:
    return Result(sample_id="s", task="t", runner="vllm", model=model, length=1024, context_tokens=900,
                  depth=50.0, needle_positions=(), evidence_depth=50.0, prediction="x", references=("x",),
                  score=1.0, scores={"m": 1.0}, error=None, latency_s=0.1, prompt_tokens=prompt,
                  cached_tokens=cached, completion_tokens=completion)


@pytest.fixture(autouse=True)
def no_user_file(tmp_path, monkeypatch):
    """No developer's ~/.config/longctx/prices.yaml leaks into a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


# ---- USD of one result ---------------------------------------------------------------------------
def test_usd_prices_the_cached_share_at_the_cached_rate():
    p = Price(input=2.0, cached_input=0.5, output=10.0)
    # 600 uncached * 2 + 400 cached * 0.5 + 50 generated * 10 = 1200 + 200 + 500 per million
    assert usd(p, 1000, 400, 50) == pytest.approx(1900 / 1e6)
    # no cached rate: cached tokens cost the input rate
    assert usd(Price(input=2.0, output=10.0), 1000, 400, 50) == pytest.approx(2500 / 1e6)
    # more cached than sent (an engine's odd report) is clipped to the prompt
    assert usd(p, 100, 500, 0) == pytest.approx(100 * 0.5 / 1e6)
    assert usd(p, None, None, None) is None  # no token counts: unknown, not free
    assert usd(p, None, None, 10) == pytest.approx(100 / 1e6)


def test_result_usd_needs_a_price():
    r = result(prompt=2_000_000, cached=1_000_000, completion=100_000)
    pricing = Pricing("m", "m", "f", input=1.0, cached_input=0.1, output=4.0)
    assert result_usd(r, pricing) == pytest.approx(1.0 + 0.1 + 0.4)
    assert result_usd(r, None) is None
    # budget forcing: the answer request re-sent prompt + thinking (uncached, input rate)
    forced = msgspec.structs.replace(r, extra={"answer_prompt_tokens": 500_000})
    assert result_usd(forced, pricing) == pytest.approx(1.0 + 0.1 + 0.4 + 0.5)


# ---- files -------------------------------------------------------------------------------------------
def test_yaml_and_toml_files(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("models:\n  my-model: {input: 1, cached_input: 0.25, output: 3, source: https://x, "
                 "read: 2026-12-01}\n")
    t = tmp_path / "p.toml"
    t.write_text('[models."my-model"]\ninput = 1\ncached_input = 0.25\noutput = 3\n')
    for path in (y, t):
        price = read_price_file(path)["my-model"]
        assert (price.input, price.cached_input, price.output) == (1.0, 0.25, 3.0)
    assert read_price_file(y)["my-model"].read == "2026-12-01"  # a YAML date stays a date string


@pytest.mark.parametrize("text,needle", [
    ("models: [1, 2", "bad YAML in price file"),
    ("models:\n  m: {input: 1, ouput: 2}\n", "model 'm'"),
    ("models:\n  m: {input: -1, output: 2}\n", "input must be a number"),
    ("models:\n  m: {input: true, output: 2}\n", "input must be a number"),
    ("models:\n  m: {output: 2}\n", "model 'm'"),
    ("models:\n  m: 3\n", "expected a mapping with input and output"),
    ("gpt-4o: {input: 1, output: 2}\n", "expected a mapping with one key 'models'"),
    ("[1, 2]\n", "expected a mapping with one key 'models'"),
])
def test_bad_files_are_one_line_errors(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LongctxError) as exc:
        read_price_file(path)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(LongctxError, match="no price file"):
        load_prices(tmp_path / "nope.yaml")


def test_bad_price_file_on_the_command_line_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "prices.yaml"
    bad.write_text("models:\n  m: {input: 1, ouput: 2}\n")
    for args in (["report", str(tmp_path), "--prices", str(bad), "-o", str(tmp_path / "r.html")],
                 ["compare", str(tmp_path), str(tmp_path), "--prices", str(bad)],
                 ["sweep", "-t", "ruler/niah_single_1", "--runner", "oracle", "--prices", str(bad),
                  "--out", str(tmp_path / "run")]):
        proc = subprocess.run([sys.executable, "-m", "longctx", *args], capture_output=True, text=True,
                              check=False, timeout=120, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith("run folder")]
        assert len(lines) == 1 and "price file" in lines[0] and "model 'm'" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# ---- the table -----------------------------------------------------------------------------------------
def test_default_table_cites_a_source_and_date_for_every_price():
    table = default_prices()
    assert len(table) >= 3
    for name, price in table.items():
        assert price.source and price.source.startswith("https://"), name
        assert price.read and len(price.read) == 10, name
        assert price.cached_input is not None and price.cached_input <= price.input <= price.output, name
    assert load_prices(user=False).describe() == "prices from the default table (read 2026-12-02)"


def test_lookup_order_and_layers():
    table = PriceTable([
        (DEFAULT_ORIGIN, {"gpt-4o": Price(input=2.5, output=10.0, read="2026-12-02"),
                          "claude-sonnet-4": Price(input=3.0, output=15.0)}),
        ("mine.yaml", {"gpt-4o": Price(input=1.0, output=1.0), "my-org/*": Price(input=0.2, output=0.8)}),
    ])
    assert table.pricing("gpt-4o").origin == "mine.yaml"  # a later layer wins
    assert table.pricing("gpt-4o").input == 1.0
    assert table.pricing("claude-sonnet-4-20250514").entry == "claude-sonnet-4"  # date suffix
    assert table.pricing("anthropic/Claude-Sonnet-4").entry == "claude-sonnet-4"  # prefix, case
    assert table.pricing("my-org/llama-70b").entry == "my-org/*"  # glob
    assert table.pricing("other") is None  # remote and unpriced: no USD
    local = table.pricing("other", local=True)
    assert (local.input, local.cached_input, local.output, local.entry) == (0.0, 0.0, 0.0, None)
    assert local.label == "local engine (0 USD)"
    assert table.pricing("gpt-4o", local=True).input == 1.0  # a priced local model is charged
    assert table.describe() == "prices from mine.yaml over the default table (read 2026-12-02)"
    assert table.pricing("claude-sonnet-4").label == "claude-sonnet-4 from the default table"
    assert table.pricing("gpt-4o-mini") is None  # not in these layers
    assert load_prices(user=False).pricing("gpt-4o-mini").label == (
        "gpt-4o-mini from the default table (read 2026-12-02)")


def test_user_file_sits_between_defaults_and_prices(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "longctx").mkdir()
    user = tmp_path / "longctx" / "prices.yaml"
    user.write_text("models:\n  gpt-4o: {input: 9, output: 9}\n  x: {input: 1, output: 1}\n")
    given = tmp_path / "given.yaml"
    given.write_text("models:\n  x: {input: 2, output: 2}\n")
    assert user_price_file() == user
    table = load_prices(given)
    assert table.pricing("gpt-4o").input == 9.0 and table.pricing("gpt-4o").origin == str(user)
    assert table.pricing("x").input == 2.0 and table.pricing("x").origin == str(given)
    assert table.pricing("gpt-4o-mini").origin == DEFAULT_ORIGIN


def test_local_engines():
    assert endpoint_is_local("vllm", None)
    assert endpoint_is_local("vllm", "http://127.0.0.1:8000/v1") and endpoint_is_local("vllm", "http://localhost:1/v1")
    assert not endpoint_is_local("vllm", "https://api.openai.com/v1")
    assert not endpoint_is_local("vllm", ("http://127.0.0.1:8000/v1", "https://api.example.com/v1"))
    assert endpoint_is_local("vllm", ("http://127.0.0.1:8000/v1", "http://localhost:8001/v1"))
    assert not manifest_is_local({"runner_config": {"endpoint": "http://127.0.0.1:1/v1",
                                                    "endpoints": ["http://127.0.0.1:1/v1", "http://10.0.0.7/v1"]}})
    assert manifest_is_local({"runner_config": {"endpoint": None}, "runner": "vllm"})
    assert not manifest_is_local({"runner_config": {"endpoint": "https://api.example.com/v1"}})
    assert manifest_is_local({"runner": "hf"}) and not manifest_is_local({"runner": "vllm"})


# ---- --max-cost-usd ----------------------------------------------------------------------------------
def test_sweep_pricing_refuses_a_remote_model_without_price():
    with pytest.raises(LongctxError, match="--max-cost-usd: no price for model 'mystery'"):
        sweep_pricing("mystery", "vllm", "https://api.example.com/v1", None)
    assert sweep_pricing("mystery", "vllm", None, None).label == "local engine (0 USD)"
    assert sweep_pricing("gpt-4o-mini", "vllm", "https://api.example.com/v1", None).input == 0.15


def test_spend_cap_stops_before_the_next_sample_would_pass_it():
    pricing = Pricing("m", "m", "f", input=1.0, cached_input=1.0, output=0.0)
    cap = SpendCap(0.35, pricing, [result(prompt=100_000)])  # $0.10 spent, $0.10 per sample
    cap.check()
    cap.charge(result(prompt=100_000))  # $0.20 + 0.10 <= 0.35: go on
    with pytest.raises(CostCapReached) as exc:
        cap.charge(result(prompt=100_000))  # $0.30 + 0.10 > 0.35: stop
    assert exc.value.exit_code == 5
    assert "$0.3000" in str(exc.value) and "--max-cost-usd 0.35" in str(exc.value)
    assert cap.spent == pytest.approx(0.30) and cap.priced == 3
    unknown = SpendCap(0.35, pricing, [result()])  # no token counts: unknown cost, not counted
    assert unknown.priced == 0 and unknown.spent == 0
    with pytest.raises(CostCapReached):
        SpendCap(0.0, pricing).check()  # a cap of 0 sends nothing
    with pytest.raises(LongctxError, match="0 or more"):
        SpendCap(-1, pricing)
