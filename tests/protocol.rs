//! Text-protocol conformance against the real binary, byte for byte.
//!
//! Every expected reply here was checked against memcached 1.6.18
//! (`CORECACHE_TEST_SERVER=memcached cargo test --test protocol`).

mod common;

use common::{
    assert_bytes_eq, escape, for_each_config, memcached_mode, start_each_receive_ring, stat_u64,
    Client, TestServer,
};

/// Conformance steps, run in order on ONE connection: (request, expected reply).
/// Placeholders (see `Client::roundtrip_pattern`): `{cas:NAME}` captures/uses a cas token,
/// `{badcas:NAME}` is a token that differs from it, `{line}` matches the rest of a line.
/// An empty expected reply means "nothing": the next step's reply must follow directly.
const TABLE: &[(&[u8], &[u8])] = &[
    // --- storage commands and get/gets/gat/gats/touch ---
    (b"get a\r\n", b"END\r\n"),
    (b"set a 0 0 1\r\nx\r\n", b"STORED\r\n"),
    (b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n"),
    (b"gets a\r\n", b"VALUE a 0 1 {cas:a1}\r\nx\r\nEND\r\n"),
    (b"gat 0 a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n"),
    (b"gats 0 a\r\n", b"VALUE a 0 1 {cas:a1}\r\nx\r\nEND\r\n"),
    (b"touch a 0\r\n", b"TOUCHED\r\n"),
    (b"touch missing 0\r\n", b"NOT_FOUND\r\n"),
    (b"add a 0 0 1\r\ny\r\n", b"NOT_STORED\r\n"),
    (b"add b 5 0 2\r\nbb\r\n", b"STORED\r\n"),
    (b"replace missing 0 0 1\r\ny\r\n", b"NOT_STORED\r\n"),
    (b"replace b 6 0 3\r\nBBB\r\n", b"STORED\r\n"),
    (b"append missing 0 0 1\r\ny\r\n", b"NOT_STORED\r\n"),
    (b"prepend missing 0 0 1\r\ny\r\n", b"NOT_STORED\r\n"),
    (b"append b 0 0 2\r\n>>\r\n", b"STORED\r\n"),
    (b"prepend b 0 0 2\r\n<<\r\n", b"STORED\r\n"),
    // append/prepend keep the item's flags
    (b"get b\r\n", b"VALUE b 6 7\r\n<<BBB>>\r\nEND\r\n"),
    // multi-key get: request order, misses skipped
    (
        b"get b missing a missing2\r\n",
        b"VALUE b 6 7\r\n<<BBB>>\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    ),
    (
        b"gat 100 a missing b\r\n",
        b"VALUE a 0 1\r\nx\r\nVALUE b 6 7\r\n<<BBB>>\r\nEND\r\n",
    ),
    // a key asked for twice is returned twice
    (
        b"get a a\r\n",
        b"VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    ),
    (b"gat 100\r\n", b"END\r\n"),
    (b"delete b\r\n", b"DELETED\r\n"),
    (b"delete b\r\n", b"NOT_FOUND\r\n"),
    (b"get b\r\n", b"END\r\n"),
    // legacy "delete <key> 0" is accepted, any other time is not
    (b"set d 0 0 1\r\nd\r\n", b"STORED\r\n"),
    (b"delete d 0\r\n", b"DELETED\r\n"),
    (
        b"delete d 5\r\n",
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
    ),
    // --- zero-length value, 32-bit flags ---
    (b"set z 0 0 0\r\n\r\n", b"STORED\r\n"),
    (b"get z\r\n", b"VALUE z 0 0\r\n\r\nEND\r\n"),
    (b"set f 4294967295 0 1\r\nf\r\n", b"STORED\r\n"),
    (b"get f\r\n", b"VALUE f 4294967295 1\r\nf\r\nEND\r\n"),
    // --- exptime: negative and absolute-in-the-past are gone at once ---
    (b"set e 0 -1 1\r\ne\r\n", b"STORED\r\n"),
    (b"get e\r\n", b"END\r\n"),
    (b"set e 0 1000000000 1\r\ne\r\n", b"STORED\r\n"),
    (b"get e\r\n", b"END\r\n"),
    (b"set e 0 0 1\r\ne\r\n", b"STORED\r\n"),
    (b"touch e -1\r\n", b"TOUCHED\r\n"),
    (b"get e\r\n", b"END\r\n"),
    (b"set e 0 0 1\r\ne\r\n", b"STORED\r\n"),
    (b"gat -1 e\r\n", b"VALUE e 0 1\r\ne\r\nEND\r\n"),
    (b"get e\r\n", b"END\r\n"),
    // --- cas flow ---
    (b"set c 0 0 2\r\nc1\r\n", b"STORED\r\n"),
    (b"gets c\r\n", b"VALUE c 0 2 {cas:c1}\r\nc1\r\nEND\r\n"),
    (b"cas c 0 0 2 {badcas:c1}\r\nXX\r\n", b"EXISTS\r\n"),
    (b"get c\r\n", b"VALUE c 0 2\r\nc1\r\nEND\r\n"),
    (b"cas c 0 0 2 {cas:c1}\r\nc2\r\n", b"STORED\r\n"),
    (b"gets c\r\n", b"VALUE c 0 2 {cas:c2}\r\nc2\r\nEND\r\n"),
    // the old token is stale now
    (b"cas c 0 0 2 {cas:c1}\r\nXX\r\n", b"EXISTS\r\n"),
    (b"set c 0 0 2\r\nc3\r\n", b"STORED\r\n"),
    (b"cas c 0 0 2 {cas:c2}\r\nXX\r\n", b"EXISTS\r\n"),
    (b"get c\r\n", b"VALUE c 0 2\r\nc3\r\nEND\r\n"),
    (b"cas missing 0 0 1 1\r\nx\r\n", b"NOT_FOUND\r\n"),
    (b"delete c\r\n", b"DELETED\r\n"),
    (b"cas c 0 0 2 {cas:c2}\r\nXX\r\n", b"NOT_FOUND\r\n"),
    // cas without a token: ERROR, and the data line is then a (bad) command of its own
    (b"cas c 0 0 1\r\ny\r\n", b"ERROR\r\nERROR\r\n"),
    // --- incr / decr ---
    (b"set n 0 0 2\r\n10\r\n", b"STORED\r\n"),
    (b"incr n 5\r\n", b"15\r\n"),
    (b"decr n 3\r\n", b"12\r\n"),
    (b"decr n 100\r\n", b"0\r\n"), // floor at 0
    (b"decr n 0\r\n", b"0\r\n"),
    (b"incr missing 1\r\n", b"NOT_FOUND\r\n"),
    (b"decr missing 1\r\n", b"NOT_FOUND\r\n"),
    // wrap at 2^64
    (b"set n 0 0 20\r\n18446744073709551615\r\n", b"STORED\r\n"),
    (b"incr n 1\r\n", b"0\r\n"),
    // shorter result is written in place, padded with spaces to the old length
    (
        b"get n\r\n",
        b"VALUE n 0 20\r\n0                   \r\nEND\r\n",
    ),
    (b"set n 0 0 1\r\n1\r\n", b"STORED\r\n"),
    (b"incr n 18446744073709551615\r\n", b"0\r\n"),
    (b"set n 0 0 3\r\n100\r\n", b"STORED\r\n"),
    (b"decr n 1\r\n", b"99\r\n"),
    (b"get n\r\n", b"VALUE n 0 3\r\n99 \r\nEND\r\n"),
    // a padded number still counts (trailing spaces are accepted)
    (b"incr n 1\r\n", b"100\r\n"),
    (b"get n\r\n", b"VALUE n 0 3\r\n100\r\nEND\r\n"),
    // longer result grows the value
    (b"set n 0 0 2\r\n99\r\n", b"STORED\r\n"),
    (b"incr n 1\r\n", b"100\r\n"),
    (b"get n\r\n", b"VALUE n 0 3\r\n100\r\nEND\r\n"),
    (b"incr n 01\r\n", b"101\r\n"),
    (
        b"incr n abc\r\n",
        b"CLIENT_ERROR invalid numeric delta argument\r\n",
    ),
    (
        b"incr n -1\r\n",
        b"CLIENT_ERROR invalid numeric delta argument\r\n",
    ),
    (
        b"incr n 18446744073709551616\r\n",
        b"CLIENT_ERROR invalid numeric delta argument\r\n",
    ),
    (
        b"incr a 1\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    (b"set n 0 0 2\r\n5a\r\n", b"STORED\r\n"),
    (
        b"decr n 1\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    (b"set n 0 0 3\r\n-50\r\n", b"STORED\r\n"),
    (
        b"incr n 1\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    // a 21-digit value overflows u64: non-numeric
    (b"set n 0 0 21\r\n184467440737095516150\r\n", b"STORED\r\n"),
    (
        b"incr n 1\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    // --- noreply on every command that takes it; the next reply follows directly ---
    (b"set q 1 0 1 noreply\r\nq\r\n", b""),
    (b"add q 0 0 1 noreply\r\nQ\r\n", b""),
    (b"add q2 0 0 1 noreply\r\nr\r\n", b""),
    (b"replace q 2 0 1 noreply\r\nQ\r\n", b""),
    (b"append q 0 0 1 noreply\r\n>\r\n", b""),
    (b"prepend q 0 0 1 noreply\r\n<\r\n", b""),
    (
        b"get q q2\r\n",
        b"VALUE q 2 3\r\n<Q>\r\nVALUE q2 0 1\r\nr\r\nEND\r\n",
    ),
    (b"gets q2\r\n", b"VALUE q2 0 1 {cas:q2}\r\nr\r\nEND\r\n"),
    (b"cas q2 0 0 1 {badcas:q2} noreply\r\nX\r\n", b""),
    (b"cas q2 0 0 1 {cas:q2} noreply\r\ns\r\n", b""),
    (b"get q2\r\n", b"VALUE q2 0 1\r\ns\r\nEND\r\n"),
    (b"set n 0 0 1\r\n5\r\n", b"STORED\r\n"),
    (b"incr n 3 noreply\r\n", b""),
    (b"decr n 1 noreply\r\n", b""),
    (b"get n\r\n", b"VALUE n 0 1\r\n7\r\nEND\r\n"),
    (b"touch n 100 noreply\r\n", b""),
    (b"delete n noreply\r\n", b""),
    (b"delete n noreply\r\n", b""),
    (b"get n\r\n", b"END\r\n"),
    (b"verbosity 1 noreply\r\n", b""),
    (b"verbosity 0\r\n", b"OK\r\n"),
    // errors are silent under noreply too
    (b"incr q abc noreply\r\n", b""),
    (b"version\r\n", b"VERSION {line}\r\n"),
    // --- verbosity, version ---
    (b"verbosity 1\r\n", b"OK\r\n"),
    (b"verbosity\r\n", b"ERROR\r\n"),
    (
        b"verbosity abc\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    ),
    (b"verbosity 0\r\n", b"OK\r\n"),
    // --- errors ---
    (b"foo\r\n", b"ERROR\r\n"),
    (b"GET a\r\n", b"ERROR\r\n"),
    (b"\r\n", b"ERROR\r\n"),
    (b"get\r\n", b"ERROR\r\n"),
    (b"gets\r\n", b"ERROR\r\n"),
    (b"gat\r\n", b"ERROR\r\n"),
    (b"delete\r\n", b"ERROR\r\n"),
    (b"incr\r\n", b"ERROR\r\n"),
    (b"incr n\r\n", b"ERROR\r\n"),
    (b"touch a\r\n", b"ERROR\r\n"),
    (b"set x\r\n", b"ERROR\r\n"),
    (b"set x 0 0\r\n", b"ERROR\r\n"),
    (
        b"set x 0 0 abc\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    ),
    (
        b"set x 0 0 -1\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    ),
    // bad flags / exptime: the error comes first, then the data line is parsed as a command
    (
        b"set x abc 0 1\r\nv\r\n",
        b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
    ),
    (
        b"set x -1 0 1\r\nv\r\n",
        b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
    ),
    (
        b"set x 0 abc 1\r\nv\r\n",
        b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
    ),
    (
        b"gat abc a\r\n",
        b"CLIENT_ERROR invalid exptime argument\r\n",
    ),
    (
        b"touch a abc\r\n",
        b"CLIENT_ERROR invalid exptime argument\r\n",
    ),
    (
        b"flush_all abc\r\n",
        b"CLIENT_ERROR invalid exptime argument\r\n",
    ),
    // bad data chunk: len+2 bytes are consumed, the rest ("\r\n") is an empty command line;
    // the old value stays
    (b"set g 0 0 2\r\nv1\r\n", b"STORED\r\n"),
    (
        b"set g 0 0 2\r\nv2XX\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    ),
    (b"get g\r\n", b"VALUE g 0 2\r\nv1\r\nEND\r\n"),
    // --- flush_all ---
    (b"flush_all\r\n", b"OK\r\n"),
    (b"get a g f z q\r\n", b"END\r\n"),
    (b"set a 0 0 1\r\nx\r\n", b"STORED\r\n"),
    (b"flush_all 0\r\n", b"OK\r\n"),
    (b"get a\r\n", b"END\r\n"),
    (b"set a 0 0 1\r\nx\r\n", b"STORED\r\n"),
    (b"flush_all noreply\r\n", b""),
    (b"get a\r\n", b"END\r\n"),
    (b"set a 0 0 1\r\ny\r\n", b"STORED\r\n"),
    (b"get a\r\n", b"VALUE a 0 1\r\ny\r\nEND\r\n"),
    // --- the connection is still in sync at the end ---
    (b"version\r\n", b"VERSION {line}\r\n"),
];

/// Steps built at run time: keys of 250 (the maximum) and 251 bytes.
fn long_key_steps() -> Vec<(Vec<u8>, Vec<u8>)> {
    let k250 = "k".repeat(250);
    let k251 = "k".repeat(251);
    let bad = b"CLIENT_ERROR bad command line format\r\n".to_vec();
    vec![
        (format!("get {k251}\r\n").into_bytes(), bad.clone()),
        (format!("get {k250}\r\n").into_bytes(), b"END\r\n".to_vec()),
        (
            format!("set {k250} 0 0 1\r\nv\r\n").into_bytes(),
            b"STORED\r\n".to_vec(),
        ),
        (
            format!("get a {k250}\r\n").into_bytes(),
            format!("VALUE a 0 1\r\ny\r\nVALUE {k250} 0 1\r\nv\r\nEND\r\n").into_bytes(),
        ),
        // A too-long key anywhere in a multi-get: only the error, the hit before it is dropped.
        (format!("get a {k251}\r\n").into_bytes(), bad.clone()),
        (format!("get a {k251} a\r\n").into_bytes(), bad.clone()),
        // Over-long key in a storage command: the data block is NOT swallowed, so the data
        // line "v" is then parsed as a command of its own.
        (format!("set {k251} 0 0 1\r\nv\r\n").into_bytes(), {
            let mut r = bad.clone();
            r.extend_from_slice(b"ERROR\r\n");
            r
        }),
        (format!("incr {k251} 1\r\n").into_bytes(), bad.clone()),
        (format!("decr {k251} 1\r\n").into_bytes(), bad.clone()),
        (format!("touch {k251} 1\r\n").into_bytes(), bad.clone()),
        (format!("delete {k251}\r\n").into_bytes(), bad.clone()),
        (
            format!("delete {k250}\r\n").into_bytes(),
            b"DELETED\r\n".to_vec(),
        ),
        (b"version\r\n".to_vec(), b"VERSION {line}\r\n".to_vec()),
    ]
}

#[test]
fn conformance_table() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let generated = long_key_steps();
        let steps = TABLE
            .iter()
            .map(|(q, r)| (*q, *r))
            .chain(generated.iter().map(|(q, r)| (q.as_slice(), r.as_slice())));
        for (i, (req, expected)) in steps.enumerate() {
            eprintln!("step {i}: {}", escape(req));
            c.roundtrip_pattern(req, expected);
        }
    });
}

#[test]
fn quit_closes_the_connection() {
    let server = TestServer::start(&["-t", "1"]);
    let mut c = server.connect();
    c.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    // Nothing after quit is answered, even when pipelined in the same write.
    c.send(b"quit\r\nget a\r\n");
    let rest = c.expect_closed();
    assert_bytes_eq(&rest, b"", "bytes after quit");
    // The server itself is fine.
    server
        .connect()
        .roundtrip(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
}

/// An HTTP request sent to the cache port is hung up on without a reply, as memcached does;
/// what was stored stays.
#[test]
fn http_requests_are_hung_up_on() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut setup = server.connect();
        setup.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
        for request in [
            &b"GET / HTTP/1.0\r\n"[..],
            b"PUT /asdf/asd/fasdfasdf/sadf HTTP/1.1\r\n",
            b"DELETE HTTP/1.1\r\n",
        ] {
            let mut c = server.connect();
            c.send(request);
            let before_close = c.expect_closed();
            assert_bytes_eq(&before_close, b"", "reply before the hang-up");
        }
        // Not an HTTP request line: ERROR and the connection stays.
        setup.roundtrip(b"GET / HTTP/1.1 x\r\n", b"ERROR\r\n");
        setup.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
    });
}

fn value_with_all_bytes() -> Vec<u8> {
    // All 256 byte values, including "\r\n", "END\r\n" and NUL, several times over.
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.extend_from_slice(b"\r\nEND\r\nVALUE x 0 1\r\n");
    v.extend((0..=255u8).rev());
    v
}

#[test]
fn all_byte_values_roundtrip() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let v = value_with_all_bytes();
        let mut req = format!("set bin 7 0 {}\r\n", v.len()).into_bytes();
        req.extend_from_slice(&v);
        req.extend_from_slice(b"\r\n");
        c.roundtrip(&req, b"STORED\r\n");
        let mut expected = format!("VALUE bin 7 {}\r\n", v.len()).into_bytes();
        expected.extend_from_slice(&v);
        expected.extend_from_slice(b"\r\nEND\r\n");
        c.roundtrip(b"get bin\r\n", &expected);
        // append/prepend of binary data
        c.roundtrip(b"append bin 0 0 3\r\n\x00\r\n\r\n", b"STORED\r\n");
        let mut expected = format!("VALUE bin 7 {}\r\n", v.len() + 3).into_bytes();
        expected.extend_from_slice(&v);
        expected.extend_from_slice(b"\x00\r\n\r\nEND\r\n");
        c.roundtrip(b"get bin\r\n", &expected);
    });
}

/// Large values, which corecache sends straight from their items while nothing else waits on
/// the connection, arrive byte for byte in every retrieval form (single and multi-key, with
/// cas, `gat`, after a small reply in the same batch), and `bytes_written` counts exactly the
/// bytes the client received.
#[test]
fn large_values_arrive_whole_and_are_counted() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let sizes = [40_000usize, 300_000, 1_000_000 - 100];
        let values: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| ((j * 7 + i) % 251) as u8).collect())
            .collect();
        for (i, v) in values.iter().enumerate() {
            let mut req = format!("set big{i} {i} 0 {}\r\n", v.len()).into_bytes();
            req.extend_from_slice(v);
            req.extend_from_slice(b"\r\n");
            c.roundtrip(&req, b"STORED\r\n");
        }
        let block = |i: usize, cas: Option<&str>| {
            let mut b = format!("VALUE big{i} {i} {}", values[i].len()).into_bytes();
            if let Some(cas) = cas {
                b.extend_from_slice(format!(" {cas}").as_bytes());
            }
            b.extend_from_slice(b"\r\n");
            b.extend_from_slice(&values[i]);
            b.extend_from_slice(b"\r\n");
            b
        };
        let (before, first_stats) = c.stats_raw("");
        let mut received = 0;
        for i in 0..values.len() {
            let want = [block(i, None), b"END\r\n".to_vec()].concat();
            c.roundtrip(format!("get big{i}\r\n").as_bytes(), &want);
            received += want.len();
        }
        // Several keys, a miss among them.
        let want = [
            block(2, None),
            block(0, None),
            block(1, None),
            b"END\r\n".to_vec(),
        ]
        .concat();
        c.roundtrip(b"get big2 nothing big0 big1\r\n", &want);
        received += want.len();
        // A small reply first in the same batch: the large one queues behind it.
        let want = [b"END\r\n".to_vec(), block(1, None), b"END\r\n".to_vec()].concat();
        c.roundtrip(b"get nothing\r\nget big1\r\n", &want);
        received += want.len();
        // With cas, and gat.
        c.send(b"gets big1\r\n");
        let head = format!("VALUE big1 1 {} ", values[1].len());
        let got = c.read_n(head.len()).unwrap();
        assert_eq!(got, head.as_bytes());
        let mut cas = Vec::new();
        loop {
            let b = c.read_n(1).unwrap();
            if b == b"\r" {
                break;
            }
            cas.extend_from_slice(&b);
        }
        let cas = String::from_utf8(cas).unwrap();
        let rest = [b"\n".to_vec(), values[1].clone(), b"\r\nEND\r\n".to_vec()].concat();
        assert!(c.read_n(rest.len()).unwrap() == rest, "gets big1");
        received += block(1, Some(&cas)).len() + 5;
        let want = [block(0, None), b"END\r\n".to_vec()].concat();
        c.roundtrip(b"gat 0 big0\r\n", &want);
        received += want.len();
        let (after, _) = c.stats_raw("");
        let written = stat_u64(&after, "bytes_written") - stat_u64(&before, "bytes_written");
        assert_eq!(written as usize, first_stats.len() + received);
    });
}

