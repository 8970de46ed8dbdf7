#!/usr/bin/env bash
# One list of SQLSTATEs (sql/errors.sql), checked against everything that raises one and against
# what the user reads:
#   - every RAISE EXCEPTION in sql/*.sql names its ERRCODE (without one it would be P0001), and
#     every code raised in SQL is in the list, marked "SQL" (and every code marked SQL is raised);
#   - every MemmieError variant (src/error.rs) documents its code (`/// `CODE`: ...`) and maps to
#     it in sqlstate(); every variant Rust constructs is in the list, marked "Rust" (and every code
#     marked Rust is constructed); nothing in src/*.rs raises past MemmieError (pgrx::error!,
#     ereport!);
#   - the "Errors" table of docs/sql-api.md names exactly the codes of the list.
# sql/memmie--0.1.0--0.2.0.sql is frozen as released and not read. Needs bash, grep, perl.
#   bash tests/sqlstates.sh
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
passed=0; failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
check() { # check DESCRIPTION EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1: expected [$2], got [$3]"; fi
}
sorted() { tr ' ' '\n' | grep -v '^$' | sort -u | tr '\n' ' ' | sed 's/ $//'; }

sql_files=$(ls sql/*.sql | grep -v '^sql/memmie--0\.1\.0--0\.2\.0\.sql$')

# --- the list -------------------------------------------------------------------------------
# rows "--   CODE  | raised by | condition"
list_rows=$(perl -ne 'print "$1|$2\n" if /^--\s+([0-9A-Z]{5})\s*\|\s*([^|]*?)\s*\|/' sql/errors.sql)
list=$(echo "$list_rows" | cut -d'|' -f1 | sorted)
by() { echo "$list_rows" | grep -E "\|(.*[ ,])?$1([ ,].*)?$" | cut -d'|' -f1 | sorted; }
list_sql=$(by SQL); list_rust=$(by Rust); list_pg=$(by PostgreSQL)
if [ -n "$list" ]; then ok "sql/errors.sql lists $(echo "$list" | wc -w) SQLSTATEs: $list"
else not_ok "sql/errors.sql lists no SQLSTATE"; fi
dups=$(echo "$list_rows" | cut -d'|' -f1 | sort | uniq -d | tr '\n' ' ')
check "every code is listed once in sql/errors.sql" "" "$dups"

# --- SQL ------------------------------------------------------------------------------------
# Each RAISE EXCEPTION statement, up to its semicolon outside quotes: FILE:LINE CODE (or NONE).
raises=$(perl -e '
    for my $f (@ARGV) {
        open my $h, "<", $f or die; local $/; my $t = <$h>;
        # blank out comments, keeping line numbers
        $t =~ s/--[^\n]*//g;
        while ($t =~ /\bRAISE\s+EXCEPTION\b/gi) {
            my $start = $-[0];
            my $line = 1 + (substr($t, 0, $start) =~ tr/\n//);
            my $rest = substr($t, $start);
            my ($stmt) = $rest =~ /^((?:[^;\x27]|\x27[^\x27]*\x27)*);/s;
            $stmt //= $rest;
            my ($code) = $stmt =~ /ERRCODE\s*=\s*\x27([^\x27]*)\x27/i;
            print "$f:$line ", ($code // "NONE"), "\n";
        }
    }' $sql_files)
untyped=$(echo "$raises" | awk '$2 == "NONE" {print $1}' | tr '\n' ' ' | sed 's/ $//')
check "every RAISE EXCEPTION in sql/*.sql names its ERRCODE ($(echo "$raises" | grep -c .) of them)" "" "$untyped"
badform=$(echo "$raises" | grep -vE ' (NONE|[0-9A-Z]{5})$' | tr '\n' ' ' | sed 's/ $//')
check "every ERRCODE in sql/*.sql is a five-character SQLSTATE" "" "$badform"
sql_codes=$(echo "$raises" | grep -oE ' [0-9A-Z]{5}$' | sorted)
for c in $sql_codes; do
    where=$(echo "$raises" | awk -v c="$c" '$2 == c {print $1}' | head -1)
    if [[ " $list_sql " == *" $c "* ]]; then ok "$c raised in SQL ($where) is listed as raised by SQL"
    else not_ok "$c raised in SQL ($where) is not listed as raised by SQL in sql/errors.sql"; fi
done
for c in $list_sql; do
    [[ " $sql_codes " == *" $c "* ]] || not_ok "$c is listed as raised by SQL, but no sql/*.sql raises it"
done

# --- Rust -----------------------------------------------------------------------------------
# variant -> code, from sqlstate()'s arms; variant -> documented code, from the enum's docs
arms=$(perl -ne 'print "$1 $2\n" if /MemmieError::(\w+)\([^)]*\)\s*=>\s*"([0-9A-Z]{5})"/' src/error.rs)
documented=$(perl -ne '
    $doc = $1 if m{^\s*///\s*`([0-9A-Z]{5})`};
    if (/^\s*(\w+)\((String|String, String)\),/) { print "$1 ", ($doc // "NONE"), "\n"; undef $doc }
    undef $doc if /^\s*$/;' src/error.rs)
variants=$(echo "$documented" | awk '{print $1}' | grep -v '^Postgres$' | sorted)
for v in $variants; do
    a=$(echo "$arms" | awk -v v="$v" '$1 == v {print $2}')
    d=$(echo "$documented" | awk -v v="$v" '$1 == v {print $2}')
    check "MemmieError::$v documents the code sqlstate() gives it ($a)" "$a" "$d"
done
# constructions outside the match arms of sqlstate() / message()
constructed=$(grep -ohE 'MemmieError::[A-Za-z]+(\(|\))' src/*.rs | sed -E 's/MemmieError::([A-Za-z]+).*/\1/' | sort -u)
rust_codes=""
for v in $constructed; do
    [ "$v" = Postgres ] && continue
    n=$(grep -hoE "MemmieError::$v\(" src/*.rs | wc -l)
    arms_n=$(grep -hE "MemmieError::$v\((_|m|code, _|_, m)\)" src/error.rs | wc -l)
    [ "$n" -gt "$arms_n" ] || continue
    code=$(echo "$arms" | awk -v v="$v" '$1 == v {print $2}')
    rust_codes="$rust_codes $code"
done
rust_codes=$(echo "$rust_codes" | sorted)
for c in $rust_codes; do
    if [[ " $list_rust " == *" $c "* ]]; then ok "$c raised in Rust is listed as raised by Rust"
    else not_ok "$c raised in Rust is not listed as raised by Rust in sql/errors.sql"; fi
done
for c in $list_rust; do
    [[ " $rust_codes " == *" $c "* ]] || not_ok "$c is listed as raised by Rust, but no MemmieError variant of that code is raised"
done
past=$(grep -nE '(pgrx::)?\b(error|ereport)!\(' src/*.rs | grep -vE '^\S+:\s*//' | cut -d: -f1,2 | tr '\n' ' ' | sed 's/ $//')
check "src/*.rs raises only through MemmieError (no pgrx::error! / ereport!, which give XX000 with Rust's location)" "" "$past"

# --- the user's documentation -----------------------------------------------------------------
doc_codes=$(perl -ne '
    $in = 1 if /^## Errors/; $in = 0 if /^## / && !/^## Errors/;
    print "$1\n" if $in && /^\|.*\|\s*`([0-9A-Z]{5})`\s*\|\s*$/' docs/sql-api.md | sorted)
for c in $list; do
    if [[ " $doc_codes " == *" $c "* ]]; then ok "$c is in the Errors table of docs/sql-api.md"
    else not_ok "$c is listed in sql/errors.sql but missing from the Errors table of docs/sql-api.md"; fi
done
for c in $doc_codes; do
    [[ " $list " == *" $c "* ]] || not_ok "$c is in the Errors table of docs/sql-api.md but not in sql/errors.sql"
done
for c in $list_pg; do
    [[ " $sql_codes $rust_codes " == *" $c "* ]] && not_ok "$c is listed as PostgreSQL's own, but memmie raises it"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
