# dalli (Ruby, binary protocol): strings, binary-safe, empty, near-1 MB and over-limit values,
# a UTF-8 key, add/replace/append/prepend, cas, incr/decr, delete, get_multi, quiet pipelined
# sets (multi), fetch, a namespace, Marshal of a Ruby hash, compression, version and stats,
# touch/gat, short-TTL and Unix-time expiry, flush.
#
# dalli 3.0.6 (Debian bookworm's) has only the binary protocol (no `protocol: :meta`).
# Usage: ruby dalli_client.rb HOST:PORT [--tls-ca FILE]. Prints "dalli_binary: ok (N checks)"
# and exits 0, or exits 1 with the first mismatch. With --tls-ca every client connects over TLS
# (dalli's `ssl_context`), trusting the CA certificates in FILE.

require "dalli"
require "logger"

NAME = "dalli_binary"

address = ARGV.find { |a| !a.start_with?("-") && a.include?(":") }
unless address
  warn "usage: ruby dalli_client.rb HOST:PORT [--tls-ca FILE]"
  exit 2
end

# Options every client gets: TLS when --tls-ca names a CA file.
CONNECT = {}
if (at = ARGV.index("--tls-ca"))
  require "openssl"
  ctx = OpenSSL::SSL::SSLContext.new
  ctx.set_params(verify_mode: OpenSSL::SSL::VERIFY_PEER, ca_file: ARGV.fetch(at + 1))
  CONNECT[:ssl_context] = ctx
end
# dalli 3.0.6's get_multi fails over its own TLS socket against any server (it calls `server`
# on the socket: NoMethodError), so the TLS run leaves the get_multi checks out.
GET_MULTI = CONNECT.empty?

# Dalli logs server errors at info level; a failed check says what went wrong.
Dalli.logger = Logger.new($stderr, level: Logger::WARN)

$checks = 0
PREFIX = "#{NAME}:#{Process.pid}:"

def k(suffix)
  PREFIX + suffix
end

def short(value)
  text = value.is_a?(String) ? value.b.inspect : value.inspect
  text.length <= 120 ? text : "#{text[0, 100]}...<#{text.length} chars>"
end

def mismatch(what, message)
  warn "#{NAME}: MISMATCH #{what}: #{message}"
  warn "#{NAME}: FAILED at check #{$checks}"
  exit 1
end

# Strings compare byte for byte (values come back as binary strings).
def eq(what, got, want)
  $checks += 1
  same = got.is_a?(String) && want.is_a?(String) ? got.b == want.b : got == want
  mismatch(what, "got #{short(got)}, want #{short(want)}") unless same
end

# A successful store answers the item's new cas: a positive integer.
def stored(what, got)
  $checks += 1
  mismatch(what, "got #{short(got)}, want a cas (positive integer)") unless got.is_a?(Integer) && got.positive?
end

# The block must raise `klass` with a message matching `pattern`.
def raises(what, klass, pattern)
  $checks += 1
  begin
    got = yield
  rescue klass => e
    mismatch(what, "raised #{e.class}: #{e.message}, want a message matching #{pattern.inspect}") unless pattern.match?(e.message)
    return
  end
  mismatch(what, "returned #{short(got)}, want #{klass} raised")
end

# Polls (bounded) until `get` misses; false if the key is still there at the deadline.
def expires_within(dc, key, seconds)
  deadline = Time.now + seconds
  loop do
    return true if dc.get(key).nil?
    return false if Time.now > deadline

    sleep 0.05
  end
end

# A deterministic value of `size` bytes that zlib cannot shrink.
def incompressible(size)
  Random.new(42).bytes(size)
end

