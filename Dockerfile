# syntax=docker/dockerfile:1
# opsrun: build with the Rust toolchain, run on a slim Debian with only libpq.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin opsrun

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home opsrun
COPY --from=build /src/target/release/opsrun /usr/local/bin/opsrun
USER opsrun
# Configure through the environment: DATABASE_URL and OPSRUN_JWT_SECRET (or
# OPSRUN_JWT_PUBLIC_KEY_FILE) are required here; the image has no embedded database.
ENV OPSRUN_BIND=0.0.0.0:8080 \
    OPSRUN_LOG_FORMAT=json \
    RUST_LOG=info
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["opsrun"]
CMD ["serve"]
