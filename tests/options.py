"""Every option set the template tests bake with, in one place.

Cookiecutter silently ignores an extra_context key it does not know, so a typo ("app_cod")
would bake the defaults and a test could pass for the wrong reason. test_context_keys.py checks
every key of every list here against cookiecutter.json: put new option sets here too, in a
module-level list whose name ends in _OPTION_SETS or _INPUTS, as (id, extra_context, ...) tuples.
"""

from __future__ import annotations

# (id, extra_context): answers the template must accept.
GOOD_OPTION_SETS: list[tuple[str, dict[str, str]]] = [
    ("defaults", {}),
    ("app-code-billing42", {"app_code": "billing42"}),
    ("app-code-20-chars", {"app_code": "a" * 20}),
    (
        "ports-9000-9001-9002",
        {"api_host_port": "9000", "db_host_port": "9001", "redis_host_port": "9002"},
    ),
    ("ports-1024-and-65535", {"api_host_port": "1024", "db_host_port": "65535"}),
    ("ttl-1-hour", {"key_ttl_hours": "1"}),
    ("ttl-720-hours", {"key_ttl_hours": "720"}),
    ("cron-every-5-minutes", {"hello_cron": "0 */5 * * * *"}),
    ("cron-weekdays-at-3", {"cleanup_cron": "30 0 3 * * mon-fri"}),
    ("cron-sunday-as-7-in-jan", {"hello_cron": "0 0 12 * JAN 7"}),
    ("python-3.11", {"python_version": "3.11"}),
    ("python-3.13", {"python_version": "3.13"}),
    (
        "text-with-quotes-and-unicode",
        {
            "project_name": "O'Brien's Café ''' 😀",
            "author": "Zoë Ñ",
            "description": "<b>&'",
        },
    ),
]

_RANGE = "1024-65535"
_TTL = "1-720"

# (id, extra_context, substrings the user must see on stderr): answers the hook must refuse.
BAD_INPUTS: list[tuple[str, dict[str, str], tuple[str, ...]]] = [
    ("app-code-upper-and-dash", {"app_code": "My-App"}, ("app_code: 'My-App'", "2-20")),
    ("app-code-leading-digit", {"app_code": "1abc"}, ("app_code: '1abc'", "2-20")),
    ("app-code-1-char", {"app_code": "a"}, ("app_code: 'a'", "2-20")),
    ("app-code-21-chars", {"app_code": "a" * 21}, (f"app_code: '{'a' * 21}'", "2-20")),
    (
        "app-code-keyword-class",
        {"app_code": "class"},
        ("app_code: 'class'", "Python keyword"),
    ),
    (
        "app-code-soft-keyword-match",
        {"app_code": "match"},
        ("'match'", "Python keyword"),
    ),
    (
        "app-code-pg-reserved-user",
        {"app_code": "user"},
        ("app_code: 'user'", "PostgreSQL"),
    ),
    ("app-code-pg-reserved-select", {"app_code": "select"}, ("'select'", "PostgreSQL")),
    ("app-code-shadows-queue", {"app_code": "queue"}, ("app_code: 'queue'", "shadow")),
    ("app-code-shadows-redis", {"app_code": "redis"}, ("app_code: 'redis'", "shadow")),
    ("app-code-shadows-tests", {"app_code": "tests"}, ("app_code: 'tests'", "shadow")),
    ("api-port-80", {"api_host_port": "80"}, ("api_host_port: '80'", _RANGE)),
    ("db-port-70000", {"db_host_port": "70000"}, ("db_host_port: '70000'", _RANGE)),
    ("redis-port-abc", {"redis_host_port": "abc"}, ("redis_host_port: 'abc'", _RANGE)),
    ("api-port-leading-zero", {"api_host_port": "08080"}, ("'08080'", _RANGE)),
    (
        "ports-api-equals-db",
        {"api_host_port": "9000", "db_host_port": "9000"},
        ("api_host_port and db_host_port: '9000'", "its own host port"),
    ),
    ("ttl-0", {"key_ttl_hours": "0"}, ("key_ttl_hours: '0'", _TTL)),
    ("ttl-minus-1", {"key_ttl_hours": "-1"}, ("key_ttl_hours: '-1'", _TTL)),
    ("ttl-1.5", {"key_ttl_hours": "1.5"}, ("key_ttl_hours: '1.5'", _TTL)),
    ("ttl-721", {"key_ttl_hours": "721"}, ("key_ttl_hours: '721'", _TTL)),
    ("ttl-x", {"key_ttl_hours": "x"}, ("key_ttl_hours: 'x'", _TTL)),
    (
        "cron-5-fields",
        {"hello_cron": "*/10 * * * *"},
        ("hello_cron: expected 6 fields (second minute hour day month weekday), got 5",),
    ),
    (
        "cron-step-70",
        {"hello_cron": "*/70 * * * * *"},
        ("hello_cron: field 'second' in '*/70 * * * * *': step 70 is out of range 1-59",),
    ),
    (
        "cron-hour-25",
        {"cleanup_cron": "* * 25 * * *"},
        ("cleanup_cron: field 'hour'", "value 25 is out of range 0-23"),
    ),
    (
        "cron-1-2-3",
        {"hello_cron": "1-2-3 * * * * *"},
        ("hello_cron: field 'second'", "'1-2-3' is not understood", "0-59"),
    ),
    (
        "cron-day-and-weekday",
        {"cleanup_cron": "0 0 0 1 * mon"},
        ("cleanup_cron:", "'day' and 'weekday'", "set one of them to *"),
    ),
    (
        "project-name-newline",
        {"project_name": "a\nb"},
        ("project_name: 'a\\nb'", "one line"),
    ),
    (
        "project-name-double-quote",
        {"project_name": 'a"b'},
        ("project_name: 'a\"b'", "double"),
    ),
    (
        "project-name-blank",
        {"project_name": "  "},
        ("project_name: must not be empty",),
    ),
    ("author-backslash", {"author": "a\\b"}, ("author: 'a\\\\b'", "backslash")),
    ("description-empty", {"description": ""}, ("description: must not be empty",)),
]

