"""vLLM's offline engine (``vllm.LLM``) in this process: no server, no HTTP.

Samples go to ``LLM.generate`` (``LLM.chat`` in chat mode) in batches of ``batch_size``, in the order
given, with prefix caching on, so the engine batches and caches like the server does. vLLM
validates a whole batch before running it; when a batch is rejected (e.g. one prompt longer than
the context) its samples are retried one by one so only the bad one gets an ``error``.
``latency_s`` is the wall time of the batch call the sample ran in (exact for ``batch_size`` 1).
There is no per-request timeout or retry here (``timeout_s`` / ``retries`` concern servers).
``deterministic`` applies the same settings as the launched server's deterministic mode
(:func:`~longctx.runners._vllm_server.deterministic_settings`).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from longctx._errors import EngineGone, LongctxError
from longctx._records import Generation, Sample
from longctx.runners._openai_client import one_line
from longctx.runners._vllm_server import cpu_environment, deterministic_settings


class OfflineEngine:
    """A ``vllm.LLM`` for a local model folder; ``close()`` shuts its engine core down."""

    def __init__(
        self,
        model_path: Path,
        *,
        max_model_len: int | None,
        seed: int,
        dtype: str = "auto",
        enforce_eager: bool | None = None,
        kv_cache_gib: int | None = None,
        max_num_seqs: int | None = None,
        deterministic: bool = False,
    ):
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError:
            raise LongctxError(
                "engine=offline needs vLLM: pip install 'longctx[cpu]' (or 'longctx[gpu]')"
            ) from None
        on_cpu = current_platform.is_cpu()
        if deterministic:
            dtype, seqs, env = deterministic_settings(current_platform.device_type, dtype)
            max_num_seqs = seqs or max_num_seqs
            os.environ.update(env)
        self.max_num_seqs = max_num_seqs
        """Sequences per engine step (None = vLLM's default)."""
        if on_cpu:  # read by the engine core when it starts, so set before LLM()
            os.environ.update(cpu_environment(dict(os.environ), kv_cache_gib))
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        # the engine core runs in this process: no spawned child (which would re-import the
        # caller's __main__ and need an `if __name__ == "__main__"` guard), nothing left behind
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.version = vllm.__version__
        self._vllm = vllm
        try:
            self.llm = vllm.LLM(
                model=str(model_path),
                max_model_len=max_model_len,
                seed=seed,
                dtype=dtype,
                enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
                enable_prefix_caching=True,
                generation_config="vllm",
                **({"max_num_seqs": max_num_seqs} if max_num_seqs else {}),
            )
        except Exception as exc:  # engine start-up failures are setup problems
            raise LongctxError(
                f"vLLM offline engine failed to start: {one_line(str(exc) or type(exc).__name__)}"
            ) from None
        resolved = getattr(getattr(self.llm.llm_engine, "model_config", None), "dtype", None)
        self.dtype = str(resolved).removeprefix("torch.") if resolved is not None else None
        """The dtype the engine runs (e.g. ``bfloat16``: vLLM's CPU path downcasts float32)."""

    def _params(self, sample: Sample, seed: int) -> Any:
        return self._vllm.SamplingParams(temperature=0.0, max_tokens=sample.max_new_tokens, seed=seed)

    def _run(self, batch: Sequence[Sample], mode: str, seed: int) -> list[Any]:
        """``RequestOutput`` per sample of ``batch`` (raises when vLLM rejects the batch)."""
        params = [self._params(s, seed) for s in batch]
        if mode == "chat":
            conversations = [
                [{"role": m.role, "content": m.content} for m in s.prompt.messages] for s in batch
            ]
            return self.llm.chat(conversations, params, use_tqdm=False, add_generation_prompt=True)
        prompts: list[Any] = []
        for s in batch:
            if s.prompt.token_ids is not None:
                prompts.append({"prompt_token_ids": list(s.prompt.token_ids)})
            else:  # the text is fully rendered: no BOS added (as token ids would be encoded)
                ids = self.llm.get_tokenizer().encode(s.prompt.text, add_special_tokens=False)
                prompts.append({"prompt_token_ids": ids})
        return self.llm.generate(prompts, params, use_tqdm=False)

    def generate(
        self, samples: Sequence[Sample], mode: str, seed: int, batch_size: int = 4
    ) -> Iterator[Generation]:
        """Generations in the order given, a batch at a time; failures become ``error``."""
        batch_size = max(1, batch_size)
        for i in range(0, len(samples), batch_size):
            batch = list(samples[i : i + batch_size])
            start = time.monotonic()
            try:
                outputs = self._run(batch, mode, seed)
            except Exception as exc:
                if type(exc).__name__ == "EngineDeadError":  # the engine core is gone: not the sample's fault
                    raise EngineGone(f"vLLM offline engine died: {one_line(str(exc) or 'EngineDeadError')}") from None
                if len(batch) == 1:
                    yield Generation(
                        batch[0].id,
                        None,
                        error=one_line(str(exc) or type(exc).__name__),
                        latency_s=time.monotonic() - start,
                    )
                    continue
                for sample in batch:  # isolate the request vLLM rejected
                    yield from self.generate([sample], mode, seed, batch_size=1)
                continue
            latency = time.monotonic() - start
            for sample, out in zip(batch, outputs, strict=True):
                completion = out.outputs[0]
                extra = {"finish_reason": completion.finish_reason} if completion.finish_reason else {}
                if len(batch) > 1:
                    extra["batch_size"] = len(batch)
                yield Generation(
                    sample.id,
                    completion.text,
                    latency_s=latency,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    cached_tokens=out.num_cached_tokens,
                    completion_tokens=len(completion.token_ids),
                    extra=extra,
                )

    def close(self) -> None:
        """Shut the engine core (a child process) down."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:
                pass
        del self.llm
        gc.collect()
