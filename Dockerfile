# syntax=docker/dockerfile:1
#
# The infergw image: one static binary (`infergw picker`, `infergw controlplane`, `infergw
# controlplane bootstrap`, …) on distroless/static, running as the non-root user 65532.
# The Helm chart in charts/infergw runs this image for the control plane, the picker and the
# Envoy bootstrap initContainer.
#
# NOTE: this Dockerfile is not built in CI: the CI machines cannot run docker. Build it with
#   docker build -t ghcr.io/infergw/infergw:$(git describe --tags --always) .
# and, for another architecture, e.g.
#   docker buildx build --platform linux/arm64 -t … .

ARG GO_VERSION=1.26

# ---- build ----
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Modules first, so that a source change does not re-download them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# CGO off: a static binary that needs no libc, as distroless/static requires.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -tags vtprotobuf \
      -ldflags "-s -w -X github.com/infergw/infergw/internal/buildinfo.Version=${VERSION}" \
      -o /out/infergw ./cmd/infergw

# ---- run ----
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/infergw /usr/local/bin/infergw
# 65532 is distroless' "nonroot"; the chart's pod security context uses the same id.
USER 65532:65532
# ext_proc gRPC, picker metrics, xDS, control plane metrics.
EXPOSE 9002 9090 18000 9091
ENTRYPOINT ["/usr/local/bin/infergw"]
