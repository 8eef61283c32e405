//! ElastiCache auto discovery: the node list that `config get cluster` (and the older
//! `get AmazonElastiCache:cluster`) returns, so cluster-aware clients find every node.
//!
//! Wire format (as ElastiCache for Memcached sends it):
//! ```text
//! CONFIG cluster 0 <bytes>\r\n
//! <version>\n
//! <host>|<ip>|<port> <host>|<ip>|<port> ...\n
//! \r\n
//! END\r\n
//! ```
//! `<bytes>` counts the version line and the node line with their `\n`s. The legacy form is the
//! same block as a `VALUE AmazonElastiCache:cluster 0 <bytes>` item, served only when a node
//! list is configured (otherwise that key is an ordinary key, as in memcached).
//!
//! Sources: `--cluster-nodes host|ip|port,...`, or `--cluster-config PATH` (nodes one per line
//! or space-separated on one line; blank lines and `#` comments ignored), re-read on SIGHUP; the
//! version starts at 1 and goes up by one only when the list changed. With neither, the list is
//! this node alone: `<ip>|<ip>|<port>` of the first listen address (`127.0.0.1` for a wildcard
//! address).
//!
//! Process-wide and read rarely (an admin path, not the data path), so a `RwLock` is fine.

use std::net::SocketAddr;
use std::sync::RwLock;

/// The most nodes a list may hold (bounds the reply and the file read).
pub const NODES_MAX: usize = 1024;
/// The largest `--cluster-config` file read.
pub const FILE_BYTES_MAX: u64 = 1 << 20;

/// The key of the legacy form, `get AmazonElastiCache:cluster`.
pub const LEGACY_KEY: &[u8] = b"AmazonElastiCache:cluster";

/// A version and its node list.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    version: u64,
    nodes: Vec<String>,
}

/// The cluster configuration served to clients.
#[derive(Debug)]
pub struct Cluster {
    state: RwLock<State>,
    /// `--cluster-config`, re-read on SIGHUP.
    path: Option<String>,
    /// A node list was given (`--cluster-nodes` or `--cluster-config`), not just this node.
    configured: bool,
}

impl Cluster {
    /// From the command line; `bound` are the actual listen addresses (port 0 resolved).
    pub fn new(
        nodes: Option<&str>,
        path: Option<&str>,
        bound: &[SocketAddr],
    ) -> Result<Cluster, String> {
        let nodes_given = nodes.is_some();
        let nodes = match (nodes, path) {
            (Some(list), _) => {
                parse_nodes(&list.replace(',', " ")).map_err(|e| format!("--cluster-nodes: {e}"))?
            }
            (None, Some(path)) => read_nodes(path)?,
            (None, None) => vec![self_node(bound)],
        };
        Ok(Cluster {
            state: RwLock::new(State { version: 1, nodes }),
            path: path.map(str::to_string),
            configured: nodes_given || path.is_some(),
        })
    }

    /// Whether a node list was configured. Only then is the legacy key
    /// `AmazonElastiCache:cluster` answered with the list: otherwise it is an ordinary key, as
    /// in memcached (clients that store it, or fall back to it when `config get` fails, get
    /// their own item back).
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// Re-reads `--cluster-config` (SIGHUP). Returns the version now served; it goes up only
    /// when the list changed. A bad file keeps the old list.
    pub fn reload(&self) -> Result<u64, String> {
        let Some(path) = &self.path else {
            return Ok(self.version());
        };
        let nodes = read_nodes(path)?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.nodes != nodes {
            state.nodes = nodes;
            state.version += 1;
        }
        Ok(state.version)
    }

    /// The version served now.
    pub fn version(&self) -> u64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).version
    }

    /// `config get cluster`'s reply.
    pub fn compose_config(&self, out: &mut Vec<u8>) {
        self.compose(b"CONFIG cluster", out);
    }

    /// The legacy `get AmazonElastiCache:cluster` reply.
    pub fn compose_legacy(&self, out: &mut Vec<u8>) {
        self.compose(b"VALUE AmazonElastiCache:cluster", out);
    }

    fn compose(&self, head: &[u8], out: &mut Vec<u8>) {
        let payload = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            format!("{}\n{}\n", state.version, state.nodes.join(" "))
        };
        out.extend_from_slice(head);
        out.extend_from_slice(format!(" 0 {}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload.as_bytes());
        out.extend_from_slice(b"\r\nEND\r\n");
    }
}

/// This node alone.
fn self_node(bound: &[SocketAddr]) -> String {
    let Some(addr) = bound.first() else {
        return "127.0.0.1|127.0.0.1|11211".into();
    };
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("{ip}|{ip}|{}", addr.port())
}

fn read_nodes(path: &str) -> Result<Vec<String>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("--cluster-config {path}: {e}"))?;
    let mut text = String::new();
    file.take(FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|e| format!("--cluster-config {path}: {e}"))?;
    parse_nodes(&text).map_err(|e| format!("--cluster-config {path}: {e}"))
}

/// Whitespace-separated `host|ip|port` entries (lines starting with `#` are comments).
pub fn parse_nodes(text: &str) -> Result<Vec<String>, String> {
    let mut nodes = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        for node in line.split_whitespace() {
            check_node(node)?;
            if nodes.len() == NODES_MAX {
                return Err(format!("more than {NODES_MAX} nodes"));
            }
            nodes.push(node.to_string());
        }
    }
    if nodes.is_empty() {
        return Err("no nodes (expected host|ip|port entries)".into());
    }
    Ok(nodes)
}

fn check_node(node: &str) -> Result<(), String> {
    let parts: Vec<&str> = node.split('|').collect();
    let [host, ip, port] = parts[..] else {
        return Err(format!("{node:?}: expected host|ip|port"));
    };
    if host.is_empty() && ip.is_empty() {
        return Err(format!("{node:?}: needs a host or an ip"));
    }
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("{node:?}: {ip:?} is not an ip address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{node:?}: {port:?} is not a port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reply_counts_both_lines() {
        let nodes = "a.example|10.0.0.1|11211,b.example|10.0.0.2|11212";
        let cluster = Cluster::new(Some(nodes), None, &[]).unwrap();
        let mut out = Vec::new();
        cluster.compose_config(&mut out);
        let payload = "1\na.example|10.0.0.1|11211 b.example|10.0.0.2|11212\n";
        let expected = format!("CONFIG cluster 0 {}\r\n{payload}\r\nEND\r\n", payload.len());
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let mut legacy = Vec::new();
        cluster.compose_legacy(&mut legacy);
        assert!(legacy.starts_with(b"VALUE AmazonElastiCache:cluster 0 52\r\n1\n"));
    }

    #[test]
    fn default_is_this_node() {
        let bound = ["0.0.0.0:11311".parse().unwrap()];
        let cluster = Cluster::new(None, None, &bound).unwrap();
        let mut out = Vec::new();
        cluster.compose_config(&mut out);
        assert!(out.ends_with(b"1\n127.0.0.1|127.0.0.1|11311\n\r\nEND\r\n"));
    }

    #[test]
    fn node_lists() {
        assert_eq!(
            parse_nodes("# c\nh|1.2.3.4|1\n\n|::1|2 h2||3\n").unwrap(),
            vec!["h|1.2.3.4|1", "|::1|2", "h2||3"]
        );
        assert!(parse_nodes("").is_err());
        assert!(parse_nodes("h|1.2.3.4").is_err());
        assert!(parse_nodes("h|x|1").is_err());
        assert!(parse_nodes("h|1.2.3.4|0").is_err());
        assert!(parse_nodes("||5").is_err());
    }
}
