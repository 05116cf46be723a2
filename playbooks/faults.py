"""Crash points for fault-injection tests: ``LAYERGUARD_CRASH_AT=<name>`` kills the
process at that point, exactly as a power cut would (no cleanup, no flush)."""

import os

CRASH_EXIT_CODE = 70


def crash_point(name: str) -> None:
    if os.environ.get("LAYERGUARD_CRASH_AT") == name:
        os._exit(CRASH_EXIT_CODE)
