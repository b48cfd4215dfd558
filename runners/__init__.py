"""Built-in runners (installed as ``longctx.runners``). Importing a runner module registers it;
heavy engines are imported only when a runner is constructed."""

from longctx.runners import oracle  # noqa: F401
from longctx.runners import hf, vllm  # noqa: F401
from longctx.runners.rlm import runner as _rlm  # noqa: F401
from longctx.runners.hope import runner as _hope  # noqa: F401
from longctx.runners.rag import runner as _rag  # noqa: F401
