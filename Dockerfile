# otel-ai: one image for `serve`, `slack`, `db migrate` and the CLI.
# Slim Debian base, CPU-only torch from the PyTorch CPU index, a non-root user, data on /data.
#   docker build -t otel-ai .
#   docker run -p 8000:8000 -p 4317:4317 -p 4318:4318 -v otel-ai-data:/data otel-ai
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU wheel index: the default index would pull CUDA builds (gigabytes).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY otel_ai ./otel_ai
COPY store ./store
COPY schema ./schema
COPY ingest ./ingest
COPY anomaly ./anomaly
COPY tools ./tools
COPY agent ./agent
COPY prompts ./prompts
COPY chat ./chat
COPY sim ./sim
COPY evals ./evals
# constraints pin every other dependency; torch is already satisfied by the CPU build above.
RUN pip install -c constraints.txt . && python -c "import torch; assert not torch.cuda.is_available()"

FROM ${PYTHON_IMAGE}
# WITH_CHROMIUM=1 adds Debian's chromium so charts can be rendered to PNG (kaleido) for Slack.
ARG WITH_CHROMIUM=0
RUN if [ "$WITH_CHROMIUM" = "1" ]; then \
      apt-get update && apt-get install -y --no-install-recommends chromium && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 otelai \
 && useradd --system --uid 10001 --gid otelai --home-dir /home/otelai --create-home otelai \
 && mkdir -p /data && chown otelai:otelai /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OTEL_AI_CLICKHOUSE_URL=chdb:///data \
    OTEL_AI_HOST=0.0.0.0
USER otelai
WORKDIR /home/otelai
VOLUME ["/data"]
EXPOSE 8000 4317 4318
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["otel-ai"]
CMD ["serve"]
