"""The process's one wasmtime engine, its epoch ticker and the worker-thread limiter."""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import threading

import trio
import wasmtime

logger = logging.getLogger(__name__)

# Deadline granularity: a handler may overrun its time limit by up to one tick.
EPOCH_TICK_SECONDS = 0.01
# Fuel for agents without a budget: far more than any handler can burn within its time limit.
UNLIMITED_FUEL = 2**62


class WasmEngine:
    """Owns the wasmtime `Engine` shared by every agent.

    Epoch interruption is on, so every call into a guest must be preceded by
    `set_epoch_deadline(engine.ticks_for(seconds))`. `run_ticker` advances the epoch from
    one OS thread for the whole engine. `limiter` bounds how many guest calls run at once.
    """

    def __init__(self, *, memory_reservation: int, memory_guard_size: int, workers: int | None = None) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        # Fuel is always metered, so any agent can have a deterministic budget per message and
        # every agent reports what it used. Agents without a budget get UNLIMITED_FUEL.
        config.consume_fuel = True
        # A small reservation lets one process hold tens of thousands of instances; by default
        # each reserves 4 GiB of address space. Memory beyond it may move when it grows.
        config.memory_reservation = memory_reservation
        config.memory_guard_size = memory_guard_size
        config.cranelift_opt_level = "speed"
        self.engine = wasmtime.Engine(config)
        # Compiled code is only valid for the same wasmtime build and engine settings.
        self.settings_key = (
            f"wasmtime-{importlib.metadata.version('wasmtime')}-epoch-fuel"
            f"-r{memory_reservation}-g{memory_guard_size}"
        )
        self.limiter = trio.CapacityLimiter(workers or os.cpu_count() or 1)

    @staticmethod
    def ticks_for(seconds: float) -> int:
        """Epoch ticks that cover `seconds`, at least one."""
        return max(1, math.ceil(seconds / EPOCH_TICK_SECONDS))

    async def run_ticker(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Advance the epoch every tick on a daemon thread until cancelled."""
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(EPOCH_TICK_SECONDS):
                self.engine.increment_epoch()

        thread = threading.Thread(target=tick, name="caxton-epoch", daemon=True)
        thread.start()
        logger.debug("epoch ticker started (%.0f ms per tick)", EPOCH_TICK_SECONDS * 1000)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            # Guest calls still running need ticks to reach their deadline, even when everything
            # is cancelled at once. Without ticks a spinning guest would block shutdown forever.
            with trio.CancelScope(shield=True):
                while self.limiter.borrowed_tokens:
                    await trio.sleep(EPOCH_TICK_SECONDS)
            stop.set()
            thread.join()
            logger.debug("epoch ticker stopped")
