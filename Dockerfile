# The slidr worker image for docker-compose.yml: the streaming path only (no torch).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY slidr slidr
COPY streams streams
COPY models models
COPY calibration calibration
COPY guardrails guardrails
COPY replay replay
RUN pip install --no-cache-dir -c constraints.txt .
ENTRYPOINT []
