// Latency from a committed create_blob to its provider job being claimed by a worker that
// LISTENs on memmie_events / memmie_jobs and runs dispatch_events + claim_jobs when notified.
//
//   node latency.js BLOBS GAP_MS
//
// Connection from the usual PG* environment variables. A provider that takes every text/plain
// blob on blob.created is registered; events already in the table are marked processed (a
// dispatcher that has kept up). The producer (this process) creates BLOBS blobs, one per
// transaction, GAP_MS apart; the time of each commit is when create_blob returns to it. The
// worker (a child process) records when claim_jobs hands it each blob's job. Both clocks are
// CLOCK_MONOTONIC (process.hrtime), the same across processes. After the run the worker
// completes the jobs it claimed. Prints one line:
//   RESULT <p50 ms> <p99 ms> <max ms> <mean ms> <blobs>
"use strict";
const { fork } = require("child_process");
const pg = require("pg");

const PROVIDER = {
  id: "bench-latency",
  name: "latency bench (no-op)",
  version: "1",
  trigger_events: ["blob.created"],
  supported_types: ["text/plain"],
};
const USER = "00000000-0000-0000-0000-0000000000c0";
const WORKER = "bench-latency-worker";
const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// The worker

async function worker() {
  const client = new pg.Client();
  await client.connect();
  const claimedIds = [];
  let dispatch = false;
  let claim = false;
  let busy = false;
  let stopping = false;

  async function drain() {
    if (busy) return;
    busy = true;
    try {
      while ((dispatch || claim) && !stopping) {
        if (dispatch) {
          dispatch = false;
          await client.query({ name: "dispatch", text: "SELECT memmie.dispatch_events(100)" });
        }
        claim = false;
        const r = await client.query({
          name: "claim",
          text: "SELECT id, input ->> 'blob_id' AS blob_id FROM memmie.claim_jobs($1, 100, job_types => '{memmie.process}')",
          values: [WORKER],
        });
        const t = now();
        if (r.rows.length > 0) {
          for (const row of r.rows) claimedIds.push(row.id);
          process.send({ claimed: r.rows.map((row) => row.blob_id), t });
          claim = true; // there may be more than 100
        }
      }
    } catch (e) {
      console.error(e);
      process.exit(1);
    } finally {
      busy = false;
    }
  }

  client.on("notification", (n) => {
    if (n.channel === "memmie_events") dispatch = true;
    claim = true;
    drain();
  });
  await client.query("LISTEN memmie_events");
  await client.query("LISTEN memmie_jobs");
  process.on("message", async (m) => {
    if (m !== "stop") return;
    stopping = true;
    while (busy) await sleep(1);
    // not timed: finish the processings claimed
    for (const id of claimedIds) {
      await client.query("SELECT count(*) FROM memmie.complete_processing($1, $2, '{}')", [id, WORKER]);
    }
    await client.end();
    process.exit(0);
  });
  process.send("ready");
}

// ---------------------------------------------------------------------------------------------
// The producer and the measurement

function percentile(sorted, p) {
  // nearest rank
  const k = Math.max(0, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[k];
}

async function main() {
  const blobs = parseInt(process.argv[2] || "500", 10);
  const gap = parseFloat(process.argv[3] || "5");
  const db = new pg.Client();
  await db.connect();
  await db.query("SET client_min_messages = warning");
  await db.query("SELECT memmie.register_provider($1)", [JSON.stringify(PROVIDER)]);
  await db.query("UPDATE memmie.events SET processed = true, processed_at = clock_timestamp() WHERE processed = false");
  await db.query("VACUUM ANALYZE memmie.events");

  const committed = new Map();
  const claimed = new Map();
  const child = fork(__filename, ["worker"]);
  let ready = false;
  child.on("message", (m) => {
    if (m === "ready") ready = true;
    else if (m.claimed) for (const b of m.claimed) claimed.set(b, m.t);
  });
  child.on("exit", (code) => {
    if (code !== 0) { console.error(`worker exited with code ${code}`); process.exit(1); }
  });
  while (!ready) await sleep(5);
  await sleep(100);

  for (let i = 0; i < blobs; i++) {
    const r = await db.query({
      name: "create",
      text: "SELECT id FROM memmie.create_blob($1, convert_to('latency ' || $2, 'UTF8'), 'text/plain')",
      values: [USER, i],
    });
    committed.set(r.rows[0].id, now());
    await sleep(gap);
  }
  const deadline = now() + 30000;
  while (claimed.size < blobs && now() < deadline) await sleep(5);
  child.send("stop");
  await new Promise((r) => child.on("exit", r));
  await db.end();

  const lat = [];
  let missing = 0;
  for (const [id, t] of committed) {
    if (claimed.has(id)) lat.push(claimed.get(id) - t);
    else missing++;
  }
  if (missing > 0) {
    console.error(`${missing} of ${blobs} blobs never had their job claimed`);
    process.exit(1);
  }
  lat.sort((a, b) => a - b);
  const mean = lat.reduce((a, b) => a + b, 0) / lat.length;
  const f = (x) => x.toFixed(3);
  console.log(`RESULT ${f(percentile(lat, 50))} ${f(percentile(lat, 99))} ${f(lat[lat.length - 1])} ${f(mean)} ${blobs}`);
}

if (process.argv[2] === "worker") {
  worker().catch((e) => { console.error(e); process.exit(1); });
} else {
  main().catch((e) => { console.error(e); process.exit(1); });
}
