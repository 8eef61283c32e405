// spymemcached (Java), Debian bookworm's 2.12.3: the text protocol (DefaultConnectionFactory)
// by default, the binary protocol (BinaryConnectionFactory) with --binary. Strings, byte
// arrays (binary-safe, empty, ~500 KB, over-limit), the serializing transcoder (integers,
// longs, lists) and its compression, UTF-8 keys, keys with spaces (binary only), the client's
// own key validation, getBulk over many keys (both shards), asyncGet / asyncGets / asyncGetBulk
// futures and completion listeners, add/replace, append/prepend (whose cas argument the binary
// protocol checks), gets + cas (OK, EXISTS, NOT_FOUND), delete, incr/decr with and without
// default values, touch, getAndTouch (binary; the text protocol version refuses it), TTL and
// Unix-time expiry, getStats (and their counts moving), getVersions, flush.
//
// Built by tests/clients.rs with javac against /usr/share/java/spymemcached.jar.
// Usage: java -cp <classes>:/usr/share/java/spymemcached.jar SpymemcachedClient HOST:PORT
// [--binary]. Prints "spymemcached_<text|binary>: ok (N checks)" and exits 0, or exits 1 with
// the first mismatch.

import java.net.SocketAddress;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.logging.Level;
import java.util.logging.Logger;

import net.spy.memcached.AddrUtil;
import net.spy.memcached.BinaryConnectionFactory;
import net.spy.memcached.CASResponse;
import net.spy.memcached.CASValue;
import net.spy.memcached.ConnectionFactory;
import net.spy.memcached.DefaultConnectionFactory;
import net.spy.memcached.MemcachedClient;
import net.spy.memcached.internal.BulkFuture;
import net.spy.memcached.internal.GetFuture;
import net.spy.memcached.internal.OperationFuture;

public final class SpymemcachedClient {
    /** How long one operation may take (the default, 2.5 s, is short on a busy 2-core machine). */
    private static final long OPERATION_TIMEOUT_MS = 10_000;
    /** An exptime over 30 days is an absolute Unix time: 30 days and 1 s is in 1970, past. */
    private static final int PAST = 30 * 24 * 3600 + 1;

    private static String name = "spymemcached_text";
    private static String prefix = "";
    private static int checks = 0;
    /** Held so that the logging level set on it stays (java.util.logging keeps weak references). */
    private static Logger spyLogger;

    private SpymemcachedClient() {}

    private static String k(String suffix) {
        return prefix + suffix;
    }

    private static String show(Object value) {
        String text;
        if (value instanceof byte[]) {
            byte[] bytes = (byte[]) value;
            text = "byte[" + bytes.length + "] " + Arrays.toString(Arrays.copyOf(bytes, Math.min(bytes.length, 16)));
        } else if (value instanceof String) {
            text = '"' + ((String) value).replace("\r", "\\r").replace("\n", "\\n") + '"';
        } else {
            text = String.valueOf(value);
        }
        return text.length() <= 120 ? text : text.substring(0, 100) + "...<" + text.length() + " chars>";
    }

    private static void mismatch(String what, String message) {
        System.err.println(name + ": MISMATCH " + what + ": " + message);
        System.err.println(name + ": FAILED at check " + checks);
        System.exit(1);
    }

    /** Equal by equals(), byte arrays by content. */
    private static void eq(String what, Object got, Object want) {
        checks++;
        boolean same = (got instanceof byte[] && want instanceof byte[])
                ? Arrays.equals((byte[]) got, (byte[]) want)
                : Objects.equals(got, want);
        if (!same) {
            mismatch(what, "got " + show(got) + ", want " + show(want));
        }
    }

    private static void isTrue(String what, boolean condition) {
        eq(what, condition, true);
    }

