"""Per-token rate limits on the REST API, as Quart request hooks.

Each request by an authenticated principal falls into one category, with one bucket per
principal identity and category (never keyed by the token itself):

- `agent_operations` (default 10/min): POST, PUT, PATCH and DELETE under /agents, which means
  deploy, stop, start, update and remove.
- `messages` (default 1000/s): POST, PUT, PATCH and DELETE under /messages, which means sending.
- `metrics` (default 100/min): every request under /metrics.
- `default` (1000/s, no setting): every other authenticated request. This includes GET and HEAD
  on /agents and /messages, and every path outside /agents, /messages and /metrics.

Reads of /agents are not agent operations for two reasons. First, the API reference's own
example, `curl -I` on /agents, reports `X-RateLimit-Limit: 1000` and not the agent limit of 10.
Second, a dashboard or CLI that polls agent status every few seconds would use up 10/min and
then be unable to stop a misbehaving agent. Deploys compile modules, and starts, stops and
updates change running agents, while reads change nothing.

Every response to a request that passed authentication carries `X-RateLimit-Limit` and
`X-RateLimit-Remaining`, error responses included. Health and OPTIONS requests carry no
principal, so they are never limited and get no headers. The same holds for requests that
authentication rejects with 401 or 403, because that hook raises before this one runs.
WebSocket connections are not limited, because Quart runs `before_websocket` hooks for them
and not `before_request`.

A request that the limiter admits uses one unit even when the route then fails with 400, 404
or 500, so retrying a malformed request does not get around the limit. A request that the
limiter rejects gets 429 RATE_LIMITED with `Retry-After` and uses nothing, so a client that
waits `Retry-After` seconds is admitted unless it sent other requests in that category meanwhile.
"""

from __future__ import annotations

import logging
import math
import time

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from caxton.config import Settings
from caxton.domain.errors import RateLimited
from caxton.domain.ratelimit import Category, Decision, RateLimiter, RateLimits

logger = logging.getLogger(__name__)

LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
RETRY_AFTER_HEADER = "Retry-After"
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CATEGORY_LABELS = {
    Category.AGENT_OPERATIONS: "agent operations",
    Category.MESSAGES: "message sending",
    Category.METRICS: "metrics queries",
    Category.DEFAULT: "requests outside the limited categories",
}


def build_rate_limiter(settings: Settings) -> RateLimiter:
    """Create the limiter from the `rate_limits_*` fields of `caxton.config.Settings`."""
    limits = RateLimits(
        agent_operations=settings.rate_limits_agent_operations,
        messages=settings.rate_limits_messages,
        metrics=settings.rate_limits_metrics,
    )
    return RateLimiter(limits)


def category_for(method: str, path: str) -> Category:
    """Return the category of a request; `path` is relative to the API prefix, such as `/agents/x/stop`."""
    resource = path.split("/")[1] if path.startswith("/") else ""
    if resource == "metrics":
        return Category.METRICS
    if resource == "agents" and method in _WRITE_METHODS:
        return Category.AGENT_OPERATIONS
    if resource == "messages" and method in _WRITE_METHODS:
        return Category.MESSAGES
    return Category.DEFAULT


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """Build the X-RateLimit headers, plus `Retry-After` in whole seconds (at least 1) on a rejection."""
    headers = {LIMIT_HEADER: str(decision.limit), REMAINING_HEADER: str(decision.remaining)}
    if not decision.allowed:
        headers[RETRY_AFTER_HEADER] = str(retry_after_seconds(decision))
    return headers


def retry_after_seconds(decision: Decision) -> int:
    # Round up, so a client that waits this long is admitted. HTTP delay-seconds are whole
    # numbers, and 0 would invite an immediate retry.
    return max(1, math.ceil(decision.retry_after))


def install_rate_limits(app: QuartTrio, limiter: RateLimiter, api_prefix: str) -> None:
    """Register the hooks that limit each request and add the headers to each response.

    Call this after the authentication hook is registered. Quart runs app-level
    `before_request` functions in registration order, and this one reads `g.principal`.
    """

    @app.before_request
    async def limit_rate() -> None:
        principal = g.get("principal")
        if principal is None:
            return
        category = category_for(request.method, request.path.removeprefix(api_prefix))
        evictions = limiter.forced_evictions
        decision = limiter.check(principal.identity, category, time.monotonic())
        g.rate_limit = decision
        if limiter.forced_evictions > evictions:
            _log_forced_eviction(limiter)
        if not decision.allowed:
            headers = rate_limit_headers(decision)
            if not await _discard_body():
                headers["Connection"] = "close"
            message = _rejection_message(principal.name, category, limiter, decision)
            raise RateLimited(message, headers=headers)

    @app.after_request
    async def add_rate_limit_headers(response: Response) -> Response:
        decision = g.get("rate_limit")
        if decision is not None:
            for name, value in rate_limit_headers(decision).items():
                response.headers[name] = value
        return response


async def _discard_body() -> bool:
    """Read and drop the request body before the 429 goes out; return whether that worked.

    With Hypercorn 0.18 and Quart-Trio 0.12, a response that completes before the request body
    has arrived can leave the keep-alive connection stuck. Quart-Trio cancels the request's
    nursery, and with it Hypercorn's connection cleanup, so the connection is neither recycled
    nor closed and the client's next request on it gets no response. Reading the body first
    avoids that, at the cost of receiving an upload that is then thrown away. When the body
    cannot be read (over MAX_CONTENT_LENGTH, or too slow), the caller asks the client to close.
    """
    try:
        await request.get_data(cache=False)
    except HTTPException as error:
        logger.debug("could not read the body of a rate-limited request: %s", error)
        return False
    return True


def _rejection_message(token_name: str, category: Category, limiter: RateLimiter, decision: Decision) -> str:
    rate = limiter.limits.for_category(category)
    setting = "" if category is Category.DEFAULT else f" (setting rate_limits.{category.value})"
    seconds = retry_after_seconds(decision)
    unit = "second" if seconds == 1 else "seconds"
    return (
        f"Rate limit exceeded: token '{token_name}' has used its {rate} for {_CATEGORY_LABELS[category]}"
        f"{setting}. Retry after {seconds} {unit}."
    )


def _log_forced_eviction(limiter: RateLimiter) -> None:
    # Logged at powers of two, because past the bound this can repeat on every request.
    count = limiter.forced_evictions
    if count & (count - 1) == 0:
        logger.warning(
            "rate-limit table is full (%d buckets, none idle) and evicted an active bucket, which resets "
            "its limit early; %d such evictions so far",
            limiter.max_buckets, count,
        )
