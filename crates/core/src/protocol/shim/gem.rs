//! The name a built gem gives itself: the `name` of the specification in its
//! `metadata.gz`, which is what RubyGems.org publishes it as, whatever the file is called.
//!
//! A `.gem` is a POSIX tar of `metadata.gz` (the gzipped YAML specification),
//! `data.tar.gz` and `checksums.yaml.gz`. RubyGems' own reader takes every entry whose
//! full name is `metadata` or `metadata.gz` and keeps the last, whatever its type, so an
//! archive this reader and RubyGems might read differently is refused rather than
//! guessed at: only plain ustar files, one specification, no uncompressed `metadata`.
//! The YAML goes through libyaml, the parser RubyGems' Psych is built on, but Psych does
//! more with what libyaml reads: it decodes tagged strings (`!binary ZXZp` is `evi`) and
//! applies `<<` merge keys. So a specification with a `<<` key anywhere, a tagged key, or
//! a tagged `name` is refused rather than read another way than RubyGems reads it.
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
const MAX_METADATA: u64 = 1 << 20;

/// The deepest nesting of `[` and `{` taken. libyaml keeps a list per flow level that it
/// walks at every token, so its time grows with the square of the depth; RubyGems writes
/// specifications in block style, with no flow collection but `[]` and `{}`.
const MAX_FLOW_DEPTH: usize = 64;

/// The deepest indentation taken, in columns of leading spaces, `- ` and `? `: block
/// nesting costs each level at least a column, so this bounds it too. RubyGems indents a
/// specification a few levels deep.
const MAX_INDENT: usize = 64;

/// How much of a refused name an error line shows.
const SHOWN_NAME: usize = 80;

/// The `name` of the specification in the `.gem` at `path`, or why it cannot be read.
pub(super) fn spec_name(path: &Path) -> Result<String, String> {
    let file = crate::files::open_regular_path(path).map_err(|e| format!("cannot open it: {e}"))?;
    let yaml = metadata(file)?;
    let text = std::str::from_utf8(&yaml).map_err(|_| "its specification is not UTF-8".to_owned())?;
    if flow_depth(text) > MAX_FLOW_DEPTH {
        return Err(format!("its specification nests flow collections deeper than {MAX_FLOW_DEPTH}"));
    }
    if let Some(line) = text.lines().position(|l| indent(l) > MAX_INDENT) {
        return Err(format!("its specification is indented over {MAX_INDENT} columns deep at line {}", line + 1));
    }
    let spec: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let why = crate::sanitize_for_terminal(&e.to_string());
        format!("its specification is not one gem's: {}", why.chars().take(200).collect::<String>())
    })?;
    if let Some(why) = read_differently(&spec) {
        return Err(format!("its specification {why}, which RubyGems may read as another name"));
    }
    // The document itself is tagged `!ruby/object:Gem::Specification`.
    let spec = match spec {
        serde_norway::Value::Tagged(tagged) => tagged.value,
        untagged => untagged,
    };
    let name = match spec.get("name") {
        Some(serde_norway::Value::String(name)) => name.as_str(),
        Some(serde_norway::Value::Tagged(_)) => {
            return Err("its specification tags `name`, which RubyGems may decode".into());
        }
        Some(_) => return Err("its specification's `name` is not a string, so not a gem name".into()),
        None => return Err("its specification is not one gem's: it has no `name`".into()),
    };
    if !valid_name(name) {
        let shown: String = name.chars().take(SHOWN_NAME).collect();
        let more = if name.chars().count() > SHOWN_NAME { "…" } else { "" };
        return Err(format!(
            "its specification names `{}{more}`, not a gem name",
            crate::sanitize_for_terminal(&shown)
        ));
    }
    Ok(name.to_owned())
}

/// Why Psych might read `value` otherwise than serde_norway does: a `<<` merge key or a
/// tagged key anywhere in it.
fn read_differently(value: &serde_norway::Value) -> Option<&'static str> {
    use serde_norway::Value;
    match value {
        Value::Mapping(map) => map.iter().find_map(|(key, value)| match key {
            Value::String(key) if key == "<<" => Some("has a `<<` merge key"),
            Value::Tagged(_) => Some("has a tagged key"),
            key => read_differently(key).or_else(|| read_differently(value)),
        }),
        Value::Sequence(items) => items.iter().find_map(read_differently),
        Value::Tagged(tagged) => read_differently(&tagged.value),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
    }
}

/// The columns of leading spaces, `- ` and `? ` on `line`: never less than the block
/// nesting the line opens.
fn indent(line: &str) -> usize {
    let mut rest = line;
    loop {
        let next = rest.trim_start_matches(' ');
        let next = next.strip_prefix("- ").or_else(|| next.strip_prefix("? ")).unwrap_or(next);
        if next.len() == rest.len() {
            return line.len() - rest.len();
        }
        rest = next;
    }
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
