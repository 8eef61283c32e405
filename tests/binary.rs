//! Binary-protocol conformance against the real binary, byte for byte.
//!
//! Every expected response here was checked against memcached 1.6.18
//! (`CORECACHE_TEST_SERVER=memcached cargo test --all-features --test binary`). cas values are
//! the server's own (memcached has one global counter, corecache one per shard), so tests
//! capture them from responses instead of hard-coding numbers.

mod common;

use common::{
    escape, for_each_config, memcached_mode, start_each_receive_ring, stat_u64, Client, TestServer,
};
use corecache::protocol::binary::{opcode, request, response, Status};
use corecache::router::{key_hash, shard_of};

const OPAQUE: u32 = 0xdead_beef;

fn req(op: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    request(op, OPAQUE, 0, extras, key, value)
}

fn req_cas(op: u8, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    request(op, OPAQUE, cas, extras, key, value)
}

fn flags_exp(client_flags: u32, exptime: u32) -> Vec<u8> {
    let mut v = client_flags.to_be_bytes().to_vec();
    v.extend_from_slice(&exptime.to_be_bytes());
    v
}

fn arith(delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    let mut v = delta.to_be_bytes().to_vec();
    v.extend_from_slice(&initial.to_be_bytes());
    v.extend_from_slice(&exptime.to_be_bytes());
    v
}

fn ok(op: u8, cas: u64) -> Vec<u8> {
    let mut out = Vec::new();
    response(&mut out, op, Status::Success, OPAQUE, cas, &[], &[], &[]);
    out
}

fn err(op: u8, status: Status) -> Vec<u8> {
    let mut out = Vec::new();
    response(&mut out, op, status, OPAQUE, 0, &[], &[], status.message());
    out
}

fn hit(op: u8, cas: u64, client_flags: u32, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let flags = client_flags.to_be_bytes();
    response(
        &mut out,
        op,
        Status::Success,
        OPAQUE,
        cas,
        &flags,
        key,
        value,
    );
    out
}

/// One response as read.
struct Resp {
    opcode: u8,
    status: u16,
    opaque: u32,
    cas: u64,
    key_len: usize,
    extras_len: usize,
    body: Vec<u8>,
}

impl Resp {
    fn key(&self) -> &[u8] {
        &self.body[self.extras_len..self.extras_len + self.key_len]
    }
    fn value(&self) -> &[u8] {
        &self.body[self.extras_len + self.key_len..]
    }
}

#[track_caller]
fn read_resp(c: &mut Client) -> Resp {
    let h = c
        .read_n(24)
        .unwrap_or_else(|(got, e)| panic!("reading a header: {e}; got {}", escape(&got)));
    assert_eq!(h[0], 0x81, "response magic in {}", escape(&h));
    let body_len = u32::from_be_bytes(h[8..12].try_into().unwrap()) as usize;
    let body = c
        .read_n(body_len)
        .unwrap_or_else(|(got, e)| panic!("body: {e}: {}", escape(&got)));
    Resp {
        opcode: h[1],
        status: u16::from_be_bytes([h[6], h[7]]),
        opaque: u32::from_be_bytes(h[12..16].try_into().unwrap()),
        cas: u64::from_be_bytes(h[16..24].try_into().unwrap()),
        key_len: usize::from(u16::from_be_bytes([h[2], h[3]])),
        extras_len: usize::from(h[4]),
        body,
    }
}

/// Sends a store and returns the cas of its success response.
#[track_caller]
fn set(c: &mut Client, key: &[u8], client_flags: u32, value: &[u8]) -> u64 {
    c.send(&req(opcode::SET, &flags_exp(client_flags, 0), key, value));
    let r = read_resp(c);
    assert_eq!((r.opcode, r.status, r.opaque), (opcode::SET, 0, OPAQUE));
    assert!(r.body.is_empty());
    assert_ne!(r.cas, 0);
    r.cas
}

#[track_caller]
fn roundtrip(c: &mut Client, request: &[u8], expected: &[u8]) {
    c.send(request);
    c.read_exact_reply(expected);
}

/// The test's own binary connection (first byte 0x80 makes it binary).
fn connect(server: &TestServer) -> Client {
    server.connect()
}

