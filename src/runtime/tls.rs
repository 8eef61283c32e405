//! TLS (`-Z`), as memcached 1.6.18 serves it, with rustls (ring provider) instead of OpenSSL.
//!
//! * Startup ([`TlsSettings::check`], [`TlsShared::new`]): the `-o ssl_*` values are checked
//!   with memcached's messages and exit statuses (1 for a value that does not parse or is out
//!   of range, 64 for files that do not load), then the certificate chain, key and CA file are
//!   read into one `rustls::ServerConfig`, shared read-only by every core.
//! * `refresh_certs` ([`TlsShared::refresh`]) reads the same files again and, if they load,
//!   swaps in a new `ServerConfig` for connections accepted from then on; a connection keeps
//!   the config it started with. Each core keeps the config it last used and takes the new one
//!   (one read lock) at its next TLS accept after a swap: a TLS accept reads one atomic.
//! * A TLS connection's [`TlsConn`] sits between the socket and the connection's buffers,
//!   entirely in memory, in the same byte paths of both backends: received bytes are
//!   decrypted into `Conn::rbuf` ([`Core::input_tls`]); just before a send, the plaintext
//!   replies queued at the end of `Conn::out` are encrypted in place ([`Conn::seal`]), so the
//!   backends send `out` as they do for any connection. Bytes `..Conn::out_sealed` of `out`
//!   are ciphertext already. `bytes_written` counts the replies sealed, not the records sent
//!   (as memcached counts what `SSL_write` takes). A connection without TLS pays one branch
//!   on receive, and a few (`Option::is_some` tests) per flush and per send.
//! * Closing an established session ([`Conn::close_notify_if_finishing`], called by both
//!   backends before they send or close): the close_notify alert goes after the last reply,
//!   as memcached's `SSL_shutdown` sends it, unless the handshake never finished, the session
//!   failed, or the peer ended with a bare TCP FIN.
//! * Bounds: rustls holds at most one incomplete record of input (its own limit) and nothing
//!   decrypted (drained into `rbuf` at once, which the usual limits bound, one receive's worth
//!   over at most); its output is drained into `out` at once, which `OUT_HIGH_WATER` bounds as
//!   for any connection.
//! * A handshake that fails (garbage instead of a ClientHello, no shared version or cipher, a
//!   client certificate refused) sends rustls's alert, closes that connection and counts one
//!   `ssl_handshake_errors`; any later TLS error closes the connection without counting. A
//!   handshake that stalls holds only its connection (the loop never waits for it).
//!
//! Reading the certificate files at `refresh_certs` happens on the executor that got the
//! command, as memcached does it on its worker thread: local files of at most
//! [`FILE_BYTES_MAX`] bytes each.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    NoServerSessionStorage, ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier,
};
use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme, SupportedCipherSuite,
};

use super::connection::Conn;
use super::core::Core;
use super::{strerror, StartupError};
use crate::clock::{Instant32, START};
use crate::config::TlsOptions;

/// The largest certificate, key or CA file read.
pub const FILE_BYTES_MAX: u64 = 1 << 20;
/// Sessions kept for resumption with `ssl_session_cache`.
const SESSION_CACHE_ENTRIES: usize = 16 * 1024;
/// Plaintext handed to rustls at once when sealing (it encrypts into records of at most 16 KB).
const SEAL_CHUNK_BYTES: usize = 64 * 1024;

/// memcached's exit status for files that do not load (sysexits' `EX_USAGE`).
const EX_USAGE: i32 = 64;

