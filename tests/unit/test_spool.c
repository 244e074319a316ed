/*
 * test_spool - the message spool: memory up to the limit, a private file
 * beyond it, the content unchanged through spool_send(), sticky errors,
 * and block reuse across many messages (no leak, bounded cache; the
 * ASan build checks the leaks, including worker threads' caches).
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "log.h"
#include "spool.h"
#include "t.h"

static const char *spool_dir = "/tmp";

/* fill - the test content: byte i of message seed */
static void
fill(unsigned char *p, size_t off, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)((off + i) * 31u + seed + ((off + i) >> 11));
}

/* read_all - drain out into a new buffer; NULL if its length is not len */
static unsigned char *
read_all(struct evbuffer *out, size_t len)
{
	unsigned char *p = malloc(len + 1);
	size_t got = 0;

	if (p == NULL)
		abort();
	if (evbuffer_get_length(out) != len) {
		free(p);
		return NULL;
	}
	/* in uneven pieces, as a socket would take it */
	while (got < len) {
		size_t want = len - got < 7777 ? len - got : 7777;
		int n = evbuffer_remove(out, p + got, want);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got != len || evbuffer_get_length(out) != 0) {
		free(p);
		return NULL;
	}
	return p;
}

/* spool_message - write total bytes of content seed in pieces of `piece` */
static struct spool *
spool_message(size_t mem_limit, size_t total, size_t piece, unsigned seed, int *werr)
{
	struct spool *sp = spool_new(spool_dir, mem_limit);
	unsigned char *buf = malloc(piece + 1);
	size_t off = 0;

	if (buf == NULL)
		abort();
	*werr = 0;
	while (off < total) {
		size_t n = total - off < piece ? total - off : piece;

		fill(buf, off, n, seed);
		if (spool_write(sp, buf, n) != 0)
			(*werr)++;
		off += n;
	}
	free(buf);
	return sp;
}

/* ------------------------------------------------------------------ */

struct spool_case {
	const char *name;
	size_t mem_limit;
	size_t total;
	size_t piece;
	bool on_disk;
};

static const struct spool_case spool_cases[] = {
	{ "empty", 1024, 0, 1, false },
	{ "empty, limit 0", 0, 0, 1, false },
	{ "one byte, limit 0", 0, 1, 1, true },
	{ "small", 1024, 100, 100, false },
	{ "exactly the limit", 5000, 5000, 333, false },
	{ "limit + 1", 5000, 5001, 333, true },
	{ "limit + 1 in one write", 5000, 5001, 5001, true },
	{ "limit in one write, then 1", 5000, 5001, 5000, true },
	{ "first block exactly", 4096, 4096, 4096, false },
	{ "first block + 1", 1u << 20, 4097, 4097, false },
	{ "1 MiB exactly in memory", 1u << 20, 1u << 20, 16384, false },
	{ "1 MiB + 1 spills", 1u << 20, (1u << 20) + 1, 16384, true },
	{ "3 MiB on disk, odd pieces", 1u << 20, (3u << 20) + 17, 4093, true },
	{ "one 200 KiB write over 64 KiB", 65536, 200 * 1024, 200 * 1024, true },
	{ "spill inside a write", 10000, 30000, 7000, true },
	{ "byte by byte", 3000, 5000, 1, true },
	{ "block ends exactly, disk", 0, 3 * 65536, 65536, true },
};

static size_t row;