#[test]
fn get_set_and_their_quiet_forms() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = connect(&server);
        let noop = req(opcode::NOOP, &[], &[], &[]);
        let noop_ok = ok(opcode::NOOP, 0);
        // misses: get says "Not found", getk carries the key and no message, quiet says nothing
        roundtrip(
            &mut c,
            &req(opcode::GET, &[], b"foo", &[]),
            &err(opcode::GET, Status::KeyNotFound),
        );
        let mut getk_miss = Vec::new();
        response(
            &mut getk_miss,
            opcode::GETK,
            Status::KeyNotFound,
            OPAQUE,
            0,
            &[],
            b"foo",
            &[],
        );
        roundtrip(&mut c, &req(opcode::GETK, &[], b"foo", &[]), &getk_miss);
        let mut quiet = req(opcode::GETQ, &[], b"foo", &[]);
        quiet.extend(req(opcode::GETKQ, &[], b"foo", &[]));
        quiet.extend(&noop);
        roundtrip(&mut c, &quiet, &noop_ok);
        // set, then every get form hits with flags in the extras
        let cas = set(&mut c, b"foo", 5, b"bar");
        roundtrip(
            &mut c,
            &req(opcode::GET, &[], b"foo", &[]),
            &hit(opcode::GET, cas, 5, b"", b"bar"),
        );
        roundtrip(
            &mut c,
            &req(opcode::GETK, &[], b"foo", &[]),
            &hit(opcode::GETK, cas, 5, b"foo", b"bar"),
        );
        let mut quiet = req(opcode::GETQ, &[], b"foo", &[]);
        quiet.extend(req(opcode::GETKQ, &[], b"foo", &[]));
        quiet.extend(&noop);
        let mut expected = hit(opcode::GETQ, cas, 5, b"", b"bar");
        expected.extend(hit(opcode::GETKQ, cas, 5, b"foo", b"bar"));
        expected.extend(&noop_ok);
        roundtrip(&mut c, &quiet, &expected);
        // add on a present key: "Data exists for key."; replace on a missing key: "Not found"
        roundtrip(
            &mut c,
            &req(opcode::ADD, &flags_exp(0, 0), b"foo", b"x"),
            &err(opcode::ADD, Status::KeyExists),
        );
        let mut q = req(opcode::ADDQ, &flags_exp(0, 0), b"foo", b"x");
        q.extend(&noop);
        let mut expected = err(opcode::ADDQ, Status::KeyExists);
        expected.extend(&noop_ok);
        roundtrip(&mut c, &q, &expected);
        roundtrip(
            &mut c,
            &req(opcode::REPLACE, &flags_exp(0, 0), b"nope", b"x"),
            &err(opcode::REPLACE, Status::KeyNotFound),
        );
        // quiet successes say nothing
        let mut q = req(opcode::SETQ, &flags_exp(0, 0), b"foo2", b"x");
        q.extend(req(opcode::APPENDQ, &[], b"foo2", b"yy"));
        q.extend(req(opcode::PREPENDQ, &[], b"foo2", b"pp"));
        q.extend(req(opcode::REPLACEQ, &flags_exp(7, 0), b"foo", b"baz"));
        q.extend(&noop);
        roundtrip(&mut c, &q, &noop_ok);
        // append/prepend: missing is "Not stored.", present keeps the flags
        roundtrip(
            &mut c,
            &req(opcode::APPEND, &[], b"zz", b"x"),
            &err(opcode::APPEND, Status::NotStored),
        );
        roundtrip(
            &mut c,
            &req(opcode::PREPEND, &[], b"zz", b"x"),
            &err(opcode::PREPEND, Status::NotStored),
        );
        c.send(&req(opcode::APPEND, &[], b"foo2", b"!"));
        let r = read_resp(&mut c);
        assert_eq!((r.opcode, r.status, r.body.len()), (opcode::APPEND, 0, 0));
        roundtrip(
            &mut c,
            &req(opcode::GET, &[], b"foo2", &[]),
            &hit(opcode::GET, r.cas, 0, b"", b"ppxyy!"),
        );
        c.send(&req(opcode::GET, &[], b"foo", &[]));
        let r = read_resp(&mut c);
        assert_eq!(
            (r.extras_len, &r.body[..]),
            (4, &b"\x00\x00\x00\x07baz"[..])
        );
        // touch: flags in the extras, no value; gat family like get
        let foo2_cas = {
            c.send(&req(opcode::TOUCH, &100u32.to_be_bytes(), b"foo2", &[]));
            let r = read_resp(&mut c);
            assert_eq!(
                (r.opcode, r.status, &r.body[..]),
                (opcode::TOUCH, 0, &[0u8, 0, 0, 0][..])
            );
            r.cas
        };
        roundtrip(
            &mut c,
            &req(opcode::TOUCH, &100u32.to_be_bytes(), b"zz", &[]),
            &err(opcode::TOUCH, Status::KeyNotFound),
        );
        let exp = 100u32.to_be_bytes();
        roundtrip(
            &mut c,
            &req(opcode::GAT, &exp, b"foo2", &[]),
            &hit(opcode::GAT, foo2_cas, 0, b"", b"ppxyy!"),
        );
        roundtrip(
            &mut c,
            &req(opcode::GATK, &exp, b"foo2", &[]),
            &hit(opcode::GATK, foo2_cas, 0, b"foo2", b"ppxyy!"),
        );
        roundtrip(
            &mut c,
            &req(opcode::GAT, &exp, b"zz", &[]),
            &err(opcode::GAT, Status::KeyNotFound),
        );
        let mut gatk_miss = Vec::new();
        response(
            &mut gatk_miss,
            opcode::GATK,
            Status::KeyNotFound,
            OPAQUE,
            0,
            &[],
            b"zz",
            &[],
        );
        roundtrip(&mut c, &req(opcode::GATK, &exp, b"zz", &[]), &gatk_miss);
        let mut q = req(opcode::GATQ, &exp, b"foo2", &[]);
        q.extend(req(opcode::GATQ, &exp, b"zz", &[]));
        q.extend(req(opcode::GATKQ, &exp, b"foo2", &[]));
        q.extend(req(opcode::GATKQ, &exp, b"zz", &[]));
        q.extend(&noop);
        let mut expected = hit(opcode::GATQ, foo2_cas, 0, b"", b"ppxyy!");
        expected.extend(hit(opcode::GATKQ, foo2_cas, 0, b"foo2", b"ppxyy!"));
        expected.extend(&noop_ok);
        roundtrip(&mut c, &q, &expected);
        // delete, deleteq: success says nothing when quiet, a miss is always answered
        roundtrip(
            &mut c,
            &req(opcode::DELETE, &[], b"foo", &[]),
            &ok(opcode::DELETE, 0),
        );
        roundtrip(
            &mut c,
            &req(opcode::DELETE, &[], b"foo", &[]),
            &err(opcode::DELETE, Status::KeyNotFound),
        );
        let mut q = req(opcode::DELETEQ, &[], b"foo2", &[]);
        q.extend(req(opcode::DELETEQ, &[], b"foo2", &[]));
        q.extend(&noop);
        let mut expected = err(opcode::DELETEQ, Status::KeyNotFound);
        expected.extend(&noop_ok);
        roundtrip(&mut c, &q, &expected);
        // opaque is echoed as sent
        let mut with_opaque = request(opcode::NOOP, 0x0102_0304, 0, &[], &[], &[]);
        with_opaque.extend(request(opcode::GET, 7, 0, &[], b"foo", &[]));
        let mut expected = Vec::new();
        response(
            &mut expected,
            opcode::NOOP,
            Status::Success,
            0x0102_0304,
            0,
            &[],
            &[],
            &[],
        );
        response(
            &mut expected,
            opcode::GET,
            Status::KeyNotFound,
            7,
            0,
            &[],
            &[],
            b"Not found",
        );
        roundtrip(&mut c, &with_opaque, &expected);
    });
}

