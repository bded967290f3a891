# warren's container image: warren and warren-coord, static, on an empty base; runs as uid 65532 with
# its state on a volume. `warren up` is the entrypoint; the coord is the same image with
# --entrypoint /usr/local/bin/warren-coord (see deploy/compose.yaml and the README's "Containers").
#   docker build -t warren .        (or: podman build -t warren .)

# Build stage: the Go toolchain, a static build (CGO_ENABLED=0) and the root file system.
FROM docker.io/library/golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN VERSION="$VERSION" sh deploy/container/rootfs.sh /rootfs

# Final stage: nothing but the binaries, passwd/group, /tmp (1777) and the state directory. No shell,
# no CA certificates (warren pins keys; it makes no TLS connection that would need a public CA).
FROM scratch
COPY --from=build /rootfs/ /
# Copying var/lib's contents hands the state directory itself to 65532 (a COPY into an existing
# directory would chown only what is inside it).
COPY --from=build --chown=65532:65532 /rootfs/var/lib/ /var/lib/
ENV WARREN_STATE=/var/lib/warren HOME=/var/lib/warren
USER 65532:65532
WORKDIR /var/lib/warren
VOLUME /var/lib/warren
EXPOSE 7400/udp 7400/tcp
ENTRYPOINT ["/usr/local/bin/warren", "up"]