    /** A future's result within the operation timeout. */
    private static <T> T await(String what, Future<T> future) {
        try {
            return future.get(OPERATION_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            mismatch(what, "future failed: " + e);
            return null;
        }
    }

    /** The message of the exception a future fails with (a mismatch if it succeeds). */
    private static String failure(String what, Future<?> future) {
        checks++;
        try {
            Object result = future.get(OPERATION_TIMEOUT_MS, TimeUnit.MILLISECONDS);
            mismatch(what, "answered " + show(result) + ", want a failure");
        } catch (ExecutionException e) {
            return e.getCause() == null ? String.valueOf(e.getMessage()) : e.getCause().toString();
        } catch (Exception e) {
            mismatch(what, "future failed otherwise: " + e);
        }
        return null;
    }

    /** The body must throw `type` with a message containing `part`. */
    private static void raises(String what, Class<? extends Throwable> type, String part, Runnable body) {
        checks++;
        try {
            body.run();
        } catch (Throwable e) {
            if (!type.isInstance(e) || !String.valueOf(e.getMessage()).contains(part)) {
                mismatch(what, "threw " + e + ", want " + type.getSimpleName() + " containing " + show(part));
            }
            return;
        }
        mismatch(what, "returned normally, want " + type.getSimpleName() + " thrown");
    }

    /** Polls (bounded) until get misses; false if the key is still there at the deadline. */
    private static boolean expiresWithin(MemcachedClient c, String key, long millis) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(millis);
        while (true) {
            if (c.get(key) == null) {
                return true;
            }
            if (System.nanoTime() > deadline) {
                return false;
            }
            Thread.sleep(50);
        }
    }

    /** A deterministic value of `size` bytes that gzip cannot shrink (so it is sent as is). */
    private static byte[] incompressible(int size) {
        byte[] out = new byte[size];
        new Random(42).nextBytes(out);
        return out;
    }

    private static long stat(Map<String, String> stats, String stat) {
        String text = stats.get(stat);
        if (text == null) {
            mismatch("stats " + stat, "absent from " + stats.keySet());
        }
        return Long.parseLong(text);
    }

    private static MemcachedClient connect(String address, boolean binary) throws Exception {
        ConnectionFactory factory = binary
                ? new BinaryConnectionFactory() {
                    @Override
                    public long getOperationTimeout() {
                        return OPERATION_TIMEOUT_MS;
                    }
                }
                : new DefaultConnectionFactory() {
                    @Override
                    public long getOperationTimeout() {
                        return OPERATION_TIMEOUT_MS;
                    }
                };
        return new MemcachedClient(factory, AddrUtil.getAddresses(address));
    }