/// Large binary sets arriving in pieces, a get behind each in the same write, on every receive
/// path (see `start_each_receive_ring`).
#[test]
fn large_sets_arrive_whole_in_pieces() {
    for_each_config(|args| {
        for server in start_each_receive_ring(args) {
            let mut c = connect(&server);
            for (i, n) in [300_000usize, 1_000_000].into_iter().enumerate() {
                let key = format!("big{i}");
                let value: Vec<u8> = (0..n).map(|j| ((j * 11 + i) % 251) as u8).collect();
                let mut bytes = req(opcode::SET, &flags_exp(7, 0), key.as_bytes(), &value);
                bytes.extend_from_slice(&req(opcode::GET, &[], key.as_bytes(), &[]));
                // The header alone, then odd-sized pieces.
                c.send_in_pieces(&bytes, 24, 9_999);
                let r = read_resp(&mut c);
                assert_eq!((r.opcode, r.status, r.opaque), (opcode::SET, 0, OPAQUE));
                c.read_exact_reply(&hit(opcode::GET, r.cas, 7, b"", &value));
            }
        }
    });
}

#[test]
fn version_matches_text_version() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut text = server.connect();
        text.send(b"version\r\n");
        let line = text.read_line();
        let version = line
            .strip_prefix(b"VERSION ")
            .unwrap()
            .strip_suffix(b"\r\n")
            .unwrap();
        let mut c = connect(&server);
        let mut expected = Vec::new();
        response(
            &mut expected,
            opcode::VERSION,
            Status::Success,
            OPAQUE,
            0,
            &[],
            &[],
            version,
        );
        roundtrip(&mut c, &req(opcode::VERSION, &[], &[], &[]), &expected);
        // the text connection is unaffected by the binary one
        text.send(b"set t 0 0 1\r\nx\r\n");
        assert_eq!(text.read_line(), b"STORED\r\n");
    });
}

