//! Command line -> plain [`Args`] (clap) -> validated [`Config`].
//!
//! Flags reuse memcached's letters and meanings so corecache can replace memcached in an existing
//! unit file: `-p -l -m -c -t -I -f -C -v -U -A -P`. Validation turns every bad value into a
//! one-line reason; `main` prints it and exits non-zero.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use clap::{ArgAction, Parser, ValueEnum};

use crate::protocol::Limits;

/// Which networking backend the executors use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IoBackendChoice {
    /// io_uring if the startup probe passes, else epoll.
    Auto,
    /// io_uring; startup fails if it cannot be used.
    Uring,
    /// epoll.
    Epoll,
}

/// The command line as typed.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "corecache",
    version,
    about = "A thread-per-core, memcached-compatible cache"
)]
pub struct Args {
    /// TCP port to listen on (0: pick a free port).
    #[arg(short = 'p', long = "port", default_value_t = 11211)]
    pub port: u16,
    /// Addresses to listen on, comma-separated; each may carry its own `:port`.
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1")]
    pub listen: String,
    /// Item memory in megabytes, split evenly across shards.
    #[arg(short = 'm', long = "memory-limit", default_value_t = 64)]
    pub memory_limit_mb: u64,
    /// Maximum simultaneous connections.
    #[arg(short = 'c', long = "conn-limit", default_value_t = 1024)]
    pub conn_limit: u32,
    /// Shards (one pinned executor thread each); default: available CPUs.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<u16>,
    /// Largest item, with a k or m suffix (1k..1024m).
    #[arg(short = 'I', long = "max-item-size", default_value = "1m")]
    pub max_item_size: String,
    /// Growth factor between slab chunk sizes.
    #[arg(short = 'f', long = "slab-growth-factor", default_value_t = 1.25)]
    pub slab_growth_factor: f64,
    /// Disable cas values (saves 8 bytes per item).
    #[arg(short = 'C', long = "disable-cas")]
    pub disable_cas: bool,
    /// Back item memory with transparent huge pages where the kernel allows (fewer TLB misses;
    /// each shard may hold up to 2 MiB more than its items need). Unlike memcached, nothing is
    /// preallocated.
    #[arg(short = 'L', long = "enable-largepages")]
    pub large_pages: bool,
    /// Verbose logging to stderr (-vv for more).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// UDP port; only 0 is accepted (UDP is not served).
    #[arg(short = 'U', long = "udp-port", default_value_t = 0)]
    pub udp_port: u16,
    /// Allow the `shutdown` command.
    #[arg(short = 'A', long = "enable-shutdown")]
    pub enable_shutdown: bool,
    /// Write the process id to this file.
    #[arg(short = 'P', long = "pidfile")]
    pub pidfile: Option<String>,
    /// Networking backend.
    #[arg(long = "io-backend", value_enum, default_value_t = IoBackendChoice::Auto)]
    pub io_backend: IoBackendChoice,
    /// CPUs to pin shards to, e.g. `0-3,6` (one per shard, in order); default: all, in order.
    #[arg(long = "cpus")]
    pub cpus: Option<String>,
    /// ElastiCache auto discovery: the cluster's nodes, `host|ip|port,...` (default: this node).
    #[arg(long = "cluster-nodes", conflicts_with = "cluster_config")]
    pub cluster_nodes: Option<String>,
    /// ElastiCache auto discovery: a file listing `host|ip|port` nodes, one per line or
    /// space-separated; SIGHUP re-reads it.
    #[arg(long = "cluster-config")]
    pub cluster_config: Option<String>,
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub memory_bytes_max: usize,
    pub conns_max: usize,
    pub shard_count: u16,
    /// CPU for each shard's executor (`None`: do not pin).
    pub shard_cpus: Vec<Option<usize>>,
    pub item_size_max: usize,
    pub slab_growth_factor: f64,
    pub cas_enabled: bool,
    /// `-L`: item memory on transparent huge pages.
    pub large_pages: bool,
    pub verbosity: u8,
    pub io_backend: IoBackendChoice,
    pub shutdown_enabled: bool,
    pub pidfile: Option<String>,
    pub limits: Limits,
    /// `--cluster-nodes` as typed (checked by `runtime::cluster` at startup).
    pub cluster_nodes: Option<String>,
    /// `--cluster-config`: the node list file (read at startup and on SIGHUP).
    pub cluster_config: Option<String>,
}