/// The TLS 1.2 cipher suites `ssl_ciphers` may name, by their OpenSSL names. (OpenSSL's
/// cipher list also applies only to TLS 1.2 and below; the TLS 1.3 suites stay on.)
pub const CIPHER_NAMES: &[(&str, CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The `-o ssl_*` settings, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub chain_cert: Option<String>,
    pub key: Option<String>,
    /// memcached's (OpenSSL's) file type numbers: 1 PEM, 2 DER (ASN.1).
    pub keyformat: i64,
    /// 0 none, 1 request, 2 require, 3 once (as 2: rustls never renegotiates).
    pub verify_mode: u8,
    pub ca_cert: Option<String>,
    pub ciphers: Option<String>,
    pub wbuf_bytes: u64,
    pub session_cache: bool,
    pub kernel_tls: bool,
    /// 0 TLS 1.0 .. 3 TLS 1.3.
    pub min_version: u8,
    /// The working directory at startup, which relative file paths are read from: with
    /// `-d` the daemon leaves it for `/`, and `refresh_certs` must read the same files as
    /// startup did. (The paths themselves are kept as given, for `stats settings` and the
    /// error lines.) `None` reads them from the current directory.
    pub start_dir: Option<std::path::PathBuf>,
}

/// A failure with memcached's exit status 1 (a suboption value it refuses while parsing).
fn invalid(message: String) -> StartupError {
    StartupError {
        message,
        exit_code: 1,
    }
}

/// memcached's `safe_strtol`: an optionally signed decimal integer, nothing after it but
/// spaces.
fn strtol(text: &str) -> Option<i64> {
    text.trim_end().parse().ok()
}

impl TlsSettings {
    /// Checks the values as memcached does while parsing `-o` (whether or not `-Z` is given).
    pub fn check(o: &TlsOptions) -> Result<TlsSettings, StartupError> {
        let number = |name: &str, v: &Option<String>, default: i64| match v {
            None => Ok(default),
            Some(text) => {
                strtol(text).ok_or_else(|| invalid(format!("could not parse argument to {name}")))
            }
        };
        let keyformat = number("ssl_keyformat", &o.keyformat, 1)?;
        let verify_mode = number("ssl_verify_mode", &o.verify_mode, 0)?;
        let verify_mode = u8::try_from(verify_mode)
            .ok()
            .filter(|m| *m <= 3)
            .ok_or_else(|| {
                invalid("Invalid ssl_verify_mode. Use help to see valid options.".into())
            })?;
        let min_version = number("ssl_min_version", &o.min_version, 2)?;
        let min_version = u8::try_from(min_version)
            .ok()
            .filter(|m| *m <= 3)
            .ok_or_else(|| {
                invalid("Invalid ssl_min_version. Use help to see valid options.".into())
            })?;
        let wbuf_kb = match &o.wbuf_size {
            None => 16,
            Some(text) => text
                .trim_end()
                .parse::<u32>()
                .map_err(|_| invalid("could not parse argument to ssl_wbuf_size".into()))?,
        };
        Ok(TlsSettings {
            chain_cert: o.chain_cert.clone(),
            key: o.key.clone(),
            keyformat,
            verify_mode,
            ca_cert: o.ca_cert.clone(),
            ciphers: o.ciphers.clone(),
            wbuf_bytes: u64::from(wbuf_kb) * 1024,
            session_cache: o.session_cache,
            kernel_tls: o.kernel_tls,
            min_version,
            start_dir: None,
        })
    }

    /// `stats settings` lines, in memcached's order and words.
    pub fn settings_lines(&self, enabled: bool) -> Vec<(&'static str, String)> {
        let yes_no = |on: bool| if on { "yes" } else { "no" }.to_string();
        let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_string());
        vec![
            ("ssl_enabled", yes_no(enabled)),
            ("ssl_chain_cert", or(&self.chain_cert, "(null)")),
            ("ssl_key", or(&self.key, "(null)")),
            ("ssl_verify_mode", self.verify_mode.to_string()),
            ("ssl_keyformat", self.keyformat.to_string()),
            ("ssl_ciphers", or(&self.ciphers, "NULL")),
            ("ssl_ca_cert", or(&self.ca_cert, "NULL")),
            ("ssl_wbuf_size", self.wbuf_bytes.to_string()),
            ("ssl_session_cache", yes_no(self.session_cache)),
            ("ssl_kernel_tls", yes_no(self.kernel_tls)),
            (
                "ssl_min_version",
                format!("tlsv1.{}", self.min_version.min(3)),
            ),
        ]
    }
}

