//! Differential test: the same seeded random sequences of valid commands go to corecache
//! (`-t 2`, both io backends) and to the real memcached, and every reply must be identical
//! (cas values aside, which each server numbers its own way). Catches divergences no
//! hand-written table thought of. Needs `/usr/bin/memcached` (or CORECACHE_TEST_MEMCACHED);
//! without it the test says so and passes, unless CORECACHE_REQUIRE_CLIENTS=1 (set by CI).
//! `DIFF_SEEDS=200 cargo test --all-features --test differential` searches longer;
//! `DIFF_ARITH=1` adds incr/decr sequences (memcached answers those with timing-dependent
//! results now and then, so they are not run by default).

mod common;
use common::{escape, Client, Rng, TestServer};

const KEYS: u64 = 8;
const OPS_PER_SEED: usize = 1500;
/// memcached's background LRU maintainer and crawler take item references at times of their
/// own choosing, and a referenced item makes memcached's incr/decr store an unpadded copy
/// instead of rewriting in place. Turned off, memcached answers deterministically.
const MEMCACHED_OPTIONS: &str = "no_lru_maintainer,no_lru_crawler";

/// Seeds in CI; `DIFF_SEEDS=n` runs more locally.
const SEEDS: u64 = 4;

/// One side of the comparison: a connection plus the last cas it saw for each key.
struct Side {
    client: Client,
    cas: Vec<Option<String>>,
    /// The key of the meta command in flight: a `c<cas>` in its reply is that key's cas.
    meta_key: Option<usize>,
}

impl Side {
    fn new(client: Client) -> Side {
        Side {
            client,
            cas: vec![None; KEYS as usize],
            meta_key: None,
        }
    }

    /// Sends one command followed by `mn` and returns everything before `MN\r\n`, with cas
    /// tokens of VALUE lines replaced by `<cas>` (and remembered for later `cas` commands).
    fn run(&mut self, cmd: &[u8]) -> Vec<u8> {
        let mut req = cmd.to_vec();
        req.extend_from_slice(b"mn\r\n");
        self.client.send(&req);
        let mut reply = Vec::new();
        while !reply.ends_with(b"MN\r\n") {
            let line = self.client.read_line();
            assert!(!line.is_empty(), "connection closed after {}", escape(cmd));
            reply.extend_from_slice(&line);
        }
        reply.truncate(reply.len() - 4);
        self.normalize(reply)
    }

    /// Replaces cas tokens with `<cas>` (remembering them) and drops incr/decr padding.
    ///
    /// memcached rewrites a shorter incr/decr result in place, padded with spaces, only when
    /// nothing else holds a reference to the item; its background LRU maintainer sometimes
    /// does, and then it stores an unpadded copy instead. corecache always pads. So spaces
    /// that follow a digit are dropped from values, and the byte count adjusted (the
    /// generator below never makes a value with spaces anywhere else).
    fn normalize(&mut self, reply: Vec<u8>) -> Vec<u8> {
        let text = String::from_utf8_lossy(&reply).into_owned();
        let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
        let mut out = String::new();
        let mut i = 0;
        while i < lines.len() {
            let fields: Vec<&str> = lines[i].trim_end().split(' ').collect();
            if matches!(fields[0], "VA" | "HD" | "EN" | "NS" | "EX" | "NF" | "ME") {
                out.push_str(&self.normalize_meta(&fields));
                out.push_str("\r\n");
                i += 1;
                continue;
            }
            if fields.len() >= 4 && fields[0] == "VALUE" && i + 1 < lines.len() {
                let data = unpad(lines[i + 1].trim_end_matches("\r\n"));
                if fields.len() == 5 {
                    if let Some(k) = key_index(fields[1]) {
                        self.cas[k] = Some(fields[4].to_string());
                    }
                }
                let cas = if fields.len() == 5 { " <cas>" } else { "" };
                out.push_str(&format!(
                    "VALUE {} {} {}{cas}\r\n{data}\r\n",
                    fields[1],
                    fields[2],
                    data.len()
                ));
                i += 2;
            } else {
                out.push_str(lines[i]);
                i += 1;
            }
        }
        out.into_bytes()
    }
}

