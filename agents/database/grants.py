"""What a MySQL/MariaDB user may do beyond reading its own schema, read from ``SHOW GRANTS``.

The agent needs SELECT (and SHOW VIEW) on its own schema and nothing else. The SQL guard refuses
everything else the model writes, but a user that can write, read the server's files (FILE), see
every session's statements (PROCESS), administer the server (SUPER…) or read other schemas turns
any gap in the guard into a breach; ``grant_problems`` names each such grant, in words for a log
line or ``/health``.
"""

from __future__ import annotations

import re

# Privileges that change data, schema or server-side code.
WRITE = frozenset(
    {
        "ALTER",
        "ALTER ROUTINE",
        "CREATE",
        "CREATE ROUTINE",
        "CREATE TEMPORARY TABLES",
        "CREATE VIEW",
        "DELETE",
        "DELETE HISTORY",
        "DROP",
        "EVENT",
        "EXECUTE",
        "GRANT OPTION",
        "INDEX",
        "INSERT",
        "LOCK TABLES",
        "REFERENCES",
        "TRIGGER",
        "UPDATE",
    }
)
# Privileges on the server rather than on data, with what they let a query do.
SERVER = {
    "FILE": "it can read and write files on the database server (LOAD_FILE, INTO OUTFILE)",
    "PROCESS": "it can see every session's statements (SHOW PROCESSLIST)",
    "SUPER": "it can administer the server",
}
# What the agent needs, on its own schema.
READ = frozenset({"SELECT", "SHOW VIEW"})
ALL = {"ALL", "ALL PRIVILEGES"}

GRANT_LINE = re.compile(
    r"^GRANT\s+(?P<privileges>.+?)\s+ON\s+(?:(?:TABLE|FUNCTION|PROCEDURE|PACKAGE BODY|PACKAGE)\s+)?"
    r"(?P<scope>.+?)\s+TO\s+",
    re.I | re.S,
)


def grant_problems(grants: list[str], database: str) -> list[str]:
    """The grants (lines of ``SHOW GRANTS``) that go beyond reading ``database``, one sentence each."""
    problems: list[str] = []
    for line in grants:
        match = GRANT_LINE.match(line.strip())
        if match is None:  # a role granted to the user (GRANT `role` TO …): its own lines are listed too
            continue
        privileges = _privileges(match.group("privileges"))
        if re.search(r"\bWITH\s+GRANT\s+OPTION\b", line, re.I):
            privileges.add("GRANT OPTION")
        scope = match.group("scope").strip()
        everything = privileges & ALL
        writes = sorted(everything or privileges & WRITE)
        if writes:
            problems.append(f"the agent's database user can write: {', '.join(writes)} on {scope}")
        for privilege in sorted(SERVER):
            if privilege in privileges or (everything and scope == "*.*"):
                problems.append(f"the agent's database user holds {privilege}: {SERVER[privilege]}")
        others = sorted(privileges - WRITE - READ - set(SERVER) - ALL - {"USAGE"})
        if others:
            problems.append(f"the agent's database user holds server privileges: {', '.join(others)} on {scope}")
        data = sorted(privileges & (READ | WRITE | ALL))
        if data and not _own(scope, database):
            problems.append(
                f"the agent's database user has grants outside its schema {database}: {', '.join(data)} on {scope}"
            )
    return problems


def _privileges(text: str) -> set[str]:
    """``SELECT (a, b), INSERT, SHOW VIEW`` → {SELECT, INSERT, SHOW VIEW}: column lists dropped."""
    without_columns = re.sub(r"\([^)]*\)", "", text)
    return {" ".join(part.split()).upper() for part in without_columns.split(",") if part.strip()}


def _own(scope: str, database: str) -> bool:
    """Whether ``scope`` (`` `shop`.* ``, `` `shop`.`orders` ``) is in ``database`` and no other schema.

    In a grant, ``%`` in a schema's name matches any text (other schemas, then) and ``_`` any one
    character (``shop_db`` names itself, as it is meant to; ``\\_`` is a plain underscore)."""
    schema = scope.rsplit(".", 1)[0] if "." in scope else ""
    name = schema.strip("`")
    if not name or re.search(r"(?<!\\)%", name):
        return False
    pattern = "".join(
        "_" if token == "\\_" else "%" if token == "\\%" else "." if token == "_" else re.escape(token)
        for token in re.findall(r"\\.|.", name)
    )
    return re.fullmatch(pattern, database, re.I) is not None
