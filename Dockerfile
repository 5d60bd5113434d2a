# syntax=docker/dockerfile:1
# Node 24: an LTS line supported until 2028 (the code also runs on Node 20 and 22).
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# prepare builds dist/; dev dependencies are needed for tsc only
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY config ./config
USER node
EXPOSE 8080 9901
# SIGTERM reaches node directly (exec form): graceful shutdown finishes in-flight requests.
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["start", "--config", "config/compose.yaml"]
