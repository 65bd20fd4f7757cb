//! Reading a gem's name from its specification, and the archives that are refused.

use std::io::Write;

use super::*;

/// A specification as `gem build` writes it, tags and all.
fn spec(name: &str) -> String {
    format!(
        "--- !ruby/object:Gem::Specification\nname: {name}\nversion: !ruby/object:Gem::Version\n  version: 1.0.0\nplatform: ruby\nauthors:\n- m\ndependencies: []\nrequired_ruby_version: !ruby/object:Gem::Requirement\n  requirements:\n  - - \">=\"\n    - !ruby/object:Gem::Version\n      version: '0'\nfiles: []\n"
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    out.write_all(bytes).unwrap();
    out.finish().unwrap()
}

/// An archive entry: its name, type and content.
type Entry<'a> = (&'a str, tar::EntryType, &'a [u8]);

/// A tar of `entries`, each a ustar header of `kind` with that name and content.
fn archive(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o444);
        tar.append_data(&mut header, name, *data).unwrap();
    }
    tar.into_inner().unwrap()
}

/// A `.gem` at `path` whose `metadata.gz` holds `yaml`, laid out as `gem build` does.
pub(in crate::protocol::shim) fn write_gem(path: &Path, yaml: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = file_of(yaml);
    std::fs::write(path, file).unwrap();
}

fn file_of(yaml: &str) -> Vec<u8> {
    let regular = tar::EntryType::Regular;
    archive(&[
        ("metadata.gz", regular, &gzip(yaml.as_bytes())),
        ("data.tar.gz", regular, &gzip(&archive(&[]))),
        ("checksums.yaml.gz", regular, &gzip(b"---\n")),
    ])
}

fn read(bytes: Vec<u8>) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x-1.gem");
    std::fs::write(&path, bytes).unwrap();
    spec_name(&path)
}

#[test]
fn the_name_comes_from_the_specification() {
    assert_eq!(read(file_of(&spec("my-gem"))), Ok("my-gem".into()));
    assert_eq!(read(file_of("name: \"quoted_gem\"\n")), Ok("quoted_gem".into()));
}

#[test]
fn a_name_that_is_no_gem_name_is_refused() {
    for name in ["\"../x\"", "\"a/b\"", "\"*\"", "\"a b\"", "\".hidden\"", "\"1\"", "[a]", "\"\""] {
        let err = read(file_of(&spec(name))).unwrap_err();
        assert!(err.contains("not a gem name") || err.contains("not one gem's"), "{name}: {err}");
    }
}

