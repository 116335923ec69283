# Multi-stage build. `pipeline` (the default) holds the three services only; `sandbox` holds the
# QAPI look-alike. Each builds with -p so that the test crate's dependencies (testcontainers,
# which turns on aws-lc) never enter a product binary. Used by compose.yaml.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p fetcher -p normalizer -p sink \
 && cargo build --release --locked -p sandbox --bin qoo10-sandbox \
 && mkdir -p /out/pipeline /out/sandbox \
 && cp target/release/fetcher target/release/normalizer target/release/sink /out/pipeline/ \
 && cp target/release/qoo10-sandbox /out/sandbox/

FROM debian:bookworm-slim AS base
# curl: the healthchecks call the services' /readyz.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 pipeline
USER pipeline
WORKDIR /etc/qoo10

FROM base AS sandbox
COPY --from=build /out/sandbox/ /usr/local/bin/

FROM base AS pipeline
COPY --from=build /out/pipeline/ /usr/local/bin/
ENV PIPELINE_CONFIG=/etc/qoo10/pipeline.toml
