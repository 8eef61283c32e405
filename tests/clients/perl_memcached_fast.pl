#!/usr/bin/perl
# Cache::Memcached::Fast (text protocol): set/get/get_multi and the other *_multi calls,
# add/replace/append/prepend, gets/cas, gat/gats, incr/decr (missing key, non-numeric value,
# clamp at 0, 64-bit wrap), delete, touch, expiry, its flags (Storable references, gzip
# compression, UTF-8 strings), a namespace, values near 1 MB and over it (refused by the client
# at max_size, and by the server when the client lets them through), keys with edge characters
# (punctuation, UTF-8 bytes, 250 bytes; a longer key is an error the client recovers from),
# nowait mode (noreply writes), server_versions and flush_all. The module has no stats call.
#
# Usage: perl perl_memcached_fast.pl HOST:PORT. Prints "perl_memcached_fast: ok (N checks)" and
# exits 0, or prints each mismatch and exits 1.
use strict;
use warnings;
use utf8;

use FindBin;
use lib $FindBin::Bin;

use Cache::Memcached::Fast;
use Check;

my ($address) = grep { !/^-/ && /:/ } @ARGV;
die "usage: perl perl_memcached_fast.pl HOST:PORT\n" unless defined $address;
Check::setup('perl_memcached_fast');

# The outcome of a status call: 'true', 'false' (a negative reply) or 'undef' (an error).
sub status {
    my ($v) = @_;
    return 'undef' unless defined $v;
    return $v ? 'true' : 'false';
}

sub client {
    my (%options) = @_;
    return Cache::Memcached::Fast->new({
        servers => [$address],
        connect_timeout => 5,
        io_timeout => 10,
        %options,
    });
}