impl Side {
    /// A meta reply line with what differs between two correct servers replaced: cas values
    /// (`c<n>`, remembered for the key of the command, `cas=<n>` of `me`), a remaining TTL
    /// counted from the moment each server stored the item (`t<n>` above 1000), and seconds
    /// since the last access (`l<n>`, `la=<n>`: each server's clock ticks at its own moment).
    fn normalize_meta(&mut self, fields: &[&str]) -> String {
        let mut out = vec![fields[0].to_string()];
        for f in &fields[1..] {
            let number = |prefix: &str| f.strip_prefix(prefix).and_then(|n| n.parse::<i64>().ok());
            let token = if fields[0] == "ME" {
                match f.split_once('=') {
                    Some(("cas", _)) => "cas=<cas>".to_string(),
                    Some(("la", _)) => "la=<la>".to_string(),
                    _ => f.to_string(),
                }
            } else if let Some(n) = number("c") {
                if let Some(k) = self.meta_key {
                    self.cas[k] = Some(n.to_string());
                }
                "c<cas>".to_string()
            } else if number("t").is_some_and(|n| n > 1000) {
                "t<ttl>".to_string()
            } else if number("l").is_some() {
                "l<la>".to_string()
            } else {
                f.to_string()
            };
            out.push(token);
        }
        out.join(" ")
    }
}

/// A random meta command (`mg`, `ms`, `md`, `ma`, now and then `me` or a bare verb) with
/// a random set of flags in random order; now and then a bad flag or token, which both
/// servers must reject alike. Returns the command and its key's index.
fn meta_command(rng: &mut Rng, cas_of: &dyn Fn(usize) -> Option<String>) -> (Vec<u8>, usize) {
    let k = rng.below(KEYS) as usize;
    let key = format!("k{k}");
    let mut flags: Vec<String> = Vec::new();
    // Up to `n` distinct flags of `from`, in random order.
    let mut some = |rng: &mut Rng, from: &[&str], n: u64| {
        let mut pool: Vec<&str> = from.to_vec();
        for _ in 0..rng.below(n + 1) {
            if pool.is_empty() {
                break;
            }
            let i = rng.below(pool.len() as u64) as usize;
            flags.push(pool.swap_remove(i).to_string());
        }
    };
    let cas_token = |rng: &mut Rng| match (rng.below(3), cas_of(k)) {
        (0, _) | (_, None) => (rng.below(1_000_000) + 1).to_string(),
        (_, Some(c)) => c,
    };
    let mut data: Option<Vec<u8>> = None;
    let verb = match rng.below(20) {
        0..=6 => {
            some(rng, &["v", "f", "t", "s", "c", "k", "h", "l", "q"], 5);
            if rng.below(5) == 0 {
                flags.push(format!("T{}", [0, 100_000, -1][rng.below(3) as usize]));
            }
            if rng.below(7) == 0 {
                flags.push(format!("N{}", [0, 100_000][rng.below(2) as usize]));
            }
            if rng.below(10) == 0 {
                flags.push(format!("R{}", [0, 30, 100_000][rng.below(3) as usize]));
            }
            if rng.below(10) == 0 {
                flags.push(format!("E{}", rng.below(1000) + 1));
            }
            "mg"
        }
        7..=12 => {
            some(rng, &["q", "k", "c", "I"], 2);
            if rng.below(5) < 2 {
                flags.push(format!(
                    "F{}",
                    [0u64, 1, 4_294_967_295][rng.below(3) as usize]
                ));
            }
            if rng.below(10) < 3 {
                flags.push(format!("T{}", [0, 100_000, -1][rng.below(3) as usize]));
            }
            if rng.below(10) < 3 {
                let modes = b"EAPRSeaprs";
                flags.push(format!("M{}", modes[rng.below(10) as usize] as char));
            }
            if rng.below(5) == 0 {
                let token = cas_token(rng);
                flags.push(format!("C{token}"));
            }
            if rng.below(10) == 0 {
                flags.push(format!("E{}", rng.below(1000) + 1));
            }
            data = Some(match rng.below(4) {
                0 => Vec::new(),
                1 => b"abc".to_vec(),
                2 => rng.below(100).to_string().into_bytes(),
                _ => vec![b'x'; rng.below(50) as usize],
            });
            "ms"
        }
        13..=15 => {
            some(rng, &["q", "k", "I"], 2);
            if rng.below(5) == 0 {
                flags.push(format!("T{}", [0, 100_000][rng.below(2) as usize]));
            }
            if rng.below(5) == 0 {
                let token = cas_token(rng);
                flags.push(format!("C{token}"));
            }
            "md"
        }
        16..=18 => {
            some(rng, &["q", "k", "v", "t", "c"], 3);
            if rng.below(10) < 3 {
                flags.push(format!("N{}", [0, 100_000][rng.below(2) as usize]));
            }
            if rng.below(10) < 3 {
                flags.push(format!("J{}", [0, 5, u64::MAX][rng.below(3) as usize]));
            }
            if rng.below(10) < 3 {
                flags.push(format!("D{}", [1, 3, u64::MAX][rng.below(3) as usize]));
            }
            if rng.below(10) < 3 {
                let modes = ["I", "+", "D", "-", "i", "d", "X"];
                flags.push(format!("M{}", modes[rng.below(7) as usize]));
            }
            if rng.below(10) == 0 {
                let token = cas_token(rng);
                flags.push(format!("C{token}"));
            }
            "ma"
        }
        _ => {
            // (No `mn`: its `MN` would end the reply early, see `Side::run`.)
            let line = match rng.below(7) {
                0 => format!("mg {key} k k"),
                1 => format!("me {key}"),
                2 => "mg".to_string(),
                3 => format!("ms {key}"),
                4 => "ma".to_string(),
                5 => "md".to_string(),
                _ => format!("mg {key} {}", "v".repeat(1 + rng.below(3) as usize)),
            };
            return (format!("{line}\r\n").into_bytes(), k);
        }
    };
    if rng.below(10) < 3 {
        flags.push(format!("O{}", rng.below(100)));
    }
    if rng.below(20) == 0 {
        let bad = [
            "x",
            "Z",
            "!",
            "q q",
            "v v",
            "O",
            "T",
            "Nabc",
            "Tabc",
            "F-1",
            "MX",
            "b",
            "k k",
            "Ca",
            "E",
            "S",
            "h h",
            "Oabcdefghijklmnopqrstuvwxyzabcdefghijkl",
        ];
        flags.push(bad[rng.below(bad.len() as u64) as usize].to_string());
    }
    // Shuffle.
    for i in (1..flags.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        flags.swap(i, j);
    }
    let mut line = format!("{verb} {key}");
    if let Some(d) = &data {
        line.push_str(&format!(" {}", d.len()));
    }
    for f in &flags {
        line.push(' ');
        line.push_str(f);
    }
    let mut cmd = format!("{line}\r\n").into_bytes();
    if let Some(d) = data {
        cmd.extend_from_slice(&d);
        cmd.extend_from_slice(b"\r\n");
    }
    (cmd, k)
}

