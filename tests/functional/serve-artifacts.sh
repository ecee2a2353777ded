#!/bin/sh
# Functional tests of `mlpipe serve`'s model endpoints (docs/api.md): a
# version as JSON and its artifact, the bytes a model server fetches, with
# token scopes, ETag = sha256, If-None-Match, single byte ranges and HEAD,
# against a real server on 127.0.0.1 and a real registered model.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/serve-lib.sh"

mkdir -p "$T/p"
cd "$T/p"
# A 300 kB model file with every byte value, registered by a real run.
cat > pipeline.yml <<'Y'
name: artifacts
stages:
  train:
    run: |
      /usr/bin/python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 1200)' > model.bin
      echo '{"accuracy": 0.875}' > "$MLPIPE_METRICS"
    model: { name: fashion, path: model.bin }
Y
run_mlpipe run pipeline.yml
expect_eq "a run registers fashion version 1" 0 "$rc"
sha=$(sha256sum model.bin | cut -c1-64)
size=$(wc -c < model.bin)

token=$("$MLPIPE" token create admin)
reader=$("$MLPIPE" token create model-server --scope models:read)
expect_match "a token with a scope is printed" '^mlp_[0-9a-f]{64}$' "$reader"
run_mlpipe token create bad --scope models:write
expect_eq "an unknown scope is a usage error" 2 "$rc"
expect_match "... naming it" "unknown scope 'models:write'" "$err"
start_server
url="$base/api/v1/models/fashion/versions/1/artifact"
get() { # get TOKEN [CURL ARGS...]: status, headers in $T/h, body in $T/b
	tok=$1; shift
	rm -f "$T/b"; : > "$T/b"
	curl -s -D "$T/h" -o "$T/b" -w '%{http_code}' -H "Authorization: Bearer $tok" "$@"
}
header() { sed -n "s/^$1: *//Ip" "$T/h" | tr -d '\r' | head -1; }

expect_eq "no token: 401" 401 "$(curl -s -o /dev/null -w '%{http_code}' "$url")"
expect_eq "a models:read token gets the artifact" 200 "$(get "$reader" "$url")"
expect_eq "... byte for byte" "$sha" "$(sha256sum < "$T/b" | cut -c1-64)"
expect_eq "... its ETag is the quoted sha256" "\"$sha\"" "$(header ETag)"
expect_eq "... its length is the file's" "$size" "$(header Content-Length)"
expect_eq "... as octet-stream" "application/octet-stream" "$(header Content-Type)"
expect_eq "... and ranges are offered" "bytes" "$(header Accept-Ranges)"
expect_eq "the admin token (all scopes) gets it too" 200 "$(get "$token" "$url")"
expect_eq "a models:read token cannot list runs: 403" 403 "$(get "$reader" "$base/api/v1/runs")"
expect_match "... saying which scope it lacks" "lacks the scope runs:read" "$(cat "$T/b")"
expect_eq "... nor start one" 403 "$(get "$reader" -X POST -d '{}' "$base/api/v1/runs")"

expect_eq "If-None-Match with the ETag: 304" 304 "$(get "$reader" -H "If-None-Match: \"$sha\"" "$url")"
expect_eq "... with no body" 0 "$(wc -c < "$T/b")"
expect_eq "If-None-Match with another tag: 200" 200 "$(get "$reader" -H 'If-None-Match: "abc", W/"def"' "$url")"
expect_eq "If-None-Match *: 304" 304 "$(get "$reader" -H 'If-None-Match: *' "$url")"

expect_eq "Range bytes=256-511: 206" 206 "$(get "$reader" -H 'Range: bytes=256-511' "$url")"
expect_eq "... the right bytes" "$(tail -c +257 model.bin | head -c 256 | sha256sum)" "$(sha256sum < "$T/b")"
expect_eq "... with its Content-Range" "bytes 256-511/$size" "$(header Content-Range)"
expect_eq "Range bytes=-100: the last 100 bytes" "206 100" "$(get "$reader" -H 'Range: bytes=-100' "$url") $(wc -c < "$T/b")"
expect_eq "Range bytes=300000-: from there to the end" "206 $((size - 300000))" \
	"$(get "$reader" -H 'Range: bytes=300000-' "$url") $(wc -c < "$T/b")"
expect_eq "a range past the end: 416" 416 "$(get "$reader" -H "Range: bytes=$size-" "$url")"
expect_eq "... naming the size" "bytes */$size" "$(header Content-Range)"
expect_eq "If-Range with another tag: the whole file" 200 \
	"$(get "$reader" -H 'Range: bytes=0-9' -H 'If-Range: "old"' "$url")"
expect_eq "several ranges: the whole file" "200 $size" \
	"$(get "$reader" -H 'Range: bytes=0-1,5-6' "$url") $(wc -c < "$T/b")"
expect_eq "a malformed range: the whole file" 200 "$(get "$reader" -H 'Range: bytes=9-2' "$url")"

expect_eq "HEAD: 200" 200 "$(get "$reader" -I "$url")"
expect_eq "... with the length" "$size" "$(header Content-Length)"
expect_eq "... and no body (only the headers came)" 0 "$(grep -c -v -a '^[A-Za-z-]*: \|^HTTP/\|^.$' "$T/b")"
expect_eq "POST is not allowed: 405" 405 "$(get "$reader" -X POST "$url")"

expect_eq "the version as JSON" 200 "$(get "$reader" "$base/api/v1/models/fashion/versions/1")"
j=$(tr -d ' \n' < "$T/b")
expect_match "... with its sha256, size, metrics and artifact path" \
	"\"sha256\":\"$sha\",\"size\":$size.*\"metrics\":\{\"accuracy\":0.875\},\"artifact\":\"/api/v1/models/fashion/versions/1/artifact\"" "$j"
expect_eq "an unknown version: 404" 404 "$(get "$reader" "$base/api/v1/models/fashion/versions/2/artifact")"
expect_eq "an unknown model: 404" 404 "$(get "$reader" "$base/api/v1/models/nope/versions/1/artifact")"
expect_eq "a version that is not a number: 404" 404 "$(get "$reader" "$base/api/v1/models/fashion/versions/1x/artifact")"
expect_eq "another path under the version: 404" 404 "$(get "$reader" "$base/api/v1/models/fashion/versions/1/other")"

# The store lost the file: a clear 500, and the server goes on.
artifact=$("$MLPIPE" models show fashion:1 --json | tr -d ' \t\n' | sed -n 's/.*"artifact":"\([^"]*\)".*/\1/p')
chmod u+w "$(dirname "$artifact")" "$artifact" 2>/dev/null || true
mv "$artifact" "$artifact.away"
expect_eq "an artifact missing from the store: 500" 500 "$(get "$reader" "$url")"
expect_match "... saying so" "missing from the store" "$(cat "$T/b")"
mv "$artifact.away" "$artifact"
expect_eq "... and it is served again once back" 200 "$(get "$reader" "$url")"
expect_eq "the server logs no token" "" "$(grep -F -e "$reader" -e "$token" "$T/serve.log")"
stop_server
expect_eq "the server stops cleanly" 0 "$server_rc"
finish