/// Large values stored whole, in pieces, and with more requests behind them in the same write
/// (text `set`, meta `ms`), on every receive path (see `start_each_receive_ring`): each reads
/// back byte for byte, and `bytes_read` counts every byte received.
#[test]
fn large_sets_arrive_whole_in_any_pieces() {
    for_each_config(|args| {
        for server in start_each_receive_ring(args) {
            large_sets_check(&server);
        }
    });
}

fn large_sets_check(server: &TestServer) {
    let mut c = server.connect();
    let (before, _) = c.stats_raw("");
    let mut received = 0;
    let block = |key: &str, flags: usize, v: &[u8]| {
        let mut b = format!("VALUE {key} {flags} {}\r\n", v.len()).into_bytes();
        b.extend_from_slice(v);
        b.extend_from_slice(b"\r\nEND\r\n");
        b
    };
    for (i, n) in [40_000usize, 300_000, 1_000_000 - 100]
        .into_iter()
        .enumerate()
    {
        let v: Vec<u8> = (0..n).map(|j| ((j * 13 + i * 7) % 251) as u8).collect();
        let with_value =
            |line: String, after: &[u8]| [line.as_bytes(), &v, b"\r\n", after].concat();
        // Whole, in one write.
        let req = with_value(format!("set w{i} {i} 0 {n}\r\n"), b"");
        c.roundtrip(&req, b"STORED\r\n");
        received += req.len();
        // In pieces: the command line and a little data, then odd-sized chunks.
        let req = with_value(format!("set p{i} {i} 0 {n}\r\n"), b"");
        c.send_in_pieces(&req, 100, 7_777);
        c.read_exact_reply(b"STORED\r\n");
        received += req.len();
        // Meta, with a small set and a get of the large value behind it in the same write.
        let after = format!("set s{i} 0 0 1\r\nx\r\nget m{i}\r\n");
        let req = with_value(format!("ms m{i} {n} F{i}\r\n"), after.as_bytes());
        let want = [&b"HD\r\nSTORED\r\n"[..], &block(&format!("m{i}"), i, &v)].concat();
        c.roundtrip(&req, &want);
        received += req.len();
        for key in [format!("w{i}"), format!("p{i}")] {
            let req = format!("get {key}\r\n");
            c.roundtrip(req.as_bytes(), &block(&key, i, &v));
            received += req.len();
        }
    }
    let (after, _) = c.stats_raw("");
    let read = stat_u64(&after, "bytes_read") - stat_u64(&before, "bytes_read");
    assert_eq!(read as usize, received + b"stats\r\n".len(), "bytes_read");
}

