"""What results cost in USD: the price table, the price of a model, and ``--max-cost-usd``.

A price is three rates in USD per million tokens: ``input`` (prompt tokens not served from the
provider's cache), ``cached_input`` (prompt tokens served from it: ``Result.cached_tokens``;
default = ``input``) and ``output`` (generated tokens). A result costs::

    ((prompt_tokens - cached_tokens) * input + cached_tokens * cached_input
     + completion_tokens * output) / 1e6

plus, for a reasoning model whose thinking budget ran out, the second request's prompt
(``extra["answer_prompt_tokens"]``) at the input rate; thinking tokens are part of
``completion_tokens``. A result is of unknown cost when its engine reported no token counts.
``rlm`` results count every root and sub-LM call in their token fields; they are priced at the
rates of the recorded ``--model`` (a separate ``-R sub_model`` is priced at the root's rates).

The table is layered, a later layer winning per model key: the shipped default table
(``longctx/default_prices.yaml``, each rate with its source URL and the date it was read), then
``$XDG_CONFIG_HOME/longctx/prices.yaml`` (or ``.toml``; ``~/.config`` by default), then
``--prices FILE``. A file is YAML or TOML (by suffix ``.toml``)::

    models:
      gpt-4o-mini: {input: 0.15, cached_input: 0.075, output: 0.60,
                    source: "https://...", read: "2026-12-02"}
      "my-org/*": {input: 0.20, output: 0.80}      # a glob key

Models run on a local engine (no ``--endpoint``, or an endpoint on this machine: launched vLLM,
``hf``, ``hope``, ``oracle``) cost 0 USD unless the table prices them; a model on a remote
endpoint without a price has no USD (reports show ``-``; ``--max-cost-usd`` refuses it).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import msgspec

from longctx._errors import CostCapReached, LongctxError
from longctx._records import Result

#: the shipped table (package data)
DEFAULT_TABLE = "default_prices.yaml"
#: origin of the shipped table's prices (pages and JSON name it)
DEFAULT_ORIGIN = "the default table"
#: origin of the 0 USD price of a model on a local engine
LOCAL_ORIGIN = "local engine"
#: runners that never call a remote API (when a manifest does not say which endpoint was used)
LOCAL_RUNNERS = frozenset({"hf", "hope", "oracle"})
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "[::1]"}
_DATED = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One model's rates, USD per million tokens, and where they were read."""

    input: float
    """Prompt tokens not served from the provider's cache."""
    output: float
    """Generated tokens (thinking tokens included: APIs bill them as output)."""
    cached_input: float | None = None
    """Prompt tokens served from the cache; None = the ``input`` rate (no discount)."""
    source: str | None = None
    """Where the rates were read (URL)."""
    read: str | None = None
    """When they were read (``YYYY-MM-DD``)."""
    note: str | None = None
    """Anything a reader of the rates should know (what is not modelled, a second source)."""


class Pricing(msgspec.Struct, frozen=True):
    """The price a number was computed with, stored next to it (reports, ``--json``)."""

    model: str
    """The model as recorded on the results."""
    entry: str | None
    """The table key that matched (None: a local engine at 0 USD)."""
    origin: str
    """Which layer it came from: ``the default table``, a file path, or ``local engine``."""
    input: float
    """USD per million uncached prompt tokens."""
    cached_input: float
    """USD per million cached prompt tokens."""
    output: float
    """USD per million generated tokens."""
    source: str | None = None
    """The entry's source URL."""
    read: str | None = None
    """The date the entry was read."""

    @property
    def label(self) -> str:
        """``gpt-4o-mini from the default table (read 2026-12-02)``, ``local engine (0 USD)``."""
        if self.entry is None:
            return f"{self.origin} (0 USD)"
        read = f" (read {self.read})" if self.read else ""
        return f"{self.entry} from {self.origin}{read}"


def usd(pricing: Pricing | Price, prompt_tokens: int | None, cached_tokens: int | None,
        completion_tokens: int | None) -> float | None:
    """USD of one request (or one sample's calls); None when no token count is known."""
    if prompt_tokens is None and completion_tokens is None:
        return None
    prompt = prompt_tokens or 0
    cached = min(max(cached_tokens or 0, 0), prompt)
    cached_rate = pricing.cached_input if pricing.cached_input is not None else pricing.input
    return ((prompt - cached) * pricing.input + cached * cached_rate
            + (completion_tokens or 0) * pricing.output) / 1e6


