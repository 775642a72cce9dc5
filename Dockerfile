# One image for both services of docker-compose.yml: the simulator and the runner.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY backpack_actors ./backpack_actors
COPY examples ./examples
RUN python -m pip install .

# Non-root; the runner writes its JSON Lines under /data (a volume in docker-compose.yml).
RUN useradd --create-home --uid 10001 feed && mkdir -p /data && chown feed /data
USER feed

ENTRYPOINT ["python", "-m", "backpack_actors"]
CMD ["demo", "--duration", "10"]