sub body {
    my $mc = client();

    # Plain bytes, empty, all 256 byte values, CR/LF inside a value.
    eq_check('set', status($mc->set(k('a'), 'alpha')), 'true');
    eq_check('get', $mc->get(k('a')), 'alpha');
    eq_check('get miss', $mc->get(k('missing')), undef);
    eq_check('set empty', status($mc->set(k('empty'), '')), 'true');
    eq_check('get empty', $mc->get(k('empty')), '');
    my $bytes = large_value(256);
    eq_check('set all 256 byte values', status($mc->set(k('bin'), $bytes)), 'true');
    eq_check('get all 256 byte values', $mc->get(k('bin')), $bytes);
    eq_check('set CRLF value', status($mc->set(k('crlf'), "a\r\nEND\r\nb")), 'true');
    eq_check('get CRLF value', $mc->get(k('crlf')), "a\r\nEND\r\nb");

    # set_multi / get_multi (found keys only).
    eq_check(
        'set_multi',
        [map { status($_) } $mc->set_multi([k('m1'), '1'], [k('m2'), '2'], [k('m3'), '3'])],
        ['true', 'true', 'true']
    );
    eq_check(
        'get_multi',
        $mc->get_multi(k('m1'), k('m2'), k('nope'), k('m3')),
        { k('m1') => '1', k('m2') => '2', k('m3') => '3' }
    );
    eq_check('get_multi all missing', $mc->get_multi(k('x1'), k('x2')), {});

    # add / replace / append / prepend, single and multi.
    eq_check('add new', status($mc->add(k('b'), 'beta')), 'true');
    eq_check('add existing', status($mc->add(k('b'), 'x')), 'false');
    eq_check('add did not overwrite', $mc->get(k('b')), 'beta');
    eq_check('replace', status($mc->replace(k('b'), 'beta2')), 'true');
    eq_check('replace missing', status($mc->replace(k('zz'), 'x')), 'false');
    eq_check('replace missing stores nothing', $mc->get(k('zz')), undef);
    eq_check('append', status($mc->append(k('b'), '+')), 'true');
    eq_check('prepend', status($mc->prepend(k('b'), '-')), 'true');
    eq_check('after append/prepend', $mc->get(k('b')), '-beta2+');
    eq_check('append missing', status($mc->append(k('zz'), '+')), 'false');
    eq_check('prepend missing', status($mc->prepend(k('zz'), '-')), 'false');
    eq_check(
        'add_multi',
        [map { status($_) } $mc->add_multi([k('b'), 'x'], [k('c'), 'gamma'])],
        ['false', 'true']
    );
    eq_check(
        'replace_multi',
        [map { status($_) } $mc->replace_multi([k('c'), 'gamma2'], [k('zz'), 'x'])],
        ['true', 'false']
    );
    eq_check(
        'append_multi',
        [map { status($_) } $mc->append_multi([k('c'), '>'], [k('zz'), 'x'])],
        ['true', 'false']
    );
    eq_check(
        'prepend_multi',
        [map { status($_) } $mc->prepend_multi([k('c'), '<'], [k('zz'), 'x'])],
        ['true', 'false']
    );
    eq_check('after the multi writes', $mc->get(k('c')), '<gamma2>');

    # gets / cas: the token, a cas with it, the same token again (EXISTS), a missing key.
    my $item = $mc->gets(k('b'));
    eq_check('gets value', $item && $item->[1], '-beta2+');
    eq_check('gets token', ($item && $item->[0] =~ /^[1-9][0-9]*$/) ? 1 : 0, 1);
    eq_check('cas ok', status($mc->cas(k('b'), $item->[0], 'new')), 'true');
    eq_check('cas stale', status($mc->cas(k('b'), $item->[0], 'newer')), 'false');
    eq_check('after cas', $mc->get(k('b')), 'new');
    eq_check('cas missing', status($mc->cas(k('zz'), $item->[0], 'x')), 'false');
    eq_check('cas missing stores nothing', $mc->get(k('zz')), undef);
    eq_check('gets miss', $mc->gets(k('zz')), undef);
    my $both = $mc->gets_multi(k('b'), k('c'), k('nope'));
    eq_check('gets_multi keys', [sort keys %$both], [k('b'), k('c')]);
    eq_check('gets_multi values', [map { $both->{$_}[1] } k('b'), k('c')], ['new', '<gamma2>']);
    # cas values are unique across all items (one counter for the whole server), so items
    # stored one after another have tokens all different, whichever thread holds them.
    $mc->set_multi(map { [k("u$_"), $_] } 1 .. 20);
    my $tokens = $mc->gets_multi(map { k("u$_") } 1 .. 20);
    my %distinct = map { ($_->[0] => 1) } values %$tokens;
    eq_check('gets_multi tokens of 20 keys all differ', scalar(keys %distinct), 20);
    eq_check(
        'cas_multi',
        [map { status($_) } $mc->cas_multi(
            [k('b'), $both->{k('b')}[0], 'b-cas'],
            [k('c'), $item->[0], 'c-cas'],
        )],
        ['true', 'false']
    );
    eq_check('after cas_multi', $mc->get_multi(k('b'), k('c')), { k('b') => 'b-cas', k('c') => '<gamma2>' });

    # incr / decr, single and multi. decr to zero answers "0E0" (true but zero).
    eq_check('set counter', status($mc->set(k('n'), '10')), 'true');
    eq_check('incr', $mc->incr(k('n'), 5), 15);
    eq_check('incr by default 1', $mc->incr(k('n')), 16);
    eq_check('decr', $mc->decr(k('n'), 4), 12);
    eq_check('decr below zero clamps to 0', $mc->decr(k('n'), 20), '0E0');
    # A shorter number is written over the old one in place, padded with spaces.
    eq_check('counter reads back', $mc->get(k('n')), '0 ');
    eq_check('set 99', status($mc->set(k('n99'), '99')), 'true');
    eq_check('incr past the digits stored', $mc->incr(k('n99'), 1), 100);
    eq_check('longer number reads back', $mc->get(k('n99')), '100');
    eq_check('set max', status($mc->set(k('max'), '18446744073709551615')), 'true');
    eq_check('incr wraps at 2^64', $mc->incr(k('max'), 1), '0E0');
    eq_check('set near max', status($mc->set(k('max'), '18446744073709551614')), 'true');
    eq_check('incr to 2^64 - 1', $mc->incr(k('max'), 1), '18446744073709551615');
    eq_check('incr missing', status($mc->incr(k('nn'), 1)), 'false');
    eq_check('decr missing', status($mc->decr(k('nn'), 1)), 'false');
    eq_check('incr missing stores nothing', $mc->get(k('nn')), undef);
    # A non-numeric value: CLIENT_ERROR, an error (undef); the client reconnects after it.
    eq_check('set a non-number', status($mc->set(k('text'), 'abc')), 'true');
    eq_check('incr on a non-number', status($mc->incr(k('text'), 1)), 'undef');
    eq_check('decr on a non-number', status($mc->decr(k('text'), 1)), 'undef');
    eq_check('non-number unchanged', $mc->get(k('text')), 'abc');
    # In the multi calls a negative reply (NOT_FOUND) is false, the empty string.
    eq_check(
        'incr_multi',
        [$mc->incr_multi(k('n99'), [k('n99'), 10], [k('nn'), 1])],
        [101, 111, '']
    );
    eq_check('decr_multi', [$mc->decr_multi([k('n99'), 11], [k('nn')])], [100, '']);

    # delete, delete_multi.
    eq_check('delete', status($mc->delete(k('a'))), 'true');
    eq_check('delete missing', status($mc->delete(k('a'))), 'false');
    eq_check('get deleted', $mc->get(k('a')), undef);
    eq_check(
        'delete_multi',
        [map { status($_) } $mc->delete_multi(k('m3'), k('nope'))],
        ['true', 'false']
    );
    eq_check('deleted by delete_multi', $mc->get_multi(k('m1'), k('m3')), { k('m1') => '1' });

    # Storable references (flag 1), gzip compression (flag 2), UTF-8 strings (flag 4).
    my $ref = { name => 'corecache', list => [1, 2.5, undef, 'x'], nested => { a => ['b'] } };
    eq_check('set reference', status($mc->set(k('ref'), $ref)), 'true');
    eq_check('get reference', $mc->get(k('ref')), $ref);
    my $zipper = client(compress_threshold => 1000);
    my $text = 'corecache compresses well. ' x int(3 * 1024 * 1024 / 27);
    eq_check('set 3 MB compressed', status($zipper->set(k('zipped'), $text)), 'true');
    eq_check('get 3 MB compressed', $zipper->get(k('zipped')), $text);
    eq_check('get compressed with another client', $mc->get(k('zipped')), $text);
    my $utf = client(utf8 => 1);
    my $chars = "naïve café ключ \x{1F511}";
    eq_check('set UTF-8 string', status($utf->set(k('utf8v'), $chars)), 'true');
    eq_check('get UTF-8 string', $utf->get(k('utf8v')), $chars);
    eq_check(
        'get_multi mixed flags',
        $utf->get_multi(k('ref'), k('utf8v'), k('m1')),
        { k('ref') => $ref, k('utf8v') => $chars, k('m1') => '1' }
    );

    # A namespace: the client adds it to every key it sends.
    my $ns = client(namespace => k('ns:'));
    eq_check('set in a namespace', status($ns->set('key', 'spaced')), 'true');
    eq_check('get in a namespace', $ns->get('key'), 'spaced');
    eq_check('stored under the full key', $mc->get(k('ns:key')), 'spaced');
    eq_check('get_multi in a namespace', $ns->get_multi('key', 'nope'), { key => 'spaced' });

    # Keys: punctuation, UTF-8 bytes, exactly 250 bytes. A 251-byte key is an error the
    # server reports (the client sends it); the client goes on.
    my $punct = k(q{!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~});
    eq_check('set punctuation key', status($mc->set($punct, 'p')), 'true');
    eq_check('get punctuation key', $mc->get($punct), 'p');
    my $utf8_key = k('clé-ключ');
    utf8::encode($utf8_key);
    eq_check('set UTF-8 key', status($mc->set($utf8_key, 'u')), 'true');
    eq_check('get UTF-8 key', $mc->get($utf8_key), 'u');
    eq_check(
        'get_multi UTF-8 and punctuation keys',
        $mc->get_multi($utf8_key, $punct, k('nope')),
        { $utf8_key => 'u', $punct => 'p' }
    );
    my $key250 = k('') . ('k' x (250 - length(k(''))));
    eq_check('set 250-byte key', status($mc->set($key250, 'long')), 'true');
    eq_check('get 250-byte key', $mc->get($key250), 'long');
    eq_check('get 251-byte key', $mc->get($key250 . 'k'), undef);
    eq_check('still usable after a long key', $mc->get($key250), 'long');

    # touch, gat/gats and expiry: a past Unix time and a negative exptime expire at once; a
    # short TTL expires within a few seconds while a key touched to 100 s outlives it. The
    # server's clock ticks in whole seconds, so a TTL of 2 s lives at least 1 s.
    eq_check('set ttl 2', status($mc->set(k('short'), 's', 2)), 'true');
    eq_check('set ttl 2 (to touch)', status($mc->set(k('touched'), 't', 2)), 'true');
    eq_check('set ttl 2 (to gat)', status($mc->set(k('gat'), 'g', 2)), 'true');
    eq_check('get before expiry', $mc->get(k('short')), 's');
    eq_check('touch', status($mc->touch(k('touched'), 100)), 'true');
    eq_check('touch missing', status($mc->touch(k('nothere'), 100)), 'false');
    eq_check('gat', $mc->gat(100, k('gat')), 'g');
    eq_check('gat miss', $mc->gat(100, k('nothere')), undef);
    eq_check('ttl 2 expires', expires_within($mc, k('short'), 6), 1);
    eq_check('touched outlives its first ttl', $mc->get(k('touched')), 't');
    eq_check('gat outlives its first ttl', $mc->get(k('gat')), 'g');
    my $gats = $mc->gats(100, k('gat'));
    eq_check('gats value', $gats && $gats->[1], 'g');
    eq_check('gats token', ($gats && $gats->[0] =~ /^[1-9][0-9]*$/) ? 1 : 0, 1);
    eq_check('cas with the gats token', status($mc->cas(k('gat'), $gats->[0], 'g2')), 'true');
    eq_check('gat_multi', $mc->gat_multi(100, k('gat'), k('touched'), k('nope')),
        { k('gat') => 'g2', k('touched') => 't' });
    eq_check('touch to the past', status($mc->touch(k('touched'), $PAST)), 'true');
    eq_check('expired by touch', $mc->get(k('touched')), undef);
    eq_check('gat to the past', $mc->gat($PAST, k('gat')), 'g2');
    eq_check('expired by gat', $mc->get(k('gat')), undef);
    eq_check('set with a past exptime', status($mc->set(k('e'), 'x', $PAST)), 'true');
    eq_check('past exptime expired', $mc->get(k('e')), undef);
    eq_check('set with a negative exptime', status($mc->set(k('e2'), 'x', -1)), 'true');
    eq_check('negative exptime expired', $mc->get(k('e2')), undef);
    eq_check('set at a Unix time', status($mc->set(k('unix'), 'u', int(time) + 100)), 'true');
    eq_check('Unix time kept', $mc->get(k('unix')), 'u');
    eq_check('set m2 again', status($mc->set(k('m2'), '2')), 'true');
    eq_check(
        'touch_multi',
        [map { status($_) } $mc->touch_multi([k('m2'), $PAST], [k('nope'), 100], [k('m1')])],
        ['true', 'false', 'true']
    );
    eq_check('expired by touch_multi', $mc->get_multi(k('m1'), k('m2')), { k('m1') => '1' });

    # Large values: 500 KB, near 1 MB, with other keys in one multi-get.
    my $big = large_value(500 * 1024);
    eq_check('set 500 KB', status($mc->set(k('large'), $big)), 'true');
    eq_check('get 500 KB', $mc->get(k('large')), $big);
    my $near = large_value(1024 * 1024 - 1024);
    eq_check('set near 1 MB', status($mc->set(k('near'), $near)), 'true');
    eq_check('get near 1 MB', $mc->get(k('near')), $near);
    eq_check(
        'get_multi with near 1 MB',
        $mc->get_multi(k('near'), k('m1'), k('large')),
        { k('near') => $near, k('m1') => '1', k('large') => $big }
    );
    # Over max_size (1 MB by default): undef, nothing sent.
    eq_check('set 2 MB refused by the client', status($mc->set(k('toobig'), 'x' x (2 * 1024 * 1024))), 'undef');
    # 1 MB exactly fits max_size but not the server's item size (the item header and key
    # count): SERVER_ERROR, an error; the server drops the key's old value too.
    eq_check('set old value', status($mc->set(k('over'), 'old')), 'true');
    eq_check('set 1 MB refused by the server', status($mc->set(k('over'), large_value(1024 * 1024))), 'undef');
    eq_check('refused set dropped the old value', $mc->get(k('over')), undef);
    my $lax = client(max_size => 4 * 1024 * 1024);
    eq_check('set 2 MB refused by the server', status($lax->set(k('toobig'), 'x' x (2 * 1024 * 1024))), 'undef');
    eq_check('refused value not stored', $lax->get(k('toobig')), undef);
    eq_check('still usable after the refusals', $mc->get(k('m1')), '1');

    # nowait: writes in void context go out with noreply; nowait_push waits until the server
    # has them all.
    my $quiet = client(nowait => 1);
    $quiet->set(k('q'), '1');
    $quiet->add(k('q'), 'x');
    $quiet->add(k('qa'), 'added');
    $quiet->replace(k('qa'), 'replaced');
    $quiet->append(k('q'), '0');
    $quiet->prepend(k('q'), '2');
    $quiet->incr(k('q'), 5);
    $quiet->decr(k('q'), 2);
    $quiet->touch(k('q'), 100);
    $quiet->set_multi(map { [k("q$_"), "v$_"] } 0 .. 49);
    $quiet->delete_multi(k('q7'), k('q8'));
    $quiet->delete(k('q9'));
    $quiet->nowait_push;
    eq_check('nowait incr/decr landed', $mc->get(k('q')), '213');
    eq_check('nowait add/replace landed', $mc->get(k('qa')), 'replaced');
    my %want = map { (k("q$_") => "v$_") } grep { $_ < 7 || $_ > 9 } 0 .. 49;
    eq_check('nowait set_multi/delete landed', $mc->get_multi(map { k("q$_") } 0 .. 49), \%want);
    eq_check('nowait client reads too', $quiet->get(k('qa')), 'replaced');

    # server_versions and flush_all, one entry per server.
    my $versions = $mc->server_versions;
    eq_check('versions servers', [keys %$versions], [$address]);
    eq_check('version format', ($versions->{$address} // '') =~ /^\d+\.\d+\.\d+/ ? 1 : 0, 1);
    eq_check('flush_all', { map { ($_ => status($mc->flush_all->{$_})) } $address }, { $address => 'true' });
    eq_check('flushed', $mc->get(k('m1')), undef);
    eq_check('flushed multi', $mc->get_multi(k('m1'), k('near'), k('b')), {});
    eq_check('set after flush', status($mc->set(k('after'), 'x')), 'true');
    eq_check('get after flush', $mc->get(k('after')), 'x');
    $mc->disconnect_all;
}

finish(\&body);
