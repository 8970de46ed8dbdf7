-- Ratios between memmie and the alternative measured in the same run, with the target where
-- the issue that asked for the benchmark set one.
WITH r AS (SELECT * FROM bench.results)
SELECT m.benchmark, m.size, a.variant AS versus,
       round(a.ms_median / nullif(m.ms_median, 0), 2) AS speedup,
       CASE WHEN a.variant LIKE 'PostgreSQL alone%' THEN 'none (reference)'
            WHEN m.benchmark ~ '^(descendants|ancestors) \(' AND (regexp_match(m.size, '(\d+) nodes'))[1]::bigint >= 10000
            THEN '>= 2'
            WHEN m.benchmark = 'claim + complete (no-op job)' THEN '>= 0.9'
            WHEN m.benchmark LIKE 'no-op jobs, %' THEN '>= 1'
            WHEN m.benchmark LIKE 'partitions: create%' OR m.benchmark = 'partitions: upkeep of both tables' THEN '>= 2'
            WHEN m.benchmark = 'partitions: no-op upkeep of both tables' THEN 'memmie < 5 ms'
            WHEN m.benchmark = 'check(): 2,000 deltas' AND a.variant LIKE 'reference%' THEN '>= 0.67 (<= 1.5x)'
            WHEN m.benchmark LIKE 'blob_state, %' AND a.variant LIKE 'reference%' AND m.size <> 'worst' THEN '>= 0.5 (<= 2x)'
            WHEN m.benchmark LIKE 'tenants: %' THEN '>= 0.91 (<= 10% slower)'
       END AS target
FROM r m JOIN r a ON a.benchmark = m.benchmark AND a.size = m.size AND a.ord <> m.ord
WHERE m.variant LIKE 'memmie%' AND a.variant NOT LIKE 'memmie%'
  AND m.benchmark NOT LIKE 'refcount trigger%'
ORDER BY m.ord, a.ord;

-- Latency (no alternative: the figures themselves).
SELECT benchmark, size AS percentile, ms_median AS ms, per
FROM bench.results WHERE benchmark = 'create_blob commit -> job claimed' ORDER BY ord;

-- Refcount: per-row overhead over the no-trigger baseline (rows = the number in `size`).
SELECT b.benchmark,
       round((n.ms_median - b.ms_median) * 1000 / split_part(b.size, ' ', 1)::int, 3) AS native_us_per_row,
       round((p.ms_median - b.ms_median) * 1000 / split_part(b.size, ' ', 1)::int, 3) AS plpgsql_us_per_row,
       round((n.ms_median - b.ms_median) / nullif(p.ms_median - b.ms_median, 0), 2) AS native_over_plpgsql
FROM bench.results b
JOIN bench.results n ON n.benchmark = b.benchmark AND n.variant LIKE 'memmie%'
JOIN bench.results p ON p.benchmark = b.benchmark AND p.variant LIKE 'design%'
WHERE b.benchmark LIKE 'refcount trigger%' AND b.variant LIKE 'no trigger%'
ORDER BY b.ord;
