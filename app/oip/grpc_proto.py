"""inference.proto's messages and service, compiled at import by grpcio-tools, and the gRPC
edge's one error table: domain error kinds -> status codes."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc

from app.core.errors import Kind

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


def metadata_of(context: grpc.ServicerContext) -> dict[str, str]:
    """A call's text metadata (keys arrive lowercase); binary entries are left out."""
    return {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
