#!/usr/bin/env python3
"""memmie reference worker: runs providers whose definition names a local command.

    python3 examples/worker.py --dsn "host=/tmp/mmdev user=postgres dbname=app"

A provider is run by this worker when its definition has ``config.command``, an argv array:

    SELECT memmie.register_provider('{
        "id": "upper", "name": "Upper case", "version": "1",
        "trigger_events": ["blob.created"], "supported_types": ["text/plain"],
        "timeout_seconds": 10,
        "config": {"command": ["tr", "a-z", "A-Z"],
                   "output_content_type": "text/x-upper",   (default: the input's type)
                   "transform_type": "upper",               (default: memmie's "derived")
                   "output_metadata": {"lang": "en"}}       (default: {})
    }');

The loop:
  1. LISTEN memmie_events and memmie_jobs; wake on a notification or every --poll seconds.
  2. memmie.dispatch_events() turns new blob events into processings (each with a
     'memmie.process' job); memmie.claim_jobs() leases up to --max-jobs of them for --lease.
  3. Per job: read the input version's bytes and the provider definition of the exact version
     the processing names (memmie.processing_input, while holding the lease), run the command with
     the bytes on stdin in its own process group, and take stdout as one derived child blob
     (empty stdout: the processing completes with no child). The command also gets MEMMIE_BLOB_ID,
     MEMMIE_BLOB_VERSION, MEMMIE_CONTENT_TYPE, MEMMIE_PROVIDER_ID and MEMMIE_PROCESSING_ID in its
     environment. While it runs, the worker heartbeats every job it holds whose lease is half
     gone, so a command may run longer than the lease.
  4. Exit 0 -> memmie.complete_processing (one transaction: the child, its edge, the events).
     Failures -> memmie.fail_processing:
       - timeout (the provider's timeout_seconds; the whole process group is killed): retryable
       - non-zero exit: retryable. memmie retries with backoff (1 s, 2 s, 4 s, ...) until the
         provider's processing_rules.max_retries (default 3) is used up, then the processing is
         'failed'. Set max_retries to 0 for commands whose failures are deterministic.
       - the command cannot be started, config.command is missing or malformed, the input is
         gone, memmie rejects the output (22023, MM002, MM004): not retryable
     A completion that a deadlock or serialization failure rolled back is tried again (3 times
     at most) before the processing is failed (retryable).
  A lost lease (SQLSTATE MM005: the job was taken back after the lease expired, e.g. while this
  worker was stalled) is logged and the job dropped: whoever holds the lease now finishes it, and
  memmie guarantees that only the holder's completion counts. The worker never holds a
  transaction open while a command runs (autocommit: every call is its own short transaction).

Stopping: SIGTERM or SIGINT finishes the running job, gives the other claimed jobs back
(fail_processing, retryable) and exits 0; a second signal kills the running command first. A lost
database connection is retried with backoff. If the worker dies (kill -9), its jobs' leases
expire and the next claim_jobs of any worker takes them back; on Linux its running command is
killed with it (PR_SET_PDEATHSIG), so nothing is left running unsupervised.

Options: --dsn (libpq conninfo or URL; default: the PG* environment), --worker-id (default
host-pid), --lease SECONDS (default 30), --max-jobs N (default 4), --poll SECONDS (default 5),
--dispatch-batch N (events per dispatch_events call, default 500), --once (one
dispatch/claim/run round, then exit), --exit-when-idle (exit once nothing is left to do: no
undispatched event, no queued or running 'memmie.process' job), -v (log every job).

Needs Python 3.9+ and psycopg 3 (Debian: apt-get install python3-psycopg). The database role
needs memmie's worker level (SELECT memmie.grant_worker('the_role')) and nothing more: it reads a
job's input through memmie.processing_input, only while it holds the job's lease.
"""

import argparse
import base64
import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

log = logging.getLogger("memmie-worker")

JOB_TYPE = "memmie.process"
# memmie's answers that mean "this output can never be accepted": bad output, quota, schema
PERMANENT_SQLSTATES = {"22023", "MM002", "MM004", "54000"}
STDERR_TAIL = 2000  # bytes of a failed command's stderr kept in the error message


class LeaseLost(Exception):
    """The worker no longer holds the job's lease (MM005)."""


class JobFailed(Exception):
    def __init__(self, message, retryable):
        super().__init__(message)
        self.retryable = retryable


