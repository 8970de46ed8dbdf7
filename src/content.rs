//! Content-addressed storage: hashing, compression and the exact, bounded way back.
//!
//! The SQL side (`sql/content.sql`) owns the `content_storage` rows; this module owns the bytes:
//! what the hash of some content is, how it is encoded for storage, and how stored bytes are
//! decoded and checked against their hash.

use crate::error::{or_raise, MemmieError, Result};
use pgrx::prelude::*;
use pgrx::search_path;
use sha2::{Digest, Sha256};

/// zstd level: 3 is zstd's default, a good ratio at a few hundred MB/s.
const ZSTD_LEVEL: i32 = 3;
/// Below this size compression cannot pay for its frame header.
const MIN_COMPRESS_SIZE: usize = 64;
/// Compress only when it saves at least 1/8 of the size.
const MIN_SAVING_DIVISOR: usize = 8;

/// SHA-256 as 64 lowercase hex characters.
pub fn hash_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        out.push(char::from(b"0123456789abcdef"[(b & 0x0f) as usize]));
    }
    out
}

/// Checks that `hash` looks like a content hash.
pub fn validate_hash(hash: &str) -> Result<()> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(MemmieError::InvalidParameter(format!(
            "invalid content hash \"{}\": expected 64 lowercase hex characters",
            hash.chars().take(80).collect::<String>()
        )))
    }
}

/// Checks `size` against the `memmie.max_content_size` limit.
pub fn check_size(size: usize) -> Result<()> {
    let limit = crate::guc::max_content_size();
    if size as u64 > limit {
        return Err(MemmieError::ContentTooLarge(format!(
            "content of {size} bytes exceeds memmie.max_content_size ({limit} bytes)"
        )));
    }
    Ok(())
}

/// The encoding chosen for storage: `Some(zstd bytes)` when compression saves space, `None` to
/// store the bytes as they are (already-compressed formats such as JPEG, random bytes, tiny data).
pub fn encode(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < MIN_COMPRESS_SIZE {
        return None;
    }
    let compressed = zstd::bulk::compress(data, ZSTD_LEVEL).ok()?;
    if compressed.len() + data.len() / MIN_SAVING_DIVISOR <= data.len() {
        Some(compressed)
    } else {
        None
    }
}

/// Decodes stored bytes back to the original content, never producing more than
/// `original_size` bytes (a corrupted or hostile row cannot make the backend allocate more), and
/// checks the result against `hash`.
pub fn decode(hash: &str, compression: &str, stored: &[u8], original_size: i64) -> Result<Vec<u8>> {
    let mut out = vec![0u8; checked_capacity(hash, original_size)?];
    decode_into(hash, compression, stored, &mut out)?;
    Ok(out)
}

fn corrupted(hash: &str, why: impl std::fmt::Display) -> MemmieError {
    MemmieError::ContentCorrupted(format!("content {hash} is corrupted: {why}"))
}

/// The buffer size for a content of `original_size` bytes, refusing sizes no content can have.
fn checked_capacity(hash: &str, original_size: i64) -> Result<usize> {
    let capacity = usize::try_from(original_size).map_err(|_| corrupted(hash, "negative original_size"))?;
    check_size(capacity).map_err(|_| {
        corrupted(
            hash,
            format!("original_size {original_size} is beyond memmie.max_content_size"),
        )
    })?;
    Ok(capacity)
}

/// Decodes into `out`, whose length is the recorded original size, and checks the hash. zstd
/// fails rather than write past the end of `out`, so a frame that would produce more is detected.
fn decode_into(hash: &str, compression: &str, stored: &[u8], out: &mut [u8]) -> Result<()> {
    let n = match compression {
        "none" if stored.len() == out.len() => {
            out.copy_from_slice(stored);
            stored.len()
        }
        "none" => stored.len(),
        "zstd" => zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress_to_buffer(stored, &mut *out))
            .map_err(|e| corrupted(hash, e))?,
        other => return Err(corrupted(hash, format!("unknown compression \"{other}\""))),
    };
    if n != out.len() {
        return Err(corrupted(hash, format!("{n} bytes, expected {}", out.len())));
    }
    verify(hash, out, out.len() as i64)
}

/// A bytea built in Postgres memory and handed to Postgres as is: decoding a large content into
/// it directly avoids holding a second copy.
pub struct PallocBytea(pg_sys::Datum);

