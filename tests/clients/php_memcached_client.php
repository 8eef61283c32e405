<?php
// PHP's memcached extension (libmemcached): text protocol by default, binary with --binary.
// Strings, binary-safe, empty, near-1 MB and over-limit values, a UTF-8 key, add/replace/
// append/prepend, cas, incr/decr, delete, getMulti/getDelayed/deleteMulti, getAllKeys, the
// extension's serializer (arrays and scalars), compression, noreply writes, version and stats,
// the session handler, touch, short-TTL and Unix-time expiry, flush. Checks the result codes
// apps branch on, too.
//
// Usage: php php_memcached_client.php HOST:PORT [--binary]. Prints
// "php_memcached_<text|binary>: ok (N checks)" and exits 0, or exits 1 with the first mismatch.

declare(strict_types=1);

$binary = in_array('--binary', $argv, true);
$name = 'php_memcached_' . ($binary ? 'binary' : 'text');
$address = null;
foreach (array_slice($argv, 1) as $arg) {
    if ($arg[0] !== '-' && str_contains($arg, ':')) {
        $address = $arg;
        break;
    }
}
if ($address === null) {
    fwrite(STDERR, "usage: php php_memcached_client.php HOST:PORT [--binary]\n");
    exit(2);
}
[$host, $port] = explode(':', $address, 2);

// Any warning or notice from the extension is a failure too.
set_error_handler(function (int $severity, string $message, string $file, int $line): bool {
    throw new ErrorException($message, 0, $severity, $file, $line);
});

$checks = 0;
$prefix = "$name:" . getmypid() . ':';

function k(string $suffix): string
{
    global $prefix;
    return $prefix . $suffix;
}

function short(mixed $value): string
{
    $text = is_string($value)
        ? '"' . addcslashes($value, "\0..\37\177..\377\"\\") . '"'
        : var_export($value, true);
    $text = preg_replace('/\s+/', ' ', $text);
    return strlen($text) <= 120 ? $text : substr($text, 0, 100) . '...<' . strlen($text) . ' chars>';
}

function mismatch(string $what, string $message): never
{
    global $name, $checks;
    fwrite(STDERR, "$name: MISMATCH $what: $message\n");
    fwrite(STDERR, "$name: FAILED at check $checks\n");
    exit(1);
}

// Identical (===): type and value, arrays in order.
function eq(string $what, mixed $got, mixed $want): void
{
    global $checks;
    $checks++;
    if ($got !== $want) {
        mismatch($what, 'got ' . short($got) . ', want ' . short($want));
    }
}

// The result code of the last operation, by name (RES_NOTFOUND, ...).
function code(Memcached $m, string $what, string $want): void
{
    global $checks;
    $checks++;
    $got = $m->getResultCode();
    if ($got !== constant("Memcached::$want")) {
        $names = array_flip(array_filter(
            (new ReflectionClass('Memcached'))->getConstants(),
            fn ($k) => str_starts_with($k, 'RES_'),
            ARRAY_FILTER_USE_KEY
        ));
        mismatch("$what (result code)", 'got ' . ($names[$got] ?? $got) . " ({$m->getResultMessage()}), want $want");
    }
}

// Polls (bounded) until `get` misses; false if the key is still there at the deadline.
function expires_within(Memcached $m, string $key, float $seconds): bool
{
    $deadline = microtime(true) + $seconds;
    while (true) {
        if ($m->get($key) === false && $m->getResultCode() === Memcached::RES_NOTFOUND) {
            return true;
        }
        if (microtime(true) > $deadline) {
            return false;
        }
        usleep(50000);
    }
}

// A deterministic value of `size` bytes that zlib cannot shrink.
function incompressible(int $size): string
{
    return (new Random\Randomizer(new Random\Engine\Mt19937(42)))->getBytes($size);
}

function client(string $host, int $port, bool $binary): Memcached
{
    $m = new Memcached();
    $m->setOption(Memcached::OPT_BINARY_PROTOCOL, $binary);
    $m->setOption(Memcached::OPT_CONNECT_TIMEOUT, 5000);
    $m->setOption(Memcached::OPT_POLL_TIMEOUT, 10000);
    $m->addServer($host, $port);
    return $m;
}

