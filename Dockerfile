# Multi-stage build of all four binaries. Used by compose.yaml.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/fetcher target/release/normalizer target/release/sink target/release/qoo10-sandbox /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 pipeline
COPY --from=build /out/ /usr/local/bin/
USER pipeline
WORKDIR /etc/qoo10
ENV PIPELINE_CONFIG=/etc/qoo10/pipeline.toml