def result_usd(result: Result, pricing: Pricing | None) -> float | None:
    """USD of one result (None: no price, or no token counts).

    A reasoning model whose thinking budget ran out made a second request (the prompt plus the
    thinking, ``extra["answer_prompt_tokens"]``): those prompt tokens are charged too, at the input
    rate (the engine reports no cached share for them)."""
    if pricing is None:
        return None
    cost = usd(pricing, result.prompt_tokens, result.cached_tokens, result.completion_tokens)
    second = result.extra.get("answer_prompt_tokens") if isinstance(result.extra, dict) else None
    if cost is not None and isinstance(second, int) and not isinstance(second, bool) and second > 0:
        cost += second * pricing.input / 1e6
    return cost


def endpoint_is_local(runner: str | None, endpoint: str | Sequence[str] | None) -> bool:
    """True when nothing is sent to a remote API: no endpoint (the runner runs or launches the
    engine itself), or endpoints all on this machine."""
    for url in [endpoint] if isinstance(endpoint, str) else endpoint or ():
        host = urlparse(url if "//" in url else f"//{url}").hostname or ""
        if host.lower() not in _LOOPBACK:
            return False
    return True


def manifest_is_local(manifest: Mapping[str, Any]) -> bool:
    """:func:`endpoint_is_local` for a run folder's manifest (its ``runner_config``); a manifest
    that does not record one is local only for runners that never call an API."""
    config = manifest.get("runner_config")
    runner = manifest.get("runner") or (manifest.get("identity") or {}).get("runner")
    runner = runner if isinstance(runner, str) else None
    if isinstance(config, dict):
        return endpoint_is_local(runner, config.get("endpoints") or config.get("endpoint"))
    return runner in LOCAL_RUNNERS


# ---- the table ------------------------------------------------------------------------------------
class PriceTable:
    """Layers of prices (later layers win per key), looked up by model name."""

    def __init__(self, layers: Iterable[tuple[str, Mapping[str, Price]]] = ()):
        self.layers: list[tuple[str, dict[str, Price]]] = [(o, dict(m)) for o, m in layers]

    def __repr__(self) -> str:
        return f"PriceTable({self.describe()!r})"

    def describe(self) -> str:
        """Where the prices come from, newest layer first: ``prices from FILE over the default
        table (read 2026-12-02)``; ``no price table`` when empty."""
        parts = []
        for origin, models in reversed(self.layers):
            if origin == DEFAULT_ORIGIN:
                dates = sorted({p.read for p in models.values() if p.read})
                parts.append(f"{origin} (read {', '.join(dates)})" if dates else origin)
            else:
                parts.append(origin)
        return "prices from " + " over ".join(parts) if parts else "no price table"

    def lookup(self, model: str) -> tuple[str, str, Price] | None:
        """``(key, origin, price)`` of ``model``: exact key, case-insensitive key, the name without
        a provider prefix (``openai/gpt-4o``) or a date suffix (``-20250514``), then glob keys."""
        names = [model]
        base = model.rstrip("/").rsplit("/", 1)[-1]
        for name in (base, _DATED.sub("", model), _DATED.sub("", base)):
            if name and name not in names:
                names.append(name)
        for name in names:
            for fold in (False, True):
                for origin, models in reversed(self.layers):
                    for key, price in models.items():
                        if (key.lower() == name.lower()) if fold else key == name:
                            return key, origin, price
        for origin, models in reversed(self.layers):
            for key, price in models.items():
                if any(c in key for c in "*?[") and any(fnmatch.fnmatchcase(n, key) for n in names):
                    return key, origin, price
        return None

    def pricing(self, model: str, local: bool = False) -> Pricing | None:
        """The :class:`Pricing` of ``model``: its table entry, else 0 USD on a local engine, else
        None (no price)."""
        found = self.lookup(model)
        if found is None:
            return Pricing(model, None, LOCAL_ORIGIN, 0.0, 0.0, 0.0) if local else None
        key, origin, p = found
        cached = p.cached_input if p.cached_input is not None else p.input
        return Pricing(model, key, origin, p.input, cached, p.output, p.source, p.read)


def _as_price(model: str, value: Any, where: str) -> Price:
    if not isinstance(value, dict):
        raise LongctxError(f"{where}: model {model!r}: expected a mapping with input and output, "
                           f"got {value!r}")
    value = {k: v.isoformat() if isinstance(v, _dt.date) else v for k, v in value.items()}
    for key in ("input", "cached_input", "output"):
        v = value.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise LongctxError(f"{where}: model {model!r}: {key} must be a number of USD per million "
                               f"tokens, 0 or more (got {v!r})")
        value[key] = float(v)
    try:
        return msgspec.convert(value, Price)
    except msgspec.ValidationError as exc:
        raise LongctxError(f"{where}: model {model!r}: {exc}") from None


