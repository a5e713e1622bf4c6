"""Gunicorn config for the image classifier:  gunicorn -c gunicorn_conf.py "app:create_app()"

Every setting reads an environment variable and falls back to the documented default.
The resolved values are logged once at start (see `on_starting`).
"""

import gc
import os
import shutil
import tempfile

from app.cpus import available_cores
from app.gpus import list_gpus, pick_gpu
from app.malloc import limit_arenas


def _env(name, default, cast=str):
    raw = os.environ.get(name, "")
    return cast(raw) if raw.strip() else default


def _flag(name, default):
    return _env(name, default, lambda v: v.strip().lower() in ("1", "true", "yes", "on"))


def _cores():
    # Affinity (taskset, cpusets) and the cgroup CPU quota (a pod's limits.cpu); os.cpu_count()
    # would count the whole node (app/cpus.py).
    return available_cores()


#
# Server socket
#
#   bind - Where gunicorn listens. Loopback: nginx is the public face (port 8999).
#          Port 10086 is seed 001's. Use 0.0.0.0:10086 only without nginx in front.
#   backlog - Connections the kernel queues before accept; past it clients are refused.
#

bind = _env("BIND", "127.0.0.1:10086")
backlog = _env("BACKLOG", 2048, int)

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
#          Preload keeps each extra worker cheap (README, "Memory").
#   THREADS_PER_WORKER - torch threads per CPU worker: 1 below 8 cores, else 4.
#   worker_class - gthread (default): threads decode uploads in parallel (Pillow releases
#          the GIL) while one of them runs the batched forward pass. gevent (seed 001) also
#          works: the forward pass runs in gevent's thread pool, so the hub keeps serving.
#   threads - Concurrent requests per gthread worker: a full queue, the running batch and
#          the next batch being decoded (MAX_QUEUE + 2 x MAX_BATCH_SIZE). Past that, a new
#          connection waits for a thread before it is admitted or refused with 503. With the
#          app's SHED_DELAY_MS this paces clients that retry at once: more threads refuse
#          sooner but more often, and refusals then take the CPU from the model (measured
#          trade-off in README, "Overload").
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

GPUS = list_gpus(os.environ.get("GPUS", ""))
WORKERS_PER_GPU = _env("WORKERS_PER_GPU", 1, int)
THREADS_PER_WORKER = _env("THREADS_PER_WORKER", 1 if _cores() < 8 else 4, int)
MAX_QUEUE = _env("MAX_QUEUE", 64, int)
# On CPU, batches of 4 let two half-batches alternate at c=8: one decodes while the other
# runs (48 req/s vs 45 with 8). A GPU wants large batches.
MAX_BATCH_SIZE = _env("MAX_BATCH_SIZE", 32 if GPUS else 4, int)