function body(Memcached $m, bool $binary): void
{
    // Strings, binary-safe values, an empty value.
    eq('set', $m->set(k('a'), 'alpha'), true);
    eq('get', $m->get(k('a')), 'alpha');
    code($m, 'get', 'RES_SUCCESS');
    eq('get miss', $m->get(k('missing')), false);
    code($m, 'get miss', 'RES_NOTFOUND');
    $allBytes = implode(array_map('chr', range(0, 255)));
    eq('set all 256 byte values', $m->set(k('bin'), $allBytes), true);
    eq('get all 256 byte values', $m->get(k('bin')), $allBytes);
    eq('set empty', $m->set(k('empty'), ''), true);
    eq('get empty', $m->get(k('empty')), '');
    code($m, 'get empty', 'RES_SUCCESS');

    // A UTF-8 key: the extension takes only printable ASCII keys in text mode (refused before
    // anything is sent), any bytes in binary mode.
    $utf8 = k("clé-ключ-\u{1F511}");
    if ($binary) {
        eq('set a UTF-8 key', $m->set($utf8, 'unicode'), true);
        eq('get a UTF-8 key', $m->get($utf8), 'unicode');
        eq('getMulti a UTF-8 key', $m->getMulti([$utf8, k('nope')]), [$utf8 => 'unicode']);
    } else {
        eq('set a UTF-8 key', $m->set($utf8, 'unicode'), false);
        code($m, 'set a UTF-8 key', 'RES_BAD_KEY_PROVIDED');
    }

    // A value near the 1 MB item size limit (incompressible, so it is sent as is).
    $near = incompressible(1024 * 1024 - 1024);
    eq('set near 1 MB', $m->set(k('near'), $near), true);
    eq('get near 1 MB', $m->get(k('near')), $near);

    // Over the limit: the server refuses it, and the connection goes on.
    eq('set 2 MB', $m->set(k('toobig'), incompressible(2 * 1024 * 1024)), false);
    code($m, 'set 2 MB', 'RES_E2BIG');
    eq('still usable after the refusal', $m->get(k('a')), 'alpha');
    eq('refused value not stored', $m->get(k('toobig')), false);

    // add / replace.
    eq('add new', $m->add(k('b'), 'beta'), true);
    eq('add existing', $m->add(k('b'), 'x'), false);
    code($m, 'add existing', $binary ? 'RES_DATA_EXISTS' : 'RES_NOTSTORED');
    eq('replace', $m->replace(k('b'), 'beta2'), true);
    eq('replace missing', $m->replace(k('zz'), 'x'), false);
    code($m, 'replace missing', $binary ? 'RES_NOTFOUND' : 'RES_NOTSTORED');
    eq('replace missing stores nothing', $m->get(k('zz')), false);

    // append / prepend: the extension allows them only with compression off.
    $m->setOption(Memcached::OPT_COMPRESSION, false);
    eq('append', $m->append(k('b'), '+'), true);
    eq('prepend', $m->prepend(k('b'), '-'), true);
    eq('after append/prepend', $m->get(k('b')), '-beta2+');
    eq('append missing', $m->append(k('zz'), '+'), false);
    code($m, 'append missing', 'RES_NOTSTORED');
    $m->setOption(Memcached::OPT_COMPRESSION, true);

    // cas: gets (GET_EXTENDED) + cas, then the same token again is stale.
    $item = $m->get(k('b'), null, Memcached::GET_EXTENDED);
    eq('gets value', $item['value'] ?? null, '-beta2+');
    eq('gets token', is_int($item['cas'] ?? null) && $item['cas'] > 0, true);
    eq('cas ok', $m->cas($item['cas'], k('b'), 'new'), true);
    eq('cas stale', $m->cas($item['cas'], k('b'), 'newer'), false);
    code($m, 'cas stale', 'RES_DATA_EXISTS');
    eq('after cas', $m->get(k('b')), 'new');
    eq('cas missing', $m->cas($item['cas'], k('zz'), 'x'), false);
    code($m, 'cas missing', 'RES_NOTFOUND');

    // incr / decr.
    eq('set counter', $m->set(k('n'), '10'), true);
    eq('incr', $m->increment(k('n'), 5), 15);
    eq('decr', $m->decrement(k('n'), 3), 12);
    eq('decr below zero clamps to 0', $m->decrement(k('n'), 20), 0);
    // A shorter number is written over the old one in place, padded with spaces (as memcached).
    eq('counter reads back', $m->get(k('n')), '0 ');
    eq('incr after the clamp', $m->increment(k('n'), 1), 1);
    eq('set 99', $m->set(k('n99'), '99'), true);
    eq('incr past the digits stored', $m->increment(k('n99'), 1), 100);
    eq('longer number reads back', $m->get(k('n99')), '100');
    eq('incr missing', $m->increment(k('nn'), 1), false);
    code($m, 'incr missing', 'RES_NOTFOUND');
    if ($binary) {
        // An initial value needs the binary protocol.
        eq('incr missing with an initial value', $m->increment(k('nn'), 1, 7), 7);
        eq('incr after the initial value', $m->increment(k('nn'), 1), 8);
    }
    eq('set a non-number', $m->set(k('text'), 'abc'), true);
    // libmemcached reports the binary protocol's non-numeric status (6) as an unknown read failure.
    eq('incr on a non-number', $m->increment(k('text'), 1), false);
    code($m, 'incr on a non-number', $binary ? 'RES_UNKNOWN_READ_FAILURE' : 'RES_CLIENT_ERROR');
    eq('non-number unchanged', $m->get(k('text')), 'abc');

    // delete.
    eq('delete', $m->delete(k('a')), true);
    eq('delete missing', $m->delete(k('a')), false);
    code($m, 'delete missing', 'RES_NOTFOUND');
    eq('get deleted', $m->get(k('a')), false);

    // setMulti / getMulti with missing keys (found keys only; in order with PRESERVE_ORDER).
    eq('setMulti', $m->setMulti([k('m1') => '1', k('m2') => '2', k('m3') => '3']), true);
    $got = $m->getMulti([k('m1'), k('m2'), k('nope'), k('m3')]);
    ksort($got);
    eq('getMulti', $got, [k('m1') => '1', k('m2') => '2', k('m3') => '3']);
    eq(
        'getMulti preserving order',
        $m->getMulti([k('m3'), k('nope'), k('m1')], Memcached::GET_PRESERVE_ORDER),
        [k('m3') => '3', k('nope') => null, k('m1') => '1']
    );
    $got = $m->getMulti([k('near'), k('m1'), k('nope')]);
    ksort($got);
    eq('getMulti with near 1 MB', $got, [k('m1') => '1', k('near') => $near]);
    eq('getMulti all missing', $m->getMulti([k('x1'), k('x2')]), []);

    // getAllKeys (libmemcached's dump: `stats cachedump` of every class, text protocol only)
    // answers a list. memcached lists only the cold part of its LRU, so which keys appear is
    // its choice; any key listed is one stored here (the server is this script's own).
    if (!$binary) {
        $all = $m->getAllKeys();
        eq('getAllKeys answers a list', is_array($all), true);
        $foreign = array_filter($all, fn ($key) => !str_starts_with($key, k('')));
        eq('getAllKeys lists only stored keys', array_values($foreign), []);
    }

    // The extension's serializer: arrays, and scalars keep their type.
    $array = ['name' => 'corecache', 'list' => [1, 2.5, null, true, 'x'], 'nested' => ['a' => ['b']]];
    eq('set array', $m->set(k('array'), $array), true);
    eq('get array', $m->get(k('array')), $array);
    eq('set int', $m->set(k('int'), 42), true);
    eq('get int', $m->get(k('int')), 42);
    eq('set float', $m->set(k('float'), 2.5), true);
    eq('get float', $m->get(k('float')), 2.5);
    eq('set bool', $m->set(k('bool'), true), true);
    eq('get bool', $m->get(k('bool')), true);

    // Compression (on by default over 2000 bytes): 3 MB of text fits only compressed.
    $text = str_repeat('corecache compresses well. ', intdiv(3 * 1024 * 1024, 27));
    eq('set 3 MB compressible', $m->set(k('zipped'), $text), true);
    eq('get 3 MB compressible', $m->get(k('zipped')), $text);
    eq('set compressed array', $m->set(k('bigarray'), ['text' => $text]), true);
    eq('get compressed array', $m->get(k('bigarray')), ['text' => $text]);

    // touch, then short-TTL expiry: `short` expires within a few seconds, while the key touched
    // to 100 s outlives it. The server's clock ticks in whole seconds, so a TTL of 2 s lives at
    // least 1 s (1 s could end at once), enough for the checks before the touch.
    eq('set ttl 2', $m->set(k('short'), 's', 2), true);
    eq('set ttl 2 (to touch)', $m->set(k('touched'), 't', 2), true);
    eq('get before expiry', $m->get(k('short')), 's');
    eq('touch', $m->touch(k('touched'), 100), true);
    eq('touch missing', $m->touch(k('nothere'), 100), false);
    code($m, 'touch missing', 'RES_NOTFOUND');
    eq('ttl 2 expires', expires_within($m, k('short'), 6.0), true);
    eq('touched outlives its first ttl', $m->get(k('touched')), 't');

    // An expiration over 30 days is an absolute Unix time: one ahead is kept, one past is
    // expired at once, and one 2 s ahead expires like a TTL.
    eq('set at a Unix time', $m->set(k('unix'), 'u', time() + 100), true);
    eq('Unix time kept', $m->get(k('unix')), 'u');
    eq('set at a past Unix time', $m->set(k('past'), 'p', time() - 100), true);
    eq('past Unix time expired', $m->get(k('past')), false);
    eq('set at a Unix time 2 s ahead', $m->set(k('unix_short'), 'u', time() + 2), true);
    eq('Unix time 2 s ahead expires', expires_within($m, k('unix_short'), 6.0), true);

    // getDelayed + fetchAll (with cas tokens), deleteMulti.
    eq('getDelayed', $m->getDelayed([k('m1'), k('nope'), k('m2')], true), true);
    $fetched = $m->fetchAll();
    usort($fetched, fn ($x, $y) => strcmp($x['key'], $y['key']));
    eq('fetchAll keys', array_column($fetched, 'key'), [k('m1'), k('m2')]);
    eq('fetchAll values', array_column($fetched, 'value'), ['1', '2']);
    eq('fetchAll cas', count(array_filter(array_column($fetched, 'cas'), fn ($c) => $c > 0)), 2);
    eq(
        'deleteMulti',
        $m->deleteMulti([k('m3'), k('nope')]),
        [k('m3') => true, k('nope') => Memcached::RES_NOTFOUND]
    );
    eq('deleted by deleteMulti', $m->get(k('m3')), false);

    // Pipelined writes without replies (text noreply, binary quiet commands), then read back.
    $quiet = client(HOST, PORT, $binary);
    $quiet->setOption(Memcached::OPT_NOREPLY, true);
    $quiet->setOption(Memcached::OPT_BUFFER_WRITES, true);
    for ($i = 0; $i < 100; $i++) {
        $quiet->set(k("q$i"), "v$i");
    }
    $quiet->delete(k('q7'));
    $quiet->quit();
    $want = [];
    for ($i = 0; $i < 100; $i++) {
        if ($i !== 7) {
            $want[k("q$i")] = "v$i";
        }
    }
    $keys = array_map(fn ($i) => k("q$i"), range(0, 99));
    $got = $m->getMulti($keys);
    ksort($got);
    ksort($want);
    eq('noreply writes all landed', $got, $want);

    // version and stats, as health checks read them.
    $server = HOST . ':' . PORT;
    $versions = $m->getVersion();
    eq('version servers', array_keys($versions), [$server]);
    eq('version format', preg_match('/^\d+\.\d+\.\d+/', (string) $versions[$server]), 1);
    $stats = $m->getStats()[$server] ?? [];
    foreach (['pid', 'uptime', 'version', 'curr_items', 'total_items', 'get_hits', 'cmd_get'] as $stat) {
        eq("stats has $stat", array_key_exists($stat, $stats), true);
    }
    eq('stats version is the version', $stats['version'] ?? null, $versions[$server]);
    eq('stats pid', is_int($stats['pid'] ?? null) && $stats['pid'] > 0, true);

    // The extension's session handler: locking (add of a lock key), read, write, unlock.
    ini_set('session.save_handler', 'memcached');
    ini_set('session.save_path', $server);
    ini_set('session.use_cookies', '0');
    ini_set('session.cache_limiter', '');
    ini_set('memcached.sess_binary_protocol', $binary ? '1' : '0');
    ini_set('memcached.sess_prefix', k('sess.'));
    session_id('corecache' . getmypid());
    eq('session start', session_start(), true);
    $_SESSION['user'] = 'alice';
    $_SESSION['cart'] = [1, 2, 3];
    eq('session write', session_write_close(), true);
    eq('session stored', $m->get(k('sess.') . session_id()) !== false, true);
    eq('session unlocked', $m->get(k('sess.lock.') . session_id()), false);
    $_SESSION = [];
    eq('session restart', session_start(), true);
    eq('session read back', $_SESSION, ['user' => 'alice', 'cart' => [1, 2, 3]]);
    eq('session destroy', session_destroy(), true);
    eq('session deleted', $m->get(k('sess.') . session_id()), false);

    // flush empties the cache; the client and the server go on.
    eq('flush', $m->flush(), true);
    eq('flushed', $m->get(k('b')), false);
    code($m, 'flushed', 'RES_NOTFOUND');
    eq('flushed multi', $m->getMulti([k('m1'), k('m2')]), []);
    eq('set after flush', $m->set(k('after'), 'x'), true);
    eq('get after flush', $m->get(k('after')), 'x');
}

try {
    define('HOST', $host);
    define('PORT', (int) $port);
    $m = client(HOST, PORT, $binary);
    body($m, $binary);
    $m->quit();
} catch (Throwable $e) {
    fwrite(STDERR, "$name: EXCEPTION " . get_class($e) . ': ' . $e->getMessage() . "\n");
    fwrite(STDERR, $e->getTraceAsString() . "\n");
    exit(1);
}
echo "$name: ok ($checks checks)\n";
