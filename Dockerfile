# Multi-stage build: compile in the Rust image, run from a distroless static base as a
# non-root user with nothing but the binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY crds ./crds
COPY charts/rampart/crd ./charts/rampart/crd
COPY e2e/Cargo.toml ./e2e/Cargo.toml
COPY e2e/src ./e2e/src
RUN cargo build --release --locked -p rampart && strip target/release/rampart

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/rampart /rampart
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/rampart"]
CMD ["run", "--metrics-addr=0.0.0.0:8080", "--log-format=json"]