def body(address)
  dc = Dalli::Client.new(address, **CONNECT, socket_timeout: 10, socket_max_failures: 0)
  raw = { raw: true }

  # Strings, binary-safe values, an empty value.
  stored("set", dc.set(k("a"), "alpha", 0, raw))
  eq("get", dc.get(k("a")), "alpha")
  eq("get miss", dc.get(k("missing")), nil)
  all_bytes = (0..255).to_a.pack("C*")
  stored("set all 256 byte values", dc.set(k("bin"), all_bytes, 0, raw))
  eq("get all 256 byte values", dc.get(k("bin")), all_bytes)
  stored("set empty", dc.set(k("empty"), "", 0, raw))
  eq("get empty", dc.get(k("empty")), "")

  # A UTF-8 key (binary protocol keys may hold any bytes).
  utf8 = k("clé-ключ-\u{1F511}")
  stored("set a UTF-8 key", dc.set(utf8, "unicode", 0, raw))
  eq("get a UTF-8 key", dc.get(utf8), "unicode")
  # get_multi answers keys as the server sent them: binary strings.
  if GET_MULTI
    eq("get_multi a UTF-8 key", dc.get_multi(utf8, k("nope")), { utf8.b => "unicode" })
  end

  # A value near the 1 MB item size limit, sent as is (compression off).
  near = incompressible(1024 * 1024 - 1024)
  stored("set near 1 MB", dc.set(k("near"), near, 0, raw: true, compress: false))
  eq("get near 1 MB", dc.get(k("near")), near)

  # Over the limit: dalli refuses it before sending (value_max_bytes, 1 MB by default) ...
  too_big = incompressible(2 * 1024 * 1024)
  raises("set 2 MB (client limit)", Dalli::ValueOverMaxSize, /over max size/) do
    dc.set(k("toobig"), too_big, 0, raw: true, compress: false)
  end
  # ... and with the client's limit raised, the server refuses it (binary status 3).
  roomy = Dalli::Client.new(address, **CONNECT, socket_timeout: 10, socket_max_failures: 0,
                                     value_max_bytes: 8 * 1024 * 1024)
  raises("set 2 MB (server limit)", Dalli::DalliError, /Response error 3: Value too large/) do
    roomy.set(k("toobig"), too_big, 0, raw: true, compress: false)
  end
  eq("still usable after the refusal", roomy.get(k("a")), "alpha")
  eq("refused value not stored", roomy.get(k("toobig")), nil)
  roomy.close

  # add / replace.
  stored("add new", dc.add(k("b"), "beta", 0, raw))
  eq("add existing", dc.add(k("b"), "x", 0, raw), false)
  stored("replace", dc.replace(k("b"), "beta2", 0, raw))
  # dalli answers a miss with the reply's cas, which is 0.
  eq("replace missing", dc.replace(k("zz"), "x", 0, raw), 0)
  eq("replace missing stores nothing", dc.get(k("zz")), nil)

  # append / prepend (raw values only).
  eq("append", dc.append(k("b"), "+"), true)
  eq("prepend", dc.prepend(k("b"), "-"), true)
  eq("after append/prepend", dc.get(k("b")), "-beta2+")
  eq("append missing", dc.append(k("zz"), "+"), false)

  # cas: the block form (gets + cas), then get_cas / set_cas with a stale token.
  stored("cas block", dc.cas(k("b"), 0, raw) { |v| "#{v}!" })
  eq("after cas block", dc.get(k("b")), "-beta2+!")
  eq("cas block on a missing key", dc.cas(k("zz")) { |v| v }, nil)
  value, token = dc.get_cas(k("b"))
  eq("get_cas value", value, "-beta2+!")
  stored("get_cas token", token)
  stored("set_cas ok", dc.set_cas(k("b"), "new", token, 0, raw))
  eq("set_cas stale", dc.set_cas(k("b"), "newer", token, 0, raw), false)
  eq("after cas", dc.get(k("b")), "new")

  # incr / decr on raw counters.
  stored("set counter", dc.set(k("n"), "10", 0, raw))
  eq("incr", dc.incr(k("n"), 5), 15)
  eq("decr", dc.decr(k("n"), 3), 12)
  eq("decr below zero clamps to 0", dc.decr(k("n"), 20), 0)
  # A shorter number is written over the old one in place, padded with spaces (as memcached).
  eq("counter reads back", dc.get(k("n")), "0 ")
  eq("incr after the clamp", dc.incr(k("n"), 1), 1)
  stored("set 99", dc.set(k("n99"), "99", 0, raw))
  eq("incr past the digits stored", dc.incr(k("n99"), 1), 100)
  eq("longer number reads back", dc.get(k("n99")), "100")
  eq("incr missing without a default", dc.incr(k("nn"), 1), nil)
  eq("incr missing with a default", dc.incr(k("nn"), 1, 0, 7), 7)
  eq("incr after the default", dc.incr(k("nn"), 1), 8)
  eq("incr wraps at 2^64", dc.incr(k("nn"), 2**64 - 8), 0)
  stored("set a non-number", dc.set(k("text"), "abc", 0, raw))
  raises("incr on a non-number", Dalli::DalliError, /Response error 6/) do
    dc.incr(k("text"), 1)
  end
  eq("non-number unchanged", dc.get(k("text")), "abc")

  # delete.
  eq("delete", dc.delete(k("a")), true)
  eq("delete missing", dc.delete(k("a")), nil)
  eq("get deleted", dc.get(k("a")), nil)

  # get_multi with missing keys, and quiet pipelined sets (setq + noop).
  dc.multi do
    %w[m1 m2 m3].each_with_index { |name, i| dc.set(k(name), (i + 1).to_s, 0, raw) }
  end
  if GET_MULTI
    eq("get_multi", dc.get_multi(k("m1"), k("m2"), k("nope"), k("m3")),
       { k("m1") => "1", k("m2") => "2", k("m3") => "3" })
    eq("get_multi with near 1 MB", dc.get_multi([k("near"), k("m1"), k("nope")]),
       { k("near") => near, k("m1") => "1" })
    eq("get_multi all missing", dc.get_multi(k("x1"), k("x2")), {})
  end

  # Marshal (dalli's default serializer) of a Ruby hash.
  hash = { "name" => "corecache", :list => [1, 2.5, nil, true, "x"], "nested" => { "a" => [:b] } }
  stored("set marshalled hash", dc.set(k("hash"), hash))
  eq("get marshalled hash", dc.get(k("hash")), hash)
  stored("set marshalled integer", dc.set(k("int"), 42))
  eq("get marshalled integer", dc.get(k("int")), 42)

  # Compression (zlib, on by default over 4 KB): 3 MB of text fits only compressed.
  text = "corecache compresses well. " * (3 * 1024 * 1024 / 27)
  stored("set 3 MB compressible", dc.set(k("zipped"), text, 0, raw))
  eq("get 3 MB compressible", dc.get(k("zipped")), text)
  stored("set compressed hash", dc.set(k("bighash"), { "text" => text }))
  eq("get compressed hash", dc.get(k("bighash")), { "text" => text })

  # touch / gat, then short-TTL expiry: `short` expires within a few seconds, while the keys
  # touched to 100 s outlive it. The server's clock ticks in whole seconds, so a TTL of 2 s
  # lives at least 1 s (1 s could end at once), enough for the checks before the touch.
  stored("set ttl 2", dc.set(k("short"), "s", 2, raw))
  stored("set ttl 2 (to touch)", dc.set(k("touched"), "t", 2, raw))
  stored("set ttl 2 (to gat)", dc.set(k("gat"), "g", 2, raw))
  eq("get before expiry", dc.get(k("short")), "s")
  eq("touch", dc.touch(k("touched"), 100), true)
  eq("touch missing", dc.touch(k("nothere"), 100), nil)
  eq("gat", dc.gat(k("gat"), 100), "g")
  eq("gat missing", dc.gat(k("nothere"), 100), nil)
  eq("ttl 2 expires", expires_within(dc, k("short"), 6), true)
  eq("touched outlives its first ttl", dc.get(k("touched")), "t")
  eq("gat outlives its first ttl", dc.get(k("gat")), "g")

  # A TTL over 30 days goes out as an absolute Unix time (dalli converts it), and so does one
  # given as a Unix time: both are kept; an absolute time 2 s ahead expires like a TTL.
  stored("set ttl 40 days", dc.set(k("days"), "d", 40 * 24 * 3600, raw))
  eq("ttl 40 days kept", dc.get(k("days")), "d")
  stored("set at a Unix time", dc.set(k("unix"), "u", Time.now.to_i + 100, raw))
  eq("Unix time kept", dc.get(k("unix")), "u")
  stored("set at a Unix time 2 s ahead", dc.set(k("unix_short"), "u", Time.now.to_i + 2, raw))
  eq("Unix time 2 s ahead expires", expires_within(dc, k("unix_short"), 6), true)

  # fetch (read-through, as Rails' cache does): a miss runs the block and adds its value.
  eq("fetch miss runs the block", dc.fetch(k("fetched"), 0, raw) { "computed" }, "computed")
  eq("fetch hit skips the block", dc.fetch(k("fetched"), 0, raw) { "again" }, "computed")
  # A namespace prefixes every key with "namespace:".
  spaced = Dalli::Client.new(address, **CONNECT, socket_timeout: 10, socket_max_failures: 0,
                                      namespace: "#{PREFIX}ns")
  stored("set in a namespace", spaced.set("key", "inside", 0, raw))
  eq("namespaced key seen plainly", dc.get(k("ns:key")), "inside")
  if GET_MULTI
    eq("get_multi in a namespace", spaced.get_multi("key", "missing"), { "key" => "inside" })
  end
  spaced.close
  if GET_MULTI
    multi_cas = dc.get_multi_cas(k("fetched"), k("nope"))
    eq("get_multi_cas keys", multi_cas.keys, [k("fetched")])
    eq("get_multi_cas value", multi_cas[k("fetched")][0], "computed")
    stored("get_multi_cas token", multi_cas[k("fetched")][1])
  end

  # version and stats, as health checks read them.
  versions = dc.version
  eq("version servers", versions.keys, [address])
  eq("version format", versions[address].to_s.match?(/\A\d+\.\d+\.\d+/), true)
  stats = dc.stats[address] || {}
  %w[pid uptime version curr_items total_items get_hits get_misses cmd_get cmd_set].each do |stat|
    eq("stats has #{stat}", stats.key?(stat), true)
  end
  eq("stats version is the version", stats["version"], versions[address])
  eq("stats settings has item_size_max", (dc.stats(:settings)[address] || {})["item_size_max"], "1048576")
  eq("stats slabs answers", (dc.stats(:slabs)[address] || {}).key?("active_slabs"), true)
  eq("stats items answers", (dc.stats(:items)[address] || {}).keys.any? { |s| s.start_with?("items:") }, true)

  # flush empties the cache; the client and the server go on.
  eq("flush", dc.flush, [true])
  eq("flushed", dc.get(k("b")), nil)
  if GET_MULTI
    eq("flushed multi", dc.get_multi(k("m1"), k("m2")), {})
  end
  stored("set after flush", dc.set(k("after"), "x", 0, raw))
  eq("get after flush", dc.get(k("after")), "x")
  dc.close
end

begin
  body(address)
rescue StandardError => e
  warn "#{NAME}: EXCEPTION #{e.class}: #{e.message}"
  warn e.backtrace.first(5).join("\n")
  exit 1
end
puts "#{NAME}: ok (#{$checks} checks)"
