"""Gunicorn config for the image classifier:  gunicorn -c gunicorn_conf.py "app:create_app()"

Settings only. Every setting reads an environment variable through the app's own parser
(app.runtime.settings, the same as Config's) and falls back to the documented default; the
hooks live in app.runtime.hooks. The resolved values are logged once at start (`on_starting`).
"""

import gc
import os
import tempfile

from app.model.gpus import list_gpus
from app.runtime.cpus import available_cores
from app.runtime.hooks import Hooks
from app.runtime.malloc import limit_arenas
from app.runtime.settings import ServerSettings

S = ServerSettings.from_env()


def _cores():
    # Affinity (taskset, cpusets) and the cgroup CPU quota (a pod's limits.cpu); os.cpu_count()
    # would count the whole node (app/runtime/cpus.py).
    return available_cores()


#
# Server socket
#
#   bind - Where gunicorn listens. Loopback: nginx is the public face (port 8999).
#          Port 10086 is seed 001's. Use 0.0.0.0:10086 only without nginx in front.
#   backlog - Connections the kernel queues before accept; past it clients are refused.
#

bind = S.bind
backlog = S.backlog

#
# HTTP parsing limits
#
#   limit_request_line / limit_request_fields / limit_request_field_size - gunicorn's own
#          parser limits, set at least as loose as nginx's (nginx.conf,
#          large_client_header_buffers 4 8k: a request line or header of up to 8 KiB, 32 KiB in
#          all), so that whatever nginx passes on gunicorn accepts, and only nginx refuses,
#          in JSON. gunicorn's defaults (a 4094-byte line, 100 headers) answered its own HTML
#          400/431 behind nginx. 8190 is gunicorn's largest line limit; 32 KiB of headers holds
#          at most 8192 fields of 4 bytes, under its largest field count (32768).
#          tests/test_edge.py sends the largest request nginx takes, straight to gunicorn.
#   http_parser - gunicorn 25+ can parse with the gunicorn_h1c C extension ("auto" takes it
#          when installed). Pinned to the Python parser: on a 70 KB upload as nginx forwards
#          it, h1c 0.6.10 saved 35 us of 122 per request (scripts/bench_parser.py), under
#          0.3% of a request even at native bf16; and PyPI's newest h1c (0.6.10) predates the
#          0.6.14 gunicorn 27 asks for to accept and reject exactly what the Python parser
#          does. So one parser, whatever else is installed.
#

http_parser = "python"
limit_request_line = 8190
limit_request_fields = 8192 + 16  # + the headers nginx adds (X-Request-ID, X-Real-IP, ...)
limit_request_field_size = 8190 + 64  # nginx appends the client's address to X-Forwarded-For

#
# Worker processes
#
#   GPUS - Which GPUs to use: "0,1", "none", or empty for every GPU the driver lists.
#          Counted from /proc, never through CUDA: CUDA must not start in the master.
#   WORKERS_PER_GPU - Workers (model copies) per GPU, as easy-serve's ProcessPerGPU.
#   workers - Model copies. With GPUs: len(GPUS) x WORKERS_PER_GPU. On CPU:
#          cores / THREADS_PER_WORKER, cores being the CPU affinity capped by the cgroup
#          CPU quota (a container's --cpus, a pod's limits.cpu). Measured on 2 cores
#          (ResNet-18, c=8 through nginx): 2 workers x 1 torch thread = 48 req/s,
#          1 worker x 2 threads = 36-40 req/s, as one-thread workers need no OpenMP
#          barriers and overlap decoding with each other.
#          Preload keeps each extra worker cheap (docs/operations.md, "Memory").
#   THREADS_PER_WORKER - torch threads per CPU worker: 1 below 8 cores, else 4.
#   worker_class - gthread (default): threads decode uploads in parallel (Pillow releases
#          the GIL) while one of them runs the batched forward pass. gevent (seed 001) also
#          works: the forward pass runs in gevent's thread pool, so the hub keeps serving.
#   threads - Concurrent requests per gthread worker: a full queue, the running batch and
#          the next batch being decoded (MAX_QUEUE + 2 x MAX_BATCH_SIZE). Past that, a new
#          connection waits for a thread before it is admitted or refused with 503. With the
#          app's SHED_DELAY_MS this paces clients that retry at once: more threads refuse
#          sooner but more often, and refusals then take the CPU from the model (measured
#          trade-off in docs/performance.md, "Overload").
#   worker_connections - The same bound for gevent workers.
#   timeout - Seconds a silent worker lives before the master kills it. It covers model
#          start-up in the worker (seed 003: CRITICAL WORKER TIMEOUT with the 30 s default)
#          and the slowest batch. Keep nginx's proxy_read_timeout at least this large.
#   graceful_timeout - Seconds to finish in-flight requests on restart or stop.
#          supervisor.conf's stopwaitsecs must exceed it.
#   keepalive - Idle seconds on a kept-alive connection from a direct client. nginx opens a
#          new connection per request (see nginx.conf), so this only serves clients that
#          talk to gunicorn directly; short, so idle sockets don't pin worker threads.
#   max_requests / max_requests_jitter - Recycle a worker after this many requests (0 =
#          never); jitter spreads the restarts so workers don't all reload at once.
#   preload_app - Load the weights once in the master; workers share those pages
#          copy-on-write (seed 001: -w 4 loads the model four times). Each worker still
#          starts its own copy (threads, device, warm-up) after fork.
#

