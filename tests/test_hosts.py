"""The rendered stack across five hosts, with links cut for real.

Hosts (network namespaces on one switch, tests/hosts_net.py): `data` runs PostgreSQL
(10.77.0.2) and Redis (10.77.0.3), each on a link of its own; `w1`, `w2` and `w3` run a worker
each; `api` runs the API. Everything is the rendered project's own: roles and migrations from
`deploy/local/stack.py bootstrap|migrate`, the workers and the API through
`deploy/local/launch.py` as the native stack's supervisord runs them, so each process holds
only its own secrets (checked in /proc for every process on every host). Short timeouts come
from the project's settings in `.env` (WORKER_JOB_TIMEOUT=10: arq's in-progress key lives
10 + 5 + 10 = 25 s).

The scenario, with `hello` jobs that sleep so that some are mid-run when a link goes:
1. cut the link of the worker host running the most jobs: its jobs run again on the others once
   their in-progress keys expire; every job accepted meanwhile runs; every cron tick runs;
2. restore it: the worker rejoins (its heartbeat, then jobs it runs);
3. cut Redis' link for 30 s, then PostgreSQL's for 30 s, submitting all along (a submission
   without an answer is retried under its id until it gets 202 or 409, as the README says).

What is counted, for every accepted job and every cron run, from the ledger, an audit trigger
the test adds to the ledger table (every insert and status change, as the superuser), the
`hello` table and the workers' logs (each run of `hello` logs "started" once, on its own host's
disk):
- it ends `succeeded`; the jobs of the worker-cut phase entered that status exactly once and
  never left it; any other job left it only to run again as a re-try the ledger records (a
  higher `tries`: a 30 s Redis cut outlasts the 25 s in-progress key of a job mid-run);
- runs <= the ledger's `tries` + the runs a worker gave back without using a try (logged
  "back to the queue (no try used)" after the start): nothing ran that the ledger does not
  count (a try is numbered when arq claims the job, a given-back number is used again);
- the jobs cut on the worker ran again exactly once (tries 2), the others of that phase once;
- every cron tick due while the worker was cut ran;
- its side effect, the `hello` row, exists once.

The test prints its timings and counts as JSON (shown with `-s`, and on a failure).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from hosts_net import Host, Network, NetworkError, pids_in, require_namespaces, stop_all
from hosts_stack import (
    API_PORT,
    PG_PORT,
    REDIS_PORT,
    Servers,
    Service,
    base_env,
    read_env,
    run,
    runs_in_logs,
    set_env,
    supervised_commands,
)

DATA = Host("data", ("10.77.0.2", "10.77.0.3"))
WORKERS = [Host(f"w{i}", (f"10.77.0.1{i}",)) for i in (1, 2, 3)]
API = Host("api", ("10.77.0.20",))
JOB_TIMEOUT = 10  # WORKER_JOB_TIMEOUT; arq's in-progress TTL is this + 15 s
CRON_EVERY_S = 5
OUTAGE_S = 30
SECRET_WORDS = ("PWD", "PASSWORD", "TOKEN", "SECRET")


@pytest.fixture
def network() -> Iterator[Network]:
    try:
        require_namespaces()
        net = Network([DATA, *WORKERS, API])
    except NetworkError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield net
    finally:
        net.close()


class Ledger:
    """The ledger, read as the cluster's superuser (the test's own connection)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.schema = env["DB_SCHEMA"]
        self.dsn = psycopg.conninfo.make_conninfo(
            host=DATA.addresses[0],
            port=PG_PORT,
            dbname=env["DB_NAME"],
            user=env["DB_BOOTSTRAP_USER"],
            password=env["DB_BOOTSTRAP_PWD"],
            connect_timeout=3,
        )

    def query(self, sql: str, *args: object) -> list[tuple]:  # type: ignore[type-arg]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]

    def add_audit(self) -> None:
        """Every insert and status change of a job row, in a table of the test's own."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE SCHEMA hosts_audit;"
                "CREATE TABLE hosts_audit.change (n bigserial PRIMARY KEY, job_id text, "
                "old_status text, new_status text, tries int, worker_id text, "
                "at timestamptz DEFAULT clock_timestamp());"
                "CREATE FUNCTION hosts_audit.record() RETURNS trigger LANGUAGE plpgsql "
                "SECURITY DEFINER SET search_path = pg_catalog AS $$ BEGIN "
                "INSERT INTO hosts_audit.change (job_id, old_status, new_status, tries, worker_id) "
                "VALUES (NEW.job_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status::text END, "
                "NEW.status::text, NEW.tries, NEW.worker_id); RETURN NULL; END $$;"
                f"CREATE TRIGGER hosts_audit AFTER INSERT OR UPDATE ON {self.schema}.job "
                "FOR EACH ROW EXECUTE FUNCTION hosts_audit.record()"
            )

    def rows(self, ids: list[str]) -> dict[str, tuple[str, int, str]]:
        """status, tries, worker_id by job id."""
        found = self.query(
            f"SELECT job_id, status::text, tries, worker_id FROM {self.schema}.job "
            "WHERE job_id = ANY(%s)",
            ids,
        )
        return {jid: (status, tries, worker) for jid, status, tries, worker in found}

    def wait_succeeded(self, ids: list[str], within: float) -> dict[str, tuple[str, int, str]]:
        deadline = time.monotonic() + within
        rows: dict[str, tuple[str, int, str]] = {}
        while time.monotonic() < deadline:
            rows = self.rows(ids)
            if len(rows) == len(ids) and all(r[0] == "succeeded" for r in rows.values()):
                return rows
            time.sleep(0.5)
        late = Counter(rows.get(jid, ("missing",))[0] for jid in ids)
        pytest.fail(f"not all {len(ids)} jobs succeeded within {within:.0f} s: {dict(late)}")


class Jobs:
    """Submits `hello` jobs to the API; a submission without an answer is tried again."""

    def __init__(self, token: str) -> None:
        self.http = httpx.Client(
            base_url=f"http://{API.addresses[0]}:{API_PORT}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5.0,
        )
        self.accepted: dict[str, str] = {}  # job id -> phase
        self.pending: dict[str, tuple[str, int]] = {}  # job id -> phase, sleep_ms
        self.answers: Counter[tuple[str, str]] = Counter()

    def submit(self, jid: str, phase: str, sleep_ms: int) -> None:
        body = {"job_id": jid, "function": "hello", "params": {"name": jid, "sleep_ms": sleep_ms}}
        try:
            answer = str(self.http.post("/api/v1/jobs", json=body).status_code)
        except httpx.HTTPError as exc:
            answer = type(exc).__name__
        self.answers[phase, answer] += 1
        if answer in ("202", "409"):  # 409: an earlier try without an answer had committed
            self.accepted[jid] = phase
            self.pending.pop(jid, None)
        else:
            self.pending[jid] = (phase, sleep_ms)

    def burst(self, phase: str, count: int, sleep_ms: int) -> list[str]:
        ids = [f"{phase}-{i:02d}" for i in range(count)]
        for jid in ids:
            self.submit(jid, phase, sleep_ms)
        return ids

    def retry_pending(self, within: float) -> None:
        deadline = time.monotonic() + within
        while self.pending and time.monotonic() < deadline:
            for jid, (phase, sleep_ms) in list(self.pending.items()):
                self.submit(jid, phase, sleep_ms)
            time.sleep(0.5)
        assert not self.pending, f"never answered 202 or 409: {sorted(self.pending)}"


def wait_for(what: str, check, within: float, every: float = 0.5) -> float:  # type: ignore[no-untyped-def]
    """Seconds until `check()` is true; fails the test after `within`."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            if check():
                return time.monotonic() - start
        except (OSError, httpx.HTTPError, redis.RedisError, psycopg.Error):
            pass
        time.sleep(every)
    pytest.fail(f"{what}: not within {within:.0f} s")