/// The largest `-t`: shard ids are `u16` and the mesh has one queue per ordered pair of shards.
pub const SHARD_COUNT_MAX: u16 = 256;

impl Config {
    /// Parses and validates a command line. `Err(Ok(text))` is help or version text to print
    /// before exiting successfully; `Err(Err(reason))` is a one-line reason to refuse to start.
    pub fn from_args<I, T>(args: I) -> Result<Config, Result<String, String>>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(args).map_err(|e| match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                Ok(e.to_string())
            }
            _ => Err(one_line(&e.to_string())),
        })?;
        Config::validate(args).map_err(Err)
    }

    /// Turns plain arguments into settings, or a one-line reason.
    pub fn validate(a: Args) -> Result<Config, String> {
        if a.udp_port != 0 {
            return Err(format!(
                "-U {}: UDP is not served by corecache; use -U 0",
                a.udp_port
            ));
        }
        let listen = parse_listen(&a.listen, a.port)?;
        if a.memory_limit_mb == 0 || a.memory_limit_mb > (1 << 30) {
            return Err(format!(
                "-m {}: must be 1..1073741824 MB",
                a.memory_limit_mb
            ));
        }
        let memory_bytes_max = usize::try_from(a.memory_limit_mb * 1024 * 1024)
            .map_err(|_| format!("-m {}: too large for this machine", a.memory_limit_mb))?;
        if a.conn_limit == 0 {
            return Err("-c 0: at least one connection must be allowed".into());
        }
        let cpus_available = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shard_count = match a.threads {
            Some(0) => return Err("-t 0: at least one shard is needed".into()),
            Some(t) if t > SHARD_COUNT_MAX => {
                return Err(format!("-t {t}: at most {SHARD_COUNT_MAX} shards"))
            }
            Some(t) => t,
            None => u16::try_from(cpus_available.min(usize::from(SHARD_COUNT_MAX))).unwrap_or(1),
        };
        let item_size_max = parse_size(&a.max_item_size)?;
        if !(a.slab_growth_factor > 1.0 && a.slab_growth_factor <= 4.0) {
            return Err(format!(
                "-f {}: the slab growth factor must be above 1.0 and at most 4.0",
                a.slab_growth_factor
            ));
        }
        let per_shard = memory_bytes_max / usize::from(shard_count);
        if item_size_max > per_shard.max(1024 * 1024) {
            return Err(format!(
                "-I {}: larger than one shard's share of -m ({} bytes); raise -m or lower -I",
                a.max_item_size, per_shard
            ));
        }
        let shard_cpus = match &a.cpus {
            Some(list) => {
                let cpus = parse_cpu_list(list)?;
                if cpus.len() < usize::from(shard_count) {
                    return Err(format!(
                        "--cpus {list}: {} cpus for {shard_count} shards",
                        cpus.len()
                    ));
                }
                cpus.into_iter()
                    .take(usize::from(shard_count))
                    .map(Some)
                    .collect()
            }
            // By default each shard gets its own CPU among those the process may run on (as
            // `taskset` or a cpuset left them), in ascending order.
            None => {
                let allowed = allowed_cpus();
                if usize::from(shard_count) <= allowed.len() {
                    allowed
                        .into_iter()
                        .take(usize::from(shard_count))
                        .map(Some)
                        .collect()
                } else {
                    // More shards than cpus: let the kernel schedule them.
                    vec![None; usize::from(shard_count)]
                }
            }
        };
        let cas_enabled = !a.disable_cas;
        let large_pages = a.large_pages;
        let limits = Limits {
            item_size_max,
            cas_enabled,
            ..Limits::DEFAULT
        };
        Ok(Config {
            listen,
            memory_bytes_max,
            conns_max: a.conn_limit as usize,
            shard_count,
            shard_cpus,
            item_size_max,
            slab_growth_factor: a.slab_growth_factor,
            cas_enabled,
            large_pages,
            verbosity: a.verbose,
            io_backend: a.io_backend,
            shutdown_enabled: a.enable_shutdown,
            pidfile: a.pidfile,
            limits,
            cluster_nodes: a.cluster_nodes,
            cluster_config: a.cluster_config,
        })
    }
}

