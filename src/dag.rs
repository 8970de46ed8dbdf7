//! The provenance DAG: breadth-first traversal of `blob_edges`, level by level.
//!
//! Each level is read with a few queries over the whole frontier (`= ANY($1)`, in batches, each
//! answering with one array), so a million-node traversal is a few hundred queries, not a
//! million; nodes are kept in a hash set, so every node is reported once, at its shortest depth,
//! however many paths reach it (multi-parent merges, no path arrays). Nothing recurses, and
//! interrupts are checked between batches and as nodes are read, so `statement_timeout` and
//! `pg_cancel_backend` stop a large traversal promptly.
//!
//! A lookup costs a descent of the edge index (about 3 us); reading the whole table costs about
//! 0.15 us per edge. So once a level's frontier reaches a twentieth of the table, the walk reads
//! `blob_edges` once, sequentially, under the statement's snapshot, groups it by node in memory
//! and goes on there (`edge_scan`), when the table fits in `memmie.traversal_work_mem` (36 bytes
//! per edge) and the caller may read it directly (SELECT privilege, no row-level security that
//! applies to it: memmie's functions run as the owner, who bypasses the policies).
//!
//! On a Citus cluster (`memmie.distribute()` placed `blob_edges`, distributed by `user_id`) the
//! coordinator's `blob_edges` is an empty shell: the rows are in the shards on the workers. An
//! edge joins two blobs of its user, so the whole DAG of a blob lies on its user's shards; there
//! the walk never reads the table natively, and each batch is one router query to that user's
//! shard (`WHERE e.user_id = $2 AND e.parent_blob_id = ANY($1)`).

use crate::error::{or_raise, MemmieError, Result};
use pgrx::prelude::*;
use pgrx::search_path;
use pgrx::Uuid;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

/// Which way a traversal follows the edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// parent -> child
    Descendants,
    /// child -> parent
    Ancestors,
}

impl Direction {
    fn next_level_sql(self) -> &'static str {
        match self {
            Direction::Descendants => {
                "SELECT array_agg(e.child_blob_id) FROM memmie.blob_edges e WHERE e.parent_blob_id = ANY($1)"
            }
            Direction::Ancestors => {
                "SELECT array_agg(e.parent_blob_id) FROM memmie.blob_edges e WHERE e.child_blob_id = ANY($1)"
            }
        }
    }

    /// The same, within one user's edges ($2): on a Citus cluster a router query to the shard
    /// of that user.
    fn next_level_of_user_sql(self) -> &'static str {
        match self {
            Direction::Descendants => {
                "SELECT array_agg(e.child_blob_id) FROM memmie.blob_edges e \
                 WHERE e.user_id = $2 AND e.parent_blob_id = ANY($1)"
            }
            Direction::Ancestors => {
                "SELECT array_agg(e.parent_blob_id) FROM memmie.blob_edges e \
                 WHERE e.user_id = $2 AND e.child_blob_id = ANY($1)"
            }
        }
    }
}

/// How often (in rows) a traversal checks for query cancel / statement_timeout.
const INTERRUPT_EVERY: usize = 1024;

/// Frontier nodes looked up per query.
const BATCH: usize = 4096;

const UUID_ARRAY: pgrx::PgOid = pgrx::PgOid::BuiltIn(pgrx::pg_sys::BuiltinOid::UUIDARRAYOID);
const UUID: pgrx::PgOid = pgrx::PgOid::BuiltIn(pgrx::pg_sys::BuiltinOid::UUIDOID);

fn spi_failed(e: pgrx::spi::SpiError) -> MemmieError {
    MemmieError::Internal(format!("DAG traversal failed: {e}"))
}

/// The user of blob `id`; P0002 unless it exists.
fn require_blob(id: Uuid) -> Result<Uuid> {
    let missing = || MemmieError::NotFound(format!("blob {id} does not exist"));
    // memmie._visible_blob raises P0002 for a blob that does not exist or is another user's,
    // and 42501 when no user is bound (sql/access.sql); those errors propagate as they are
    if !crate::plans::function_exists("memmie._visible_blob(uuid)") {
        // the SQL of a version before 0.3.0 (not yet updated): every blob is visible there
        return blob_user(id)?.ok_or_else(missing);
    }
    crate::error::guarded(|| {
        crate::plans::with_plan("SELECT (memmie._visible_blob($1)).user_id", &[UUID], |client, stmt| {
            client.select(stmt, Some(1), &[id.into()])?.first().get::<Uuid>(1)
        })
        .map_err(spi_failed)
    })?
    .ok_or_else(missing)
}

