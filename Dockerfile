# syntax=docker/dockerfile:1
# The switchyard image. `docker run -p 8080:8080 IMAGE` starts the demo (README "Running in
# containers and Kubernetes"); `IMAGE start --config FILE` runs the proxy on a config of yours.
# Node 24: an LTS line supported until 2028 (the code also runs on Node 22.19 or newer; not on 20).

FROM node:24-bookworm-slim AS build
WORKDIR /app
# Dependencies first, so a change to the sources alone reuses this layer. --ignore-scripts:
# `prepare` (the build) needs the sources, and no dependency has an install script.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# Source maps point at src/, which the image does not carry.
RUN npm run build && find dist -name '*.map' -delete && npm prune --omit=dev --ignore-scripts

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# package.json: `switchyard --version` reads it. config/: the demo's config and the compose one.
COPY package.json LICENSE ./
COPY config ./config
# ui/: the dashboard's page (GET / on the admin port).
COPY ui ./ui
# `docker exec CONTAINER switchyard ctl status` finds the CLI on PATH.
RUN chmod 755 dist/cli.js && ln -s /app/dist/cli.js /usr/local/bin/switchyard
# The node images' unprivileged user (uid 1000).
USER node
# 8080: the proxy (listen.port); 9901: the admin API (admin.port).
EXPOSE 8080 9901
# Ready = /readyz answers 200 (state loaded; 503 while shutting down). Slim images have no curl:
# node asks. The admin port must be 9901 for this check (the demo's, config/compose.yaml's).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9901/readyz', { signal: AbortSignal.timeout(2000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form: node is PID 1 and gets SIGTERM itself, so a stop is the graceful shutdown.
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["demo"]