/// Item size accounting as memcached 1.6 does it: header 48 bytes + 8 for cas (unless -C) +
/// 4 for client flags (only when they are non-zero) + key + 1 + value + 2 must fit in `-I`
/// (default 1 MiB). So with flags 0 the largest value is `item_size_max - 59 - key_len` (with
/// cas) or `item_size_max - 51 - key_len` (with -C).
fn largest_value(item_size_max: usize, key_len: usize, cas: bool, flags: u32) -> usize {
    item_size_max - 51 - if cas { 8 } else { 0 } - if flags != 0 { 4 } else { 0 } - key_len
}

fn set_of_len(key: &[u8], flags: u32, len: usize) -> Vec<u8> {
    let mut req = format!("set {} {flags} 0 {len}\r\n", String::from_utf8_lossy(key)).into_bytes();
    req.resize(req.len() + len, b'v');
    req.extend_from_slice(b"\r\n");
    req
}

fn check_size_limit(c: &mut Client, item_size_max: usize, key: &[u8], cas: bool, flags: u32) {
    let max = largest_value(item_size_max, key.len(), cas, flags);
    eprintln!(
        "item_size_max {item_size_max} key_len {} cas {cas} flags {flags}: largest value {max}",
        key.len()
    );
    c.roundtrip(&set_of_len(key, flags, max), b"STORED\r\n");
    let mut expected =
        format!("VALUE {} {flags} {max}\r\n", String::from_utf8_lossy(key)).into_bytes();
    expected.resize(expected.len() + max, b'v');
    expected.extend_from_slice(b"\r\nEND\r\n");
    c.roundtrip(
        format!("get {}\r\n", String::from_utf8_lossy(key)).as_bytes(),
        &expected,
    );
    // One byte more is too large; the block is swallowed and the OLD item is gone.
    c.roundtrip(
        &set_of_len(key, flags, max + 1),
        b"SERVER_ERROR object too large for cache\r\n",
    );
    c.roundtrip(
        format!("get {}\r\n", String::from_utf8_lossy(key)).as_bytes(),
        b"END\r\n",
    );
}