def parse_prices(data: Any, where: str) -> dict[str, Price]:
    """The ``models`` mapping of a parsed price file (``LongctxError`` naming ``where``)."""
    if data is None:
        return {}
    if not isinstance(data, dict) or set(data) - {"models"}:
        extra = sorted(set(data) - {"models"}) if isinstance(data, dict) else None
        got = f"unknown keys {', '.join(map(str, extra))}" if extra else f"{type(data).__name__}"
        raise LongctxError(f"{where}: expected a mapping with one key 'models' (got {got})")
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise LongctxError(f"{where}: 'models' must map model names to prices")
    return {str(name): _as_price(str(name), value, where) for name, value in models.items()}


def read_price_file(path: str | Path) -> dict[str, Price]:
    """A YAML (or, by suffix, TOML) price file; ``LongctxError`` (one line) if it is missing or bad."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LongctxError(f"no price file {path}") from None
    except OSError as exc:
        raise LongctxError(f"cannot read price file {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise LongctxError(f"price file {path}: TOML needs Python 3.11 or the tomli package; "
                                   "write it as YAML") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise LongctxError(f"bad TOML in price file {path}: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise LongctxError(f"bad YAML in price file {path}{at}: {problem}") from None
    return parse_prices(data, f"price file {path}")


def user_price_file() -> Path | None:
    """``$XDG_CONFIG_HOME/longctx/prices.yaml`` (or ``.yml`` / ``.toml``) if it exists."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "longctx"
    for name in ("prices.yaml", "prices.yml", "prices.toml"):
        if (base / name).is_file():
            return base / name
    return None


@lru_cache(maxsize=1)
def default_prices() -> dict[str, Price]:
    """The shipped table."""
    import importlib.resources

    import yaml

    text = importlib.resources.files("longctx").joinpath(DEFAULT_TABLE).read_text(encoding="utf-8")
    return parse_prices(yaml.safe_load(text), DEFAULT_TABLE)


def load_prices(path: str | Path | None = None, *, user: bool = True, defaults: bool = True) -> PriceTable:
    """The price table: the defaults, the user's file, then ``path`` (``--prices``)."""
    layers: list[tuple[str, Mapping[str, Price]]] = []
    if defaults:
        layers.append((DEFAULT_ORIGIN, default_prices()))
    found = user_price_file() if user else None
    if found is not None:
        layers.append((str(found), read_price_file(found)))
    if path is not None:
        layers.append((str(path), read_price_file(path)))
    return PriceTable(layers)


# ---- --max-cost-usd ---------------------------------------------------------------------------------
def sweep_pricing(model: str, runner: str, endpoint: str | Sequence[str] | None,
                  prices: str | Path | None) -> Pricing:
    """The price ``--max-cost-usd`` charges results at; ``LongctxError`` when ``model`` has none."""
    table = load_prices(prices)
    pricing = table.pricing(model, endpoint_is_local(runner, endpoint))
    if pricing is None:
        raise LongctxError(
            f"--max-cost-usd: no price for model {model!r} in {table.describe()}; add it to a price "
            "file (--prices FILE, or ~/.config/longctx/prices.yaml: models: {NAME: {input: USD, "
            "cached_input: USD, output: USD}} per million tokens)"
        )
    return pricing


class SpendCap:
    """``--max-cost-usd``: the run folder's spend (every recorded attempt, all sessions), and the
    stop before the next sample would take it past the cap.

    "Would pass": the spend so far plus the mean cost of one priced result so far is more than
    the cap (or the spend already reached it). Checked before the engine starts and after every
    recorded result; requests still in flight when it stops are cancelled (an API may bill them).
    """

    def __init__(self, cap_usd: float, pricing: Pricing, recorded: Iterable[Result] = ()):
        if not math.isfinite(cap_usd) or cap_usd < 0:
            raise LongctxError("--max-cost-usd must be 0 or more")
        self.cap, self.pricing = cap_usd, pricing
        self.spent = 0.0
        """USD of the priced results so far."""
        self.priced = 0
        """Results with a known cost."""
        for r in recorded:
            self.add(r)

    def add(self, result: Result) -> None:
        """Count one recorded result."""
        cost = result_usd(result, self.pricing)
        if cost is not None:
            self.spent += cost
            self.priced += 1

    @property
    def per_sample(self) -> float:
        """Mean USD of a priced result so far (0 before the first)."""
        return self.spent / self.priced if self.priced else 0.0

    def check(self) -> None:
        """Raise :class:`CostCapReached` when the next sample would pass the cap."""
        if self.spent >= self.cap or self.spent + self.per_sample > self.cap:
            raise CostCapReached(
                f"the run folder spent ${self.spent:.4f} ({self.priced} priced results at "
                f"{self.pricing.label}); the next sample (about ${self.per_sample:.4f}) would pass "
                f"--max-cost-usd {self.cap:g}; the rest stay pending (a higher cap resumes)"
            )

    def charge(self, result: Result) -> None:
        """:meth:`add` then :meth:`check` (the dispatch's hook after each recorded result)."""
        self.add(result)
        self.check()
