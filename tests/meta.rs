//! Meta protocol (`mg`, `ms`, `md`, `ma`, `mn`, `me`) conformance against the real binary, byte
//! for byte.
//!
//! Every expected reply here was checked against memcached 1.6.18
//! (`CORECACHE_TEST_SERVER=memcached cargo test --all-features --test meta`).

mod common;

use common::{escape, for_each_config, memcached_mode, stat_u64, Client, TestServer};
use corecache::router::{key_hash, shard_of};

/// Steps run in order on one connection: (request, expected reply). Placeholders as in
/// `Client::roundtrip_pattern`: `{cas:NAME}` captures digits (cas values and ttls, which depend
/// on the server's counters and clock), `{badcas:NAME}` is a different number, `{line}` is the
/// rest of a line.
const TABLE: &[(&[u8], &[u8])] = &[
    // --- mg basics: miss, quiet miss, hit without flags, value ---
    (b"mg foo\r\n", b"EN\r\n"),
    (b"mg foo v\r\n", b"EN\r\n"),
    (b"mg foo q v\r\n", b""),
    (b"mn\r\n", b"MN\r\n"),
    (b"mg foo k O123 v\r\n", b"EN kfoo O123\r\n"),
    (b"ms foo 2\r\nhi\r\n", b"HD\r\n"),
    (b"mg foo\r\n", b"HD\r\n"),
    (b"mg foo v\r\n", b"VA 2\r\nhi\r\n"),
    // every return flag, in request order; h1: read before
    (
        b"mg foo s v c f t k O123 h l\r\n",
        b"VA 2 s2 c{cas:foo1} f0 t-1 kfoo O123 h1 l{cas:l1}\r\nhi\r\n",
    ),
    // q hides only EN: a quiet hit still answers
    (b"mg foo k O123 q\r\n", b"HD kfoo O123\r\n"),
    // a flag is its first byte; the rest of the token is ignored
    (b"mg foo vv\r\n", b"VA 2\r\nhi\r\n"),
    (b"mg foo v\tk\r\n", b"VA 2\r\nhi\r\n"),
    (b"mg foo   v   s\r\n", b"VA 2 s2\r\nhi\r\n"),
    (b"mg foo P L u\r\n", b"HD\r\n"),
    // u: no LRU bump, so the item is not marked fetched
    (b"ms uu 1\r\nx\r\n", b"HD\r\n"),
    (b"mg uu u h v\r\n", b"VA 1 h0\r\nx\r\n"),
    (b"mg uu h\r\n", b"HD h0\r\n"),
    (b"mg uu h\r\n", b"HD h1\r\n"),
    (b"mg uu u\r\n", b"HD\r\n"),
    (b"ms uu 1\r\nx\r\n", b"HD\r\n"),
    (b"mg uu u\r\n", b"HD\r\n"),
    (b"mg uu h\r\n", b"HD h0\r\n"),
    (b"mg foo O\r\n", b"HD O\r\n"),
    // --- ms: flags, ttl, cas return, fresh item is unfetched ---
    (b"ms foo 2 T100 F5 c\r\nhi\r\n", b"HD c{cas:foo2}\r\n"),
    (
        b"mg foo s v c f k h\r\n",
        b"VA 2 s2 c{cas:foo2} f5 kfoo h0\r\nhi\r\n",
    ),
    (b"mg foo t\r\n", b"HD t{cas:ttl1}\r\n"),
    // T applies in order: t before T shows the old ttl
    (b"mg foo t T0\r\n", b"HD t{cas:ttl2}\r\n"),
    (b"mg foo t\r\n", b"HD t-1\r\n"),
    (b"mg foo t T50 t\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
    // modes
    (b"ms foo 2 MS q\r\nhi\r\n", b""),
    (b"ms foo 2 MA\r\nXY\r\n", b"HD\r\n"),
    (b"ms foo 2 MP\r\nAB\r\n", b"HD\r\n"),
    (b"mg foo v\r\n", b"VA 6\r\nABhiXY\r\n"),
    (b"ms foo 2 ME\r\nAB\r\n", b"NS\r\n"),
    (b"ms bar 2 ME\r\nAB\r\n", b"HD\r\n"),
    (b"ms baz 2 MR\r\nAB\r\n", b"NS\r\n"),
    (b"ms baz 2 MA\r\nAB\r\n", b"NS\r\n"),
    (b"ms baz 2 MP q\r\nAB\r\n", b"NS\r\n"),
    (b"ms bar 2 MR k O7\r\nCD\r\n", b"HD kbar O7\r\n"),
    // compare-and-swap; q does not hide EX or NF; c reads 0 when nothing was stored
    (b"mg foo c\r\n", b"HD c{cas:foo3}\r\n"),
    (b"ms foo 2 C{badcas:foo3} c\r\nZZ\r\n", b"EX c0\r\n"),
    (b"ms foo 2 C{badcas:foo3} q\r\nZZ\r\n", b"EX\r\n"),
    (b"ms nope 2 C1\r\nZZ\r\n", b"NF\r\n"),
    (b"ms foo 2 C{cas:foo3} c\r\nZZ\r\n", b"HD c{cas:foo4}\r\n"),
    (b"ms foo 2 MA C{badcas:foo4}\r\nZZ\r\n", b"EX\r\n"),
    (b"ms foo 2 MA C{cas:foo4}\r\n!!\r\n", b"HD\r\n"),
    (b"mg foo v\r\n", b"VA 4\r\nZZ!!\r\n"),
    // s and h are accepted and ignored by ms
    (b"ms foo 2 s h v\r\nhi\r\n", b"HD\r\n"),
    // --- ms errors: after a flag error the data block is swallowed ---
    (b"ms foo 2 S\r\nZZ\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    (
        b"ms foo 2 E77 c\r\nZZ\r\n",
        b"CLIENT_ERROR invalid flag\r\n",
    ),
    (
        b"ms foo 2 Ma\r\nXY\r\n",
        b"CLIENT_ERROR invalid mode for ms M token\r\n",
    ),
    (
        b"ms foo 2 M\r\nhi\r\n",
        b"CLIENT_ERROR incorrect length for M token\r\n",
    ),
    (
        b"ms foo 2 MSX\r\nhi\r\n",
        b"CLIENT_ERROR incorrect length for M token\r\n",
    ),
    (
        b"ms foo 2 F-1\r\nZZ\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    ),
    (
        b"ms foo 2 Fabc\r\nZZ\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    ),
    (
        b"ms foo 2 Tabc\r\nZZ\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    ),
    (
        b"ms foo 2 C-1\r\nZZ\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    ),
    (
        b"ms foo 2 c c\r\nZZ\r\n",
        b"CLIENT_ERROR duplicate flag\r\n",
    ),
    (
        b"ms foo 2 O1 O2\r\nZZ\r\n",
        b"CLIENT_ERROR duplicate flag\r\n",
    ),
    (
        b"ms foo 2 k b\r\nZZ\r\n",
        b"CLIENT_ERROR error decoding key\r\n",
    ),
    // ...but not after a bad key or length: the block is then a command
    (
        b"ms foo x\r\nZZ\r\n",
        b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
    ),
    (b"ms foo\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (
        b"ms foo -1\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    ),
    (
        b"ms foo 2\r\nZZZ\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    ),
    (
        b"ms foo 2 q\r\nZZZ\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    ),
    (
        b"ms foo 2 P P P P P P P P P P P P P P P P P\r\nhi\r\n",
        b"CLIENT_ERROR options flags too long\r\nERROR\r\n",
    ),
    (
        b"ms foo 2 P P P P P P P P P P P P P P P P\r\nhi\r\n",
        b"CLIENT_ERROR duplicate flag\r\n",
    ),
    // --- mg errors ---
    (b"mg\r\n", b"ERROR\r\n"),
    (b"MG foo\r\n", b"ERROR\r\n"),
    (b"mg foo b\r\n", b"CLIENT_ERROR error decoding key\r\n"),
    (b"mg foo E5\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    (b"mg foo Q\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    (b"mg foo zz\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    (b"mg foo v v\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
    (b"mg foo c c\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
    (
        b"mg foo T\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    ),
    (
        b"mg foo Tx\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    ),
    (
        b"mg foo N\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    ),
    (
        b"mg foo R\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    ),
    (
        b"mg foo Oabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\r\n",
        b"CLIENT_ERROR opaque token too long\r\n",
    ),
    (
        b"mg foo P P P P P P P P P P P P P P P P P\r\n",
        b"CLIENT_ERROR duplicate flag\r\n",
    ),
    (
        b"mg foo P P P P P P P P P P P P P P P P P P\r\n",
        b"CLIENT_ERROR options flags are too long\r\n",
    ),
    // --- md ---
    (b"ms del 2 T100\r\nhi\r\n", b"HD\r\n"),
    (b"md del q\r\n", b""),
    (b"md del\r\n", b"NF\r\n"),
    // q does not hide NF
    (b"md del q\r\n", b"NF\r\n"),
    (b"md del k O5\r\n", b"NF kdel O5\r\n"),
    (b"ms del 2\r\nhi\r\n", b"HD\r\n"),
    (b"md del k O5 C1\r\n", b"EX kdel O5\r\n"),
    (b"mg del c\r\n", b"HD c{cas:del1}\r\n"),
    (b"md del C{cas:del1}\r\n", b"HD\r\n"),
    (b"md\r\n", b"ERROR\r\n"),
    (
        b"md del x\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    (
        b"md del E1\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    (
        b"md del q q\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    (
        b"md del C\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    (
        b"md del Cx\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    (b"md del Ix\r\n", b"NF\r\n"),
    (
        b"md del P P P P P P P P P P P P P P P P P P\r\n",
        b"CLIENT_ERROR options flags too long\r\n",
    ),
    // --- ma ---
    (b"ma cnt\r\n", b"NF\r\n"),
    (b"ma cnt q\r\n", b"NF\r\n"),
    (b"ma cnt k O1\r\n", b"NF kcnt O1\r\n"),
    (b"ma cnt N0\r\n", b"HD\r\n"),
    (b"ma cnt v\r\n", b"VA 1\r\n1\r\n"),
    // ma and mg find a long opaque only after doing the work
    (
        b"ma cnt Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        b"CLIENT_ERROR opaque token too long\r\n",
    ),
    (b"mg cnt v h\r\n", b"VA 1 h0\r\n2\r\n"),
    (
        b"mg cnt s Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        b"CLIENT_ERROR opaque token too long\r\n",
    ),
    (
        b"md cnt Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        b"CLIENT_ERROR opaque token too long\r\n",
    ),
    (b"mg cnt v\r\n", b"VA 1\r\n2\r\n"),
    (
        b"ma cnt2 N0 J10 v t c\r\n",
        b"VA 2 t-1 c{cas:cnt1}\r\n10\r\n",
    ),
    (b"ma cnt2 D5 v t c\r\n", b"VA 2 t-1 c{cas:cnt2}\r\n15\r\n"),
    (b"ma cnt2 MD D100 v\r\n", b"VA 1\r\n0\r\n"),
    (b"ma cnt2 M- v\r\n", b"VA 1\r\n0\r\n"),
    (b"ma cnt2 M+ D7 v\r\n", b"VA 1\r\n7\r\n"),
    (b"ma cnt2 MI v k O3\r\n", b"VA 1 kcnt2 O3\r\n8\r\n"),
    // q hides a successful ma
    (b"ma cnt2 q\r\n", b""),
    (b"ma cnt2 q v\r\n", b""),
    (b"mg cnt2 v\r\n", b"VA 2\r\n10\r\n"),
    (b"ma cnt2 C1 v\r\n", b"EX\r\n"),
    (b"mg cnt2 c\r\n", b"HD c{cas:cnt3}\r\n"),
    (b"ma cnt2 C{cas:cnt3} v\r\n", b"VA 2\r\n11\r\n"),
    (b"ma cnt2 f s\r\n", b"HD\r\n"),
    (b"ma cnt2 N-1\r\n", b"HD\r\n"),
    (b"ma cnt3 N30 J99 T40 t v\r\n", b"VA 2 t40\r\n99\r\n"),
    // T applies to the item incr returns, which is the old one when "99" grows to "100":
    // the new ttl is lost (memcached 1.6.18)
    (b"ma cnt3 T0 t v\r\n", b"VA 3 t-1\r\n100\r\n"),
    (b"ma cnt3 t v\r\n", b"VA 3 t{cas:ttl3}\r\n101\r\n"),
    (b"ma cnt3 T0 t v\r\n", b"VA 3 t-1\r\n102\r\n"),
    (b"ma cnt3 t v\r\n", b"VA 3 t-1\r\n103\r\n"),
    (b"ms str 2\r\nab\r\n", b"HD\r\n"),
    (
        b"ma str v\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    (
        b"ma str Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    (b"ms big 20\r\n18446744073709551615\r\n", b"HD\r\n"),
    (b"ma big v\r\n", b"VA 1\r\n0\r\n"),
    (b"mg big v\r\n", b"VA 20\r\n0                   \r\n"),
    (
        b"ma cnt2 MX v\r\n",
        b"CLIENT_ERROR invalid mode for ma M token\r\n",
    ),
    (
        b"ma cnt2 Dabc v\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    (
        b"ma cnt2 D-1 v\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    (
        b"ma cnt2 D18446744073709551616 v\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    (
        b"ma cnt2 Jx\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    (
        b"ma cnt2 E5\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    // --- base64 keys ---
    // "cnt2" is valid base64 too: it names a different key
    (b"ma cnt2 b\r\n", b"NF\r\n"),
    (b"ms Y250Mg== 2 b\r\n12\r\n", b"HD\r\n"),
    (b"ma Y250Mg== b v k\r\n", b"VA 2 kY250Mg== b\r\n13\r\n"),
    (b"mg Zm9v b k v\r\n", b"VA 2 kfoo\r\nhi\r\n"),
    (b"ms Zm9vYg== 2 b k O9\r\nhi\r\n", b"HD kZm9vYg== b O9\r\n"),
    // an item stored with b echoes its key in base64, however it is asked for
    (b"mg Zm9vYg== b k v\r\n", b"VA 2 kZm9vYg== b\r\nhi\r\n"),
    (b"mg foob k s\r\n", b"HD kZm9vYg== b s2\r\n"),
    (b"md Zm9vYg== b k q\r\n", b""),
    (b"md Zm9vYg== b k\r\n", b"NF kZm9vYg== b\r\n"),
    (b"mg Zm9vYg== b k\r\n", b"EN kZm9vYg== b\r\n"),
    // --- me ---
    (b"me nope\r\n", b"EN\r\n"),
    (b"me\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms dbg 2 F5\r\nhi\r\n", b"HD\r\n"),
    (
        b"me dbg\r\n",
        b"ME dbg exp=-1 la={cas:la1} cas={cas:dbg1} fetch=no cls=1 size=68\r\n",
    ),
    (
        b"me ZGJn b\r\n",
        b"ME dbg exp=-1 la={cas:la2} cas={cas:dbg1} fetch=no cls=1 size=68\r\n",
    ),
    (
        b"me dbg bar\r\n",
        b"ME dbg exp=-1 la={cas:la3} cas={cas:dbg1} fetch=no cls=1 size=68\r\n",
    ),
    (b"mn extra\r\n", b"MN\r\n"),
    // --- vivify (N) and recache (R) win tokens ---
    (b"mg nv v c N30 t\r\n", b"VA 0 c{cas:nv} t30 W\r\n\r\n"),
    (
        b"mg nv v c N30 t\r\n",
        b"VA 0 c{cas:nv} t{cas:nvt} Z\r\n\r\n",
    ),
    (b"mg nv s c\r\n", b"HD s0 c{cas:nv} Z\r\n"),
    (b"ms nv 2 C{badcas:nv}\r\nab\r\n", b"EX\r\n"),
    // t before N reads the vivified item before N gives it a ttl
    (b"mg nv2 c t N30\r\n", b"HD c{cas:nv2} t-1 W\r\n"),
    (b"mg nv2 v q k\r\n", b"VA 0 knv2 Z\r\n\r\n"),
    (b"ms nv2 2 C{cas:nv2}\r\nok\r\n", b"HD\r\n"),
    (b"mg nv2 v\r\n", b"VA 2\r\nok\r\n"),
    (b"ms rc 2 T100\r\nhi\r\n", b"HD\r\n"),
    (b"mg rc v R30\r\n", b"VA 2\r\nhi\r\n"),
    (b"mg rc v R200\r\n", b"VA 2 W\r\nhi\r\n"),
    (b"mg rc v R200\r\n", b"VA 2 Z\r\nhi\r\n"),
    (b"mg rc R200 q\r\n", b"HD Z\r\n"),
];

#[test]
fn conformance_table() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        for (i, (req, expected)) in TABLE.iter().enumerate() {
            eprintln!("step {i}: {}", escape(req));
            c.roundtrip_pattern(req, expected);
        }
    });
}

/// The first key `prefix<n>` that shard `shard` of `shard_count` owns.
fn key_on(shard: u16, shard_count: u16, prefix: &str) -> String {
    (0..10_000)
        .map(|n| format!("{prefix}{n}"))
        .find(|k| shard_of(key_hash(k.as_bytes()), shard_count).0 == shard)
        .expect("some key lands on every shard")
}

fn base64(input: &[u8]) -> String {
    let mut out = Vec::new();
    corecache::protocol::meta::base64_encode(&mut out, input);
    String::from_utf8(out).unwrap()
}

#[test]
fn quiet_pipeline_across_shards_ends_with_mn() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let (a, b) = (key_on(0, 2, "qa"), key_on(1, 2, "qb"));
        let mut pipeline = String::new();
        for key in [&a, &b] {
            pipeline.push_str(&format!("mg {key} v q k O1\r\n"));
            pipeline.push_str(&format!("ms {key} 1 q O2\r\n{}\r\n", &key[..1]));
        }
        for key in [&a, &b, &a] {
            pipeline.push_str(&format!("mg {key} v q k O3\r\n"));
            pipeline.push_str(&format!("md {key}x q\r\n"));
        }
        pipeline.push_str(&format!("md {b} q\r\nmg {b} s q\r\nma {a} q\r\nmn\r\n"));
        c.send(pipeline.as_bytes());
        let got = read_until_mn(&mut c);
        let want = format!(
            "VA 1 k{a} O3\r\nq\r\nNF\r\nVA 1 k{b} O3\r\nq\r\nNF\r\nVA 1 k{a} O3\r\nq\r\nNF\r\n\
             CLIENT_ERROR cannot increment or decrement non-numeric value\r\nMN\r\n"
        );
        common::assert_bytes_eq(&got, want.as_bytes(), "quiet pipeline");
    });
}

fn read_until_mn(c: &mut Client) -> Vec<u8> {
    let mut got = Vec::new();
    while !got.ends_with(b"MN\r\n") {
        let line = c.read_line();
        assert!(!line.is_empty(), "connection closed: {}", escape(&got));
        got.extend_from_slice(&line);
    }
    got
}

#[test]
fn base64_keys_route_by_their_decoded_bytes() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        for shard in 0..2 {
            let key = key_on(shard, 2, "b64-");
            let encoded = base64(key.as_bytes());
            c.roundtrip(
                format!("ms {encoded} 2 b T0\r\nhi\r\n").as_bytes(),
                b"HD\r\n",
            );
            // the plain key finds the item: it was hashed decoded
            c.roundtrip(
                format!("mg {key} v k\r\n").as_bytes(),
                format!("VA 2 k{encoded} b\r\nhi\r\n").as_bytes(),
            );
            c.roundtrip(format!("md {key}\r\n").as_bytes(), b"HD\r\n");
            c.roundtrip(format!("mg {encoded} b v\r\n").as_bytes(), b"EN\r\n");
        }
        // binary bytes in a key: space, NUL and newline are fine once decoded
        let binary = base64(b"a b\0c\nd");
        c.roundtrip(format!("ms {binary} 1 b\r\nx\r\n").as_bytes(), b"HD\r\n");
        c.roundtrip(
            format!("mg {binary} b k v\r\n").as_bytes(),
            format!("VA 1 k{binary} b\r\nx\r\n").as_bytes(),
        );
    });
}

#[test]
fn stale_while_revalidate() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut first = server.connect();
        let mut second = server.connect();
        for key in [key_on(0, 2, "swr"), key_on(1, 2, "swr")] {
            let k = key.as_str();
            let step = |c: &mut Client, req: String, expected: String| {
                c.roundtrip_pattern(req.as_bytes(), expected.as_bytes());
            };
            step(
                &mut first,
                format!("ms {k} 2 T100\r\nv1\r\n"),
                "HD\r\n".into(),
            );
            step(&mut first, format!("md {k} I T30\r\n"), "HD\r\n".into());
            // the first reader wins the right to recompute; everyone gets the stale value
            step(
                &mut first,
                format!("mg {k} v c t\r\n"),
                format!("VA 2 c{{cas:{k}}} t{{cas:t{k}}} X W\r\nv1\r\n"),
            );
            step(
                &mut second,
                format!("mg {k} v c\r\n"),
                format!("VA 2 c{{cas:o{k}}} Z X\r\nv1\r\n"),
            );
            step(&mut second, format!("mg {k} s\r\n"), "HD s2 Z X\r\n".into());
            // a late writer with an older cas stores its value, but it stays stale
            step(
                &mut second,
                format!("ms {k} 2 C1 I\r\nol\r\n"),
                "HD\r\n".into(),
            );
            step(
                &mut second,
                format!("mg {k} v\r\n"),
                "VA 2 Z X\r\nol\r\n".into(),
            );
            // the winner's cas no longer matches; fetch the current one and replace
            step(
                &mut first,
                format!("ms {k} 2 C{{cas:{k}}} c\r\nv2\r\n"),
                "EX c0\r\n".into(),
            );
            step(
                &mut first,
                format!("mg {k} c\r\n"),
                format!("HD c{{cas:now{k}}} Z X\r\n"),
            );
            step(
                &mut first,
                format!("ms {k} 2 C{{cas:now{k}}} T60\r\nv2\r\n"),
                "HD\r\n".into(),
            );
            // fresh again: no X, no Z, no W
            step(
                &mut second,
                format!("mg {k} v\r\n"),
                "VA 2\r\nv2\r\n".into(),
            );
            step(&mut first, format!("mg {k} v\r\n"), "VA 2\r\nv2\r\n".into());
            // md I without T keeps the ttl; a quiet invalidation says nothing
            step(&mut first, format!("md {k} q I\r\n"), "".into());
            step(
                &mut first,
                format!("mg {k} t v\r\n"),
                format!("VA 2 t{{cas:t2{k}}} X W\r\nv2\r\n"),
            );
            // a zero cas, or one newer than the item's, with I is just a mismatch
            step(
                &mut second,
                format!("ms {k} 2 C0 I c\r\nzz\r\n"),
                "EX c0\r\n".into(),
            );
            step(
                &mut second,
                format!("ms {k} 2 C18446744073709551615 I c\r\nzz\r\n"),
                "EX c0\r\n".into(),
            );
            step(&mut first, format!("md {k}\r\n"), "HD\r\n".into());
        }
    });
}

#[test]
fn meta_commands_count_like_memcached() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        let before = c.stats_sub("");
        for (req, expected) in [
            (&b"ms k 1\r\nx\r\n"[..], &b"HD\r\n"[..]),
            (b"mg k v\r\n", b"VA 1\r\nx\r\n"),
            (b"mg k T10\r\n", b"HD\r\n"),
            (b"mg nope\r\n", b"EN\r\n"),
            // a miss with T counts as a get miss in memcached 1.6.18
            (b"mg nope T10\r\n", b"EN\r\n"),
            (b"mg viv N10\r\n", b"HD W\r\n"),
            (b"ms k 1 C99999\r\ny\r\n", b"EX\r\n"),
            (b"md nope\r\n", b"NF\r\n"),
            (b"md k C99999\r\n", b"EX\r\n"),
            (b"md k I\r\n", b"HD\r\n"),
            (b"md k\r\n", b"HD\r\n"),
            (b"ma n\r\n", b"NF\r\n"),
            (b"ma n N0 MD\r\n", b"HD\r\n"),
            (b"ma n\r\n", b"HD\r\n"),
            (b"ma n MD\r\n", b"HD\r\n"),
        ] {
            c.roundtrip(req, expected);
        }
        let after = c.stats_sub("");
        let delta = |name: &str| stat_u64(&after, name) - stat_u64(&before, name);
        let expected = [
            ("cmd_get", 4),
            ("get_hits", 2),
            ("get_misses", 2),
            ("cmd_touch", 1),
            ("touch_hits", 1),
            ("touch_misses", 0),
            ("cmd_set", 2),
            ("cas_badval", 1),
            ("delete_hits", 1),
            ("delete_misses", 2),
            ("incr_misses", 1),
            ("incr_hits", 1),
            ("decr_hits", 1),
            ("decr_misses", 0),
        ];
        for (name, value) in expected {
            assert_eq!(delta(name), value, "{name}");
        }
    });
}

#[test]
fn oversized_ms_is_swallowed_and_old_item_gone() {
    for_each_config(|args| {
        let server = TestServer::start(args);
        let mut c = server.connect();
        c.roundtrip(b"ms big 1\r\nx\r\n", b"HD\r\n");
        let len = 1024 * 1024;
        let mut req = format!("ms big {len} MA\r\n").into_bytes();
        req.extend(std::iter::repeat_n(b'a', len));
        req.extend_from_slice(b"\r\nmn\r\n");
        c.send(&req);
        c.read_exact_reply(b"SERVER_ERROR object too large for cache\r\nMN\r\n");
        c.roundtrip(b"mg big v\r\n", b"EN\r\n");
    });
}

#[cfg(feature = "test-hooks")]
mod time_hooks {
    use super::common::{for_each_config, skip_in_memcached_mode, TestServer};

    #[test]
    fn ttl_last_access_and_expiry_follow_debug_time() {
        if skip_in_memcached_mode("debug_time needs corecache's test-hooks") {
            return;
        }
        for_each_config(|args| {
            let server = TestServer::start(args);
            let mut c = server.connect();
            c.roundtrip(b"ms k 1 T10\r\nx\r\n", b"HD\r\n");
            c.roundtrip(b"debug_time advance 3\r\n", b"OK\r\n");
            c.roundtrip(b"mg k t l h\r\n", b"HD t7 l3 h0\r\n");
            c.roundtrip(b"mg k h\r\n", b"HD h1\r\n");
            // a stale item still expires with its ttl
            c.roundtrip(b"md k I T5\r\n", b"HD\r\n");
            c.roundtrip(b"mg k t\r\n", b"HD t5 X W\r\n");
            c.roundtrip(b"debug_time advance 5\r\n", b"OK\r\n");
            c.roundtrip(b"mg k t\r\n", b"EN\r\n");
            // vivified items expire with N's ttl
            c.roundtrip(b"mg v N2 t\r\n", b"HD t2 W\r\n");
            c.roundtrip(b"debug_time advance 2\r\n", b"OK\r\n");
            c.roundtrip(b"mg v\r\n", b"EN\r\n");
            // ma T moves the expiry of a counter
            c.roundtrip(b"ma n N0 J5 T3 t v\r\n", b"VA 1 t3\r\n5\r\n");
            c.roundtrip(b"debug_time advance 3\r\n", b"OK\r\n");
            c.roundtrip(b"ma n\r\n", b"NF\r\n");
        });
    }
}

#[test]
fn memcached_mode_is_reported() {
    if memcached_mode() {
        eprintln!("running against memcached");
    }
}