# Several problems at once: one stderr line each, in this order. (The crons are checked after
# rendering, once the other answers are good: see test_hooks.py's two-bad-crons.)
MANY_PROBLEMS_INPUTS: list[tuple[str, dict[str, str], tuple[str, ...]]] = [
    (
        "four-problems",
        {
            "app_code": "My-App",
            "api_host_port": "80",
            "key_ttl_hours": "0",
            "project_name": "",
        },
        ("app_code: ", "project_name: ", "api_host_port: ", "key_ttl_hours: "),
    ),
]

# name -> extra_context, for single tests that bake one particular set of answers.
NAMED_OPTION_SETS: dict[str, dict[str, str]] = {
    "next-steps": {"app_code": "billing42", "api_host_port": "9000"},
    "rerender-new-port": {"api_host_port": "9000"},
    "python-3.9": {"python_version": "3.9"},
    "two-bad-crons": {"hello_cron": "x", "cleanup_cron": "* * 25 * * *"},
}

# (id, extra_context): bakes that get the full, slower checks (lint, type check, schemas).
RENDER_OPTION_SETS: list[tuple[str, dict[str, str]]] = [
    ("defaults", {}),
    (
        "billing42-other-ports-py313",
        {
            "app_code": "billing42",
            "api_host_port": "9080",
            "db_host_port": "9432",
            "redis_host_port": "9379",
            "python_version": "3.13",
        },
    ),
    (
        "app-code-20-chars-ttl-720",
        {"app_code": "abcdefghij0123456789", "key_ttl_hours": "720"},
    ),
    (
        "unicode-text-weekday-cron",
        {
            "project_name": "O'Brien's Café ''' 😀",
            "author": "Zoë Ñ",
            "description": "<b>&'",
            "hello_cron": "0 */5 * * * *",
            "cleanup_cron": "30 0 3 * * mon-fri",
        },
    ),
]

# (id, extra_context): bakes whose stack is started natively and whose own suite is run.
STACK_OPTION_SETS: list[tuple[str, dict[str, str]]] = [
    ("defaults", {}),
    (
        "jobs7-ports-8181-5433-6380",
        {
            "app_code": "jobs7",
            "api_host_port": "8181",
            "db_host_port": "5433",
            "redis_host_port": "6380",
        },
    ),
]
