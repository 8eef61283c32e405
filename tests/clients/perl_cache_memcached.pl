#!/usr/bin/perl
# Cache::Memcached (the original Perl client, text protocol): set/get/get_multi,
# add/replace/append/prepend, incr/decr (missing key, non-numeric value, clamp at 0, 64-bit
# wrap), delete (with the delay argument memcached no longer takes), expiry, its flags
# (Storable references, gzip compression), a namespace, values near 1 MB and over it (the
# client has no size limit, so the server refuses them), keys with edge characters, stats
# (misc, sizes, slabs, items and the "malloc" type memcached no longer knows) and flush_all.
# The module has no cas, touch or noreply.
#
# Usage: perl perl_cache_memcached.pl HOST:PORT. Prints "perl_cache_memcached: ok (N checks)"
# and exits 0, or prints each mismatch and exits 1.
use strict;
use warnings;
use utf8;

use FindBin;
use lib $FindBin::Bin;

use Cache::Memcached;
use Check;

my ($address) = grep { !/^-/ && /:/ } @ARGV;
die "usage: perl perl_cache_memcached.pl HOST:PORT\n" unless defined $address;
Check::setup('perl_cache_memcached');

# The outcome of a status call: 'true' or 'false'.
sub status { return $_[0] ? 'true' : 'false' }

