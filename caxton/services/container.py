"""The services the interfaces call, bundled so REST and gRPC share one instance of each."""

from __future__ import annotations

import attrs

from caxton.domain.ratelimit import RateLimiter
from caxton.services.agents import AgentService
from caxton.services.events import EventHub
from caxton.services.messages import MessageService
from caxton.services.metrics import MetricsService
from caxton.services.rollout import Rollouts


@attrs.frozen
class RequestLimits:
    max_module_size: int
    max_request_size: int


@attrs.frozen
class Services:
    agents: AgentService
    messages: MessageService
    events: EventHub
    metrics: MetricsService
    rollouts: Rollouts
    limits: RequestLimits
    rate_limits: RateLimiter = attrs.field(factory=RateLimiter)
