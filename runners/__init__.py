"""Built-in runners (installed as ``longctx.runners``). Importing a runner module registers it
(``@runner``); heavy engines are imported only when a runner is constructed.

``BUILTIN`` names the module of each built-in runner, so that ``longctx sweep --runner NAME``
imports only that one (``longctx._registry.get_runner_entry``); listings import them all. A new
built-in runner adds its line here (a test checks that each module registers its name).
"""

BUILTIN: dict[str, str] = {
    "oracle": "longctx.runners.oracle",
    "hf": "longctx.runners.hf",
    "vllm": "longctx.runners.vllm",
    "rlm": "longctx.runners.rlm.runner",
    "hope": "longctx.runners.hope.runner",
    "rag": "longctx.runners.rag.runner",
}
