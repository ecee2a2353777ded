#!/bin/sh
# Functional tests of `mlpipe serve` beyond GitHub's webhooks (serve.sh):
# GitLab and Gitea/Forgejo deliveries through the server, the git poller
# that catches a push whose webhook was lost, a stage's log streamed while
# it runs, and HTTPS.  A real server on 127.0.0.1, a real file:// bare
# repository, real SQLite.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/serve-lib.sh"

new_repo
cat > pipeline.yml <<'Y'
name: forged
on: push
stages:
  build:
    run: |
      echo "commit=$MLPIPE_COMMIT" >> "$MLPIPE_OUTPUT"
      echo "trigger=$MLPIPE_TRIGGER" >> "$MLPIPE_OUTPUT"
      if [ -e "$MLPIPE_TEST_GATE.hold" ]; then
        echo "first line"
        touch "$MLPIPE_TEST_GATE.started"
        while [ ! -e "$MLPIPE_TEST_GATE.go" ]; do sleep 0.05; done
        echo "second line"
      fi
Y
git add pipeline.yml
commit_push 'first'
printf 'forge-secret\n' > "$T/secret"
"$MLPIPE" project add forged --remote "file://$T/remote.git" --branch main \
	--pipeline pipeline.yml --secret-file "$T/secret" >/dev/null
token=$("$MLPIPE" token create t)
push_body() { # push_body COMMIT [REF]: a push payload (GitLab's has checkout_sha)
	printf '{"object_kind":"push","ref":"%s","before":"%040d","after":"%s","checkout_sha":"%s","repository":{"clone_url":"file://%s/remote.git"}}' \
		"${2:-refs/heads/main}" 0 "$1" "$1" "$T" > "$T/body"
}
hmac() { openssl dgst -sha256 -hmac forge-secret < "$T/body" | sed 's/^.*= *//'; }
post() { # post PATH HEADER...: posts $T/body; sets $code and $resp
	p=$1; shift
	set -- "$@" -H 'Content-Type: application/json'
	code=$(curl -s -o "$T/resp" -w '%{http_code}' -X POST "$@" --data-binary "@$T/body" "$base$p")
	resp=$(cat "$T/resp")
}
commit_of() { api "$base/api/v1/runs/$1" | tr -d ' \n' | sed -n 's/.*"commit":"\([0-9a-f]*\)".*/\1/p'; }
# ran RUN COMMIT NAME: the run succeeds and ran COMMIT
ran() {
	if wait_run "$1" succeeded && [ "$(commit_of "$1")" = "$2" ]; then ok "$3"
	else not_ok "$3" "$(api "$base/api/v1/runs/$1")" "$(tail -10 "$T/serve.log")"; fi
}

start_server --poll-interval 0
expect_match "the server starts" '^[1-9][0-9]*$' "$port"

# --- GitLab -------------------------------------------------------------------
commit_push 'for gitlab'; g1=$head
push_body "$g1"
post /hooks/gitlab -H 'X-Gitlab-Event: Push Hook' -H 'X-Gitlab-Token: forge-secret' \
	-H 'Idempotency-Key: gl-key-1' -H 'X-Gitlab-Event-UUID: gl-uuid-1'
expect_eq "gitlab: a push with the right token is answered 202" 202 "$code"
expect_match "... naming its Idempotency-Key as the delivery" '"delivery":"gl-key-1"' "$resp"
gr1=$(run_id_of "$resp")
ran "$gr1" "$g1" "gitlab: the run ran the pushed commit"
# The delivery id decides, not the body: a redelivery (same key, another
# UUID) of a body naming a newer commit is still a duplicate.
commit_push 'gitlab 2'; g2=$head
push_body "$g2"
post /hooks/gitlab -H 'X-Gitlab-Event: Push Hook' -H 'X-Gitlab-Token: forge-secret' \
	-H 'Idempotency-Key: gl-key-1' -H 'X-Gitlab-Event-UUID: gl-uuid-2'
expect_eq "gitlab: a redelivery with the same Idempotency-Key: 200" 200 "$code"
expect_match "... a duplicate of the first run" "\"run\":$gr1,.*\"duplicate\":true" "$resp"
post /hooks/gitlab -H 'X-Gitlab-Event: Push Hook' -H 'X-Gitlab-Token: forge-secret' \
	-H 'X-Gitlab-Event-UUID: gl-uuid-3'
expect_eq "gitlab: without Idempotency-Key, X-Gitlab-Event-UUID identifies it" 202 "$code"
gr2=$(run_id_of "$resp")
ran "$gr2" "$g2" "gitlab: ... and its run ran its commit"
commit_push 'gitlab 3'; g3=$head
push_body "$g3"
post /hooks/gitlab -H 'X-Gitlab-Event: Push Hook' -H 'X-Gitlab-Token: forge-secret' \
	-H 'X-Gitlab-Event-UUID: gl-uuid-3'
