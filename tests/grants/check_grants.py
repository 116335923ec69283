#!/usr/bin/env python3
"""Runs docs/security.md's least-privilege GRANTs on current ClickHouse (chdb, embedded) and checks
they are enforced: the sink user can do what the sink does and nothing more; the analyst reads
everything but personal data.

Usage: check_grants.py SCHEMA_SQL SECURITY_MD   (SCHEMA_SQL: the output of `sink schema`)

Run by scripts/test.sh, which installs chdb. The local test server is ClickHouse 18.16, which has
no SQL access control; chdb is current ClickHouse (26.9 in chdb 4.4) as a Python module.
chdb runs ClickHouse in-process as its `default` user and cannot switch users, so each role is
checked in its own process whose `default` user holds exactly that role's GRANTs (the documented
statements, without `TO <user>`, which a users.xml grant may not name). chdb has no writable user
storage either, so the documented `CREATE USER` statements are parsed (`EXPLAIN AST`), not run.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

DB = "qoo10"


def grants_of(security_md: str, user: str) -> list[str]:
    """The documented `GRANT ... TO user;` statements, as users.xml grants (no grantee)."""
    text = open(security_md, encoding="utf-8").read()
    found = re.findall(r"^(GRANT .+?) TO " + re.escape(user) + r";$", text, re.M)
    if not found:
        sys.exit(f"no GRANT ... TO {user}; in {security_md}")
    return found


def create_users(security_md: str, users: list[str]) -> list[str]:
    """The documented `CREATE USER` statements parse on current ClickHouse, one for each role."""
    import chdb

    text = open(security_md, encoding="utf-8").read()
    found = re.findall(r"^(CREATE USER (\w+) .+?);$", text, re.M)
    failures = [f"no CREATE USER {u} ...; in {security_md}" for u in users if u not in {n for _, n in found}]
    # A misspelt statement must be refused, or this check would pass anything.
    steps = [("ok", sql) for sql, _ in found] + [("error", "CREATE USER x IDENTIFIED WITH sha256_pasword BY 'x'")]
    for expect, sql in steps:
        try:
            chdb.query(f"EXPLAIN AST {sql}", "TSV")
            got = "ok"
        except Exception:  # chdb raises its own error type for a syntax error
            got = "error"
        print(f"  {'PASS' if got == expect else 'FAIL'} expected {expect:6} got {got:12} {sql[:110]}")
        if got != expect:
            failures.append(f"{sql}: expected {expect}, got {got}")
    return failures


def write_config(work: str, role: str, grants: list[str]) -> str:
    """config.xml and users.xml in which chdb's `default` user holds exactly `grants`."""
    queries = "".join(f"<query>{g}</query>" for g in grants)
    users = os.path.join(work, f"users-{role}.xml")
    with open(users, "w", encoding="utf-8") as f:
        f.write(
            "<clickhouse><profiles><default/></profiles><quotas><default/></quotas><users><default>"
            "<password></password><networks><ip>::/0</ip></networks><profile>default</profile>"
            f"<quota>default</quota><grants>{queries}</grants></default></users></clickhouse>"
        )
    config = users.replace("users-", "config-")
    with open(config, "w", encoding="utf-8") as f:
        f.write(f"<clickhouse><user_directories><users_xml><path>{users}</path></users_xml></user_directories></clickhouse>")
    return config


