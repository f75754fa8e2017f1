"""The agent runner: one task per agent that feeds its inbox to the guest in batches.

A batch is handled on a worker thread (one hop for many messages, since a hop costs far
more than a small handler), then handed to the `ResultSink`, which commits the outcomes and
routes outgoing messages. A second task of the runner hands batches over, so the next batch
is handled while the previous one commits. Batches still commit in order. A batch once taken is always handled and committed, even while the
server shuts down; a stop request ends the batch early between two messages instead, and the
untouched rest stays queued in the store.

Between batches the runner enforces the agent's CPU share (an agent over its share waits
before its next message) and, after a trap, replaces the instance with exponential backoff,
giving up with state FAILED when the agent is in a crash loop.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from typing import Protocol

import attrs
import trio

from caxton.domain.agents import Limits
from caxton.domain.messages import Message
from caxton.domain.supervision import CpuBudget, RestartPolicy
from caxton.runtime.abi import MAX_LOG_LINES_PER_MESSAGE, HandlerContext, SendLimits
from caxton.runtime.directory import Directory
from caxton.runtime.engine import WasmEngine
from caxton.runtime.inbox import Inbox
from caxton.runtime.instance import AgentStartError, CommandRunner, Outcome, ReactorInstance
from caxton.runtime.modules import COMMAND, CompiledModule

logger = logging.getLogger(__name__)

# Messages per worker hop: amortises the ~200 µs hop while keeping a stop request prompt.
MAX_BATCH = 32
# Handled batches that may wait for their commit at once: with two, the agent handles one
# batch while the previous one commits, and memory stays bounded when the disk is slow.
COMMITS_IN_FLIGHT = 2
# Window over which `cpu_millicores` averages the agent's CPU time.
CPU_WINDOW_SECONDS = 10.0


class RunnerState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@attrs.frozen
class RestartSettings:
    max_restarts: int = 5
    window: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 10.0

    def policy(self) -> RestartPolicy:
        return RestartPolicy(self.max_restarts, self.window, self.backoff_initial, self.backoff_max)


@attrs.frozen
class RunnerSpec:
    agent_id: str
    name: str
    compiled: CompiledModule
    limits: Limits
    inbox_capacity: int
    send_limits: SendLimits
    restarts: RestartSettings = RestartSettings()
    version: str = "1.0.0"


class RunnerObserver(Protocol):
    def __call__(self, runner: AgentRunner, kind: str, detail: str | None) -> None:
        """Called on the trio thread when the runner restarts its instance after a trap."""


class ResultSink(Protocol):
    async def batch_done(self, runner: AgentRunner, results: list[tuple[Message, Outcome]]) -> None:
        """Commit the outcomes and route outgoing messages. Must not raise."""


class AgentRunner:
    """Runs one agent. Start with `nursery.start(runner.run)`.

    `run` instantiates the module and calls `agent_init` before reporting started, so a
    failing start raises `AgentStartError` out of `nursery.start`. A runner created with
    `paused=True` accepts messages into its inbox but handles none until `resume`. `run`
    returns after `request_stop` once the inbox is drained (or at once without drain), or
    with state FAILED when the agent is in a crash loop or cannot be re-instantiated.
    """

    def __init__(
        self,
        spec: RunnerSpec,
        engine: WasmEngine,
        directory: Directory,
        sink: ResultSink,
        observer: RunnerObserver | None = None,
        *,
        paused: bool = False,
    ) -> None:
        self.spec = spec
        self.inbox = Inbox(spec.inbox_capacity)
        self.state = RunnerState.STARTING
        self.last_error: str | None = None
        self.started_at: float | None = None
        self.memory_used = 0
        self.restarts = 0
        self.throttled_seconds = 0.0
        self.stopped = trio.Event()
        self._engine = engine
        self._directory = directory
        self._sink = sink
        self._observer = observer
        self._executor: ReactorInstance | CommandRunner | None = None
        self._halt = threading.Event()
        self._drain = False
        self._stop_requested = False
        self._wait_scope: trio.CancelScope | None = None
        self._resumed = trio.Event()
        if not paused:
            self._resumed.set()
        self._cpu_samples: deque[tuple[float, float]] = deque()
        self._budget = CpuBudget(spec.limits.cpu, updated_at=time.monotonic())
        self._restart_policy = spec.restarts.policy()
        self._pending_restart: str | None = None

    @property
    def agent_id(self) -> str:
        return self.spec.agent_id

    @property
    def accepting(self) -> bool:
        return self.state is RunnerState.RUNNING and not self._stop_requested

    def resume(self) -> None:
        """Start handling messages (for a runner created paused)."""
        self._resumed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self._executor = await trio.to_thread.run_sync(self._create_executor, limiter=self._engine.limiter)
        except AgentStartError as exc:
            self.state, self.last_error = RunnerState.FAILED, str(exc)
            self.stopped.set()
            raise
        self.state = RunnerState.RUNNING
        self.started_at = time.monotonic()
        logger.info("agent %s (%s) version %s started", self.spec.name, self.agent_id, self.spec.version)
        task_status.started()
        send_results, receive_results = trio.open_memory_channel[list[tuple[Message, Outcome]]](
            COMMITS_IN_FLIGHT - 1
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._commit_results, receive_results)
                async with send_results:
                    await self._interruptible(self._resumed.wait())
                    await self._serve(send_results)
        finally:
            with trio.CancelScope(shield=True):
                await self._shutdown_executor()
            if self.state is not RunnerState.FAILED:
                self.state = RunnerState.STOPPED
            self.stopped.set()
            logger.info("agent %s (%s) %s", self.spec.name, self.agent_id, self.state.value)

    async def _commit_results(self, receive_results: trio.MemoryReceiveChannel) -> None:
        """Hand handled batches to the sink one at a time, in order, until the channel closes.

        Shielded as a whole: on shutdown `_serve` may still hand over the batch in hand, and
        it closes the channel when it returns, which is what ends this task.
        """
        with trio.CancelScope(shield=True):
            async with receive_results:
                async for results in receive_results:
                    await self._sink.batch_done(self, results)

    def request_stop(self, *, drain: bool) -> None:
        """Ask the runner to stop: after the queued messages when `drain`, else at once."""
        # A later stop may cancel an earlier drain, never the other way round.
        self._drain = drain if not self._stop_requested else self._drain and drain
        self._stop_requested = True
        if self.state is RunnerState.RUNNING:
            self.state = RunnerState.STOPPING
        if not self._drain:
            self._halt.set()
            self._resumed.set()
        if self._wait_scope is not None and (not self._drain or not self.inbox):
            self._wait_scope.cancel()

    def uptime_seconds(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def cpu_millicores(self) -> float:
        """Average CPU use over the last window, in thousandths of a core."""
        horizon = time.monotonic() - CPU_WINDOW_SECONDS
        while self._cpu_samples and self._cpu_samples[0][0] < horizon:
            self._cpu_samples.popleft()
        used = sum(cpu for _, cpu in self._cpu_samples)
        window = min(CPU_WINDOW_SECONDS, max(self.uptime_seconds(), 1.0))
        return used / window * 1000

    async def _interruptible(self, waiting) -> None:
        """Await `waiting` unless a stop request cancels the wait first."""
        with trio.CancelScope() as self._wait_scope:
            if self._stop_requested and (not self._drain or not self.inbox):
                self._wait_scope.cancel()
            await waiting
        self._wait_scope = None

    async def _serve(self, send_results: trio.MemorySendChannel) -> None:
        while not self._finished():
            batch: list[Message] = []

            async def take() -> None:
                batch.extend(await self.inbox.take(MAX_BATCH))

            await self._interruptible(take())
            if not batch:
                continue
            # A taken batch must be handled and reach the committer, whatever cancellation
            # comes meanwhile. The commit itself overlaps with handling the next batch.
            with trio.CancelScope(shield=True):
                results = await trio.to_thread.run_sync(self._handle_batch, batch, limiter=self._engine.limiter)
                untouched = batch[len(results):]
                if untouched:
                    self.inbox.restore(untouched)
                if results:
                    await send_results.send(results)
            if self._pending_restart is not None:
                await self._restart_instance()
            if self.state is RunnerState.FAILED:
                return
            await self._throttle()

    def _finished(self) -> bool:
        if not self._stop_requested:
            return False
        return not self._drain or not self.inbox

    async def _throttle(self) -> None:
        delay = self._budget.delay(time.monotonic())
        if delay > 0:
            self.throttled_seconds += delay
            await self._interruptible(trio.sleep(delay))

    async def _restart_instance(self) -> None:
        reason, self._pending_restart = self._pending_restart, None
        decision = self._restart_policy.on_restart(time.monotonic())
        if decision.give_up:
            self.state = RunnerState.FAILED
            self.last_error = (
                f"crash loop: more than {self.spec.restarts.max_restarts} restarts within "
                f"{self.spec.restarts.window:g}s; last error: {reason}"
            )
            logger.error("agent %s failed: %s", self.agent_id, self.last_error)
            return
        await self._interruptible(trio.sleep(decision.delay))
        try:
            self._executor = await trio.to_thread.run_sync(self._create_executor, limiter=self._engine.limiter)
        except AgentStartError as exc:
            self.state, self.last_error = RunnerState.FAILED, f"restart after trap failed: {exc}"
            logger.error("agent %s cannot be restarted: %s", self.agent_id, exc)
            return
        self.restarts += 1
        logger.info("agent %s restarted after %.2fs backoff: %s", self.agent_id, decision.delay, reason)
        if self._observer is not None:
            self._observer(self, "restarted", reason)

    def _create_executor(self) -> ReactorInstance | CommandRunner:
        label = f"{self.spec.name} ({self.agent_id})"
        kind = CommandRunner if self.spec.compiled.info.kind == COMMAND else ReactorInstance
        executor = kind(self.spec.compiled, self._engine, self.spec.limits, label)
        self.memory_used = executor.memory_used()
        return executor

    def _handle_batch(self, batch: list[Message]) -> list[tuple[Message, Outcome]]:
        """Handle messages in order on a worker thread.

        Stops early on a stop request, when the agent has spent its CPU budget, or when the
        instance trapped and must be replaced (which happens back on the trio side).
        """
        results: list[tuple[Message, Outcome]] = []
        assert self._executor is not None
        for message in batch:
            if self._halt.is_set() or (results and self._budget.exhausted(time.monotonic())):
                break
            context = HandlerContext(
                agent_id=self.agent_id,
                agent_name=self.spec.name,
                limits=self.spec.send_limits,
                is_known_receiver=self._directory.is_known_receiver,
            )
            outcome = self._executor.handle(message.encode(), context)
            results.append((message, outcome))
            if context.dropped_log_lines:
                logger.warning(
                    "agent %s: %d log lines of message %s dropped (limit %d per message)",
                    self.agent_id, context.dropped_log_lines, message.message_id, MAX_LOG_LINES_PER_MESSAGE,
                )
            now = time.monotonic()
            self._cpu_samples.append((now, outcome.cpu_seconds))
            self._budget.charge(outcome.cpu_seconds, now)
            if not outcome.ok:
                logger.warning("agent %s failed message %s: %s", self.agent_id, message.message_id, outcome.error)
            if outcome.needs_fresh_instance:
                self._pending_restart = outcome.error or "trap"
                break
        self.memory_used = self._executor.memory_used()
        return results

    async def _shutdown_executor(self) -> None:
        executor = self._executor
        if executor is None or self.state is RunnerState.FAILED or self._pending_restart is not None:
            return
        await trio.to_thread.run_sync(executor.shutdown, limiter=self._engine.limiter)
