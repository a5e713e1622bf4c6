"""Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), one listener per worker.

Each gunicorn worker starts a grpcio server after fork (app.runtime.hooks), bound to
GRPC_BIND with SO_REUSEPORT, so the kernel spreads connections over the workers and each
request runs in the worker that owns the model copy, through the same batcher as HTTP.
Nothing of grpc is created before fork: grpcio can't survive a fork with live channels or
servers. nginx proxies the public :8001 (HTTP/2) to this loopback port.

A thin adapter around app.core.guard, like the HTTP doors: every RPC starts a call, has its
key checked for its operation (from `authorization: Bearer` or `x-api-key` metadata) before
its message is even decoded, and is counted and logged by the gate. Methods are registered
with raw-bytes deserialisers, so a message that doesn't decode is our INVALID_ARGUMENT, not
grpcio's INTERNAL. Domain errors map to status codes in `CODES`, the one table of this edge.
"""

from __future__ import annotations

import logging
import sys
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from app.core.errors import Kind, ServiceError, invalid
from app.core.guard import Call, Gate, Operation, presented_key
from app.oip.dataplane import OIP
from app.oip.grpc_codec import encode_grpc, parse_grpc

logger = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"


def _load_protos():
    """The messages and service from inference.proto, compiled at import by grpcio-tools."""
    here = str(Path(__file__).parent)
    sys.path.insert(0, here)  # protos_and_services resolves the file against sys.path
    try:
        return grpc.protos_and_services("inference.proto")
    finally:
        sys.path.remove(here)


pb, services = _load_protos()
SC = grpc.StatusCode
CODES = {
    Kind.INVALID: SC.INVALID_ARGUMENT,
    Kind.UNSUPPORTED: SC.INVALID_ARGUMENT,
    Kind.TOO_LARGE: SC.RESOURCE_EXHAUSTED,  # what grpcio itself answers for a message over its limit
    Kind.UNAUTHENTICATED: SC.UNAUTHENTICATED,
    Kind.NOT_FOUND: SC.NOT_FOUND,
    Kind.OVERLOADED: SC.UNAVAILABLE,  # the code clients retry (with the retry-after trailer)
    Kind.DEADLINE: SC.DEADLINE_EXCEEDED,
    Kind.NOT_READY: SC.UNAVAILABLE,
    Kind.INTERNAL: SC.INTERNAL,
}


class Servicer:
    """Each RPC: (request message, operation, answer(request, call) -> response message)."""

    def __init__(self, api: OIP, gate: Gate):
        self.api, self.gate = api, gate
        clf = api.clf
        self.rpcs = {
            "ServerLive": (pb.ServerLiveRequest, Operation.PROBE, lambda r, c: pb.ServerLiveResponse(live=True)),
            "ServerReady": (
                pb.ServerReadyRequest,
                Operation.PROBE,
                lambda r, c: pb.ServerReadyResponse(ready=clf.ready),
            ),
            "ModelReady": (pb.ModelReadyRequest, Operation.PROBE, self._model_ready),
            "ServerMetadata": (
                pb.ServerMetadataRequest,
                Operation.DESCRIBE,
                lambda r, c: pb.ServerMetadataResponse(**api.server_metadata()),
            ),
            "ModelMetadata": (pb.ModelMetadataRequest, Operation.DESCRIBE, self._model_metadata),
            "ModelConfig": (pb.ModelConfigRequest, Operation.DESCRIBE, self._model_config),
            "ModelInfer": (pb.ModelInferRequest, Operation.PREDICT, self._infer),
        }

    def _model_ready(self, request, call: Call):
        self.api.check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.api.clf.ready)

    def _model_metadata(self, request, call: Call):
        self.api.check_model(request.name, request.version)
        return pb.ModelMetadataResponse(**self.api.model_metadata())

    def _model_config(self, request, call: Call):
        self.api.check_model(request.name, request.version)
        return pb.ModelConfigResponse(config=pb.ModelConfig(**self.api.model_config()))

    def _infer(self, request, call: Call):
        api = self.api
        api.check_model(request.model_name, request.model_version)
        with self.gate.serving(call) as stats:
            parsed = parse_grpc(request)
            outputs = api.infer(parsed, stats)
        return encode_grpc(pb.ModelInferResponse(), parsed, api.name, api.version, outputs)

    def serve(self, method: str, raw: bytes, context: grpc.ServicerContext):
        message, op, answer = self.rpcs[method]
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        endpoint = f"grpc:{method}"
        call = self.gate.begin(
            endpoint, endpoint, "POST", metadata.get("x-request-id"), metadata.get("x-real-ip"), len(raw)
        )
        code = SC.UNKNOWN  # until an answer or a mapped error says otherwise
        try:
            context.send_initial_metadata((("x-request-id", call.request_id),))
            self.gate.authorize(op, presented_key(metadata.get))  # before the message is decoded
            try:
                request = message.FromString(raw)
            except DecodeError:
                raise invalid(f"the {message.DESCRIPTOR.name} message does not decode") from None
            response = answer(request, call)
            code = SC.OK
            return response
        except ServiceError as exc:
            code = CODES[exc.kind]
            if exc.retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(exc.retry_after)),))
            context.abort(code, exc.message)
        except Exception:
            code = SC.INTERNAL
            logger.exception("unhandled error in gRPC %s, request %s", method, call.request_id)
            context.abort(code, f"internal server error; request id {call.request_id}")
        finally:
            self.gate.end(call, code.name)

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(method: str):
            return grpc.unary_unary_rpc_method_handler(
                lambda raw, context: self.serve(method, raw, context),
                request_deserializer=None,  # raw bytes: decoding is ours (see `serve`)
                response_serializer=lambda response: response.SerializeToString(),
            )

        return grpc.method_handlers_generic_handler(SERVICE, {method: unary(method) for method in self.rpcs})


def start(api: OIP, gate: Gate, bind: str, threads: int, max_message: int) -> grpc.Server:
    """A listener in this worker; several workers share `bind` through SO_REUSEPORT."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        maximum_concurrent_rpcs=threads,  # past it: RESOURCE_EXHAUSTED, like the HTTP queue's 503
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
        ],
    )
    server.add_generic_rpc_handlers((Servicer(api, gate).handler(),))
    if server.add_insecure_port(bind) == 0:
        raise OSError(f"gRPC could not bind {bind} (GRPC_BIND)")
    server.start()
    return server