sub client {
    my (%options) = @_;
    return Cache::Memcached->new({
        servers => [$address],
        connect_timeout => 5,
        select_timeout => 10,
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

    # get_multi: found keys only.
    $mc->set(k($_), $_) for 1 .. 3;
    eq_check(
        'get_multi',
        $mc->get_multi(k(1), k(2), k('nope'), k(3)),
        { k(1) => '1', k(2) => '2', k(3) => '3' }
    );
    eq_check('get_multi all missing', $mc->get_multi(k('x1'), k('x2')), {});

    # add / replace / append / prepend.
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

    # incr / decr: a missing key and a non-numeric value both answer undef.
    eq_check('set counter', status($mc->set(k('n'), '10')), 'true');
    eq_check('incr', $mc->incr(k('n'), 5), 15);
    eq_check('incr by default 1', $mc->incr(k('n')), 16);
    eq_check('decr', $mc->decr(k('n'), 4), 12);
    eq_check('decr below zero clamps to 0', $mc->decr(k('n'), 20), 0);
    # A shorter number is written over the old one in place, padded with spaces.
    eq_check('counter reads back', $mc->get(k('n')), '0 ');
    eq_check('set 99', status($mc->set(k('n99'), '99')), 'true');
    eq_check('incr past the digits stored', $mc->incr(k('n99'), 1), 100);
    eq_check('longer number reads back', $mc->get(k('n99')), '100');
    eq_check('set max', status($mc->set(k('max'), '18446744073709551615')), 'true');
    eq_check('incr wraps at 2^64', $mc->incr(k('max'), 1), 0);
    eq_check('incr missing', $mc->incr(k('nn'), 1), undef);
    eq_check('decr missing', $mc->decr(k('nn'), 1), undef);
    eq_check('set a non-number', status($mc->set(k('text'), 'abc')), 'true');
    eq_check('incr on a non-number', $mc->incr(k('text'), 1), undef);
    eq_check('decr on a non-number', $mc->decr(k('text'), 1), undef);
    eq_check('non-number unchanged', $mc->get(k('text')), 'abc');
    eq_check('incr by -1', $mc->incr(k('n99'), -1), undef);
    eq_check('counter unchanged by a bad delta', $mc->get(k('n99')), '100');

    # delete; a delay is refused by memcached 1.6 (CLIENT_ERROR), so the key stays.
    eq_check('delete', status($mc->delete(k('a'))), 'true');
    eq_check('delete missing', status($mc->delete(k('a'))), 'false');
    eq_check('get deleted', $mc->get(k('a')), undef);
    eq_check('delete with a delay', status($mc->delete(k('b'), 5)), 'false');
    eq_check('not deleted with a delay', $mc->get(k('b')), '-beta2+');
    eq_check('delete with a zero delay', status($mc->delete(k('b'), 0)), 'true');
    eq_check('deleted with a zero delay', $mc->get(k('b')), undef);

    # Storable references (flag 1) and gzip compression (flag 2).
    my $ref = { name => 'corecache', list => [1, 2.5, undef, 'x'], nested => { a => ['b'] } };
    eq_check('set reference', status($mc->set(k('ref'), $ref)), 'true');
    eq_check('get reference', $mc->get(k('ref')), $ref);
    my $zipper = client(compress_threshold => 1000);
    my $text = 'corecache compresses well. ' x int(3 * 1024 * 1024 / 27);
    eq_check('set 3 MB compressed', status($zipper->set(k('zipped'), $text)), 'true');
    eq_check('get 3 MB compressed', $zipper->get(k('zipped')), $text);
    eq_check(
        'get_multi mixed flags',
        $mc->get_multi(k('ref'), k('zipped'), k(1)),
        { k('ref') => $ref, k('zipped') => $text, k(1) => '1' }
    );

    # A namespace: the client adds it to every key it sends.
    my $ns = client(namespace => k('ns:'));
    eq_check('set in a namespace', status($ns->set('key', 'spaced')), 'true');
    eq_check('get in a namespace', $ns->get('key'), 'spaced');
    eq_check('stored under the full key', $mc->get(k('ns:key')), 'spaced');
    eq_check('get_multi in a namespace', $ns->get_multi('key', 'nope'), { key => 'spaced' });

    # Keys: punctuation, UTF-8 bytes, exactly 250 bytes.
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

    # Expiry: a past Unix time and a negative exptime expire at once, a short TTL within a few
    # seconds (the server's clock ticks in whole seconds, so a TTL of 2 s lives at least 1 s).
    eq_check('set ttl 2', status($mc->set(k('short'), 's', 2)), 'true');
    eq_check('get before expiry', $mc->get(k('short')), 's');
    eq_check('ttl 2 expires', expires_within($mc, k('short'), 6), 1);
    eq_check('set with a past exptime', status($mc->set(k('e'), 'x', $PAST)), 'true');
    eq_check('past exptime expired', $mc->get(k('e')), undef);
    eq_check('set with a negative exptime', status($mc->set(k('e2'), 'x', -1)), 'true');
    eq_check('negative exptime expired', $mc->get(k('e2')), undef);
    eq_check('set at a Unix time', status($mc->set(k('unix'), 'u', int(time) + 100)), 'true');
    eq_check('Unix time kept', $mc->get(k('unix')), 'u');

    # Large values: 500 KB, near 1 MB, with other keys in one multi-get; over 1 MB the server
    # refuses (SERVER_ERROR), reads past the value and goes on; a refused set drops the key's
    # old value.
    my $big = large_value(500 * 1024);
    eq_check('set 500 KB', status($mc->set(k('large'), $big)), 'true');
    eq_check('get 500 KB', $mc->get(k('large')), $big);
    my $near = large_value(1024 * 1024 - 1024);
    eq_check('set near 1 MB', status($mc->set(k('near'), $near)), 'true');
    eq_check('get near 1 MB', $mc->get(k('near')), $near);
    eq_check(
        'get_multi with near 1 MB',
        $mc->get_multi(k('near'), k(1), k('large')),
        { k('near') => $near, k(1) => '1', k('large') => $big }
    );
    eq_check('set old value', status($mc->set(k('over'), 'old')), 'true');
    eq_check('set 1 MB refused', status($mc->set(k('over'), large_value(1024 * 1024))), 'false');
    eq_check('refused set dropped the old value', $mc->get(k('over')), undef);
    eq_check('set 2 MB refused', status($mc->set(k('toobig'), 'x' x (2 * 1024 * 1024))), 'false');
    eq_check('refused value not stored', $mc->get(k('toobig')), undef);
    eq_check('still usable after the refusals', $mc->get(k(1)), '1');

    # stats: the general stats ("misc"), the key-value "sizes", "slabs" and "items" as text,
    # and "malloc", which memcached 1.6 answers with ERROR (so no fields).
    my $stats = $mc->stats([qw(misc malloc sizes slabs items)]);
    my $host = $stats->{hosts}{$address} // {};
    eq_check('stats hosts', [keys %{ $stats->{hosts} // {} }], [$address]);
    for my $stat (qw(pid uptime time version curr_items total_items cmd_get get_hits threads)) {
        eq_check("stats has $stat", exists $host->{misc}{$stat} ? 1 : 0, 1);
    }
    eq_check('stats threads', $host->{misc}{threads}, '2');
    eq_check('stats total curr_items', $stats->{total}{curr_items}, $host->{misc}{curr_items});
    eq_check('stats malloc has no fields', $host->{malloc} // {}, {});
    eq_check('stats sizes', $host->{sizes}, { sizes_status => 'disabled' });
    eq_check('stats slabs lists classes', ($host->{slabs} // '') =~ /^STAT \d+:chunk_size \d+\r$/m ? 1 : 0, 1);
    eq_check('stats slabs active_slabs', ($host->{slabs} // '') =~ /^STAT active_slabs \d+\r$/m ? 1 : 0, 1);
    eq_check('stats items lists classes', ($host->{items} // '') =~ /^STAT items:\d+:number \d+\r$/m ? 1 : 0, 1);
    eq_check('still usable after stats', $mc->get(k(1)), '1');

    # flush_all empties the cache; the client and the server go on.
    eq_check('flush_all', status($mc->flush_all), 'true');
    eq_check('flushed', $mc->get(k(1)), undef);
    eq_check('flushed multi', $mc->get_multi(k(1), k('near'), k('ref')), {});
    eq_check('set after flush', status($mc->set(k('after'), 'x')), 'true');
    eq_check('get after flush', $mc->get(k('after')), 'x');
    $mc->disconnect_all;
}

finish(\&body);
