//! Partition upkeep for the two partitioned tables: `deltas` by month, `events` by day (UTC).
//!
//! `create_partitions` makes the missing partitions of a range of periods and moves rows that
//! were waiting in the DEFAULT partition into them; `ensure_partitions` keeps the current and
//! the next periods of both tables; `drop_old_partitions` removes whole `events` partitions whose
//! every event is processed. Partition maintenance runs one session at a time (a transaction
//! advisory lock). Names are `deltas_YYYY_MM` / `events_YYYY_MM_DD`, at most 63 bytes.
//!
//! What a partition gets is defined once, in `sql/partitions.sql`: its keys and indexes by
//! `memmie._index_partition`, its storage parameters (autovacuum) copied from its table's DEFAULT
//! partition. The catalog queries this file runs are `sql/queries/*.sql`.

use crate::error::{guarded, or_raise, MemmieError, Result};
use pgrx::datum::{Date, Interval};
use pgrx::prelude::*;
use pgrx::search_path;

/// The partitioned tables memmie manages and their period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Month,
    Day,
}

struct Managed {
    table: &'static str,
    period: Period,
}

const DELTAS: Managed = Managed {
    table: "deltas",
    period: Period::Month,
};
const EVENTS: Managed = Managed {
    table: "events",
    period: Period::Day,
};

/// The partitions of a table (oid `$1`), DEFAULT excepted: `name`, `lower_bound`, `upper_bound`.
const PARTITION_BOUNDS: &str = include_str!("../sql/queries/partition_bounds.sql");
/// The storage parameters of a table's (name `$1`) DEFAULT partition, as a WITH list.
const PARTITION_OPTIONS: &str = include_str!("../sql/queries/partition_options.sql");

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One partition to have: its name and its bounds (UTC midnight literals).
#[derive(Debug, PartialEq, Eq)]
struct Planned {
    name: String,
    from: String,
    to: String,
    /// `from` as seconds since 1970-01-01 UTC
    from_epoch: i64,
}

fn literal((y, m, d): (i64, i64, i64)) -> String {
    format!("{y:04}-{m:02}-{d:02} 00:00:00+00")
}

/// Truncates to at most 63 bytes (PostgreSQL's identifier limit) on a character boundary.
fn truncate_identifier(mut name: String) -> String {
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// The `count` periods of `t` starting with the one that holds `(y, m, d)`.
fn plan(t: &Managed, (y, m, d): (i64, i64, i64), count: i64) -> Vec<Planned> {
    (0..count)
        .map(|i| match t.period {
            Period::Month => {
                let months = y * 12 + (m - 1) + i;
                let (ly, lm) = (months.div_euclid(12), months.rem_euclid(12) + 1);
                let (hy, hm) = ((months + 1).div_euclid(12), (months + 1).rem_euclid(12) + 1);
                Planned {
                    name: truncate_identifier(format!("{}_{ly:04}_{lm:02}", t.table)),
                    from: literal((ly, lm, 1)),
                    to: literal((hy, hm, 1)),
                    from_epoch: days_from_civil(ly, lm, 1) * 86400,
                }
            }
            Period::Day => {
                let day = days_from_civil(y, m, d) + i;
                let lo = civil_from_days(day);
                Planned {
                    name: truncate_identifier(format!("{}_{:04}_{:02}_{:02}", t.table, lo.0, lo.1, lo.2)),
                    from: literal(lo),
                    to: literal(civil_from_days(day + 1)),
                    from_epoch: day * 86400,
                }
            }
        })
        .collect()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn spi_error(e: pgrx::spi::SpiError) -> MemmieError {
    MemmieError::Internal(format!("partition maintenance failed: {e}"))
}

fn managed(parent: pg_sys::Oid) -> Result<&'static Managed> {
    let name: Option<String> = Spi::get_one_with_args(
        "SELECT (SELECT c.relname::text FROM pg_catalog.pg_class c \
                 WHERE c.oid = $1 AND c.relnamespace = 'memmie'::regnamespace AND c.relkind = 'p')",
        &[parent.into()],
    )
    .map_err(spi_error)?;
    match name.as_deref() {
        Some("deltas") => Ok(&DELTAS),
        Some("events") => Ok(&EVENTS),
        _ => Err(MemmieError::InvalidParameter(format!(
            "memmie manages the partitions of memmie.deltas (monthly) and memmie.events (daily), not of relation {}",
            relation_name(parent)
        ))),
    }
}

fn relation_name(oid: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[oid.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| u32::from(oid).to_string())
}

/// One partition maintainer at a time (held until the transaction ends).
fn lock_maintenance() -> Result<()> {
    Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('memmie.partitions', 0))")
        .map_err(spi_error)
}

