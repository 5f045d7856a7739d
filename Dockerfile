# The prescale engine's image, for deploy/engine.yaml:
#   docker build -t prescale:0.1.0 .
# (CI has no container engine; the manifests are validated against a real
# kube-apiserver instead, see tests/kube.rs.)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin prescale

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/prescale /usr/local/bin/prescale
USER 65532:65532
ENTRYPOINT ["prescale"]