#[test]
fn item_size_limit_default() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        check_size_limit(&mut c, 1 << 20, b"k", true, 0);
        check_size_limit(&mut c, 1 << 20, &[b'K'; 250], true, 0);
        // Non-zero client flags cost memcached 4 more bytes of item.
        check_size_limit(&mut c, 1 << 20, b"k", true, 3);
        c.roundtrip_pattern(b"version\r\n", b"VERSION {line}\r\n");
    });
}

#[test]
fn item_size_limit_follows_dash_i_and_dash_c() {
    let server = TestServer::start(&["-t", "2", "-I", "2m"]);
    check_size_limit(&mut server.connect(), 2 << 20, b"big", true, 0);
    let server = TestServer::start(&["-t", "2", "-I", "512k"]);
    check_size_limit(&mut server.connect(), 512 << 10, b"big", true, 0);
    let server = TestServer::start(&["-t", "2", "-C"]);
    check_size_limit(&mut server.connect(), 1 << 20, b"big", false, 0);
}

#[test]
fn oversized_set_is_swallowed_and_old_item_gone() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        c.roundtrip(b"set k 0 0 3\r\nold\r\n", b"STORED\r\n");
        // 2 MB data block: rejected, swallowed (its bytes are never parsed as commands).
        let mut req = b"set k 0 0 2000000\r\n".to_vec();
        for i in 0..2_000_000usize {
            // data that would be valid commands if it were parsed
            req.push(b"get k\r\n"[i % 7]);
        }
        req.extend_from_slice(b"\r\n");
        c.roundtrip(&req, b"SERVER_ERROR object too large for cache\r\n");
        c.roundtrip(b"get k\r\n", b"END\r\n");
        // noreply: silent, still swallowed, old item still removed
        c.roundtrip(b"set k 0 0 3\r\nold\r\n", b"STORED\r\n");
        let mut req = b"set k 0 0 2000000 noreply\r\n".to_vec();
        req.resize(req.len() + 2_000_000, b'x');
        req.extend_from_slice(b"\r\n");
        c.send(&req);
        c.roundtrip(b"get k\r\n", b"END\r\n");
        c.roundtrip(b"set k 0 0 3\r\nnew\r\n", b"STORED\r\n");
        c.roundtrip(b"get k\r\n", b"VALUE k 0 3\r\nnew\r\nEND\r\n");
        // Size histograms are off, as in memcached without `-o track_sizes`.
        c.roundtrip(b"stats sizes\r\n", b"STAT sizes_status disabled\r\nEND\r\n");
        c.roundtrip(b"stats extstore\r\n", b"END\r\n");
        // Both refusals count, noreply included; neither counts as a set.
        let s = c.stats_sub("");
        assert_eq!(stat_u64(&s, "store_too_large"), 2, "{s:?}");
        assert_eq!(stat_u64(&s, "store_no_memory"), 0);
        assert_eq!(stat_u64(&s, "cmd_set"), 3);
    });
}