/// Of the planned partitions, those still to make: neither a relation of that name in schema
/// memmie nor a partition of `t` with the same lower bound exists. Names are checked first (one
/// catalog lookup: all that a no-op costs); the bounds of the existing partitions are read once,
/// only when a name is missing.
fn missing(parent: pg_sys::Oid, planned: Vec<Planned>) -> Result<Vec<Planned>> {
    let names: Vec<String> = planned.iter().map(|p| p.name.clone()).collect();
    let taken: Vec<String> = Spi::get_one_with_args::<Vec<String>>(
        "SELECT coalesce(array_agg(c.relname::text), '{}') FROM pg_catalog.pg_class c \
         WHERE c.relnamespace = 'memmie'::regnamespace AND c.relname = ANY ($1)",
        &[names.into()],
    )
    .map_err(spi_error)?
    .unwrap_or_default();
    let planned: Vec<Planned> = planned.into_iter().filter(|p| !taken.contains(&p.name)).collect();
    if planned.is_empty() {
        return Ok(planned);
    }
    // lower bounds of the existing partitions (other names for the same period), as epochs
    let bounds: Vec<i64> = Spi::get_one_with_args::<Vec<i64>>(
        &format!(
            "SELECT coalesce(array_agg(extract(epoch FROM p.lower_bound)::bigint), '{{}}') FROM ({PARTITION_BOUNDS}) p"
        ),
        &[parent.into()],
    )
    .map_err(spi_error)?
    .unwrap_or_default();
    Ok(planned
        .into_iter()
        .filter(|p| {
            pgrx::check_for_interrupts!();
            !bounds.contains(&p.from_epoch)
        })
        .collect())
}

/// Whether memmie's tables are on a Citus cluster (`memmie._distributed()`, sql/helpers.sql).
/// False under a schema older than that function (this library with the SQL of 0.2.0, before
/// `ALTER EXTENSION memmie UPDATE`: such a schema was never distributed).
fn distributed() -> Result<bool> {
    let known = Spi::get_one::<bool>("SELECT pg_catalog.to_regprocedure('memmie._distributed()') IS NOT NULL")
        .map_err(spi_error)?
        .unwrap_or(false);
    if !known {
        return Ok(false);
    }
    Spi::get_one::<bool>("SELECT memmie._distributed()")
        .map_err(spi_error)
        .map(|d| d.unwrap_or(false))
}

/// For each partition to make, whether rows of its range wait in the DEFAULT partition (one
/// query for all of them; on a Citus cluster one per range).
fn waiting_in_default(t: &Managed, todo: &[Planned], dist: bool) -> Result<Vec<bool>> {
    if dist {
        // The DEFAULT partition is distributed there, and Citus refuses the correlated subquery
        // over unnest() below ("correlated subqueries are not supported when the FROM clause
        // contains a set returning function"): one EXISTS per range, each over every shard
        // (a partition upkeep makes a handful of partitions at a time).
        let query = format!(
            "SELECT EXISTS (SELECT 1 FROM memmie.{} d WHERE d.created_at >= $1::timestamptz AND d.created_at < $2::timestamptz)",
            default_of(t)
        );
        return todo
            .iter()
            .map(|p| {
                pgrx::check_for_interrupts!();
                Spi::get_one_with_args::<bool>(&query, &[p.from.clone().into(), p.to.clone().into()])
                    .map_err(spi_error)
                    .map(|found| found.unwrap_or(false))
            })
            .collect();
    }
    let lo: Vec<String> = todo.iter().map(|p| p.from.clone()).collect();
    let hi: Vec<String> = todo.iter().map(|p| p.to.clone()).collect();
    let hits: Vec<i64> = Spi::get_one_with_args::<Vec<i64>>(
        &format!(
            "SELECT coalesce(array_agg(u.i), '{{}}') FROM unnest($1::timestamptz[], $2::timestamptz[]) WITH ORDINALITY u(lo, hi, i) \
             WHERE EXISTS (SELECT FROM memmie.{} d WHERE d.created_at >= u.lo AND d.created_at < u.hi)",
            default_of(t)
        ),
        &[lo.into(), hi.into()],
    )
    .map_err(spi_error)?
    .unwrap_or_default();
    Ok((1..=todo.len() as i64)
        .map(|i| {
            pgrx::check_for_interrupts!();
            hits.contains(&i)
        })
        .collect())
}

