//! The pure core stays pure: `src/protocol`, `src/storage`, `src/clock.rs` and `src/router` must
//! not mention async code, io_uring/mio, sockets, files, clocks or the runtime (comments are
//! ignored). And every `mod.rs` under `src` starts with a `//!` module doc.

use std::path::{Path, PathBuf};

const PURE: &[&str] = &["src/protocol", "src/storage", "src/clock.rs", "src/router"];

/// Forbidden words. Identifier-like words match only as whole words (`is_async` is fine).
const FORBIDDEN: &[&str] = &[
    "async",
    ".await",
    "io_uring",
    "mio",
    "std::net",
    "std::fs",
    "Instant::now",
    "SystemTime",
    "crate::runtime",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            rust_files(&p, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Replaces comments (line, doc and nested block comments) with spaces, keeping newlines so
/// line numbers stay right. String, raw-string and char literals are kept as they are (so a
/// `//` inside a string is not a comment).
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |c: u8| if c == b'\n' { b'\n' } else { b' ' };
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // raw string r"..." / r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let end = b[j + 1..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map(|p| j + 1 + p + close.len())
                .unwrap_or(b.len());
            out.extend_from_slice(&b[i..end]);
            i = end;
        } else if c == b'"' {
            out.push(c);
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    out.push(b[i]);
                    i += 1;
                }
                out.push(b[i]);
                i += 1;
            }
            if i < b.len() {
                out.push(b[i]);
                i += 1;
            }
        } else if c == b'\'' {
            // char literal ('x', '\n', '\'', '"') or a lifetime ('a): copy a char literal whole
            let lit_len = if b.get(i + 1) == Some(&b'\\') {
                b.get(i + 3..)
                    .and_then(|rest| rest.iter().position(|&x| x == b'\''))
                    .map(|p| p + 4)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(3)
            } else {
                None
            };
            let n = lit_len.unwrap_or(1).min(b.len() - i);
            out.extend_from_slice(&b[i..i + n]);
            i += n;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Finds `word` in `line`; identifier-like ends must be word boundaries.
fn contains_word(line: &str, word: &str) -> bool {
    let l = line.as_bytes();
    let w = word.as_bytes();
    let mut from = 0;
    while let Some(p) = line[from..].find(word) {
        let at = from + p;
        let before_ok = !is_ident(w[0]) || at == 0 || !is_ident(l[at - 1]);
        let end = at + w.len();
        let after_ok = !is_ident(w[w.len() - 1]) || end == l.len() || !is_ident(l[end]);
        if before_ok && after_ok {
            return true;
        }
        from = at + 1;
    }
    false
}

fn violations_in(rel: &str, src: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in strip_comments(src).lines().enumerate() {
        for word in FORBIDDEN {
            if contains_word(line, word) {
                found.push(format!("{rel}:{}: `{word}` in: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn pure_modules_use_no_io_clock_or_runtime() {
    let root = root();
    let mut files = Vec::new();
    for p in PURE {
        let path = root.join(p);
        assert!(
            path.exists(),
            "{p} is missing (layering rules need updating?)"
        );
        rust_files(&path, &mut files);
    }
    assert!(files.len() >= 4, "too few files scanned: {files:?}");
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        let src = std::fs::read_to_string(f).unwrap();
        found.extend(violations_in(&rel, &src));
    }
    assert!(
        found.is_empty(),
        "forbidden words in pure modules:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_mod_rs_starts_with_module_doc() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut bad = Vec::new();
    let mut checked = 0;
    for f in files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "mod.rs"))
    {
        checked += 1;
        let src = std::fs::read_to_string(f).unwrap();
        if !src.starts_with("//!") {
            bad.push(f.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    assert!(checked > 0, "no mod.rs found under src");
    assert!(
        bad.is_empty(),
        "mod.rs without a leading `//!` doc: {bad:?}"
    );
}

#[test]
fn scanner_ignores_comments_and_respects_word_boundaries() {
    let src = r##"//! uses io_uring? no.
/// Instant::now is not called here
fn f() { /* async /* nested */ std::net */ let s = "// not a comment"; let _ = s; }
fn is_async_ok() {}
let c = '"'; let q = '\''; let lt: &'a str = x; use std::fs;
let r = r#"a "quoted" // string"#; let t = SystemTime::UNIX_EPOCH;
x.await
"##;
    let v = violations_in("x.rs", src);
    assert_eq!(v.len(), 3, "{v:#?}");
    assert!(v[0].starts_with("x.rs:5: `std::fs`"), "{v:#?}");
    assert!(v[1].starts_with("x.rs:6: `SystemTime`"), "{v:#?}");
    assert!(v[2].starts_with("x.rs:7: `.await`"), "{v:#?}");
    assert!(contains_word("use mio::net;", "mio"));
    assert!(!contains_word("let mion = 1;", "mio"));
    assert!(!contains_word("let premio = 1;", "mio"));
}