def _parent_death_signal():
    """In the child before exec: die with the worker (Linux), so kill -9 leaves no orphans."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Worker:
    def __init__(self, args):
        self.args = args
        self.worker_id = args.worker_id
        self.lease = float(args.lease)
        self.conn = None
        self.held = {}          # job id -> local (monotonic) time its lease runs out
        self.woken = False      # a notification arrived since the last round
        self.stopping = 0       # number of SIGTERM/SIGINT received
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    # ---------------------------------------------------------------- connection, waiting
    def _on_signal(self, signum, frame):
        self.stopping += 1
        log.info("%s received: %s", signal.Signals(signum).name,
                 "stopping after the current job" if self.stopping == 1
                 else "killing the running command and stopping")

    def connect(self):
        delay = 0.5
        while not self.stopping:
            try:
                self.conn = psycopg.connect(self.args.dsn, autocommit=True, row_factory=dict_row,
                                            application_name=f"memmie-worker {self.worker_id}")
                self.conn.add_notify_handler(lambda n: setattr(self, "woken", True))
                self.conn.execute("LISTEN memmie_events")
                self.conn.execute("LISTEN memmie_jobs")
                log.info("worker %s connected, lease %ss, up to %d jobs a claim",
                         self.worker_id, self.lease, self.args.max_jobs)
                return True
            except psycopg.OperationalError as ex:
                log.warning("cannot connect (%s); retrying in %.1fs", str(ex).strip(), delay)
                time.sleep(delay)
                delay = min(delay * 2, 10)
        return False

    def wait(self, seconds):
        """Sleep until a notification, a signal or the timeout."""
        if self.woken or self.stopping:
            return
        ready, _, _ = select.select([self.conn.fileno(), self.wake_r], [], [], seconds)
        if self.wake_r in ready:
            os.read(self.wake_r, 512)
        if self.conn.fileno() in ready:
            self.conn.pgconn.consume_input()   # raises OperationalError if the server went away
            while self.conn.pgconn.notifies() is not None:
                self.woken = True

    def run(self):
        while not self.stopping:
            if self.conn is None or self.conn.closed:
                self.held.clear()
                if not self.connect():
                    break
            try:
                busy = self.round()
                if self.args.once:
                    break
                if not busy:
                    if self.args.exit_when_idle and self.idle():
                        log.info("nothing left to do: exiting")
                        break
                    self.wait(self.args.poll)
            except psycopg.Error as ex:
                if not _connection_lost(self.conn, ex):
                    log.warning("round failed (%s %s); retrying", ex.sqlstate, _msg(ex))
                    time.sleep(1)
                    continue
                log.warning("database connection lost (%s); reconnecting", _msg(ex))
                try:
                    self.conn.close()
                except Exception:
                    pass
                self.conn = None
                time.sleep(1)
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        log.info("worker %s stopped", self.worker_id)

    def idle(self):
        row = self.conn.execute("SELECT * FROM memmie.pending_work(%s)", (JOB_TYPE,)).fetchone()
        return row["undispatched_events"] == 0 and row["open_jobs"] == 0

    # ---------------------------------------------------------------- one round
    def round(self):
        """Dispatch, claim, run. True when there may be more to do right away."""
        self.woken = False
        dispatched = self.conn.execute("SELECT memmie.dispatch_events(%s) AS n",
                                       (self.args.dispatch_batch,)).fetchone()["n"]
        if self.stopping:
            return False
        jobs = self.conn.execute(
            "SELECT * FROM memmie.claim_jobs(%s, %s, make_interval(secs => %s), ARRAY[%s])",
            (self.worker_id, self.args.max_jobs, self.lease, JOB_TYPE)).fetchall()
        now = time.monotonic()
        for j in jobs:
            self.held[j["id"]] = now + self.lease
        for i, j in enumerate(jobs):
            if self.stopping:
                self.release(jobs[i:])
                break
            self.process(j)
        return bool(jobs) or dispatched >= self.args.dispatch_batch or self.woken

    def keep_leases(self):
        """Heartbeats every held job whose lease is half gone; drops the ones lost."""
        now = time.monotonic()
        for job_id, until in list(self.held.items()):
            if until - now > self.lease / 2:
                continue
            try:
                self.conn.execute("SELECT memmie.heartbeat_job(%s, %s)", (job_id, self.worker_id))
                self.held[job_id] = now + self.lease
            except psycopg.Error as ex:
                if _connection_lost(self.conn, ex):
                    raise
                if ex.sqlstate in ("MM005", "P0002"):
                    log.warning("job %s: lease lost before it finished (%s)", job_id, _msg(ex))
                    del self.held[job_id]
                else:   # e.g. a deadlock: try again at the next check
                    log.warning("job %s: heartbeat failed (%s %s)", job_id, ex.sqlstate, _msg(ex))

    def release(self, jobs):
        """Gives claimed jobs back: fail_processing queues them again after memmie's retry
        backoff (1 s for a first retry), and that uses one of their attempts."""
        for j in jobs:
            if j["id"] in self.held:
                log.info("job %s: given back unstarted", j["id"])
                self.finish_failed(j, "worker %s stopped before running it" % self.worker_id, True,
                                   quiet=True)

    # ---------------------------------------------------------------- one job
    def process(self, job):
        job_id, inp = job["id"], job["input"]
        self.keep_leases()
        if job_id not in self.held:
            return          # lost while it waited its turn
        started = time.monotonic()
        try:
            definition, content, content_type = self.input(job_id)
            config = definition.get("config") or {}
            out = self.run_command(job, config, definition.get("timeout_seconds", 30), content,
                                   content_type)
            children = []
            if out:
                child = {"content_type": config.get("output_content_type") or content_type,
                         "metadata": config.get("output_metadata") or {}}
                if "transform_type" in config:
                    child["transform_type"] = config["transform_type"]
                try:
                    text = out.decode("utf-8")
                    if "\x00" in text:
                        raise UnicodeError("NUL")     # jsonb text cannot hold NUL
                    child["content"] = text
                except UnicodeError:
                    child["content_base64"] = base64.b64encode(out).decode("ascii")
                children.append(child)
            outputs = {"children": children,
                       "metadata": {"worker_id": self.worker_id,
                                    "run_ms": int((time.monotonic() - started) * 1000)}}
            self.finish_completed(job, outputs)
        except LeaseLost as ex:
            log.warning("job %s: %s", job_id, ex)
            self.held.pop(job_id, None)
        except JobFailed as ex:
            self.finish_failed(job, str(ex), ex.retryable)
        except psycopg.Error as ex:
            if _connection_lost(self.conn, ex):
                raise
            if ex.sqlstate == "MM005":
                log.warning("job %s: lease lost (%s)", job_id, _msg(ex))
                self.held.pop(job_id, None)
            else:
                self.finish_failed(job, "%s: %s" % (ex.sqlstate, _msg(ex)),
                                   ex.sqlstate not in PERMANENT_SQLSTATES | {"P0002"})
        except Exception as ex:    # a bug here must not stop the worker
            log.exception("job %s: unexpected error", job_id)
            self.finish_failed(job, "worker error: %r" % ex, True)

    def input(self, job_id):
        """The processing's input, read while this worker holds the job's lease (MM005 else)."""
        row = self.conn.execute(
            "SELECT content, content_type, definition, storage_backend, storage_path"
            "  FROM memmie.processing_input(%s::uuid, %s)", (job_id, self.worker_id)).fetchone()
        if row["definition"] is None:
            raise JobFailed("the provider version of processing %s is not registered" % job_id, False)
        if row["content"] is None:
            raise JobFailed("the input is kept in %s at %s; this worker reads content kept in PostgreSQL only"
                            % (row["storage_backend"], row["storage_path"]), False)
        return row["definition"], row["content"], row["content_type"]

    def run_command(self, job, config, timeout, content, content_type):
        argv = config.get("command")
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise JobFailed("provider config.command must be a non-empty array of strings", False)
        inp = job["input"]
        env = dict(os.environ, MEMMIE_BLOB_ID=str(inp["blob_id"]),
                   MEMMIE_BLOB_VERSION=str(inp["version"]), MEMMIE_CONTENT_TYPE=content_type or "",
                   MEMMIE_PROVIDER_ID=str(inp["provider_id"]),
                   MEMMIE_PROCESSING_ID=str(inp["processing_id"]))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True,
                                    preexec_fn=_parent_death_signal if sys.platform == "linux" else None)
        except OSError as ex:
            raise JobFailed("cannot start %s: %s" % (argv[0], ex), False)
        deadline = time.monotonic() + timeout
        data = content
        try:
            while True:
                step = min(deadline - time.monotonic(), max(self.lease / 4, 0.05), 1.0)
                try:
                    out, err = proc.communicate(data, timeout=max(step, 0))
                    break
                except subprocess.TimeoutExpired:
                    data = None     # already handed over; communicate() keeps writing it
                if time.monotonic() >= deadline:
                    _kill(proc)
                    raise JobFailed("timed out after %ss: %s (killed)" % (timeout, " ".join(argv)),
                                    True)
                if self.stopping > 1:
                    _kill(proc)
                    raise JobFailed("worker %s stopped while the command ran" % self.worker_id, True)
                self.keep_leases()
                if job["id"] not in self.held:
                    _kill(proc)
                    raise LeaseLost("lease lost while the command ran: command killed")
        finally:
            if proc.poll() is None:
                _kill(proc)
        if proc.returncode != 0:
            how = ("killed by signal %d" % -proc.returncode if proc.returncode < 0
                   else "exit status %d" % proc.returncode)
            tail = err[-STDERR_TAIL:].decode("utf-8", "replace").strip()
            raise JobFailed("%s: %s%s" % (" ".join(argv), how, (": " + tail) if tail else ""), True)
        return out

    def finish_completed(self, job, outputs):
        # a deadlock or serialization failure rolled the completion back: try it again (the
        # output is in hand), a few times, before failing the processing (retryable)
        for attempt in range(1, 4):
            try:
                self.conn.execute("SELECT count(*) FROM memmie.complete_processing(%s, %s, %s)",
                                  (job["input"]["processing_id"], self.worker_id, Jsonb(outputs)))
                break
            except psycopg.errors.TransactionRollback as ex:
                if attempt == 3:
                    raise
                log.info("job %s: completion rolled back (%s %s); retrying", job["id"],
                         ex.sqlstate, _msg(ex))
                time.sleep(0.05 * attempt)
        self.held.pop(job["id"], None)
        log.debug("job %s completed (%d child)", job["id"], len(outputs["children"]))

    def finish_failed(self, job, error, retryable, quiet=False):
        if not quiet:
            log.warning("job %s failed (%s): %s", job["id"],
                        "retryable" if retryable else "permanent", error)
        try:
            self.conn.execute("SELECT memmie.fail_processing(%s, %s, %s, %s)",
                              (job["input"]["processing_id"], self.worker_id, error, retryable))
        except psycopg.Error as ex:
            if _connection_lost(self.conn, ex):
                raise
            if ex.sqlstate == "P0002":
                # the processing is gone (its blob was hard-deleted): end its job directly
                try:
                    self.conn.execute("SELECT memmie.fail_job(%s, %s, %s, false)",
                                      (job["id"], self.worker_id, error))
                except psycopg.Error as ex2:
                    log.warning("job %s: cannot fail it (%s)", job["id"], _msg(ex2))
            else:
                log.warning("job %s: cannot fail it (%s %s)", job["id"], ex.sqlstate, _msg(ex))
        self.held.pop(job["id"], None)


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _connection_lost(conn, ex):
    """Whether ex means the connection is gone (as opposed to one failed statement)."""
    return conn.closed or (isinstance(ex, psycopg.OperationalError)
                           and not isinstance(ex, psycopg.errors.TransactionRollback)
                           and (ex.sqlstate is None or ex.sqlstate[:2] in ("08", "57")))


def _msg(ex):
    return (ex.diag.message_primary or str(ex)).strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", default="", help="libpq connection string or URL (default: PG* env)")
    ap.add_argument("--worker-id", default="%s-%d" % (socket.gethostname(), os.getpid()))
    ap.add_argument("--lease", type=float, default=30, help="lease in seconds (default 30)")
    ap.add_argument("--max-jobs", type=int, default=4, help="jobs claimed at a time (default 4)")
    ap.add_argument("--poll", type=float, default=5,
                    help="seconds between polls when no notification comes (default 5)")
    ap.add_argument("--dispatch-batch", type=int, default=500,
                    help="events dispatched per round (default 500)")
    ap.add_argument("--once", action="store_true", help="one round, then exit")
    ap.add_argument("--exit-when-idle", action="store_true",
                    help="exit when no event or memmie.process job is left")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every job")
    args = ap.parse_args()
    if args.lease <= 0 or args.max_jobs < 1 or args.poll <= 0:
        ap.error("--lease, --max-jobs and --poll must be positive")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    Worker(args).run()


if __name__ == "__main__":
    main()