#[test]
fn archives_rubygems_might_read_differently_are_refused() {
    let meta = gzip(spec("good").as_bytes());
    let other = gzip(spec("other").as_bytes());
    let plain = spec("other");
    let regular = tar::EntryType::Regular;
    let cases: [(&[Entry<'_>], &str); 6] = [
        (&[("metadata.gz", regular, &meta), ("metadata.gz", regular, &other)], "more than one `metadata.gz`"),
        (&[("metadata.gz", regular, &meta), ("metadata", regular, plain.as_bytes())], "uncompressed"),
        (&[("metadata.gz", tar::EntryType::Symlink, b"")], "not a plain ustar file"),
        (&[("x", tar::EntryType::XHeader, b"30 path=metadata.gz\n"), ("x", regular, &other)], "plain ustar"),
        (&[("x", tar::EntryType::GNULongName, b"metadata.gz\0"), ("x", regular, &other)], "plain ustar"),
        (&[("data.tar.gz", regular, b"")], "no `metadata.gz`"),
    ];
    for (entries, want) in cases {
        let err = read(archive(entries)).unwrap_err();
        assert!(err.contains(want), "{want}: {err}");
    }
    // A GNU header, whose prefix field RubyGems would read as part of the name.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(meta.len() as u64);
    tar.append_data(&mut header, "metadata.gz", meta.as_slice()).unwrap();
    assert!(read(tar.into_inner().unwrap()).unwrap_err().contains("plain ustar"));
}

#[test]
fn hostile_sizes_are_refused_quickly() {
    let start = std::time::Instant::now();
    // A gzip bomb: 8 MiB of spaces in a few kilobytes.
    let bomb = gzip(&vec![b' '; 8 << 20]);
    let err = read(archive(&[("metadata.gz", tar::EntryType::Regular, &bomb)])).unwrap_err();
    assert!(err.contains("over 1048576 bytes unzipped"), "{err}");
    // A `metadata.gz` over the compressed cap.
    let mut state = 1u32;
    let noise: Vec<u8> = (0..(1 << 20) + 10)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    let err = read(archive(&[("metadata.gz", tar::EntryType::Regular, &noise)])).unwrap_err();
    assert!(err.contains("over 1048576 bytes"), "{err}");
    // Too many entries.
    let many: Vec<(String, tar::EntryType, &[u8])> =
        (0..100).map(|i| (format!("f{i}"), tar::EntryType::Regular, &b""[..])).collect();
    let many: Vec<Entry<'_>> = many.iter().map(|(n, k, d)| (n.as_str(), *k, *d)).collect();
    assert!(read(archive(&many)).unwrap_err().contains("more than 64 entries"));
    // Billion laughs: aliases that would expand to 9^10 strings.
    let mut laughs = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (i, c) in ('b'..='j').enumerate() {
        let prev = (b'a' + i as u8) as char;
        laughs.push_str(&format!(
            "{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    laughs.push_str("name: x\n");
    // Refused at once: the aliases are expanded only up to a limit.
    let err = read(file_of(&laughs)).unwrap_err();
    assert!(err.contains("not one gem's"), "{err}");
    // Deep flow nesting, which libyaml parses in time quadratic in the depth (a minute for
    // 100,000 levels), closed or not.
    for deep in [format!("name: x\nz: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)), "{a: ".repeat(100_000)] {
        let err = read(file_of(&deep)).unwrap_err();
        assert!(err.contains("nests flow collections deeper than 64"), "{err}");
    }
    // As deep as a specification may go is read.
    let deepest = format!("name: x\nz: {}{}\n", "[".repeat(64), "]".repeat(64));
    assert_eq!(read(file_of(&deepest)), Ok("x".into()));
    let deepest = format!("name: x\nz:\n{}x\n", "- ".repeat(32));
    assert_eq!(read(file_of(&deepest)), Ok("x".into()));
    // Deep block nesting, by `- ` or by indentation.
    let mut indented = String::from("name: x\n");
    (0..100).for_each(|i| indented.push_str(&format!("{}k{i}:\n", " ".repeat(i))));
    for deep in [format!("name: x\nz:\n{}x\n", "- ".repeat(100_000)), indented] {
        let err = read(file_of(&deep)).unwrap_err();
        assert!(err.contains("indented over 64 columns"), "{err}");
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", start.elapsed());
}

#[test]
fn a_name_psych_reads_otherwise_is_refused() {
    // `ruby -ryaml -e` with Gem::Specification.from_yaml reads each of these as `evi` or
    // `evil`, where serde_norway alone would read `ZXZp` or `good`.
    let cases = [
        ("name: !binary ZXZp\n", "tags `name`"),
        ("name: good\n<<: {name: evil}\n", "`<<` merge key"),
        ("<<: {name: evil}\nname: good\n", "`<<` merge key"),
        ("name: good\nz:\n  - <<: {a: b}\n", "`<<` merge key"),
        ("name: good\n? !binary bmFtZQ==\n: evil\n", "tagged key"),
        ("name: 12\n", "not a string"),
        ("version: 1\n", "no `name`"),
    ];
    for (yaml, want) in cases {
        let err = read(file_of(yaml)).unwrap_err();
        assert!(err.contains(want), "{yaml}: {err}");
    }
    assert_eq!(read(file_of("name: !!str good\n")), Ok("good".into()));
    assert_eq!(read(file_of("name: !<tag:yaml.org,2002:str> good\n")), Ok("good".into()));
    // A refused name is shown cut short.
    let err = read(file_of(&spec(&format!("\"{}/\"", "a".repeat(1000))))).unwrap_err();
    assert!(err.contains("not a gem name") && err.len() < 200, "{err}");
}

#[test]
fn what_is_no_gem_is_refused() {
    assert!(read(b"not a tar at all".repeat(100)).unwrap_err().starts_with("it is not a gem archive"));
    let regular = tar::EntryType::Regular;
    let err = read(archive(&[("metadata.gz", regular, b"not gzip")])).unwrap_err();
    assert!(err.contains("not gzip"), "{err}");
    let err = read(file_of("\u{feff}- a list\n")).unwrap_err();
    assert!(err.contains("not one gem's"), "{err}");
    let err = read(file_of("name: x\nname: y\n")).unwrap_err();
    assert!(err.contains("not one gem's"), "a duplicate key: {err}");
    let missing = spec_name(Path::new("/nonexistent/x-1.gem")).unwrap_err();
    assert!(missing.starts_with("cannot open it"), "{missing}");
}
