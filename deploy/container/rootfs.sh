#!/bin/sh
# Builds the container image's root file system into DIR (the Dockerfile's build stage runs it, and
# so does the image test, e2e TestImageFinalStage): static binaries of warren and warren-coord, a
# passwd/group naming uid 65532, a world-writable sticky /tmp, and the state directory
# /var/lib/warren (mode 0700; the Dockerfile hands it to 65532). Run from the repository's top.
#   usage: VERSION=v1.2.3 sh deploy/container/rootfs.sh DIR
set -eu
out=${1:?usage: rootfs.sh DIR}
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp" "$out/var/lib/warren"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION:-dev}" \
  -o "$out/usr/local/bin/" ./cmd/warren ./cmd/warren-coord
chmod 1777 "$out/tmp"
chmod 0700 "$out/var/lib/warren"
printf 'root:x:0:0:root:/root:/sbin/nologin\nwarren:x:65532:65532:warren:/var/lib/warren:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nwarren:x:65532:\n' >"$out/etc/group"
