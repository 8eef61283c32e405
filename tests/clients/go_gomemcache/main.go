// gomemcache (Go, text protocol), Debian bookworm's github.com/bradfitz/gomemcache (a 2014
// snapshot: it has no Append, Prepend, Ping or stats, so those are not checked here): Set/Get
// with client flags, binary-safe, empty, ~500 KB and over-limit values, GetMulti over many keys
// (both shards), Add/Replace, CompareAndSwap (ok, stale, on a deleted key), Delete,
// Increment/Decrement (clamp, wrap, missing, non-numeric), Touch, TTL and Unix-time expiry,
// the client's own key validation, concurrent use from goroutines, FlushAll/DeleteAll, and,
// given a second server, keys spread over both by ServerList.
//
// Built by tests/clients.rs with Debian's source (GO111MODULE=off, GOPATH=/usr/share/gocode).
// Usage: go_gomemcache HOST:PORT [HOST:PORT]. Prints "gomemcache: ok (N checks)" and exits 0,
// or exits 1 with the first mismatch.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

const name = "gomemcache"

var (
	checks int
	prefix = fmt.Sprintf("%s:%d:", name, os.Getpid())
)

func k(suffix string) string { return prefix + suffix }

func short(value interface{}) string {
	var text string
	switch v := value.(type) {
	case []byte:
		text = fmt.Sprintf("%q", v)
	case error:
		text = fmt.Sprintf("error(%q)", v.Error())
	case nil:
		text = "nil"
	default:
		text = fmt.Sprintf("%#v", v)
	}
	if len(text) > 120 {
		return fmt.Sprintf("%s...<%d chars>", text[:100], len(text))
	}
	return text
}

func mismatch(what, message string) {
	fmt.Fprintf(os.Stderr, "%s: MISMATCH %s: %s\n", name, what, message)
	fmt.Fprintf(os.Stderr, "%s: FAILED at check %d\n", name, checks)
	os.Exit(1)
}

// eq compares with ==, or byte for byte for []byte.
func eq(what string, got, want interface{}) {
	checks++
	gotBytes, gotIsBytes := got.([]byte)
	wantBytes, wantIsBytes := want.([]byte)
	var same bool
	switch {
	case gotIsBytes && wantIsBytes:
		same = bytes.Equal(gotBytes, wantBytes)
	case gotIsBytes || wantIsBytes:
		same = false
	default:
		same = got == want
	}
	if !same {
		mismatch(what, fmt.Sprintf("got %s, want %s", short(got), short(want)))
	}
}

// ok fails on any error.
func ok(what string, err error) {
	checks++
	if err != nil {
		mismatch(what, fmt.Sprintf("error %q", err.Error()))
	}
}

// fails wants exactly the error `want` (a sentinel such as memcache.ErrCacheMiss).
func fails(what string, err, want error) {
	checks++
	if err != want {
		mismatch(what, fmt.Sprintf("got %s, want %s", short(err), short(want)))
	}
}

// failsWith wants an error whose message is exactly `want`.
func failsWith(what string, err error, want string) {
	checks++
	if err == nil || err.Error() != want {
		mismatch(what, fmt.Sprintf("got %s, want error(%q)", short(err), want))
	}
}

// value is Get's value, or the error's text (so a miss reads as a mismatch, not a crash).
func value(c *memcache.Client, key string) interface{} {
	item, err := c.Get(key)
	if err != nil {
		return err
	}
	return item.Value
}