/// From how many partitions in one call a DEFAULT partition holding rows is detached while they
/// are made. While a DEFAULT partition is attached, PostgreSQL checks it against every new
/// partition: a scan of all its rows per partition, so catching up on many periods after rows
/// piled up there rereads them again and again. Detached, it is checked once, when it is
/// attached again at the end (in the same transaction, under the same locks: nobody sees it
/// missing). An empty DEFAULT partition costs little to check and stays attached.
const DETACH_DEFAULT_AT: usize = 8;

/// Creates partition `p` of `t`; rows of its range waiting in the DEFAULT partition (`waiting`)
/// move into it. `detached`: the DEFAULT partition is detached at the moment.
/// `options`: the WITH clause of the new partition (see [`partition_options`]).
/// `dist`: the tables are on a Citus cluster (see below).
fn create_one(t: &Managed, p: &Planned, waiting: bool, detached: bool, options: &str, dist: bool) -> Result<()> {
    let table = quote_ident(t.table);
    let name = quote_ident(&p.name);
    let default = default_of(t);
    // keys and indexes live on each partition (see memmie._index_partition in sql/partitions.sql)
    let index = format!(
        "SELECT memmie._index_partition('{}', '{}')",
        t.table,
        p.name.replace('\'', "''")
    );
    let (from, to) = (&p.from, &p.to);
    let range = format!("created_at >= '{from}' AND created_at < '{to}'");
    let create = format!(
        "CREATE TABLE memmie.{name} PARTITION OF memmie.{table} FOR VALUES FROM ('{from}') TO ('{to}') {options}"
    );
    // One statement per SPI call: Citus refuses a string of several commands when it passes
    // the DDL on to the workers ("cannot insert multiple commands into a prepared statement").
    let statements: Vec<String> = if dist && waiting {
        // On Citus the DEFAULT partition and every partition made with PARTITION OF are
        // distributed, and a local table attached to them would be copied into shards and left
        // on the coordinator's disk. So the waiting rows step aside into a temporary table of
        // this transaction, the partition is made in place, and they go into it.
        vec![
            format!("CREATE TEMPORARY TABLE memmie_moved (LIKE memmie.{table}) ON COMMIT DROP"),
            format!(
                "WITH moved AS (DELETE FROM memmie.{default} WHERE {range} RETURNING *) \
                 INSERT INTO pg_temp.memmie_moved SELECT * FROM moved"
            ),
            create,
            index,
            format!("INSERT INTO memmie.{name} SELECT * FROM pg_temp.memmie_moved"),
            "DROP TABLE pg_temp.memmie_moved".into(),
        ]
    } else if waiting && !detached {
        // An attached DEFAULT partition may not keep rows of the new range: move them, index,
        // attach.
        vec![
            format!(
                "CREATE TABLE memmie.{name} (LIKE memmie.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE) {options}"
            ),
            format!(
                "WITH moved AS (DELETE FROM memmie.{default} WHERE {range} RETURNING *) \
                 INSERT INTO memmie.{name} SELECT * FROM moved"
            ),
            index,
            format!("ALTER TABLE memmie.{table} ATTACH PARTITION memmie.{name} FOR VALUES FROM ('{from}') TO ('{to}')"),
        ]
    } else if waiting {
        vec![
            create,
            index,
            format!(
                "WITH moved AS (DELETE FROM memmie.{default} WHERE {range} RETURNING *) \
                 INSERT INTO memmie.{name} SELECT * FROM moved"
            ),
        ]
    } else {
        vec![create, index]
    };
    for sql in &statements {
        Spi::run(sql).map_err(spi_error)?;
    }
    Ok(())
}

/// The WITH clause that gives a new partition of `t` the storage parameters of its DEFAULT
/// partition (set in sql/partitions.sql); empty when that has none.
fn partition_options(t: &Managed) -> Result<String> {
    let list = Spi::get_one_with_args::<String>(PARTITION_OPTIONS, &[t.table.into()])
        .map_err(spi_error)?
        .unwrap_or_default();
    Ok(if list.is_empty() {
        String::new()
    } else {
        format!("WITH ({list})")
    })
}

/// The DEFAULT partition of `t`, quoted.
fn default_of(t: &Managed) -> String {
    quote_ident(&format!("{}_default", t.table))
}