expect_eq "gitlab: a redelivered X-Gitlab-Event-UUID is a duplicate" 200 "$code"
expect_match "... of its run" "\"run\":$gr2,.*\"duplicate\":true" "$resp"
post /hooks/gitlab -H 'X-Gitlab-Event: Push Hook' -H 'X-Gitlab-Token: wrong-secret' \
	-H 'X-Gitlab-Event-UUID: gl-uuid-4'
expect_eq "gitlab: a wrong token gets 401" 401 "$code"
post /hooks/gitlab -H 'X-Gitlab-Event: Push Hook' -H 'X-Gitlab-Event-UUID: gl-uuid-5'
expect_eq "gitlab: no token gets 401" 401 "$code"
post /hooks/gitlab -H 'X-Gitlab-Event: Issue Hook' -H 'X-Gitlab-Token: forge-secret' \
	-H 'X-Gitlab-Event-UUID: gl-uuid-6'
expect_eq "gitlab: another event is answered 2xx (a 4xx disables the hook)" 200 "$code"

# --- Gitea and Forgejo -----------------------------------------------------------
push_body "$g3"
post /hooks/gitea -H 'X-Gitea-Event: push' -H "X-Gitea-Signature: $(hmac)" \
	-H 'X-Gitea-Delivery: gt-1'
expect_eq "gitea: a push signed with bare hex is answered 202" 202 "$code"
tr1=$(run_id_of "$resp")
ran "$tr1" "$g3" "gitea: the run ran the pushed commit"
post /hooks/gitea -H 'X-Gitea-Event: push' -H "X-Gitea-Signature: $(hmac)" \
	-H 'X-Gitea-Delivery: gt-1'
expect_eq "gitea: a replayed delivery: 200" 200 "$code"
expect_match "... a duplicate" "\"run\":$tr1,.*\"duplicate\":true" "$resp"
post /hooks/gitea -H 'X-Gitea-Event: push' -H "X-Gitea-Signature: sha256=$(hmac)" \
	-H 'X-Gitea-Delivery: gt-2'
expect_eq "gitea: a GitHub-style sha256= prefix is not Gitea's signature: 401" 401 "$code"
post /hooks/gitea -H 'X-Gitea-Event: push' -H "X-Gitea-Signature: $(printf '%064d' 0)" \
	-H 'X-Gitea-Delivery: gt-3'
expect_eq "gitea: a forged signature gets 401" 401 "$code"
commit_push 'for forgejo'; f1=$head
push_body "$f1"
post /hooks/forgejo -H 'X-Forgejo-Event: push' -H "X-Forgejo-Signature: $(hmac)" \
	-H 'X-Forgejo-Delivery: fj-1'
expect_eq "forgejo: X-Forgejo-Signature is answered 202" 202 "$code"
fr1=$(run_id_of "$resp")
ran "$fr1" "$f1" "forgejo: the run ran the pushed commit"
commit_push 'forgejo 2'; f2=$head
push_body "$f2"
post /hooks/gitea -H 'X-Forgejo-Event: push' -H "X-Forgejo-Signature: $(hmac)" \
	-H 'X-Forgejo-Delivery: fj-1'
expect_eq "forgejo: X-Forgejo-Delivery deduplicates (same id, newer body)" 200 "$code"
expect_match "... a duplicate of the first run" "\"run\":$fr1,.*\"duplicate\":true" "$resp"
push_body "$f2" refs/heads/elsewhere
post /hooks/forgejo/forged -H 'X-Forgejo-Event: push' -H "X-Forgejo-Signature: $(hmac)" \
	-H 'X-Forgejo-Delivery: fj-2'
expect_match "forgejo: a branch the project does not watch is ignored" '"ignored":"the project does not watch this branch"' "$resp"
stop_server

# --- the poller: a push whose webhook never came ------------------------------------
# f2 was pushed, and its only delivery was a duplicate: no run of it yet.
start_server --poll-interval 300ms
wait_for "the poller queues the lost push" sh -c "grep -q 'poll forged: refs/heads/main moved to ${f2%????????????????????????????}: run [0-9]* queued' '$T/serve.log'"
pr1=$(sed -n "s/.*poll forged: refs\/heads\/main moved to [0-9a-f]*: run \([0-9]*\) queued.*/\1/p" "$T/serve.log" | head -1)
ran "$pr1" "$f2" "the poller ran the pushed commit"
expect_match "... as a poll run" '"trigger":"poll"' "$(api "$base/api/v1/runs/$pr1" | tr -d ' \n')"
push_body "$f2"
post /hooks/github -H 'X-GitHub-Event: push' -H "X-Hub-Signature-256: sha256=$(hmac)" \
	-H 'X-GitHub-Delivery: late-1'