    private static void values(MemcachedClient c, boolean binary) {
        // Strings (stored as their UTF-8 bytes), a miss, binary-safe and empty byte arrays.
        isTrue("set", await("set", c.set(k("a"), 0, "alpha")));
        eq("get", c.get(k("a")), "alpha");
        eq("get miss", c.get(k("missing")), null);
        byte[] all = new byte[256];
        for (int i = 0; i < all.length; i++) {
            all[i] = (byte) i;
        }
        isTrue("set all 256 byte values", await("set bytes", c.set(k("bin"), 0, all)));
        eq("get all 256 byte values", c.get(k("bin")), all);
        isTrue("set empty", await("set empty", c.set(k("empty"), 0, new byte[0])));
        eq("get empty", c.get(k("empty")), new byte[0]);
        isTrue("set empty string", await("set empty string", c.set(k("empty_string"), 0, "")));
        eq("get empty string", c.get(k("empty_string")), "");

        // The serializing transcoder: scalars keep their type (flags say which), objects are
        // Java-serialized.
        isTrue("set int", await("set int", c.set(k("int"), 0, 42)));
        eq("get int", c.get(k("int")), 42);
        isTrue("set long", await("set long", c.set(k("long"), 0, 1L << 40)));
        eq("get long", c.get(k("long")), 1L << 40);
        ArrayList<Object> list = new ArrayList<>(Arrays.asList("corecache", 1, 2.5, true, null));
        isTrue("set list", await("set list", c.set(k("list"), 0, list)));
        eq("get list", c.get(k("list")), list);

        // UTF-8 keys go out as their bytes, in either protocol.
        String utf8 = k("clé-ключ-\uD83D\uDD11");
        isTrue("set a UTF-8 key", await("set utf8", c.set(utf8, 0, "unicode")));
        eq("get a UTF-8 key", c.get(utf8), "unicode");
        eq("getBulk a UTF-8 key", c.getBulk(utf8, k("nope")), Map.of(utf8, "unicode"));
        // Keys with spaces: refused by the client in text, any bytes in binary.
        if (binary) {
            isTrue("set a key with a space", await("set space", c.set(k("a key"), 0, "spaced")));
            eq("get a key with a space", c.get(k("a key")), "spaced");
        } else {
            raises("set a key with a space", IllegalArgumentException.class, "Key contains invalid characters",
                    () -> c.set(k("a key"), 0, "x"));
            raises("get a key with a newline", IllegalArgumentException.class, "Key contains invalid characters",
                    () -> c.get(k("a\nkey")));
        }
        raises("set a 251-byte key", IllegalArgumentException.class, "Key is too long",
                () -> c.set("k".repeat(251), 0, "x"));
        raises("get the empty key", IllegalArgumentException.class, "at least one character", () -> c.get(""));
        String longest = prefix + "L".repeat(250 - prefix.length());
        isTrue("set a 250-byte key", await("set longest", c.set(longest, 0, "long")));
        eq("get a 250-byte key", c.get(longest), "long");

        // A ~500 KB value sent as is, a 3 MB string that fits only compressed (gzip over 16 KB).
        byte[] large = incompressible(500 * 1024);
        isTrue("set 500 KB", await("set 500 KB", c.set(k("large"), 0, large)));
        eq("get 500 KB", c.get(k("large")), large);
        String text = "corecache compresses well. ".repeat(3 * 1024 * 1024 / 27);
        isTrue("set 3 MB compressible", await("set 3 MB", c.set(k("zipped"), 0, text)));
        eq("get 3 MB compressible", c.get(k("zipped")), text);
    }

    private static void tooLarge(MemcachedClient c, boolean binary) {
        // Over the 1 MB item limit: the server refuses it (its block swallowed). The binary
        // future answers false with the status's message; the text one fails with the
        // SERVER_ERROR line (and spymemcached reconnects, as it does after any SERVER_ERROR).
        OperationFuture<Boolean> refused = c.set(k("toobig"), 0, incompressible(2 * 1024 * 1024));
        if (binary) {
            eq("set 2 MB", await("set 2 MB", refused), false);
            eq("set 2 MB status", refused.getStatus().getMessage(), "Too large.");
        } else {
            eq("set 2 MB", failure("set 2 MB", refused),
                    "OperationException: SERVER: SERVER_ERROR object too large for cache");
        }
        eq("refused value not stored", c.get(k("toobig")), null);
        eq("still usable after the refusal", c.get(k("a")), "alpha");
    }

