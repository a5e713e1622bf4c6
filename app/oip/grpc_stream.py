"""`ModelStreamInfer`: OIP requests and their answers on one bidirectional gRPC stream.

Each message is a request of its own to the gate, through the servicer's one `run` (counted,
logged, admitted or refused like a unary ModelInfer); the stream's key is checked once, from
its metadata, before any message is read. Answers come back in request order, and an error is
answered in-band (`error_message`, with the gRPC code in a `grpc_status` parameter), after which
the stream goes on, as Triton's does.

Back-pressure: at most WINDOW requests of a stream are read ahead and in flight. Past that,
the reader stops reading, so gRPC's flow control holds the client (its sends block) rather
than this worker buffering what it sends; and every request still meets the shared queue bound
and its overload answer. Open streams per worker are capped too (each holds threads for its
life), so streams x WINDOW messages stay within the unary RPC bound.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError

from app.core.errors import Unauthenticated
from app.core.guard import Operation, presented_key
from app.oip.grpc_proto import CODES, SC, metadata_of, pb

ENDPOINT = "grpc:ModelStreamInfer"
WINDOW = 4  # requests read ahead per stream: enough to fill a CPU batch by itself
# A stream that sends nothing for this long is ended (DEADLINE_EXCEEDED), before nginx's
# client_body_timeout would reset it with a bare RST_STREAM, which clients read as INTERNAL;
# an idle stream also gives its place back.
IDLE_S = 25.0
_END = object()


class Images:
    """The images a stream has in flight, at most `limit` (half the shared queue), so a lone
    stream of big requests is held back instead of refused by the queue bound it would fill
    itself; a request bigger than the limit goes alone."""

    def __init__(self, limit: int):
        self.limit, self.used, self.cond = limit, 0, threading.Condition()

    def take(self, n: int, stopped: threading.Event) -> bool:
        with self.cond:
            while self.used and self.used + n > self.limit:
                if stopped.is_set():
                    return False
                self.cond.wait(0.5)
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


def decoded(raw: bytes) -> tuple[object | None, int]:
    """The message, decoded once for both the budget and the answer, and how many images it
    carries (its first input's batch dimension); one that doesn't decode counts one, and its
    answer is the decode error."""
    try:
        request = pb.ModelInferRequest.FromString(raw)
    except DecodeError:
        return None, 1
    shape = list(request.inputs[0].shape) if request.inputs else []
    if not shape or request.inputs[0].datatype == "UINT8":
        return request, 1
    return request, max(1, int(shape[0]))


class Streams:
    def __init__(self, servicer, max_streams: int):
        self.servicer = servicer
        self.budget = max(1, servicer.api.clf.cfg.max_queue // 2)
        self.slots = threading.BoundedSemaphore(max_streams)
        # Each message: a ModelInferRequest, answered by the servicer's infer; the key was
        # checked for the whole stream, so none per message (op None).
        self.rpc = (pb.ModelInferRequest, None, servicer.infer)

    def __call__(self, messages: Iterator[bytes], context: grpc.ServicerContext) -> Iterator:
        metadata, gate = metadata_of(context), self.servicer.gate
        refusal = None
        try:  # the key first: a client without it learns nothing, not even that streams are full
            gate.authorize(Operation.PREDICT, presented_key(metadata.get))
        except Unauthenticated as exc:
            refusal = (CODES[exc.kind], exc.message)
        if refusal is None and not self.slots.acquire(blocking=False):
            refusal = (SC.RESOURCE_EXHAUSTED, "too many open inference streams on this worker; retry shortly")
        if refusal is not None:  # counted and logged by the gate like any refused request
            call = gate.begin(ENDPOINT, ENDPOINT, "POST", metadata.get("x-request-id"), metadata.get("x-real-ip"))
            gate.end(call, refusal[0].name)
            context.abort(*refusal)
        try:
            yield from self._pipeline(messages, metadata, context)
        finally:
            self.slots.release()

    def _pipeline(self, messages: Iterator[bytes], metadata: dict, context: grpc.ServicerContext) -> Iterator:
        answers: queue.Queue = queue.Queue()
        window, images = threading.BoundedSemaphore(WINDOW), Images(self.budget)
        stopped = threading.Event()
        pool = futures.ThreadPoolExecutor(WINDOW, thread_name_prefix="grpc-stream")

        def read() -> None:
            try:
                for raw in messages:
                    request, n = decoded(raw)
                    n = min(n, self.budget)
                    # Back-pressure: wait for answers to go out, by requests and by images.
                    while not window.acquire(timeout=0.5):
                        if stopped.is_set():
                            return
                    if not images.take(n, stopped) or stopped.is_set():
                        return
                    answers.put((n, pool.submit(self._one, raw, request, metadata)))
            except grpc.RpcError:  # the client went away mid-stream
                pass
            except RuntimeError:  # the pool was shut down between the check and the submit: the stream ended
                pass
            finally:
                answers.put(_END)

        threading.Thread(target=read, name="grpc-stream-reader", daemon=True).start()
        try:
            while True:
                try:
                    item = answers.get(timeout=IDLE_S)
                except queue.Empty:
                    context.abort(SC.DEADLINE_EXCEEDED, f"no request on this stream for {IDLE_S:g} s; open a new one")
                if item is _END:
                    return
                n, answer = item
                response = answer.result()
                images.give(n)
                window.release()
                yield response
        finally:
            stopped.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _one(self, raw: bytes, request, metadata: dict):
        out = self.servicer.run(ENDPOINT, metadata, raw, self.rpc, decoded=request)
        if out.code is SC.OK:
            return pb.ModelStreamInferResponse(infer_response=out.response)
        # In-band, with the request's id; the code rides in a parameter too (Triton's stream
        # has none), so a client can tell a refusal to retry (UNAVAILABLE) from a bad request.
        response = pb.ModelInferResponse(id=getattr(out.request, "id", ""))
        response.parameters["grpc_status"].string_param = out.code.name
        return pb.ModelStreamInferResponse(error_message=out.message, infer_response=response)
