#!/bin/sh
# Functional tests of what `mlpipe serve` refuses at the door, and of the
# inputs it must take: git's rules for the ref of POST /api/v1/runs, a NUL
# or a non-stage name in /api/v1/runs/N/logs/STAGE, limit outside 1..1000,
# a duplicate delivery counted once in /metrics, GitHub's form-encoded
# deliveries (payload=..., HMAC over the raw body) and the Content-Type
# each forge sends.  A real server on 127.0.0.1, a real file:// bare
# repository, real SQLite.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/serve-lib.sh"

new_repo
cat > pipeline.yml <<'Y'
name: inputs
on: push
stages:
  work:
    run: echo "commit=$MLPIPE_COMMIT" >> "$MLPIPE_OUTPUT"
Y
git add pipeline.yml
commit_push 'first'
printf 'in-secret' > "$T/secret"
"$MLPIPE" project add inputs --remote "file://$T/remote.git" --pipeline pipeline.yml \
	--secret-file "$T/secret" >/dev/null
token=$("$MLPIPE" token create t)
# post_run JSON: POST /api/v1/runs; sets $code and $resp
post_run() {
	code=$(api -o "$T/resp" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
		-d "$1" "$base/api/v1/runs")
	resp=$(cat "$T/resp")
}
get() { # get PATH: sets $code and $resp
	code=$(api -o "$T/resp" -w '%{http_code}' "$base$1")
	resp=$(cat "$T/resp")
}
# hook FORGE CONTENT-TYPE DELIVERY [SIGNED-FILE]: posts $T/body; sets $code, $resp
hook() {
	f=${4:-$T/body}
	mac=$(openssl dgst -sha256 -hmac in-secret < "$f" | sed 's/^.*= *//')
	case $1 in
	github) set -- "$@" -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: $3" \
		-H "X-Hub-Signature-256: sha256=$mac" ;;
	gitlab) set -- "$@" -H 'X-Gitlab-Event: Push Hook' -H "X-Gitlab-Event-UUID: $3" \
		-H 'X-Gitlab-Token: in-secret' ;;
	gitea) set -- "$@" -H 'X-Gitea-Event: push' -H "X-Gitea-Delivery: $3" \
		-H "X-Gitea-Signature: $mac" ;;
	esac
	forge=$1 ctype=$2; shift 3
	[ $# -gt 0 ] && [ "$1" = "${f}" ] && shift
	code=$(curl -s -o "$T/resp" -w '%{http_code}' -X POST -H "Content-Type: $ctype" "$@" \
		--data-binary "@$T/body" "$base/hooks/$forge")
	resp=$(cat "$T/resp")
}
json_body() { # json_body COMMIT: a push payload in $T/push.json and $T/body
	printf '{"ref":"refs/heads/main","after":"%s","head_commit":{"message":"a+b c&d=e %%41"},"repository":{}}' \
		"$1" > "$T/push.json"
	cp "$T/push.json" "$T/body"
}
metric() { # metric RESULT: the webhook deliveries counter with that result
	curl -s "$base/metrics" |
		sed -n "s/^mlpipe_webhook_deliveries_total{result=\"$1\"} \([0-9]*\)$/\1/p"
}
nruns() { count_lines "$(runs_of inputs)"; }

start_server --poll-interval 0
expect_match "the server starts" '^[1-9][0-9]*$' "$port"

# --- POST /api/v1/runs: git's rules for the ref --------------------------------
before=$(nruns)
post_run '{"project":"inputs","branch":"../../../etc"}'
expect_eq "a branch ../../../etc is answered 400" 400 "$code"
expect_match "... saying it is not a valid branch name" 'not a valid git branch name' "$resp"
for bad in 'refs/heads/a..b' 'refs/heads/x.lock' 'refs/heads/a b' 'refs/heads/x~1' \
	'refs/heads/@{1}' 'refs/heads/' 'HEAD' 'refs/pull/1/head' 'refs/heads//x'; do
	post_run "{\"project\":\"inputs\",\"ref\":\"$bad\"}"
	[ "$code" = 400 ] || break
done
expect_eq "refs git refuses, and refs that are neither a branch nor a tag, are 400 ($bad)" 400 "$code"
expect_eq "... and queue no run" "$before" "$(nruns)"
post_run '{"project":"inputs","branch":"main"}'
expect_eq "a valid branch is still 202" 202 "$code"
r1=$(run_id_of "$resp")
if wait_run "$r1" succeeded; then ok "... and its run succeeds"; else not_ok "... and its run succeeds" "$(api "$base/api/v1/runs/$r1")"; fi
post_run '{"project":"inputs","ref":"refs/heads/release/v1.2_rc-3"}'
expect_eq "a valid ref with '/', '.', '_' and '-' is 202" 202 "$code"

