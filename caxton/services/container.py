"""The services the interfaces call, bundled so REST and gRPC share one instance of each."""

from __future__ import annotations

import attrs

from caxton.services.agents import AgentService
from caxton.services.messages import MessageService


@attrs.frozen
class RequestLimits:
    max_module_size: int
    max_request_size: int


@attrs.frozen
class Services:
    agents: AgentService
    messages: MessageService
    limits: RequestLimits
