"""The server's lifecycle: nested nurseries that start bottom-up and stop top-down.

store  >  runtime (epoch ticker, agents)  >  HTTP. Shutdown first stops accepting requests,
then stops every agent (each finishes and commits the message in hand), then flushes and
closes the store.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from caxton.api.app import create_app
from caxton.api.auth import Authenticator, load_or_create_admin_token
from caxton.api.ratelimit import build_rate_limiter
from caxton.config import Settings
from caxton.domain.agents import LimitPolicy
from caxton.runtime.abi import SendLimits
from caxton.runtime.directory import Directory
from caxton.runtime.engine import WasmEngine
from caxton.runtime.modules import ModuleCache
from caxton.runtime.runner import RestartSettings
from caxton.services.agents import AgentService, AgentSettings
from caxton.services.container import RequestLimits, Services
from caxton.services.events import EventHub
from caxton.services.messages import MessageService
from caxton.services.metrics import MetricsService
from caxton.services.rollout import Rollouts
from caxton.store.db import Database
from caxton.store.lock import data_dir_lock

logger = logging.getLogger(__name__)

DATABASE_FILE = "caxton.db"
# Hypercorn 0.18 (trio worker) keeps idle keep-alive connections open until its graceful
# timeout ends, so a long timeout delays every shutdown with a connected client. Requests
# here finish in milliseconds, so a few seconds drain them all.
HTTP_DRAIN_SECONDS = 3.0


@attrs.frozen
class Running:
    """The addresses a started server listens on, and the file of its admin token."""

    urls: tuple[str, ...]
    token_file: str | None


def build_authenticator(settings: Settings) -> tuple[Authenticator, str | None]:
    """Collect tokens from settings, creating the admin token file when none is set."""
    token_file = None
    admin = settings.auth_token
    if admin is None:
        admin, path, created = load_or_create_admin_token(settings.data_dir)
        token_file = str(path)
        if created:
            logger.info("created admin token in %s", path)
    tokens = [("admin", admin, "admin")] + [(t.name, t.token, t.role) for t in settings.extra_tokens]
    return Authenticator(tokens), token_file


async def serve(
    settings: Settings,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until `shutdown` is set, then stop in order and return.

    HTTP runs in a nursery inside `run_services`, so it stops before the agents, the engine
    and the store do.
    """
    authenticator, token_file = build_authenticator(settings)
    async with run_services(settings) as services:
        async with trio.open_nursery() as api_nursery:
            app = create_app(services, authenticator)
            urls = await api_nursery.start(_run_http, app, settings, shutdown, services.events)
            logger.info("listening on %s", ", ".join(urls))
            task_status.started(Running(urls=tuple(urls), token_file=token_file))
        logger.info("HTTP server stopped; stopping agents")
    logger.info("shutdown complete")


@contextlib.asynccontextmanager
async def run_services(settings: Settings) -> AsyncIterator[Services]:
    """Run the store, the engine and the services, without HTTP, for the duration of the block.

    Holds the data-folder lock throughout. Each layer has its own nursery inside the one
    below it. On exit each is cancelled only after the layers above it have returned. So
    agents finish their last batch while the epoch ticker still runs, which still interrupts
    a spinning guest, and while the store still accepts writes.
    """
    with data_dir_lock(settings.data_dir):
        db = Database(settings.data_dir / DATABASE_FILE)
        engine = WasmEngine(
            memory_reservation=settings.runtime_memory_reservation,
            memory_guard_size=settings.runtime_memory_guard_size,
            workers=settings.runtime_workers or None,
        )
        async with trio.open_nursery() as store_nursery:
            await store_nursery.start(db.run)
            async with trio.open_nursery() as engine_nursery:
                await engine_nursery.start(engine.run_ticker)
                async with trio.open_nursery() as service_nursery:
                    yield await _start_services(settings, db, engine, service_nursery)
                    service_nursery.cancel_scope.cancel()
                engine_nursery.cancel_scope.cancel()
            store_nursery.cancel_scope.cancel()


async def _start_services(settings: Settings, db: Database, engine: WasmEngine, nursery: trio.Nursery) -> Services:
    modules = await trio.to_thread.run_sync(ModuleCache, engine, settings.data_dir / "compile-cache")
    directory = Directory()
    events = EventHub(settings.events_queue_size)
    metrics = MetricsService(
        db, directory, events, sample_interval=settings.metrics_sample_interval, retention=settings.metrics_retention
    )
    messages = MessageService(db, directory, events, metrics, max_message_bytes=settings.limits_max_message_size)
    agent_settings = AgentSettings(
        policy=LimitPolicy(
            default_memory=settings.agents_default_memory,
            max_memory=settings.agents_max_memory,
            default_cpu=settings.agents_default_cpu,
            default_timeout=settings.agents_default_timeout,
            max_timeout=settings.agents_max_timeout,
            default_fuel=settings.runtime_fuel_per_message,
        ),
        inbox_size=settings.limits_inbox_size,
        send_limits=SendLimits(
            max_outgoing=settings.limits_max_outgoing_messages,
            max_message_bytes=settings.limits_max_message_size,
        ),
        restarts=RestartSettings(
            max_restarts=settings.supervision_max_restarts,
            window=settings.supervision_restart_window,
            backoff_initial=settings.supervision_backoff_initial,
            backoff_max=settings.supervision_backoff_max,
        ),
    )
    agents = AgentService(db, engine, modules, directory, messages, events, metrics, agent_settings)
    await nursery.start(agents.run)
    rollouts = Rollouts(agents)
    await rollouts.fail_interrupted()
    await nursery.start(metrics.run, agents.counts_by_status)
    limits = RequestLimits(
        max_module_size=settings.limits_max_module_size, max_request_size=settings.limits_max_request_size
    )
    rate_limits = build_rate_limiter(settings)
    return Services(agents=agents, messages=messages, events=events, metrics=metrics, rollouts=rollouts, limits=limits, rate_limits=rate_limits)


async def _run_http(
    app, settings: Settings, shutdown: trio.Event, events: EventHub, *, task_status: trio.TaskStatus[list[str]]
) -> None:
    config = hypercorn.config.Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.graceful_timeout = min(settings.shutdown_timeout, HTTP_DRAIN_SECONDS)
    config.accesslog = None
    config.errorlog = logging.getLogger("caxton.http")

    async def trigger() -> None:
        await shutdown.wait()
        # Hypercorn does not close WebSockets on shutdown; close them first, with code 1001.
        await events.close_all(timeout=HTTP_DRAIN_SECONDS)

    await hypercorn.trio.serve(app, config, shutdown_trigger=trigger, task_status=task_status)


async def run_until_signal(settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(lambda task_status: serve(settings, shutdown=shutdown, task_status=task_status))
            task_status.started(running)

            async def watch() -> None:
                async for received in signals:
                    logger.info("received %s; shutting down", signal.Signals(received).name)
                    shutdown.set()
                    return

            nursery.start_soon(watch)
            await shutdown.wait()
            # serve() returns by itself once every layer has stopped, so this deadline only bounds
            # a stop that hangs. It leaves room for the longest handler an agent may run, so the
            # store is never closed under an agent that is still committing.
            nursery.cancel_scope.deadline = (
                trio.current_time() + settings.shutdown_timeout + settings.agents_max_timeout + 10
            )


__all__ = ["Running", "run_services", "run_until_signal", "serve"]
