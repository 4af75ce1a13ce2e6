# syntax=docker/dockerfile:1
#
# The nix-image-operator image: the controller (Deployment of the Helm chart) and the `push` step
# of every builder Job (config `builder.pushImage`). Node 24, the compiled dist/ and production
# dependencies only; runs as uid/gid 65532 and writes nothing outside /tmp, so it works with
# `readOnlyRootFilesystem: true`.
#
#   docker build -t registry.example.com/nix-image-operator:0.1.0 .
#
# Base image pinning. The tag below pins the Node version; pin the exact bytes with a digest as
# well. Look it up once (any machine with network access):
#
#   skopeo inspect --format '{{.Digest}}' docker://docker.io/library/node:24.21.0-bookworm-slim
#   # or: docker buildx imagetools inspect node:24.21.0-bookworm-slim
#
# and either write it into the ARG below or pass it at build time:
#
#   NODE_IMAGE=node:24.21.0-bookworm-slim@sha256:<digest from the command above>
#   docker build --build-arg NODE_IMAGE=$NODE_IMAGE .
#
# No digest is committed here: it could not be looked up from the machine this file was written
# on (no registry access), and a made-up digest would make every build fail.
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# ---- build: compile TypeScript, then keep production dependencies only -----------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
ENV NODE_ENV=development \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false
# Dependencies first: this layer is reused while package*.json do not change. No dependency needs
# an install script, and running none is safer.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/bundle-cli.ts ./scripts/
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts \
 && chmod 0755 dist/cli/main.js \
 && rm -rf /root/.npm

# ---- runtime ---------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# npm, npx, corepack and yarn are not needed to run the operator: fewer files, fewer CVEs.
# `nix-image-operator` on PATH: the builder Job's push step runs that command in this image.
RUN rm -rf /usr/local/lib/node_modules /usr/local/bin/npm /usr/local/bin/npx \
           /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-* \
 && ln -s /app/dist/cli/main.js /usr/local/bin/nix-image-operator
WORKDIR /app
# package.json is read at run time (the version the CLI prints).
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
ENV NODE_ENV=production \
    HOME=/tmp \
    TMPDIR=/tmp
LABEL org.opencontainers.image.title="nix-image-operator" \
      org.opencontainers.image.description="Builds Nix flakes into OCI images and rolls them out on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
# The non-root user of the Helm chart's securityContext (distroless's "nonroot" id). No passwd
# entry is needed: nothing looks the user up.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["--help"]
