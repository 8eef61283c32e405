//! Binary-protocol SASL (`-S`) as memcached 1.6.18 serves it with its password-file database
//! (`MEMCACHED_SASL_PWDB`): the PLAIN mechanism, and the file's `user:password` lines.
//!
//! memcached hands SASL to Cyrus SASL; with `MEMCACHED_SASL_PWDB` set, Cyrus checks PLAIN
//! passwords through memcached's own callback, which reads that file on every attempt. This
//! module is that callback and the PLAIN message parse; `runtime::binary` keeps each
//! connection's exchange state as Cyrus does (see [`Exchange`]).

/// What `SASL list mechs` answers: the one mechanism served.
pub const MECHANISMS: &[u8] = b"PLAIN";
/// memcached's longest mechanism name; a longer one is answered `Invalid arguments`.
pub const MECH_LEN_MAX: usize = 32;
/// memcached's line buffer for the password file (`fgets` into 256 bytes).
const ENTRY_LEN_MAX: usize = 256;
/// The most of the password file read per attempt.
pub const PWDB_READ_MAX: u64 = 1 << 20;

/// The body of a PLAIN authentication: `authzid NUL authcid NUL password`. The login is
/// `authcid`; a nonempty `authzid` must name the same user (no proxy authorization). `None`
/// for a malformed message or a refused authorization identity.
pub fn plain_login(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let authzid = parts.next()?;
    let authcid = parts.next()?;
    let password = parts.next()?;
    if authcid.is_empty() || (!authzid.is_empty() && authzid != authcid) {
        return None;
    }
    Some((authcid, password))
}

/// Whether the password file `db` has `user` with `password`, read as memcached reads it: in
/// `fgets` pieces of at most 255 bytes, the first piece starting `user:` decides; its password
/// must be followed by `:`, a line end, or the piece's end. A login longer than memcached's
/// entry buffer allows never matches.
pub fn pwdb_check(db: &[u8], user: &[u8], password: &[u8]) -> bool {
    if user.len() + password.len() > ENTRY_LEN_MAX - 4 {
        return false;
    }
    let mut rest = db;
    while !rest.is_empty() {
        let limit = rest.len().min(ENTRY_LEN_MAX - 1);
        let len = rest
            .iter()
            .take(limit)
            .position(|&b| b == b'\n')
            .map_or(limit, |nl| nl + 1);
        let (piece, after) = rest.split_at(len);
        rest = after;
        if let Some(stored) = piece
            .strip_prefix(user)
            .and_then(|tail| tail.strip_prefix(b":"))
        {
            return stored
                .strip_prefix(password)
                .is_some_and(|end| matches!(end.first(), None | Some(b':' | b'\n' | b'\r' | 0)));
        }
    }
    false
}

/// One connection's SASL exchange, as Cyrus SASL keeps it for memcached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Commands other than SASL's and `version` are served.
    pub authenticated: bool,
    /// The last `SASL auth` started an exchange (it succeeded, or awaits a `SASL step`).
    started: bool,
    /// A PLAIN exchange was started without credentials; the next step carries them.
    awaiting_step: bool,
    /// An exchange succeeded: Cyrus refuses to start another on the connection.
    completed: bool,
}

/// What a SASL request comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `Authenticated`.
    Authenticated,
    /// More is needed (`Auth continue`, empty challenge).
    Continue,
    /// `Auth failure.`
    Failed,
}

impl Exchange {
    /// `SASL list mechs`: memcached resets the connection's authentication first.
    pub fn list(&mut self) {
        self.authenticated = false;
    }

