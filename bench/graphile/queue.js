// N no-op jobs through W worker processes (concurrency 1 each): memmie's claim_jobs +
// complete_job vs graphile-worker, the same driver for both.
//
//   node queue.js memmie|graphile JOBS WORKERS
//
// Connection from the usual PG* environment variables (PGHOST, PGPORT, PGUSER, PGDATABASE).
// Before timing: the queue is emptied and vacuumed, JOBS jobs are enqueued one per transaction
// (memmie.enqueue_job / graphile_worker.add_job), the table is vacuumed and analyzed, and the
// W worker processes are started and connected (graphile-worker's runner itself starts on "go":
// its start-up, a few queries, is timed). Timed: from "go" to the moment the database
// shows every job completed. Prints one line:
//   RESULT <side> <workers> <jobs> <ms>
"use strict";
const { fork } = require("child_process");
const pg = require("pg");

const NOOP_TYPE = "bench.noop";
const MEMMIE_USER = "00000000-0000-0000-0000-0000000000b0";
const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Workers

// memmie: what a worker does with memmie's SQL API: claim one job (its own transaction), run it,
// complete it (another transaction); when the queue is empty, wait for memmie_jobs or poll.
// Like graphile-worker (which calls completeJob without awaiting it, dist/worker.js), the
// completion is sent on a second connection and not waited for before the next claim.
async function memmieWorker(id) {
  const client = new pg.Client();
  await client.connect();
  const completer = new pg.Client();
  await completer.connect();
  let lastComplete = Promise.resolve();
  const worker = `bench-worker-${id}`;
  let wake = null;
  client.on("notification", () => wake && wake());
  await client.query("LISTEN memmie_jobs");
  let running = true;
  process.on("message", (m) => {
    if (m === "stop") { running = false; wake && wake(); }
  });
  process.send("ready");
  await new Promise((r) => process.once("message", (m) => m === "go" && r()));
  let reportedEmpty = false;
  while (running) {
    const claimed = await client.query({
      name: "claim",
      text: "SELECT id, input FROM memmie.claim_jobs($1, 1, job_types => $2)",
      values: [worker, [NOOP_TYPE]],
    });
    if (claimed.rows.length === 0) {
      if (!reportedEmpty) { process.send("empty"); reportedEmpty = true; }
      await new Promise((r) => { wake = r; setTimeout(r, 1000); });
      wake = null;
      continue;
    }
    reportedEmpty = false;
    const job = claimed.rows[0];
    // the no-op task; its completion goes out on the second connection (queued there in order)
    lastComplete = completer.query({
      name: "complete",
      text: "SELECT 1 FROM memmie.complete_job($1, $2)",
      values: [job.id, worker],
    });
    lastComplete.catch((e) => { console.error(`memmie: complete_job failed: ${e.message}`); process.exit(1); });
  }
  await lastComplete;
  await completer.end();
  await client.end();
}

// graphile-worker: its runner with concurrency 1 and a no-op task, default settings otherwise.
async function graphileWorker() {
  const { run, Logger } = require("graphile-worker");
  const pgPool = new pg.Pool({ max: 10 });
  await (await pgPool.connect()).release();
  const quiet = new Logger(() => (level, message) => {
    if (level === "error") console.error(`graphile-worker: ${message}`);
  });
  process.send("ready");
  await new Promise((r) => process.once("message", (m) => m === "go" && r()));
  const runner = await run({
    pgPool,
    concurrency: 1,
    noHandleSignals: true,
    logger: quiet,
    taskList: { noop: async () => {} },
  });
  let reportedEmpty = false;
  runner.events.on("worker:getJob:empty", () => {
    if (!reportedEmpty) { process.send("empty"); reportedEmpty = true; }
  });
  runner.events.on("job:start", () => { reportedEmpty = false; });
  await new Promise((r) => process.on("message", (m) => m === "stop" && r()));
  await runner.stop();
  await pgPool.end();
}

// ---------------------------------------------------------------------------------------------
// The measuring process

