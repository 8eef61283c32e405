//! corecache-bench: a load generator for memcached-protocol servers (corecache, memcached).
//!
//! Closed loop (maximum throughput) or open loop (`--rate`, latency measured from each request's
//! scheduled send time, so a stalled server cannot hide its stalls). See `--help`.

mod engine;
mod host;
mod report;
mod workload;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use engine::{Client, Plan, Progress, Protocol};
use host::{Steal, StealDelta};
use report::{json_string, Stats};
use workload::{KeyDist, KeyFormat, Mix, ValueSize};

/// Load generator for memcached-protocol servers (text, meta or binary protocol).
#[derive(Parser, Debug)]
#[command(name = "corecache-bench", version)]
struct Args {
    /// Server address host:port; repeat (or comma-separate) for several, keys are spread by hash.
    #[arg(
        long = "server",
        short = 's',
        default_value = "127.0.0.1:11211",
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Protocol: `text` (get/set), `meta` (mg/ms; a multi-get is quiet mg per key closed by
    /// mn) or `binary` (GET/SET; a multi-get is GETKQ per key closed by NOOP).
    #[arg(long, value_enum, default_value_t = Protocol::Text)]
    protocol: Protocol,
    /// Connections per thread (to each server).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// CPUs to pin client threads to, e.g. `0,2-3` (thread i gets the i-th, round robin).
    #[arg(long)]
    cpus: Option<String>,
    /// Open loop: total requests per second over all threads. 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Key prefix; keys are `<prefix><number>` with the number zero-padded to 7 digits.
    #[arg(long, default_value = "key:")]
    key_prefix: String,
    /// Zipf exponent for key popularity; 0 = uniform.
    #[arg(long, default_value_t = 0.0)]
    zipf: f64,
    /// Value size in bytes: `64` or a uniform range `64-1024`.
    #[arg(long, default_value = "64")]
    value_size: String,
    /// Weight of gets in the mix.
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Weight of sets in the mix.
    #[arg(long, default_value_t = 0.1)]
    set_ratio: f64,
    /// Keys per get (more than 1 makes every get a multi-get).
    #[arg(long, default_value_t = 1)]
    multiget: usize,
    /// Set every key once before measuring.
    #[arg(long)]
    prefill: bool,
    /// Seconds of load before measuring starts (excluded from the results).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// On a get miss, set the missing key (cache-aside read-through).
    #[arg(long)]
    read_through: bool,
    /// Print the results as JSON on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
    /// A request without a reply after this many milliseconds is a timeout; its connection is
    /// dropped and reopened.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Open loop: most requests queued per thread and server while the pipeline is full;
    /// beyond it requests are dropped and counted.
    #[arg(long, default_value_t = 10_000)]
    backlog: usize,
    /// Seed for key, mix and size choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Connect over TLS, trusting the CA certificates in this PEM file (for a server started
    /// with `-Z`); the server's certificate must name the address connected to.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(errors) => std::process::exit(if errors { 2 } else { 0 }),
        Err(message) => {
            eprintln!("corecache-bench: {message}");
            std::process::exit(1);
        }
    }
}

/// Runs the benchmark; Ok(true) when any error was counted.
fn run(args: &Args) -> Result<bool, String> {
    let plan = Arc::new(plan_of(args)?);
    let cpus = match &args.cpus {
        Some(list) => parse_cpus(list)?,
        None => Vec::new(),
    };
    let progress = Arc::new(Progress::default());
    let mut handles = Vec::with_capacity(args.threads);
    for index in 0..args.threads {
        let client = Client::new(
            Arc::clone(&plan),
            index,
            args.threads,
            Arc::clone(&progress),
        )?;
        let cpu = cpus.get(index % cpus.len().max(1)).copied();
        let handle = std::thread::Builder::new()
            .name(format!("bench-{index}"))
            .spawn(move || {
                if let Some(id) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        eprintln!("corecache-bench: could not pin thread {index} to cpu {id}");
                    }
                }
                client.run()
            })
            .map_err(|e| format!("spawning thread: {e}"))?;
        handles.push(handle);
    }
    if plan.prefill && !args.quiet {
        eprintln!("prefill: setting {} keys", plan.keys);
    }
    let prefill_start = Instant::now();
    wait_ready(args, &progress, &handles);
    progress.start.store(true, Ordering::Release);
    if plan.prefill && !args.quiet {
        eprintln!(
            "prefill: done in {:.2} s",
            prefill_start.elapsed().as_secs_f64()
        );
    }
    let steal = report_progress(args, &plan, &progress, &handles);
    let mut total = Stats::new();
    for handle in handles {
        let stats = handle
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        total.merge(&stats);
    }
    let header = format!(
        "corecache-bench: {} ({} protocol, {} thread(s) x {} conn(s) x pipeline {}, {})",
        args.servers.join(","),
        args.protocol.name(),
        args.threads,
        args.connections,
        args.pipeline,
        if args.rate > 0.0 {
            format!("open loop {} req/s", args.rate)
        } else {
            "closed loop".to_string()
        }
    );
    let table = report::table(&total, &header, steal.as_ref());
    if args.json {
        eprint!("{table}");
        println!(
            "{}",
            report::json(&total, &config_json(args), steal.as_ref())
        );
    } else {
        print!("{table}");
    }
    Ok(total.error_total() > 0 || total.drops > 0)
}