def check_job(
    jid: str, row: tuple[str, int, str], history: list[tuple[str | None, str, int]], strict: bool
) -> list[str]:
    """The job ended `succeeded`. `strict`: it entered that status once and never left it;
    otherwise it left it only to run again as a re-try the ledger records (a higher `tries`),
    as when its worker's end did not reach Redis before its in-progress key expired."""
    status = row[0]
    entered = sum(new == "succeeded" != old for old, new, _ in history)
    problems = [] if status == "succeeded" else [f"{jid}: ended {status}"]
    if strict and (entered != 1 or any(old == "succeeded" != new for old, new, _ in history)):
        problems.append(f"{jid}: entered succeeded {entered} times: {history}")
    succeeded_at = 0
    for old, new, tries in history:
        if new == "succeeded":
            succeeded_at = tries
        elif old == "succeeded" and not (new == "in_progress" and tries > succeeded_at):
            problems.append(f"{jid}: left succeeded without a recorded re-try: {history}")
    return problems


def process_secrets(python: str, project: Path) -> dict[str, list[str]]:
    app = read_env(project)["APP_CODE"]
    code = f"import json; from {app}.core.config import PROCESS_SECRETS as P; print(json.dumps(P))"
    out = run([python, "-c", code], "reading PROCESS_SECRETS", env=base_env(project))
    return dict(json.loads(out))