workers = _env("WORKERS", len(GPUS) * WORKERS_PER_GPU if GPUS else max(1, _cores() // THREADS_PER_WORKER), int)
WORKER_CLASS = _env("WORKER_CLASS", "gthread")
# gthread is gunicorn's, with a graceful stop that serves connections it already accepted
# (app/workers.py: the stock one reset them, and a HUP reload lost requests).
worker_class = "app.workers.DrainingThreadWorker" if WORKER_CLASS == "gthread" else WORKER_CLASS
threads = _env("THREADS", MAX_QUEUE + 2 * MAX_BATCH_SIZE, int)
worker_connections = _env("WORKER_CONNECTIONS", 1000, int)
timeout = _env("TIMEOUT", 120, int)
graceful_timeout = _env("GRACEFUL_TIMEOUT", 30, int)
keepalive = _env("KEEPALIVE", 5, int)
max_requests = _env("MAX_REQUESTS", 0, int)
max_requests_jitter = _env("MAX_REQUESTS_JITTER", 0, int)
preload_app = _flag("PRELOAD", True)

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
# Logging
#
#   accesslog / errorlog - "-" is stdout/stderr; supervisord or Docker collects them.
#   access_log_format - Adds the request id (from the response, so an id the app generated
#          shows too) and the time taken (%(D)s, in µs). The app's own JSON line per request
#          (stage times, image sizes) goes to stderr; README, "Operating it".
#

accesslog = _env("ACCESS_LOG", "-")
errorlog = _env("ERROR_LOG", "-")
loglevel = _env("LOG_LEVEL", "info")
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
#          shared by the workers through SO_REUSEPORT; app/protocols/grpc_server.py).
#   worker_exit - Stop the gRPC listener gracefully (graceful_timeout).
#   worker_abort - The worker hit `timeout`: say which requests it was serving.
#   child_exit - In the master, after a worker exits: drop its live gauges (queue depth,
#          memory...) from /metrics; its counters and histograms keep counting.
#   on_exit - Remove this server's metrics directory.
#

# Two malloc arenas (glibc), set in the master so every worker inherits it: with the default
# (8 x cores) worker memory kept growing under mixed uploads (app/malloc.py has the figures).
limit_arenas()  # MALLOC_ARENA_MAX in the environment overrides it

# Collections in the master would move objects between generations and dirty the pages
# the workers share; collect once after loading instead (pre_fork).
gc.disable()


def on_starting(server):
    server.log.info(
        "settings: bind=%s workers=%d worker_class=%s threads=%d timeout=%ds graceful_timeout=%ds "
        "preload=%s gpus=%s workers_per_gpu=%d torch_threads=%s max_batch_size=%s max_queue=%d (per worker)",
        bind,
        workers,
        WORKER_CLASS,
        threads,
        timeout,
        graceful_timeout,
        preload_app,
        GPUS or "none",
        WORKERS_PER_GPU,
        os.environ.get("TORCH_THREADS", "auto"),
        MAX_BATCH_SIZE,
        MAX_QUEUE,
    )


def on_reload(server):
    """HUP: load and check the weights at MODEL_WEIGHTS in the master, then let the new workers
    fork from them (gunicorn would otherwise fork them from the app it preloaded at start).

    gunicorn then starts the new generation and stops the old one gracefully: old workers
    finish their in-flight requests, new ones warm up (post_worker_init) before they accept.
    Weights that fail to load are refused: the old workers are kept, still serving.
    """
    from app import create_app
    from app.config import Config, ConfigError
    from app.metrics import RELOADS

    old = server.app.callable
    if old is None or not preload_app:
        return  # without preload every worker loads the app itself
    was = old.extensions["classifier"].info
    gc.unfreeze()  # let the old generation's objects be collected once unreferenced
    try:
        new = create_app(Config.from_env())
    except (ConfigError, OSError, RuntimeError) as exc:
        RELOADS.labels("refused").inc()
        server.log.error("reload refused, still serving version %s (%s): %s", was["version"], was["weights"], exc)
        # No new generation: gunicorn spawns cfg.workers after this hook, and the old workers
        # stay (the next HUP reads the setting afresh).
        server.cfg.set("workers", 0)
        return
    server.app.callable = new
    now = new.extensions["classifier"].info
    RELOADS.labels("done").inc()
    server.log.info("reloaded: version %s -> %s (%s)", was["version"], now["version"], now["weights"])
    server.reload_forks = server.cfg.workers
    del old
    gc.collect()


def when_ready(server):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid(), METRICS_DIR)


def pre_fork(server, worker):
    gc.collect()
    gc.freeze()
    if getattr(server, "reload_forks", 0) > 0:
        server.reload_forks -= 1  # a new generation after HUP, not a replacement for a crash
    elif worker.age > server.num_workers:
        from app.metrics import WORKER_RESTARTS

        WORKER_RESTARTS.inc()
    if GPUS:
        live = [getattr(w, "gpu", None) for w in server.WORKERS.values()]
        worker.gpu = pick_gpu(GPUS, live, WORKERS_PER_GPU)


def post_fork(server, worker):
    gc.enable()
    gpu = getattr(worker, "gpu", None)
    if gpu is not None:
        # Only this GPU is visible to the worker, as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    server.log.info("worker %s forked, gpu=%s", worker.pid, "none" if gpu is None else gpu)


def post_worker_init(worker):
    app = worker.wsgi
    app.extensions["classifier"].start()
    cfg = app.extensions["classifier"].cfg
    if cfg.grpc_bind:
        # grpc is first imported here, in the worker: nothing of it may exist before fork.
        from app.protocols.grpc_server import start

        if WORKER_CLASS == "gevent":
            import grpc.experimental.gevent

            grpc.experimental.gevent.init_gevent()  # grpc's threads cooperate with the hub
        # As many RPC threads as gthread has request threads (`threads` above): the same bound.
        worker.grpc_server = start(app.extensions["oip"], cfg.grpc_bind, threads, cfg.max_upload_bytes + 65536)
    worker.log.info("worker %s ready%s", worker.pid, f", gRPC on {cfg.grpc_bind}" if cfg.grpc_bind else "")


def worker_abort(worker):
    from app.routes import in_flight

    worker.log.error("worker %s timed out (timeout=%ds) serving: %s", worker.pid, timeout, in_flight() or "no request")


def worker_exit(server, worker):
    grpc_server = getattr(worker, "grpc_server", None)
    if grpc_server is not None:
        grpc_server.stop(graceful_timeout).wait()  # finish in-flight RPCs, like HTTP requests
    server.log.info("worker %s exited", worker.pid)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, METRICS_DIR)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
