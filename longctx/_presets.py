"""Named presets: published protocols as sweep settings (``longctx sweep --preset NAME``).

A preset is a config file shipped with longctx (same keys: the long flags of ``longctx sweep``);
``longctx presets`` lists them. The protocol presets leave runner and model open (they are what is
measured); ``demo`` sets them as ``make demo`` does. Flags and config files override any setting
of a preset.

Sources (checked against the authors' scripts):

- ``ruler-niah``: NVIDIA/RULER ``scripts/config_tasks.sh`` (``NUM_SAMPLES=500``; the 13 tasks of
  ``synthetic``, of which longctx has the 8 ``niah_*``), ``scripts/config_models.sh``
  (``SEQ_LENGTHS`` 131072, 65536, 32768, 16384, 8192, 4096) and ``scripts/synthetic.yaml`` (the
  eight NIAH variants). RULER draws each sample's needle depth at random from 40 values
  (``scripts/data/synthetic/niah.py``: ``DEPTHS = np.round(np.linspace(0, 100, 40))``); the preset
  keeps RULER's 500 samples per length and task as a balanced grid instead: 25 samples at each of
  20 evenly spaced depths, so every depth x length cell of the heatmap has the same count.
- ``babilong``: the BABILong leaderboard protocol of booydar/babilong ``scripts/run_*_vllm.sh``:
  ``TASKS=("qa1" "qa2" "qa3" "qa4" "qa5")``, ``LENGTHS`` ``0k`` ... ``128k``, instruction,
  examples, post-prompt and chat template on, ``--system_prompt "You are a helpful assistant."``.
  The authors run ``0k``-``32k`` on ``RMT-team/babilong-1k-samples`` and ``64k``/``128k`` on
  ``RMT-team/babilong``; the preset uses ``RMT-team/babilong`` (100 samples per task and length,
  the leaderboard's published set) for every length, so one run folder holds one protocol.
- ``demo``: what ``make demo`` runs (Makefile), runner ``vllm`` and model ``default`` included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from longctx._errors import UnknownNameError

RULER_NIAH_TASKS = (
    "ruler/niah_single_1",
    "ruler/niah_single_2",
    "ruler/niah_single_3",
    "ruler/niah_multikey_1",
    "ruler/niah_multikey_2",
    "ruler/niah_multikey_3",
    "ruler/niah_multivalue",
    "ruler/niah_multiquery",
)


@dataclass(frozen=True)
class Preset:
    """A named set of sweep settings reproducing a published protocol."""

    name: str
    """What ``--preset`` takes."""
    summary: str
    """One line for ``longctx presets``."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Sweep settings, keys = long flag names of ``longctx sweep`` (as in a config file)."""
    source: str = ""
    """Where the protocol is published (repository and files)."""

    def settings_normalized(self) -> dict[str, Any]:
        """The settings in command-line form (see :func:`longctx._config.normalize`)."""
        from longctx._config import normalize

        return {key: normalize(key, value, f"preset {self.name}") for key, value in self.settings.items()}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "ruler-niah",
            "RULER's 8 NIAH tasks, 4K-128K, 500 samples per task and length (20 depths x 25)",
            {
                "task": list(RULER_NIAH_TASKS),
                "lengths": ["4k", "8k", "16k", "32k", "64k", "128k"],
                "depths": "0:100:20",
                "samples": 25,
            },
            "NVIDIA/RULER scripts/config_tasks.sh, scripts/config_models.sh, scripts/synthetic.yaml",
        ),
        Preset(
            "babilong",
            "BABILong leaderboard: qa1-qa5 at 0K-128K, the published 100 samples per task and length",
            {
                "task": [f"babilong/qa{i}" for i in range(1, 6)],
                "lengths": ["0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k"],
                "samples": 100,
                "option": {"dataset": "babilong", "system_prompt": "You are a helpful assistant."},
            },
            "booydar/babilong scripts/run_*_vllm.sh (TASKS, LENGTHS, --system_prompt), README",
        ),
        Preset(
            "demo",
            "what `make demo` runs: niah_single_1/2 at 1K-4K, 5 depths, 2 samples, vllm + default model, deterministic",
            {
                "task": ["ruler/niah_single_1", "ruler/niah_single_2"],
                "lengths": ["1k", "2k", "4k"],
                "depths": "0:100:5",
                "samples": 2,
                "runner": "vllm",
                "model": "default",
                "deterministic": True,
            },
            "Makefile (target demo)",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """Preset ``name``; unknown names get a did-you-mean."""
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]