/// The user of blob `id`, if it exists (on a Citus cluster: a query to every shard of `blobs`).
fn blob_user(id: Uuid) -> Result<Option<Uuid>> {
    crate::plans::with_plan(
        "SELECT user_id FROM memmie.blobs WHERE id = $1",
        &[UUID],
        |client, stmt| {
            let t = client.select(stmt, Some(1), &[id.into()])?;
            if t.is_empty() {
                return Ok(None);
            }
            t.first().get::<Uuid>(1)
        },
    )
    .map_err(spi_failed)
}

/// Whether `memmie.blob_edges` is a Citus table (placed by `memmie.distribute()`): its rows are
/// then in shards on the workers, and the coordinator's table is an empty shell. Without the
/// citus extension (a single node: no `pg_catalog.pg_dist_partition`) this is one cached catalog
/// lookup, no query (`get_extension_oid` scans `pg_extension`: a fifth of a small traversal).
fn edges_distributed() -> Result<bool> {
    let catalog = pgrx::pg_sys::Oid::from(pgrx::pg_sys::PG_CATALOG_NAMESPACE);
    if unsafe { pgrx::pg_sys::get_relname_relid(c"pg_dist_partition".as_ptr(), catalog) } == pgrx::pg_sys::InvalidOid {
        return Ok(false);
    }
    Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d \
         WHERE d.logicalrelid OPERATOR(pg_catalog.=) 'memmie.blob_edges'::pg_catalog.regclass)",
    )
    .map(|b| b.unwrap_or(false))
    .map_err(spi_failed)
}

/// What a traversal found.
pub struct Walk {
    /// Every node reached (the start excluded), with its shortest distance from the start.
    pub nodes: Vec<(Uuid, i32)>,
    /// Whether `stop_at` was reached (the walk ends there).
    pub reached: bool,
}

/// A fast keyed hash for node ids (SipHash, the default, was a tenth of a large traversal's
/// time). Keyed per process, so crafted ids cannot aim at one bucket.
#[derive(Clone, Copy)]
struct IdHash {
    k0: u64,
    k1: u64,
}

impl IdHash {
    fn new() -> Self {
        thread_local! {
            static KEYS: (u64, u64) = {
                let r = std::collections::hash_map::RandomState::new();
                (r.hash_one(0x6d656d6d6965u64) | 1, r.hash_one(0x64616775u64) | 1)
            };
        }
        KEYS.with(|&(k0, k1)| IdHash { k0, k1 })
    }

    fn hash(self, id: u128) -> u64 {
        let (lo, hi) = (id as u64, (id >> 64) as u64);
        let a = (lo ^ self.k0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let b = (hi ^ self.k1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let h = a ^ b.rotate_left(29);
        h ^ (h >> 32)
    }
}

struct IdHasher {
    keys: IdHash,
    h: u64,
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.h
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            self.h ^= self.keys.hash(u128::from_ne_bytes(b));
        }
    }
    fn write_u128(&mut self, id: u128) {
        self.h = self.keys.hash(id);
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher { keys: *self, h: 0 }
    }
}

fn key(id: &Uuid) -> u128 {
    u128::from_ne_bytes(*id.as_bytes())
}

fn uuid(key: u128) -> Uuid {
    Uuid::from_bytes(key.to_ne_bytes())
}

/// The nodes found so far and the next level being gathered.
struct Visitor {
    seen: HashSet<u128, IdHash>,
    nodes: Vec<(Uuid, i32)>,
    next: Vec<u128>,
    stop_at: Option<u128>,
    rows: usize,
}

impl Visitor {
    /// Records `id` at `depth` unless seen before; true when it is the node the walk stops at.
    fn visit(&mut self, id: u128, depth: i32) -> bool {
        self.rows += 1;
        if self.rows.is_multiple_of(INTERRUPT_EVERY) {
            pgrx::check_for_interrupts!();
        }
        if !self.seen.insert(id) {
            return false;
        }
        if self.stop_at == Some(id) {
            return true;
        }
        self.nodes.push((uuid(id), depth));
        self.next.push(id);
        false
    }
}