/// Like the text sequences below, with meta commands: random flag sets in random order, some
/// invalid, over a few keys, compared reply for reply with memcached.
#[test]
fn random_meta_sequences_answer_like_memcached() {
    for_each_pair(|backend, seed, reference, ours| {
        let mut a = Side::new(reference.connect());
        let mut b = Side::new(ours.connect());
        let mut rng = Rng::new(1000 + seed);
        let mut history = History::default();
        for step in 0..OPS_PER_SEED {
            let mut rng_b = rng.clone();
            let (cmd_a, ka) = meta_command(&mut rng, &|k| a.cas[k].clone());
            let (cmd_b, kb) = meta_command(&mut rng_b, &|k| b.cas[k].clone());
            a.meta_key = Some(ka);
            b.meta_key = Some(kb);
            let ra = a.run(&cmd_a);
            let rb = b.run(&cmd_b);
            let what = || format!("backend {backend} seed {seed} step {step}");
            history.check(what, &cmd_b, &ra, &rb, |r| escape(r));
        }
    });
}

/// The last requests and the replies corecache gave them, printed when the servers disagree.
#[derive(Default)]
struct History(std::collections::VecDeque<String>);

impl History {
    /// Asserts that both servers answered `request` alike (`what` says where in the run),
    /// then remembers it.
    fn check<T: PartialEq>(
        &mut self,
        what: impl Fn() -> String,
        request: &[u8],
        memcached: &T,
        corecache: &T,
        render: impl Fn(&T) -> String,
    ) {
        assert!(
            memcached == corecache,
            "{}: {}\n  memcached: {}\n  corecache: {}\nlast requests:\n{}",
            what(),
            escape(request),
            render(memcached),
            render(corecache),
            self.0.iter().cloned().collect::<Vec<_>>().join("\n")
        );
        if self.0.len() == 40 {
            self.0.pop_front();
        }
        self.0
            .push_back(format!("  {} -> {}", escape(request), render(corecache)));
    }
}

