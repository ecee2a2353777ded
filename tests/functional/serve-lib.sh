# serve-lib.sh - helpers for the functional tests of `mlpipe serve` that
# run a real server on 127.0.0.1 against a real file:// bare repository.
# Source it after lib.sh.  Every wait here is bounded and ends as soon as
# what it waits for is seen: nothing sleeps in place of an event.

command -v curl >/dev/null && command -v openssl >/dev/null && command -v git >/dev/null || {
	echo "1..0 # SKIP needs curl, openssl and git"; exit 0; }

export GIT_AUTHOR_NAME="Ada Tester" GIT_AUTHOR_EMAIL=ada@example.com
export GIT_COMMITTER_NAME="Ada Tester" GIT_COMMITTER_EMAIL=ada@example.com
export MLPIPE_TEST_GATE="$T/gate"
server=
scheme=http
trap '[ -z "$server" ] || kill -9 "$server" 2>/dev/null || true; rm -rf "$T"' EXIT

# new_repo: a bare repository $T/remote.git and a work tree $T/work on
# main pushing to it (the current directory afterwards).
new_repo() {
	git init -q --bare "$T/remote.git"
	git init -q -b main "$T/work"
	cd "$T/work"
	git remote add origin "file://$T/remote.git"
}
# commit_push MESSAGE [BRANCH]: commits what is staged (or an empty commit)
# and pushes; sets $head.
commit_push() {
	git commit -q --allow-empty -m "$1"
	git push -q origin "HEAD:refs/heads/${2:-main}"
	head=$(git rev-parse HEAD)
}

# start_server [OPTIONS...]: any free port; sets $server, $port and $base.
# The log goes to $T/serve.log.
start_server() {
	rm -f "$T/port"
	"$MLPIPE" serve --listen 127.0.0.1:0 --port-file "$T/port" --grace 5s "$@" \
		2>>"$T/serve.log" &
	server=$!
	i=0
	while [ ! -s "$T/port" ] && [ $i -lt 400 ] && kill -0 $server 2>/dev/null; do
		sleep 0.05; i=$((i + 1)); done
	port=$(cat "$T/port" 2>/dev/null || echo 0)
	base="$scheme://127.0.0.1:$port"
}
stop_server() {
	kill -TERM $server 2>/dev/null || true
	server_rc=0
	wait $server 2>/dev/null || server_rc=$?
	server=
}

# exec_pid RUN: the pid of the exec-run executing RUN, from the server's
# "run N: started (..., pid P...)" line (exec-runs start ahead of their
# run, so their command line does not name it).
exec_pid() {
	sed -n "s/.* run $1: started (.*pid \([0-9]*\).*/\1/p" "$T/serve.log" | tail -1
}

api() { curl -s -H "Authorization: Bearer $token" "$@"; }
field() { # field NAME JSON: a string or number field of a flat JSON text
	printf '%s' "$2" | tr -d '\n' | sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\).*/\1/p" | head -1
}
run_status() {
	api "$base/api/v1/runs/$1" | tr -d ' \n' |
		sed -n 's/^{"id":[0-9]*,"pipeline":"[^"]*","status":"\([a-z]*\)".*/\1/p'
}
# wait_run ID STATUS: polls the API (20 s at most) until the run has STATUS.
wait_run() {
	i=0
	while [ $i -lt 400 ]; do
		[ "$(run_status "$1")" = "$2" ] && return 0
		sleep 0.05; i=$((i + 1))
	done
	return 1
}
# wait_for DESCRIPTION COMMAND...: polls COMMAND (20 s at most) until it
# succeeds; on timeout reports not ok with the log's tail.
wait_for() {
	what=$1; shift
	i=0
	while [ $i -lt 400 ]; do
		if "$@"; then return 0; fi
		sleep 0.05; i=$((i + 1))
	done
	not_ok "$what (timed out)" "$(tail -15 "$T/serve.log")"
	return 1
}
# runs_of PROJECT: the ids of the project's runs, oldest first, one a line.
runs_of() {
	api "$base/api/v1/runs?limit=1000" | tr -d ' \n' | sed 's/},{/}\n{/g' |
		sed -n 's/.*"id":\([0-9]*\),"pipeline":"'"$1"'".*/\1/p' | sort -n
}
count_lines() { if [ -z "$1" ]; then echo 0; else printf '%s\n' "$1" | wc -l | tr -d ' '; fi; }
run_id_of() { printf '%s' "$1" | sed -n 's/.*"run":\([0-9]*\).*/\1/p'; }