impl PallocBytea {
    /// Allocates a bytea of `len` bytes in the memory context that was current when SPI was
    /// connected (so it outlives the SPI call) and lets `fill` write them.
    fn build_from_spi(len: usize, fill: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<Self> {
        let header = pg_sys::VARHDRSZ;
        unsafe {
            let ptr = pg_sys::SPI_palloc(header + len) as *mut u8;
            let data = std::slice::from_raw_parts_mut(ptr.add(header), len);
            if let Err(e) = fill(data) {
                pg_sys::SPI_pfree(ptr.cast());
                return Err(e);
            }
            pgrx::set_varsize_4b(ptr.cast(), (header + len) as i32);
            Ok(PallocBytea(pg_sys::Datum::from(ptr)))
        }
    }
}

unsafe impl pgrx::callconv::BoxRet for PallocBytea {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for PallocBytea {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::PallocBytea");
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: std::result::Result<
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
        pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
    > = Err(pgrx::pgrx_sql_entity_graph::metadata::ArgumentError::NotValidAsArgument("PallocBytea"));
    const RETURN_SQL: std::result::Result<
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("bytea"),
    ));
}

/// Checks that `original` is the content `hash` names.
pub fn verify(hash: &str, original: &[u8], original_size: i64) -> Result<()> {
    if original.len() as i64 != original_size {
        return Err(MemmieError::ContentCorrupted(format!(
            "content {hash} is corrupted: {} bytes, expected {original_size}",
            original.len()
        )));
    }
    let actual = hash_hex(original);
    if actual != hash {
        return Err(MemmieError::ContentCorrupted(format!(
            "content {hash} is corrupted: its bytes hash to {actual}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SQL-facing functions. The leading underscore ones are internal building blocks of the SQL
// functions in sql/content.sql; they are not part of the public API.

/// SHA-256 of `data` as 64 lowercase hex characters.
#[pg_extern(immutable, strict, parallel_safe)]
fn sha256(data: &[u8]) -> String {
    hash_hex(data)
}

/// Checks the size limit and returns the zstd encoding of `data`, or NULL when storing the bytes
/// unchanged is better.
#[pg_extern(name = "_encode_content", immutable, strict, parallel_safe)]
fn encode_content(data: &[u8]) -> Option<Vec<u8>> {
    or_raise(check_size(data.len()));
    encode(data)
}

/// Checks a content size against `memmie.max_content_size` (54000).
#[pg_extern(name = "_check_content_size", stable, strict, parallel_safe)]
fn check_content_size(size: i64) -> bool {
    or_raise(check_size(usize::try_from(size).unwrap_or(usize::MAX)));
    true
}

/// Validates a content hash argument (22023).
#[pg_extern(name = "_check_hash", immutable, strict, parallel_safe)]
fn check_hash(hash: &str) -> bool {
    or_raise(validate_hash(hash));
    true
}

/// The stored bytes of a `content_storage` row, or why there are none to read here.
fn stored_bytes<'a>(
    hash: &str,
    compression: Option<&'a str>,
    storage_backend: Option<&str>,
    storage_path: Option<&str>,
    stored: Option<&'a [u8]>,
) -> Result<(&'a str, &'a [u8])> {
    validate_hash(hash)?;
    let Some(compression) = compression else {
        return Err(MemmieError::NotFound(format!("content {hash} does not exist")));
    };
    match (storage_backend.unwrap_or("postgres"), stored) {
        ("postgres", Some(stored)) => Ok((compression, stored)),
        ("postgres", None) => Err(corrupted(hash, "no stored bytes")),
        (backend, _) => Err(MemmieError::ExternalContent(format!(
            "content {hash} is stored in {backend} at \"{}\"; fetch it from there",
            storage_path.unwrap_or("")
        ))),
    }
}

const CONTENT_ROW: &str = "SELECT compression::text, storage_backend::text, storage_path, content, original_size \
     FROM memmie.content_storage WHERE content_hash = $1";

const CONTENT_VISIBLE: &str = "SELECT memmie._check_content_visible($1)";

/// The original bytes of a content the caller may read (one the bound user references; any for
/// the owner and admin level, sql/access.sql); MM006 when they no longer hash to `content_hash`.
///
/// Reads the row itself (not through a SQL wrapper, whose result copies would triple the memory
/// of a large content) and decodes straight into the bytea it returns.
#[pg_extern(stable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn get_content(content_hash: &str) -> PallocBytea {
    or_raise(validate_hash(content_hash).and_then(|()| {
        if !crate::plans::function_exists("memmie._check_content_visible(text)") {
            // the SQL of a version before 0.3.0 (not yet updated): no access levels there
            return fetch_content(content_hash);
        }
        crate::error::guarded(|| {
            crate::plans::with_plan(CONTENT_VISIBLE, &[crate::plans::TEXT], |client, stmt| {
                client.select(stmt, Some(1), &[content_hash.into()]).map(|_| ())
            })
            .map_err(|e| MemmieError::Internal(format!("checking access to content {content_hash}: {e}")))
        })?;
        fetch_content(content_hash)
    }))
}

/// The original bytes of any content, for memmie's own functions that have checked access
/// themselves (processing_input: the input of a job the worker holds). Not granted to any level.
#[pg_extern(name = "_content", stable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn content_unchecked(content_hash: &str) -> PallocBytea {
    or_raise(fetch_content(content_hash))
}

fn fetch_content(hash: &str) -> Result<PallocBytea> {
    validate_hash(hash)?;
    let fetched = crate::plans::with_plan(CONTENT_ROW, &[crate::plans::TEXT], |client, stmt| {
        let row = client.select(stmt, Some(1), &[hash.into()])?.first();
        if row.is_empty() {
            return Ok(Err(MemmieError::NotFound(format!("content {hash} does not exist"))));
        }
        let compression: Option<&str> = row.get(1)?;
        let backend: Option<&str> = row.get(2)?;
        let path: Option<&str> = row.get(3)?;
        let stored: Option<&[u8]> = row.get(4)?;
        let size: Option<i64> = row.get(5)?;
        Ok(
            stored_bytes(hash, compression, backend, path, stored).and_then(|(compression, stored)| {
                let len = checked_capacity(hash, size.unwrap_or(-1))?;
                PallocBytea::build_from_spi(len, |out| decode_into(hash, compression, stored, out))
            }),
        )
    });
    fetched.map_err(|e| MemmieError::ContentCorrupted(format!("content {hash} could not be read: {e}")))?
}

/// Re-checks a `content_storage` row: NULL when it is intact, otherwise what is wrong. Content
/// kept outside Postgres has nothing to check here.
#[pg_extern(name = "_verify_content_row", stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn verify_content_row(
    hash: &str,
    compression: Option<&str>,
    storage_backend: Option<&str>,
    storage_path: Option<&str>,
    stored: Option<&[u8]>,
    original_size: Option<i64>,
) -> Option<String> {
    if storage_backend.is_some_and(|b| b != "postgres") {
        return None;
    }
    let size = original_size.unwrap_or(-1);
    let checked =
        stored_bytes(hash, compression, storage_backend, storage_path, stored).and_then(|(c, bytes)| match c {
            "none" => verify(hash, bytes, size),
            _ => decode(hash, c, bytes, size).map(drop),
        });
    match checked {
        Ok(()) => None,
        Err(MemmieError::ContentCorrupted(m) | MemmieError::InvalidParameter(m) | MemmieError::NotFound(m)) => Some(m),
        Err(other) => Some(other.to_string()),
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    #[pg_test]
    fn hash_of_empty_input_is_the_known_digest() {
        assert_eq!(
            hash_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hash_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[pg_test]
    fn repetitive_text_is_compressed_and_comes_back() {
        let data = "the quick brown fox ".repeat(500).into_bytes();
        let enc = encode(&data).expect("repetitive text compresses");
        assert!(enc.len() < data.len() / 4);
        let h = hash_hex(&data);
        assert_eq!(decode(&h, "zstd", &enc, data.len() as i64).unwrap(), data);
    }

    #[pg_test]
    fn random_and_tiny_data_are_stored_as_is() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let random: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(encode(&random).is_none());
        assert!(encode(b"hello").is_none());
    }

    #[pg_test]
    fn decompression_is_bounded_by_the_recorded_size() {
        let data = vec![7u8; 100_000];
        let enc = encode(&data).unwrap();
        let h = hash_hex(&data);
        // A row that claims a smaller original size must not decode to the larger content.
        let err = decode(&h, "zstd", &enc, 1000).unwrap_err();
        assert_eq!(err.sqlstate(), "MM006");
        // Garbage bytes are reported as corruption, not a crash.
        let err = decode(&h, "zstd", b"not a zstd frame at all", 100_000).unwrap_err();
        assert_eq!(err.sqlstate(), "MM006");
    }

    #[pg_test]
    fn tampered_bytes_fail_the_hash_check() {
        let h = hash_hex(b"original");
        let err = decode(&h, "none", b"tampered", 8).unwrap_err();
        assert_eq!(err.sqlstate(), "MM006");
    }

    #[pg_test]
    fn hash_arguments_are_validated() {
        assert!(validate_hash(&hash_hex(b"x")).is_ok());
        assert!(validate_hash("ABC").is_err());
        assert!(validate_hash(&"A".repeat(64)).is_err());
    }
}