fn default_has_rows(t: &Managed) -> Result<bool> {
    Spi::get_one::<bool>(&format!("SELECT EXISTS (SELECT 1 FROM memmie.{})", default_of(t)))
        .map_err(spi_error)
        .map(|found| found.unwrap_or(false))
}

/// Detaches (`attach` false) or attaches again the DEFAULT partition of `t`.
fn default_partition(t: &Managed, attach: bool) -> Result<()> {
    let (table, default) = (quote_ident(t.table), default_of(t));
    Spi::run(&if attach {
        format!("ALTER TABLE memmie.{table} ATTACH PARTITION memmie.{default} DEFAULT")
    } else {
        format!("ALTER TABLE memmie.{table} DETACH PARTITION memmie.{default}")
    })
    .map_err(spi_error)
}

fn create_partitions_impl(parent: pg_sys::Oid, start: Date, count: i32) -> Result<i32> {
    if !(1..=10000).contains(&count) {
        return Err(MemmieError::InvalidParameter(format!(
            "count must be between 1 and 10000, got {count}"
        )));
    }
    if start.is_infinity() || start.is_neg_infinity() {
        return Err(MemmieError::InvalidParameter("start_date must be a finite date".into()));
    }
    let t = managed(parent)?;
    lock_maintenance()?;
    let todo = missing(
        parent,
        plan(
            t,
            (
                i64::from(start.year()),
                i64::from(start.month()),
                i64::from(start.day()),
            ),
            i64::from(count),
        ),
    )?;
    if todo.is_empty() {
        return Ok(0);
    }
    // Writers wait from here on (making a partition takes this lock anyway), so that the rows
    // found waiting in the DEFAULT partition are all there will be until this transaction ends.
    Spi::run(&format!(
        "LOCK TABLE ONLY memmie.{} IN ACCESS EXCLUSIVE MODE",
        quote_ident(t.table)
    ))
    .map_err(spi_error)?;
    let dist = distributed()?;
    let waiting = waiting_in_default(t, &todo, dist)?;
    let options = partition_options(t)?;
    let detach = todo.len() >= DETACH_DEFAULT_AT && (waiting.contains(&true) || default_has_rows(t)?);
    if detach {
        default_partition(t, false)?;
    }
    for (p, w) in todo.iter().zip(waiting) {
        pgrx::check_for_interrupts!();
        create_one(t, p, w, detach, &options, dist)?;
    }
    if detach {
        default_partition(t, true)?;
    }
    Ok(todo.len() as i32)
}

/// Creates the missing monthly (`deltas`) or daily (`events`) partitions of `count` periods from
/// the one holding `start_date`, moving rows waiting in the DEFAULT partition into them. Returns
/// how many it created. (SQL: memmie.create_partitions(regclass, date, int), sql/partitions.sql.)
#[pg_extern(name = "_create_partitions")]
#[search_path(pg_catalog, pg_temp)]
fn create_partitions(parent: Option<pg_sys::Oid>, start_date: Option<Date>, count: Option<i32>) -> i32 {
    // (guarded: an ERROR raised by the DDL reaches the client with its SQLSTATE and message only)
    or_raise(guarded(|| {
        let parent = parent.ok_or_else(|| MemmieError::InvalidParameter("parent must not be NULL".into()))?;
        let start = start_date.ok_or_else(|| MemmieError::InvalidParameter("start_date must not be NULL".into()))?;
        let count = count.ok_or_else(|| MemmieError::InvalidParameter("count must not be NULL".into()))?;
        create_partitions_impl(parent, start, count)
    }))
}

/// The current UTC date.
fn today_utc() -> Result<Date> {
    Spi::get_one::<Date>("SELECT (pg_catalog.now() AT TIME ZONE 'UTC')::date")
        .map_err(spi_error)?
        .ok_or_else(|| MemmieError::Internal("no current date".into()))
}