    private static void storeCommands(MemcachedClient c, boolean binary) {
        // add / replace.
        isTrue("add new", await("add", c.add(k("b"), 0, "beta")));
        eq("add existing", await("add existing", c.add(k("b"), 0, "x")), false);
        eq("add existing keeps the value", c.get(k("b")), "beta");
        isTrue("replace", await("replace", c.replace(k("b"), 0, "beta2")));
        eq("replace missing", await("replace missing", c.replace(k("zz"), 0, "x")), false);
        eq("replace missing stores nothing", c.get(k("zz")), null);

        // append / prepend take a cas: the text protocol has no place for it (ignored), the
        // binary protocol checks it (0 means any).
        CASValue<Object> before = c.gets(k("b"));
        eq("gets before append", before.getValue(), "beta2");
        isTrue("append", await("append", c.append(before.getCas(), k("b"), "+")));
        isTrue("prepend (cas 0)", await("prepend", c.prepend(0, k("b"), "-")));
        eq("after append/prepend", c.get(k("b")), "-beta2+");
        OperationFuture<Boolean> staleAppend = c.append(before.getCas(), k("b"), "!");
        eq("append with a stale cas", await("append stale", staleAppend), !binary);
        eq("after append with a stale cas", c.get(k("b")), binary ? "-beta2+" : "-beta2+!");
        isTrue("append (no cas)", await("append no cas", c.append(k("b"), "?")));
        eq("after append (no cas)", c.get(k("b")), binary ? "-beta2+?" : "-beta2+!?");
        eq("append missing", await("append missing", c.append(0, k("zz"), "+")), false);
        eq("prepend missing", await("prepend missing", c.prepend(0, k("zz"), "-")), false);
        eq("append missing stores nothing", c.get(k("zz")), null);

        // gets + cas: OK, then the same cas is stale (EXISTS), a missing key is NOT_FOUND.
        isTrue("set for cas", await("set for cas", c.set(k("c"), 0, "one")));
        CASValue<Object> token = c.gets(k("c"));
        eq("gets value", token.getValue(), "one");
        isTrue("gets cas is positive", token.getCas() > 0);
        eq("cas ok", c.cas(k("c"), token.getCas(), "two"), CASResponse.OK);
        eq("after cas", c.get(k("c")), "two");
        eq("cas stale", c.cas(k("c"), token.getCas(), "three"), CASResponse.EXISTS);
        eq("after stale cas", c.get(k("c")), "two");
        CASValue<Object> fresh = c.gets(k("c"));
        isTrue("cas changes with each write", fresh.getCas() != token.getCas());
        eq("cas with an expiration", c.cas(k("c"), fresh.getCas(), 100, "four"), CASResponse.OK);
        eq("after cas with an expiration", c.get(k("c")), "four");
        eq("cas missing", c.cas(k("zz"), token.getCas(), "x"), CASResponse.NOT_FOUND);
        eq("gets missing", c.gets(k("zz")), null);
        // The cas a store answers (binary) is the one gets reads.
        if (binary) {
            OperationFuture<Boolean> stored = c.set(k("c"), 0, "five");
            isTrue("set answering a cas", await("set with cas", stored));
            eq("set's cas is gets'", stored.getCas(), c.gets(k("c")).getCas());
        }

        // delete, and (binary) delete with a cas: a stale one is refused, the current one deletes.
        if (binary) {
            isTrue("set to delete by cas", await("set del", c.set(k("del"), 0, "d")));
            long current = c.gets(k("del")).getCas();
            eq("delete with a stale cas", await("delete stale", c.delete(k("del"), current + 1)), false);
            eq("stale delete kept the item", c.get(k("del")), "d");
            isTrue("delete with the current cas", await("delete cas", c.delete(k("del"), current)));
            eq("deleted by cas", c.get(k("del")), null);
        }
        isTrue("delete", await("delete", c.delete(k("a"))));
        eq("delete missing", await("delete missing", c.delete(k("a"))), false);
        eq("get deleted", c.get(k("a")), null);
    }