#[test]
fn cas_disabled_with_dash_c() {
    let server = TestServer::start(&["-t", "2", "-C"]);
    let mut c = server.connect();
    c.roundtrip(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.roundtrip(b"gets k\r\n", b"VALUE k 0 1 0\r\nx\r\nEND\r\n");
    c.roundtrip(b"gats 0 k\r\n", b"VALUE k 0 1 0\r\nx\r\nEND\r\n");
}

/// memcached 1.6.18's `stats` fields in its order (those corecache reports; memcached mode
/// checks the list against memcached itself).
const STATS_ORDER: &[&str] = &[
    "pid",
    "uptime",
    "time",
    "version",
    "pointer_size",
    "rusage_user",
    "rusage_system",
    "max_connections",
    "curr_connections",
    "total_connections",
    "rejected_connections",
    "connection_structures",
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "cmd_meta",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "store_too_large",
    "store_no_memory",
    "bytes_read",
    "bytes_written",
    "limit_maxbytes",
    "accepting_conns",
    "listen_disabled_num",
    "time_in_listen_disabled_us",
    "threads",
    "conn_yields",
    "hash_power_level",
    "hash_bytes",
    "hash_is_expanding",
    "slabs_moved",
    "lru_crawler_starts",
    "bytes",
    "curr_items",
    "total_items",
    "expired_unfetched",
    "evicted_unfetched",
    "evictions",
    "reclaimed",
    "crawler_reclaimed",
    "crawler_items_checked",
];

#[test]
fn stats_fields_follow_memcached_order() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let (_, raw) = c.stats_raw("");
        let text = String::from_utf8_lossy(&raw);
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let positions: Vec<usize> = STATS_ORDER
            .iter()
            .map(|want| {
                names
                    .iter()
                    .position(|n| n == want)
                    .unwrap_or_else(|| panic!("stats lacks {want}: {names:?}"))
            })
            .collect();
        for (pair, names_pair) in positions.windows(2).zip(STATS_ORDER.windows(2)) {
            assert!(
                pair[0] < pair[1],
                "{} should come before {}: {names:?}",
                names_pair[0],
                names_pair[1]
            );
        }
    });
}

/// `cmd_meta` counts `me` commands (found or not) and nothing else.
#[test]
fn meta_debug_commands_are_counted() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        c.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
        let s0 = c.stats_sub("");
        c.send(b"me a\r\n");
        let line = c.read_line();
        assert!(line.starts_with(b"ME a exp=-1 la="), "{}", escape(&line));
        c.roundtrip(b"me missing\r\n", b"EN\r\n");
        c.roundtrip(b"me\r\n", b"CLIENT_ERROR bad command line format\r\n");
        c.roundtrip(b"mg a v\r\nmn\r\n", b"VA 1\r\nx\r\nMN\r\n");
        let s1 = c.stats_sub("");
        assert_eq!(stat_u64(&s1, "cmd_meta") - stat_u64(&s0, "cmd_meta"), 2);
    });
}

/// `conn_yields` counts a connection stopping after `-R` requests with more waiting, so that
/// others get their turn; every request is still answered, in order.
#[test]
fn connection_yields_after_reqs_per_event() {
    for_each_config(|args| {
        let mut args = args.to_vec();
        args.extend_from_slice(&["-R", "20"]);
        let server = TestServer::start(&args);
        let mut c = server.connect();
        let s0 = c.stats_sub("");
        const NOOPS: usize = 1000;
        c.send(&b"mn\r\n".repeat(NOOPS));
        c.read_exact_reply(&b"MN\r\n".repeat(NOOPS));
        let s1 = c.stats_sub("");
        let yields = stat_u64(&s1, "conn_yields") - stat_u64(&s0, "conn_yields");
        assert!(
            yields >= 1 && yields <= (NOOPS / 20) as u64,
            "{yields} yields for {NOOPS} pipelined requests"
        );
    });
}

