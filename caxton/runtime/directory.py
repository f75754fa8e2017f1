"""Who can receive messages: live agents by id and name, and known outside clients.

Written on the trio thread, read from worker threads inside host functions. Each update
replaces a dict entry, which is atomic under the GIL, so readers need no lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caxton.runtime.runner import AgentRunner


class Directory:
    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._ids: dict[str, str] = {}
        self._runners: dict[str, AgentRunner] = {}
        self._clients: set[str] = set()

    def add_agent(self, agent_id: str, name: str) -> None:
        self._ids[agent_id] = name
        self._names[name] = agent_id

    def remove_agent(self, agent_id: str) -> None:
        name = self._ids.pop(agent_id, None)
        if name is not None and self._names.get(name) == agent_id:
            del self._names[name]
        self._runners.pop(agent_id, None)

    def add_client(self, identity: str) -> None:
        if identity not in self._ids and identity not in self._names:
            self._clients.add(identity)

    def add_clients(self, identities: set[str]) -> None:
        self._clients |= identities

    def agent_id(self, identity: str) -> str | None:
        """Return the agent id for an id or a name, or None."""
        if identity in self._ids:
            return identity
        return self._names.get(identity)

    def is_agent(self, identity: str) -> bool:
        return self.agent_id(identity) is not None

    def is_known_receiver(self, identity: str) -> bool:
        return self.is_agent(identity) or identity in self._clients

    def set_runner(self, agent_id: str, runner: AgentRunner) -> None:
        self._runners[agent_id] = runner

    def clear_runner(self, agent_id: str, runner: AgentRunner) -> None:
        if self._runners.get(agent_id) is runner:
            del self._runners[agent_id]

    def runner(self, agent_id: str) -> AgentRunner | None:
        return self._runners.get(agent_id)

    def runners(self) -> list[AgentRunner]:
        return list(self._runners.values())