/// Folds a multi-line message into one line, without clap's "error:" prefix and help hint.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `1m`, `512k`, `2048` (bytes) -> bytes, within 1k..1024m.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1024usize),
        Some((i, 'm' | 'M')) => (&t[..i], 1024 * 1024),
        _ => (t, 1),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("-I {s}: not a size (use e.g. 1m, 512k)"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("-I {s}: too large"))?;
    if !(1024..=1024 * 1024 * 1024).contains(&bytes) {
        return Err(format!("-I {s}: must be between 1k and 1024m"));
    }
    Ok(bytes)
}

/// The CPUs this process may run on (its affinity mask), ascending.
fn allowed_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    cpus
}

/// `0-3,6` -> [0, 1, 2, 3, 6].
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cpus {s}: expected a list like 0-3,6");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("--cpus {s}: empty"));
    }
    Ok(out)
}

/// `127.0.0.1,::1,10.0.0.1:11311` with default port -> socket addresses.
fn parse_listen(list: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Ok(ip) = part.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
        } else if let Ok(sa) = part.parse::<SocketAddr>() {
            out.push(sa);
        } else {
            let resolved = (part, port)
                .to_socket_addrs()
                .map_err(|e| format!("-l {part}: {e}"))?
                .next()
                .ok_or_else(|| format!("-l {part}: no address"))?;
            out.push(resolved);
        }
    }
    if out.is_empty() {
        return Err("-l: no address to listen on".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, String> {
        Config::from_args(std::iter::once("corecache").chain(args.iter().copied()))
            .map_err(|e| e.unwrap_or_else(|reason| reason))
    }

    #[test]
    fn defaults_are_memcached_defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:11211".parse().unwrap()]);
        assert_eq!(c.memory_bytes_max, 64 << 20);
        assert_eq!(c.conns_max, 1024);
        assert_eq!(c.item_size_max, 1 << 20);
        assert!(c.cas_enabled);
        assert_eq!(c.slab_growth_factor, 1.25);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("0").is_err());
        assert!(parse_size("2000m").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6"), Ok(vec![0, 1, 2, 3, 6]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn listen_lists() {
        let c = cfg(&["-l", "127.0.0.1,127.0.0.2:999", "-p", "0"]).unwrap();
        assert_eq!(
            c.listen,
            vec![
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.2:999".parse().unwrap()
            ]
        );
    }

    #[test]
    fn bad_values_have_reasons() {
        assert!(cfg(&["-U", "11211"]).unwrap_err().contains("UDP"));
        assert!(cfg(&["-t", "0"]).is_err());
        assert!(cfg(&["-f", "1.0"]).is_err());
        assert!(cfg(&["-m", "0"]).is_err());
        assert!(cfg(&["-c", "0"]).is_err());
        assert!(cfg(&["-I", "10k", "-t", "2"]).is_ok());
        assert!(cfg(&["-t", "2", "--cpus", "0"]).is_err());
        let err = cfg(&["--io-backend", "kqueue"]).unwrap_err();
        assert!(err.contains("kqueue") && !err.contains('\n'), "{err}");
    }

    /// Default pinning follows the process's affinity mask: confined to one CPU (as by
    /// `taskset -c N`), the one shard is pinned to that CPU, not to CPU 0.
    #[test]
    fn default_pinning_stays_within_the_affinity_mask() {
        std::thread::spawn(|| {
            let all = allowed_cpus();
            let last = *all.last().expect("at least one cpu");
            assert!(core_affinity::set_for_current(core_affinity::CoreId {
                id: last
            }));
            assert_eq!(allowed_cpus(), vec![last]);
            let c = cfg(&["-t", "1"]).unwrap();
            assert_eq!(c.shard_cpus, vec![Some(last)]);
            // More shards than allowed cpus: no pinning.
            let c = cfg(&["-t", "2"]).unwrap();
            assert_eq!(c.shard_cpus, vec![None, None]);
        })
        .join()
        .unwrap();
    }
}