def check_secrets(env: dict[str, str], services: list[Service], own: dict[str, list[str]]) -> None:
    """Every process on every host: no secret on its command line; in its environment, only
    the secrets of its own role (PostgreSQL, Redis and the rest: none)."""
    secrets = {k: v for k, v in env.items() if any(w in k for w in SECRET_WORDS) and v}
    roles = {s.pid: s.role for s in services}
    for host in (DATA, *WORKERS, API):
        for pid in pids_in(host.namespace):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            except OSError:
                continue  # gone meanwhile
            shown = [k for k, v in secrets.items() if v in command]
            assert not shown, f"{host.name} pid {pid} has {shown} on its command line"
            held = {k for k, v in secrets.items() if f"={v}\0" in environ + "\0"}
            allowed = set(own.get(roles.get(pid, ""), ()))
            assert held <= allowed, f"{host.name} pid {pid}: holds {sorted(held - allowed)}"
    for service in services:  # and each holds its own
        assert set(own[service.role]) <= set(service.environ()), service.role


# --- the scenario ------------------------------------------------------------------------------


class Scenario:
    def __init__(self, net: Network, env: dict[str, str], workers: list[Service]) -> None:
        self.net, self.env, self.workers = net, env, workers
        self.app = env["APP_CODE"]
        self.ledger = Ledger(env)
        self.jobs = Jobs(env["API_TOKEN"])
        self.redis = redis.Redis(
            host=DATA.addresses[1],
            port=REDIS_PORT,
            password=env["REDIS_PASSWORD"],
            socket_timeout=2,
            socket_connect_timeout=2,
        )
        self.timings: dict[str, float] = {}
        self.facts: dict[str, object] = {}
        self.victim: Service | None = None
        self.cut_jobs: list[str] = []
        self.cron_window = (0.0, 0.0)  # while a worker is cut (unix s)

    def beats(self, since_ms: float) -> set[str]:
        """Worker ids whose heartbeat reached Redis after `since_ms`."""
        found = self.redis.zrangebyscore(f"{self.app}:workers", since_ms, "+inf")
        return {raw.decode() for raw in found}

    def worker_of(self, worker_id: str) -> Service:
        return next(w for w in self.workers if worker_id.endswith(f":{w.pid}"))

    def cut_a_worker(self) -> None:
        """Cut the link of the worker host with the most jobs mid-run; the others take them."""
        ids = self.jobs.burst("cut", 20, sleep_ms=6000)
        wait_for(
            "the first 20 jobs all running",
            lambda: [r[0] for r in self.ledger.rows(ids).values()].count("in_progress") == 20,
            15,
            0.1,
        )
        running = Counter(r[2] for r in self.ledger.rows(ids).values())
        worker_id, _ = running.most_common(1)[0]
        self.victim = self.worker_of(worker_id)
        self.cut_jobs = [j for j, r in self.ledger.rows(ids).items() if r[2] == worker_id]
        self.net.cut(self.victim.host)
        started = time.monotonic()
        self.facts["running when cut"] = dict(running)
        during = [*self.jobs.burst("during-cut", 10, sleep_ms=1000)]
        cron_from = time.time()
        rows = self.ledger.wait_succeeded(ids + during, within=90)
        self.timings["cut jobs run again elsewhere"] = time.monotonic() - started
        again = {j: rows[j] for j in self.cut_jobs}
        assert all(r[2] != worker_id for r in again.values()), again
        # Ticks while it is cut: each once, by the others.
        time.sleep(CRON_EVERY_S)
        self.cron_window = (cron_from, time.time())

    def restore_the_worker(self) -> None:
        assert self.victim is not None
        self.net.restore(self.victim.host)
        back = time.time() * 1000
        victim_id = f":{self.victim.pid}"
        self.timings["cut worker beats again"] = wait_for(
            "the cut worker's heartbeat after its link is back",
            lambda: any(w.endswith(victim_id) for w in self.beats(back)),
            150,
        )
        ids = self.jobs.burst("rejoined", 24, sleep_ms=2000)
        rows = self.ledger.wait_succeeded(ids, within=120)
        ran = sum(r[2].endswith(victim_id) for r in rows.values())
        self.facts["jobs the rejoined worker ran"] = ran
        assert ran > 0, "the worker whose link came back ran none of 24 new jobs"
        self.timings["restored, rejoined and ran jobs"] = time.time() - back / 1000

    def cut_server(self, link: int, phase: str) -> None:
        """Cut PostgreSQL's (0) or Redis' (1) link for OUTAGE_S, submitting all along."""
        self.jobs.burst(f"{phase}-before", 10, sleep_ms=3000)
        time.sleep(1)  # mid-run when the link goes
        self.net.cut(DATA, link)
        cut_at = time.monotonic()
        i = 0
        while time.monotonic() - cut_at < OUTAGE_S:
            self.jobs.submit(f"{phase}-during-{i:02d}", f"{phase}-during", 500)
            i += 1
            time.sleep(2)
        self.net.restore(DATA, link)
        self.jobs.retry_pending(within=60)
        self.timings[f"{phase}: {OUTAGE_S} s cut, then every submission answered"] = (
            time.monotonic() - cut_at
        )

    def verify(self, logs: list[Path]) -> list[str]:
        """Every count the module docstring lists; returns what is wrong, one line each."""
        accepted = sorted(self.jobs.accepted)
        rows = self.ledger.wait_succeeded(accepted, within=180)
        ticks = [
            r[0]
            for r in self.ledger.query(
                f"SELECT job_id FROM {self.ledger.schema}.job WHERE job_id LIKE 'cron:hello:%%'"
            )
        ]
        rows.update(self.ledger.rows(ticks))
        started, given_back = runs_in_logs(logs)
        history: dict[str, list[tuple[str | None, str, int]]] = defaultdict(list)
        for jid, old, new, tries in self.ledger.query(
            "SELECT job_id, old_status, new_status, tries FROM hosts_audit.change ORDER BY n"
        ):
            history[jid].append((old, new, tries))
        hello = dict(self.ledger.query(
            f"SELECT job_id, count(*) FROM {self.ledger.schema}.hello WHERE job_id = ANY(%s) "
            "GROUP BY job_id", accepted + ticks,
        ))  # fmt: skip
        problems = []
        for jid in accepted + ticks:
            strict = self.jobs.accepted.get(jid) in ("cut", "during-cut", "rejoined")
            problems += check_job(jid, rows[jid], history[jid], strict)
            runs, back, tries = started[jid], given_back[jid], rows[jid][1]
            if runs == 0:
                problems.append(f"{jid}: no run of it in the workers' logs")
            if runs > tries + back:
                problems.append(f"{jid}: ran {runs} times; {tries} tries, {back} given back")
            if hello.get(jid) != 1:
                problems.append(f"{jid}: {hello.get(jid, 0)} hello rows")
        for jid, phase in self.jobs.accepted.items():
            want = 2 if jid in self.cut_jobs else 1
            if phase in ("cut", "during-cut", "rejoined") and rows[jid][1] != want:
                problems.append(f"{jid}: {rows[jid][1]} tries, not {want}")
        # arq runs a tick at a fixed fraction of its second: ticks are named by their second.
        first, last = (int(t) for t in self.cron_window)
        due = {s for s in range(first + 1, last - 1) if s % CRON_EVERY_S == 0}
        ran = {int(jid.rsplit(":", 1)[1]) // 1000 for jid in ticks}
        problems += [f"the cron tick of {s} (unix s) did not run" for s in sorted(due - ran)]
        retried = [j for j in ticks if rows[j][1] > 1]
        self.facts.update(
            {
                "accepted jobs": len(accepted),
                "cron runs": len(ticks),
                "ticks due while a worker was cut": len(due),
                "cron runs retried": len(retried),
                "runs in the logs": sum(started[j] for j in accepted + ticks),
                "runs given back": sum(given_back.values()),
                "tries > 1": sum(rows[j][1] > 1 for j in accepted),
                "run again after succeeding (a recorded re-try)": sum(
                    old == "succeeded" != new
                    for j in accepted + ticks
                    for old, new, _ in history[j]
                ),
                "answers": dict(sorted((f"{p} {a}", n) for (p, a), n in self.jobs.answers.items())),
            }
        )
        return problems


def test_five_hosts_links_cut_nothing_accepted_is_lost(
    cookies, network: Network, project_python: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    result = cookies.bake()
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    set_env(
        project,
        {
            "DB_HOST": DATA.addresses[0],
            "DB_HOST_PORT": str(PG_PORT),
            "REDIS_HOST": DATA.addresses[1],
            "REDIS_HOST_PORT": str(REDIS_PORT),
            "API_HOST": API.addresses[0],
            "API_HOST_PORT": str(API_PORT),
            "FLYWAY_URL": f"jdbc:postgresql://{DATA.addresses[0]}:{PG_PORT}/"
            + read_env(project)["DB_NAME"],
            "WORKER_JOB_TIMEOUT": str(JOB_TIMEOUT),
            "WORKER_MAX_JOBS": "8",
            "HELLO_CRON": f'"*/{CRON_EVERY_S} * * * * *"',
            "LOG_LEVEL": "INFO",
        },
    )
    env = read_env(project)
    servers = Servers(network, DATA, env)
    logs = {h.name: tmp_path / f"{h.name}.log" for h in (*WORKERS, API)}
    services: list[Service] = []
    scenario: Scenario | None = None
    try:
        servers.start_postgres()
        servers.start_redis()
        for step in ("bootstrap", "migrate"):
            run(
                [project_python, "deploy/local/stack.py", step],
                step,
                cwd=project,
                env=base_env(project),
            )
        Ledger(env).add_audit()
        # The native stack's runtime folder, as `make up` makes it (launch.py keeps files there).
        for folder in (project / ".local", project / ".local" / "run"):
            folder.mkdir(mode=0o700, exist_ok=True)
        commands = supervised_commands(project_python, project)
        services = [
            Service(network, h, project, commands["worker"], "worker", logs[h.name])
            for h in WORKERS
        ] + [Service(network, API, project, commands["api"], "api", logs["api"])]
        scenario = Scenario(network, env, services[:3])
        health = f"http://{API.addresses[0]}:{API_PORT}/health"
        started = time.time() * 1000
        wait_for("the API's /health", lambda: httpx.get(health, timeout=1).status_code == 200, 60)
        wait_for("3 workers' heartbeats", lambda: len(scenario.beats(started)) == 3, 60)  # type: ignore[union-attr]
        check_secrets(env, services, process_secrets(project_python, project))
        scenario.timings["set up (bake, servers, roles, migrations, 4 services)"] = (
            time.monotonic() - began
        )
        scenario.cut_a_worker()
        scenario.restore_the_worker()
        scenario.cut_server(1, "redis-cut")
        scenario.cut_server(0, "postgres-cut")
        problems = scenario.verify([logs[h.name] for h in WORKERS])
        scenario.timings["total"] = time.monotonic() - began
        assert not problems, "\n".join(problems[:40])
    except BaseException:
        print(servers.logs())
        for name, log in logs.items():
            if log.exists():
                print(f"--- {name}\n" + "\n".join(log.read_text().splitlines()[-40:]))
        raise
    finally:
        if scenario is not None:
            print(
                json.dumps(
                    {"timings_s": scenario.timings, "counts": scenario.facts}, indent=1, default=str
                )
            )
        for host in (API, *WORKERS, DATA):
            stop_all(host.namespace)
        servers.close()