GPUS = list_gpus(S.gpus)
WORKERS_PER_GPU = S.workers_per_gpu
THREADS_PER_WORKER = S.threads_per_worker or (1 if _cores() < 8 else 4)
MAX_QUEUE = S.max_queue
# On CPU, batches of 4 let two half-batches alternate at c=8: one decodes while the other
# runs (48 req/s vs 45 with 8). A GPU wants large batches.
MAX_BATCH_SIZE = S.max_batch_size or (32 if GPUS else 4)

workers = S.workers or (len(GPUS) * WORKERS_PER_GPU if GPUS else max(1, _cores() // THREADS_PER_WORKER))
WORKER_CLASS = S.worker_class
# gthread is gunicorn's, with each response's headers and body in one send, so a worker
# killed mid-response never leaves nginx with headers only (app/runtime/workers.py).
worker_class = "app.runtime.workers.OneWriteThreadWorker" if WORKER_CLASS == "gthread" else WORKER_CLASS
threads = S.threads or MAX_QUEUE + 2 * MAX_BATCH_SIZE
worker_connections = S.worker_connections
timeout = S.timeout
graceful_timeout = S.graceful_timeout
keepalive = S.keepalive
max_requests = S.max_requests
max_requests_jitter = S.max_requests_jitter
preload_app = S.preload

# Settings the app reads. They are exported here because only this file knows the worker
# count: torch threads per worker = cores // workers, so workers x threads <= cores.
os.environ.setdefault("MAX_BATCH_SIZE", str(MAX_BATCH_SIZE))
if not GPUS:
    os.environ.setdefault("TORCH_THREADS", str(max(1, _cores() // workers)))
    os.environ.setdefault("OMP_NUM_THREADS", os.environ["TORCH_THREADS"])
# Metrics from every worker are summed at /metrics (prometheus_client's multiprocess mode).
# Each master gets its own directory of sample files (it must exist before the app is
# imported), removed at exit. A PROMETHEUS_MULTIPROC_DIR given from outside is emptied at
# start instead, so a previous run's counts don't leak into this one.
# gunicorn runs this file again on HUP: the directory it made on the first run stays its own
# (CLASSIFIER_METRICS_OWNER), and is not emptied then.
_OWN_METRICS_DIR = os.environ.get("CLASSIFIER_METRICS_OWNER") == str(os.getpid()) or not os.environ.get(
    "PROMETHEUS_MULTIPROC_DIR"
)
METRICS_DIR = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"classifier-metrics-{os.getpid()}")
)
os.makedirs(METRICS_DIR, exist_ok=True)
if _OWN_METRICS_DIR:
    os.environ["CLASSIFIER_METRICS_OWNER"] = str(os.getpid())
else:
    for _name in os.listdir(METRICS_DIR):
        if _name.endswith(".db"):
            os.remove(os.path.join(METRICS_DIR, _name))
# The master must not run the model (a forked OpenMP pool hangs workers): defer start-up.
os.environ["DEFER_START"] = "1"

#
# Control socket
#
#   CONTROL_SOCKET - gunicorn 25.1+ opens a Unix socket in the master for `gunicornc` (show
#          workers and stats, add or kill workers, reload, shut down). Off unless a path is
#          given: it is a second admin door beside supervisorctl and HUP, and its default
#          path ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/) lies on the image's read-only
#          root. In the image, CONTROL_SOCKET=/srv/run/gunicorn.ctl (the writable run volume).
#          The socket is 0600: only the server's user may connect.
#

control_socket_disable = not S.control_socket
if S.control_socket:
    control_socket = S.control_socket

#
# Logging
#
#   accesslog / errorlog - "-" is stdout/stderr; supervisord or Docker collects them.
#   access_log_format - Adds the request id (from the response, so an id the app generated
#          shows too) and the time taken (%(D)s, in µs). The app's own JSON line per request
#          (stage times, image sizes) goes to stderr; docs/operations.md, "Where the logs go".
#

accesslog = S.access_log
errorlog = S.error_log
loglevel = S.log_level
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(D)sus rid=%({x-request-id}o)s'

#
# Server hooks
#
#   on_starting - Log the resolved settings once.
#   on_reload - HUP: load and check the new weights in the master before any worker is
#          replaced; refused weights leave the old model serving (a metric counts them).
#   when_ready - The master has loaded the app: drop the live gauges the metric
#          definitions created for the master itself (it serves no requests).
#   pre_fork - In the master, just before each fork: freeze the GC (so collections in the
#          child don't write to shared pages), choose the worker's GPU, and count the fork
#          as a restart when it replaces a worker (its age exceeds the worker count).
#   post_fork - In the child: re-enable the GC and pin the worker to its GPU before any
#          CUDA call.
#   post_worker_init - The app is loaded: start the model here (threads, device, warm-up),
#          after gevent has patched threading; then this worker's gRPC listener (GRPC_BIND,
#          shared by the workers through SO_REUSEPORT; app/oip/grpc_server.py).
#   worker_exit - Stop the gRPC listener gracefully (graceful_timeout).
#   worker_abort - The worker hit `timeout`: say which requests it was serving.
#   child_exit - In the master, after a worker exits: drop its live gauges (queue depth,
#          memory...) from /metrics; its counters and histograms keep counting.
#   on_exit - Remove this server's metrics directory.
#

# Two malloc arenas (glibc), set in the master so every worker inherits it: with the default
# (8 x cores) worker memory kept growing under mixed uploads (app/runtime/malloc.py has the figures).
limit_arenas()  # MALLOC_ARENA_MAX in the environment overrides it

# Collections in the master would move objects between generations and dirty the pages
# the workers share; collect once after loading instead (pre_fork).
gc.disable()


_hooks = Hooks(
    GPUS,
    WORKERS_PER_GPU,
    WORKER_CLASS == "gevent",
    METRICS_DIR,
    _OWN_METRICS_DIR,
    f"bind={bind} workers={workers} worker_class={WORKER_CLASS} threads={threads} timeout={timeout}s "
    f"graceful_timeout={graceful_timeout}s preload={preload_app} gpus={GPUS or 'none'} "
    f"workers_per_gpu={WORKERS_PER_GPU} torch_threads={os.environ.get('TORCH_THREADS', 'auto')} "
    f"max_batch_size={MAX_BATCH_SIZE} max_queue={MAX_QUEUE} (per worker)",
)
on_starting = _hooks.on_starting
on_reload = _hooks.on_reload
when_ready = _hooks.when_ready
pre_fork = _hooks.pre_fork
post_fork = _hooks.post_fork
post_worker_init = _hooks.post_worker_init
worker_abort = _hooks.worker_abort
worker_exit = _hooks.worker_exit
child_exit = _hooks.child_exit
on_exit = _hooks.on_exit