/// Walks from `start` in `dir`, at most `max_depth` levels (all when None); stops early when
/// `stop_at` is reached. With `user` (the user of `start`, on a Citus cluster), only that user's
/// edges are read, through SQL: never the table natively.
pub fn walk(
    start: Uuid,
    dir: Direction,
    max_depth: Option<i32>,
    stop_at: Option<Uuid>,
    user: Option<Uuid>,
) -> Result<Walk> {
    let mut v = Visitor {
        seen: HashSet::with_hasher(IdHash::new()),
        nodes: Vec::new(),
        next: Vec::new(),
        stop_at: stop_at.as_ref().map(key),
        rows: 0,
    };
    v.seen.insert(key(&start));
    let mut frontier = vec![key(&start)];
    let mut depth = 0i32;
    // every edge, by the side the walk comes from, once the walk has read the table
    let mut all_edges: Option<edge_scan::Adjacency> = None;
    let mut may_read = user.is_none();
    let sql = match user {
        None => dir.next_level_sql(),
        Some(_) => dir.next_level_of_user_sql(),
    };
    let types: &[pgrx::PgOid] = match user {
        None => &[UUID_ARRAY],
        Some(_) => &[UUID_ARRAY, UUID],
    };
    while !frontier.is_empty() && max_depth.is_none_or(|m| depth < m) {
        depth += 1;
        if all_edges.is_none() && may_read && frontier.len() >= edge_scan::MIN_FRONTIER {
            match edge_scan::read_if_worth_it(dir, frontier.len()) {
                edge_scan::Read::Edges(edges) => all_edges = Some(edges),
                edge_scan::Read::NotYet => {}
                edge_scan::Read::Never => may_read = false,
            }
        }
        if let Some(edges) = &all_edges {
            for (n, &from) in frontier.iter().enumerate() {
                if n % INTERRUPT_EVERY == 0 {
                    pgrx::check_for_interrupts!();
                }
                for to in edges.from(from) {
                    if v.visit(to, depth) {
                        return Ok(Walk {
                            nodes: v.nodes,
                            reached: true,
                        });
                    }
                }
            }
        } else {
            // A level is read in batches: an index scan over many keys that have no rows (the
            // leaves of a large tree) never checks for interrupts itself, so no single query may
            // run long; between batches we check.
            for batch in frontier.chunks(BATCH) {
                pgrx::check_for_interrupts!();
                let ids: Vec<Uuid> = batch.iter().map(|&k| uuid(k)).collect();
                let reached = crate::plans::with_plan(sql, types, |client, stmt| {
                    // one row: the next nodes of the whole batch as one uuid[] (no per-row SPI cost)
                    let table = match user {
                        None => client.select(stmt, Some(1), &[ids.into()])?,
                        Some(u) => client.select(stmt, Some(1), &[ids.into(), u.into()])?,
                    };
                    let Some(found) = table.first().get::<pgrx::Array<Uuid>>(1)? else {
                        return Ok(false);
                    };
                    for id in found.iter().flatten() {
                        if v.visit(key(&id), depth) {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                })
                .map_err(spi_failed)?;
                if reached {
                    return Ok(Walk {
                        nodes: v.nodes,
                        reached: true,
                    });
                }
            }
        }
        frontier = std::mem::take(&mut v.next);
    }
    Ok(Walk {
        nodes: v.nodes,
        reached: false,
    })
}

/// Reading `blob_edges` whole, for traversals that reach a large part of it.
mod edge_scan {
    use super::Direction;
    use pgrx::pg_sys;

    /// Smallest frontier for which reading the table is considered.
    pub const MIN_FRONTIER: usize = 1024;
    /// The table is read when a level's frontier is at least 1/SHARE of its edges.
    const SHARE: f64 = 20.0;
    /// Bytes one edge takes in memory (the pair, its share of the group index, and room to grow).
    const EDGE_BYTES: usize = 36;
    /// Edges per heap page assumed when the table has no statistics yet.
    const EDGES_PER_PAGE: f64 = 50.0;

    /// Every edge as (from, to), grouped by a keyed bijective mix of `from` (uuids need not be
    /// random: time-ordered ones share their leading bits), so that a lookup reads one group of
    /// about 8 edges. The scan puts each edge in one of 256 buckets by the mix's first 8 bits;
    /// each bucket (small enough for the CPU's caches) is then ordered in place by the next
    /// bits, 8 at a time (American flag sort: a counting pass and a permutation per digit). A
    /// comparison sort of a million edges took three times as long.
    pub struct Adjacency {
        /// bucket b holds the edges whose mix(from) starts with b, as (mix(from), to)
        buckets: Vec<Vec<(u128, u128)>>,
        /// group g (the first `bits` bits) is buckets[g >> (bits - 8)][starts[..]]: the bucket's
        /// groups start at starts[b * (per_bucket + 1)], with an end mark after each bucket
        starts: Vec<usize>,
        bits: u32,
        mix: Mix,
    }

    /// A keyed bijection of u128 (xor, odd multiplications, xor-shift: each step invertible).
    #[derive(Clone, Copy)]
    pub struct Mix(u128);

    impl Mix {
        pub fn new() -> Self {
            let h = super::IdHash::new();
            Mix((h.hash(1) as u128) << 64 | h.hash(2) as u128)
        }
        pub fn apply(self, x: u128) -> u128 {
            const M1: u128 = 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835;
            const M2: u128 = 0xC2B2_AE3D_27D4_EB4F_1656_67B1_9E37_79F9;
            let h = (x ^ self.0).wrapping_mul(M1);
            (h ^ (h >> 67)).wrapping_mul(M2)
        }
    }

    /// Orders `edges` by bits [128 - done - width, 128 - done) of their key, then each part by
    /// the next digit, until `bits` bits are done (at most two levels deep).
    fn flag_sort(edges: &mut [(u128, u128)], done: u32, bits: u32) {
        let width = (bits - done).min(8);
        if width == 0 || edges.len() < 2 {
            return;
        }
        let shift = 128 - done - width;
        let digit = |e: &(u128, u128)| ((e.0 >> shift) as usize) & ((1 << width) - 1);
        let mut ends = [0usize; 256];
        for e in edges.iter() {
            ends[digit(e)] += 1;
        }
        let mut starts = [0usize; 256];
        let mut sum = 0;
        for d in 0..256 {
            starts[d] = sum;
            sum += ends[d];
            ends[d] = sum;
        }
        let mut next = starts;
        for d in 0..(1usize << width) {
            while next[d] < ends[d] {
                let t = digit(&edges[next[d]]);
                if t == d {
                    next[d] += 1;
                } else {
                    edges.swap(next[d], next[t]);
                    next[t] += 1;
                }
            }
        }
        for d in 0..(1usize << width) {
            flag_sort(&mut edges[starts[d]..ends[d]], done + width, bits);
        }
    }

    impl Adjacency {
        fn new(mut buckets: Vec<Vec<(u128, u128)>>, mix: Mix) -> Self {
            let total: usize = buckets.iter().map(Vec::len).sum();
            // about 8 edges per group, 2^8 to 2^24 groups
            let bits = (usize::BITS - (total / 8).max(1).leading_zeros()).clamp(8, 24);
            let per_bucket = 1usize << (bits - 8);
            let mut starts = vec![0usize; 256 * (per_bucket + 1)];
            for (b, bucket) in buckets.iter_mut().enumerate() {
                pgrx::check_for_interrupts!();
                flag_sort(bucket, 8, bits);
                let base = b * (per_bucket + 1);
                for e in bucket.iter() {
                    starts[base + ((e.0 >> (128 - bits)) as usize & (per_bucket - 1)) + 1] += 1;
                }
                for g in 0..per_bucket {
                    starts[base + g + 1] += starts[base + g];
                }
            }
            Adjacency {
                buckets,
                starts,
                bits,
                mix,
            }
        }

        /// The nodes `from` has edges to.
        pub fn from(&self, from: u128) -> impl Iterator<Item = u128> + '_ {
            let key = self.mix.apply(from);
            let per_bucket = 1usize << (self.bits - 8);
            let b = (key >> 120) as usize;
            let at = b * (per_bucket + 1) + ((key >> (128 - self.bits)) as usize & (per_bucket - 1));
            self.buckets[b][self.starts[at]..self.starts[at + 1]]
                .iter()
                .filter(move |e| e.0 == key)
                .map(|e| e.1)
        }
    }

    /// What `read_if_worth_it` did.
    pub enum Read {
        /// read the table: every edge as (from, to) in the walk's direction
        Edges(Adjacency),
        /// not worth it for a frontier this small: maybe at a later level
        NotYet,
        /// not for this walk: not allowed (`memmie.traversal_work_mem` = 0, no SELECT right,
        /// row-level security: the lookups go through SPI, which enforces both), not a heap
        /// table, or larger than `memmie.traversal_work_mem` (also when found so while reading,
        /// statistics being old)
        Never,
    }

    /// Reads every edge with one sequential scan under the active snapshot when a frontier of
    /// `frontier` nodes makes that cheaper than looking them up.
    pub fn read_if_worth_it(dir: Direction, frontier: usize) -> Read {
        let max_edges = crate::guc::traversal_work_mem_bytes() / EDGE_BYTES;
        if max_edges == 0 {
            return Read::Never;
        }
        let Some(relid) = crate::memmie_relid(c"blob_edges") else {
            return Read::Never;
        };
        unsafe {
            if pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode)
                != pg_sys::AclResult::ACLCHECK_OK
                // RLS_NONE_ENV: policies exist but not for this user (memmie's functions run as
                // the owner, who bypasses them); the read checks that on every traversal
                || pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, true)
                    == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
            {
                return Read::Never;
            }
            let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
            let rel = pg_sys::table_open(relid, lock);
            let reltuples = (*(*rel).rd_rel).reltuples as f64;
            let estimate = if reltuples >= 0.0 {
                reltuples
            } else {
                pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM) as f64 * EDGES_PER_PAGE
            };
            // (heap_getnext reads heap tables only; ALTER TABLE ... SET ACCESS METHOD exists)
            if estimate > max_edges as f64 || (*rel).rd_tableam != pg_sys::GetHeapamTableAmRoutine() {
                pg_sys::table_close(rel, lock);
                return Read::Never;
            }
            if (frontier as f64) * SHARE < estimate {
                pg_sys::table_close(rel, lock);
                return Read::NotYet;
            }
            let mix = Mix::new();
            let buckets = scan(rel, dir, max_edges, estimate as usize, mix);
            pg_sys::table_close(rel, lock);
            let Some(buckets) = buckets else { return Read::Never };
            pgrx::debug1!(
                "memmie: a traversal read memmie.blob_edges whole ({} edges)",
                buckets.iter().map(Vec::len).sum::<usize>()
            );
            Read::Edges(Adjacency::new(buckets, mix))
        }
    }

    /// 1-based number of column `name` of `rel`.
    unsafe fn attnum(rel: pg_sys::Relation, name: &str) -> Option<i32> {
        // pgrx's accessor, not `TupleDescData.attrs`: PostgreSQL 18 moved the attributes behind
        // `compact_attrs`, and `PgTupleDesc::get` reads them right on every version.
        let desc = pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att);
        (0..desc.len()).find_map(|i| {
            let att = desc.get(i)?;
            (!att.attisdropped && att.name() == name).then_some(i as i32 + 1)
        })
    }

    /// The (from, to) pairs of every visible edge; None beyond `max_edges`.
    unsafe fn scan(
        rel: pg_sys::Relation,
        dir: Direction,
        max_edges: usize,
        estimate: usize,
        mix: Mix,
    ) -> Option<Vec<Vec<(u128, u128)>>> {
        let (from, to) = match dir {
            Direction::Descendants => ("parent_blob_id", "child_blob_id"),
            Direction::Ancestors => ("child_blob_id", "parent_blob_id"),
        };
        let (from, to) = (attnum(rel, from)?, attnum(rel, to)?);
        let desc = (*rel).rd_att;
        let scan = pg_sys::table_beginscan(rel, pg_sys::GetActiveSnapshot(), 0, std::ptr::null_mut());
        let mut buckets: Vec<Vec<(u128, u128)>> = (0..256)
            .map(|_| Vec::with_capacity(estimate.min(max_edges) / 240))
            .collect();
        let mut count = 0usize;
        let mut fits = true;
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            if count.is_multiple_of(super::INTERRUPT_EVERY) {
                pgrx::check_for_interrupts!();
            }
            if count >= max_edges {
                fits = false;
                break;
            }
            let (mut from_null, mut to_null) = (false, false);
            let a = pg_sys::heap_getattr(tuple, from, desc, &mut from_null);
            let b = pg_sys::heap_getattr(tuple, to, desc, &mut to_null);
            if from_null || to_null {
                continue;
            }
            // uuid is passed by reference: 16 bytes
            let read = |d: pg_sys::Datum| u128::from_ne_bytes(*(d.cast_mut_ptr::<[u8; 16]>()));
            let from = mix.apply(read(a));
            buckets[(from >> 120) as usize].push((from, read(b)));
            count += 1;
        }
        pg_sys::table_endscan(scan);
        fits.then_some(buckets)
    }
}