#[test]
fn cas_is_checked_and_returned() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = connect(&server);
        let cas = set(&mut c, b"c", 0, b"1");
        let ext = flags_exp(0, 0);
        roundtrip(
            &mut c,
            &req_cas(opcode::SET, cas + 1000, &ext, b"c", b"2"),
            &err(opcode::SET, Status::KeyExists),
        );
        roundtrip(
            &mut c,
            &req_cas(opcode::SET, 5, &ext, b"missing", b"2"),
            &err(opcode::SET, Status::KeyNotFound),
        );
        roundtrip(
            &mut c,
            &req_cas(opcode::REPLACE, cas + 1000, &ext, b"c", b"2"),
            &err(opcode::REPLACE, Status::KeyExists),
        );
        roundtrip(
            &mut c,
            &req_cas(opcode::APPEND, cas + 1000, &[], b"c", b"2"),
            &err(opcode::APPEND, Status::KeyExists),
        );
        roundtrip(
            &mut c,
            &req_cas(opcode::DELETE, cas + 1000, &[], b"c", &[]),
            &err(opcode::DELETE, Status::KeyExists),
        );
        roundtrip(
            &mut c,
            &req_cas(opcode::INCREMENT, cas + 1000, &arith(1, 0, 0), b"c", &[]),
            &err(opcode::INCREMENT, Status::KeyExists),
        );
        // the right cas stores and returns a new cas, which the next get reports
        c.send(&req_cas(opcode::SET, cas, &ext, b"c", b"2"));
        let r = read_resp(&mut c);
        assert_eq!((r.status, r.body.len()), (0, 0));
        assert_ne!(r.cas, cas);
        let cas2 = r.cas;
        roundtrip(
            &mut c,
            &req(opcode::GET, &[], b"c", &[]),
            &hit(opcode::GET, cas2, 0, b"", b"2"),
        );
        roundtrip(
            &mut c,
            &req_cas(opcode::SET, cas, &ext, b"c", b"3"),
            &err(opcode::SET, Status::KeyExists),
        );
        roundtrip(
            &mut c,
            &req_cas(opcode::DELETE, cas2, &[], b"c", &[]),
            &ok(opcode::DELETE, 0),
        );
        roundtrip(
            &mut c,
            &req(opcode::GET, &[], b"c", &[]),
            &err(opcode::GET, Status::KeyNotFound),
        );
    });
}

#[test]
fn incr_decr_with_initial_value_and_no_create() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = connect(&server);
        // exptime 0xffffffff: absent key is Not found, nothing created
        roundtrip(
            &mut c,
            &req(opcode::INCREMENT, &arith(1, 10, 0xffff_ffff), b"n", &[]),
            &err(opcode::INCREMENT, Status::KeyNotFound),
        );
        roundtrip(
            &mut c,
            &req(opcode::GET, &[], b"n", &[]),
            &err(opcode::GET, Status::KeyNotFound),
        );
        // otherwise the initial value is stored and returned (delta not applied)
        c.send(&req(opcode::INCREMENT, &arith(1, 10, 0), b"n", &[]));
        let r = read_resp(&mut c);
        assert_eq!(
            (r.opcode, r.status, &r.body[..]),
            (opcode::INCREMENT, 0, &10u64.to_be_bytes()[..])
        );
        let created = r.cas;
        assert_ne!(created, 0);
        c.send(&req(opcode::INCREMENT, &arith(5, 10, 0), b"n", &[]));
        let r = read_resp(&mut c);
        assert_eq!(r.value(), 15u64.to_be_bytes());
        assert_ne!(r.cas, created);
        roundtrip(
            &mut c,
            &req(opcode::GET, &[], b"n", &[]),
            &hit(opcode::GET, r.cas, 0, b"", b"15"),
        );
        // decr floors at 0; exptime 0xffffffff on a present key just counts
        c.send(&req(
            opcode::DECREMENT,
            &arith(100, 0, 0xffff_ffff),
            b"n",
            &[],
        ));
        let r = read_resp(&mut c);
        assert_eq!(
            (r.opcode, r.value()),
            (opcode::DECREMENT, &0u64.to_be_bytes()[..])
        );
        // quiet: nothing on success
        let mut q = req(opcode::INCREMENTQ, &arith(100, 0, 0), b"n", &[]);
        q.extend(req(opcode::DECREMENTQ, &arith(1, 0, 0), b"n", &[]));
        q.extend(req(opcode::NOOP, &[], &[], &[]));
        roundtrip(&mut c, &q, &ok(opcode::NOOP, 0));
        c.send(&req(opcode::GET, &[], b"n", &[]));
        assert_eq!(read_resp(&mut c).value(), b"99 ");
        // decr with an initial value creates too
        c.send(&req(opcode::DECREMENT, &arith(5, 3, 0), b"d", &[]));
        let r = read_resp(&mut c);
        assert_eq!(r.value(), 3u64.to_be_bytes());
        // wrap at 2^64, non-numeric value
        set(&mut c, b"w", 0, b"18446744073709551615");
        c.send(&req(opcode::INCREMENT, &arith(2, 0, 0), b"w", &[]));
        assert_eq!(read_resp(&mut c).value(), 1u64.to_be_bytes());
        set(&mut c, b"s", 0, b"abc");
        roundtrip(
            &mut c,
            &req(opcode::INCREMENT, &arith(1, 0, 0), b"s", &[]),
            &err(opcode::INCREMENT, Status::NonNumeric),
        );
        let mut q = req(opcode::DECREMENTQ, &arith(1, 0, 0), b"s", &[]);
        q.extend(req(opcode::NOOP, &[], &[], &[]));
        let mut expected = err(opcode::DECREMENTQ, Status::NonNumeric);
        expected.extend(ok(opcode::NOOP, 0));
        roundtrip(&mut c, &q, &expected);
        // With a wrong cas: an empty value is non-numeric before the cas is compared; any
        // other value fails the cas first.
        set(&mut c, b"e", 0, b"");
        roundtrip(
            &mut c,
            &req_cas(opcode::INCREMENT, 12345, &arith(1, 0, 0), b"e", &[]),
            &err(opcode::INCREMENT, Status::NonNumeric),
        );
        roundtrip(
            &mut c,
            &req_cas(opcode::DECREMENT, 12345, &arith(1, 0, 0), b"s", &[]),
            &err(opcode::DECREMENT, Status::KeyExists),
        );
    });
}

