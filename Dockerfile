# Image classifier: nginx :8999 -> gunicorn -> Flask, kept alive by supervisord.
#
#   docker build -t classifier .                                   # ImageNet ResNet-50 baked in
#   docker build --build-arg FETCH_WEIGHTS=skip -t classifier .    # no download; mount weights
#   docker run -p 8999:8999 classifier
#   make image                                                     # the same with podman (scripts/image.sh)
#
# A local checkpoint, mounted read-only (the tests run exactly this):
#   docker run -p 8999:8999 -v $PWD/weights/voc.pth:/weights/voc.pth:ro \
#     -e MODEL_WEIGHTS=/weights/voc.pth -e MODEL_LABELS=class_name.json -e MODEL_TASK=multilabel classifier
# It also runs with a read-only root filesystem: --read-only --tmpfs /srv/run --tmpfs /tmp.

# The official image for users. Hosts that can't reach a registry pass a local stand-in
# (scripts/base_image.sh makes one offline from Debian bookworm's Python 3.11).
ARG BASE_IMAGE=python:3.11-slim
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}

# cuda: PyPI's torch, a CUDA build that also runs on the CPU (the pair the tests run; about
# 6 GB). cpu: PyTorch's CPU-only wheels, about 1 GB smaller, from download.pytorch.org.
ARG TORCH_VARIANT=cuda
# imagenet: fetch torchvision's weights for MODEL_ARCH at build time; skip: don't.
ARG FETCH_WEIGHTS=imagenet
ARG MODEL_ARCH=resnet50

# PIP_CERT: pip trusts the system bundle, so certificates added below count for it too.
# BIND: gunicorn stays on loopback; nginx (8999, proxying to BACKENDS) is the only public port.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PATH=/opt/venv/bin:$PATH \
    MODEL_ARCH=${MODEL_ARCH} \
    BIND=127.0.0.1:10086 \
    BACKENDS=127.0.0.1:10086

# Extra CA certificates (certs/*.crt), e.g. a TLS-intercepting proxy's, trusted by the
# build's pip and by the running server. An empty certs/ changes nothing.
COPY certs/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates

# nginx from Debian; supervisor comes from requirements.txt, pinned with the rest.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv

# Dependencies before code: this layer (several GB) is rebuilt only when requirements change.
COPY requirements.txt .
RUN python -m venv /opt/venv \
    && if [ "$TORCH_VARIANT" = "cpu" ]; then \
         pip install --index-url https://download.pytorch.org/whl/cpu \
           "$(grep '^torch==' requirements.txt)" "$(grep '^torchvision==' requirements.txt)"; \
       fi \
    && pip install -r requirements.txt

COPY app/ app/
COPY weights/ weights/
COPY gunicorn_conf.py supervisor.conf nginx.conf class_name.json ./

# Weights are baked into the image so containers start without network access.
RUN if [ "$FETCH_WEIGHTS" = "imagenet" ]; then python -m app.model.weights fetch "$MODEL_ARCH"; fi

# An unprivileged, numeric user (Kubernetes' runAsNonRoot can check a number, not a name).
# Everything nginx, supervisord and gunicorn write goes under /srv/run (sockets, pids, logs,
# nginx's temp files) or /tmp (gunicorn heartbeats, metrics): the only two paths that must be
# writable, so the root filesystem can be mounted read-only with these two as volumes.
RUN useradd --create-home --uid 10001 app \
    && mkdir -p run \
    && chown -R app:app run weights
USER 10001:10001

# 8999: HTTP (the seed API and the Open Inference Protocol); 8001: OIP over gRPC (Triton's port).
EXPOSE 8999 8001

# Healthy only once a worker has loaded and warmed the model (GET /ready through nginx).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8999/ready', timeout=4)"]

# supervisord in the foreground as PID 1: it reaps orphans, restarts gunicorn or nginx if they
# die, and on SIGTERM stops both gracefully.
CMD ["supervisord", "-n", "-c", "/srv/supervisor.conf"]
