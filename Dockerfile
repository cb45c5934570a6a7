# claude-server with the pinned Claude Code CLI.
#
#   docker build -t claude-server .
#   docker run -p 3000:3000 -e ANTHROPIC_API_KEY -e CLAUDE_SERVER_API_KEYS=... claude-server
#
# The CLI comes from the project's own package.json/package-lock.json (npm ci), the server from
# its wheel; it runs as an unprivileged user. Everything that must outlive the container is
# under the two volumes: /data (sessions.db and the workspaces) and /home/claude/.claude (the
# CLI's configuration directory: the transcripts that resuming a session needs, agents, skills,
# settings, and the CLI's login when no API key is given).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS cli
WORKDIR /cli
COPY package.json package-lock.json ./
# Only the CLI: the development packages (test clients, web libraries kept in the wheel already)
# stay out.
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY claude_server ./claude_server
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps -w /dist .

FROM ${PYTHON_IMAGE}
# git and ripgrep are tools the CLI uses in a workspace; tini forwards signals and reaps the
# processes the CLI's tools leave behind.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git ripgrep tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /dist/ /tmp/dist/
# With the PostgreSQL driver, so that CLAUDE_SERVER_DB may be a postgresql:// URL.
RUN pip install --no-cache-dir "$(ls /tmp/dist/*.whl)[postgres]" && rm -rf /tmp/dist
# The CLI is a native binary: it needs no Node.js at run time.
COPY --from=cli /cli/node_modules/@anthropic-ai/ /opt/claude-code/@anthropic-ai/
RUN ln -s /opt/claude-code/@anthropic-ai/claude-code/bin/claude.exe /usr/local/bin/claude \
    && claude --version
RUN useradd --create-home --uid 10001 claude \
    && mkdir -p /data /home/claude/.claude \
    && chown claude:claude /data /home/claude/.claude
USER claude
WORKDIR /home/claude
# Inside a container the server must listen on every address; it then refuses to start
# without CLAUDE_SERVER_API_KEYS (or CLAUDE_SERVER_INSECURE_NO_AUTH=true, for a private network).
ENV CLAUDE_SERVER_DATA_DIR=/data \
    CLAUDE_SERVER_HOST=0.0.0.0 \
    CLAUDE_SERVER_PORT=3000 \
    PYTHONUNBUFFERED=1
VOLUME ["/data", "/home/claude/.claude"]
EXPOSE 3000
# /health answers without a key unless CLAUDE_SERVER_HEALTH_AUTH is set (then this check fails).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/health', timeout=4)"]
ENTRYPOINT ["tini", "--"]
CMD ["claude-server"]