/// Keys that land on shard 0 and shard 1 of a two-shard server, alternating.
fn keys_on_both_shards(count: usize) -> Vec<Vec<u8>> {
    let mut on = [Vec::new(), Vec::new()];
    for i in 0.. {
        let k = format!("key{i}").into_bytes();
        let s = usize::from(shard_of(key_hash(&k), 2).0);
        if on[s].len() < count / 2 {
            on[s].push(k);
        }
        if on[0].len() + on[1].len() == count {
            break;
        }
    }
    let [zero, one] = on;
    zero.into_iter()
        .zip(one)
        .flat_map(|(a, b)| [a, b])
        .collect()
}

#[test]
fn pipelined_quiet_gets_across_shards_stay_in_order() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = connect(&server);
        let keys = keys_on_both_shards(8);
        let mut cas = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            cas.push(set(&mut c, k, i as u32, k));
        }
        // getq/getkq of present and missing keys, a non-quiet get and error in the middle
        let mut batch = Vec::new();
        let mut expected = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let op = if i % 2 == 0 {
                opcode::GETQ
            } else {
                opcode::GETKQ
            };
            let key_in_reply: &[u8] = if op == opcode::GETKQ { k } else { b"" };
            batch.extend(request(op, i as u32, 0, &[], k, &[]));
            let mut r = Vec::new();
            response(
                &mut r,
                op,
                Status::Success,
                i as u32,
                cas[i],
                &(i as u32).to_be_bytes(),
                key_in_reply,
                k,
            );
            expected.extend(r);
            let mut missing = k.clone();
            missing.extend_from_slice(b"-missing");
            batch.extend(request(opcode::GETQ, 100 + i as u32, 0, &[], &missing, &[]));
            if i == 3 {
                batch.extend(req(opcode::DELETEQ, &[], &missing, &[]));
                expected.extend(err(opcode::DELETEQ, Status::KeyNotFound));
                batch.extend(req(opcode::GET, &[], k, &[]));
                expected.extend(hit(opcode::GET, cas[i], i as u32, b"", k));
            }
        }
        batch.extend(req(opcode::NOOP, &[], &[], &[]));
        expected.extend(ok(opcode::NOOP, 0));
        roundtrip(&mut c, &batch, &expected);
        // quiet sets across shards then a noop: only the noop answers, and all are stored
        let mut batch = Vec::new();
        for k in &keys {
            batch.extend(req(opcode::SETQ, &flags_exp(0, 0), k, b"v2"));
        }
        batch.extend(req(opcode::NOOP, &[], &[], &[]));
        roundtrip(&mut c, &batch, &ok(opcode::NOOP, 0));
        for k in &keys {
            c.send(&req(opcode::GETK, &[], k, &[]));
            let r = read_resp(&mut c);
            assert_eq!((r.status, r.key(), r.value()), (0, &k[..], &b"v2"[..]));
        }
    });
}

