"""Agent updates: replace an agent's module or config with the `immediate` or `blue_green` strategy.

Blue-green starts the new version paused next to the old one; once its `agent_init` has
succeeded, new messages go to the new version's inbox while the old version drains the
messages it already holds, then the new version starts handling. Every message is therefore
handled by exactly one version, in order. Immediate does the same without draining: the old
version stops after the message in hand and its queue moves to the new version. A new
version that fails to start leaves the old one serving, and the deployment records why.
"""

from __future__ import annotations

import copy
import json
import logging
import sqlite3
from typing import TYPE_CHECKING, Any

import trio

from caxton.domain import ids
from caxton.domain.agents import AgentConfig, check_name, parse_config
from caxton.domain.errors import DeploymentFailed, InvalidRequest
from caxton.domain.timefmt import format_time, now
from caxton.runtime.modules import CompiledModule, check_memory
from caxton.runtime.runner import AgentRunner
from caxton.store import agents as agent_rows
from caxton.store import deployments as deployment_rows
from caxton.store.agents import AgentRecord
from caxton.store.deployments import DeploymentRecord

if TYPE_CHECKING:
    from caxton.services.agents import AgentService

logger = logging.getLogger(__name__)

STRATEGIES = ("immediate", "blue_green")
# How long the old version may take to drain before its leftovers move to the new one.
DRAIN_TIMEOUT_SECONDS = 30.0


def merge_config(current: dict[str, Any], patch: object) -> dict[str, Any]:
    """Apply a partial config to the current one; `resources` merges key by key."""
    if patch is None:
        return current
    if not isinstance(patch, dict):
        raise InvalidRequest("config", "expected a JSON object")
    merged = copy.deepcopy(current)
    for key, value in patch.items():
        if key == "resources" and isinstance(value, dict) and isinstance(merged.get("resources"), dict):
            merged["resources"].update(value)
        else:
            merged[key] = value
    if merged.get("name") != current.get("name"):
        raise InvalidRequest("config.name", "an update cannot rename an agent; deploy a new agent instead")
    return merged