fn checked_depth(max_depth: Option<i32>) -> Result<Option<i32>> {
    match max_depth {
        Some(d) if d < 0 => Err(MemmieError::InvalidParameter(format!(
            "max_depth must not be negative, got {d}"
        ))),
        d => Ok(d),
    }
}

fn traverse(blob_id: Option<Uuid>, dir: Direction, max_depth: Option<i32>) -> Result<Vec<(Uuid, i32)>> {
    let start = blob_id.ok_or_else(|| MemmieError::InvalidParameter("blob_id must not be NULL".into()))?;
    let max_depth = checked_depth(max_depth)?;
    let user = require_blob(start)?;
    let user = edges_distributed()?.then_some(user);
    Ok(walk(start, dir, max_depth, None, user)?.nodes)
}

/// Every blob reachable from `blob_id` along edges parent -> child, each once at its shortest
/// depth (1 = a child), at most `max_depth` levels down.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn descendants(
    blob_id: Option<Uuid>,
    max_depth: default!(Option<i32>, "NULL"),
) -> TableIterator<'static, (name!(blob_id, Uuid), name!(depth, i32))> {
    TableIterator::new(or_raise(traverse(blob_id, Direction::Descendants, max_depth)))
}

/// Every blob `blob_id` derives from, along edges child -> parent, each once at its shortest
/// depth (1 = a parent), at most `max_depth` levels up.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn ancestors(
    blob_id: Option<Uuid>,
    max_depth: default!(Option<i32>, "NULL"),
) -> TableIterator<'static, (name!(blob_id, Uuid), name!(depth, i32))> {
    TableIterator::new(or_raise(traverse(blob_id, Direction::Ancestors, max_depth)))
}

