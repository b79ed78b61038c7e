# QLC images are FROM scratch: a static binary (CGO_ENABLED=0) needs nothing
# else. BIN picks which binary an image runs (node or gateway). Two final
# targets:
#
#   prebuilt     COPY the binary that `make images` built into bin/linux/:
#                nothing is pulled, for machines without a registry
#                (make images, make compose-up, make integ, make chaos).
#   from-source  build the binary in a golang image first: for machines that
#                can pull it (`docker compose up --build`, compose's default).
#
# The order of the stages matters: without BuildKit, docker builds every
# stage up to the target, so the offline target comes first and a
# `--target prebuilt` build never reaches the golang stage.

FROM scratch AS prebuilt
ARG BIN=node
COPY bin/linux/${BIN} /qlc
# The gateway's store lives in /data (a volume under compose); created here
# so a new volume is writable by the unprivileged user.
COPY --chown=65534:65534 deploy/data /data
USER 65534:65534
ENTRYPOINT ["/qlc"]

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG BIN=node
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags '-s -w' -o /out/qlc ./cmd/${BIN}

FROM scratch AS from-source
COPY --from=build /out/qlc /qlc
COPY --chown=65534:65534 deploy/data /data
USER 65534:65534
ENTRYPOINT ["/qlc"]