    private static void counters(MemcachedClient c, boolean binary) {
        // Counters are stored as decimal strings (raw, so the server can count them).
        isTrue("set counter", await("set counter", c.set(k("n"), 0, "10")));
        eq("incr", c.incr(k("n"), 5), 15L);
        eq("decr", c.decr(k("n"), 3), 12L);
        eq("decr below zero clamps to 0", c.decr(k("n"), 20), 0L);
        // A shorter number is written over the old one in place, padded with spaces (as memcached).
        eq("counter reads back", c.get(k("n")), "0 ");
        eq("incr after the clamp", c.incr(k("n"), 1), 1L);
        isTrue("set 99", await("set 99", c.set(k("n99"), 0, "99")));
        eq("incr past the digits stored", c.incr(k("n99"), 1), 100L);
        eq("longer number reads back", c.get(k("n99")), "100");
        isTrue("set 2^64-1", await("set max", c.set(k("max"), 0, "18446744073709551615")));
        // spymemcached reads counters as signed longs: 2^64 wraps to 0, 2^64-2 reads as -2.
        eq("incr wraps at 2^64", c.incr(k("max"), 1), 0L);
        eq("decr at 0 stays 0", c.decr(k("max"), 1), 0L);

        // A missing counter: -1 without a default; with one, it is created (binary: the
        // server's initial value; text: spymemcached adds it).
        eq("incr missing", c.incr(k("nn"), 1), -1L);
        eq("decr missing", c.decr(k("nn"), 1), -1L);
        eq("incr missing stores nothing", c.get(k("nn")), null);
        eq("incr missing with a default", c.incr(k("nn"), 1, 7), 7L);
        eq("incr after the default", c.incr(k("nn"), 1, 7), 8L);
        eq("decr missing with a default", c.decr(k("dd"), 1, 3), 3L);
        eq("decr after the default", c.decr(k("dd"), 1, 3), 2L);
        eq("the default reads back", c.get(k("dd")), "2");
        eq("incr missing with a default and an expiration", c.incr(k("de"), 1, 5, 100), 5L);
        eq("incr with a default and an expiration after", c.incr(k("de"), 1, 5, 100), 6L);
        OperationFuture<Long> async = c.asyncIncr(k("n"), 10);
        eq("asyncIncr", await("asyncIncr", async), 11L);
        eq("asyncDecr", await("asyncDecr", c.asyncDecr(k("n"), 4)), 7L);

        // A non-numeric value: the binary status 6 answers -1 with the status's message; the
        // text CLIENT_ERROR line fails the future (and spymemcached reconnects).
        isTrue("set a non-number", await("set text", c.set(k("text"), 0, "abc")));
        OperationFuture<Long> nonNumeric = c.asyncIncr(k("text"), 1);
        if (binary) {
            eq("incr on a non-number", await("incr non-number", nonNumeric), -1L);
            eq("incr on a non-number status", nonNumeric.getStatus().getMessage(),
                    "Non-numeric server-side value for incr or decr");
        } else {
            eq("incr on a non-number", failure("incr non-number", nonNumeric),
                    "OperationException: CLIENT: CLIENT_ERROR cannot increment or decrement non-numeric value");
        }
        eq("non-number unchanged", c.get(k("text")), "abc");
    }

    private static void bulk(MemcachedClient c) throws Exception {
        // 64 keys land on both of the server's shards: getBulk, asyncGetBulk, asyncGet.
        Map<String, Object> want = new HashMap<>();
        List<String> keys = new ArrayList<>();
        List<OperationFuture<Boolean>> sets = new ArrayList<>();
        for (int i = 0; i < 64; i++) {
            String key = k("m" + i);
            String value = "value-" + i + "-" + "x".repeat(i);
            sets.add(c.set(key, 0, value));
            want.put(key, value);
            keys.add(key);
            keys.add(k("nope" + i));
        }
        for (OperationFuture<Boolean> set : sets) {
            isTrue("pipelined set " + set.getKey(), await("set", set));
        }
        eq("getBulk", c.getBulk(keys), want);
        BulkFuture<Map<String, Object>> bulk = c.asyncGetBulk(keys);
        eq("asyncGetBulk", await("asyncGetBulk", bulk), want);
        isTrue("asyncGetBulk status", bulk.getStatus().isSuccess());
        eq("getBulk all missing", c.getBulk(k("x1"), k("x2")), Map.of());

        // Many asyncGets in flight at once, then their results.
        List<GetFuture<Object>> gets = new ArrayList<>();
        for (String key : keys) {
            gets.add(c.asyncGet(key));
        }
        for (int i = 0; i < keys.size(); i++) {
            eq("asyncGet " + keys.get(i), await("asyncGet", gets.get(i)), want.get(keys.get(i)));
        }
        OperationFuture<CASValue<Object>> asyncGets = c.asyncGets(k("m1"));
        CASValue<Object> token = await("asyncGets", asyncGets);
        eq("asyncGets value", token.getValue(), want.get(k("m1")));
        eq("asyncGets cas matches gets", token.getCas(), c.gets(k("m1")).getCas());

        // A completion listener runs once the reply is in.
        CountDownLatch done = new CountDownLatch(1);
        AtomicBoolean listenerSaw = new AtomicBoolean(false);
        c.set(k("listened"), 0, "heard").addListener(future -> {
            listenerSaw.set(Boolean.TRUE.equals(future.get()) && future.getStatus().isSuccess());
            done.countDown();
        });
        isTrue("listener called", done.await(OPERATION_TIMEOUT_MS, TimeUnit.MILLISECONDS));
        isTrue("listener saw the set succeed", listenerSaw.get());
        eq("listened value", c.get(k("listened")), "heard");
    }