/// Whether an edge parent -> child would close a cycle: true when `parent` is `child` or is
/// reachable from `child`. (0.2.0's; add_edge calls the one with the user since 0.3.0. On a Citus
/// cluster this one looks the child's user up first: a query to every shard of `blobs`.)
#[pg_extern(name = "_would_cycle", stable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn would_cycle(parent: Uuid, child: Uuid) -> bool {
    if parent == child {
        return true;
    }
    // on a Citus cluster, within the user of child (edges never cross users): a missing child
    // has no edges
    let user = if or_raise(edges_distributed()) {
        match or_raise(blob_user(child)) {
            Some(u) => Some(u),
            None => return false,
        }
    } else {
        None
    };
    or_raise(walk(child, Direction::Descendants, None, Some(parent), user)).reached
}

/// The same, for blobs of `user_id` (both blobs of an edge are one user's): on a Citus cluster
/// only that user's edges are read, on the user's shard.
#[pg_extern(name = "_would_cycle", stable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn would_cycle_of_user(parent: Uuid, child: Uuid, user_id: Uuid) -> bool {
    if parent == child {
        return true;
    }
    let user = or_raise(edges_distributed()).then_some(user_id);
    or_raise(walk(child, Direction::Descendants, None, Some(parent), user)).reached
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use pgrx::Uuid;

    fn make_chain(n: usize) -> Vec<Uuid> {
        let mut ids = Vec::new();
        for i in 0..n {
            let id: Uuid = Spi::get_one(&format!(
                "SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000d1', 'n{i}', 'text/plain')).id"
            ))
            .unwrap()
            .unwrap();
            if let Some(prev) = ids.last() {
                Spi::run(&format!("SELECT memmie.add_edge('{prev}', '{id}', 'test', 'next')")).unwrap();
            }
            ids.push(id);
        }
        ids
    }

    #[pg_test]
    fn walk_reports_shortest_depths_and_stops_at_target() {
        let ids = make_chain(5);
        // a shortcut 0 -> 3: node 3 is at depth 1, node 4 at depth 2
        Spi::run(&format!(
            "SELECT memmie.add_edge('{}', '{}', 'test', 'skip')",
            ids[0], ids[3]
        ))
        .unwrap();
        let w = super::walk(ids[0], super::Direction::Descendants, None, None, None).unwrap();
        let depth_of = |id: Uuid| w.nodes.iter().find(|(n, _)| *n == id).map(|(_, d)| *d);
        assert_eq!(w.nodes.len(), 4);
        assert_eq!(depth_of(ids[1]), Some(1));
        assert_eq!(depth_of(ids[3]), Some(1));
        assert_eq!(depth_of(ids[4]), Some(2));
        let up = super::walk(ids[4], super::Direction::Ancestors, Some(1), None, None).unwrap();
        assert_eq!(up.nodes, vec![(ids[3], 1)]);
        assert!(
            super::walk(ids[1], super::Direction::Descendants, None, Some(ids[4]), None)
                .unwrap()
                .reached
        );
        assert!(
            !super::walk(ids[4], super::Direction::Descendants, None, Some(ids[0]), None)
                .unwrap()
                .reached
        );
    }
}
