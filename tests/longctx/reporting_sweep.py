"""A ``longctx sweep`` that prints the id of every result the moment the store has recorded it.

For the kill test: whatever this process printed before ``kill -9`` must be in ``results.jsonl``
(each line is written to the OS when :meth:`RunStore.record` returns; ``fsync`` is batched).
Each record also waits ``REPORTING_SWEEP_DELAY`` seconds, so that the kill lands mid-run.
"""

from __future__ import annotations

import os
import sys
import time

from longctx._store import RunStore

DELAY = float(os.environ.get("REPORTING_SWEEP_DELAY", "0.005"))
_record = RunStore.record


def record_and_report(self: RunStore, result):
    written = _record(self, result)
    sys.stdout.write(written.sample_id + "\n")
    sys.stdout.flush()
    time.sleep(DELAY)
    return written


RunStore.record = record_and_report  # type: ignore[method-assign]

if __name__ == "__main__":
    from longctx.cli.main import main

    main()