/// Reads a whole file of at most [`FILE_BYTES_MAX`] bytes; the error is the C library's words
/// for the failure, as memcached prints OpenSSL's.
fn read_file(s: &TlsSettings, path: &str) -> Result<Vec<u8>, String> {
    let file = match &s.start_dir {
        Some(dir) => std::fs::File::open(dir.join(path)),
        None => std::fs::File::open(path),
    };
    let file = file.map_err(|e| strerror(&e))?;
    let mut data = Vec::new();
    file.take(FILE_BYTES_MAX + 1)
        .read_to_end(&mut data)
        .map_err(|e| strerror(&e))?;
    if data.len() as u64 > FILE_BYTES_MAX {
        return Err(format!("larger than {FILE_BYTES_MAX} bytes"));
    }
    Ok(data)
}

/// The certificates of a PEM file, at least one.
fn pem_certs(data: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e:?})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// Loads the certificate chain and key (and the CA file when client certificates are
/// checked) into a server config; the error is memcached's line for the file that failed.
fn build_config(
    s: &TlsSettings,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<ServerConfig, String> {
    let shown = |p: &Option<String>| p.clone().unwrap_or_else(|| "(null)".into());
    let chain_error = |why: String| {
        format!(
            "Error loading the certificate chain: {} : {why}",
            shown(&s.chain_cert)
        )
    };
    let key_error = |why: String| format!("Error loading the key: {} : {why}", shown(&s.key));
    let chain_path = s
        .chain_cert
        .as_deref()
        .ok_or_else(|| chain_error("no file given (-o ssl_chain_cert)".into()))?;
    let certs = pem_certs(&read_file(s, chain_path).map_err(chain_error)?).map_err(chain_error)?;
    let key_path = s
        .key
        .as_deref()
        .ok_or_else(|| key_error("no file given (-o ssl_key)".into()))?;
    let key_data = read_file(s, key_path).map_err(key_error)?;
    let key = match s.keyformat {
        1 => PrivateKeyDer::from_pem_slice(&key_data)
            .map_err(|e| key_error(format!("not a PEM private key ({e:?})")))?,
        2 => PrivateKeyDer::try_from(key_data)
            .map_err(|e| key_error(format!("not a DER private key ({e})")))?,
        n => {
            return Err(key_error(format!(
                "unsupported ssl_keyformat {n} (1: PEM, 2: DER)"
            )))
        }
    };
    let provider = Arc::new(provider(s)?);
    let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
        3 => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("Error setting the TLS versions: {e}"))?;
    let builder = match s.verify_mode {
        0 => builder.with_no_client_auth(),
        mode => builder.with_client_cert_verifier(client_verifier(s, mode, &provider)?),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| key_error(key_mismatch_words(&e)))?;
    config.session_storage = Arc::clone(sessions);
    if !s.session_cache {
        // Without the cache, resumption still works as with memcached (OpenSSL issues
        // stateless tickets by default): TLS 1.3 tickets sealed with a rotating key, nothing
        // kept per session. Sending them right after the client's Finished also acknowledges
        // it at once; without them a client that writes its first request behind its
        // Finished (Nagle) waited for the server's delayed ACK, 40 ms.
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("Error setting up session tickets: {e}"))?;
    }
    Ok(config)
}

fn key_mismatch_words(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".into(),
        other => other.to_string(),
    }
}

/// The ring provider, its TLS 1.2 suites limited to `ssl_ciphers` when given.
fn provider(s: &TlsSettings) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(list) = &s.ciphers {
        let wanted = cipher_list(list)?;
        provider.cipher_suites.retain(|suite| match suite {
            SupportedCipherSuite::Tls13(_) => true,
            SupportedCipherSuite::Tls12(_) => wanted.contains(&suite.suite()),
        });
    }
    Ok(provider)
}