/* test_spool_row - write, finish, send behind a prefix, read back */
static void
test_spool_row(void)
{
	const struct spool_case *c = &spool_cases[row];
	struct evbuffer *out = evbuffer_new();
	unsigned char *want = malloc(c->total + 1), *got;
	struct spool *sp;
	int werr;

	if (out == NULL || want == NULL)
		abort();
	fill(want, 0, c->total, (unsigned)row);
	sp = spool_message(c->mem_limit, c->total, c->piece, (unsigned)row, &werr);
	T_CHECKF(werr == 0, "%s: %d write errors", c->name, werr);
	T_CHECKF(spool_size(sp) == c->total, "%s: size %llu", c->name,
	    (unsigned long long)spool_size(sp));
	T_CHECKF(spool_on_disk(sp) == c->on_disk, "%s: on disk %d", c->name,
	    spool_on_disk(sp));
	T_CHECKF(spool_finish(sp) == 0, "%s", c->name);
	evbuffer_add(out, "DATA\r\n", 6);
	T_CHECKF(spool_send(sp, out) == 0, "%s", c->name);
	/* the content is out's now: the spool may go before it is sent */
	spool_free(sp);
	evbuffer_add(out, ".\r\n", 3);
	got = read_all(out, c->total + 9);
	T_CHECKF(got != NULL, "%s: length %zu", c->name, evbuffer_get_length(out));
	if (got != NULL) {
		T_CHECKF(memcmp(got, "DATA\r\n", 6) == 0 &&
		    (c->total == 0 || memcmp(got + 6, want, c->total) == 0) &&
		    memcmp(got + 6 + c->total, ".\r\n", 3) == 0, "%s: content", c->name);
		free(got);
	}
	evbuffer_free(out);
	free(want);
}

/* In memory, spool_send moves the content: a second send adds nothing;
 * an evbuffer freed unread gives its blocks back. */
static void
test_send_moves(void)
{
	struct evbuffer *a = evbuffer_new(), *b = evbuffer_new();
	struct spool *sp;
	int werr;

	if (a == NULL || b == NULL)
		abort();
	sp = spool_message(1u << 20, 300000, 10000, 7, &werr);
	T_CHECK(werr == 0 && !spool_on_disk(sp) && spool_finish(sp) == 0);
	T_CHECK(spool_send(sp, a) == 0 && evbuffer_get_length(a) == 300000);
	T_CHECK(spool_send(sp, b) == 0 && evbuffer_get_length(b) == 0);
	T_CHECK(spool_size(sp) == 300000);
	spool_free(sp);
	/* moved on, then dropped unread */
	T_CHECK(evbuffer_add_buffer(b, a) == 0 && evbuffer_get_length(b) == 300000);
	evbuffer_free(a);
	evbuffer_free(b);

	/* on disk, the file is added as a segment of the whole size */
	a = evbuffer_new();
	if (a == NULL)
		abort();
	sp = spool_message(1000, 100000, 3000, 8, &werr);
	T_CHECK(werr == 0 && spool_on_disk(sp) && spool_finish(sp) == 0);
	T_CHECK(spool_send(sp, a) == 0 && evbuffer_get_length(a) == 100000);
	spool_free(sp);
	evbuffer_free(a);	/* unread: the file segment is closed */
	spool_free(NULL);
}

/* ------------------------------------------------------------------ */
/* Sticky errors */

struct err_case {
	const char *name;
	const char *dir;
};

static const struct err_case err_cases[] = {
	{ "missing dir", "/nonexistent-moat-spool/x" },
	{ "dir is not a dir", "/dev/null" },
	{ "dir too long", NULL },	/* filled in: 5000 bytes of path */
};

static void
test_unwritable_dir(void)
{
	static char longdir[5001];
	const struct err_case *c = &err_cases[row];
	const char *dir = c->dir;
	unsigned char buf[3000];
	struct evbuffer *out = evbuffer_new();
	struct spool *sp;

	if (out == NULL)
		abort();
	if (dir == NULL) {
		memset(longdir, 'd', sizeof longdir - 1);
		longdir[0] = '/';
		dir = longdir;
	}
	fill(buf, 0, sizeof buf, 1);
	sp = spool_new(dir, 4000);
	/* in memory the directory is not touched */
	T_CHECKF(spool_write(sp, buf, sizeof buf) == 0, "%s", c->name);
	/* the spill fails, and every later call */
	T_CHECKF(spool_write(sp, buf, sizeof buf) == -1, "%s", c->name);
	T_CHECKF(spool_write(sp, buf, 1) == -1, "%s", c->name);
	T_CHECKF(spool_write(sp, buf, 0) == -1, "%s", c->name);
	T_CHECKF(spool_finish(sp) == -1, "%s", c->name);
	T_CHECKF(spool_send(sp, out) == -1 && evbuffer_get_length(out) == 0, "%s", c->name);
	T_CHECKF(!spool_on_disk(sp), "%s", c->name);
	spool_free(sp);

	/* limit 0: the first byte fails */
	sp = spool_new(dir, 0);
	T_CHECKF(spool_write(sp, buf, 1) == -1 && spool_finish(sp) == -1, "%s", c->name);
	spool_free(sp);
	evbuffer_free(out);
}

