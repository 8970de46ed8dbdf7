//! The provenance DAG: breadth-first traversal of `blob_edges`, level by level.
//!
//! Each level is read with a few queries over the whole frontier (`= ANY($1)`, in batches, each
//! answering with one array), so a million-node traversal is a few hundred queries, not a
//! million; nodes are kept in a hash set, so every node is reported once, at its shortest depth,
//! however many paths reach it (multi-parent merges, no path arrays). Nothing recurses, and
//! interrupts are checked between batches and as nodes are read, so `statement_timeout` and
//! `pg_cancel_backend` stop a large traversal promptly.

use crate::error::{or_raise, MemmieError, Result};
use pgrx::prelude::*;
use pgrx::Uuid;
use std::collections::HashSet;

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
}

/// How often (in rows) a traversal checks for query cancel / statement_timeout.
const INTERRUPT_EVERY: usize = 1024;

/// Frontier nodes looked up per query.
const BATCH: usize = 4096;

const UUID_ARRAY: pgrx::PgOid = pgrx::PgOid::BuiltIn(pgrx::pg_sys::BuiltinOid::UUIDARRAYOID);

fn spi_failed(e: pgrx::spi::SpiError) -> MemmieError {
    MemmieError::Internal(format!("DAG traversal failed: {e}"))
}

/// P0002 unless blob `id` exists.
fn require_blob(id: Uuid) -> Result<()> {
    const UUID: pgrx::PgOid = pgrx::PgOid::BuiltIn(pgrx::pg_sys::BuiltinOid::UUIDOID);
    let found = crate::plans::with_plan("SELECT 1 FROM memmie.blobs WHERE id = $1", &[UUID], |client, stmt| {
        client.select(stmt, Some(1), &[id.into()]).map(|t| !t.is_empty())
    })
    .map_err(spi_failed)?;
    if found { Ok(()) } else { Err(MemmieError::NotFound(format!("blob {id} does not exist"))) }
}

/// What a traversal found.
pub struct Walk {
    /// Every node reached (the start excluded), with its shortest distance from the start.
    pub nodes: Vec<(Uuid, i32)>,
    /// Whether `stop_at` was reached (the walk ends there).
    pub reached: bool,
}

/// Walks from `start` in `dir`, at most `max_depth` levels (all when None); stops early when
/// `stop_at` is reached.
pub fn walk(start: Uuid, dir: Direction, max_depth: Option<i32>, stop_at: Option<Uuid>) -> Result<Walk> {
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    seen.insert(*start.as_bytes());
    let mut nodes = Vec::new();
    let mut frontier = vec![start];
    let mut depth = 0i32;
    let mut rows = 0usize;
    let sql = dir.next_level_sql();
    while !frontier.is_empty() && max_depth.is_none_or(|m| depth < m) {
        depth += 1;
        let mut next = Vec::new();
        // A level is read in batches: an index scan over many keys that have no rows (the
        // leaves of a large tree) never checks for interrupts itself, so no single query may
        // run long; between batches we check.
        for batch in frontier.chunks(BATCH) {
            pgrx::check_for_interrupts!();
            let reached = crate::plans::with_plan(sql, &[UUID_ARRAY], |client, stmt| {
                // one row: the next nodes of the whole batch as one uuid[] (no per-row SPI cost)
                let table = client.select(stmt, Some(1), &[batch.to_vec().into()])?;
                let Some(found) = table.first().get::<pgrx::Array<Uuid>>(1)? else { return Ok(false) };
                for id in found.iter().flatten() {
                    rows += 1;
                    if rows % INTERRUPT_EVERY == 0 {
                        pgrx::check_for_interrupts!();
                    }
                    if seen.insert(*id.as_bytes()) {
                        if stop_at == Some(id) {
                            return Ok(true);
                        }
                        nodes.push((id, depth));
                        next.push(id);
                    }
                }
                Ok(false)
            })
            .map_err(spi_failed)?;
            if reached {
                return Ok(Walk { nodes, reached: true });
            }
        }
        frontier = next;
    }
    Ok(Walk { nodes, reached: false })
}

fn checked_depth(max_depth: Option<i32>) -> Result<Option<i32>> {
    match max_depth {
        Some(d) if d < 0 => Err(MemmieError::InvalidParameter(format!("max_depth must not be negative, got {d}"))),
        d => Ok(d),
    }
}

fn traverse(blob_id: Option<Uuid>, dir: Direction, max_depth: Option<i32>) -> Result<Vec<(Uuid, i32)>> {
    let start = blob_id.ok_or_else(|| MemmieError::InvalidParameter("blob_id must not be NULL".into()))?;
    let max_depth = checked_depth(max_depth)?;
    require_blob(start)?;
    Ok(walk(start, dir, max_depth, None)?.nodes)
}

/// Every blob reachable from `blob_id` along edges parent -> child, each once at its shortest
/// depth (1 = a child), at most `max_depth` levels down.
#[pg_extern(stable, parallel_safe)]
fn descendants(blob_id: Option<Uuid>, max_depth: default!(Option<i32>, "NULL")) -> TableIterator<'static, (name!(blob_id, Uuid), name!(depth, i32))> {
    TableIterator::new(or_raise(traverse(blob_id, Direction::Descendants, max_depth)))
}

/// Every blob `blob_id` derives from, along edges child -> parent, each once at its shortest
/// depth (1 = a parent), at most `max_depth` levels up.
#[pg_extern(stable, parallel_safe)]
fn ancestors(blob_id: Option<Uuid>, max_depth: default!(Option<i32>, "NULL")) -> TableIterator<'static, (name!(blob_id, Uuid), name!(depth, i32))> {
    TableIterator::new(or_raise(traverse(blob_id, Direction::Ancestors, max_depth)))
}

/// Whether an edge parent -> child would close a cycle: true when `parent` is `child` or is
/// reachable from `child`.
#[pg_extern(name = "_would_cycle", stable, strict, parallel_safe)]
fn would_cycle(parent: Uuid, child: Uuid) -> bool {
    if parent == child {
        return true;
    }
    or_raise(walk(child, Direction::Descendants, None, Some(parent))).reached
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
                Spi::run(&format!(
                    "SELECT memmie.add_edge('{prev}', '{id}', 'test', 'next')"
                ))
                .unwrap();
            }
            ids.push(id);
        }
        ids
    }

    #[pg_test]
    fn walk_reports_shortest_depths_and_stops_at_target() {
        let ids = make_chain(5);
        // a shortcut 0 -> 3: node 3 is at depth 1, node 4 at depth 2
        Spi::run(&format!("SELECT memmie.add_edge('{}', '{}', 'test', 'skip')", ids[0], ids[3])).unwrap();
        let w = super::walk(ids[0], super::Direction::Descendants, None, None).unwrap();
        let depth_of = |id: Uuid| w.nodes.iter().find(|(n, _)| *n == id).map(|(_, d)| *d);
        assert_eq!(w.nodes.len(), 4);
        assert_eq!(depth_of(ids[1]), Some(1));
        assert_eq!(depth_of(ids[3]), Some(1));
        assert_eq!(depth_of(ids[4]), Some(2));
        let up = super::walk(ids[4], super::Direction::Ancestors, Some(1), None).unwrap();
        assert_eq!(up.nodes, vec![(ids[3], 1)]);
        assert!(super::walk(ids[1], super::Direction::Descendants, None, Some(ids[4])).unwrap().reached);
        assert!(!super::walk(ids[4], super::Direction::Descendants, None, Some(ids[0])).unwrap().reached);
    }
}