/// `ssl_ciphers`: OpenSSL's separators (`:`, `,`, space) between names of [`CIPHER_NAMES`].
/// Anything else (keywords such as `HIGH`, `!` or `+` operators, other suites) is refused:
/// rustls has no equivalent for most of it, and starting with other ciphers than asked would
/// be worse than not starting.
pub fn cipher_list(list: &str) -> Result<Vec<CipherSuite>, String> {
    let refuse = || {
        let known: Vec<&str> = CIPHER_NAMES.iter().map(|(n, _)| *n).collect();
        format!(
            "Error setting the provided cipher(s): {list} (corecache accepts a list of {})",
            known.join(", ")
        )
    };
    let mut out = Vec::new();
    for name in list.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        let (_, suite) = CIPHER_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(refuse)?;
        out.push(*suite);
    }
    if out.is_empty() {
        return Err(refuse());
    }
    Ok(out)
}

/// `ssl_verify_mode` 1 (ask for a certificate, accept none) or 2 and 3 (require one), against
/// the CAs of `ssl_ca_cert`. Without that file no certificate can be verified, as in
/// memcached: every client certificate is refused.
fn client_verifier(
    s: &TlsSettings,
    mode: u8,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let Some(path) = &s.ca_cert else {
        return Ok(Arc::new(RefuseClientCerts {
            mandatory: mode >= 2,
            algorithms: provider.signature_verification_algorithms,
        }));
    };
    let ca_error = |why: String| format!("Error loading the CA certificate: {path} : {why}");
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(&read_file(s, path).map_err(ca_error)?).map_err(ca_error)? {
        roots
            .add(cert)
            .map_err(|e| ca_error(format!("not a CA certificate ({e})")))?;
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = if mode == 1 {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|e| ca_error(e.to_string()))
}

/// Client certificate checks without any CA: asks for a certificate (and requires one when
/// `mandatory`), and refuses every certificate offered.
#[derive(Debug)]
struct RefuseClientCerts {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RefuseClientCerts {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Counts the sessions stored for resumption (memcached's `ssl_new_sessions`).
#[derive(Debug)]
struct CountedSessions {
    cache: Arc<ServerSessionMemoryCache>,
    stored: Arc<AtomicU64>,
}

impl StoresServerSessions for CountedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let stored = self.cache.put(key, value);
        if stored {
            self.stored.fetch_add(1, Ordering::Relaxed);
        }
        stored
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// TLS state every core shares: the settings, and with `-Z` the current server config and
/// the counters `stats` shows.
pub struct TlsShared {
    pub settings: TlsSettings,
    pub enabled: bool,
    /// The config new connections get; replaced by `refresh_certs`.
    current: RwLock<Arc<ServerConfig>>,
    /// Bumped at each replacement of `current`, so a core knows its copy is old.
    generation: AtomicU64,
    /// The server clock (`Instant32`) at the last successful load.
    refreshed_at: AtomicI64,
    pub handshake_errors: AtomicU64,
    /// Sessions stored for resumption (`ssl_session_cache` only).
    pub new_sessions: Arc<AtomicU64>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl std::fmt::Debug for TlsShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsShared")
            .field("settings", &self.settings)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl TlsShared {
    /// Checks the settings and, with `-Z`, loads the files (memcached's messages and statuses).
    pub fn new(o: &TlsOptions, enabled: bool) -> Result<TlsShared, StartupError> {
        let mut settings = TlsSettings::check(o)?;
        settings.start_dir = std::env::current_dir().ok();
        if enabled && settings.min_version < 2 {
            return Err(invalid(format!(
                "ssl_min_version={}: corecache's TLS (rustls) speaks TLS 1.2 and 1.3 only; use 2 or 3",
                settings.min_version
            )));
        }
        let new_sessions = Arc::new(AtomicU64::new(0));
        let sessions: Arc<dyn StoresServerSessions> = if settings.session_cache {
            Arc::new(CountedSessions {
                cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
                stored: Arc::clone(&new_sessions),
            })
        } else {
            Arc::new(NoServerSessionStorage {})
        };
        let config = if enabled {
            build_config(&settings, &sessions).map_err(|message| StartupError {
                message,
                exit_code: EX_USAGE,
            })?
        } else {
            // Never used: no listener speaks TLS.
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()))
        };
        // As memcached's clock starts: a minute before the server's clock starts counting.
        let refreshed_at = i64::from(START.0) - 60;
        Ok(TlsShared {
            settings,
            enabled,
            current: RwLock::new(Arc::new(config)),
            generation: AtomicU64::new(0),
            refreshed_at: AtomicI64::new(refreshed_at),
            handshake_errors: AtomicU64::new(0),
            new_sessions,
            sessions,
        })
    }

    /// `refresh_certs`: loads the files again; on success new connections get the new config.
    pub fn refresh(&self, now: Instant32) -> Result<(), String> {
        let config = Arc::new(build_config(&self.settings, &self.sessions)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        self.generation.fetch_add(1, Ordering::Release);
        self.refreshed_at.store(i64::from(now.0), Ordering::Relaxed);
        Ok(())
    }

    /// Seconds since the files were last loaded (`time_since_server_cert_refresh`).
    pub fn secs_since_refresh(&self, now: Instant32) -> u64 {
        let at = self.refreshed_at.load(Ordering::Relaxed);
        u64::try_from(i64::from(now.0) - at).unwrap_or(0)
    }

    /// The current config, through a core's copy (`cached`), refreshed when it is old.
    pub fn config(&self, cached: &mut Option<(u64, Arc<ServerConfig>)>) -> Arc<ServerConfig> {
        let generation = self.generation.load(Ordering::Acquire);
        match cached {
            Some((g, config)) if *g == generation => Arc::clone(config),
            _ => {
                let config = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
                *cached = Some((generation, Arc::clone(&config)));
                config
            }
        }
    }
}

/// What a connection's received bytes did to its TLS session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsInput {
    /// Decrypted what could be; the session goes on.
    Open,
    /// The peer sent its close_notify: no more input.
    PeerClosed,
    /// The session failed (`handshake`: before it was established); the connection closes
    /// once rustls's alert is sent.
    Failed { handshake: bool },
}

/// One connection's TLS session.
pub struct TlsConn {
    session: ServerConnection,
    /// Plaintext moved out of `out` while it is encrypted (kept for its capacity).
    scratch: Vec<u8>,
    failed: bool,
    /// The peer's close_notify arrived.
    peer_closed: bool,
    /// Our close_notify is queued (at most once per session).
    close_notify_queued: bool,
    /// Plaintext bytes encrypted since [`Conn::seal`] last took the count (`bytes_written`
    /// counts replies, as memcached counts what `SSL_write` takes, not records).
    plain_sealed: u64,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("handshaking", &self.session.is_handshaking())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl TlsConn {
    pub fn new(config: Arc<ServerConfig>) -> Option<TlsConn> {
        let session = ServerConnection::new(config).ok()?;
        Some(TlsConn {
            session,
            scratch: Vec::new(),
            failed: false,
            peer_closed: false,
            close_notify_queued: false,
            plain_sealed: 0,
        })
    }

    /// Takes received bytes: decrypts what they complete into `rbuf`, and queues what rustls
    /// answers (handshake messages, alerts) in `out` with everything before it sealed.
    pub fn input(
        &mut self,
        mut data: &[u8],
        rbuf: &mut Vec<u8>,
        out: &mut Vec<u8>,
        sealed: &mut usize,
    ) -> TlsInput {
        if self.failed {
            return TlsInput::Failed { handshake: false };
        }
        let mut closed = false;
        while !data.is_empty() {
            let handshaking = self.session.is_handshaking();
            // Reading from a slice fails only when rustls's buffer is full, which processing
            // after every read prevents; either way the session cannot go on.
            let read = self.session.read_tls(&mut data);
            let state = match read {
                Ok(0) => break,
                Ok(_) => self.session.process_new_packets(),
                Err(_) => Err(rustls::Error::General("input buffer full".into())),
            };
            let state = match state {
                Ok(state) => state,
                Err(_) => {
                    self.failed = true;
                    self.seal(out, sealed);
                    return TlsInput::Failed {
                        handshake: handshaking,
                    };
                }
            };
            let plaintext = state.plaintext_bytes_to_read();
            if plaintext > 0 {
                let start = rbuf.len();
                rbuf.resize(start + plaintext, 0);
                let got = self.session.reader().read(&mut rbuf[start..]).unwrap_or(0);
                rbuf.truncate(start + got);
            }
            closed |= state.peer_has_closed();
        }
        if self.session.wants_write() {
            self.seal(out, sealed);
        }
        if closed {
            self.peer_closed = true;
            TlsInput::PeerClosed
        } else {
            TlsInput::Open
        }
    }

    /// Encrypts `out[*sealed..]` in place and appends whatever else rustls has to send;
    /// afterwards all of `out` is ciphertext.
    pub fn seal(&mut self, out: &mut Vec<u8>, sealed: &mut usize) {
        let start = (*sealed).min(out.len());
        if start < out.len() {
            self.scratch.clear();
            self.scratch.extend_from_slice(&out[start..]);
            out.truncate(start);
            let mut at = 0;
            while at < self.scratch.len() && !self.failed {
                let end = self.scratch.len().min(at + SEAL_CHUNK_BYTES);
                match self.session.writer().write(&self.scratch[at..end]) {
                    Ok(n) if n > 0 => {
                        at += n;
                        self.plain_sealed += n as u64;
                    }
                    // Nothing taken: the session is not established (it never is while a
                    // request could be answered) or failed; such replies cannot be sent.
                    _ => break,
                }
                drain(&mut self.session, out);
            }
            if self.scratch.capacity() > 4 * SEAL_CHUNK_BYTES {
                self.scratch = Vec::new();
            }
        }
        drain(&mut self.session, out);
        *sealed = out.len();
    }
}

impl TlsConn {
    /// Queues the close_notify alert after everything in `out` (sealing what is not yet), as
    /// memcached's `SSL_shutdown` sends it when it closes a connection: once, and only on an
    /// established session that has not failed (`SSL_shutdown` sends nothing during the
    /// handshake or after a fatal error). `server_closes` is whether the server is ending the
    /// connection (`quit`, an error, `idle_timeout`); otherwise the peer ended it, and the
    /// alert answers only its own close_notify: a bare TCP FIN is a truncated stream, and
    /// nothing is sent for it.
    pub fn close_notify(&mut self, server_closes: bool, out: &mut Vec<u8>, sealed: &mut usize) {
        let wanted = server_closes || self.peer_closed;
        if !wanted || self.close_notify_queued || self.failed || self.session.is_handshaking() {
            return;
        }
        self.seal(out, sealed);
        self.session.send_close_notify();
        drain(&mut self.session, out);
        *sealed = out.len();
        self.close_notify_queued = true;
    }
}

/// Moves every record rustls has ready into `out`.
fn drain(session: &mut ServerConnection, out: &mut Vec<u8>) {
    while session.wants_write() {
        match session.write_tls(out) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

impl Conn {
    /// Encrypts the replies queued since the last seal, on a TLS connection (for the backends,
    /// just before they send `out`). Returns the reply bytes encrypted since the last call,
    /// which a TLS connection counts in `bytes_written` instead of the bytes it sends (0 for a
    /// plain connection).
    #[inline]
    pub fn seal(&mut self) -> u64 {
        match self.tls.as_deref_mut() {
            Some(tls) => {
                tls.seal(&mut self.out, &mut self.out_sealed);
                std::mem::take(&mut tls.plain_sealed)
            }
            None => 0,
        }
    }

    /// Bytes sent on the socket that count in `bytes_written`: all of them on a plain
    /// connection; none on a TLS one, whose replies [`Conn::seal`] counted.
    #[inline]
    pub fn sent_counted(&self, sent: u64) -> u64 {
        if self.tls.is_some() {
            0
        } else {
            sent
        }
    }

    /// On a TLS connection that will produce nothing more (see [`finishing`]), queues its
    /// close_notify after the replies still to send (see [`TlsConn::close_notify`]). The
    /// backends call it before they send or close; a plain connection pays one branch.
    ///
    /// [`finishing`]: super::connection::finishing
    #[inline]
    pub fn close_notify_if_finishing(&mut self) {
        if self.tls.is_some() && super::connection::finishing(self) {
            let server_closes = self.closing;
            if let Some(tls) = self.tls.as_deref_mut() {
                tls.close_notify(server_closes, &mut self.out, &mut self.out_sealed);
            }
        }
    }
}

impl Core {
    /// A new TLS session for a connection accepted on a TLS listener (`None` if TLS is off or
    /// rustls refuses, which closes the connection).
    pub(super) fn tls_session(&mut self) -> Option<Box<TlsConn>> {
        if !self.shared.tls.enabled {
            return None;
        }
        let config = self.shared.tls.config(&mut self.tls_config);
        TlsConn::new(config).map(Box::new)
    }

    /// Received bytes of a TLS connection: decrypted into its input buffer (see
    /// [`Core::input_only`]).
    pub(super) fn input_tls(&mut self, idx: u32, data: &[u8]) {
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(tls) = c.tls.as_deref_mut() else {
            return;
        };
        let before = c.rbuf.len();
        let outcome = tls.input(data, &mut c.rbuf, &mut c.out, &mut c.out_sealed);
        self.bytes_read += c.rbuf.len().saturating_sub(before) as u64;
        match outcome {
            TlsInput::Open => {}
            TlsInput::PeerClosed => {
                let _ = self.input_eof(idx);
            }
            TlsInput::Failed { handshake } => {
                if handshake {
                    let errors = &self.shared.tls.handshake_errors;
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                c.closing = true;
                c.rbuf.clear();
                self.mark_dirty(idx);
            }
        }
    }

    /// `refresh_certs`: memcached's replies.
    pub(super) fn refresh_certs(&self) -> Vec<u8> {
        let tls = &self.shared.tls;
        if !tls.enabled {
            return b"Error TLS not enabled\r\n".to_vec();
        }
        match tls.refresh(self.now) {
            Ok(()) => b"OK\r\n".to_vec(),
            Err(why) => format!("{why}\r\n").into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(f: impl FnOnce(&mut TlsOptions)) -> TlsOptions {
        let mut o = TlsOptions::default();
        f(&mut o);
        o
    }

    fn refusal(o: &TlsOptions) -> (i32, String) {
        let e = TlsSettings::check(o).unwrap_err();
        (e.exit_code, e.message)
    }

    /// Checked against memcached 1.6.18's messages and exit statuses.
    #[test]
    fn values_are_checked_as_memcached_checks_them() {
        let d = TlsSettings::check(&TlsOptions::default()).unwrap();
        assert_eq!(
            (d.keyformat, d.verify_mode, d.wbuf_bytes, d.min_version),
            (1, 0, 16384, 2)
        );
        assert_eq!(
            refusal(&opts(|o| o.verify_mode = Some("x".into()))),
            (1, "could not parse argument to ssl_verify_mode".into())
        );
        assert_eq!(
            refusal(&opts(|o| o.verify_mode = Some("4".into()))),
            (
                1,
                "Invalid ssl_verify_mode. Use help to see valid options.".into()
            )
        );
        assert_eq!(
            refusal(&opts(|o| o.min_version = Some("-1".into()))),
            (
                1,
                "Invalid ssl_min_version. Use help to see valid options.".into()
            )
        );
        assert_eq!(
            refusal(&opts(|o| o.keyformat = Some("DER".into()))),
            (1, "could not parse argument to ssl_keyformat".into())
        );
        assert_eq!(
            refusal(&opts(|o| o.wbuf_size = Some("-1".into()))),
            (1, "could not parse argument to ssl_wbuf_size".into())
        );
        let s = TlsSettings::check(&opts(|o| o.wbuf_size = Some("0".into()))).unwrap();
        assert_eq!(s.wbuf_bytes, 0);
    }

    #[test]
    fn cipher_lists_take_the_names_rustls_has() {
        assert_eq!(
            cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305").unwrap(),
            vec![
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        for refused in ["", "HIGH:!aNULL", "TLS_AES_128_GCM_SHA256", "AES128-SHA"] {
            let e = cipher_list(refused).unwrap_err();
            assert!(
                e.starts_with(&format!("Error setting the provided cipher(s): {refused}")),
                "{e}"
            );
        }
    }
}