/* A write error on the file (here RLIMIT_FSIZE, as a full disk would) is
 * sticky too. */
static void
test_write_error(void)
{
	struct rlimit old, lim;
	struct evbuffer *out = evbuffer_new();
	struct spool *sp;
	int werr;
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);

	if (out == NULL || getrlimit(RLIMIT_FSIZE, &old) != 0)
		abort();
	lim = old;
	lim.rlim_cur = 100000;
	T_CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	sp = spool_message(1000, 300000, 5000, 3, &werr);
	T_CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
	signal(SIGXFSZ, oldsig);
	T_CHECKF(werr > 0, "write errors %d", werr);
	T_CHECK(spool_on_disk(sp));
	T_CHECK(spool_write(sp, "x", 1) == -1);
	T_CHECK(spool_finish(sp) == -1);
	T_CHECK(spool_send(sp, out) == -1 && evbuffer_get_length(out) == 0);
	spool_free(sp);
	evbuffer_free(out);
}

/* ------------------------------------------------------------------ */
/* Reuse: many messages, no growth, no descriptor left open */

/* one_message - a full message life: write, finish, send, free, drain */
static bool
one_message(size_t mem_limit, size_t total, unsigned seed, bool check)
{
	struct evbuffer *out = evbuffer_new();
	struct spool *sp;
	unsigned char *got, *want;
	int werr;
	bool ok;

	if (out == NULL)
		abort();
	sp = spool_message(mem_limit, total, 1 + seed % 16384, seed, &werr);
	ok = werr == 0 && spool_finish(sp) == 0 && spool_send(sp, out) == 0;
	spool_free(sp);
	if (check) {
		want = malloc(total + 1);
		if (want == NULL)
			abort();
		fill(want, 0, total, seed);
		got = read_all(out, total);
		ok = ok && got != NULL && (total == 0 || memcmp(got, want, total) == 0);
		free(got);
		free(want);
	} else {
		ok = ok && evbuffer_get_length(out) == total;
		evbuffer_drain(out, total);
	}
	evbuffer_free(out);
	return ok;
}

/* message_size - a spread of sizes, mostly small, some spilled */
static size_t
message_size(unsigned k)
{
	static const size_t sizes[] = { 0, 1, 900, 4096, 4097, 20000, 100 * 1024,
	    250000, 12345, 70000 };

	return sizes[k % (sizeof sizes / sizeof sizes[0])] + k % 13;
}

static size_t
heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/* heap_tracked - does mallinfo2 see our allocations (not under ASan)? */
static bool
heap_tracked(void)
{
	size_t before = heap_in_use();
	void *p = malloc(4u << 20);
	bool seen = heap_in_use() >= before + (4u << 20);

	free(p);
	return seen;
}

