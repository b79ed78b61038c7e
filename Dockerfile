# QLC images are FROM scratch: no base image can be pulled here, and a static
# binary (CGO_ENABLED=0) needs nothing else. `make images` builds the binaries
# into bin/linux/ first; BIN picks which one this image runs.
FROM scratch
ARG BIN=node
COPY bin/linux/${BIN} /qlc
# The gateway's store lives in /data (a volume under compose); created here
# so a new volume is writable by the unprivileged user.
COPY --chown=65534:65534 deploy/data /data
USER 65534:65534
ENTRYPOINT ["/qlc"]