const sides = {
  memmie: {
    async prepare(db, jobs) {
      await db.query("DELETE FROM memmie.jobs WHERE job_type = $1", [NOOP_TYPE]);
      await db.query("VACUUM memmie.jobs");
      await db.query(`DO $$ BEGIN FOR i IN 1..${jobs} LOOP
                          PERFORM memmie.enqueue_job('${NOOP_TYPE}', '${MEMMIE_USER}', '{}'); COMMIT;
                      END LOOP; END $$`);
      await db.query("VACUUM ANALYZE memmie.jobs");
    },
    async remaining(db) {
      const r = await db.query("SELECT count(*)::int AS n FROM memmie.jobs WHERE job_type = $1 AND status IN ('queued', 'running')",
                               [NOOP_TYPE]);
      return r.rows[0].n;
    },
    async check(db, jobs) {
      const r = await db.query("SELECT count(*)::int AS n FROM memmie.jobs WHERE job_type = $1 AND status = 'completed'",
                               [NOOP_TYPE]);
      if (r.rows[0].n !== jobs) throw new Error(`memmie: ${r.rows[0].n} of ${jobs} jobs completed`);
    },
  },
  graphile: {
    async prepare(db, jobs) {
      const { runMigrations } = require("graphile-worker");
      const pgPool = new pg.Pool({ max: 2 });
      await runMigrations({ pgPool, logger: undefined });
      await pgPool.end();
      await db.query("DELETE FROM graphile_worker._private_jobs");
      await db.query("VACUUM graphile_worker._private_jobs");
      await db.query(`DO $$ BEGIN FOR i IN 1..${jobs} LOOP
                          PERFORM graphile_worker.add_job('noop', '{}'::json); COMMIT;
                      END LOOP; END $$`);
      await db.query("VACUUM ANALYZE graphile_worker._private_jobs");
    },
    async remaining(db) {
      const r = await db.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs");
      return r.rows[0].n;
    },
    async check() {
      // completed jobs are deleted; remaining() == 0 already says they all succeeded
    },
  },
};

async function main() {
  const [side, jobsArg, workersArg] = process.argv.slice(2);
  const s = sides[side];
  const jobs = parseInt(jobsArg, 10);
  const workers = parseInt(workersArg, 10);
  if (!s || !(jobs > 0) || !(workers > 0)) {
    console.error("usage: node queue.js memmie|graphile JOBS WORKERS");
    process.exit(2);
  }
  const db = new pg.Client();
  await db.connect();
  await db.query("SET client_min_messages = warning");
  await db.query("SET synchronous_commit = off"); // this session only: the enqueueing
  await s.prepare(db, jobs);

  const children = [];
  let ready = 0;
  let empty = 0;
  for (let i = 0; i < workers; i++) {
    const child = fork(__filename, ["worker", side, String(i + 1)]);
    child.on("message", (m) => {
      if (m === "ready") ready++;
      else if (m === "empty") empty++;
    });
    child.on("exit", (code) => {
      if (code !== 0 && !child.stopping) {
        console.error(`worker ${i + 1} exited with code ${code}`);
        process.exit(1);
      }
    });
    children.push(child);
  }
  while (ready < workers) await sleep(5);

  const t0 = now();
  for (const c of children) c.send("go");
  // every worker has found the queue empty at least once, then poll until the last completion
  // has committed
  while (empty < workers) await sleep(2);
  while ((await s.remaining(db)) > 0) {
    if (now() - t0 > 600000) throw new Error("jobs not done after 10 minutes");
    await sleep(1);
  }
  const ms = now() - t0;

  for (const c of children) { c.stopping = true; c.send("stop"); }
  await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r() : c.on("exit", r)))));
  await s.check(db, jobs);
  await db.end();
  console.log(`RESULT ${side} ${workers} ${jobs} ${ms.toFixed(1)}`);
}

if (process.argv[2] === "worker") {
  const [, , , side, id] = process.argv;
  (side === "memmie" ? memmieWorker(id) : graphileWorker())
    .then(() => process.exit(0))
    .catch((e) => { console.error(e); process.exit(1); });
} else {
  main().catch((e) => { console.error(e); process.exit(1); });
}