#[test]
fn stats_fields_values_and_exact_deltas() {
    for_each_config(|args| {
        let threads: u64 = args[1].parse().unwrap();
        let mut full: Vec<&str> = args.to_vec();
        full.extend_from_slice(&["-m", "32", "-c", "500"]);
        let server = TestServer::start(&full);
        let mut c = server.connect();
        c.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
        let (s0, raw0) = c.stats_raw("");
        for name in STATS_ORDER {
            assert!(
                s0.contains_key(*name),
                "stats lacks {name}: {}",
                escape(&raw0)
            );
        }
        assert_eq!(stat_u64(&s0, "pid"), u64::from(server.pid()));
        assert_eq!(stat_u64(&s0, "pointer_size"), 64);
        assert_eq!(stat_u64(&s0, "threads"), threads);
        assert_eq!(stat_u64(&s0, "limit_maxbytes"), 32 << 20);
        assert_eq!(stat_u64(&s0, "max_connections"), 500);
        assert_eq!(stat_u64(&s0, "curr_items"), 1);
        assert!(stat_u64(&s0, "bytes") > 0);
        assert!(stat_u64(&s0, "curr_connections") >= 1);
        for name in ["rusage_user", "rusage_system"] {
            let v = &s0[name];
            let (secs, micros) = v.split_once('.').expect("rusage is secs.micros");
            assert!(
                secs.parse::<u64>().is_ok() && micros.len() == 6,
                "{name}={v}"
            );
        }
        let cmds: &[u8] = b"get a\r\nget zz\r\nget a zz b\r\nset q 0 0 1\r\n1\r\nincr q 1\r\n\
incr zz 1\r\ndecr q 1\r\ndecr zz 1\r\ndelete q\r\ndelete zz\r\ntouch a 0\r\ntouch zz 0\r\n\
gets a\r\ncas a 0 0 1 1\r\nx\r\ncas zz 0 0 1 1\r\nx\r\nflush_all\r\nget a\r\n";
        c.send(cmds);
        let mut got = Vec::new();
        // 18 replies; the gets line carries a server-specific cas token, so read line-wise.
        let mut cas_token = Vec::new();
        while !got.ends_with(b"OK\r\nEND\r\n") {
            let line = c.read_line();
            if line.starts_with(b"VALUE a 0 1 ") {
                cas_token = line[12..line.len() - 2].to_vec();
            }
            got.extend_from_slice(&line);
            assert!(got.len() < 1000, "runaway reply: {}", escape(&got));
        }
        let expected_prefix: &[u8] =
            b"VALUE a 0 1\r\nx\r\nEND\r\nEND\r\nVALUE a 0 1\r\nx\r\nEND\r\n\
STORED\r\n2\r\nNOT_FOUND\r\n1\r\nNOT_FOUND\r\nDELETED\r\nNOT_FOUND\r\nTOUCHED\r\nNOT_FOUND\r\n";
        assert_bytes_eq(&got[..expected_prefix.len()], expected_prefix, "replies");
        // `cas a ... 1` matches only if the token happens to be 1 (memcached: it is).
        let cas_reply: &[u8] = if cas_token == b"1" {
            b"STORED\r\n"
        } else {
            b"EXISTS\r\n"
        };
        let hit = cas_token == b"1";
        let mut tail = format!(
            "VALUE a 0 1 {}\r\nx\r\nEND\r\n",
            String::from_utf8_lossy(&cas_token)
        )
        .into_bytes();
        tail.extend_from_slice(cas_reply);
        tail.extend_from_slice(b"NOT_FOUND\r\nOK\r\nEND\r\n");
        assert_bytes_eq(&got[expected_prefix.len()..], &tail, "replies tail");

        let (s1, _) = c.stats_raw("");
        let delta = |name: &str| stat_u64(&s1, name) as i64 - stat_u64(&s0, name) as i64;
        let hit_n = i64::from(hit);
        let expect: &[(&str, i64)] = &[
            ("cmd_get", 7),
            ("get_hits", 3),
            ("get_misses", 4),
            ("get_flushed", 1),
            ("get_expired", 0),
            ("cmd_set", 3),
            ("cmd_flush", 1),
            ("cmd_touch", 2),
            ("touch_hits", 1),
            ("touch_misses", 1),
            ("incr_hits", 1),
            ("incr_misses", 1),
            ("decr_hits", 1),
            ("decr_misses", 1),
            ("delete_hits", 1),
            ("delete_misses", 1),
            ("cas_hits", hit_n),
            ("cas_badval", 1 - hit_n),
            ("cas_misses", 1),
            ("total_items", 1 + hit_n),
            ("curr_items", -1),
            ("evictions", 0),
            // (curr_connections is left out: the harness's readiness probe may still be
            // closing in memcached mode)
            ("total_connections", 0),
            // the second `stats\r\n` is read before it is answered
            ("bytes_read", cmds.len() as i64 + 7),
            // everything this connection received since, including the first stats reply
            ("bytes_written", (got.len() + raw0.len()) as i64),
        ];
        let mut wrong = Vec::new();
        for (name, d) in expect {
            if delta(name) != *d {
                wrong.push(format!("{name}: expected delta {d}, got {}", delta(name)));
            }
        }
        assert!(wrong.is_empty(), "stat deltas wrong:\n{}", wrong.join("\n"));
        assert_eq!(stat_u64(&s1, "curr_items"), 0);
        assert_eq!(stat_u64(&s1, "pid"), u64::from(server.pid()));
    });
}