/// `data` without the spaces that follow a digit (incr/decr padding).
fn unpad(data: &str) -> String {
    let mut out = String::with_capacity(data.len());
    let mut after_digit = false;
    for c in data.chars() {
        if c == ' ' && after_digit {
            continue;
        }
        after_digit = c.is_ascii_digit();
        out.push(c);
    }
    out
}

fn key_index(key: &str) -> Option<usize> {
    key.strip_prefix('k')?.parse().ok()
}

/// Which commands a sequence mixes. memcached's incr/decr padding depends on a race (above),
/// and a padded value fed to append/prepend changes what a later incr computes; without
/// append/prepend, padding only changes how a value looks, which `normalize` undoes. So a
/// sequence has either arithmetic or concatenation, never both.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mix {
    Arithmetic,
    Concatenation,
}

/// A random valid command; `cas_of` gives the side's last seen cas for a key.
fn command(rng: &mut Rng, mix: Mix, cas_of: &dyn Fn(usize) -> Option<String>) -> Vec<u8> {
    let k = rng.below(KEYS) as usize;
    let key = format!("k{k}");
    let noreply = if rng.below(8) == 0 { " noreply" } else { "" };
    // Numbers often, so incr/decr meet numeric values; sometimes long, sometimes empty.
    let mut data = match rng.below(4) {
        0 => rng.below(1000).to_string(),
        1 => u64::MAX.to_string(),
        2 => String::new(),
        _ => "v".repeat(rng.below(40) as usize),
    };
    if rng.below(10) == 0 {
        data = format!("{} ", rng.below(100)); // a padded number, as incr leaves them
    }
    let flags = [0u64, 1, 42, 4_294_967_295][rng.below(4) as usize];
    let exptime = [0i64, 0, 0, 100_000, -1][rng.below(5) as usize];
    let store = |verb: &str, extra: &str| {
        format!(
            "{verb} {key} {flags} {exptime} {}{extra}{noreply}\r\n{data}\r\n",
            data.len()
        )
        .into_bytes()
    };
    match rng.below(16) {
        0 | 1 => store("set", ""),
        2 => store("add", ""),
        3 => store("replace", ""),
        4 if mix == Mix::Concatenation => store("append", ""),
        5 if mix == Mix::Concatenation => store("prepend", ""),
        6 => {
            // Draw both numbers always, so both sides' generators stay in step.
            let (pick, bogus) = (rng.below(3), rng.below(1_000_000) + 1);
            let token = match (pick, cas_of(k)) {
                (0, _) | (_, None) => bogus.to_string(),
                (_, Some(c)) => c,
            };
            store("cas", &format!(" {token}"))
        }
        7 if mix == Mix::Arithmetic => format!(
            "incr {key} {}{noreply}\r\n",
            [1u64, 7, u64::MAX][rng.below(3) as usize]
        )
        .into_bytes(),
        8 if mix == Mix::Arithmetic => format!(
            "decr {key} {}{noreply}\r\n",
            [1u64, 500, u64::MAX][rng.below(3) as usize]
        )
        .into_bytes(),
        9 => format!("delete {key}{noreply}\r\n").into_bytes(),
        10 => format!("touch {key} {exptime}{noreply}\r\n").into_bytes(),
        11 | 12 => {
            let n = 1 + rng.below(4);
            let keys: Vec<String> = (0..n).map(|_| format!("k{}", rng.below(KEYS))).collect();
            let verb = ["get", "gets"][rng.below(2) as usize];
            format!("{verb} {}\r\n", keys.join(" ")).into_bytes()
        }
        13 => {
            let verb = ["gat", "gats"][rng.below(2) as usize];
            format!("{verb} {exptime} {key} k{}\r\n", rng.below(KEYS)).into_bytes()
        }
        14 if rng.below(20) == 0 => format!("flush_all{noreply}\r\n").into_bytes(),
        _ => format!("get {key}\r\n").into_bytes(),
    }
}

