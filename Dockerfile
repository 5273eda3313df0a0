# syntax=docker/dockerfile:1
# The one `cxgap` binary in a small, non-root runtime image.
#   docker build -t cxgap:dev .
#   docker run --rm cxgap:dev --help
# Every service is the same image with a different first argument (ingest, analytics,
# alerting, migrate); see deploy/README.md.

ARG RUST_VERSION=1.88
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first: this layer is reused while only the workspace's own code changes.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates ./crates
COPY proto ./proto
COPY examples ./examples
COPY tests ./tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cxgap \
    && install -D target/release/cxgap /out/cxgap \
    # librdkafka (bundled, static) compresses with zlib, which the runtime base lacks,
    # and speaks TLS through the system's OpenSSL 3: shipped beside the binary rather
    # than trusted to be in the base, so the two always match the build.
    && for lib in libz.so.1 libssl.so.3 libcrypto.so.3; do \
         install -D "/usr/lib/$(uname -m)-linux-gnu/$lib" "/out/lib/$lib"; \
       done

# glibc, libgcc, CA certificates (for https webhooks) and a nonroot user; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/lib/ /usr/lib/
COPY --from=build /out/cxgap /usr/local/bin/cxgap
USER 65532:65532
# ingest 8080/50051, analytics 8081/50052, alerting 8082/50053 (set per Deployment).
EXPOSE 8080 50051
ENTRYPOINT ["/usr/local/bin/cxgap"]
CMD ["--help"]
