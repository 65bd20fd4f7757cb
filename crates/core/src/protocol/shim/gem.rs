//! The name a built gem gives itself: the `name` of the specification in its
//! `metadata.gz`, which is what RubyGems.org publishes it as, whatever the file is called.
//!
//! A `.gem` is a POSIX tar of `metadata.gz` (the gzipped YAML specification),
//! `data.tar.gz` and `checksums.yaml.gz`. RubyGems' own reader takes every entry whose
//! full name is `metadata` or `metadata.gz` and keeps the last, whatever its type, so an
//! archive this reader and RubyGems might read differently is refused rather than
//! guessed at: only plain ustar files, one specification, no uncompressed `metadata`.
//! The YAML goes through libyaml, the parser RubyGems' Psych is built on.
//!
//! A hostile file costs little: the entries are skipped by seeking, at most
//! [`MAX_ENTRIES`] of them, and the specification is read only up to
//! [`MAX_METADATA_GZ`] compressed and [`MAX_METADATA`] uncompressed bytes.

use std::io::Read;
use std::path::Path;

/// Entries read before giving up: a built gem has three, six when signed.
const MAX_ENTRIES: usize = 64;
/// The largest `metadata.gz` read; RubyGems' own are a few kilobytes.
const MAX_METADATA_GZ: u64 = 1 << 20;
/// The largest specification read once unzipped; a gem listing thousands of files stays
/// well under it.
const MAX_METADATA: u64 = 4 << 20;

/// The deepest nesting of `[` and `{` taken. libyaml keeps a list per flow level that it
/// walks at every token, so its time grows with the square of the depth; RubyGems writes
/// specifications in block style, with no flow collection but `[]` and `{}`.
const MAX_FLOW_DEPTH: usize = 64;

/// The part of a gem specification the shim reads; every other key is skipped.
#[derive(serde::Deserialize)]
struct Spec {
    name: String,
}

/// The `name` of the specification in the `.gem` at `path`, or why it cannot be read.
pub(super) fn spec_name(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let yaml = metadata(file)?;
    let text = std::str::from_utf8(&yaml).map_err(|_| "its specification is not UTF-8".to_owned())?;
    if flow_depth(text) > MAX_FLOW_DEPTH {
        return Err(format!("its specification nests flow collections deeper than {MAX_FLOW_DEPTH}"));
    }
    let spec: Spec = serde_norway::from_str(text).map_err(|e| {
        let why = crate::sanitize_for_terminal(&e.to_string());
        format!("its specification is not one gem's: {}", why.chars().take(200).collect::<String>())
    })?;
    if !valid_name(&spec.name) {
        return Err(format!("its specification names `{}`, not a gem name", crate::sanitize_for_terminal(&spec.name)));
    }
    Ok(spec.name)
}

/// RubyGems.org takes names of letters, digits, `.`, `-` and `_`, with a letter among them.
fn valid_name(name: &str) -> bool {
    name.chars().any(|c| c.is_ascii_alphabetic())
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// How deep `[` and `{` nest in `text`, counted as if none were in a string or comment:
/// never less than libyaml's own depth, so a specification under the cap is parsed
/// quickly, and a real one (brackets in a description balance) is not refused.
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for byte in text.bytes() {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The unzipped `metadata.gz` of a gem archive.
fn metadata<R: Read + std::io::Seek>(gem: R) -> Result<Vec<u8>, String> {
    let bad = |e: std::io::Error| format!("it is not a gem archive: {e}");
    let mut archive = tar::Archive::new(gem);
    // Raw: no PAX or GNU long-name processing, which RubyGems' reader does not do either.
    let entries = archive.entries_with_seek().map_err(bad)?.raw(true);
    let mut found = None;
    for (n, entry) in entries.enumerate() {
        if n == MAX_ENTRIES {
            return Err(format!("it has more than {MAX_ENTRIES} entries"));
        }
        let entry = entry.map_err(bad)?;
        let header = entry.header();
        if header.as_ustar().is_none() || header.entry_type() != tar::EntryType::Regular {
            return Err("it is not a gem archive: an entry is not a plain ustar file".into());
        }
        match &*entry.path_bytes() {
            b"metadata" => return Err("it holds an uncompressed `metadata`, which is not taken".into()),
            b"metadata.gz" if found.is_some() => return Err("it holds more than one `metadata.gz`".into()),
            b"metadata.gz" => found = Some(unzip(entry)?),
            _ => {}
        }
    }
    found.ok_or_else(|| "it holds no `metadata.gz`".into())
}

/// One entry, gunzipped within the caps.
fn unzip(entry: impl Read) -> Result<Vec<u8>, String> {
    let mut zipped = Vec::new();
    entry.take(MAX_METADATA_GZ + 1).read_to_end(&mut zipped).map_err(|e| format!("cannot read `metadata.gz`: {e}"))?;
    if zipped.len() as u64 > MAX_METADATA_GZ {
        return Err(format!("its `metadata.gz` is over {MAX_METADATA_GZ} bytes"));
    }
    let mut yaml = Vec::new();
    flate2::read::GzDecoder::new(zipped.as_slice())
        .take(MAX_METADATA + 1)
        .read_to_end(&mut yaml)
        .map_err(|e| format!("its `metadata.gz` is not gzip: {e}"))?;
    if yaml.len() as u64 > MAX_METADATA {
        return Err(format!("its specification is over {MAX_METADATA} bytes unzipped"));
    }
    Ok(yaml)
}

#[cfg(test)]
pub(super) mod tests;