/// Whether memcached is there to compare with (this test runs it beside corecache, so not in
/// memcached mode). Without it the tests say so and pass, unless CI requires it.
fn reference_memcached() -> bool {
    if common::memcached_mode() {
        return false;
    }
    let memcached = std::env::var("CORECACHE_TEST_MEMCACHED")
        .unwrap_or_else(|_| "/usr/bin/memcached".to_string());
    if !std::path::Path::new(&memcached).exists() {
        assert!(
            std::env::var("CORECACHE_REQUIRE_CLIENTS").as_deref() != Ok("1"),
            "memcached is required for the differential test"
        );
        eprintln!("SKIPPED: no memcached at {memcached}");
        return false;
    }
    true
}

/// Runs `body` for each backend and seed with a fresh memcached (the reference) and a fresh
/// corecache `-t 2`; nothing when memcached is not there (see [`reference_memcached`]).
fn for_each_pair(mut body: impl FnMut(&str, u64, &TestServer, &TestServer)) {
    if !reference_memcached() {
        return;
    }
    for backend in ["uring", "epoll"] {
        for seed in 0..seeds() {
            let reference = TestServer::start_memcached(&["-t", "1", "-o", MEMCACHED_OPTIONS]);
            let ours = TestServer::start_corecache(&["-t", "2", "--io-backend", backend]);
            body(backend, seed, &reference, &ours);
        }
    }
}

/// Seeds per backend: [`SEEDS`], or `DIFF_SEEDS=n`.
fn seeds() -> u64 {
    std::env::var("DIFF_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEEDS)
}

#[test]
fn random_command_sequences_answer_like_memcached() {
    let arithmetic = std::env::var("DIFF_ARITH").as_deref() == Ok("1");
    for_each_pair(|backend, seed, reference, ours| {
        let mut a = Side::new(reference.connect());
        let mut b = Side::new(ours.connect());
        // memcached's incr/decr answers vary with timing inside memcached (a replay of a
        // failing stream gives corecache's answer), so arithmetic mixes run only when
        // asked for (DIFF_ARITH=1); the conformance tables and the store's model test
        // cover arithmetic deterministically.
        let mix = if arithmetic && seed % 2 == 0 {
            Mix::Arithmetic
        } else {
            Mix::Concatenation
        };
        let mut rng = Rng::new(seed + 1);
        let mut history = History::default();
        for step in 0..OPS_PER_SEED {
            // Both sides get the same command shape; a `cas` uses each side's own token.
            let mut rng_b = rng.clone();
            let cmd_a = command(&mut rng, mix, &|k| a.cas[k].clone());
            let cmd_b = command(&mut rng_b, mix, &|k| b.cas[k].clone());
            let ra = a.run(&cmd_a);
            let rb = b.run(&cmd_b);
            let what = || format!("backend {backend} seed {seed} ({mix:?}) step {step}");
            history.check(what, &cmd_b, &ra, &rb, |r| escape(r));
        }
    });
}

/// Retrievals of many keys (more than one run of keys, which corecache answers a run at a
/// time as the client reads) answer exactly as memcached's: every key's value in order,
/// misses and repeats included, one `END`, and the requests pipelined behind them after.
#[test]
fn long_retrievals_answer_like_memcached() {
    const NAMES: u64 = 64;
    let sizes = [0usize, 1, 30, 1000, 20_000, 150_000];
    for_each_pair(|backend, seed, reference, ours| {
        let mut a = Side::new(reference.connect());
        let mut b = Side::new(ours.connect());
        let mut rng = Rng::new(seed + 100);
        let mut history = History::default();
        // Three names in four hold a value (sizes from nothing to 150 KB); the rest miss.
        let mut load = Vec::new();
        for i in (0..NAMES).filter(|i| i % 4 != 3) {
            let len = sizes[rng.below(sizes.len() as u64) as usize];
            let byte = b'a' + (i % 26) as u8;
            load.extend_from_slice(format!("set long{i} {i} 0 {len}\r\n").as_bytes());
            load.extend(std::iter::repeat_n(byte, len));
            load.extend_from_slice(b"\r\n");
        }
        history.check(
            || "load".into(),
            b"",
            &a.run(&load),
            &b.run(&load),
            |r| escape(r),
        );
        for step in 0..60 {
            let n = [1u64, 15, 16, 17, 31, 32, 33, 48, 49, 100, 250][rng.below(11) as usize];
            let verb = ["get", "gets", "gat 0", "gats 1000"][rng.below(4) as usize];
            let gap = if rng.below(4) == 0 { "  " } else { " " };
            let mut cmd = verb.to_string();
            for _ in 0..n {
                cmd.push_str(gap);
                cmd.push_str(&format!("long{}", rng.below(NAMES)));
            }
            cmd.push_str(["", " ", "   "][rng.below(3) as usize]);
            cmd.push_str(if rng.below(4) == 0 { "\n" } else { "\r\n" });
            // What follows in the same write: nothing, a short get, a set and its get, or the
            // same long retrieval again.
            match rng.below(4) {
                0 => {}
                1 => cmd.push_str("get long1 long2 long3\r\n"),
                2 => cmd.push_str(&format!("set long{step} 0 0 2\r\nzz\r\nget long{step}\r\n")),
                _ => cmd = cmd.repeat(2),
            }
            let (ra, rb) = (a.run(cmd.as_bytes()), b.run(cmd.as_bytes()));
            let what = || format!("backend {backend} seed {seed} step {step} ({n} keys)");
            history.check(what, cmd.as_bytes(), &ra, &rb, |r| {
                escape(&r[..r.len().min(2000)])
            });
        }
    });
}

/// A binary request with the lengths in its header as given (`key_len`, `body_len` may lie).
fn binary_frame(op: u8, opaque: u32, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80, op];
    f.extend_from_slice(&(key.len() as u16).to_be_bytes());
    f.push(extras.len() as u8);
    f.extend_from_slice(&[0, 0, 0]); // data type, vbucket
    f.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    f.extend_from_slice(&opaque.to_be_bytes());
    f.extend_from_slice(&cas.to_be_bytes());
    f.extend_from_slice(extras);
    f.extend_from_slice(key);
    f.extend_from_slice(value);
    f
}

