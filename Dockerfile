# Parley in a container: CPU by default. A later issue fills in the GPU image and compose file.
# Build: docker build -t parley .   Run: docker run -p 8000:8000 parley
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends make espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml constraints.txt requirements-models.txt Makefile README.md ./
COPY voice ./voice
COPY agents ./agents
COPY clients ./clients
ENV PARLEY_HOME=/models
RUN make setup

EXPOSE 8000
CMD [".venv/bin/parley", "serve", "--host", "0.0.0.0", "--port", "8000"]
