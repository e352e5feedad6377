# The gateway and reconciler image: the runtime dependencies only (no Locust, no test tools).
# Redis and PostgreSQL run as their own services (see docker-compose.yml).
FROM python:3.11-slim

# FLASHSALE_RUN_DIR: the gateway's workers share their metrics through files under it
# (prometheus_client's multiprocess mode), and /app is not the unprivileged user's to write.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FLASHSALE_RUN_DIR=/tmp/flashsale
WORKDIR /app

COPY pyproject.toml README.md ./
COPY flashsale flashsale
COPY engine engine
COPY lua lua
COPY store store
COPY gateway gateway
COPY reconciler reconciler
COPY loadtests loadtests
# A numeric user: the runtime can check it is not root without reading /etc/passwd.
RUN pip install . && useradd --system --uid 10001 --no-create-home flashsale
USER 10001

# 8000: the gateway; 9102: the reconciler's metrics (docker-compose.yml runs both from here).
EXPOSE 8000 9102
HEALTHCHECK --interval=10s --timeout=2s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"]
CMD ["flashsale", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
