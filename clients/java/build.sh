#!/usr/bin/env bash
# Builds clients/java/build/listener-client.jar and the launcher build/listener-publish from
# Debian's packages only (no Maven repository): installs what is missing with apt-get, generates
# the Java code from protos/ (not committed), compiles with javac and writes the jar.
# Usage: clients/java/build.sh [PYTHON]   (PYTHON finds google/api/*.proto when protos import them)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${1:-python3}
BUILD=$HERE/build
SHARE=/usr/share/java

PACKAGES=(protobuf-compiler libprotobuf-dev protobuf-compiler-grpc-java-plugin libgrpc-java
  libprotobuf-java libnetty-java libperfmark-java libguava-java
  libgeronimo-annotation-1.3-spec-java libgoogle-gson-java)
# What the jar needs at run time, by Debian's unversioned names; the launcher and the jar's
# manifest carry this list.
RUNTIME=(protobuf protobuf-util gson guava grpc-api grpc-context grpc-core grpc-stub grpc-protobuf
  grpc-protobuf-lite grpc-netty perfmark-api jsr305 error_prone_annotations netty-buffer
  netty-codec netty-codec-http netty-codec-http2 netty-codec-socks netty-common netty-handler
  netty-handler-proxy netty-resolver netty-transport geronimo-annotation-1.3-spec)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
command -v javac >/dev/null || missing+=(default-jdk-headless)
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "make java needs: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

classpath=""
for jar in "${RUNTIME[@]}"; do
  [[ -f $SHARE/$jar.jar ]] || { echo "missing $SHARE/$jar.jar" >&2; exit 1; }
  classpath+="${classpath:+:}$SHARE/$jar.jar"
done

# The listener.v1 protos, plus any google/api/*.proto they import (Debian ships no Java for those).
cd "$ROOT/protos"
protos=(listener/v1/*.proto)
includes=(-I"$ROOT/protos" -I/usr/include)
if grep -qh '^import "google/api/' "${protos[@]}"; then
  api_root=$("$PY" -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parents[2])')
  includes+=(-I"$api_root")
  wanted=$(grep -ho '^import "google/api/[^"]*"' "${protos[@]}" | cut -d'"' -f2 | sort -u)
  while :; do  # the google/api files those import in turn
    more=$(cd "$api_root" && grep -ho '^import "google/api/[^"]*"' $wanted | cut -d'"' -f2)
    grown=$(printf '%s\n' $wanted $more | sort -u)
    [[ $grown == "$wanted" ]] && break
    wanted=$grown
  done
  for file in $wanted; do protos+=("$api_root/$file"); done
fi

rm -rf "$BUILD/gen" "$BUILD/classes"
mkdir -p "$BUILD/gen" "$BUILD/classes"
protoc "${includes[@]}" --java_out="$BUILD/gen" \
  --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin --grpc-java_out="$BUILD/gen" "${protos[@]}"

find "$BUILD/gen" "$HERE/src" -name '*.java' >"$BUILD/sources.txt"
javac -encoding UTF-8 -nowarn --release 17 -cp "$classpath" -d "$BUILD/classes" @"$BUILD/sources.txt"

{
  echo "Main-Class: io.listener.client.PublishMain"
  # Manifest lines are at most 72 bytes: continuation lines start with one space.
  printf 'Class-Path:'
  for jar in "${RUNTIME[@]}"; do printf ' \n  file:%s/%s.jar' "$SHARE" "$jar"; done
  printf '\n'
} >"$BUILD/manifest.txt"
rm -f "$BUILD/listener-client.jar"
jar --create --file "$BUILD/listener-client.jar" --manifest "$BUILD/manifest.txt" -C "$BUILD/classes" .

cat >"$BUILD/listener-publish" <<LAUNCHER
#!/bin/sh
# Publishes JSON-lines events from stdin; prints 'ID SEQUENCE' per event (docs/schedulers.md).
DIR=\$(dirname "\$(readlink -f "\$0")")
exec java \${LISTENER_JAVA_OPTS:-} -cp "\$DIR/listener-client.jar:$classpath" io.listener.client.PublishMain "\$@"
LAUNCHER
chmod +x "$BUILD/listener-publish"
echo "built $BUILD/listener-client.jar and $BUILD/listener-publish"
