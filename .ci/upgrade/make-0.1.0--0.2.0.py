#!/usr/bin/env python3
"""Writes sql/memmie--0.1.0--0.2.0.sql while 0.2.0 is not released yet.

    python3 .ci/upgrade/make-0.1.0--0.2.0.py      (from the checkout; runs `cargo pgrx schema`)

The script is: .ci/upgrade/0.1.0--0.2.0.head.sql (the hand-written table changes, with the
functions they need filled in from the sources), the Rust
functions 0.2.0 adds (from the generated install script, compared with the one 0.1.0 shipped,
tests/upgrade/memmie--0.1.0.sql), every function of sql/content.sql and sql/blobs.sql that
differs from 0.1.0's (git 7937df4) as CREATE OR REPLACE, then the SQL files new in 0.2.0.
tests/upgrade checks the result against a fresh install object by object. Once 0.2.0 is
released the script is frozen: later changes go into memmie--0.2.0--<next>.sql.
"""
import re
import subprocess
import sys
import tempfile

ROOT = subprocess.run(['git', 'rev-parse', '--show-toplevel'], capture_output=True, text=True, check=True).stdout.strip()
OLD_COMMIT = '7937df4'
NEW_FILES = ['dag.sql', 'providers.sql', 'jobs.sql', 'pipeline.sql', 'partitions.sql', 'external.sql', 'metrics.sql', 'check.sql', 'operations.sql', 'privileges.sql']

with tempfile.NamedTemporaryFile(suffix='.sql') as out:
    subprocess.run(['cargo', 'pgrx', 'schema', 'pg15', '-o', out.name], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    new = open(out.name).read()
old = open(f'{ROOT}/tests/upgrade/memmie--0.1.0.sql').read()


def rust_blocks(s):
    out = {}
    for b in re.findall(r'/\* <begin connected objects> \*/\n(.*?)/\* </end connected objects> \*/', s, re.S):
        m = re.search(r'^-- (memmie::\S+)$', b, re.M)
        if m and 'LANGUAGE c' in b:
            out[m.group(1)] = re.sub(r'^-- src/.*\n', '', b, flags=re.M)
    return out


rn, ro = rust_blocks(new), rust_blocks(old)
changed = [k for k in rn if k in ro and rn[k] != ro[k]]
removed = [k for k in ro if k not in rn]
if changed or removed:
    sys.exit(f'Rust functions changed {changed} or removed {removed}: write those steps by hand')


def functions(text):
    out = {}
    # a function ends at the first line that ends with $$; (bodies on one line included)
    for m in re.finditer(r'(?:^--[^\n]*\n)*^CREATE FUNCTION memmie\.(\w+)\((.*?)\$\$;$\n', text, re.S | re.M):
        out.setdefault(m.group(1), []).append(m.group(0))
    return out


# The head names the functions its table changes need ("-- @function FILE NAME"): they are taken
# from the current sources (comments above them left out) and not repeated below.
in_head = set()


def head_function(m):
    in_head.add(m.group(2))
    return ''.join(re.sub(r'^(--[^\n]*\n)+', '', x)
                   for x in functions(open(f'{ROOT}/{m.group(1)}').read())[m.group(2)])


head = re.sub(r'^-- @function (\S+) (\w+)\n', head_function,
              open(f'{ROOT}/.ci/upgrade/0.1.0--0.2.0.head.sql').read(), flags=re.M)
parts = [head,
         '-- ' + '-' * 93 + '\n-- Native functions new in 0.2.0\n']
parts += [rn[k] for k in rn if k not in ro]
parts.append('-- ' + '-' * 93 + '\n'
             '-- Blob functions changed in 0.2.0 (sql/blobs.sql): two internal ones gained a parameter.\n'
             'DROP FUNCTION memmie._record_version(memmie.blobs, text, jsonb, text, uuid, jsonb, text);\n'
             'DROP FUNCTION memmie._write_state(memmie.blobs, jsonb, text, jsonb, text, uuid, jsonb);\n\n')
for f in ['content.sql', 'blobs.sql']:
    before = subprocess.run(['git', 'show', f'{OLD_COMMIT}:sql/{f}'], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    now, was = functions(open(f'{ROOT}/sql/{f}').read()), functions(before)
    for name in [n for n in now if now[n] != was.get(n) and n not in in_head]:
        parts.append('\n'.join(x.replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION', 1) for x in now[name]))
for f in NEW_FILES:
    parts.append('\n-- ' + '=' * 93 + f'\n-- sql/{f} (new in 0.2.0)\n\n')
    parts.append(open(f'{ROOT}/sql/{f}').read())
open(f'{ROOT}/sql/memmie--0.1.0--0.2.0.sql', 'w').write('\n'.join(parts))
print('wrote sql/memmie--0.1.0--0.2.0.sql')
