"""Runner ``hope``: a longctx HOPE checkpoint in this process, streaming the prompt.

The prompt is fed chunk by chunk (``prefill_chunk`` tokens per call) carrying the model's state
(fast weights, pending chunk buffers, conv tail; the KV cache for attention variants), then the
answer is decoded greedily one token at a time from the same state. Only the last position's
logits are computed during prefill, so for the attention-free ``hope`` variant the memory used is
flat in the context length: no full-sequence attention, no KV cache, no (T, vocab) logits.

The state is reset for every sample (default). With ``carry_state=true`` it is carried from one
sample to the next in the order given (the continual setting: what earlier prompts wrote stays in
the memories); test-time CMS learning (checkpoints with ``cms_lr > 0``) then also accumulates.

Named models ``hope-demo`` and ``transformer-demo`` are the checkpoints trained by
``python -m longctx.runners.hope.train`` and shipped in this package (``checkpoints/``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from longctx.runners._in_process import failed_generation, generate_each, prompt_ids, window_error
from longctx.runners._in_process_choice import continuation_logliks
from longctx.runners._openai_client import one_line

from longctx._choice import candidate_ids, choice_generation
from longctx._choice import window_error as choice_window_error
from longctx._errors import LongctxError
from longctx._models import NamedModel, register_model, resolve_model
from longctx._protocols import NullProgress, Progress, RunnerConfig, Tokenizer
from longctx._records import Generation, Sample
from longctx._registry import runner
from longctx._tokenizer import hf_tokenizer
from longctx._versions import dist_version

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"

register_model(NamedModel(
    name="hope-demo",
    description="tiny attention-free HOPE (2 layers, d=64) trained on CPU on NIAH-format retrieval (demo)",
    folder=str(CHECKPOINTS / "hope-demo"), context_window=131072, kind="hope"))
register_model(NamedModel(
    name="transformer-demo",
    description="Transformer of the same size, trained the same way (baseline for hope-demo)",
    folder=str(CHECKPOINTS / "transformer-demo"), context_window=131072, kind="hope"))


class HopeOptions(msgspec.Struct, forbid_unknown_fields=True):
    """``-O key=value`` options of runner ``hope``."""

    carry_state: bool = False
    """Carry the model state from one sample to the next (continual setting) instead of resetting it."""
    prefill_chunk: int = 512
    """Prompt tokens fed per forward call (bounds activation memory; results do not depend on it)."""
    batch: int = 8
    """Prompts streamed together: up to this many consecutive samples are fed as one batch over
    the length they all have (the state splits then, each prompt finishes and decodes alone). A
    small model's step costs the number of its tensor operations more than their size, so this
    multiplies throughput; answers equal those of ``batch=1`` up to float rounding. Without
    effect (one at a time) with ``carry_state`` or test-time CMS learning."""
    cms_learning: bool = True
    """Let CMS levels with ``cms_lr > 0`` learn from the prompt (no effect when every cms_lr is 0)."""
    titans_writes: bool | None = None
    """Override the checkpoint's ``titans_writes``: false = the Titans memories are read, never
    written (nested-learning 0.2.0's forward); true = written in context at every chunk."""
    threads: int | None = None
    """torch intra-op threads (default: torch's choice)."""
    device: str = "cpu"
    """torch device."""


@runner("hope")
class HopeRunner:
    """A longctx HOPE checkpoint in-process: streamed prompt, greedy decoding, state reset or carried."""

    name = "hope"
    Options = HopeOptions
    volatile_options = ("threads", "prefill_chunk", "batch")
    """Options that do not change results (left out of the run's identity)."""

    def __init__(self, config: RunnerConfig, options: HopeOptions | None = None, progress: Progress | None = None):
        self.config = config
        self.options = options or HopeOptions()
        self.progress = progress or NullProgress()
        if config.endpoint:
            raise LongctxError("runner hope runs a checkpoint in-process; it does not take --endpoint")
        if config.mode not in ("completions", "chat"):
            raise LongctxError(f"runner hope: unknown mode {config.mode!r} (completions or chat)")
        if self.options.prefill_chunk < 1:
            raise LongctxError("runner hope: prefill_chunk must be >= 1")
        if self.options.batch < 1:
            raise LongctxError("runner hope: batch must be >= 1")
        self.model = resolve_model(config.model, self.progress)
        if self.model.kind != "hope":
            raise LongctxError(f"runner hope: {config.model} is not a longctx HOPE checkpoint (config.json "
                               "without \"format\": \"longctx-hope\"); convert one with `longctx hope convert`")
        assert self.model.path is not None
        self.path: Path = self.model.path
        self._lm: Any = None
        self._tok: Any = None
        self._torch: Any = None
        self._state: Any = None
        self._config_json: dict[str, Any] = {}

    def __enter__(self) -> HopeRunner:
        try:
            import torch
        except ImportError:
            raise LongctxError("runner hope needs torch: pip install 'longctx[hf]'") from None
        from longctx.runners.hope.checkpoint import load_checkpoint

        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        self.progress.start(f"loading HOPE checkpoint {self.model.name}")
        try:
            self._lm, self._config_json = load_checkpoint(self.path, device=self.options.device)
            self._tok = hf_tokenizer(str(self.path))   # tokenizers + jinja2: no transformers import (~4 s)
        except (OSError, ValueError) as exc:   # a bad tokenizer folder raises LongctxError itself
            raise LongctxError(f"runner hope cannot load {self.path}: {one_line(str(exc))}") from None
        finally:
            self.progress.done()
        if self.options.titans_writes is not None:
            self._lm.cfg.titans_writes = self.options.titans_writes   # the modules share this config
        self._torch = torch
        self._state = None
        return self

    def __exit__(self, *exc: object) -> None:
        self._lm = self._tok = self._state = None

    def tokenizer(self) -> Tokenizer:
        """The checkpoint folder's tokenizer."""
        return hf_tokenizer(str(self.path))

    def context_window(self) -> int | None:
        """``context_window`` of the checkpoint's ``config.json``."""
        return self.model.context_window

    def identity(self) -> dict[str, Any]:
        """Name, path, weights hash, variant, options and versions."""
        from longctx.runners.hope.checkpoint import read_config

        config = self._config_json or read_config(self.path)
        ident = dict(self.model.identity())
        ident.update({"engine": "longctx-hope", "variant": config["model"]["variant"],
                      "format_version": config["format_version"], "torch_version": dist_version("torch"),
                      "carry_state": self.options.carry_state, "cms_learning": self.options.cms_learning,
                      "titans_writes": self.options.titans_writes if self.options.titans_writes is not None
                      else config["model"].get("titans_writes", True),
                      "mode": self.config.mode})
        return ident

    def _check(self, sample: Sample) -> tuple[list[int], Generation | None]:
        """The prompt's ids, and the failed generation when it cannot run (empty, beyond the window)."""
        ids = prompt_ids(self._tok, sample, self.config.mode)
        if not ids:
            return ids, Generation(sample.id, None, error="empty prompt")
        return ids, window_error(sample, len(ids), self.model.context_window)

    def _generate_one(self, sample: Sample) -> Generation:
        ids, failed = self._check(sample)
        if failed is not None:
            return failed
        with self._grad_free():
            logits, state = self._stream_prompt(ids)
            return self._decode(sample, len(ids), logits, state)

    def _decode(self, sample: Sample, n_prompt: int, logits: Any, state: Any) -> Generation:
        """Greedy decoding from the prompt's last logits (1, 1, V) and state."""
        torch, lm, device, eos = self._torch, self._lm, self.options.device, self._tok.eos_token_id
        new: list[int] = []
        while len(new) < sample.max_new_tokens:
            token = int(logits[0, -1].argmax())
            new.append(token)
            if token == eos or len(new) == sample.max_new_tokens:
                break
            nxt = torch.tensor([[token]], dtype=torch.long, device=device)
            logits, state = lm(nxt, state, learn=False, logits="last")
        if self.options.carry_state:
            self._state = state
        finish = "stop" if new and new[-1] == eos else "length"
        text = self._tok.decode(new[:-1] if finish == "stop" else new, skip_special=True)
        return Generation(sample.id, text, prompt_tokens=n_prompt, cached_tokens=0, completion_tokens=len(new),
                          extra={"finish_reason": finish, "state_bytes": state.nbytes(),
                                 "state_position": state.position})

    def _grad_free(self) -> Any:
        """Inference mode (cheaper per op than no_grad) unless the CMS learns at test time (autograd)."""
        torch = self._torch
        learns = self.options.cms_learning and self._lm.cfg.cms_learns
        return torch.no_grad() if learns else torch.inference_mode()

    def _stream(self, ids: list[int] | list[list[int]], state: Any) -> tuple[Any, Any]:
        """Feed prompt ids (one list, or equal-length rows of a batch) in ``prefill_chunk`` pieces
        continuing ``state`` (None: fresh): the last position's logits (B, 1, V) and the state."""
        torch, lm, device, step = self._torch, self._lm, self.options.device, self.options.prefill_chunk
        rows = ids if ids and isinstance(ids[0], list) else [ids]
        logits = None
        for start in range(0, len(rows[0]), step):
            piece = torch.tensor([r[start:start + step] for r in rows], dtype=torch.long, device=device)   # (B, n)
            logits, state = lm(piece, state, learn=self.options.cms_learning, logits="last")  # (B, 1, V)
        return logits, state

    def _stream_prompt(self, ids: list[int]) -> tuple[Any, Any]:
        """The prompt streamed from a fresh state (or the carried one): logits (1, 1, V), state."""
        return self._stream(ids, self._state if (self.options.carry_state and self._state is not None) else None)

    def _batches(self) -> bool:
        """Whether prompts are streamed in batches (see ``HopeOptions.batch``)."""
        return self.options.batch > 1 and not self.options.carry_state and not (
            self.options.cms_learning and self._lm.cfg.cms_learns)

    def _generate_batch(self, samples: list[Sample]) -> list[Generation]:
        """``samples`` streamed together over their common length, then finished and decoded one by
        one. Each generation's ``latency_s`` is its share of the batched prefill plus its own time.
        If the batched part fails, the samples run one at a time (so a failure stays its sample's)."""
        start = time.monotonic()
        checked: list[tuple[list[int], Generation | None]] = []
        for s in samples:
            try:
                checked.append(self._check(s))
            except Exception as exc:  # noqa: BLE001 - as generate_each: this sample failed
                checked.append(([], failed_generation(s.id, exc)))
        out: dict[str, Generation] = {s.id: failed for s, (_, failed) in zip(samples, checked) if failed is not None}
        ready = [(s, ids) for s, (ids, failed) in zip(samples, checked) if failed is None]

        def alone() -> list[Generation]:
            out.update((g.sample_id, g) for g in generate_each([s for s, _ in ready], self._generate_one))
            return [out[s.id] for s in samples]

        if len(ready) < 2:
            return alone()
        common = min(len(ids) for _, ids in ready)
        try:
            with self._grad_free():
                logits, state = self._stream([ids[:common] for _, ids in ready], None)   # (B, 1, V)
                states = state.split()
        except Exception:  # noqa: BLE001 - e.g. out of memory: the samples alone, each with its own error
            return alone()
        shared = (time.monotonic() - start) / len(ready)
        for i, ((sample, ids), row_state) in enumerate(zip(ready, states)):
            own = time.monotonic()
            try:
                with self._grad_free():
                    row_logits, row_state = (self._stream(ids[common:], row_state) if len(ids) > common
                                             else (logits[i:i + 1], row_state))
                    gen = self._decode(sample, len(ids), row_logits, row_state)
            except Exception as exc:  # noqa: BLE001 - as generate_each: this sample failed, the run goes on
                gen = failed_generation(sample.id, exc)
            gen.latency_s = shared + time.monotonic() - own
            out[sample.id] = gen
        return [out[s.id] for s in samples]

    def generate(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        """Generations in the order given (batches of ``batch`` consecutive samples, or one at a
        time); failures become ``error``."""
        if self._lm is None:
            raise RuntimeError("runner hope: use it as a context manager (`with runner: ...`)")
        if not self._batches():
            yield from generate_each(samples, self._generate_one)
            return
        group: list[Sample] = []
        for sample in samples:
            group.append(sample)
            if len(group) == self.options.batch:
                yield from self._generate_batch(group)
                group = []
        if group:
            yield from self._generate_batch(group)

    # ---- forced choice (``--scoring choice``) ------------------------------------------------------
    def _choose_one(self, sample: Sample) -> Generation:
        """Every candidate's log-likelihood: the prompt streamed once as for generation, then each
        candidate fed on a copy of the prompt's state (no test-time CMS learning on candidates, as
        while decoding); with ``carry_state`` the prompt's state is carried, never a candidate's."""
        torch = self._torch
        ids = prompt_ids(self._tok, sample, "completions")
        if not ids:
            return Generation(sample.id, None, error="empty prompt")
        cands = candidate_ids(self._tok.encode, sample)
        if (too_long := choice_window_error(sample, len(ids), max(map(len, cands)),
                                            self.model.context_window)) is not None:
            return too_long
        lm, device = self._lm, self.options.device
        with self._grad_free():
            logits, state = self._stream_prompt(ids)
            state.detach_()

            def extend(piece: list[int]) -> Any:
                fork = copy.deepcopy(state)
                more, _ = lm(torch.tensor([piece], dtype=torch.long, device=device), fork, learn=False,
                             logits="all")                                            # (1, n, V)
                return more[0]

            logliks = continuation_logliks(torch, logits[0, -1], extend, cands)
        if self.options.carry_state:
            self._state = state
        return choice_generation(sample, logliks, [len(c) for c in cands], prompt_tokens=len(ids), cached_tokens=0,
                                 extra={"state_bytes": state.nbytes(), "state_position": state.position})

    def choose(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        """Forced choice (:mod:`longctx._choice`): every candidate's log-likelihood, in the order
        given, one sample at a time; failures become ``error``."""
        if self._lm is None:
            raise RuntimeError("runner hope: use it as a context manager (`with runner: ...`)")
        yield from generate_each(samples, self._choose_one)
