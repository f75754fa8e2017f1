"""REST routes under /api/v1. Each route parses the request and calls one service."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, current_app, g, jsonify, request

from caxton.domain.errors import InvalidRequest, PayloadTooLarge
from caxton.domain.messages import loads_strict
from caxton.services.container import Services
from caxton.services.metrics import PERFORMANCE_FIELDS

blueprint = Blueprint("rest", __name__)


def _services() -> Services:
    return current_app.extensions["caxton.services"]


async def _json_body(*, allow_empty: bool) -> tuple[Any, int]:
    """Read the body as JSON whatever its Content-Type (curl -d sends a form type)."""
    limit = _services().limits.max_request_size
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes, over the {limit}-byte limit")
    data = await request.get_data(cache=False)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is {len(data)} bytes, over the {limit}-byte limit")
    if not data.strip():
        if allow_empty:
            return None, 0
        raise InvalidRequest("body", "missing; send a JSON object")
    try:
        return loads_strict(data), len(data)
    except ValueError as exc:
        raise InvalidRequest("body", f"invalid JSON: {exc}") from None


def _bool_param(name: str) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return False
    if raw.lower() in {"true", "1", "yes"}:
        return True
    if raw.lower() in {"false", "0", "no"}:
        return False
    raise InvalidRequest(name, f"expected true or false, got {raw[:32]!r}")


def _reject_unknown_params(*allowed: str) -> None:
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown query parameter; allowed: {', '.join(allowed) or 'none'}")


@blueprint.post("/agents")
async def deploy_agent() -> tuple[Response, int]:
    content_type = request.mimetype
    if content_type != "multipart/form-data":
        raise InvalidRequest(
            "Content-Type", f"expected multipart/form-data with a 'wasm' file part, got {content_type or 'none'!r}"
        )
    files = await request.files
    form = await request.form
    upload = files.get("wasm")
    if upload is None:
        raise InvalidRequest("wasm", "missing file part; send the module with -F wasm=@agent.wasm")
    wasm = upload.read()
    limit = _services().limits.max_module_size
    if len(wasm) > limit:
        raise PayloadTooLarge(f"module is {len(wasm)} bytes, over the {limit}-byte limit (limits.max_module_size)")
    config = _config_part(form, files)
    result = await _services().agents.deploy(wasm, filename=upload.filename, config=config)
    return jsonify(result), 201


def _config_part(form: Any, files: Any) -> Any:
    raw = form.get("config")
    if raw is None and files.get("config") is not None:
        raw = files["config"].read().decode("utf-8", "replace")
    if raw is None or not raw.strip():
        return None
    try:
        return loads_strict(raw)
    except ValueError as exc:
        raise InvalidRequest("config", f"invalid JSON: {exc}") from None


@blueprint.get("/agents")
async def list_agents() -> Response:
    _reject_unknown_params("status", "limit", "offset")
    agents, total = await _services().agents.list(
        status=request.args.get("status"), limit=request.args.get("limit"), offset=request.args.get("offset")
    )
    return jsonify({"agents": agents, "total": total})


@blueprint.get("/agents/<agent_id>")
async def get_agent(agent_id: str) -> Response:
    return jsonify(await _services().agents.get(agent_id))


@blueprint.put("/agents/<agent_id>")
async def update_agent(agent_id: str) -> tuple[Response, int]:
    """Roll out new config and/or a new module: JSON, or multipart with a `wasm` part."""
    wasm = None
    if request.mimetype == "multipart/form-data":
        files = await request.files
        form = await request.form
        upload = files.get("wasm")
        if upload is not None:
            wasm = upload.read()
            limit = _services().limits.max_module_size
            if len(wasm) > limit:
                raise PayloadTooLarge(f"module is {len(wasm)} bytes, over the {limit}-byte limit")
        unknown = sorted((set(form) | set(files)) - {"wasm", "config", "strategy", "version"})
        if unknown:
            raise InvalidRequest(unknown[0], "unknown form field; allowed: wasm, config, strategy, version")
        fields = {"config": _config_part(form, files), "strategy": form.get("strategy"), "version": form.get("version")}
    else:
        body, _ = await _json_body(allow_empty=False)
        if not isinstance(body, dict):
            raise InvalidRequest("body", "expected a JSON object with config, strategy or version")
        unknown = sorted(set(body) - {"config", "strategy", "version"})
        if unknown:
            raise InvalidRequest(unknown[0], "unknown field; allowed: config, strategy, version")
        fields = {key: body.get(key) for key in ("config", "strategy", "version")}
    if wasm is None and fields["config"] is None and fields["version"] is None:
        raise InvalidRequest("body", "nothing to update: send config, version or a wasm part")
    result = await _services().rollouts.update(
        agent_id, wasm=wasm, config_patch=fields["config"], strategy=fields["strategy"], version=fields["version"]
    )
    return jsonify(result), 202


@blueprint.post("/agents/<agent_id>/stop")
async def stop_agent(agent_id: str) -> Response:
    body, _ = await _json_body(allow_empty=True)
    return jsonify(await _services().agents.stop(agent_id, body))


@blueprint.post("/agents/<agent_id>/start")
async def start_agent(agent_id: str) -> Response:
    body, _ = await _json_body(allow_empty=True)
    if body not in (None, {}):
        raise InvalidRequest("body", "start takes no fields; send {} or nothing")
    return jsonify(await _services().agents.start(agent_id))


@blueprint.delete("/agents/<agent_id>")
async def remove_agent(agent_id: str) -> Response:
    _reject_unknown_params("force")
    return jsonify(await _services().agents.remove(agent_id, force=_bool_param("force")))


@blueprint.post("/messages")
async def send_message() -> Response:
    body, size = await _json_body(allow_empty=False)
    receipt = await _services().messages.send(body, size=size, client_identity=g.principal.identity)
    return jsonify(receipt.to_json())


@blueprint.get("/messages")
async def message_history() -> Response:
    _reject_unknown_params("conversation_id", "sender", "receiver", "since", "limit", "offset")
    args = request.args
    messages, total = await _services().messages.history(
        conversation_id=args.get("conversation_id"),
        sender=args.get("sender"),
        receiver=args.get("receiver"),
        since=args.get("since"),
        limit=args.get("limit"),
        offset=args.get("offset"),
    )
    return jsonify({"messages": messages, "total": total})


@blueprint.get("/metrics/system")
async def system_metrics() -> Response:
    _reject_unknown_params("period")
    services = _services()
    snapshot = services.metrics.system_snapshot(await services.agents.counts_by_status())
    period = request.args.get("period")
    if period is not None:
        snapshot.update(await services.metrics.history("system", period))
    return jsonify(snapshot)


# Field subsets for `GET /metrics/agents/{id}?type=...`; `all` returns every field.
_AGENT_METRIC_TYPES = {
    "performance": PERFORMANCE_FIELDS,
    "resources": ("agent_id", "cpu_usage", "cpu_seconds_total", "memory_usage_mb", "queue_size"),
}


@blueprint.get("/metrics/agents/<agent_id>")
async def agent_metrics(agent_id: str) -> Response:
    _reject_unknown_params("period", "type")
    kind = request.args.get("type", "all")
    if kind != "all" and kind not in _AGENT_METRIC_TYPES:
        raise InvalidRequest("type", f"unknown metrics type {kind[:32]!r}; use all, {', '.join(_AGENT_METRIC_TYPES)}")
    services = _services()
    snapshot = await services.agents.metrics_for(agent_id)
    if kind != "all":
        snapshot = {field: snapshot[field] for field in _AGENT_METRIC_TYPES[kind]}
    period = request.args.get("period")
    if period is not None:
        history = await services.metrics.history(snapshot["agent_id"], period)
        if kind != "all":
            fields = ("timestamp", *_AGENT_METRIC_TYPES[kind])
            history["samples"] = [{k: v for k, v in sample.items() if k in fields} for sample in history["samples"]]
        snapshot.update(history)
    return jsonify(snapshot)