// expiresWithin polls (bounded) until Get misses; false if the key is still there at the deadline.
func expiresWithin(c *memcache.Client, key string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if _, err := c.Get(key); err == memcache.ErrCacheMiss {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// largeValue is `size` bytes that are not one repeated byte (catches offset bugs).
func largeValue(size int) []byte {
	out := make([]byte, size)
	for i := range out {
		out[i] = byte(i % 251)
	}
	return out
}

func client(servers ...string) *memcache.Client {
	c := memcache.New(servers...)
	// The default (100 ms) is short for a ~500 KB value on a busy two-core machine.
	c.Timeout = 10 * time.Second
	return c
}

func set(c *memcache.Client, key string, value []byte, flags uint32, expiration int32) error {
	return c.Set(&memcache.Item{Key: key, Value: value, Flags: flags, Expiration: expiration})
}

func values(c *memcache.Client) {
	// Set / Get with client flags, binary-safe and empty values, a miss.
	ok("set", set(c, k("a"), []byte("alpha"), 0, 0))
	eq("get", value(c, k("a")), []byte("alpha"))
	ok("set with flags", set(c, k("flags"), []byte("f"), 0xdeadbeef, 0))
	item, err := c.Get(k("flags"))
	ok("get with flags", err)
	eq("flags round trip", item.Flags, uint32(0xdeadbeef))
	eq("item key", item.Key, k("flags"))
	_, err = c.Get(k("missing"))
	fails("get miss", err, memcache.ErrCacheMiss)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	ok("set all 256 byte values", set(c, k("bin"), all, 0, 0))
	eq("get all 256 byte values", value(c, k("bin")), all)
	ok("set empty", set(c, k("empty"), []byte{}, 0, 0))
	eq("get empty", value(c, k("empty")), []byte{})

	// A ~500 KB value, and one over the 1 MB item limit: the server refuses it with
	// SERVER_ERROR (gomemcache passes the line on) and swallows its data block.
	large := largeValue(500 * 1024)
	ok("set 500 KB", set(c, k("large"), large, 0, 0))
	eq("get 500 KB", value(c, k("large")), large)
	err = set(c, k("toobig"), largeValue(2*1024*1024), 0, 0)
	failsWith("set 2 MB", err,
		`memcache: unexpected response line from "set": "SERVER_ERROR object too large for cache\r\n"`)
	_, err = c.Get(k("toobig"))
	fails("refused value not stored", err, memcache.ErrCacheMiss)
	eq("still usable after the refusal", value(c, k("a")), []byte("alpha"))

	// Add / Replace.
	ok("add new", c.Add(&memcache.Item{Key: k("b"), Value: []byte("beta")}))
	fails("add existing", c.Add(&memcache.Item{Key: k("b"), Value: []byte("x")}), memcache.ErrNotStored)
	eq("add existing keeps the value", value(c, k("b")), []byte("beta"))
	ok("replace", c.Replace(&memcache.Item{Key: k("b"), Value: []byte("beta2"), Flags: 7}))
	item, err = c.Get(k("b"))
	ok("get replaced", err)
	eq("replaced value", item.Value, []byte("beta2"))
	eq("replaced flags", item.Flags, uint32(7))
	fails("replace missing", c.Replace(&memcache.Item{Key: k("zz"), Value: []byte("x")}), memcache.ErrNotStored)
	_, err = c.Get(k("zz"))
	fails("replace missing stores nothing", err, memcache.ErrCacheMiss)

	// CompareAndSwap with the cas from Get (Get sends `gets`); the same item again is stale.
	item, err = c.Get(k("b"))
	ok("get for cas", err)
	stale, err := c.Get(k("b"))
	ok("second get for cas", err)
	item.Value = []byte("swapped")
	ok("cas ok", c.CompareAndSwap(item))
	eq("after cas", value(c, k("b")), []byte("swapped"))
	stale.Value = []byte("lost")
	fails("cas with a stale cas", c.CompareAndSwap(stale), memcache.ErrCASConflict)
	eq("stale cas stores nothing", value(c, k("b")), []byte("swapped"))
	// A Set between Get and CompareAndSwap makes the cas stale too.
	item, err = c.Get(k("b"))
	ok("get for a conflicting set", err)
	ok("conflicting set", set(c, k("b"), []byte("other writer"), 0, 0))
	item.Value = []byte("late")
	fails("cas after a conflicting set", c.CompareAndSwap(item), memcache.ErrCASConflict)
	eq("conflicting set kept", value(c, k("b")), []byte("other writer"))
	// A deleted key answers NOT_FOUND, which gomemcache reports as a cache miss.
	item, err = c.Get(k("b"))
	ok("get for cas on a deleted key", err)
	ok("delete before cas", c.Delete(k("b")))
	fails("cas on a deleted key", c.CompareAndSwap(item), memcache.ErrCacheMiss)

	// Delete.
	ok("delete", c.Delete(k("a")))
	fails("delete missing", c.Delete(k("a")), memcache.ErrCacheMiss)
	_, err = c.Get(k("a"))
	fails("get deleted", err, memcache.ErrCacheMiss)
}

func counters(c *memcache.Client) {
	ok("set counter", set(c, k("n"), []byte("10"), 0, 0))
	n, err := c.Increment(k("n"), 5)
	ok("incr", err)
	eq("incr value", n, uint64(15))
	n, err = c.Decrement(k("n"), 3)
	ok("decr", err)
	eq("decr value", n, uint64(12))
	n, err = c.Decrement(k("n"), 20)
	ok("decr below zero", err)
	eq("decr below zero clamps to 0", n, uint64(0))
	// A shorter number is written over the old one in place, padded with spaces (as memcached).
	eq("counter reads back", value(c, k("n")), []byte("0 "))
	ok("set 1", set(c, k("wrap"), []byte("1"), 0, 0))
	n, err = c.Increment(k("wrap"), 1<<64-1)
	ok("incr to 2^64", err)
	eq("incr wraps at 2^64", n, uint64(0))
	ok("set 99", set(c, k("n99"), []byte("99"), 0, 0))
	n, err = c.Increment(k("n99"), 1)
	ok("incr past the digits stored", err)
	eq("incr past the digits stored value", n, uint64(100))
	eq("longer number reads back", value(c, k("n99")), []byte("100"))
	_, err = c.Increment(k("nn"), 1)
	fails("incr missing", err, memcache.ErrCacheMiss)
	_, err = c.Decrement(k("nn"), 1)
	fails("decr missing", err, memcache.ErrCacheMiss)
	ok("set a non-number", set(c, k("text"), []byte("abc"), 0, 0))
	_, err = c.Increment(k("text"), 1)
	failsWith("incr on a non-number", err,
		"memcache: client error: cannot increment or decrement non-numeric value")
	_, err = c.Decrement(k("text"), 1)
	failsWith("decr on a non-number", err,
		"memcache: client error: cannot increment or decrement non-numeric value")
	eq("non-number unchanged", value(c, k("text")), []byte("abc"))
}

func multi(c *memcache.Client) {
	// 64 keys land on both of the server's shards; GetMulti sends one `gets` for them all.
	want := map[string]string{}
	var keys []string
	for i := 0; i < 64; i++ {
		key := k(fmt.Sprintf("m%d", i))
		v := fmt.Sprintf("value-%d-%s", i, strings.Repeat("x", i))
		ok("set for GetMulti", set(c, key, []byte(v), uint32(i), 0))
		want[key] = v
		keys = append(keys, key, k(fmt.Sprintf("nope%d", i)))
	}
	got, err := c.GetMulti(keys)
	ok("GetMulti", err)
	eq("GetMulti finds only the stored keys", len(got), len(want))
	for i := 0; i < 64; i++ {
		key := k(fmt.Sprintf("m%d", i))
		item := got[key]
		if item == nil {
			eq("GetMulti has "+key, nil, want[key])
			continue
		}
		eq("GetMulti value of "+key, string(item.Value), want[key])
		eq("GetMulti flags of "+key, item.Flags, uint32(i))
	}
	got, err = c.GetMulti([]string{k("x1"), k("x2")})
	ok("GetMulti all missing", err)
	eq("GetMulti all missing is empty", len(got), 0)
	large := largeValue(500 * 1024)
	got, err = c.GetMulti([]string{k("large"), k("m1"), k("nope")})
	ok("GetMulti with 500 KB", err)
	eq("GetMulti with 500 KB count", len(got), 2)
	if item := got[k("large")]; item != nil {
		eq("GetMulti 500 KB value", item.Value, large)
	} else {
		eq("GetMulti has the 500 KB value", nil, "an item")
	}
}

func keyValidation(c *memcache.Client) {
	// gomemcache refuses bad keys itself, before sending anything.
	bad := map[string]string{
		"251 bytes":  strings.Repeat("k", 251),
		"a space":    k("a b"),
		"a newline":  k("a\nb"),
		"a control":  k("a\x01b"),
		"DEL (0x7f)": k("a\x7fb"),
		"non-ASCII":  k("clé"),
	}
	for what, key := range bad {
		fails("set a key with "+what, set(c, key, []byte("x"), 0, 0), memcache.ErrMalformedKey)
		_, err := c.Get(key)
		fails("get a key with "+what, err, memcache.ErrMalformedKey)
		fails("delete a key with "+what, c.Delete(key), memcache.ErrMalformedKey)
		_, err = c.Increment(key, 1)
		fails("incr a key with "+what, err, memcache.ErrMalformedKey)
		fails("touch a key with "+what, c.Touch(key, 10), memcache.ErrMalformedKey)
		_, err = c.GetMulti([]string{k("m1"), key})
		fails("GetMulti with a key with "+what, err, memcache.ErrMalformedKey)
	}
	// 250 bytes is the longest key the server takes.
	longest := prefix + strings.Repeat("L", 250-len(prefix))
	ok("set a 250-byte key", set(c, longest, []byte("long"), 0, 0))
	eq("get a 250-byte key", value(c, longest), []byte("long"))
	// The empty key passes gomemcache's check; the server answers `gets ` with ERROR.
	_, err := c.Get("")
	failsWith("get the empty key", err, `memcache: unexpected line in get response: "ERROR\r\n"`)
	eq("usable after the empty key", value(c, longest), []byte("long"))
}

func expiry(c *memcache.Client) {
	// Touch, then short-TTL expiry: `short` expires within a few seconds, while the key touched
	// to 100 s outlives it. The server's clock ticks in whole seconds, so a TTL of 2 s lives at
	// least 1 s (1 s could end at once), enough for the checks before the touch.
	ok("set ttl 2", set(c, k("short"), []byte("s"), 0, 2))
	ok("set ttl 2 (to touch)", set(c, k("touched"), []byte("t"), 0, 2))
	eq("get before expiry", value(c, k("short")), []byte("s"))
	ok("touch", c.Touch(k("touched"), 100))
	fails("touch missing", c.Touch(k("nothere"), 100), memcache.ErrCacheMiss)
	eq("ttl 2 expires", expiresWithin(c, k("short"), 6*time.Second), true)
	eq("touched outlives its first ttl", value(c, k("touched")), []byte("t"))
	// Touch with a past Unix time expires the item at once.
	ok("set to touch into the past", set(c, k("touch_past"), []byte("p"), 0, 0))
	ok("touch to a past Unix time", c.Touch(k("touch_past"), 30*24*3600+1))
	_, err := c.Get(k("touch_past"))
	fails("touched into the past expired", err, memcache.ErrCacheMiss)

	// An expiration over 30 days is an absolute Unix time: one ahead is kept, one past is
	// expired at once, and one 2 s ahead expires like a TTL.
	now := int32(time.Now().Unix())
	ok("set at a Unix time", set(c, k("unix"), []byte("u"), 0, now+100))
	eq("Unix time kept", value(c, k("unix")), []byte("u"))
	ok("set at a past Unix time", set(c, k("past"), []byte("p"), 0, now-100))
	_, err = c.Get(k("past"))
	fails("past Unix time expired", err, memcache.ErrCacheMiss)
	ok("set at a Unix time 2 s ahead", set(c, k("unix_short"), []byte("u"), 0, now+2))
	eq("Unix time 2 s ahead expires", expiresWithin(c, k("unix_short"), 6*time.Second), true)
}

// concurrent: goroutines share one client (it pools connections per server).
func concurrent(c *memcache.Client) {
	const workers, rounds = 8, 50
	var wg sync.WaitGroup
	failures := make(chan string, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				key := k(fmt.Sprintf("g%d:%d", w, i))
				v := []byte(fmt.Sprintf("worker %d round %d", w, i))
				if err := set(c, key, v, uint32(w), 0); err != nil {
					failures <- fmt.Sprintf("set %s: %v", key, err)
					return
				}
				item, err := c.Get(key)
				if err != nil || !bytes.Equal(item.Value, v) || item.Flags != uint32(w) {
					failures <- fmt.Sprintf("get %s: %v %v", key, item, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(failures)
	first := ""
	for f := range failures {
		if first == "" {
			first = f
		}
	}
	eq("goroutines sharing a client", first, "")
}

func flush(c *memcache.Client) {
	ok("set before FlushAll", set(c, k("f1"), []byte("1"), 0, 0))
	ok("FlushAll", c.FlushAll())
	_, err := c.Get(k("f1"))
	fails("flushed", err, memcache.ErrCacheMiss)
	got, err := c.GetMulti([]string{k("m1"), k("m2")})
	ok("GetMulti after FlushAll", err)
	eq("flushed multi", len(got), 0)
	ok("set after FlushAll", set(c, k("after"), []byte("x"), 0, 0))
	eq("get after FlushAll", value(c, k("after")), []byte("x"))
	// DeleteAll sends flush_all too (to the server of the empty key).
	ok("DeleteAll", c.DeleteAll())
	_, err = c.Get(k("after"))
	fails("deleted by DeleteAll", err, memcache.ErrCacheMiss)
}

// twoServers: ServerList spreads keys over both servers, each key on the one PickServer names.
func twoServers(addrs []string) {
	both := client(addrs...)
	var list memcache.ServerList
	ok("ServerList", list.SetServers(addrs...))
	singles := map[string]*memcache.Client{}
	for _, addr := range addrs {
		singles[addr] = client(addr)
	}
	perServer := map[string]int{}
	for i := 0; i < 200; i++ {
		key := k(fmt.Sprintf("spread%d", i))
		ok("set through both", set(both, key, []byte(key), 0, 0))
		picked, err := list.PickServer(key)
		ok("PickServer", err)
		perServer[picked.String()]++
		for addr, single := range singles {
			_, err := single.Get(key)
			if addr == picked.String() {
				fails("on its server "+key, err, nil)
			} else {
				fails("not on the other server "+key, err, memcache.ErrCacheMiss)
			}
		}
	}
	for _, addr := range addrs {
		checks++
		if perServer[addr] == 0 {
			mismatch("keys spread", fmt.Sprintf("no key on %s: %v", addr, perServer))
		}
	}
	keys := []string{}
	for i := 0; i < 200; i++ {
		keys = append(keys, k(fmt.Sprintf("spread%d", i)))
	}
	got, err := both.GetMulti(keys)
	ok("GetMulti across both servers", err)
	eq("GetMulti across both servers count", len(got), 200)
	ok("FlushAll on both", both.FlushAll())
	for addr, single := range singles {
		got, err := single.GetMulti(keys)
		ok("GetMulti after FlushAll on "+addr, err)
		eq("FlushAll reached "+addr, len(got), 0)
	}
}

func main() {
	var addrs []string
	for _, arg := range os.Args[1:] {
		if !strings.HasPrefix(arg, "-") && strings.Contains(arg, ":") {
			addrs = append(addrs, arg)
		}
	}
	if len(addrs) == 0 || len(addrs) > 2 {
		fmt.Fprintln(os.Stderr, "usage: go_gomemcache HOST:PORT [HOST:PORT]")
		os.Exit(2)
	}
	c := client(addrs[0])
	values(c)
	counters(c)
	multi(c)
	keyValidation(c)
	expiry(c)
	concurrent(c)
	flush(c)
	if len(addrs) == 2 {
		twoServers(addrs)
	}
	fmt.Printf("%s: ok (%d checks)\n", name, checks)
}
