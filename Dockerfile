# The gateway and reconciler image: the runtime dependencies only (no Locust, no test tools).
# Redis and PostgreSQL run as their own services (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY flashsale flashsale
COPY engine engine
COPY lua lua
COPY store store
COPY gateway gateway
COPY reconciler reconciler
COPY loadtests loadtests
RUN pip install . && useradd --system flashsale
USER flashsale

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["flashsale", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