/// The opaque of the noop that ends each binary exchange.
const BINARY_END: u32 = 0x00e7_d0e7;

/// A random binary request: storage, get, concatenation, delete, incr/decr, touch/gat, flush,
/// noop and version in their plain and quiet forms, and now and then a malformed
/// one (missing or unexpected extras, key or body; an over-long key), which both servers must
/// answer alike (some close the connection). Returns the frame and its key's index.
fn binary_command(rng: &mut Rng, cas_of: &dyn Fn(usize) -> Option<u64>) -> (Vec<u8>, usize) {
    let k = rng.below(KEYS) as usize;
    let key = format!("k{k}").into_bytes();
    let opaque = rng.below(1000) as u32;
    let value: Vec<u8> = match rng.below(4) {
        0 => Vec::new(),
        1 => b"abc".to_vec(),
        2 => rng.below(100).to_string().into_bytes(),
        _ => vec![b'x'; rng.below(50) as usize],
    };
    let flags = [0u32, 1, u32::MAX][rng.below(3) as usize];
    let exptime = [0u32, 0, 100_000, u32::MAX][rng.below(4) as usize];
    let cas = if rng.below(5) == 0 {
        match (rng.below(3), cas_of(k)) {
            (0, _) | (_, None) => rng.below(1_000_000) + 1,
            (_, Some(c)) => c,
        }
    } else {
        0
    };
    let pick = |rng: &mut Rng, ops: &[u8]| ops[rng.below(ops.len() as u64) as usize];
    let flags_exp = [flags.to_be_bytes(), exptime.to_be_bytes()].concat();
    let frame = match rng.below(100) {
        0..=24 => {
            let op = pick(rng, &[0x01, 0x02, 0x03, 0x11, 0x12, 0x13]);
            binary_frame(op, opaque, cas, &flags_exp, &key, &value)
        }
        25..=44 => {
            let op = pick(rng, &[0x00, 0x09, 0x0c, 0x0d]);
            binary_frame(op, opaque, 0, &[], &key, &[])
        }
        45..=51 => {
            let op = pick(rng, &[0x0e, 0x0f, 0x19, 0x1a]);
            binary_frame(op, opaque, cas, &[], &key, &value)
        }
        52..=59 => {
            let op = pick(rng, &[0x04, 0x14]);
            binary_frame(op, opaque, cas, &[], &key, &[])
        }
        60..=69 => {
            let op = pick(rng, &[0x05, 0x06, 0x15, 0x16]);
            let delta = [1u64, 7, u64::MAX][rng.below(3) as usize];
            let initial = [0u64, 5, u64::MAX][rng.below(3) as usize];
            let extras = [
                &delta.to_be_bytes()[..],
                &initial.to_be_bytes(),
                &exptime.to_be_bytes(),
            ]
            .concat();
            binary_frame(op, opaque, cas, &extras, &key, &[])
        }
        70..=77 => {
            let op = pick(rng, &[0x1c, 0x1d, 0x1e, 0x23, 0x24]);
            binary_frame(op, opaque, 0, &exptime.to_be_bytes(), &key, &[])
        }
        // (No verbosity: memcached answers it as an unknown command and then leaves the
        // connection waiting, which costs each step a read timeout here.)
        78..=79 => binary_frame(0x0b, opaque, 0, &[], &[], &[]),
        80..=81 => binary_frame(0x0a, opaque, 0, &[], &[], &[]),
        83 if rng.below(4) == 0 => binary_frame(0x08, opaque, 0, &[], &[], &[]),
        _ => match rng.below(9) {
            0 => binary_frame(0x00, opaque, 0, &[], &[], &[]),
            1 => binary_frame(0x01, opaque, 0, &[], &key, &value),
            2 => binary_frame(0x00, opaque, 0, &1u32.to_be_bytes(), &key, &[]),
            3 => binary_frame(0x04, opaque, 0, &1u32.to_be_bytes(), &key, &[]),
            4 => binary_frame(0x05, opaque, 0, &[], &key, &[]),
            5 => binary_frame(0x0a, opaque, 0, &[], &key, &[]),
            6 => binary_frame(0x0b, opaque, 0, &[], &key, &[]),
            7 => binary_frame(0x1c, opaque, 0, &[], &key, &[]),
            _ => binary_frame(0x01, opaque, 0, &flags_exp, &[b'k'; 251], b"v"),
        },
    };
    (frame, k)
}

