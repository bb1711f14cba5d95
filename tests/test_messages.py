"""Messages that tell the truth (issue 13): a missing driver, a store the user may only read, a
folder init cannot write, a damaged SQLite file, a 503 that leaks nothing, a typo in a key,
global options after the command, and piped tables that are not cut at 80 columns.

Permission tests run the command as a user who may read but not write (when the suite runs as
root, where chmod stops nothing: root with every capability dropped through ``setpriv``, so the
permission bits bind it like any owner, and the checkout and its venv stay readable wherever
they were cloned), on a world-readable folder; each first proves that the user really cannot
write there.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest

from banfeed import config as config_mod
from banfeed.cli import main
from banfeed.cli.base import READ_ONLY_COMMANDS
from banfeed.errors import StoreError
from banfeed.store import Store
from conftest import RunningDaemon, cli, wait_for, write_config

PUBLIC = "93.184.216.34"
LONG_NOTE = "partner scanner " + "x" * 200 + " end-of-note"
AS_ROOT = os.geteuid() == 0
# Root without capabilities: CAP_DAC_OVERRIDE gone, the folder and file modes decide.
READER = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if AS_ROOT else []


def banfeed(*args: str, env: dict[str, str] | None = None, reader: bool = False) -> Any:
    """``python -m banfeed ARGS`` in a subprocess with pipes (not a terminal); as a user
    without write access when ``reader``."""
    command = [sys.executable, "-m", "banfeed", *args]
    return run(command, env=env, reader=reader)


def run(command: list[str], env: dict[str, str] | None = None, reader: bool = False) -> Any:
    if reader:
        command = [*READER, *command]
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "BANFEED_CONFIG")}
    full_env |= {"BANFEED_ACTOR": "analyst", **(env or {})}
    return subprocess.run(
        command, env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can read (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="banfeed-msg-"))
    path.chmod(0o755)
    yield path
    for sub in [path, *path.rglob("*")]:
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


def make_read_only(*paths: Path) -> None:
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)


def assert_cannot_write(folder: Path) -> None:
    """The reader really cannot write: else a permission test would pass vacuously."""
    probe = run([sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"], reader=True)
    assert probe.returncode != 0 and "PermissionError" in probe.stderr
    assert not (folder / "probe").exists()


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def store_site(shared_dir: Path) -> dict[str, Any]:
    """A config and a store written by their owner, with an allow entry and a published ban."""
    state = shared_dir / "state"
    state.mkdir()
    config = write_config(shared_dir / "banfeed.toml", f"sqlite:///{state / 'banfeed.db'}")
    env = {"BANFEED_CONFIG": str(config)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    assert cli("ban", PUBLIC, "--note", "scanner", env=env).exit_code == 0
    assert cli("allow", "add", "151.101.1.0/24", "--note", LONG_NOTE, env=env).exit_code == 0
    assert cli("export", "--output", "-", env=env).exit_code == 0
    return {"dir": shared_dir, "state": state, "db": state / "banfeed.db", "config": config}


# -- PostgreSQL without its driver ---------------------------------------------------------------


def test_postgresql_url_without_the_driver_says_what_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "psycopg").mkdir(parents=True)
    (fake / "psycopg" / "__init__.py").write_text("raise ImportError('no psycopg here')\n")
    config = write_config(tmp_path / "banfeed.toml", "postgresql://banfeed@127.0.0.1:5432/banfeed")
    env = {"PYTHONPATH": str(fake), "BANFEED_CONFIG": str(config)}
    for command in (["list"], ["db", "upgrade"]):
        result = banfeed(*command, env=env)
        assert result.returncode == 1
        line = one_line_error(result.stderr)
        assert "pip install 'banfeed[postgresql]'" in line and "psycopg" in line


# -- read-only users -----------------------------------------------------------------------------


@pytest.mark.parametrize("side_files", [False, True], ids=["closed-store", "with-wal-files"])
def test_a_user_who_may_only_read_the_store_can_list_and_show(
    store_site: dict[str, Any], side_files: bool
) -> None:
    db: Path = store_site["db"]
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    if side_files:  # a store some writer has open: its -wal and -shm exist, readable
        holder = sqlite3.connect(db)
        holder.execute("SELECT count(*) FROM offenders").fetchall()
        assert db.with_name("banfeed.db-shm").exists()
    else:
        assert not db.with_name("banfeed.db-wal").exists()
    try:
        make_read_only(store_site["state"], *store_site["state"].iterdir())
        assert_cannot_write(store_site["state"])
        env = {"BANFEED_CONFIG": str(store_site["config"])}
        listed = banfeed("list", "--all", env=env, reader=True)
        assert listed.returncode == 0, listed.stderr
        shown = banfeed("show", PUBLIC, env=env, reader=True)
        assert shown.returncode == 0, shown.stderr
        assert PUBLIC in shown.stdout and "ban" in shown.stdout
        allowed = banfeed("allow", "list", env=env, reader=True)
        assert allowed.returncode == 0 and "151.101.1.0/24" in allowed.stdout
        feeds = banfeed("feeds", env=env, reader=True)
        assert feeds.returncode == 0 and "quarantine" in feeds.stdout
        history = banfeed("feeds", "history", "quarantine", env=env, reader=True)
        assert history.returncode == 0, history.stderr
        for command in (["bans"], ["events"]):
            read = banfeed(*command, env=env, reader=True)
            assert read.returncode == 0 and PUBLIC in read.stdout, (command, read.stderr)
        checked = banfeed("check", env=env, reader=True)
        assert checked.returncode == 0 and "schema" in checked.stdout, checked.stderr

        before = db.read_bytes()
        banned = banfeed("ban", "93.184.216.35", env=env, reader=True)
        assert banned.returncode == 1
        line = one_line_error(banned.stderr)
        assert "permission denied" in line and str(db) in line and "banfeed init" not in line
        assert db.read_bytes() == before
    finally:
        if side_files:
            holder.close()


def test_an_unlocked_read_that_a_writer_changed_is_refused(store_site: dict[str, Any]) -> None:
    """The reader cannot create the lock file, so it reads without locks; when a writer
    checkpoints into the file meanwhile, it says so instead of showing a mixed read."""
    db: Path = store_site["db"]
    assert not db.with_name("banfeed.db-wal").exists()
    db.chmod(0o644)  # the owner lets others read it (a new store is 0640: docs/safety.md)
    store_site["state"].chmod(0o555)
    assert_cannot_write(store_site["state"])
    reader = (
        "import sys\n"
        "from banfeed.store import Store\n"
        "from banfeed.errors import StoreError\n"
        f"store = Store('sqlite:///{db}', read_only=True)\n"
        "try:\n"
        "    with store.raw_read() as conn:\n"
        "        conn.exec_driver_sql('SELECT count(*) FROM offenders').fetchall()\n"
        "        print('reading', flush=True)\n"
        "        sys.stdin.readline()\n"
        "except StoreError as exc:\n"
        "    print('refused:', exc, flush=True)\n"
        "else:\n"
        "    print('read', flush=True)\n"
    )
    command = [*READER, sys.executable, "-c", reader]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == "reading"
        store_site["state"].chmod(0o755)  # the owner writes (and checkpoints on close)
        env = {"BANFEED_CONFIG": str(store_site["config"])}
        assert cli("ban", "93.184.216.36", env=env).exit_code == 0
        proc.stdin.write("\n")
        proc.stdin.flush()
        answer = proc.stdout.readline()
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
        proc.stdout.close()
    assert answer.startswith("refused:") and "changed while it was read" in answer


def test_read_only_commands_exist() -> None:
    names = set()

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        names.add(" ".join(path))
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))

    walk(main, ())
    assert READ_ONLY_COMMANDS <= names
    assert {"list", "show", "feeds", "allow list"} <= READ_ONLY_COMMANDS


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'banfeed.db'}"
    Store(url, create=True).upgrade()
    store = Store(url, read_only=True)
    try:
        with pytest.raises(StoreError, match="readonly"), store.raw_write() as conn:
            conn.exec_driver_sql("DELETE FROM meta")
    finally:
        store.close()


# -- init where it cannot write ------------------------------------------------------------------


def test_init_in_a_folder_it_cannot_write_says_permission_denied(shared_dir: Path) -> None:
    folder = shared_dir / "etc"
    folder.mkdir()
    make_read_only(folder)
    assert_cannot_write(folder)
    result = banfeed("--config", str(folder / "banfeed.toml"), "init", reader=True)
    assert result.returncode == 1
    line = one_line_error(result.stderr)
    assert "permission denied" in line and str(folder / "banfeed.toml") in line
    assert "banfeed init" not in line
    assert not (folder / "banfeed.toml").exists()


def test_init_with_a_store_folder_it_cannot_write_says_permission_denied(
    shared_dir: Path,
) -> None:
    state = shared_dir / "state"
    state.mkdir()
    config = write_config(shared_dir / "banfeed.toml", f"sqlite:///{state / 'banfeed.db'}")
    make_read_only(state, shared_dir)
    assert_cannot_write(state)
    result = banfeed("init", env={"BANFEED_CONFIG": str(config)}, reader=True)
    assert result.returncode == 1
    assert "exists; keeping it" in result.stderr
    line = one_line_error(result.stderr.split("\n", 1)[1])
    assert "permission denied" in line and str(state / "banfeed.db") in line
    assert "run `banfeed init`" not in line
    # and a reader's `list` of a store that is not there yet says it is missing
    listed = banfeed("list", env={"BANFEED_CONFIG": str(config)}, reader=True)
    assert listed.returncode == 1 and "permission denied" in one_line_error(listed.stderr)


# -- a damaged SQLite file -----------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_store_says_what_to_do(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "banfeed.db"
    config = write_config(tmp_path / "banfeed.toml", f"sqlite:///{db}")
    env = {"BANFEED_CONFIG": str(config)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    assert cli("ban", PUBLIC, env=env).exit_code == 0
    good = db.read_bytes()
    assert len(good) > 8192
    db.write_bytes(os.urandom(6000) if damage == "garbage" else good[:8192])
    for command in (["list"], ["show", PUBLIC], ["ban", "93.184.216.35"], ["db", "upgrade"]):
        result = cli(*command, env=env)  # catch_exceptions=False: a traceback fails here
        assert result.exit_code == 1, (command, result.output)
        line = one_line_error(result.stderr)
        assert "damaged" in line and str(db) in line
        assert "banfeed db backup" in line and ".recover" in line and "backup" in line
        assert "banfeed init" not in line


# -- the 503 body ------------------------------------------------------------------------------


def test_503_tells_the_consumer_the_feed_is_unavailable_and_nothing_of_the_store(
    tmp_path: Path,
) -> None:
    db = tmp_path / "secret-location" / "banfeed.db"
    db.parent.mkdir()
    config = write_config(tmp_path / "banfeed.toml", f"sqlite:///{db}")
    with config.open("a") as handle:
        handle.write('[server]\nlisten = "127.0.0.1:0"\n')
    env = {"BANFEED_CONFIG": str(config)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    assert cli("ban", PUBLIC, env=env).exit_code == 0
    assert cli("export", "--output", "-", env=env).exit_code == 0
    daemon = RunningDaemon(config_mod.load(config), collect=False)
    try:
        url = f"{daemon.url}/feeds/quarantine.txt"
        assert wait_for(lambda: httpx.get(url).status_code == 200, what="a 200")
        db.write_bytes(os.urandom(6000))  # a broken store
        down = wait_for(lambda: (r := httpx.get(url)).status_code == 503 and r, what="a 503")
        body = down.text
        assert body == (
            "feed quarantine unavailable: its store cannot be read; "
            "keep the last list and retry later\n"
        )
        assert down.headers["retry-after"] == "30"
        for leak in ("sqlite", "secret-location", str(tmp_path), ".db"):
            assert leak not in body
    finally:
        daemon.stop()


# -- a typo in a key ----------------------------------------------------------------------------


def test_a_typo_in_a_device_key_names_the_device_and_the_nearest_key(tmp_path: Path) -> None:
    body = (
        '[colect]\ninterval = "5m"\n\n'
        '[[fortigates]]\nname = "edge-1"\nurl = "https://192.0.2.10"\ntokne_env = "T"\n\n'
        '[[feeds]]\nname = "quarantine"\nfamilly = "ipv4"\n\n'
        '[feeds.auth]\ntpye = "none"\n'
    )
    config = write_config(tmp_path / "banfeed.toml", "sqlite:///banfeed.db", body)
    result = cli("list", env={"BANFEED_CONFIG": str(config)})
    assert result.exit_code == 2
    err = result.stderr
    assert 'fortigates[0].tokne_env: unknown key (device "edge-1") — did you mean token_env?' in err
    assert 'feeds[0].familly: unknown key (feed "quarantine") — did you mean family?' in err
    assert 'feeds[0].auth.tpye: unknown key (feed "quarantine") — did you mean type?' in err
    assert "colect: unknown key — did you mean collect?" in err
    assert "Traceback" not in err


def test_an_unknown_key_with_nothing_near_gets_no_guess(tmp_path: Path) -> None:
    config = write_config(tmp_path / "banfeed.toml", "sqlite:///banfeed.db", "[retention]\nq=1\n")
    result = cli("list", env={"BANFEED_CONFIG": str(config)})
    assert result.exit_code == 2
    assert "retention.q: unknown key (docs/configuration.md" in result.stderr
    assert "did you mean" not in result.stderr


# -- --config and -v after the command -----------------------------------------------------------


@pytest.fixture
def small_site(tmp_path: Path) -> Path:
    config = write_config(tmp_path / "banfeed.toml", f"sqlite:///{tmp_path / 'banfeed.db'}")
    assert cli("--config", str(config), "db", "upgrade").exit_code == 0
    assert cli("--config", str(config), "ban", PUBLIC).exit_code == 0
    return config


@pytest.mark.parametrize(
    "command",
    [["list", "--all"], ["show", PUBLIC], ["feeds"], ["allow", "list"], ["db", "upgrade"]],
)
def test_config_works_before_and_after_the_command(small_site: Path, command: list[str]) -> None:
    before = cli("--config", str(small_site), *command)
    after = cli(*command, "--config", str(small_site))
    assert before.exit_code == after.exit_code == 0, after.output
    assert before.output == after.output


def test_after_the_command_wins_and_subgroups_take_it_too(small_site: Path) -> None:
    missing = str(small_site.with_name("missing.toml"))
    assert cli("--config", missing, "show", PUBLIC).exit_code == 2
    assert cli("--config", missing, "show", PUBLIC, "--config", str(small_site)).exit_code == 0
    grouped = cli("feeds", "--config", str(small_site), "history", "quarantine")
    assert grouped.exit_code == 0, grouped.output


def test_verbose_after_the_command_raises_the_log_level(small_site: Path) -> None:
    assert cli("--config", str(small_site), "list").exit_code == 0
    assert logging.getLogger().level == logging.WARNING
    assert cli("list", "--config", str(small_site), "-v").exit_code == 0
    assert logging.getLogger().level == logging.INFO
    assert cli("-v", "list", "--config", str(small_site), "--verbose").exit_code == 0
    assert logging.getLogger().level == logging.DEBUG


def test_every_command_help_shows_the_global_options() -> None:
    def walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))

    for path in walk(main, ()):
        result = cli(*path, "--help")
        assert result.exit_code == 0, path
        assert "--config PATH" in result.output and "-v, --verbose" in result.output, path
        assert result.output.count("--config PATH") == 1, path


# -- piped output --------------------------------------------------------------------------------


def test_piped_tables_keep_every_character(store_site: dict[str, Any]) -> None:
    env = {"BANFEED_CONFIG": str(store_site["config"])}
    piped = banfeed("allow", "list", env=env)
    assert piped.returncode == 0, piped.stderr
    assert LONG_NOTE in piped.stdout and "…" not in piped.stdout
    row = next(line for line in piped.stdout.splitlines() if "151.101.1.0/24" in line)
    assert len(row) > 200
    narrow = banfeed("allow", "list", env={**env, "COLUMNS": "60"})  # $COLUMNS still wins
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60
