# Builds both services; pick one with `--target user-service` or
# `--target audit-service` (docker-compose.yaml does).
FROM rust:1-bookworm AS build
# librdkafka is built from source by rdkafka-sys and needs these.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev zlib1g-dev pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p user-service -p audit-service

# curl: the compose file's healthchecks ask /readyz with it.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libcurl4 libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /app app \
 && mkdir -p /app/data && chown app /app/data
WORKDIR /app
USER app

FROM runtime AS user-service
COPY --from=build /src/target/release/user-service /usr/local/bin/user-service
ENV LISTEN_ADDR=0.0.0.0:3000
EXPOSE 3000
ENTRYPOINT ["user-service"]

FROM runtime AS audit-service
COPY --from=build /src/target/release/audit-service /usr/local/bin/audit-service
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["audit-service"]