/// `stats slabs` counts hits and storage commands per class as memcached does: each by the
/// class of the item it concerns, and every storage command by the class of its data, whatever
/// its outcome.
#[test]
fn stats_slabs_count_commands_per_class() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        c.roundtrip(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n");
        c.roundtrip(b"set b 0 0 1\r\nx\r\n", b"STORED\r\n");
        c.roundtrip(b"add b 0 0 1\r\nx\r\n", b"NOT_STORED\r\n");
        c.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\n1\r\nEND\r\n");
        c.roundtrip(b"get b nope\r\n", b"VALUE b 0 1\r\nx\r\nEND\r\n");
        c.roundtrip(b"incr a 5\r\n", b"6\r\n");
        c.roundtrip(b"decr a 1\r\n", b"5\r\n");
        c.roundtrip(b"touch b 100\r\n", b"TOUCHED\r\n");
        c.roundtrip(b"cas b 0 0 1 987654321\r\nz\r\n", b"EXISTS\r\n");
        c.send(b"gets b\r\n");
        let line = String::from_utf8(c.read_line()).unwrap();
        let cas = line.split_whitespace().nth(4).expect("cas").to_string();
        c.read_exact_reply(b"x\r\nEND\r\n");
        c.roundtrip(
            format!("cas b 0 0 1 {cas}\r\ny\r\n").as_bytes(),
            b"STORED\r\n",
        );
        c.roundtrip(b"delete a\r\n", b"DELETED\r\n");
        c.roundtrip(b"delete a\r\n", b"NOT_FOUND\r\n");
        let slabs = c.stats_sub("slabs");
        // Both keys' items share a class (same key, value and flag sizes).
        let class = slabs
            .keys()
            .find_map(|k| k.strip_suffix(":get_hits"))
            .expect("a class with get_hits")
            .to_string();
        let per = |name: &str| stat_u64(&slabs, &format!("{class}:{name}"));
        assert_eq!(per("get_hits"), 3, "{slabs:?}");
        assert_eq!(per("cmd_set"), 5, "set, set, add, cas, cas");
        assert_eq!(per("delete_hits"), 1);
        assert_eq!(per("incr_hits"), 1);
        assert_eq!(per("decr_hits"), 1);
        assert_eq!(per("cas_hits"), 1);
        assert_eq!(per("cas_badval"), 1);
        assert_eq!(per("touch_hits"), 1);
        assert!(per("free_chunks_end") <= per("free_chunks"));
        c.roundtrip(b"stats reset\r\n", b"RESET\r\n");
        let slabs = c.stats_sub("slabs");
        assert_eq!(stat_u64(&slabs, &format!("{class}:get_hits")), 0);
        assert_eq!(stat_u64(&slabs, &format!("{class}:cmd_set")), 0);
    });
}

#[test]
fn stats_subcommands_have_memcached_shapes() {
    for_each_config(|args| {
        let mut full: Vec<&str> = args.to_vec();
        full.extend_from_slice(&["-m", "16", "-c", "300"]);
        let server = TestServer::start(&full);
        let mut c = server.connect();
        // Empty cache: `stats items` is just END.
        c.roundtrip(b"stats items\r\n", b"END\r\n");
        c.roundtrip(b"set a 0 0 5\r\nhello\r\n", b"STORED\r\n");
        let mut req = b"set b 0 0 5000\r\n".to_vec();
        req.resize(req.len() + 5000, b'b');
        req.extend_from_slice(b"\r\n");
        c.roundtrip(&req, b"STORED\r\n");

        let settings = c.stats_sub("settings");
        let want = [
            ("maxbytes", (16u64 << 20).to_string()),
            ("maxconns", "300".to_string()),
            ("tcpport", server.addr().port().to_string()),
            ("num_threads", args[1].to_string()),
            ("item_size_max", (1u64 << 20).to_string()),
            ("growth_factor", "1.25".to_string()),
            ("cas_enabled", "yes".to_string()),
            ("evictions", "on".to_string()),
        ];
        for (k, v) in want {
            assert_eq!(
                settings.get(k).map(String::as_str),
                Some(v.as_str()),
                "stats settings {k}"
            );
        }

        // `stats items`: STAT items:<class>:<field> <value>
        let items = c.stats_sub("items");
        let mut numbers = 0;
        for (k, v) in &items {
            let parts: Vec<&str> = k.split(':').collect();
            assert!(
                parts.len() == 3 && parts[0] == "items" && parts[1].parse::<u32>().is_ok(),
                "stats items key shape: {k}"
            );
            assert!(v.parse::<i64>().is_ok(), "stats items {k}={v}");
            if parts[2] == "number" {
                numbers += v.parse::<u64>().unwrap();
            }
            for field in [
                "number",
                "age",
                "evicted",
                "evicted_time",
                "outofmemory",
                "crawler_items_checked",
            ] {
                let key = format!("items:{}:{field}", parts[1]);
                assert!(items.contains_key(&key), "stats items lacks {key}");
            }
        }
        assert_eq!(numbers, 2, "sum of items:*:number");

        // `stats slabs`: STAT <class>:<field> <value>, then active_slabs and total_malloced.
        let slabs = c.stats_sub("slabs");
        assert!(slabs.contains_key("active_slabs"), "{slabs:?}");
        assert!(slabs.contains_key("total_malloced"), "{slabs:?}");
        let mut classes = 0;
        for k in slabs.keys() {
            if k == "active_slabs" || k == "total_malloced" {
                continue;
            }
            let (class, field) = k.split_once(':').expect("slabs key is <class>:<field>");
            assert!(class.parse::<u32>().is_ok(), "stats slabs key shape: {k}");
            if field == "chunk_size" {
                classes += 1;
                for f in [
                    "chunks_per_page",
                    "total_pages",
                    "used_chunks",
                    "free_chunks",
                ] {
                    assert!(
                        slabs.contains_key(&format!("{class}:{f}")),
                        "lacks {class}:{f}"
                    );
                }
            }
        }
        // active_slabs counts the classes listed, each once (however many threads hold pages
        // of it).
        assert!(classes >= 1, "{slabs:?}");
        assert_eq!(stat_u64(&slabs, "active_slabs"), classes, "{slabs:?}");

        // `stats conns`: STAT <id>:<field> <value>, including this connection's addr.
        let conns = c.stats_sub("conns");
        let mut saw_state = false;
        for k in conns.keys() {
            let (id, field) = k.split_once(':').expect("conns key is <id>:<field>");
            assert!(id.parse::<u32>().is_ok(), "stats conns key shape: {k}");
            saw_state |= field == "state";
        }
        assert!(saw_state, "stats conns lacks a state field: {conns:?}");
        let local = c.stream().local_addr().unwrap().to_string();
        assert!(
            conns.values().any(|v| v.ends_with(&local)),
            "stats conns does not list this client {local}: {conns:?}"
        );

        // `stats reset` -> RESET, and the counters go back to 0.
        c.roundtrip(b"get a\r\n", b"VALUE a 0 5\r\nhello\r\nEND\r\n");
        c.roundtrip(b"stats reset\r\n", b"RESET\r\n");
        let s = c.stats_sub("");
        assert_eq!(stat_u64(&s, "cmd_get"), 0);
        assert_eq!(stat_u64(&s, "get_hits"), 0);
        assert_eq!(stat_u64(&s, "curr_items"), 2, "reset keeps curr_items");
        c.roundtrip(b"stats bogus\r\n", b"ERROR\r\n");
    });
}

#[cfg(feature = "test-hooks")]
mod time_hooks {
    use super::common::{for_each_config, skip_in_memcached_mode, TestServer};