class Rollouts:
    def __init__(self, agents: AgentService) -> None:
        self._agents = agents
        self._active: dict[str, str] = {}

    async def update(
        self, agent_id: str, *, wasm: bytes | None, config_patch: object, strategy: object, version: object
    ) -> dict[str, Any]:
        """Validate an update and start rolling it out; returns at once with a deployment id."""
        if strategy is None:
            strategy = "immediate"
        if strategy not in STRATEGIES:
            raise InvalidRequest("strategy", f"unknown strategy {str(strategy)[:32]!r}; use immediate or blue_green")
        if version is not None and (not isinstance(version, str) or not 0 < len(version) <= 64):
            raise InvalidRequest("version", "expected a string of 1 to 64 characters")
        record = await self._agents.record(agent_id)
        if record.agent_id in self._active:
            raise InvalidRequest("agent_id", f"update {self._active[record.agent_id]} of this agent is still in progress")
        current = json.loads(record.config)
        raw = merge_config(current, config_patch)
        if version is not None:
            raw["version"] = version
        config = parse_config(raw, filename=None, policy=self._agents.policy)
        check_name(config.name)
        compiled = await self._compile(record, wasm, config)
        deployment = self._new_deployment(record, config, compiled, strategy)
        await self._agents.db.write(lambda c: _insert(c, deployment, wasm, compiled))
        self._active[record.agent_id] = deployment.deployment_id
        self._agents.publish(
            "deployment.started", record.agent_id,
            f"{strategy} update of {record.name} to version {config.version} started",
            deployment_id=deployment.deployment_id,
        )
        self._agents.nursery.start_soon(self._roll_out, record, config, compiled, deployment)
        return {"agent_id": record.agent_id, "status": "updating", "deployment_id": deployment.deployment_id}

    async def _compile(self, record: AgentRecord, wasm: bytes | None, config: AgentConfig) -> CompiledModule:
        modules = self._agents.modules
        if wasm is not None:
            return await trio.to_thread.run_sync(modules.compile_untrusted, wasm, config.limits.memory)
        data = await self._agents.db.read(lambda c: agent_rows.load_module(c, record.module_sha256))
        compiled = await trio.to_thread.run_sync(modules.load, record.module_sha256, data)
        check_memory(compiled.info, config.limits.memory)
        return compiled

    @staticmethod
    def _new_deployment(record: AgentRecord, config: AgentConfig, compiled: CompiledModule, strategy: str) -> DeploymentRecord:
        at = format_time(now())
        return DeploymentRecord(
            deployment_id=ids.new_id("deploy"), agent_id=record.agent_id, strategy=strategy,
            status="in_progress", from_version=json.loads(record.config).get("version", "1.0.0"),
            to_version=config.version, from_sha256=record.module_sha256, to_sha256=compiled.info.sha256,
            config=json.dumps(config.to_json()), error=None, created_at=at, updated_at=at,
        )

    async def _roll_out(
        self, record: AgentRecord, config: AgentConfig, compiled: CompiledModule, deployment: DeploymentRecord
    ) -> None:
        try:
            old = self._agents.directory.runner(record.agent_id)
            if old is None or not old.accepting:
                # A stopped agent only changes what it will run on its next start.
                await self._persist(deployment, compiled)
            else:
                await self._switch(record, config, compiled, deployment, old)
            await self._complete(deployment)
        except DeploymentFailed as exc:
            await self._fail(deployment, str(exc))
        except Exception as exc:  # noqa: BLE001 - a failed rollout must leave the old version serving
            logger.exception("deployment %s of agent %s failed", deployment.deployment_id, record.agent_id)
            await self._fail(deployment, f"internal error: {exc!r}")
        finally:
            self._active.pop(record.agent_id, None)

    async def _switch(
        self, record: AgentRecord, config: AgentConfig, compiled: CompiledModule,
        deployment: DeploymentRecord, old: AgentRunner,
    ) -> None:
        new = await self._agents.launch(record.agent_id, config, compiled, paused=True)
        try:
            await self._persist(deployment, compiled)
        except BaseException:
            new.request_stop(drain=False)
            raise
        self._agents.directory.set_runner(record.agent_id, new)
        old.request_stop(drain=deployment.strategy == "blue_green")
        with trio.move_on_after(DRAIN_TIMEOUT_SECONDS):
            await old.stopped.wait()
        if not old.stopped.is_set():
            logger.warning("deployment %s: old version did not drain in time; moving its queue", deployment.deployment_id)
            old.request_stop(drain=False)
            await old.stopped.wait()
        new.inbox.restore(old.inbox.take_all())
        new.resume()
        logger.info(
            "deployment %s: agent %s now runs version %s (%s)",
            deployment.deployment_id, record.agent_id, config.version, deployment.strategy,
        )

    async def _persist(self, deployment: DeploymentRecord, compiled: CompiledModule) -> None:
        """Make the new version the one the agent runs, from now and after a restart."""
        await self._agents.db.write(
            lambda c: agent_rows.update_agent(
                c, deployment.agent_id, config=deployment.config,
                module_sha256=compiled.info.sha256, kind=compiled.info.kind,
            )
        )

    async def _complete(self, deployment: DeploymentRecord) -> None:
        at = format_time(now())

        def commit(connection: sqlite3.Connection) -> None:
            deployment_rows.finish(connection, deployment.deployment_id, "completed", None, at)
            agent_rows.record_event(
                connection, deployment.agent_id, "updated", f"{deployment.deployment_id} to {deployment.to_version}", at
            )

        await self._agents.db.write(commit)
        self._agents.publish(
            "deployment.completed", deployment.agent_id,
            f"agent now runs version {deployment.to_version}", deployment_id=deployment.deployment_id,
        )

    async def _fail(self, deployment: DeploymentRecord, error: str) -> None:
        at = format_time(now())
        logger.error("deployment %s of agent %s failed: %s", deployment.deployment_id, deployment.agent_id, error)

        def commit(connection: sqlite3.Connection) -> None:
            deployment_rows.finish(connection, deployment.deployment_id, "failed", error, at)
            agent_rows.record_event(connection, deployment.agent_id, "update_failed", f"{deployment.deployment_id}: {error}", at)

        await self._agents.db.write(commit)
        self._agents.publish(
            "deployment.failed", deployment.agent_id, f"update failed, previous version keeps serving: {error}",
            deployment_id=deployment.deployment_id, error=error,
        )

    async def fail_interrupted(self) -> None:
        """Settle deployments a previous process left in progress.

        The new version is saved before traffic switches, so an agent whose stored module and
        config already match the deployment runs the new version now: that deployment is
        completed. Any other was cut off before the switch and failed.
        """
        deployments = await self._agents.db.read(deployment_rows.interrupted)
        for deployment in deployments:
            agent = await self._agents.db.read(lambda c, d=deployment: agent_rows.get_agent(c, d.agent_id))
            switched = (
                agent is not None
                and agent.module_sha256 == deployment.to_sha256
                and json.loads(agent.config) == json.loads(deployment.config)
            )
            if switched:
                logger.info("deployment %s was switched before the server stopped; completing it", deployment.deployment_id)
                await self._complete(deployment)
            else:
                await self._fail(deployment, "the server stopped during the rollout")


def _insert(connection: sqlite3.Connection, deployment: DeploymentRecord, wasm: bytes | None, compiled: CompiledModule) -> None:
    if wasm is not None:
        agent_rows.insert_module(connection, compiled.info.sha256, wasm, deployment.created_at)
    deployment_rows.insert(connection, deployment)
