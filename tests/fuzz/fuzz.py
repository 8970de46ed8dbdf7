#!/usr/bin/env python3
"""Bounded randomized run over memmie's public functions (issue 12).

    python3 tests/fuzz/fuzz.py [--calls N] [--seed S] [--db DB]

Connects with the PG* environment (PGHOST, PGPORT, PGUSER), makes database DB (memmie_fuzz) anew
with memmie, and makes N (10,000) calls, each in its own transaction under a 3 s
statement_timeout: every public function, with valid arguments, arguments of other users' and
unknown objects, NULLs, malformed values and hostile sizes and nesting (deep JSON, integers beyond
64 bits, copy-doubling patches, long patches, large contents, odd paths). Any error is fine
except XX000 (an internal error memmie did not mean to raise) and a lost connection (a backend
crash); after the run, memmie.check() must be all ok. Prints one "ok - ..." / "not ok - ..." line
per check and "N passed, M failed"; exits non-zero on failure. The same seed makes the same calls.
"""
import argparse
import collections
import json
import random
import sys
import time
import uuid

import psycopg
from psycopg.types.json import set_json_loads

# Results are not looked at: keep json / jsonb as text (a deep document would overflow Python's
# own parser).
set_json_loads(lambda s: s)

TIMEOUT_MS = 3000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--calls', type=int, default=10000)
    ap.add_argument('--seed', type=int, default=20261201)
    ap.add_argument('--db', default='memmie_fuzz')
    args = ap.parse_args()
    rnd = random.Random(args.seed)

    with psycopg.connect(dbname='postgres', autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS {args.db}')
        c.execute(f'CREATE DATABASE {args.db}')
    fz = Fuzzer(rnd, args.db)
    fz.setup()
    started = time.time()
    for i in range(args.calls):
        fz.one()
    elapsed = time.time() - started
    fz.finish(elapsed)


class Fuzzer:
    def __init__(self, rnd, db):
        self.rnd = rnd
        self.db = db
        self.conn = None
        self.users = [uuid.UUID(int=rnd.getrandbits(128)) for _ in range(4)]
        self.blobs = []          # ids of blobs made so far (some deleted since)
        self.hashes = []         # content hashes stored
        self.jobs = []           # claimed job ids
        self.providers = ['fz-a', 'fz-b']
        self.codes = collections.Counter()   # SQLSTATE (or 'ok') -> calls
        self.by_fn = collections.Counter()
        self.fn_codes = collections.Counter()   # (function, SQLSTATE) -> calls
        self.internal = []       # (function, message) of XX000 errors
        self.crashes = []        # (function, message) of lost connections
        self.connect()

    def connect(self):
        self.conn = psycopg.connect(dbname=self.db, autocommit=True)
        self.conn.execute(f"SET statement_timeout = {TIMEOUT_MS}")
        self.conn.execute("SET client_min_messages = error")

    def setup(self):
        self.conn.execute('CREATE EXTENSION memmie')
        self.conn.execute('SELECT memmie.ensure_partitions()')
        for p, types in (('fz-a', ['text/*']), ('fz-b', ['application/json', '*/*'])):
            self.conn.execute('SELECT memmie.register_provider(%s::jsonb)', [json.dumps({
                'id': p, 'name': p, 'version': '1', 'trigger_events': ['blob.created', 'blob.updated'],
                'supported_types': types, 'output_schema': {'type': 'object'}})])

    # ---------------------------------------------------------------------------------------
    # Values

    def pick(self, xs, unknown=0.1):
        if not xs or self.rnd.random() < unknown:
            return uuid.UUID(int=self.rnd.getrandbits(128))
        return self.rnd.choice(xs)

    def user(self):
        return self.pick(self.users, 0.05)

    def blob(self):
        return self.pick(self.blobs)

    def hash(self):
        r = self.rnd.random()
        if r < 0.1 or not self.hashes:
            return self.rnd.choice(['', 'x', 'A' * 64, '0' * 64, 'g' * 64, '0' * 63, None])
        return self.rnd.choice(self.hashes)

    def mime(self):
        return self.rnd.choice(['text/plain', 'application/json', 'text/markdown', 'image/png',
                                'application/vnd.x+json', 'text/plain; charset=utf-8', '', 'nope',
                                'a/' + 'b' * 300, None, 'text/\x01', '*/*'])

    def text(self, n=None):
        n = self.rnd.choice([0, 1, 5, 40, 300, 5000]) if n is None else n
        alphabet = 'abc xyz/.\\\'"%_*-\u00e9\u4e2d\n\t'
        return ''.join(self.rnd.choice(alphabet) for _ in range(n))

    def scalar(self):
        r = self.rnd.random()
        if r < 0.05:
            return 10 ** self.rnd.choice([19, 20, 40, 300])          # beyond 64 bits
        if r < 0.08:
            return -(10 ** self.rnd.choice([19, 25]))
        if r < 0.1:
            return self.rnd.choice([1e308, 5e-324, 0.1, -0.0])
        return self.rnd.choice([None, True, False, 0, 1, -1, 2 ** 63 - 1, 'x', '', self.text(8)])

    def value(self, depth=3):
        if depth <= 0 or self.rnd.random() < 0.4:
            return self.scalar()
        if self.rnd.random() < 0.5:
            return [self.value(depth - 1) for _ in range(self.rnd.randint(0, 4))]
        return {self.text(3): self.value(depth - 1) for _ in range(self.rnd.randint(0, 4))}

    def deep_json(self):
        """JSON text nested n levels (built as text: no recursion here)."""
        n = self.rnd.choice([100, 127, 128, 129, 200, 1000, 5000, 20000, 100000])
        if self.rnd.random() < 0.5:
            return '[' * n + '1' + ']' * n
        return '{"a":' * n + '1' + '}' * n

    def pointer(self):
        r = self.rnd.random()
        if r < 0.5:
            return self.rnd.choice(['/metadata/x', '/metadata', '/tags/-', '/tags/0', '/content/n',
                                    '/content', '/content/a/b', '/content_hash', '/deleted', '/',
                                    '', '/content/-', '/metadata/~1', '/metadata/~2', '/x/' * 50,
                                    '/content/0', '/tags/99999999999999999999'])
        return '/' + '/'.join(self.text(2) for _ in range(self.rnd.randint(1, 4)))

    def patch(self):
        r = self.rnd.random()
        if r < 0.02:   # copy-doubling
            return [{'op': 'add', 'path': '/content', 'value': {'s': 'x' * 1024}}] + \
                [{'op': 'copy', 'from': '/content', 'path': f'/content/c{k}'} for k in range(self.rnd.choice([18, 24, 30]))]
        if r < 0.03:   # long patch
            return [{'op': 'add', 'path': '/metadata/k', 'value': k} for k in range(self.rnd.choice([20000, 100000]))]
        if r < 0.05:   # nesting built by add/move pairs
            n = self.rnd.choice([200, 2000, 20000])
            ops = [{'op': 'add', 'path': '/metadata/n', 'value': {}}]
            ops += [op for _ in range(n) for op in (
                {'op': 'add', 'path': '/metadata/m', 'value': {}},
                {'op': 'move', 'from': '/metadata/n', 'path': '/metadata/m/n'},
                {'op': 'move', 'from': '/metadata/m', 'path': '/metadata/n'})]
            return ops
        ops = []
        for _ in range(self.rnd.randint(0, 5)):
            op = self.rnd.choice(['add', 'remove', 'replace', 'move', 'copy', 'test', 'bogus'])
            o = {'op': op, 'path': self.pointer()}
            if op in ('add', 'replace', 'test'):
                o['value'] = self.value()
            if op in ('move', 'copy'):
                o['from'] = self.pointer()
            if self.rnd.random() < 0.05:
                del o['path']
            ops.append(o)
        if self.rnd.random() < 0.05:
            return self.rnd.choice([{}, 'x', 1, None, [1], [{'op': 'add'}]])
        return ops

    def patch_text(self):
        if self.rnd.random() < 0.03:
            return '[{"op": "add", "path": "/metadata/d", "value": ' + self.deep_json() + '}]'
        return json.dumps(self.patch())

    def doc_text(self):
        if self.rnd.random() < 0.05:
            return self.deep_json()
        return json.dumps(self.value(4))

    def content(self):
        r = self.rnd.random()
        if r < 0.3:
            return json.dumps(self.value(3)).encode()
        if r < 0.33:
            return self.deep_json().encode()
        if r < 0.35:
            return self.rnd.randbytes(self.rnd.choice([1 << 20, 3 << 20]))
        return self.rnd.randbytes(self.rnd.choice([0, 1, 10, 100, 4000]))

    def metadata(self):
        if self.rnd.random() < 0.05:
            return self.deep_json()
        return json.dumps(self.rnd.choice([{}, {'title': self.text(10)}, {'n': self.scalar()}, [], 'x', None,
                                           {'description': self.text(30), 'title': 'a'}]))

    def tags(self):
        return self.rnd.choice([[], ['a'], ['a', 'b', 'draft'], [self.text(5)], [None], None, ['x' * 300]])

    def storage_path(self):
        return self.rnd.choice(['bucket/key', 's3://b/k', '../../etc/passwd', 'a/./b', '/abs/path', 'ok\x00x',
                                'new\nline', '', 'x' * 5000, 'dir/..', '..', 'a/b/c.bin', None])

    def schema(self):
        return self.rnd.choice([{'type': 'object'}, {'type': 'array', 'uniqueItems': True},
                                {'type': 'object', 'required': ['x'], 'properties': {'x': {'type': 'string', 'maxLength': 3}}},
                                {'type': 'nope'}, {'$ref': '#/x'}, {'minimum': 'x'}, [], {'enum': []},
                                {'type': 'array', 'items': {'type': 'number', 'maximum': 10}}])

    # ---------------------------------------------------------------------------------------
    # Calls

    def call(self, fn, sql, params=()):
        self.by_fn[fn] += 1
        try:
            cur = self.conn.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
            self.codes['ok'] += 1
            return rows
        except psycopg.errors.Error as e:
            code = getattr(e, 'sqlstate', None)
            if self.conn.closed or self.conn.broken:
                self.crashes.append((fn, str(e)[:300]))
                self.codes['connection lost'] += 1
                time.sleep(2)
                self.connect()
                return None
            code = code or 'refused by the client'   # e.g. a NUL in a text parameter
            self.codes[code] += 1
            self.fn_codes[(fn, code)] += 1
            if code == 'XX000':
                self.internal.append((fn, str(e)[:300]))
            return None

    def new_blob(self):
        rows = self.call('create_blob', 'SELECT id FROM memmie.create_blob(%s, %s, %s, %s::jsonb, %s::text[], %s)',
                         [self.user(), self.content(), self.mime(), self.metadata(), self.tags(),
                          self.blob() if self.rnd.random() < 0.2 else None])
        if rows:
            self.blobs.append(rows[0][0])

    def one(self):
        r = self.rnd
        b = self.blob
        choices = [
            (12, self.new_blob),
            (3, lambda: self.call('jsonb_patch', 'SELECT memmie.jsonb_patch(%s::jsonb, %s::jsonb)', [self.doc_text(), self.patch_text()])),
            (2, lambda: self.call('jsonb_diff', 'SELECT memmie.jsonb_diff(%s::jsonb, %s::jsonb)', [self.doc_text(), self.doc_text()])),
            (1, lambda: self.call('sha256', 'SELECT memmie.sha256(%s)', [self.content()])),
            (12, lambda: self.call('apply_delta', 'SELECT memmie.apply_delta(%s, %s::jsonb, %s)',
                                   [b(), self.patch_text(), r.choice([None, None, 1, 2, 0, -1])])),
            (4, lambda: self.call('update_content', 'SELECT memmie.update_content(%s, %s, %s, %s)',
                                  [b(), self.content(), r.choice([None, self.mime()]), r.choice([None, 1, 3])])),
            (3, lambda: self.call('revert_blob', 'SELECT memmie.revert_blob(%s, %s)', [b(), r.choice([1, 2, 0, -5, 10 ** 6, None])])),
            (3, lambda: self.call('delete_blob', 'SELECT memmie.delete_blob(%s, %s)', [b(), r.random() < 0.3])),
            (5, lambda: self.call('blob_state', 'SELECT memmie.blob_state(%s, %s)', [b(), r.choice([None, 1, 2, 3, 0, -1])])),
            (2, lambda: self.call('blob_content', 'SELECT length(memmie.blob_content(%s, %s))', [b(), r.choice([None, 1, 2])])),
            (2, lambda: self.call('blob_history', 'SELECT count(*) FROM memmie.blob_history(%s)', [b()])),
            (3, lambda: self.call('find_blobs', 'SELECT count(*) FROM memmie.find_blobs(%s, tags => %s::text[], created_by => %s, '
                                  'parent_blob_id => %s, metadata_contains => %s::jsonb, text_query => %s, include_deleted => %s, '
                                  'page_after => %s, max_rows => %s, content_type => %s, roots_only => %s, order_by => %s, '
                                  'page_after_at => %s::timestamptz)',
                                  [self.user(), self.tags(), r.choice([None, 'user', 'fz-a', '']), r.choice([None, b()]),
                                   r.choice([None, '{}', '{"title": "a"}', '[]']), r.choice([None, 'a', self.text(20), '!!', '']),
                                   r.random() < 0.3, r.choice([None, b()]), r.choice([None, 1, 0, -1, 10 ** 6]),
                                   r.choice([None, None, 'text/*', 'application/json', '*/*', 'image', '*/x', 'a*/b', '', self.mime()]),
                                   r.choice([False, True, None]), r.choice(['created_at', 'updated_at', 'id', None, '']),
                                   r.choice([None, None, '2026-01-01', 'infinity', '-infinity'])])),
            (1, lambda: self.call('set_quota', 'SELECT memmie.set_quota(%s, %s::jsonb)',
                                  [self.user(), r.choice(['{}', '{"max_blobs": 100000}', '{"max_blob": 1}', '{"max_blobs": -1}',
                                                          '{"max_storage_bytes": 1.5}', '{"max_content_size": null}', '[]',
                                                          '{"max_blobs": "x"}', '{"max_storage_bytes": 1e400}', None,
                                                          '{"max_content_size": 100000000, "max_blobs": null}'])])),
            (3, lambda: self.call('derive_blob', 'SELECT memmie.derive_blob(%s::uuid[], %s, %s, %s, %s)',
                                  [[b() for _ in range(r.randint(0, 3))], r.choice(self.providers + ['user', '', 'x' * 300]),
                                   r.choice(['summary', '', None]), self.content(), self.mime()])),
            (3, lambda: self.call('add_edge', 'SELECT memmie.add_edge(%s, %s, %s, %s)', [b(), b(), r.choice(self.providers), 'link'])),
            (3, lambda: self.call('descendants', 'SELECT count(*) FROM memmie.descendants(%s, %s)', [b(), r.choice([None, 0, 1, -1, 5])])),
            (2, lambda: self.call('ancestors', 'SELECT count(*) FROM memmie.ancestors(%s, %s)', [b(), r.choice([None, 1, 3])])),
            (1, lambda: self.call('lineage', 'SELECT memmie.lineage(%s)', [b()])),
            (1, lambda: self.call('dag_stats', 'SELECT * FROM memmie.dag_stats(%s)', [b()])),
            (1, lambda: self.call('register_provider', 'SELECT memmie.register_provider(%s::jsonb)', [json.dumps(r.choice([
                {'id': r.choice(self.providers), 'name': 'n', 'version': str(r.randint(1, 3)), 'trigger_events': ['blob.created'],
                 'supported_types': r.choice([['text/*'], ['nope'], [], ['*/*']]), 'config_schema': self.schema(),
                 'output_schema': self.schema()},
                {'id': ''}, {}, [], {'id': 'x' * 300, 'name': 'n', 'version': '1'}, self.value(3)]))])),
            (1, lambda: self.call('set_provider_status', 'SELECT memmie.set_provider_status(%s, %s)',
                                  [r.choice(self.providers + ['nope']), r.choice(['active', 'inactive', 'deprecated', 'x', None])])),
            (4, lambda: self.call('dispatch_events', 'SELECT memmie.dispatch_events(%s)', [r.choice([1, 10, 100, 0, -1, None])])),
            (1, lambda: self.call('events_since', 'SELECT count(*) FROM memmie.events_since(%s, %s)',
                                  [r.choice([0, 10, -1, 2 ** 62, None]), r.choice([1, 100, 0, -1, None])])),
            (4, self.claim),
            (4, self.complete),
            (2, lambda: self.call('fail_processing', 'SELECT memmie.fail_processing(%s::uuid, %s, %s, %s)',
                                  [self.pick(self.jobs), r.choice(['w1', 'w2']), self.text(), r.random() < 0.5])),
            (1, lambda: self.call('heartbeat_job', 'SELECT memmie.heartbeat_job(%s, %s, %s)',
                                  [str(self.pick(self.jobs)), r.choice(['w1', 'w2']), r.choice([None, 50, 101, -1])])),
            (1, lambda: self.call('enqueue_job', 'SELECT memmie.enqueue_job(%s, %s, %s::jsonb, %s)',
                                  [r.choice(['fz.job', '', None, 'memmie.process']), self.user(), self.doc_text(), r.choice([0, 3, -1])])),
            (1, lambda: self.call('complete_job', 'SELECT memmie.complete_job(%s, %s, %s::jsonb)',
                                  [str(self.pick(self.jobs)), r.choice(['w1', 'w2']), self.doc_text()])),
            (1, lambda: self.call('fail_job', 'SELECT memmie.fail_job(%s, %s, %s, %s)',
                                  [str(self.pick(self.jobs)), 'w1', self.text(), r.random() < 0.5])),
            (1, lambda: self.call('cancel_job', 'SELECT memmie.cancel_job(%s)', [str(self.pick(self.jobs))])),
            (3, self.put),
            (3, lambda: self.call('get_content', 'SELECT length(memmie.get_content(%s))', [self.hash()])),
            (1, lambda: self.call('verify_content', 'SELECT count(*) FROM memmie.verify_content(%s)', [self.hash()])),
            (2, lambda: self.call('create_external_blob', 'SELECT memmie.create_external_blob(%s, %s, %s, %s, %s, %s)',
                                  [self.user(), '%064x' % r.getrandbits(256), r.choice([0, 10, -1, 2 ** 40]), self.mime(),
                                   r.choice(['s3', 'filesystem', 'postgres', '']), self.storage_path()])),
            (1, lambda: self.call('gc_content', 'SELECT count(*) FROM memmie.gc_content(%s::interval)', [r.choice(['0', '1 hour', '-1 s', None])])),
            (1, lambda: self.call('record_api_call', 'SELECT memmie.record_api_call(%s, %s, %s)', [self.user(), r.random() < 0.5, r.choice([0, 5, -1, None])])),
            (1, lambda: self.call('user_usage', 'SELECT count(*) FROM memmie.user_usage(%s)', [self.user()])),
            (1, lambda: self.call('backfill', 'SELECT memmie.backfill(%s)', [r.choice(self.providers + ['nope'])])),
            (1, lambda: self.call('reprocess', 'SELECT memmie.reprocess(%s, %s)', [b(), r.choice(self.providers + ['nope'])])),
            (1, lambda: self.call('create_partitions', 'SELECT memmie.create_partitions(%s::regclass, %s::date, %s)',
                                  [r.choice(['memmie.events', 'memmie.deltas']), r.choice(['2030-01-01', '1999-12-31', '2026-12-02']),
                                   r.choice([0, 1, 3, -1, 100000])])),
            (0.3, lambda: self.call('ensure_partitions', 'SELECT memmie.ensure_partitions(%s)', [r.choice([0, 3, 3650, -1])])),
            (0.3, lambda: self.call('drop_old_partitions', 'SELECT memmie.drop_old_partitions(%s::regclass, %s::interval)',
                                    ['memmie.events', r.choice(['1 day', '0', '-1 day'])])),
            (0.2, lambda: self.call('fold_usage', 'SELECT memmie.fold_usage()')),
            (0.2, lambda: self.call('rollup_metrics', 'SELECT memmie.rollup_metrics(%s::date)', [r.choice(['2026-12-01', '1970-01-01', None])])),
            (0.1, lambda: self.call('refresh_views', 'SELECT memmie.refresh_views()')),
            (0.1, lambda: self.call('maintenance', 'SELECT memmie.maintenance()')),
        ]
        weights = [w for w, _ in choices]
        r.choices(choices, weights)[0][1]()

    def claim(self):
        rows = self.call('claim_jobs', 'SELECT id FROM memmie.claim_jobs(%s, %s, %s::interval)',
                         [self.rnd.choice(['w1', 'w2']), self.rnd.choice([1, 5, 0, -1]), self.rnd.choice(['1 minute', '0', '-1 s'])])
        for (jid,) in rows or []:
            self.jobs.append(uuid.UUID(jid) if len(jid) == 36 else jid)

    def complete(self):
        kids = [{'content': self.text(20), 'content_type': self.mime(), 'transform_type': self.rnd.choice(['summary', None])}
                for _ in range(self.rnd.randint(0, 3))]
        outputs = self.rnd.choice([{'children': kids}, {'children': 'x'}, {}, [], {'deltas': [{'blob_id': str(self.blob()), 'patch': self.patch()}]}])
        self.call('complete_processing', 'SELECT count(*) FROM memmie.complete_processing(%s::uuid, %s, %s::jsonb)',
                  [str(self.pick(self.jobs)), self.rnd.choice(['w1', 'w2']), json.dumps(outputs)])

    def put(self):
        rows = self.call('put_content', 'SELECT memmie.put_content(%s, %s)', [self.content(), self.mime()])
        if rows:
            self.hashes.append(rows[0][0])

    # ---------------------------------------------------------------------------------------

    def finish(self, elapsed):
        passed = failed = 0

        def report(ok, what, detail=()):
            nonlocal passed, failed
            print(('ok - ' if ok else 'not ok - ') + what)
            for d in detail:
                print('    ' + d)
            if ok:
                passed += 1
            else:
                failed += 1

        total = sum(self.by_fn.values())
        print(f'# {total} calls to {len(self.by_fn)} functions in {elapsed:.0f} s; outcomes: '
              + ', '.join(f'{k} {v}' for k, v in self.codes.most_common()))
        documented = {'P0002', '22023', '42501', '54000', '54001', '57014', '0A000', 'refused by the client'}
        other = sorted((fn, code, n) for (fn, code), n in self.fn_codes.items()
                       if code not in documented and not code.startswith('MM'))
        if other:
            print('# SQLSTATEs outside docs/sql-api.md\'s list: '
                  + ', '.join(f'{fn} {code} x{n}' for fn, code, n in other))
        report(not self.internal, f'no internal error (XX000): {len(self.internal)}',
               [f'{fn}: {m}' for fn, m in self.internal[:20]])
        report(not self.crashes, f'no lost connection (backend crash): {len(self.crashes)}',
               [f'{fn}: {m}' for fn, m in self.crashes[:20]])
        try:
            self.conn.execute('SET statement_timeout = 0')
            # the routine upkeep first: the run made and dropped partitions at random, so rows may
            # wait in DEFAULT for theirs (check() reports that, not a fault)
            self.conn.execute('SELECT memmie.ensure_partitions()')
            bad = self.conn.execute('SELECT check_name, detail FROM memmie.check() WHERE NOT ok').fetchall()
            report(not bad, 'check() is all ok after the run', [f'{n}: {d}' for n, d in bad])
        except psycopg.errors.Error as e:
            report(False, f'check() ran: {e}')
        print(f'{passed} passed, {failed} failed')
        sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