#[test]
fn too_large_values_are_refused_and_swallowed() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = connect(&server);
        set(&mut c, b"big", 0, b"small");
        let huge = vec![b'x'; 2 * 1024 * 1024];
        let mut q = req(opcode::SET, &flags_exp(0, 0), b"big", &huge);
        q.extend(req(opcode::NOOP, &[], &[], &[]));
        let mut expected = err(opcode::SET, Status::TooLarge);
        expected.extend(ok(opcode::NOOP, 0));
        roundtrip(&mut c, &q, &expected);
        // a refused set removes the old item
        roundtrip(
            &mut c,
            &req(opcode::GET, &[], b"big", &[]),
            &err(opcode::GET, Status::KeyNotFound),
        );
        // quiet forms still report the error; the limit counts like memcached's (-I 1m)
        let mut q = req(opcode::SETQ, &flags_exp(0, 0), b"a", &vec![b'x'; 1_048_517]);
        q.extend(req(
            opcode::ADDQ,
            &flags_exp(1, 0),
            b"a",
            &vec![b'x'; 1_048_513],
        ));
        q.extend(req(
            opcode::SETQ,
            &flags_exp(0, 0),
            b"a",
            &vec![b'y'; 1_048_516],
        ));
        q.extend(req(opcode::NOOP, &[], &[], &[]));
        let mut expected = err(opcode::SETQ, Status::TooLarge);
        expected.extend(err(opcode::ADDQ, Status::TooLarge));
        expected.extend(ok(opcode::NOOP, 0));
        roundtrip(&mut c, &q, &expected);
        c.send(&req(opcode::GET, &[], b"a", &[]));
        assert_eq!(read_resp(&mut c).value().len(), 1_048_516);
        // append past the limit is "Not stored."
        set(&mut c, b"ap", 0, &vec![b'x'; 1_000_000]);
        roundtrip(
            &mut c,
            &req(opcode::APPEND, &[], b"ap", &vec![b'y'; 100_000]),
            &err(opcode::APPEND, Status::NotStored),
        );
        // a too-large body is swallowed as it arrives, not buffered: send it in pieces
        let mut head = req(opcode::SET, &flags_exp(0, 0), b"k", &[]);
        let value_len: u32 = 3 * 1024 * 1024;
        head[8..12].copy_from_slice(&(9 + value_len).to_be_bytes());
        c.send(&head);
        let chunk = vec![b'z'; 256 * 1024];
        for _ in 0..12 {
            c.send(&chunk);
        }
        c.send(&req(opcode::NOOP, &[], &[], &[]));
        let mut expected = err(opcode::SET, Status::TooLarge);
        expected.extend(ok(opcode::NOOP, 0));
        c.read_exact_reply(&expected);
    });
}

#[test]
fn flush_noop_and_quit() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let keys = keys_on_both_shards(4);
        let mut c = connect(&server);
        for k in &keys {
            set(&mut c, k, 0, b"v");
        }
        roundtrip(
            &mut c,
            &req(opcode::FLUSH, &[], &[], &[]),
            &ok(opcode::FLUSH, 0),
        );
        for k in &keys {
            roundtrip(
                &mut c,
                &req(opcode::GET, &[], k, &[]),
                &err(opcode::GET, Status::KeyNotFound),
            );
        }
        for k in &keys {
            set(&mut c, k, 0, b"v");
        }
        let mut q = req(opcode::FLUSHQ, &0u32.to_be_bytes(), &[], &[]);
        q.extend(req(opcode::GETQ, &[], &keys[0], &[]));
        q.extend(req(opcode::NOOP, &[], &[], &[]));
        roundtrip(&mut c, &q, &ok(opcode::NOOP, 0));
        roundtrip(
            &mut c,
            &req(opcode::FLUSH, &0u32.to_be_bytes(), &[], &[]),
            &ok(opcode::FLUSH, 0),
        );
        // quit answers then closes; quitq closes silently
        c.send(&req(opcode::QUIT, &[], &[], &[]));
        assert_eq!(c.expect_closed(), ok(opcode::QUIT, 0));
        let mut c = connect(&server);
        c.send(&req(opcode::QUITQ, &[], &[], &[]));
        assert_eq!(c.expect_closed(), b"");
    });
}

