# Shared helpers for the Perl client scripts (as check.py is for the Python ones): a per-run key
# prefix, value comparison with readable mismatches, and the common ending: each script prints
# "<name>: ok (<n> checks)" and exits 0, or prints each mismatch and exits 1.
package Check;

use strict;
use warnings;

use Data::Dumper;
use Exporter 'import';
use Time::HiRes qw(sleep time);

our @EXPORT = qw(k eq_check show expires_within large_value finish $PAST);

my $name = 'perl';
my $prefix = "perl:$$:";
my ($checks, $failures) = (0, 0);
# An exptime over 30 days is absolute Unix time: 30 days + 1 s is in 1970, already past.
our $PAST = 30 * 24 * 3600 + 1;

# Names the script (in its messages and its keys' prefix).
sub setup {
    ($name) = @_;
    $prefix = "$name:$$:";
}

sub k { return $prefix . $_[0] }

sub dump_value {
    local $Data::Dumper::Sortkeys = 1;
    local $Data::Dumper::Indent = 0;
    local $Data::Dumper::Useqq = 1;
    local $Data::Dumper::Terse = 1;
    return Dumper($_[0]);
}

# A value shown for a mismatch: undef, strings quoted, long values cut.
sub show {
    my $text = dump_value($_[0]);
    return length($text) <= 120 ? $text : substr($text, 0, 100) . '...<' . length($text) . ' chars>';
}

# Strings compare as strings (so 15 and "15" are the same), structures by their whole dump.
sub eq_check {
    my ($what, $got, $want) = @_;
    $checks++;
    my $same = ref($got) || ref($want) ? dump_value($got) eq dump_value($want)
        : defined $got ? defined $want && $got eq $want
        : !defined $want;
    unless ($same) {
        $failures++;
        print STDERR "$name: MISMATCH $what: got " . show($got) . ', want ' . show($want) . "\n";
    }
}

# Whether `key` reads as missing within `seconds` (polled).
sub expires_within {
    my ($mc, $key, $seconds) = @_;
    my $deadline = time + $seconds;
    while (1) {
        return 1 unless defined $mc->get($key);
        return 0 if time > $deadline;
        sleep 0.05;
    }
}

# A deterministic value of `size` bytes that is not one repeated byte.
sub large_value {
    my ($size) = @_;
    my $pattern = join '', map { chr } 0 .. 255;
    return substr($pattern x (int($size / 256) + 1), 0, $size);
}

# Runs the checks and exits with the verdict.
sub finish {
    my ($body) = @_;
    eval { $body->(); 1 } or do {
        $failures++;
        print STDERR "$name: EXCEPTION $@";
    };
    if ($failures) {
        print STDERR "$name: FAILED ($failures of $checks checks, or an exception)\n";
        exit 1;
    }
    print "$name: ok ($checks checks)\n";
    exit 0;
}

1;