    private static void expiry(MemcachedClient c, boolean binary) throws Exception {
        // touch, then short-TTL expiry: `short` expires within a few seconds, while the key
        // touched to 100 s outlives it. The server's clock ticks in whole seconds, so a TTL of
        // 2 s lives at least 1 s (1 s could end at once), enough for the checks before the touch.
        isTrue("set ttl 2", await("set ttl 2", c.set(k("short"), 2, "s")));
        isTrue("set ttl 2 (to touch)", await("set touched", c.set(k("touched"), 2, "t")));
        isTrue("set ttl 2 (to gat)", await("set gat", c.set(k("gat"), 2, "g")));
        eq("get before expiry", c.get(k("short")), "s");
        isTrue("touch", await("touch", c.touch(k("touched"), 100)));
        eq("touch missing", await("touch missing", c.touch(k("nothere"), 100)), false);
        if (binary) {
            CASValue<Object> touched = c.getAndTouch(k("gat"), 100);
            eq("getAndTouch", touched == null ? null : touched.getValue(), "g");
            eq("getAndTouch missing", c.getAndTouch(k("nothere"), 100), null);
        } else {
            raises("getAndTouch (text)", UnsupportedOperationException.class, "not supported for ASCII",
                    () -> c.getAndTouch(k("gat"), 100));
            isTrue("touch (for gat)", await("touch gat", c.touch(k("gat"), 100)));
        }
        isTrue("ttl 2 expires", expiresWithin(c, k("short"), 6000));
        eq("touched outlives its first ttl", c.get(k("touched")), "t");
        eq("getAndTouch outlives its first ttl", c.get(k("gat")), "g");
        isTrue("touch to a past Unix time", await("touch past", c.touch(k("touched"), PAST)));
        eq("touched into the past expired", c.get(k("touched")), null);

        // An expiration over 30 days is an absolute Unix time: one ahead is kept, one past is
        // expired at once, and one 2 s ahead expires like a TTL.
        int now = (int) (System.currentTimeMillis() / 1000);
        isTrue("set at a Unix time", await("set unix", c.set(k("unix"), now + 100, "u")));
        eq("Unix time kept", c.get(k("unix")), "u");
        isTrue("set at a past Unix time", await("set past", c.set(k("past"), PAST, "p")));
        eq("past Unix time expired", c.get(k("past")), null);
        isTrue("set at a Unix time 2 s ahead", await("set unix short", c.set(k("unix_short"), now + 2, "u")));
        isTrue("Unix time 2 s ahead expires", expiresWithin(c, k("unix_short"), 6000));
    }