/// Sends `frame` and a noop, and returns the responses before the noop's, each as text with
/// its cas shown only as present or not (remembered for `key`) and `version`'s text left out;
/// a closed connection ends the list with `closed` and is reopened.
fn binary_exchange(
    client: &mut Client,
    connect: &dyn Fn() -> Client,
    cas: &mut [Option<u64>],
    frame: &[u8],
    key: usize,
) -> Vec<String> {
    let mut request = frame.to_vec();
    request.extend(binary_frame(0x0a, BINARY_END, 0, &[], &[], &[]));
    client.send(&request);
    let mut out = Vec::new();
    loop {
        let Ok(header) = client.read_n(24) else {
            out.push("closed".to_string());
            *client = connect();
            return out;
        };
        let body_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let Ok(body) = client.read_n(body_len as usize) else {
            out.push("closed mid-response".to_string());
            *client = connect();
            return out;
        };
        let opaque = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&header[16..24]);
        let response_cas = u64::from_be_bytes(c);
        if header[1] == 0x0a && opaque == BINARY_END {
            return out;
        }
        if response_cas != 0 {
            cas[key] = Some(response_cas);
        }
        let body = if header[1] == 0x0b {
            "<version>".to_string()
        } else {
            escape(&body)
        };
        out.push(format!(
            "{} cas:{} body:{body}",
            escape(&header[..16]),
            response_cas != 0
        ));
    }
}

/// Like the text sequences, in the binary protocol: seeded random requests, some malformed,
/// compared response for response with memcached (cas values aside).
#[test]
fn random_binary_sequences_answer_like_memcached() {
    for_each_pair(|backend, seed, reference, ours| {
        let connect_a = || reference.connect();
        let connect_b = || ours.connect();
        let (mut a, mut b) = (connect_a(), connect_b());
        let (mut cas_a, mut cas_b) = (vec![None; KEYS as usize], vec![None; KEYS as usize]);
        let mut rng = Rng::new(2000 + seed);
        let mut history = History::default();
        for step in 0..OPS_PER_SEED {
            let mut rng_b = rng.clone();
            let (frame_a, ka) = binary_command(&mut rng, &|k| cas_a[k]);
            let (frame_b, kb) = binary_command(&mut rng_b, &|k| cas_b[k]);
            let ra = binary_exchange(&mut a, &connect_a, &mut cas_a, &frame_a, ka);
            let rb = binary_exchange(&mut b, &connect_b, &mut cas_b, &frame_b, kb);
            let what = || format!("backend {backend} seed {seed} step {step}");
            history.check(what, &frame_b, &ra, &rb, |r| format!("{r:?}"));
        }
    });
}
