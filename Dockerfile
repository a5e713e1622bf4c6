# Image classifier: nginx :8999 -> gunicorn -> Flask, kept alive by supervisord.
#
#   docker build -t classifier .                                  # CPU torch, ImageNet ResNet-50
#   docker build --build-arg TORCH_VARIANT=cuda -t classifier .   # CUDA torch (run with --gpus all)
#   docker build --build-arg FETCH_WEIGHTS=skip -t classifier .    # no download; mount or COPY weights
#   docker run -p 8999:8999 classifier
#
# A local checkpoint: put it in weights/ before building (weights/ is copied in), then run with
#   -e MODEL_WEIGHTS=weights/voc.pth -e MODEL_LABELS=class_name.json -e MODEL_TASK=multilabel
FROM python:3.11-slim

# cpu: PyTorch's CPU-only wheels (about 1 GB smaller); cuda: PyPI's default CUDA build.
ARG TORCH_VARIANT=cpu
# imagenet: fetch torchvision's weights for MODEL_ARCH at build time; skip: don't.
ARG FETCH_WEIGHTS=imagenet
ARG MODEL_ARCH=resnet50

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    MODEL_ARCH=${MODEL_ARCH} \
    BIND=127.0.0.1:10086

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
RUN if [ "$FETCH_WEIGHTS" = "imagenet" ]; then python -m app.weights fetch "$MODEL_ARCH"; fi

# Run as an unprivileged user: nginx listens on 8999 (>1024) and writes only under run/.
RUN useradd --create-home --uid 10001 app \
    && mkdir -p run/nginx/logs \
    && chown -R app:app run weights
USER 10001:10001

EXPOSE 8999

# Healthy only once a worker has loaded and warmed the model (GET /ready through nginx).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8999/ready', timeout=4)"]

# supervisord in the foreground as PID 1's child: it restarts gunicorn or nginx if they die.
CMD ["supervisord", "-n", "-c", "/srv/supervisor.conf"]