    /// `SASL auth` (`step` false) or `SASL step` with `mech` and `data`; `check` verifies a
    /// login (user, password).
    pub fn request(
        &mut self,
        step: bool,
        mech: &[u8],
        data: &[u8],
        check: impl FnOnce(&[u8], &[u8]) -> bool,
    ) -> Outcome {
        self.authenticated = false;
        let credentials = if step {
            if !self.started || !self.awaiting_step {
                return Outcome::Failed;
            }
            self.awaiting_step = false;
            data
        } else {
            self.started = false;
            self.awaiting_step = false;
            if self.completed || !mech.eq_ignore_ascii_case(MECHANISMS) {
                return Outcome::Failed;
            }
            if data.is_empty() {
                self.started = true;
                self.awaiting_step = true;
                return Outcome::Continue;
            }
            data
        };
        match plain_login(credentials) {
            Some((user, password)) if check(user, password) => {
                self.started = true;
                self.completed = true;
                self.authenticated = true;
                Outcome::Authenticated
            }
            _ => {
                self.started = false;
                Outcome::Failed
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        assert_eq!(plain_login(b"\0u\0p"), Some((&b"u"[..], &b"p"[..])));
        assert_eq!(plain_login(b"u\0u\0p"), Some((&b"u"[..], &b"p"[..])));
        assert_eq!(plain_login(b"\0u\0p\0"), Some((&b"u"[..], &b"p\0"[..])));
        assert_eq!(plain_login(b"\0u\0"), Some((&b"u"[..], &b""[..])));
        assert_eq!(plain_login(b"other\0u\0p"), None);
        assert_eq!(plain_login(b"\0\0p"), None);
        assert_eq!(plain_login(b"up"), None);
        assert_eq!(plain_login(b"\0up"), None);
        assert_eq!(plain_login(b""), None);
    }

    #[test]
    fn password_file_lines() {
        let db = b"alice:secret\nbob:pw:extra\r\ncarol:x\r\n";
        assert!(pwdb_check(db, b"alice", b"secret"));
        assert!(!pwdb_check(db, b"alice", b"secre"));
        assert!(!pwdb_check(db, b"alice", b"secrets"));
        assert!(pwdb_check(db, b"bob", b"pw"));
        assert!(pwdb_check(db, b"carol", b"x"));
        assert!(!pwdb_check(db, b"dave", b""));
        assert!(!pwdb_check(db, b"alic", b"e:secret"));
        // A last line without a newline, and the first matching user deciding.
        assert!(pwdb_check(b"a:1\na:2", b"a", b"1"));
        assert!(!pwdb_check(b"a:1\na:2", b"a", b"2"));
        // An empty password matches an empty entry.
        assert!(pwdb_check(b"e:\n", b"e", b""));
        // memcached's 256-byte entries: too long a login never matches, and a line longer
        // than a piece continues as a piece of its own.
        let long = vec![b'p'; 252];
        let mut db = b"u:".to_vec();
        db.extend_from_slice(&long);
        assert!(!pwdb_check(&db, b"u", &long));
        let mut fits = b"u:".to_vec();
        fits.extend_from_slice(&long[..251]);
        assert!(pwdb_check(&fits, b"u", &long[..251]));
        let mut db = vec![b'z'; 255];
        db.extend_from_slice(b"v:ok\n");
        assert!(pwdb_check(&db, b"v", b"ok"));
    }

    #[test]
    fn exchanges_follow_cyrus() {
        let ok = |u: &[u8], p: &[u8]| u == b"u" && p == b"p";
        let mut x = Exchange::default();
        assert_eq!(x.request(false, b"PLAIN", b"\0u\0bad", ok), Outcome::Failed);
        assert!(!x.authenticated);
        assert_eq!(x.request(true, b"PLAIN", b"\0u\0p", ok), Outcome::Failed);
        assert_eq!(
            x.request(false, b"plain", b"\0u\0p", ok),
            Outcome::Authenticated
        );
        assert!(x.authenticated);
        // A step after success fails and drops the authentication; so does a second auth.
        assert_eq!(x.request(true, b"PLAIN", b"\0u\0p", ok), Outcome::Failed);
        assert!(!x.authenticated);
        assert_eq!(x.request(false, b"PLAIN", b"\0u\0p", ok), Outcome::Failed);

        let mut x = Exchange::default();
        assert_eq!(x.request(false, b"PLAIN", b"", ok), Outcome::Continue);
        assert!(!x.authenticated);
        assert_eq!(x.request(true, b"", b"\0u\0p", ok), Outcome::Authenticated);
        x.list();
        assert!(!x.authenticated);

        let mut x = Exchange::default();
        assert_eq!(
            x.request(false, b"CRAM-MD5", b"\0u\0p", ok),
            Outcome::Failed
        );
        assert_eq!(x.request(false, b"PLAIN", b"", ok), Outcome::Continue);
        assert_eq!(x.request(true, b"", b"\0u\0no", ok), Outcome::Failed);
        assert_eq!(x.request(true, b"", b"\0u\0p", ok), Outcome::Failed);
        assert_eq!(
            x.request(false, b"PLAIN", b"\0u\0p", ok),
            Outcome::Authenticated
        );
    }
}