def run_role(data: str, config: str, steps: list[tuple[str, str]]) -> list[str]:
    """Runs steps (expect 'ok' or 'denied', SQL) in a fresh process; returns failures."""
    code = r"""
import json, sys, chdb
conn = chdb.connect(sys.argv[1])
cur = conn.cursor()
out = []
for expect, sql in json.load(sys.stdin):
    try:
        cur.execute(sql)
        cur.fetchall()
        got = "ok"
    except Exception as e:
        msg = str(e)
        got = "denied" if "ACCESS_DENIED" in msg or "Not enough privileges" in msg else "error: " + msg[:300]
    out.append([expect, sql, got])
json.dump(out, sys.stdout)
"""
    r = subprocess.run(
        [sys.executable, "-c", code, f"file:{data}?config-file={config}"],
        input=json.dumps(steps),
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        return [f"chdb process failed: {r.stderr.strip()[-500:]}"]
    failures = []
    for expect, sql, got in json.loads(r.stdout):
        line = " ".join(sql.split())[:110]
        print(f"  {'PASS' if got == expect else 'FAIL'} expected {expect:6} got {got[:60]:12} {line}")
        if got != expect:
            failures.append(f"{line}: expected {expect}, got {got}")
    return failures


def main() -> None:
    schema_sql, security_md = sys.argv[1], sys.argv[2]
    import chdb

    print(f"docs/security.md's GRANTs on ClickHouse {chdb.query('SELECT version()', 'TSV').data().strip()} (chdb {chdb.__version__})")
    # `sink schema`: statements end with `;` at the end of a line; `--` lines are comments.
    script = "".join(l for l in open(schema_sql, encoding="utf-8").readlines() if not l.startswith("--"))
    statements = [s.strip() for s in script.split(";\n") if s.strip()]
    if len(statements) < 5:
        sys.exit(f"{schema_sql} holds {len(statements)} statements: not the output of `sink schema`")
    # Every table and view the sink creates is checked, so a new one is covered without an edit
    # here. The inserts copy no rows (`SELECT * … LIMIT 0`): the grant is checked all the same,
    # whatever the table's columns.
    made = re.findall(r"CREATE (TABLE|VIEW) IF NOT EXISTS (\w+)", script)
    tables = [n for k, n in made if k == "TABLE"]
    views = [n for k, n in made if k == "VIEW"]
    # FINAL is read only from the tables that merge rows (plain MergeTree refuses it).
    replacing = {n for n, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)(.*?)ENGINE = \w*Replacing", script, re.S)
                 if "CREATE TABLE" not in body}
    # What analysts read: everything but personal data and the sink's bookkeeping.
    readable = [n for n in tables + views if n not in ("order_contacts", "schema_migrations")]
    sink = grants_of(security_md, "qoo10_sink")
    analyst = grants_of(security_md, "qoo10_analyst")
    failures = []
    roles = []

    def role(name: str, found: list[str]) -> None:
        roles.append((name, not found))
        print(f"test grants::{name} ... {'ok' if not found else 'FAILED'}")
        failures.extend(found)

    print("CREATE USER: the documented statements parse (chdb cannot store users)")
    role("create_user_statements_parse", create_users(security_md, ["qoo10_sink", "qoo10_analyst"]))
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "data")
        print("administrator: creates the databases (as docs/security.md says to)")
        role("administrator_creates_the_databases", run_role(
            data,
            write_config(work, "administrator", ["GRANT ALL ON *.*"]),
            [("ok", f"CREATE DATABASE {DB}"), ("ok", "CREATE DATABASE other"),
             ("ok", "CREATE TABLE other.t (x UInt8) ENGINE = MergeTree ORDER BY x")],
        ))
        print("qoo10_sink: the sink's start-up, writes and retention; nothing else")
        role("sink_user_runs_the_sink_and_nothing_else", run_role(
            data,
            write_config(work, "qoo10_sink", sink),
            # As the sink starts: the database looked up, then its statements run in it.
            [("ok", f"SELECT count() FROM system.databases WHERE name = '{DB}'"), ("ok", f"USE {DB}")]
            + [("ok", s) for s in statements]
            + [("ok", f"INSERT INTO {DB}.{t} SELECT * FROM {DB}.{t} LIMIT 0") for t in tables]
            + [("ok", f"SELECT count() FROM {DB}.{t}{' FINAL' if t in replacing else ''}") for t in tables]
            + [
                ("ok", f"ALTER TABLE {DB}.order_contacts DELETE WHERE ordered_at < now() - INTERVAL 1 DAY"),
                ("denied", f"DROP TABLE {DB}.orders"),
                ("denied", "CREATE DATABASE elsewhere"),
                ("denied", "SELECT count() FROM other.t"),
                ("denied", "INSERT INTO other.t VALUES (1)"),
            ],
        ))
        print("qoo10_analyst: reads every table and view but order_contacts; writes nothing")
        role("analyst_reads_all_but_personal_data", run_role(
            data,
            write_config(work, "qoo10_analyst", analyst),
            [("ok", f"SELECT * FROM {DB}.{t}") for t in readable]
            + [
                ("ok", f"SELECT shop_id, order_no FROM {DB}.orders FINAL"),
                ("denied", f"SELECT count() FROM {DB}.order_contacts"),
                ("denied", f"SELECT buyer_name FROM {DB}.order_contacts"),
                ("denied", f"INSERT INTO {DB}.orders (shop_id, order_no, version) VALUES ('s', 2, 1)"),
                ("denied", f"CREATE TABLE {DB}.mine (x UInt8) ENGINE = MergeTree ORDER BY x"),
                ("denied", f"ALTER TABLE {DB}.orders DELETE WHERE 1"),
                ("denied", "SELECT count() FROM other.t"),
            ],
        ))
    passed = sum(1 for _, ok in roles if ok)
    # The same summary line as cargo's, so scripts/test.sh counts these with the Rust tests.
    print(f"test result: {'ok' if not failures else 'FAILED'}. {passed} passed; {len(roles) - passed} failed; "
          "0 ignored; 0 measured; 0 filtered out (GRANTs on current ClickHouse)")
    if failures:
        print(f"{len(failures)} check(s) failed:")
        for f in failures:
            print("  " + f)
        sys.exit(1)
    print("all grant checks passed")


if __name__ == "__main__":
    main()