# --- logs: a NUL, and names no stage can have ------------------------------
get "/api/v1/runs/$r1/logs/work"
expect_eq "the log of an existing stage is 200" 200 "$code"
get "/api/v1/runs/$r1/logs/w%00ork"
expect_eq "a stage name with %00 is 400, not the log of 'w'" 400 "$code"
get "/api/v1/runs/$r1/logs/work%00"
expect_eq "... also at its end (not the log of 'work')" 400 "$code"
expect_match "... saying why" 'NUL' "$resp"
get "/api/v1/runs/$r1/logs/..%2F..%2Fetc"
expect_eq "a stage name that is not a valid name is 400" 400 "$code"
expect_match "... saying why" 'not a stage name' "$resp"
get "/api/v1/runs/$r1/logs/nosuch"
expect_eq "a valid name that is no stage of the run is 404" 404 "$code"

# --- limit 1..1000 -----------------------------------------------------------
bad_limits=
for l in -5 0 1001 99999999999999999999 abc 1x '' '%201' '1%00'; do
	get "/api/v1/runs?limit=$l"
	[ "$code" = 400 ] || bad_limits="$bad_limits '$l'=$code"
done
expect_eq "limit -5, 0, 1001, 99999999999999999999, abc, 1x, empty, ' 1', '1<NUL>' are 400" "" "$bad_limits"
get "/api/v1/runs?limit=1"
expect_eq "limit=1 is 200 with one run" "200 1" "$code $(printf '%s' "$resp" | grep -o '"id":' | wc -l | tr -d ' ')"
get "/api/v1/runs?limit=1000"
expect_eq "limit=1000 is 200" 200 "$code"

# --- Content-Type: what each forge sends, and nothing else ----------------
commit_push 'second'; c2=$head
json_body "$c2"
before=$(nruns)
hook github text/plain ct-1
expect_eq "github: text/plain is 415" 415 "$code"
expect_match "... naming the content types it takes" 'application/json or application/x-www-form-urlencoded' "$resp"
hook github '' ct-2
expect_eq "github: no Content-Type is 415" 415 "$code"
hook gitlab application/x-www-form-urlencoded ct-3
expect_eq "gitlab: a form content type is 415 (GitLab sends JSON)" 415 "$code"
expect_match "... saying JSON is wanted" 'must be application/json' "$resp"
hook gitea application/x-www-form-urlencoded ct-4
expect_eq "gitea: a form content type is 415 (its signature is not over the body)" 415 "$code"
expect_eq "... and none of them queued a run" "$before" "$(nruns)"

# --- a duplicate is counted once ---------------------------------------------
q0=$(metric queued); d0=$(metric duplicate)
hook gitea 'Application/JSON; charset=utf-8' dup-1
expect_eq "gitea: application/json with a charset, any case, is accepted (202)" 202 "$code"
rd=$(run_id_of "$resp")
hook github application/json dup-2
expect_eq "another delivery of the same commit is a duplicate (200)" 200 "$code"
expect_match "... of the first run" "\"run\":$rd,.*\"duplicate\":true" "$resp"
hook github application/json dup-2
expect_eq "a redelivery of the same id is a duplicate (200)" 200 "$code"
expect_eq "/metrics: queued +1, duplicate +2 (a duplicate is not also queued)" \
	"$((q0 + 1)) $((d0 + 2))" "$(metric queued) $(metric duplicate)"
wait_run "$rd" succeeded || true

# --- GitHub's form-encoded deliveries -------------------------------------------
commit_push 'third'; c3=$head
json_body "$c3"
/usr/bin/python3 -c 'import sys, urllib.parse; sys.stdout.write(urllib.parse.urlencode({"payload": open(sys.argv[1]).read()}))' \
	"$T/push.json" > "$T/body"
hook github application/x-www-form-urlencoded form-0 "$T/push.json"
expect_eq "form: an HMAC over the JSON instead of the raw body is 401" 401 "$code"
hook github application/x-www-form-urlencoded form-1
expect_eq "form: payload=URL-ENCODED-JSON with the HMAC over the raw body is 202" 202 "$code"
rf=$(run_id_of "$resp")
if wait_run "$rf" succeeded && [ "$(api "$base/api/v1/runs/$rf" | tr -d ' \n' | sed -n 's/.*"commit":"\([0-9a-f]*\)".*/\1/p')" = "$c3" ]; then
	ok "form: ... and its run ran the pushed commit"
else not_ok "form: ... and its run ran the pushed commit" "$(api "$base/api/v1/runs/$rf")"; fi
printf 'other=1&payload=%s' "$(cat "$T/body" | sed 's/^payload=//')" > "$T/body2" && mv "$T/body2" "$T/body"
hook github application/x-www-form-urlencoded form-1
expect_eq "form: payload after another field is found (a redelivery of form-1: 200)" 200 "$code"
printf 'nothing=here' > "$T/body"
hook github application/x-www-form-urlencoded form-2
expect_eq "form: without a payload field, 400" 400 "$code"
expect_match "... saying so" 'no payload field' "$resp"
printf 'payload=%%7Bnot+json' > "$T/body"
hook github application/x-www-form-urlencoded form-3
expect_eq "form: a payload that is not JSON, 400" 400 "$code"

stop_server
expect_eq "the server stops cleanly" 0 "$server_rc"
finish