static void
test_reuse(void)
{
	int probe = dup(0), probe2;
	size_t base, warm, after;
	unsigned k, bad = 0;
	bool tracked = heap_tracked();

	close(probe);	/* the lowest free descriptor, now and at the end */

	base = heap_in_use();
	for (k = 0; k < 200; k++)
		bad += !one_message(200000, message_size(k), k, true);
	warm = heap_in_use();
	for (k = 0; k < 3000; k++)
		bad += !one_message(200000, message_size(k), k, k % 50 == 0);
	after = heap_in_use();
	T_CHECKF(bad == 0, "%u bad messages", bad);
	/* the cache is bounded: ~2 MiB whatever came before, and steady */
	T_CHECKF(!tracked || warm <= base + (2u << 20) + 65536, "base %zu warm %zu",
	    base, warm);
	T_CHECKF(!tracked || after <= warm + 65536, "warm %zu after %zu", warm, after);

	/* a burst: 40 messages of 1 MiB in memory at once, then all sent */
	{
		struct evbuffer *out[40];
		struct spool *sp;
		int werr;

		for (k = 0; k < 40; k++) {
			out[k] = evbuffer_new();
			if (out[k] == NULL)
				abort();
			sp = spool_message(1u << 20, 1u << 20, 65536, k, &werr);
			bad += werr != 0 || spool_on_disk(sp) || spool_send(sp, out[k]) != 0;
			spool_free(sp);
		}
		T_CHECK(!tracked || heap_in_use() >= base + (40u << 20));
		for (k = 0; k < 40; k++)
			evbuffer_free(out[k]);
		after = heap_in_use();
		T_CHECKF(bad == 0, "%u bad", bad);
		T_CHECKF(!tracked || after <= base + (2u << 20) + 65536,
		    "base %zu after burst %zu", base, after);
	}

	/* no descriptor leaked: the next free one is the same */
	probe2 = dup(0);
	T_CHECKF(probe2 == probe, "fd %d then %d", probe, probe2);
	close(probe2);
}

/* Worker threads: each has its own cache, freed when it exits (the ASan
 * build reports a leak otherwise); blocks sent on one thread and
 * released on another are fine. */
struct thr_arg {
	unsigned id;
	unsigned bad;
	struct evbuffer *handoff;	/* filled here, drained by main */
};

static void *
thr_main(void *p)
{
	struct thr_arg *a = p;
	struct spool *sp;
	unsigned k;
	int werr;

	sp = spool_message(1u << 20, 500000, 30000, a->id, &werr);
	a->bad += werr != 0 || spool_send(sp, a->handoff) != 0;
	spool_free(sp);
	/* then leave blocks in this thread's cache for its exit */
	for (k = 0; k < 300; k++)
		a->bad += !one_message(100000, message_size(k + a->id), k * 7 + a->id,
		    k % 20 == 0);
	return NULL;
}

static void
test_threads(void)
{
	enum { NTHR = 3 };
	pthread_t t[NTHR];
	struct thr_arg a[NTHR];
	unsigned k;

	for (k = 0; k < NTHR; k++) {
		a[k].id = k + 1;
		a[k].bad = 0;
		a[k].handoff = evbuffer_new();
		if (a[k].handoff == NULL)
			abort();
		T_CHECK(pthread_create(&t[k], NULL, thr_main, &a[k]) == 0);
	}
	for (k = 0; k < NTHR; k++) {
		unsigned char *got, *want = malloc(500000);

		if (want == NULL)
			abort();
		T_CHECK(pthread_join(t[k], NULL) == 0);
		T_CHECKF(a[k].bad == 0, "thread %u: %u bad", k, a[k].bad);
		/* the thread is gone; its blocks are released here */
		fill(want, 0, 500000, a[k].id);
		got = read_all(a[k].handoff, 500000);
		T_CHECK(got != NULL && memcmp(got, want, 500000) == 0);
		free(got);
		free(want);
		evbuffer_free(a[k].handoff);
	}
}

int
main(void)
{
	log_init("test_spool", false, LOG_L_PANIC);	/* expected errors stay quiet */
	for (row = 0; row < sizeof spool_cases / sizeof spool_cases[0]; row++)
		T_RUN(test_spool_row);
	T_RUN(test_send_moves);
	for (row = 0; row < sizeof err_cases / sizeof err_cases[0]; row++)
		T_RUN(test_unwritable_dir);
	T_RUN(test_write_error);
	T_RUN(test_reuse);
	T_RUN(test_threads);
	return T_DONE("spool");
}