/// Keeps the current and the next `premake` periods of both tables (months of `deltas`, days of
/// `events`). Returns how many partitions it created.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn ensure_partitions(premake: default!(Option<i32>, 3)) -> i32 {
    // (guarded: an ERROR raised by the DDL reaches the client with its SQLSTATE and message only)
    or_raise(guarded(|| {
        let premake = premake.ok_or_else(|| MemmieError::InvalidParameter("premake must not be NULL".into()))?;
        if !(0..=3650).contains(&premake) {
            return Err(MemmieError::InvalidParameter(format!(
                "premake must be between 0 and 3650, got {premake}"
            )));
        }
        let today = today_utc()?;
        let deltas = Spi::get_one::<pg_sys::Oid>("SELECT 'memmie.deltas'::regclass::oid").map_err(spi_error)?;
        let events = Spi::get_one::<pg_sys::Oid>("SELECT 'memmie.events'::regclass::oid").map_err(spi_error)?;
        let mut n = 0;
        for parent in [deltas, events].into_iter().flatten() {
            n += create_partitions_impl(parent, today, premake + 1)?;
        }
        Ok(n)
    }))
}

/// Drops the partitions of `events` that end before `now() - older_than` and hold no unprocessed
/// event; a partition that still does is kept and reported (NOTICE). `deltas` are the history:
/// never dropped. Returns how many partitions it dropped.
#[pg_extern(name = "_drop_old_partitions")]
#[search_path(pg_catalog, pg_temp)]
fn drop_old_partitions(parent: Option<pg_sys::Oid>, older_than: Option<Interval>) -> i32 {
    // (guarded: an ERROR raised by the DDL reaches the client with its SQLSTATE and message only)
    or_raise(guarded(|| {
        let parent = parent.ok_or_else(|| MemmieError::InvalidParameter("parent must not be NULL".into()))?;
        let older_than =
            older_than.ok_or_else(|| MemmieError::InvalidParameter("older_than must not be NULL".into()))?;
        // (compared as PostgreSQL compares intervals: a month is 30 days)
        let micros = (i128::from(older_than.months()) * 30 + i128::from(older_than.days())) * 86_400_000_000
            + i128::from(older_than.micros());
        if micros < 0 {
            return Err(MemmieError::InvalidParameter(
                "older_than must not be negative: it would drop the partitions of days still to come".into(),
            ));
        }
        let t = managed(parent)?;
        if t.period != Period::Day {
            return Err(MemmieError::InvalidParameter(
                "memmie.deltas is the history of every blob: its partitions are never dropped".into(),
            ));
        }
        lock_maintenance()?;
        let old: Vec<String> = Spi::connect(|client| {
            client
                .select(
                    &format!(
                        "SELECT p.name FROM ({PARTITION_BOUNDS}) p \
                         WHERE p.upper_bound <= pg_catalog.now() - $2 ORDER BY p.upper_bound"
                    ),
                    None,
                    &[parent.into(), older_than.into()],
                )?
                .map(|row| Ok(row.get::<String>(1)?.unwrap_or_default()))
                .collect::<pgrx::spi::Result<Vec<_>>>()
        })
        .map_err(spi_error)?;
        let mut dropped = 0;
        for name in old {
            pgrx::check_for_interrupts!();
            let pending = Spi::get_one::<bool>(&format!(
                "SELECT EXISTS (SELECT 1 FROM memmie.{} WHERE NOT processed)",
                quote_ident(&name)
            ))
            .map_err(spi_error)?
            .unwrap_or(true);
            if pending {
                pgrx::notice!("memmie: partition memmie.{name} is kept: it holds unprocessed events");
                continue;
            }
            Spi::run(&format!("DROP TABLE memmie.{}", quote_ident(&name))).map_err(spi_error)?;
            dropped += 1;
        }
        Ok(dropped)
    }))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for z in [-800_000i64, -1, 0, 1, 59, 60, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28), 2);
    }

    #[test]
    fn plans_months_and_days_across_year_ends() {
        let m = plan(&DELTAS, (2026, 11, 26), 3);
        assert_eq!(
            m[0],
            Planned {
                name: "deltas_2026_11".into(),
                from: "2026-11-01 00:00:00+00".into(),
                to: "2026-12-01 00:00:00+00".into(),
                from_epoch: 1_793_491_200,
            }
        );
        assert_eq!(m[2].name, "deltas_2027_01");
        assert_eq!(m[2].to, "2027-02-01 00:00:00+00");
        let d = plan(&EVENTS, (2024, 2, 28), 3);
        assert_eq!(
            d.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["events_2024_02_28", "events_2024_02_29", "events_2024_03_01"]
        );
        assert_eq!(d[2].to, "2024-03-02 00:00:00+00");
    }

    #[test]
    fn identifiers_are_cut_at_63_bytes_on_a_char_boundary() {
        let long = "é".repeat(40);
        let cut = truncate_identifier(long);
        assert!(cut.len() <= 63 && cut.is_char_boundary(cut.len()));
    }
}