/// Waits until every thread is connected and done with its prefill; a line per second meanwhile.
fn wait_ready(args: &Args, progress: &Progress, handles: &[std::thread::JoinHandle<Stats>]) {
    let start = Instant::now();
    let mut tick = 1u64;
    while progress.ready_threads.load(Ordering::Acquire) < handles.len() as u64 {
        if handles.iter().any(|h| h.is_finished()) {
            return; // a thread died; join reports it
        }
        std::thread::sleep(Duration::from_millis(1));
        if start.elapsed() >= Duration::from_secs(tick) {
            tick += 1;
            if !args.quiet {
                eprintln!(
                    "[{:>4}s] prefill {:>10} sets done  errors {}",
                    tick - 1,
                    progress.prefill_sets.load(Ordering::Relaxed),
                    progress.errors.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// Prints one line per second on stderr until the threads finish. Returns the steal time of
/// the measured window (sampled within a loop turn, 50 ms, of its ends), where the host has
/// steal counters.
fn report_progress(
    args: &Args,
    plan: &Plan,
    progress: &Progress,
    handles: &[std::thread::JoinHandle<Stats>],
) -> Option<StealDelta> {
    let start = Instant::now();
    let (measure_from, measure_to) = (plan.warmup, plan.warmup + plan.duration);
    let mut steal_from = None;
    let mut steal_to = None;
    // Prefill requests are counted in `ops` too; start from where they left it.
    let mut last = (
        progress.ops.load(Ordering::Relaxed),
        progress.keys.load(Ordering::Relaxed),
        progress.hits.load(Ordering::Relaxed),
    );
    let mut tick = 1u32;
    // Steal per second for the progress line: which second the host took, if it took any.
    let ticks_per_sec = host::ticks_per_sec();
    let mut steal_last = Steal::sample();
    while handles.iter().any(|h| !h.is_finished()) {
        let next = start + Duration::from_secs(u64::from(tick));
        let now = Instant::now();
        let since = now - start;
        if steal_from.is_none() && since >= measure_from {
            steal_from = Steal::sample();
        }
        if steal_to.is_none() && since >= measure_to {
            steal_to = Steal::sample();
        }
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        tick += 1;
        let ops = progress.ops.load(Ordering::Relaxed);
        let keys = progress.keys.load(Ordering::Relaxed);
        let hits = progress.hits.load(Ordering::Relaxed);
        let (d_keys, d_hits) = (keys - last.1, hits - last.2);
        let elapsed = start.elapsed();
        // The phase in the middle of the second just reported.
        let middle = elapsed.saturating_sub(Duration::from_millis(500));
        let phase = if middle < plan.warmup {
            "warmup"
        } else if middle < plan.warmup + plan.duration {
            "run"
        } else {
            "drain"
        };
        let steal_now = Steal::sample();
        let steal_ms = match (&steal_last, &steal_now) {
            (Some(a), Some(b)) => format!("{}", a.until(b, ticks_per_sec).total_ms()),
            _ => "-".to_string(),
        };
        steal_last = steal_now;
        if !args.quiet {
            eprintln!(
                "[{:>4.0}s] {:<6} {:>10} ops/s  hit {}  errors {}  drops {}  steal {} ms",
                elapsed.as_secs_f64(),
                phase,
                ops - last.0,
                // Only measured gets count towards the hit ratio.
                if d_keys > 0 {
                    format!("{:.3}", d_hits as f64 / d_keys as f64)
                } else {
                    "-".to_string()
                },
                progress.errors.load(Ordering::Relaxed),
                progress.drops.load(Ordering::Relaxed),
                steal_ms
            );
        }
        last = (ops, keys, hits);
    }
    // The threads may end (an error, the drain done) before the window's end was sampled.
    let steal_to = steal_to.or_else(Steal::sample)?;
    Some(steal_from?.until(&steal_to, host::ticks_per_sec()))
}

fn plan_of(args: &Args) -> Result<Plan, String> {
    let mut servers = Vec::new();
    for text in &args.servers {
        let addr: SocketAddr = text
            .to_socket_addrs()
            .map_err(|e| format!("bad --server {text:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("--server {text:?} resolves to nothing"))?;
        servers.push(addr);
    }
    let positive = |name: &str, n: usize| {
        if n == 0 {
            Err(format!("--{name} must be at least 1"))
        } else {
            Ok(())
        }
    };
    positive("threads", args.threads)?;
    positive("connections", args.connections)?;
    positive("pipeline", args.pipeline)?;
    positive("multiget", args.multiget)?;
    positive("backlog", args.backlog)?;
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if !(args.zipf >= 0.0 && args.zipf.is_finite()) {
        return Err("--zipf must be >= 0".into());
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err("--rate must be >= 0".into());
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0) {
        return Err("--duration must be > 0 and --warmup >= 0".into());
    }
    if args.key_prefix.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("--key-prefix must not contain spaces or control bytes".into());
    }
    let key_format = KeyFormat::new(&args.key_prefix, args.keys);
    if key_format.prefix.len() + key_format.width > 250 {
        return Err("keys would be longer than 250 bytes".into());
    }
    let tls = match &args.tls_ca {
        Some(path) => Some(engine::tls_config(path)?),
        None => None,
    };
    Ok(Plan {
        servers,
        tls,
        protocol: args.protocol,
        connections: args.connections,
        pipeline: args.pipeline,
        rate_per_thread: args.rate / args.threads as f64,
        keys: args.keys,
        key_format,
        key_dist: KeyDist::new(args.keys, args.zipf),
        value_size: ValueSize::parse(&args.value_size)?,
        mix: Mix::new(args.get_ratio, args.set_ratio)?,
        multiget: args.multiget,
        read_through: args.read_through,
        prefill: args.prefill,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        backlog_max: args.backlog,
        seed: args.seed,
    })
}

/// Parses `0,2-3` into `[0, 2, 3]`.
fn parse_cpus(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|e| format!("bad cpu {t:?} in --cpus: {e}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b || b - a > 4096 {
                    return Err(format!("bad cpu range {part:?}"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(number(part)?),
        }
    }
    if cpus.is_empty() {
        return Err("--cpus is empty".into());
    }
    Ok(cpus)
}

fn config_json(args: &Args) -> String {
    let servers: Vec<String> = args.servers.iter().map(|s| json_string(s)).collect();
    format!(
        "{{\"servers\":[{}],\"protocol\":\"{}\",\"threads\":{},\"connections\":{},\
         \"pipeline\":{},\"rate\":{},\
         \"keys\":{},\"key_prefix\":{},\"zipf\":{},\"value_size\":{},\"get_ratio\":{},\
         \"set_ratio\":{},\"multiget\":{},\"prefill\":{},\"warmup_s\":{},\"duration_s\":{},\
         \"read_through\":{},\"seed\":{}}}",
        servers.join(","),
        args.protocol.name(),
        args.threads,
        args.connections,
        args.pipeline,
        args.rate,
        args.keys,
        json_string(&args.key_prefix),
        args.zipf,
        json_string(&args.value_size),
        args.get_ratio,
        args.set_ratio,
        args.multiget,
        args.prefill,
        args.warmup,
        args.duration,
        args.read_through,
        args.seed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert_eq!(parse_cpus(" 1 ").unwrap(), vec![1]);
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn cli_parses() {
        let args = Args::try_parse_from([
            "corecache-bench",
            "--server",
            "127.0.0.1:1",
            "--server",
            "127.0.0.1:2",
            "--zipf",
            "0.99",
            "--value-size",
            "64-1024",
            "--multiget",
            "10",
        ])
        .unwrap();
        let plan = plan_of(&args).unwrap();
        assert_eq!(plan.servers.len(), 2);
        assert_eq!(plan.value_size.max, 1024);
        assert_eq!(plan.protocol, Protocol::Text);
        for (name, protocol) in [
            ("text", Protocol::Text),
            ("meta", Protocol::Meta),
            ("binary", Protocol::Binary),
        ] {
            let args = Args::try_parse_from(["corecache-bench", "--protocol", name]).unwrap();
            assert_eq!(plan_of(&args).unwrap().protocol, protocol);
            assert_eq!(protocol.name(), name);
            assert!(config_json(&args).contains(&format!("\"protocol\":\"{name}\"")));
        }
        assert!(Args::try_parse_from(["corecache-bench", "--protocol", "resp"]).is_err());
    }
}
