#!/usr/bin/env python3
"""dashboards-check.py - checks the Grafana dashboards of examples/grafana/
for tests/functional/dashboards.sh.

    dashboards-check.py lint DASHBOARD.json
    dashboards-check.py exprs DASHBOARD.json
    dashboards-check.py query PROMETHEUS-URL DASHBOARD.json [--wait S]

`lint` prints one line per problem (nothing when there is none): the JSON
does not parse, schemaVersion is not 39, the datasource variable
DS_PROMETHEUS (type datasource, query prometheus) is missing, a panel has
no title, no datasource or no target, a target has no expr or a
datasource other than ${DS_PROMETHEUS}.

`exprs` prints "PANEL [REFID]" for each panel target, one a line.

`query` evaluates every panel target's expr through Prometheus's HTTP API
(/api/v1/query, an instant query at the current time), the way Grafana
would send it: the query variables are resolved first (label_values(...)
through /api/v1/label/NAME/values, taking the dashboard's current value
when Prometheus knows it, else the first), then $var and ${var} replaced,
$__rate_interval by 1m, $__interval by 15s, $__range by 1h.  A target
passes when the answer has status success and at least one sample whose
value is a number (not NaN or Inf).  Failing targets are asked again
until all pass or --wait seconds (default 30) have gone by; each target
is then printed as "PASS<TAB>PANEL [REFID]" or
"FAIL<TAB>PANEL [REFID]<TAB>why".  Python 3 stdlib only.
"""
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DS = "${DS_PROMETHEUS}"
FIXED = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def load(path):
    with open(path) as f:
        return json.load(f)


def targets(d):
    for p in d.get("panels", []):
        for t in p.get("targets", []):
            yield p, t


def lint(path):
    problems = []
    try:
        d = load(path)
    except (OSError, ValueError) as e:
        return ["%s: not JSON: %s" % (path, e)]
    if d.get("schemaVersion") != 39:
        problems.append("schemaVersion is %r, not 39" % d.get("schemaVersion"))
    variables = (d.get("templating") or {}).get("list") or []
    if not any(v.get("name") == "DS_PROMETHEUS" and v.get("type") == "datasource" and
               v.get("query") == "prometheus" for v in variables):
        problems.append("no datasource variable DS_PROMETHEUS of type prometheus")
    if not d.get("panels"):
        problems.append("no panels")
    for p in d.get("panels", []):
        name = p.get("title") or "panel %s" % p.get("id")
        if not p.get("title"):
            problems.append("%s: no title" % name)
        ds = p.get("datasource") or {}
        if ds.get("type") != "prometheus" or ds.get("uid") != DS:
            problems.append("%s: datasource is %r" % (name, ds))
        if not p.get("targets"):
            problems.append("%s: no targets" % name)
        for t in p.get("targets", []):
            if not (t.get("expr") or "").strip():
                problems.append("%s [%s]: no expr" % (name, t.get("refId")))
            tds = t.get("datasource")
            if tds is not None and tds.get("uid") != DS:
                problems.append("%s [%s]: datasource is %r" % (name, t.get("refId"), tds))
    return problems


def substitute(text, values):
    def one(m):
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, text)


def get(base, path, params):
    url = base + path + "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def resolve(base, d, values):
    """The query variables, in order (a later one may use an earlier)."""
    for v in (d.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*", q or "")
        if m is None:
            continue
        params = {}
        if m.group(1):
            params["match[]"] = substitute(m.group(1), values)
        try:
            got = get(base, "/api/v1/label/%s/values" % m.group(2), params).get("data") or []
        except OSError:
            got = []
        current = (v.get("current") or {}).get("value")
        if current in got:
            values[v["name"]] = current
        elif got:
            values[v["name"]] = got[0]


def evaluate(base, expr):
    try:
        r = get(base, "/api/v1/query", {"query": expr})
    except urllib.error.HTTPError as e:
        try:
            return "HTTP %d: %s" % (e.code, json.load(e).get("error"))
        except ValueError:
            return "HTTP %d" % e.code
    except OSError as e:
        return str(e)
    if r.get("status") != "success":
        return "status %s: %s" % (r.get("status"), r.get("error"))
    data = r.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar":
        result = [{"value": result}]
    if not result:
        return "no data"
    for s in result:
        try:
            if math.isfinite(float(s["value"][1])):
                return None
        except (KeyError, TypeError, ValueError, IndexError):
            pass
    return "no sample is a number: %s" % json.dumps(result)[:300]


def query(base, path, wait):
    d = load(path)
    deadline = time.monotonic() + wait
    while True:
        values = dict(FIXED)
        resolve(base, d, values)
        out = []
        for p, t in targets(d):
            expr = substitute(t.get("expr", ""), values)
            why = evaluate(base, expr)
            out.append((p.get("title"), t.get("refId"), expr, why))
        if all(o[3] is None for o in out) or time.monotonic() >= deadline:
            break
        time.sleep(1)
    for title, ref, expr, why in out:
        if why is None:
            print("PASS\t%s [%s]" % (title, ref))
        else:
            print("FAIL\t%s [%s]\t%s: %s" % (title, ref, why, expr))


def main(argv):
    if len(argv) == 3 and argv[1] == "lint":
        for line in lint(argv[2]):
            print(line)
        return 0
    if len(argv) == 3 and argv[1] == "exprs":
        for p, t in targets(load(argv[2])):
            print("%s [%s]" % (p.get("title"), t.get("refId")))
        return 0
    if len(argv) in (4, 6) and argv[1] == "query":
        wait = float(argv[5]) if len(argv) == 6 and argv[4] == "--wait" else 30
        query(argv[2].rstrip("/"), argv[3], wait)
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
