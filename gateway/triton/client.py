"""TritonControl: the control plane (load, unload, metadata, index) on one gRPC channel."""

from __future__ import annotations

from typing import Any

import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

from gateway.triton.errors import map_control_errors, map_load_errors

# After a Triton restart the channel must reconnect within moments, not gRPC's default
# backoff of up to two minutes.
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class TritonControl:
    def __init__(self, target: str) -> None:
        self._client = grpcclient.InferenceServerClient(url=target, channel_args=_CHANNEL_ARGS)

    async def load(self, name: str, config: str | None = None, shown: str = "") -> None:
        """Load (or reload, with ``config`` a JSON ModelConfig override) a model; errors name
        it ``shown`` (as the client did), logs by its Triton name."""
        with map_load_errors(name, shown or name):
            await self._client.load_model(name, config=config)

    async def unload(self, name: str) -> None:
        with map_control_errors():
            await self._client.unload_model(name)

    async def metadata(self, name: str) -> dict[str, Any]:
        with map_control_errors():
            result: dict[str, Any] = await self._client.get_model_metadata(name, as_json=True)
            return result

    async def config(self, name: str) -> dict[str, Any]:
        with map_control_errors():
            result: dict[str, Any] = await self._client.get_model_config(name, as_json=True)
            return dict(result.get("config", {}))

    async def model_ready(self, name: str) -> bool:
        with map_control_errors():
            return bool(await self._client.is_model_ready(name, client_timeout=5.0))

    async def repository_index(self) -> list[dict[str, Any]]:
        with map_control_errors():
            result: dict[str, Any] = await self._client.get_model_repository_index(as_json=True)
            return list(result.get("models", []))

    async def queue_stats(self) -> dict[str, tuple[int, int, int]]:
        """Per model: (successful requests, total queue ns, total compute ns), cumulative."""
        with map_control_errors():
            result: dict[str, Any] = await self._client.get_inference_statistics(as_json=True)
        stats: dict[str, tuple[int, int, int]] = {}
        for model in result.get("model_stats", []):
            inference = model.get("inference_stats", {})
            count = int(inference.get("success", {}).get("count", 0))
            queue = int(inference.get("queue", {}).get("ns", 0))
            compute = int(inference.get("compute_infer", {}).get("ns", 0))
            previous = stats.get(model["name"], (0, 0, 0))
            stats[model["name"]] = (previous[0] + count, previous[1] + queue, previous[2] + compute)
        return stats

    async def is_ready(self) -> bool:
        with map_control_errors():
            return bool(await self._client.is_server_ready(client_timeout=2.0))

    async def close(self) -> None:
        await self._client.close()