    #[test]
    fn expiry_follows_debug_time() {
        if skip_in_memcached_mode("debug_time needs corecache's test-hooks") {
            return;
        }
        for_each_config(|args| {
            let server = TestServer::start(args);
            let mut c = server.connect();
            c.roundtrip(b"set e 0 2 1\r\ne\r\n", b"STORED\r\n");
            c.roundtrip(b"set keep 0 0 1\r\nk\r\n", b"STORED\r\n");
            c.roundtrip(b"debug_time advance 1\r\n", b"OK\r\n");
            c.roundtrip(b"get e\r\n", b"VALUE e 0 1\r\ne\r\nEND\r\n");
            c.roundtrip(b"debug_time advance 1\r\n", b"OK\r\n");
            c.roundtrip(b"get e keep\r\n", b"VALUE keep 0 1\r\nk\r\nEND\r\n");
            // touch / gat move the expiry
            c.roundtrip(b"set t 0 2 1\r\nt\r\n", b"STORED\r\n");
            c.roundtrip(b"touch t 10\r\n", b"TOUCHED\r\n");
            c.roundtrip(b"debug_time advance 5\r\n", b"OK\r\n");
            c.roundtrip(b"gat 3 t\r\n", b"VALUE t 0 1\r\nt\r\nEND\r\n");
            c.roundtrip(b"debug_time advance 3\r\n", b"OK\r\n");
            c.roundtrip(b"get t\r\n", b"END\r\n");
        });
    }

    #[test]
    fn delayed_flush_all() {
        if skip_in_memcached_mode("debug_time needs corecache's test-hooks") {
            return;
        }
        for_each_config(|args| {
            let server = TestServer::start(args);
            let mut c = server.connect();
            c.roundtrip(b"set a 0 0 1\r\na\r\n", b"STORED\r\n");
            c.roundtrip(b"flush_all 2\r\n", b"OK\r\n");
            c.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\na\r\nEND\r\n");
            c.roundtrip(b"debug_time advance 1\r\n", b"OK\r\n");
            // stored after the flush_all but before its deadline: flushed too (memcached
            // 1.6.18 does this; checked with real time, since debug_time is corecache's)
            c.roundtrip(b"set b 0 0 1\r\nb\r\n", b"STORED\r\n");
            c.roundtrip(
                b"get a b\r\n",
                b"VALUE a 0 1\r\na\r\nVALUE b 0 1\r\nb\r\nEND\r\n",
            );
            c.roundtrip(b"debug_time advance 1\r\n", b"OK\r\n");
            c.roundtrip(b"get a b\r\n", b"END\r\n");
            // items stored after the deadline live on
            c.roundtrip(b"set a 0 0 1\r\nb\r\n", b"STORED\r\n");
            c.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\nb\r\nEND\r\n");
        });
    }
}

/// With `-C` memcached flushes by time alone (its `oldest_live`; no cas to mark the cliff):
/// an item stored after an immediate `flush_all` within the same second is flushed too, and
/// one stored in a later second lives. memcached's own t/flush-all.t (test 27) checks the first
/// half: of 50 tries, one at least must miss.
#[test]
fn flush_without_cas_flushes_the_rest_of_its_second() {
    for_each_config(|args| {
        let mut args = args.to_vec();
        // No background reclaim: memcached's LRU maintainer and crawler (corecache's crawler)
        // may unlink the flushed item between the set and the get, which then counts a plain
        // miss instead of `get_flushed`.
        args.extend(["-C", "-o", "no_lru_crawler,no_lru_maintainer"]);
        let server = TestServer::start(&args);
        let mut c = server.connect();
        let mut missed = false;
        for _ in 0..50 {
            c.roundtrip(b"flush_all 0\r\n", b"OK\r\n");
            c.roundtrip(b"set foo 0 0 3\r\nnew\r\n", b"STORED\r\n");
            c.send(b"get foo\r\n");
            let line = c.read_line();
            if line == b"END\r\n" {
                missed = true;
                break;
            }
            // The clock moved on between the flush and the set.
            assert_bytes_eq(&line, b"VALUE foo 0 3\r\n", "get foo after flush_all 0");
            c.read_exact_reply(b"new\r\nEND\r\n");
        }
        assert!(missed, "a set in the flush's second was never flushed");
        let s = c.stats_sub("");
        assert!(stat_u64(&s, "get_flushed") >= 1, "get_flushed counts it");
        // A later second: the same set lives.
        let lives = common::wait_until(std::time::Duration::from_secs(5), || {
            c.roundtrip(b"set foo 0 0 3\r\nnew\r\n", b"STORED\r\n");
            c.send(b"get foo\r\n");
            let line = c.read_line();
            if line == b"END\r\n" {
                return false;
            }
            assert_bytes_eq(&line, b"VALUE foo 0 3\r\n", "get foo in a later second");
            c.read_exact_reply(b"new\r\nEND\r\n");
            true
        });
        assert!(lives, "a set in a later second was flushed");
    });
}

#[test]
fn memcached_mode_is_detected() {
    // Keeps the mode switch honest: in memcached mode the server really is memcached.
    let server = TestServer::start(&["-t", "1"]);
    assert_eq!(server.is_memcached(), memcached_mode());
    let mut c = server.connect();
    c.send(b"version\r\n");
    let line = c.read_line();
    assert!(line.starts_with(b"VERSION "), "{}", escape(&line));
    if memcached_mode() {
        assert!(line.starts_with(b"VERSION 1.6."), "{}", escape(&line));
    }
}

/// An immediate `flush_all` (text or with a negative or zero delay) takes one cas id, as in
/// memcached; a delayed one takes none. Checked on one key, so the shard is the same.
#[test]
fn immediate_flush_takes_one_cas_id() {
    fn cas_after_set(c: &mut Client) -> u64 {
        c.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
        c.send(b"mg a c\r\n");
        let line = c.read_line();
        let text = String::from_utf8(line).unwrap();
        text.trim_end()
            .strip_prefix("HD c")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected reply {text:?}"))
    }
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        // corecache's shards interleave their cas values (unique across the server), so one
        // key's values step by the shard count; memcached's single counter steps by one.
        let step = if memcached_mode() {
            1
        } else {
            stat_u64(&c.stats_sub(""), "threads")
        };
        let mut cas = cas_after_set(&mut c);
        for flush in [
            &b"flush_all\r\n"[..],
            b"flush_all 0\r\n",
            b"flush_all -1\r\n",
        ] {
            c.roundtrip(flush, b"OK\r\n");
            let next = cas_after_set(&mut c);
            assert_eq!(next, cas + 2 * step, "after {}", escape(flush));
            cas = next;
        }
        c.roundtrip(b"flush_all noreply\r\nmn\r\n", b"MN\r\n");
        let next = cas_after_set(&mut c);
        assert_eq!(next, cas + 2 * step, "after flush_all noreply");
        cas = next;
        c.roundtrip(b"flush_all 1000\r\n", b"OK\r\n");
        assert_eq!(
            cas_after_set(&mut c),
            cas + step,
            "a delayed flush takes no cas id"
        );
    });
}