#[test]
fn stats_over_binary_count_binary_commands() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let keys = keys_on_both_shards(2);
        let before = server.stats();
        let mut c = connect(&server);
        set(&mut c, &keys[0], 0, b"v");
        c.send(&req(opcode::GET, &[], &keys[0], &[]));
        read_resp(&mut c);
        c.send(&req(opcode::GET, &[], &keys[1], &[]));
        read_resp(&mut c);
        let mut q = req(opcode::GETQ, &[], &keys[1], &[]);
        q.extend(req(opcode::NOOP, &[], &[], &[]));
        roundtrip(&mut c, &q, &ok(opcode::NOOP, 0));
        let after = server.stats();
        for (name, delta) in [
            ("cmd_get", 3),
            ("get_hits", 1),
            ("get_misses", 2),
            ("cmd_set", 1),
        ] {
            assert_eq!(
                stat_u64(&after, name) - stat_u64(&before, name),
                delta,
                "{name}"
            );
        }
        // binary stat: one response per stat, key = name, then the empty terminator
        c.send(&req(opcode::STAT, &[], &[], &[]));
        let mut names = Vec::new();
        loop {
            let r = read_resp(&mut c);
            assert_eq!(
                (r.opcode, r.status, r.opaque, r.cas, r.extras_len),
                (opcode::STAT, 0, OPAQUE, 0, 0)
            );
            if r.key_len == 0 {
                assert!(r.body.is_empty());
                break;
            }
            let name = String::from_utf8(r.key().to_vec()).unwrap();
            if name == "cmd_get" {
                assert_eq!(
                    r.value(),
                    stat_u64(&after, "cmd_get").to_string().as_bytes()
                );
            }
            names.push(name);
        }
        for name in [
            "pid",
            "uptime",
            "cmd_get",
            "get_hits",
            "curr_items",
            "curr_connections",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "missing {name} in {names:?}"
            );
        }
        // groups: settings has lines, reset is the terminator alone, unknown is Not found
        c.send(&req(opcode::STAT, &[], b"settings", &[]));
        let first = read_resp(&mut c);
        assert_eq!((first.status, first.key()), (0, &b"maxbytes"[..]));
        while read_resp(&mut c).key_len != 0 {}
        roundtrip(
            &mut c,
            &req(opcode::STAT, &[], b"reset", &[]),
            &ok(opcode::STAT, 0),
        );
        roundtrip(
            &mut c,
            &req(opcode::STAT, &[], b"bogus", &[]),
            &err(opcode::STAT, Status::KeyNotFound),
        );
        roundtrip(
            &mut c,
            &req(opcode::STAT, &[], b"conns", &[]),
            &err(opcode::STAT, Status::KeyNotFound),
        );
        c.send(&req(opcode::STAT, &[], b"items", &[]));
        while read_resp(&mut c).key_len != 0 {}
        let reset = server.stats();
        assert_eq!(stat_u64(&reset, "cmd_get"), 0);
        // incr creating its initial value counts neither a set nor a miss (as memcached)
        for (key, exptime) in [(&b"ctr"[..], 0), (b"nope", 0xffff_ffff), (b"ctr", 0)] {
            c.send(&req(opcode::INCREMENT, &arith(1, 10, exptime), key, &[]));
            read_resp(&mut c);
        }
        let counted = server.stats();
        for (name, delta) in [("cmd_set", 0), ("incr_misses", 1), ("incr_hits", 1)] {
            assert_eq!(
                stat_u64(&counted, name) - stat_u64(&reset, name),
                delta,
                "{name}"
            );
        }
    });
}

/// `stat sizes_enable` / `sizes_disable` switch the size histogram and answer one status stat
/// with no terminator (as memcached's text replies to them lack `END`); `stat sizes` then
/// counts items by size.
#[test]
fn binary_sizes_switch_answers_without_a_terminator() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = connect(&server);
        let stat = |key: &[u8], value: &[u8]| {
            let mut out = Vec::new();
            response(
                &mut out,
                opcode::STAT,
                Status::Success,
                OPAQUE,
                0,
                &[],
                key,
                value,
            );
            out
        };
        let noop = req(opcode::NOOP, &[], &[], &[]);
        let mut enable = req(opcode::STAT, &[], b"sizes_enable", &[]);
        enable.extend_from_slice(&noop);
        let mut expected = stat(b"sizes_status", b"enabled");
        expected.extend(ok(opcode::NOOP, 0));
        roundtrip(&mut c, &enable, &expected);
        set(&mut c, b"sized", 0, b"value");
        c.send(&req(opcode::STAT, &[], b"sizes", &[]));
        // One item, in a 32-byte bucket (which one follows each server's item size:
        // corecache's 16-byte item header against memcached's 48).
        let first = read_resp(&mut c);
        assert_eq!((first.status, first.value()), (0, &b"1"[..]));
        let size: usize = std::str::from_utf8(first.key()).unwrap().parse().unwrap();
        assert!(size > 0 && size % 32 == 0, "{size}");
        assert_eq!(read_resp(&mut c).key_len, 0);
        let mut disable = req(opcode::STAT, &[], b"sizes_disable", &[]);
        disable.extend_from_slice(&noop);
        let mut expected = stat(b"sizes_status", b"disabled");
        expected.extend(ok(opcode::NOOP, 0));
        roundtrip(&mut c, &disable, &expected);
        let mut expected = stat(b"sizes_status", b"disabled");
        expected.extend(ok(opcode::STAT, 0));
        roundtrip(&mut c, &req(opcode::STAT, &[], b"sizes", &[]), &expected);
    });
}

/// Sends `bytes` on a fresh binary connection and expects `reply` and then a close.
#[track_caller]
fn expect_reply_then_close(server: &TestServer, bytes: &[u8], reply: &[u8], what: &str) {
    let mut c = connect(server);
    c.send(bytes);
    let got = c.expect_closed();
    assert_eq!(escape(&got), escape(reply), "{what}");
}

