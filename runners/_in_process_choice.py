"""Candidate log-likelihoods for the in-process runners (``hf``, ``hope``): forced choice.

The prompt is run once; each candidate then continues the prompt's state (a KV cache cropped back,
or a copy of a recurrent state), so the cost is one prefill plus a few tokens per candidate. A
candidate's log-likelihood is the sum over its tokens of ``log_softmax`` of the logits before each
token, at that token (the first token from the prompt's last logits), as nested-learning's
``logprob_answer`` computes it (see :mod:`longctx._choice`). Log-softmax in float32 whatever the
model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def continuation_logliks(
    torch: Any, last_logits: Any, extend: Callable[[list[int]], Any], candidates: Sequence[Sequence[int]]
) -> list[float]:
    """Log-likelihood of each candidate after the prompt.

    ``last_logits``: (V,) logits after the prompt's last token. ``extend(ids)``: (len(ids), V)
    logits of ``ids`` fed after the prompt (the prompt's state must be the same for every call).
    """
    first = torch.log_softmax(last_logits.float(), dim=-1)                 # (V,)
    out: list[float] = []
    for cand in candidates:
        total = first[cand[0]].double()
        if len(cand) > 1:
            logp = torch.log_softmax(extend(list(cand[:-1])).float(), dim=-1)  # (n - 1, V)
            targets = torch.tensor(list(cand[1:]), dtype=torch.long, device=logp.device)
            total = total + logp.gather(-1, targets[:, None]).double().sum()
        out.append(float(total))
    return out