expect_eq "a late webhook for the polled commit is answered 200" 200 "$code"
expect_match "... as a duplicate of the poll's run" "\"run\":$pr1,.*\"duplicate\":true" "$resp"
# Another push without a webhook: once the poller has queued it, it has
# polled again since f2's run, and must not have queued f2 twice.
commit_push 'lost 2'; f3=$head
wait_for "the poller queues the next lost push" sh -c "grep -q 'moved to ${f3%????????????????????????????}: run' '$T/serve.log'"
expect_eq "the poller queued each commit once" 1 "$(grep -c "moved to ${f2%????????????????????????????}: run" "$T/serve.log")"
runs_f2=$("$MLPIPE" runs --json | tr -d ' \n\t' | grep -o "\"git_commit\":\"$f2\"" | wc -l | tr -d ' ')
expect_eq "one run of the lost commit in all" 1 "$runs_f2"
pr2=$(sed -n "s/.*moved to ${f3%????????????????????????????}: run \([0-9]*\) queued.*/\1/p" "$T/serve.log" | head -1)
ran "$pr2" "$f3" "the second lost push ran its commit"

# --- a log streamed while its stage runs ---------------------------------------------
touch "$MLPIPE_TEST_GATE.hold"
r=$(api -X POST -d '{"project":"forged","branch":"main"}' "$base/api/v1/runs")
lr=$(run_id_of "$r")
wait_for "the held stage starts" test -e "$MLPIPE_TEST_GATE.started"
: > "$T/stream"
api -N --max-time 20 "$base/api/v1/runs/$lr/logs/build" > "$T/stream" &
curl_pid=$!
wait_for "the stream delivers the line written so far" grep -q 'first line' "$T/stream"
if kill -0 $curl_pid 2>/dev/null; then ok "the log stream stays open while the stage runs"
else not_ok "the log stream stays open while the stage runs"; fi
touch "$MLPIPE_TEST_GATE.go"
t0=$(date +%s%3N)
curl_rc=0
wait $curl_pid || curl_rc=$?
t1=$(date +%s%3N)
expect_eq "the stream ends when the stage ends" 0 "$curl_rc"
expect_eq "... with every line" "first line
second line" "$(cat "$T/stream")"
if [ $((t1 - t0)) -lt 5000 ]; then ok "... promptly ($((t1 - t0)) ms after the stage's last line)"
else not_ok "... promptly" "$((t1 - t0)) ms"; fi
rm -f "$MLPIPE_TEST_GATE.hold"
stop_server
expect_eq "the server stops cleanly" 0 "$server_rc"

# --- HTTPS ---------------------------------------------------------------------
if openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null; then
	scheme=https
	start_server --poll-interval 0 --tls-cert "$T/cert.pem" --tls-key "$T/key.pem"
	if [ "$port" = 0 ] && grep -q 'built without TLS' "$T/serve.log"; then
		ok "https # SKIP this libmicrohttpd has no TLS"
	else
		expect_eq "https: /healthz over TLS, certificate checked" '{"status":"ok"}' \
			"$(curl -s --cacert "$T/cert.pem" "$base/healthz")"
		expect_match "https: the API too" '"runs":\[' "$(api --cacert "$T/cert.pem" "$base/api/v1/runs")"
		push_body "$f3"
		code=$(curl -s --cacert "$T/cert.pem" -o "$T/resp" -w '%{http_code}' -X POST \
			-H 'X-GitHub-Event: push' -H "X-Hub-Signature-256: sha256=$(hmac)" \
			-H 'X-GitHub-Delivery: tls-1' -H 'Content-Type: application/json' --data-binary "@$T/body" "$base/hooks/github")
		expect_eq "https: a webhook over TLS is verified and answered" 200 "$code"
		expect_eq "https: an unknown certificate is refused by the client" 60 \
			"$(curl -s -o /dev/null "$base/healthz" || echo $?)"
		plain=$(curl -s --max-time 5 -o "$T/plain" -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)
		if [ "$plain" != 200 ] && ! grep -q '"ok"' "$T/plain" 2>/dev/null; then
			ok "https: plain http on the TLS port fails ($plain)"
		else not_ok "https: plain http on the TLS port fails" "$plain"; fi
		expect_match "https: the log says TLS" 'listening on https://127.0.0.1:[0-9]+ \(TLS\)' "$(cat "$T/serve.log")"
	fi
	stop_server
	scheme=http
else
	ok "https # SKIP openssl cannot make a certificate"
fi
run_mlpipe serve --listen 127.0.0.1:0 --tls-cert "$T/cert.pem"
expect_eq "a certificate without a key is refused" 1 "$rc"
finish
