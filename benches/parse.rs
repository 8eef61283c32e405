//! Criterion micro-benchmarks of the text protocol parser (the pure core only).

use corecache::protocol::parse::parse;
use corecache::protocol::Limits;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn bench_one(c: &mut Criterion, name: &str, buf: &[u8]) {
    let limits = Limits::DEFAULT;
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let parsed = parse(black_box(buf), &limits);
            assert!(parsed.is_ok());
            parsed
        })
    });
    group.finish();
}

fn parse_requests(c: &mut Criterion) {
    bench_one(c, "get", b"get user:1234567890\r\n");
    let keys: Vec<String> = (0..10).map(|i| format!("user:{i:010}")).collect();
    let multi_get = format!("get {}\r\n", keys.join(" "));
    bench_one(c, "get_10_keys", multi_get.as_bytes());
    let set = [
        &b"set user:1234567890 0 3600 64\r\n"[..],
        &[b'v'; 64],
        b"\r\n",
    ]
    .concat();
    bench_one(c, "set_64_bytes", &set);
    bench_one(c, "incr", b"incr counter:42 1\r\n");
    bench_one(c, "decr", b"decr counter:42 1 noreply\r\n");
    bench_one(c, "gets", b"gets user:1234567890\r\n");
    bench_one(c, "gat", b"gat 3600 user:1234567890\r\n");
    bench_one(c, "touch", b"touch user:1234567890 3600\r\n");
    bench_one(c, "delete", b"delete user:1234567890\r\n");
    let cas = [
        &b"cas user:1234567890 0 3600 64 123456789\r\n"[..],
        &[b'v'; 64],
        b"\r\n",
    ]
    .concat();
    bench_one(c, "cas_64_bytes", &cas);
    bench_one(c, "version", b"version\r\n");
    bench_one(c, "stats", b"stats\r\n");
}

criterion_group!(benches, parse_requests);
criterion_main!(benches);