#[test]
fn malformed_frames_answer_or_close_like_memcached() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut keeper = connect(&server);
        let keys = keys_on_both_shards(2);
        for k in &keys {
            set(&mut keeper, k, 0, b"kept");
        }
        let noop = req(opcode::NOOP, &[], &[], &[]);
        let noop_ok = ok(opcode::NOOP, 0);
        // bad magic mid-stream: what came before is answered, then the connection closes
        let mut bad = noop.clone();
        bad.extend([0u8; 24]);
        expect_reply_then_close(&server, &bad, &noop_ok, "bad magic");
        // key longer than 250: Invalid arguments, close
        let long = vec![b'k'; 251];
        let mut q = req(opcode::GET, &[], &long, &[]);
        q.extend(&noop);
        expect_reply_then_close(
            &server,
            &q,
            &err(opcode::GET, Status::InvalidArguments),
            "key 251",
        );
        // extras (or key, or body) wrong for the opcode: Invalid arguments, close
        for (what, frame) in [
            ("get with extras", req(opcode::GET, b"abcd", b"foo", &[])),
            ("get without key", req(opcode::GET, &[], &[], &[])),
            ("set with 4 extras", req(opcode::SET, b"abcd", b"foo", b"v")),
            (
                "set without key",
                req(opcode::SET, &flags_exp(0, 0), &[], b"v"),
            ),
            (
                "delete with extras",
                req(opcode::DELETE, b"abcd", b"foo", &[]),
            ),
            (
                "incr with 8 extras",
                req(opcode::INCREMENT, &[b'x'; 8], b"n", &[]),
            ),
            (
                "flush with 8 extras",
                req(opcode::FLUSH, &[b'x'; 8], &[], &[]),
            ),
            ("flush with key", req(opcode::FLUSH, &[], b"k", &[])),
            ("touch without extras", req(opcode::TOUCH, &[], b"foo", &[])),
            (
                "append with extras",
                req(opcode::APPEND, &flags_exp(0, 0), b"foo", b"x"),
            ),
            ("stat with extras", req(opcode::STAT, b"abcd", &[], &[])),
            ("noop with body", req(opcode::NOOP, &[], &[], b"xx")),
            ("version with key", req(opcode::VERSION, &[], b"k", &[])),
            ("quit with body", req(opcode::QUIT, &[], &[], b"x")),
            (
                "sasl list with body",
                req(opcode::SASL_LIST_MECHS, &[], &[], b"xy"),
            ),
            (
                "sasl auth without key",
                req(opcode::SASL_AUTH, &[], &[], b"xy"),
            ),
        ] {
            let op = frame[1];
            let mut q = frame;
            q.extend(&noop);
            expect_reply_then_close(&server, &q, &err(op, Status::InvalidArguments), what);
        }
        // body shorter than key (+ extras): Unknown command, close
        let mut short = req(opcode::GET, &[], b"foo", &[]);
        short[8..12].copy_from_slice(&1u32.to_be_bytes());
        short.extend(&noop);
        expect_reply_then_close(
            &server,
            &short,
            &err(opcode::GET, Status::UnknownCommand),
            "body < key",
        );
        // unknown opcodes: Unknown command, body swallowed, connection usable
        let mut c = connect(&server);
        for op in [0x40u8, 0x25, 0xff, 0x1b] {
            let mut q = req(op, &[], &[], b"hello");
            q.extend(&noop);
            let mut expected = err(op, Status::UnknownCommand);
            expected.extend(&noop_ok);
            roundtrip(&mut c, &q, &expected);
        }
        // SASL is off: a well-formed SASL frame is an unknown command, its body dropped
        for frame in [
            req(opcode::SASL_LIST_MECHS, &[], &[], &[]),
            req(opcode::SASL_AUTH, &[], b"PLAIN", b"\0a\0b"),
            req(opcode::SASL_STEP, &[], b"PLAIN", b"\0a\0b"),
        ] {
            let op = frame[1];
            let mut q = frame;
            q.extend(&noop);
            let mut expected = err(op, Status::UnknownCommand);
            expected.extend(&noop_ok);
            roundtrip(&mut c, &q, &expected);
        }
        // memcached drops extras and key twice over for an unknown opcode: 24 + 2*(2+3) + 4
        let mut q = req(0x40, b"ab", b"kkk", b"vvvv");
        q.extend(b"PPPPP");
        q.extend(&noop);
        let mut expected = err(0x40, Status::UnknownCommand);
        expected.extend(&noop_ok);
        roundtrip(&mut c, &q, &expected);
        // a truncated header waits; completing it gets the answer
        let get = req(opcode::GET, &[], &keys[1], &[]);
        for cut in [1, 10, 23, 24, 26] {
            c.send(&get[..cut]);
            std::thread::sleep(std::time::Duration::from_millis(20));
            c.send(&get[cut..]);
            let r = read_resp(&mut c);
            assert_eq!((r.status, r.value()), (0, &b"kept"[..]), "cut at {cut}");
        }
        // the peer half-closes after a partial frame (holding a 0x0a byte): answered, closed
        let mut half = connect(&server);
        let mut q = noop.clone();
        q.extend(&noop[..12]);
        half.send(&q);
        half.stream().shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(
            escape(&half.expect_closed()),
            escape(&noop_ok),
            "half-closed"
        );
        // nothing stored was lost, on any shard
        for k in &keys {
            keeper.send(&req(opcode::GET, &[], k, &[]));
            assert_eq!(read_resp(&mut keeper).value(), b"kept");
        }
        assert!(!memcached_mode() || server.is_memcached());
    });
}
