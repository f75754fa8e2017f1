"""The agent service: deploy, list, inspect, stop, start and remove agents.

Owns the nursery in which every agent runner lives, so an agent's crash ends only its own
runner. On start it brings back every agent whose desired state is running, with the
messages that were stored for it and not yet handled.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

import attrs
import trio

from caxton.domain.agents import AgentConfig, AgentStatus, Limits, LimitPolicy, check_name, parse_config
from caxton.domain.errors import AgentAlreadyExists, AgentNotFound, DeploymentFailed, InvalidRequest
from caxton.domain import ids
from caxton.domain.resources import format_cpu, format_memory, parse_cpu, parse_duration, parse_memory
from caxton.domain.timefmt import format_time, now
from caxton.runtime.abi import SendLimits
from caxton.runtime.directory import Directory
from caxton.runtime.engine import WasmEngine
from caxton.runtime.instance import AgentStartError
from caxton.runtime.modules import CompiledModule, ModuleCache
from caxton.runtime.runner import AgentRunner, RestartSettings, RunnerSpec, RunnerState
from caxton.services.events import EventHub
from caxton.services.messages import MessageService, parse_bounded_int
from caxton.services.metrics import MetricsService
from caxton.store import agents as agent_rows
from caxton.store import deployments as deployment_rows
from caxton.store.agents import AgentRecord
from caxton.store.db import Database

logger = logging.getLogger(__name__)

# Marks an argument the caller did not pass, where None is a meaningful value.
_UNCHANGED = object()

DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
# Stop requests without a grace period get this long to finish the message in hand.
DEFAULT_GRACE_SECONDS = 30.0
MAX_GRACE_SECONDS = 3600.0


@attrs.frozen
class AgentSettings:
    policy: LimitPolicy
    inbox_size: int
    send_limits: SendLimits
    restarts: RestartSettings = RestartSettings()


class AgentService:
    """Start with `nursery.start(service.run)`; cancel to stop every agent without draining."""

    def __init__(
        self,
        db: Database,
        engine: WasmEngine,
        modules: ModuleCache,
        directory: Directory,
        messages: MessageService,
        events: EventHub,
        metrics: MetricsService,
        settings: AgentSettings,
    ) -> None:
        self._db = db
        self._engine = engine
        self._modules = modules
        self._directory = directory
        self._messages = messages
        self._events = events
        self._metrics = metrics
        self._settings = settings
        self._nursery: trio.Nursery | None = None
        self._pending_names: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._messages.load_clients()
            await self._restore_agents()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop_all()
                nursery.cancel_scope.cancel()

    async def _restore_agents(self) -> None:
        records = await self._db.read(agent_rows.live_agents)
        self._metrics.load_counts(
            {r.agent_id: (r.messages_processed, r.messages_failed, r.cpu_seconds, r.fuel_consumed) for r in records}
        )
        for record in records:
            self._directory.add_agent(record.agent_id, record.name)
        restarted = 0
        for record in records:
            if record.desired_state == "running":
                restarted += await self._restart(record)
            elif record.status in (AgentStatus.RUNNING.value, AgentStatus.STOPPING.value):
                # The previous process ended before this agent's stop completed.
                await self._set_status(record.agent_id, AgentStatus.STOPPED)
        logger.info("restored %d agents, %d running", len(records), restarted)

    async def _restart(self, record: AgentRecord) -> int:
        try:
            data = await self._db.read(lambda c: agent_rows.load_module(c, record.module_sha256))
            compiled = await trio.to_thread.run_sync(self._modules.load, record.module_sha256, data)
            await self._launch(record.agent_id, _config_from_record(record), compiled, restore=True)
        except (AgentStartError, DeploymentFailed, LookupError) as exc:
            logger.error("agent %s (%s) failed to start: %s", record.name, record.agent_id, exc)
            await self._set_status(record.agent_id, AgentStatus.FAILED, last_error=str(exc))
            self._publish("agent.failed", record.agent_id, f"agent {record.name} failed to start", error=str(exc))
            return 0
        await self._set_status(record.agent_id, AgentStatus.RUNNING, last_error=None)
        self._publish("agent.started", record.agent_id, f"agent {record.name} started")
        return 1

    # Collaborators that the rollout service shares; the rest of this class stays private.
    @property
    def db(self) -> Database:
        return self._db

    @property
    def modules(self) -> ModuleCache:
        return self._modules

    @property
    def directory(self) -> Directory:
        return self._directory

    @property
    def policy(self) -> LimitPolicy:
        return self._settings.policy

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "AgentService.run has not started"
        return self._nursery

    async def launch(self, agent_id: str, config: AgentConfig, compiled: CompiledModule, *, paused: bool) -> AgentRunner:
        """Start a runner that is not registered for routing yet; DeploymentFailed if it cannot start."""
        return await self._launch(agent_id, config, compiled, restore=False, paused=paused)

    async def record(self, agent_id: str) -> AgentRecord:
        """Return the stored record of a live agent named by id or name; raise AgentNotFound otherwise."""
        return await self._record(agent_id)

    def publish(self, kind: str, agent_id: str, message: str, **fields: Any) -> None:
        self._publish(kind, agent_id, message, **fields)

    async def _launch(
        self, agent_id: str, config: AgentConfig, compiled: CompiledModule, *, restore: bool, paused: bool = False
    ) -> AgentRunner:
        """Start a runner; with `restore`, registered first so routed messages reach it."""
        spec = RunnerSpec(
            agent_id=agent_id, name=config.name, compiled=compiled, limits=config.limits,
            inbox_capacity=self._settings.inbox_size, send_limits=self._settings.send_limits,
            restarts=self._settings.restarts, version=config.version,
        )
        runner = AgentRunner(spec, self._engine, self._directory, self._messages, self._on_runner_event, paused=paused)
        if restore:
            self._directory.set_runner(agent_id, runner)
            await self._messages.restore_queued(runner)
        assert self._nursery is not None
        try:
            await self._nursery.start(self._supervise, runner)
        except AgentStartError as exc:
            self._directory.clear_runner(agent_id, runner)
            # TODO: near vm.max_map_count (about 11,500 agents per process) instantiation fails
            # with an allocation error; report that as RESOURCE_LIMIT_EXCEEDED, not a 500.
            raise DeploymentFailed(f"agent '{config.name}' failed to start: {exc}") from None
        return runner

    async def _supervise(self, runner: AgentRunner, *, task_status: trio.TaskStatus[None]) -> None:
        """Run one agent; whatever goes wrong inside it ends this agent only."""
        try:
            await runner.run(task_status=task_status)
        except AgentStartError:
            raise
        except Exception as exc:  # noqa: BLE001 - one agent's bug must not stop the server
            logger.exception("agent %s runner crashed", runner.agent_id)
            runner.state, runner.last_error = RunnerState.FAILED, f"runner crashed: {exc!r}"
            runner.stopped.set()
        if runner.state is RunnerState.FAILED:
            # Store the error and its event in one commit before the runner leaves the
            # directory, so that details never show the failure without its cause.
            at = format_time(now())

            def commit(connection: sqlite3.Connection) -> None:
                agent_rows.update_agent(
                    connection, runner.agent_id, status=AgentStatus.FAILED.value, last_error=runner.last_error
                )
                agent_rows.record_event(connection, runner.agent_id, "failed", runner.last_error, at)

            await self._db.write(commit)
            self._directory.clear_runner(runner.agent_id, runner)
            self._publish(
                "agent.failed", runner.agent_id, f"agent {runner.spec.name} failed", error=runner.last_error
            )

    def _on_runner_event(self, runner: AgentRunner, kind: str, detail: str | None) -> None:
        self._publish(
            f"agent.{kind}", runner.agent_id, f"agent {runner.spec.name} {kind} after: {detail}", reason=detail
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._record_event, runner.agent_id, kind, detail)

    async def _record_event(self, agent_id: str, kind: str, detail: str | None) -> None:
        at = format_time(now())
        try:
            await self._db.write(lambda c: agent_rows.record_event(c, agent_id, kind, detail, at))
        except Exception:  # noqa: BLE001 - history of restarts is informative, not critical
            logger.exception("cannot store %s event of agent %s", kind, agent_id)

    def _publish(self, kind: str, agent_id: str, message: str, **fields: Any) -> None:
        self._events.publish(kind, message, subjects=(agent_id,), agent_id=agent_id, **fields)

    async def deploy(self, wasm: bytes, *, filename: str | None, config: object) -> dict[str, Any]:
        """Validate, compile, start and store a new agent; changes nothing when any step fails."""
        parsed = parse_config(config, filename=filename, policy=self._settings.policy)
        if self._directory.agent_id(parsed.name) is not None or parsed.name in self._pending_names:
            raise AgentAlreadyExists(f"Agent name '{parsed.name}' is already in use")
        self._pending_names.add(parsed.name)
        try:
            return await self._deploy(wasm, parsed)
        finally:
            self._pending_names.discard(parsed.name)

    async def _deploy(self, wasm: bytes, config: AgentConfig) -> dict[str, Any]:
        compiled = await trio.to_thread.run_sync(self._modules.compile_untrusted, wasm, config.limits.memory)
        agent_id = ids.agent_id()
        runner = await self._launch(agent_id, config, compiled, restore=False)
        deployed_at = format_time(now())
        record = AgentRecord(
            agent_id=agent_id, name=config.name, config=json.dumps(config.to_json()),
            module_sha256=compiled.info.sha256, kind=compiled.info.kind, desired_state="running",
            status=AgentStatus.RUNNING.value, deployed_at=deployed_at, removed_at=None, last_error=None,
            messages_processed=0, messages_failed=0,
        )

        def insert(connection: sqlite3.Connection) -> None:
            agent_rows.insert_module(connection, compiled.info.sha256, wasm, deployed_at)
            agent_rows.insert_agent(connection, record)
            agent_rows.record_event(connection, agent_id, "deployed", compiled.info.kind, deployed_at)

        try:
            await self._db.write(insert)
        except BaseException as exc:
            runner.request_stop(drain=False)
            if isinstance(exc, sqlite3.IntegrityError):
                raise AgentAlreadyExists(f"Agent name '{config.name}' is already in use") from None
            raise
        self._directory.add_agent(agent_id, config.name)
        self._directory.set_runner(agent_id, runner)
        self._publish("agent.deployed", agent_id, f"agent {config.name} deployed", name=config.name)
        self._publish("agent.started", agent_id, f"agent {config.name} started")
        logger.info("agent %s (%s) deployed, module %s, kind %s", config.name, agent_id, compiled.info.sha256[:12], compiled.info.kind)
        return {"agent_id": agent_id, "name": config.name, "status": "running", "deployed_at": deployed_at}

    async def counts_by_status(self) -> dict[str, int]:
        """Live agents in total and per status, for the system metrics."""
        records = await self._db.read(agent_rows.live_agents)
        counts = {"total": len(records)}
        for status in AgentStatus:
            counts[status.value] = 0
        for record in records:
            status = self._visible_status(record)
            counts[status] = counts.get(status, 0) + 1
        return counts

    async def metrics_for(self, agent_id: str) -> dict[str, Any]:
        record = await self._record(agent_id)
        return self._metrics.agent_snapshot(record.agent_id)

    def resolve_identity(self, identity: str) -> str | None:
        """Return the agent id for an agent id or name, or None for anything else."""
        return self._directory.agent_id(identity)

    async def list(self, *, status: str | None, limit: object, offset: object) -> tuple[list[dict[str, Any]], int]:
        if status is not None and status not in {s.value for s in AgentStatus}:
            raise InvalidRequest("status", f"unknown status {status!r}; use one of {', '.join(s.value for s in AgentStatus)}")
        page = parse_bounded_int("limit", limit, default=DEFAULT_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT)
        skip = parse_bounded_int("offset", offset, default=0, low=0, high=2**62)
        records, total = await self._db.read(lambda c: agent_rows.list_agents(c, status=status, limit=page, offset=skip))
        return [self._summary(record) for record in records], total

    async def get(self, agent_id: str) -> dict[str, Any]:
        record = await self._record(agent_id)
        runner = self._directory.runner(record.agent_id)
        config = json.loads(record.config)
        limits = _config_from_record(record).limits
        details = self._summary(record)
        details.update(
            kind=record.kind,
            module_sha256=record.module_sha256,
            deployed_at=record.deployed_at,
            last_error=record.last_error if runner is None else runner.last_error or record.last_error,
            config=config,
            resources={
                "memory": f"{details['memory_used']}/{format_memory(limits.memory)}",
                "cpu": f"{format_cpu(runner.cpu_millicores() if runner else 0)}/{format_cpu(limits.cpu)}",
                "timeout": f"{limits.timeout:g}s",
            },
            metrics={
                "messages_processed": record.messages_processed,
                "messages_failed": record.messages_failed,
                "uptime_seconds": round(runner.uptime_seconds()) if runner else 0,
                "queue_size": len(runner.inbox) if runner else 0,
                "restarts": runner.restarts if runner else 0,
                "throttled_seconds": round(runner.throttled_seconds, 3) if runner else 0.0,
            },
            recent_events=await self._db.read(lambda c: agent_rows.recent_events(c, record.agent_id, 20)),
            last_deployment=await self._last_deployment(record.agent_id),
        )
        return details

    async def _last_deployment(self, agent_id: str) -> dict[str, Any] | None:
        latest = await self._db.read(lambda c: deployment_rows.latest_for(c, agent_id))
        return latest.to_json() if latest is not None else None

    def _visible_status(self, record: AgentRecord) -> str:
        """Return the live status, except that `failed` shows only once stored with its error."""
        runner = self._directory.runner(record.agent_id)
        if runner is None or runner.state is RunnerState.FAILED:
            return record.status
        return runner.state.value

    def _summary(self, record: AgentRecord) -> dict[str, Any]:
        runner = self._directory.runner(record.agent_id)
        status = self._visible_status(record)
        return {
            "agent_id": record.agent_id,
            "name": record.name,
            "status": status,
            "memory_used": format_memory(runner.memory_used if runner else 0),
            "cpu_usage": round(runner.cpu_millicores() / 1000, 3) if runner else 0.0,
            "version": json.loads(record.config).get("version"),
            "deployed_at": record.deployed_at,
        }

    async def _record(self, agent_id: str) -> AgentRecord:
        resolved = self._directory.agent_id(agent_id) or agent_id
        record = await self._db.read(lambda c: agent_rows.get_agent(c, resolved))
        if record is None:
            raise AgentNotFound(f"Agent with ID '{agent_id}' not found")
        return record

    async def stop(self, agent_id: str, body: object) -> dict[str, Any]:
        """Ask a running agent to stop; the stop completes in the background."""
        grace, drain = _parse_stop(body)
        record = await self._record(agent_id)
        runner = self._directory.runner(record.agent_id)
        if runner is None or runner.state in (RunnerState.STOPPED, RunnerState.FAILED):
            await self._set_status(record.agent_id, AgentStatus(record.status), desired="stopped")
            return {"agent_id": record.agent_id, "status": record.status}
        runner.request_stop(drain=drain)
        await self._set_status(record.agent_id, AgentStatus.STOPPING, desired="stopped")
        assert self._nursery is not None
        self._nursery.start_soon(self._finish_stop, runner, grace)
        logger.info("agent %s stopping (grace %.0fs, drain %s)", record.agent_id, grace, drain)
        return {"agent_id": record.agent_id, "status": "stopping"}

    async def _finish_stop(self, runner: AgentRunner, grace: float) -> None:
        with trio.move_on_after(grace):
            await runner.stopped.wait()
        if not runner.stopped.is_set():
            logger.warning("agent %s did not drain within %.0fs; stopping now", runner.agent_id, grace)
            runner.request_stop(drain=False)
            await runner.stopped.wait()
        self._directory.clear_runner(runner.agent_id, runner)
        if runner.state is RunnerState.STOPPED and self._directory.is_agent(runner.agent_id):
            await self._set_status(runner.agent_id, AgentStatus.STOPPED)
            self._publish("agent.stopped", runner.agent_id, f"agent {runner.spec.name} stopped")

    async def start(self, agent_id: str) -> dict[str, Any]:
        """Start a stopped or failed agent with its stored module and config."""
        record = await self._record(agent_id)
        runner = self._directory.runner(record.agent_id)
        if runner is not None and runner.state in (RunnerState.RUNNING, RunnerState.STARTING):
            return {"agent_id": record.agent_id, "status": runner.state.value}
        if runner is not None:
            await runner.stopped.wait()
        await self._set_status(record.agent_id, AgentStatus(record.status), desired="running")
        if not await self._restart(record):
            latest = await self._record(agent_id)
            raise DeploymentFailed(latest.last_error or f"agent '{record.name}' failed to start")
        return {"agent_id": record.agent_id, "status": "running"}

    async def remove(self, agent_id: str, *, force: bool) -> dict[str, Any]:
        record = await self._record(agent_id)
        runner = self._directory.runner(record.agent_id)
        if runner is not None:
            runner.request_stop(drain=False)
            if not force:
                with trio.move_on_after(DEFAULT_GRACE_SECONDS):
                    await runner.stopped.wait()
        self._directory.remove_agent(record.agent_id)
        self._metrics.forget(record.agent_id)
        at = format_time(now())

        def commit(connection: sqlite3.Connection) -> None:
            agent_rows.update_agent(connection, record.agent_id, removed_at=at, desired_state="removed", status="removed")
            agent_rows.record_event(connection, record.agent_id, "removed", "force" if force else None, at)

        await self._db.write(commit)
        await self._messages.fail_queued(record.agent_id, "receiver was removed before handling the message")
        logger.info("agent %s (%s) removed%s", record.name, record.agent_id, " (forced)" if force else "")
        self._publish("agent.removed", record.agent_id, f"agent {record.name} removed")
        return {"agent_id": record.agent_id, "status": "removed"}

    async def _set_status(
        self, agent_id: str, status: AgentStatus, *, desired: str | None = None, last_error: object = _UNCHANGED
    ) -> None:
        changes: dict[str, Any] = {"status": status.value}
        if desired is not None:
            changes["desired_state"] = desired
        if last_error is not _UNCHANGED:
            changes["last_error"] = last_error
        await self._db.write(lambda c: agent_rows.update_agent(c, agent_id, **changes))

    async def _stop_all(self) -> None:
        runners = self._directory.runners()
        for runner in runners:
            runner.request_stop(drain=False)
        for runner in runners:
            await runner.stopped.wait()
        logger.info("stopped %d agents", len(runners))


def _config_from_record(record: AgentRecord) -> AgentConfig:
    raw = json.loads(record.config)
    resources = raw["resources"]
    limits = Limits(
        memory=parse_memory(resources["memory"]), cpu=parse_cpu(resources["cpu"]),
        timeout=parse_duration(resources["timeout"]), fuel=int(resources.get("fuel", 0)),
    )
    return AgentConfig(
        name=check_name(raw["name"]), limits=limits, version=raw.get("version", "1.0.0"),
        description=raw.get("description"), memory_text=resources["memory"], cpu_text=resources["cpu"],
    )


def _parse_stop(body: object) -> tuple[float, bool]:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidRequest("body", "expected a JSON object")
    unknown = sorted(set(body) - {"grace_period_seconds", "drain_messages"})
    if unknown:
        raise InvalidRequest(unknown[0], "unknown field; allowed: grace_period_seconds, drain_messages")
    grace = body.get("grace_period_seconds", DEFAULT_GRACE_SECONDS)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= MAX_GRACE_SECONDS:
        raise InvalidRequest("grace_period_seconds", f"expected a number from 0 to {MAX_GRACE_SECONDS:g}")
    drain = body.get("drain_messages", False)
    if not isinstance(drain, bool):
        raise InvalidRequest("drain_messages", "expected true or false")
    return float(grace), drain