    private static void statsAndVersions(MemcachedClient c, SocketAddress server) {
        Map<SocketAddress, String> versions = c.getVersions();
        eq("getVersions servers", versions.keySet(), Set.of(server));
        String version = versions.values().iterator().next();
        isTrue("version format " + version, version != null && version.matches("\\d+\\.\\d+\\.\\d+.*"));

        Map<SocketAddress, Map<String, String>> all = c.getStats();
        eq("getStats servers", all.keySet(), Set.of(server));
        Map<String, String> stats = all.values().iterator().next();
        for (String stat : List.of("pid", "uptime", "time", "version", "curr_items", "total_items",
                "cmd_get", "cmd_set", "get_hits", "get_misses", "curr_connections")) {
            isTrue("stats has " + stat, stats.containsKey(stat));
        }
        isTrue("stats pid", stat(stats, "pid") > 0);
        eq("stats version is the version", stats.get("version"), version);
        long unixNow = System.currentTimeMillis() / 1000;
        isTrue("stats time is now", Math.abs(stat(stats, "time") - unixNow) <= 2);
        // The counts move with this client's commands (the server is this program's own).
        isTrue("set for the counts", await("set counted", c.set(k("counted"), 0, "x")));
        Map<String, String> before = c.getStats().values().iterator().next();
        for (int i = 0; i < 5; i++) {
            eq("counted get", c.get(k("counted")), "x");
        }
        for (int i = 0; i < 3; i++) {
            eq("counted miss", c.get(k("uncounted" + i)), null);
        }
        isTrue("counted set", await("set counted again", c.set(k("counted2"), 0, "y")));
        Map<String, String> after = c.getStats().values().iterator().next();
        eq("cmd_get counts the gets", stat(after, "cmd_get") - stat(before, "cmd_get"), 8L);
        eq("get_hits counts the hits", stat(after, "get_hits") - stat(before, "get_hits"), 5L);
        eq("get_misses counts the misses", stat(after, "get_misses") - stat(before, "get_misses"), 3L);
        eq("cmd_set counts the set", stat(after, "cmd_set") - stat(before, "cmd_set"), 1L);
        eq("curr_items counts the new item", stat(after, "curr_items") - stat(before, "curr_items"), 1L);
        Map<String, String> settings = c.getStats("settings").values().iterator().next();
        eq("stats settings item_size_max", settings.get("item_size_max"), "1048576");
    }

    private static void flush(MemcachedClient c) {
        isTrue("flush", await("flush", c.flush()));
        eq("flushed", c.get(k("b")), null);
        eq("flushed bulk", c.getBulk(k("m1"), k("m2")), Map.of());
        isTrue("set after flush", await("set after flush", c.set(k("after"), 0, "x")));
        eq("get after flush", c.get(k("after")), "x");
    }

    public static void main(String[] args) throws Exception {
        boolean binary = Arrays.asList(args).contains("--binary");
        String address = Arrays.stream(args).filter(a -> !a.startsWith("-") && a.contains(":"))
                .findFirst().orElse(null);
        if (address == null) {
            System.err.println("usage: SpymemcachedClient HOST:PORT [--binary]");
            System.exit(2);
        }
        name = binary ? "spymemcached_binary" : "spymemcached_text";
        prefix = name + ":" + ProcessHandle.current().pid() + ":";
        // spymemcached logs every connection at INFO: through java.util.logging, warnings only.
        System.setProperty("net.spy.log.LoggerImpl", "net.spy.memcached.compat.log.SunLogger");
        spyLogger = Logger.getLogger("net.spy.memcached");
        spyLogger.setLevel(Level.WARNING);

        MemcachedClient c = connect(address, binary);
        try {
            values(c, binary);
            tooLarge(c, binary);
            storeCommands(c, binary);
            counters(c, binary);
            bulk(c);
            expiry(c, binary);
            statsAndVersions(c, AddrUtil.getAddresses(address).get(0));
            flush(c);
        } catch (Exception e) {
            System.err.println(name + ": EXCEPTION " + e);
            e.printStackTrace();
            System.exit(1);
        } finally {
            c.shutdown(OPERATION_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        }
        System.out.println(name + ": ok (" + checks + " checks)");
    }
}
