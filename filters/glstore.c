/*
 * glstore - the embedded greylist store (see glstore.h for the contract)
 *
 * DESIGN
 *	A chained hash table of records plus one list in order of use
 *	(head: most recently used). The list gives eviction when the store
 *	is full and the order of "list" and of the saved file (oldest
 *	first, so loading it rebuilds the same order). Expired records are
 *	dropped when a lookup meets them and by a small sweep of the hash
 *	buckets on each decision, so memory held by dead records goes back
 *	even when nobody asks for them again.
 *
 *	The file loader is the only parser of bytes here that others may
 *	have written; it is strict (exact header and trailer, a count that
 *	must match, bounded line and key lengths, digits only) and loads
 *	into a scratch store first, so a bad file changes nothing.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "glstore.h"
#include "siphash.h"
#include "xalloc.h"

#define GLSTORE_HEADER		"moat-greylist 1\n"
#define GLSTORE_LINE_MAX	(GLSTORE_KEY_MAX + 80)
#define GLSTORE_NUM_MAX		((int64_t)1 << 53)
#define GLSTORE_SWEEP		4	/* buckets looked at per decision */
#define GLSTORE_LIST_DEFAULT	100
#define GLSTORE_LIST_MAX	1000000
#define GLSTORE_DAY		86400

struct glrec {
	struct glrec *hnext;		/* hash chain */
	struct glrec *prev, *next;	/* use order; head is the newest */
	uint64_t hash;
	int64_t a, b, x;		/* t: first, passed; c: passes, until; expiry */
	size_t klen;
	char key[];
};

struct glstore {
	pthread_mutex_t lock;
	char *path;
	size_t max, count, mask, sweep;
	struct glrec **buckets;
	struct glrec *head, *tail;
	uint64_t k0, k1;		/* SipHash key */
	int v4_prefix, v6_prefix;
	int64_t allow_lifetime;
	int64_t (*now)(void *);
	void *now_arg;
	uint64_t inserted, evicted, expired, decisions;
};

/* glstore_err - fill an error buffer */
static void __attribute__((format(printf, 3, 4)))
glstore_err(char *err, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, size, fmt, ap);
	va_end(ap);
}

/* glstore_unlink_use - take a record out of the use list */
static void
glstore_unlink_use(struct glstore *s, struct glrec *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		s->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		s->tail = r->prev;
	r->prev = r->next = NULL;
}

/* glstore_touch - make a record the most recently used */
static void
glstore_touch(struct glstore *s, struct glrec *r)
{
	if (s->head == r)
		return;
	glstore_unlink_use(s, r);
	r->next = s->head;
	if (s->head)
		s->head->prev = r;
	s->head = r;
	if (s->tail == NULL)
		s->tail = r;
}

/* glstore_remove - unlink and free one record */
static void
glstore_remove(struct glstore *s, struct glrec *r)
{
	struct glrec **pp = &s->buckets[r->hash & s->mask];

	while (*pp != r)
		pp = &(*pp)->hnext;
	*pp = r->hnext;
	glstore_unlink_use(s, r);
	s->count--;
	free(r);
}

/* glstore_find - the live record of a key, or NULL (an expired one is dropped) */
static struct glrec *
glstore_find(struct glstore *s, const char *key, size_t klen, int64_t now)
{
	uint64_t h = siphash24(s->k0, s->k1, key, klen);
	struct glrec *r;

	for (r = s->buckets[h & s->mask]; r != NULL; r = r->hnext)
		if (r->hash == h && r->klen == klen && memcmp(r->key, key, klen) == 0)
			break;
	if (r != NULL && r->x <= now) {
		glstore_remove(s, r);
		s->expired++;
		return NULL;
	}
	return r;
}

/* glstore_insert - a new record at the head; evicts the oldest (never keep)
 * when full; NULL only when allocation fails and may_fail */
static struct glrec *
glstore_insert(struct glstore *s, const char *key, size_t klen, int64_t now,
	const struct glrec *keep, bool may_fail)
{
	struct glrec *r, *victim;
	uint64_t h = siphash24(s->k0, s->k1, key, klen);

	while (s->count >= s->max && s->tail != NULL) {
		victim = s->tail;
		if (victim == keep)
			victim = victim->prev;
		if (victim == NULL)
			break;
		if (victim->x <= now)
			s->expired++;
		else
			s->evicted++;
		glstore_remove(s, victim);
	}
	if (may_fail) {
		r = malloc(sizeof(*r) + klen + 1);
		if (r == NULL)
			return NULL;
	} else
		r = xmalloc(sizeof(*r) + klen + 1);
	memset(r, 0, sizeof(*r));
	memcpy(r->key, key, klen);
	r->key[klen] = '\0';
	r->klen = klen;
	r->hash = h;
	r->hnext = s->buckets[h & s->mask];
	s->buckets[h & s->mask] = r;
	r->next = s->head;
	if (s->head)
		s->head->prev = r;
	s->head = r;
	if (s->tail == NULL)
		s->tail = r;
	s->count++;
	s->inserted++;
	return r;
}

/* glstore_sweep - drop expired records from the next few buckets */
static void
glstore_sweep(struct glstore *s, int64_t now)
{
	for (int i = 0; i < GLSTORE_SWEEP; i++) {
		struct glrec *r = s->buckets[s->sweep++ & s->mask], *next;

		for (; r != NULL; r = next) {
			next = r->hnext;
			if (r->x <= now) {
				glstore_remove(s, r);
				s->expired++;
			}
		}
	}
}

/* glstore_new - an empty store; NULL when allocation fails */
static struct glstore *
glstore_new(size_t max)
{
	struct glstore *s = calloc(1, sizeof(*s));
	size_t n = 16;

	if (s == NULL)
		return NULL;
	while (n < max && n < ((size_t)1 << 40))
		n <<= 1;
	s->buckets = calloc(n, sizeof(*s->buckets));
	if (s->buckets == NULL) {
		free(s);
		return NULL;
	}
	s->mask = n - 1;
	s->max = max;
	s->v4_prefix = 24;
	s->v6_prefix = 64;
	s->allow_lifetime = 36 * (int64_t)GLSTORE_DAY;
	siphash_key(&s->k0, &s->k1);
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

/* glstore_free_records - free every record */
static void
glstore_free_records(struct glstore *s)
{
	struct glrec *r, *next;

	for (r = s->head; r != NULL; r = next) {
		next = r->next;
		free(r);
	}
	memset(s->buckets, 0, (s->mask + 1) * sizeof(*s->buckets));
	s->head = s->tail = NULL;
	s->count = 0;
}

/* glstore_destroy - free a store */
static void
glstore_destroy(struct glstore *s)
{
	if (s == NULL)
		return;
	glstore_free_records(s);
	free(s->buckets);
	free(s->path);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* glstore_num - a decimal number of 1 to 16 digits ending at a delimiter */
static int
glstore_num(const char **pp, const char *end, char delim, int64_t *v)
{
	const char *p = *pp;
	int64_t n = 0;
	int digits = 0;

	while (p < end && *p >= '0' && *p <= '9') {
		if (++digits > 16)
			return -1;
		n = n * 10 + (*p - '0');
		p++;
	}
	if (digits == 0 || p >= end || *p != delim || n > GLSTORE_NUM_MAX)
		return -1;
	*v = n;
	*pp = p + 1;
	return 0;
}

/* glstore_key_ok - a key as this module writes them */
static bool
glstore_key_ok(const char *k, size_t len)
{
	const char *close;

	if (len < 4 || len >= GLSTORE_KEY_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (k[i] < '!' || k[i] > '~')
			return false;
	if (memcmp(k, "c:{", 3) == 0)
		return k[len - 1] == '}' && memchr(k + 3, '}', len - 4) == NULL;
	if (memcmp(k, "t:{", 3) != 0)
		return false;
	close = memchr(k + 3, '}', len - 3);
	if (close == NULL || close == k + 3 || close + 1 >= k + len || close[1] != '|')
		return false;
	return memchr(close + 2, '|', (size_t)(k + len - (close + 2))) != NULL;
}

/* glstore_load_buf - parse a saved store (see glstore.h) */
int
glstore_load_buf(struct glstore *s, const char *buf, size_t len, int64_t now, char *err,
	size_t errsize)
{
	const char *p = buf, *end = buf + len, *nl, *sp;
	struct glstore *tmp;
	struct glrec *r;
	size_t line = 1, nrec = 0;
	int64_t a, b, x, count;
	size_t hl = strlen(GLSTORE_HEADER);

	if (len < hl || memcmp(buf, GLSTORE_HEADER, hl) != 0) {
		glstore_err(err, errsize, "line 1: not a moat greylist store "
		    "(expected \"moat-greylist 1\")");
		return -1;
	}
	tmp = glstore_new(s->max);
	if (tmp == NULL) {
		glstore_err(err, errsize, "out of memory");
		return -1;
	}
	tmp->k0 = s->k0;
	tmp->k1 = s->k1;
	p += hl;
	for (;;) {
		line++;
		if (p >= end) {
			glstore_err(err, errsize, "line %zu: file ends without its \"end\" line "
			    "(truncated?)", line);
			goto fail;
		}
		nl = memchr(p, '\n', (size_t)(end - p) < GLSTORE_LINE_MAX ?
		    (size_t)(end - p) : GLSTORE_LINE_MAX);
		if (nl == NULL) {
			glstore_err(err, errsize, "line %zu: line too long or not ended", line);
			goto fail;
		}
		if (nl - p >= 4 && memcmp(p, "end ", 4) == 0) {
			const char *q = p + 4;

			if (glstore_num(&q, nl + 1, '\n', &count) != 0 || (size_t)count != nrec) {
				glstore_err(err, errsize, "line %zu: the record count does not "
				    "match the %zu records read", line, nrec);
				goto fail;
			}
			if (nl + 1 != end) {
				glstore_err(err, errsize, "line %zu: data after the \"end\" line",
				    line + 1);
				goto fail;
			}
			break;
		}
		sp = memchr(p, ' ', (size_t)(nl - p));
		if (sp == NULL || !glstore_key_ok(p, (size_t)(sp - p))) {
			glstore_err(err, errsize, "line %zu: bad key", line);
			goto fail;
		}
		{
			const char *q = sp + 1;

			if (glstore_num(&q, nl + 1, ' ', &a) != 0 ||
			    glstore_num(&q, nl + 1, ' ', &b) != 0 ||
			    glstore_num(&q, nl + 1, '\n', &x) != 0) {
				glstore_err(err, errsize, "line %zu: expected KEY A B EXPIRY "
				    "(decimal numbers)", line);
				goto fail;
			}
		}
		if (p[0] == 't' && b > 1) {
			glstore_err(err, errsize, "line %zu: a triplet's passed flag is 0 or 1",
			    line);
			goto fail;
		}
		nrec++;
		if (x > now) {
			if (glstore_find(tmp, p, (size_t)(sp - p), now) != NULL) {
				glstore_err(err, errsize, "line %zu: duplicate key", line);
				goto fail;
			}
			r = glstore_insert(tmp, p, (size_t)(sp - p), now, NULL, true);
			if (r == NULL) {
				glstore_err(err, errsize, "out of memory");
				goto fail;
			}
			r->a = a;
			r->b = b;
			r->x = x;
		}
		p = nl + 1;
	}
	/* commit: oldest first, so the use order is kept */
	for (r = tmp->tail; r != NULL; r = r->prev) {
		struct glrec *old = glstore_find(s, r->key, r->klen, now), *n;

		if (old != NULL)
			glstore_remove(s, old);
		n = glstore_insert(s, r->key, r->klen, now, NULL, true);
		if (n == NULL)
			break;
		n->a = r->a;
		n->b = r->b;
		n->x = r->x;
	}
	glstore_destroy(tmp);
	return 0;
fail:
	glstore_destroy(tmp);
	return -1;
}

/* glstore_read_file - the whole file, bounded; NULL and *missing when absent */
static char *
glstore_read_file(const char *path, size_t cap, size_t *len, bool *missing, char *err,
	size_t errsize)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	size_t got = 0;
	ssize_t n;

	*missing = false;
	if (fd < 0) {
		if (errno == ENOENT)
			*missing = true;
		else
			glstore_err(err, errsize, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > cap) {
		glstore_err(err, errsize, "%s: not a regular file or larger than %zu bytes",
		    path, cap);
		close(fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		glstore_err(err, errsize, "%s: out of memory", path);
		close(fd);
		return NULL;
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != (size_t)st.st_size) {
		glstore_err(err, errsize, "%s: short read", path);
		free(buf);
		return NULL;
	}
	*len = got;
	return buf;
}

/* gs_open - a store loaded from path; ro: only read the file */
static struct glstore *
gs_open(const char *path, size_t max, int64_t now, char *err, size_t errsize, bool ro)
{
	struct glstore *s;
	char *buf, why[256];
	size_t len = 0, cap;
	bool missing;

	if (err && errsize)
		err[0] = '\0';
	if (max == 0)
		return NULL;
	s = glstore_new(max);
	if (s == NULL)
		return NULL;
	if (path == NULL || path[0] == '\0')
		return s;
	if (!ro)
		s->path = xstrdup(path);
	cap = max > SIZE_MAX / (GLSTORE_LINE_MAX * 2) ? SIZE_MAX / 2 :
	    max * (GLSTORE_LINE_MAX + 1) + 64;
	buf = glstore_read_file(path, cap, &len, &missing, err, errsize);
	if (buf == NULL)
		return s;
	if (glstore_load_buf(s, buf, len, now, why, sizeof(why)) != 0) {
		char bad[4096];
		int n = snprintf(bad, sizeof(bad), "%s.bad", path);

		if (ro)
			glstore_err(err, errsize, "%s: %s", path, why);
		else if (n > 0 && (size_t)n < sizeof(bad) && rename(path, bad) == 0)
			glstore_err(err, errsize, "%s: %s; refused, the store starts empty "
			    "(the file is kept as %s)", path, why, bad);
		else
			glstore_err(err, errsize, "%s: %s; refused, the store starts empty",
			    path, why);
	}
	free(buf);
	return s;
}

/* glstore_open - a store, loaded from path when it exists (see glstore.h) */
struct glstore *
glstore_open(const char *path, size_t max, int64_t now, char *err, size_t errsize)
{
	return gs_open(path, max, now, err, errsize, false);
}

/* glstore_open_ro - the same, reading the file only (see glstore.h) */
struct glstore *
glstore_open_ro(const char *path, size_t max, int64_t now, char *err, size_t errsize)
{
	return gs_open(path, max, now, err, errsize, true);
}

/* glstore_close - free the store (does not save) */
void
glstore_close(struct glstore *s)
{
	glstore_destroy(s);
}

/* glstore_write_all - write a buffer fully */
static int
glstore_write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* glstore_save - write the live records to path atomically (see glstore.h) */
int
glstore_save(struct glstore *s, int64_t now, char *err, size_t errsize)
{
	char *buf, *tmpname = NULL, *dir, *slash;
	size_t cap, len = 0, n = 0;
	struct glrec *r;
	int fd, rc = -1, dfd;

	if (err && errsize)
		err[0] = '\0';
	if (s->path == NULL)
		return 0;
	pthread_mutex_lock(&s->lock);
	cap = strlen(GLSTORE_HEADER) + 32;
	for (r = s->head; r != NULL; r = r->next)
		cap += r->klen + 3 * 21 + 4;
	buf = malloc(cap);
	if (buf == NULL) {
		pthread_mutex_unlock(&s->lock);
		glstore_err(err, errsize, "%s: out of memory", s->path);
		return -1;
	}
	len = (size_t)snprintf(buf, cap, "%s", GLSTORE_HEADER);
	for (r = s->tail; r != NULL; r = r->prev) {
		if (r->x <= now)
			continue;
		len += (size_t)snprintf(buf + len, cap - len, "%s %" PRId64 " %" PRId64 " %" PRId64
		    "\n", r->key, r->a, r->b, r->x);
		n++;
	}
	pthread_mutex_unlock(&s->lock);
	len += (size_t)snprintf(buf + len, cap - len, "end %zu\n", n);

	cap = strlen(s->path) + 16;
	tmpname = xmalloc(cap);
	snprintf(tmpname, cap, "%s.tmp.XXXXXX", s->path);
	fd = mkstemp(tmpname);
	if (fd < 0) {
		glstore_err(err, errsize, "%s: %s", tmpname, strerror(errno));
		goto out;
	}
	if (glstore_write_all(fd, buf, len) != 0 || fsync(fd) != 0) {
		glstore_err(err, errsize, "%s: %s", tmpname, strerror(errno));
		close(fd);
		unlink(tmpname);
		goto out;
	}
	close(fd);
	if (rename(tmpname, s->path) != 0) {
		glstore_err(err, errsize, "%s: %s", s->path, strerror(errno));
		unlink(tmpname);
		goto out;
	}
	dir = xstrdup(s->path);
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	else {
		free(dir);
		dir = xstrdup(".");
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	free(dir);
	rc = 0;
out:
	free(tmpname);
	free(buf);
	return rc;
}

/* glstore_decide - the greylisting decision (see glstore.h) */
void
glstore_decide(struct glstore *s, const char *ckey, const char *tkey, int64_t now,
	const struct glstore_params *p, struct gl_decision *d)
{
	size_t clen = strlen(ckey), tlen = strlen(tkey);
	struct glrec *c, *t;
	int64_t n;

	memset(d, 0, sizeof(*d));
	pthread_mutex_lock(&s->lock);
	s->decisions++;
	glstore_sweep(s, now);
	c = glstore_find(s, ckey, clen, now);
	n = c ? c->a : 0;
	d->passes = (unsigned)(n > UINT32_MAX ? UINT32_MAX : n);
	if (c != NULL && c->b > now) {
		c->b = c->x = now + p->allow_lifetime;
		glstore_touch(s, c);
		d->status = GL_ALLOWLISTED;
		d->reason = GL_R_ALLOWLISTED;
		goto out;
	}
	if (c != NULL)
		glstore_touch(s, c);
	t = glstore_find(s, tkey, tlen, now);
	if (t == NULL) {
		t = glstore_insert(s, tkey, tlen, now, c, false);
		t->a = now;
		t->b = 0;
		t->x = now + p->window;
		d->status = GL_GREYLISTED;
		d->reason = GL_R_NEW;
		d->retry_in = (unsigned)p->delay;
		goto out;
	}
	glstore_touch(s, t);
	if (t->b == 1) {
		t->x = now + p->lifetime;
		d->status = GL_PASS;
		d->reason = GL_R_KNOWN;
		goto out;
	}
	if (now < t->a + p->delay) {
		d->status = GL_GREYLISTED;
		d->reason = GL_R_EARLY;
		d->retry_in = (unsigned)(t->a + p->delay - now);
		goto out;
	}
	t->b = 1;
	t->x = now + p->lifetime;
	if (c == NULL)
		c = glstore_insert(s, ckey, clen, now, t, false);
	c->a = ++n;
	d->passes = (unsigned)(n > UINT32_MAX ? UINT32_MAX : n);
	d->status = GL_PASS;
	if (p->allow_after > 0 && n >= p->allow_after) {
		c->b = c->x = now + p->allow_lifetime;
		d->reason = GL_R_NOW_ALLOWLISTED;
	} else {
		c->b = 0;
		c->x = now + p->lifetime;
		d->reason = GL_R_RETRIED;
	}
out:
	pthread_mutex_unlock(&s->lock);
}

/* glstore_live - the live record of a key, or NULL; changes nothing */
static const struct glrec *
glstore_live(const struct glstore *s, const char *key, int64_t now)
{
	size_t klen = strlen(key);
	uint64_t h = siphash24(s->k0, s->k1, key, klen);
	const struct glrec *r;

	for (r = s->buckets[h & s->mask]; r != NULL; r = r->hnext)
		if (r->hash == h && r->klen == klen && memcmp(r->key, key, klen) == 0)
			return r->x > now ? r : NULL;
	return NULL;
}

/* glstore_peek - glstore_decide's answer now, read-only (see glstore.h) */
void
glstore_peek(struct glstore *s, const char *ckey, const char *tkey, int64_t now,
	const struct glstore_params *p, struct gl_decision *d)
{
	const struct glrec *c, *t;
	int64_t n;

	memset(d, 0, sizeof(*d));
	pthread_mutex_lock(&s->lock);
	c = glstore_live(s, ckey, now);
	t = glstore_live(s, tkey, now);
	n = c ? c->a : 0;
	if (c != NULL && c->b > now) {
		d->status = GL_ALLOWLISTED;
		d->reason = GL_R_ALLOWLISTED;
	} else if (t == NULL) {
		d->status = GL_GREYLISTED;
		d->reason = GL_R_NEW;
		d->retry_in = (unsigned)p->delay;
	} else if (t->b == 1) {
		d->status = GL_PASS;
		d->reason = GL_R_KNOWN;
	} else if (now < t->a + p->delay) {
		d->status = GL_GREYLISTED;
		d->reason = GL_R_EARLY;
		d->retry_in = (unsigned)(t->a + p->delay - now);
	} else {
		n++;
		d->status = GL_PASS;
		d->reason = p->allow_after > 0 && n >= p->allow_after ? GL_R_NOW_ALLOWLISTED :
		    GL_R_RETRIED;
	}
	d->passes = (unsigned)(n > UINT32_MAX ? UINT32_MAX : n);
	pthread_mutex_unlock(&s->lock);
}

/* glstore_set_defaults - what control uses for IDs and "allow" */
void
glstore_set_defaults(struct glstore *s, int v4_prefix, int v6_prefix, int64_t allow_lifetime)
{
	pthread_mutex_lock(&s->lock);
	s->v4_prefix = v4_prefix;
	s->v6_prefix = v6_prefix;
	s->allow_lifetime = allow_lifetime;
	pthread_mutex_unlock(&s->lock);
}

/* glstore_set_clock - control's clock (tests); NULL: the real one */
void
glstore_set_clock(struct glstore *s, int64_t (*now)(void *), void *arg)
{
	pthread_mutex_lock(&s->lock);
	s->now = now;
	s->now_arg = arg;
	pthread_mutex_unlock(&s->lock);
}

/* glstore_stats_locked - counters; the lock is held */
static void
glstore_stats_locked(struct glstore *s, int64_t now, struct glstore_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->records = s->count;
	st->max = s->max;
	for (struct glrec *r = s->head; r != NULL; r = r->next) {
		if (r->key[0] == 't')
			st->triplets++;
		else {
			st->clients++;
			if (r->b > now)
				st->allowlisted++;
		}
	}
	st->inserted = s->inserted;
	st->evicted = s->evicted;
	st->expired = s->expired;
	st->decisions = s->decisions;
}

/* glstore_now - control's idea of now */
static int64_t
glstore_now(struct glstore *s)
{
	return s->now ? s->now(s->now_arg) : (int64_t)time(NULL);
}

/* glstore_stats - counters (see glstore.h) */
void
glstore_stats(struct glstore *s, struct glstore_stats *st)
{
	pthread_mutex_lock(&s->lock);
	glstore_stats_locked(s, glstore_now(s), st);
	pthread_mutex_unlock(&s->lock);
}

/* glstore_duration - a duration in milliseconds (see glstore.h) */
int
glstore_duration(const char *word, uint64_t *ms)
{
	uint64_t n = 0, mult;
	const char *p = word;
	int digits = 0;

	while (*p >= '0' && *p <= '9') {
		if (++digits > 12)
			return -1;
		n = n * 10 + (uint64_t)(*p - '0');
		p++;
	}
	if (digits == 0)
		return -1;
	if (*p == '\0' || strcmp(p, "s") == 0)
		mult = 1000;
	else if (strcmp(p, "ms") == 0)
		mult = 1;
	else if (strcmp(p, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(p, "h") == 0)
		mult = 3600 * 1000;
	else if (strcmp(p, "d") == 0)
		mult = (uint64_t)GLSTORE_DAY * 1000;
	else
		return -1;
	*ms = n * mult;
	return 0;
}

/* glstore_escape - key text (see glstore.h) */
size_t
glstore_escape(char *out, size_t size, const char *in, bool lower)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0, limit = GLSTORE_PART_MAX - 17;
	const unsigned char *p = (const unsigned char *)in;
	uint64_t h = 0xcbf29ce484222325ULL;
	bool cut = false;

	if (size <= GLSTORE_PART_MAX) {
		if (size > 0)
			out[0] = '\0';
		return 0;
	}
	for (; *p; p++) {
		unsigned c = *p;

		h = (h ^ c) * 0x100000001b3ULL;
		if (cut)
			continue;
		if (lower && c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c < '!' || c > '~' || c == '%' || c == '|' || c == '{' || c == '}') {
			if (o + 3 > limit) {
				cut = true;
				continue;
			}
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			if (o + 1 > limit) {
				cut = true;
				continue;
			}
			out[o++] = (char)c;
		}
	}
	if (cut) {
		out[o++] = '#';
		for (int i = 15; i >= 0; i--)
			out[o++] = hex[(h >> (4 * i)) & 15];
	}
	out[o] = '\0';
	return o;
}

/* glstore_net_format - a masked address as "ADDR/LEN" */
static int
glstore_net_format(int family, const unsigned char *bytes, int prefix, char *out, size_t size)
{
	unsigned char b[16];
	size_t alen = family == AF_INET ? 4 : 16;
	char txt[INET6_ADDRSTRLEN];
	int n;

	memcpy(b, bytes, alen);
	for (size_t i = 0; i < alen; i++) {
		int bits = prefix - (int)i * 8;

		if (bits >= 8)
			continue;
		b[i] &= bits <= 0 ? 0 : (unsigned char)(0xff << (8 - bits));
	}
	if (inet_ntop(family, b, txt, sizeof(txt)) == NULL)
		return -1;
	n = snprintf(out, size, "%s/%d", txt, prefix);
	return n > 0 && (size_t)n < size ? 0 : -1;
}

/* glstore_client_net - a client's network as keys name it (see glstore.h) */
int
glstore_client_net(const struct sockaddr *sa, int v4_prefix, int v6_prefix, char *out,
	size_t size)
{
	const struct in6_addr *a6;

	if (sa->sa_family == AF_INET)
		return glstore_net_format(AF_INET, (const unsigned char *)
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr, v4_prefix, out, size);
	if (sa->sa_family != AF_INET6)
		return -1;
	a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6))
		return glstore_net_format(AF_INET, a6->s6_addr + 12, v4_prefix, out, size);
	return glstore_net_format(AF_INET6, a6->s6_addr, v6_prefix, out, size);
}

/* glstore_domain_ok - a domain for spf:/org: IDs */
static bool
glstore_domain_ok(const char *d)
{
	size_t len = strlen(d);

	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)d[i];

		if (!isalnum(c) && c != '-' && c != '.' && c != '_')
			return false;
	}
	return true;
}

/* glstore_client_parse - an operator's client ID, normalised (see glstore.h) */
int
glstore_client_parse(const char *word, int v4_prefix, int v6_prefix, char *out, size_t size,
	char *why, size_t whysize)
{
	char addr[INET6_ADDRSTRLEN + 8], *slash;
	unsigned char b[16];
	struct in6_addr a6;
	int len = -1, family, prefix;
	size_t wl = strlen(word);

	if (strncmp(word, "spf:", 4) == 0 || strncmp(word, "org:", 4) == 0) {
		char dom[GLSTORE_PART_MAX + 1];

		if (!glstore_domain_ok(word + 4)) {
			glstore_err(why, whysize, "\"%.100s\": not a domain name", word + 4);
			return -1;
		}
		glstore_escape(dom, sizeof(dom), word + 4, true);
		if (dom[0] && dom[strlen(dom) - 1] == '.')
			dom[strlen(dom) - 1] = '\0';
		if ((size_t)snprintf(out, size, "%.4s%s", word, dom) >= size) {
			glstore_err(why, whysize, "domain too long");
			return -1;
		}
		return 0;
	}
	if (wl >= sizeof(addr)) {
		glstore_err(why, whysize, "\"%.100s\": not an address, network, spf:DOMAIN "
		    "or org:DOMAIN", word);
		return -1;
	}
	memcpy(addr, word, wl + 1);
	slash = strchr(addr, '/');
	if (slash != NULL) {
		char *end;
		long l;

		*slash = '\0';
		errno = 0;
		l = strtol(slash + 1, &end, 10);
		if (slash[1] == '\0' || *end != '\0' || l < 0 || l > 128 || errno != 0) {
			glstore_err(why, whysize, "\"%.100s\": bad network length", word);
			return -1;
		}
		len = (int)l;
	}
	if (inet_pton(AF_INET, addr, b) == 1)
		family = AF_INET;
	else if (inet_pton(AF_INET6, addr, &a6) == 1) {
		family = AF_INET6;
		memcpy(b, a6.s6_addr, 16);
		if (IN6_IS_ADDR_V4MAPPED(&a6)) {
			memmove(b, b + 12, 4);
			family = AF_INET;
			if (len >= 96)
				len -= 96;
		}
	} else {
		glstore_err(why, whysize, "\"%.100s\": not an address, network, spf:DOMAIN "
		    "or org:DOMAIN", word);
		return -1;
	}
	prefix = family == AF_INET ? v4_prefix : v6_prefix;
	if (len >= 0 && len != prefix) {
		glstore_err(why, whysize, "\"%.100s\": greylisting keys %s clients by /%d "
		    "networks; give an address or a /%d", word,
		    family == AF_INET ? "IPv4" : "IPv6", prefix, prefix);
		return -1;
	}
	if (glstore_net_format(family, b, prefix, out, size) != 0) {
		glstore_err(why, whysize, "ID too long");
		return -1;
	}
	return 0;
}

/* glstore_time - an epoch time as ISO 8601 UTC, "-" for 0 */
static void
glstore_time(int64_t t, char *out, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ",
	    &tm) == 0)
		snprintf(out, size, "-");
}

/* glstore_format_record - one "list" line, with its newline (see glstore.h) */
int
glstore_format_record(const char *key, int64_t a, int64_t b, int64_t x, char *out, size_t size)
{
	char t1[32], t2[32];
	int n;

	glstore_time(x, t2, sizeof(t2));
	if (key[0] == 't') {
		glstore_time(a, t1, sizeof(t1));
		n = snprintf(out, size, "%s first=%s passed=%s expires=%s\n", key, t1,
		    b ? "yes" : "no", t2);
	} else {
		glstore_time(b, t1, sizeof(t1));
		n = snprintf(out, size, "%s passes=%" PRId64 " allowlisted-until=%s expires=%s\n",
		    key, a, t1, t2);
	}
	return n > 0 && (size_t)n < size ? 0 : -1;
}

struct glstore_out {
	char *p;
	size_t len, cap;
};

/* glstore_out_add - append text to a reply */
static void __attribute__((format(printf, 2, 3)))
glstore_out_add(struct glstore_out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? o->cap - o->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (o->p != NULL && o->len + (size_t)n < o->cap) {
			o->len += (size_t)n;
			return;
		}
		o->cap = (o->cap + (size_t)n + 1) * 2;
		o->p = xrealloc(o->p, o->cap);
		if (o->len == 0)
			o->p[0] = '\0';
	}
}

/* glstore_ctl_list - "list [N]" */
static int
glstore_ctl_list(struct glstore *s, char **w, int nw, struct glstore_out *o)
{
	long n = GLSTORE_LIST_DEFAULT;
	char line[GLSTORE_KEY_MAX + 128], *end;
	int64_t now = glstore_now(s);
	long shown = 0;

	if (nw > 2) {
		glstore_out_add(o, "error: usage: list [N]\n");
		return -1;
	}
	if (nw == 2) {
		n = strtol(w[1], &end, 10);
		if (*end != '\0' || n < 1 || n > GLSTORE_LIST_MAX) {
			glstore_out_add(o, "error: list: N must be 1 to %d\n", GLSTORE_LIST_MAX);
			return -1;
		}
	}
	for (struct glrec *r = s->head; r != NULL && shown < n; r = r->next) {
		if (r->x <= now)
			continue;
		if (glstore_format_record(r->key, r->a, r->b, r->x, line, sizeof(line)) == 0) {
			glstore_out_add(o, "%s", line);
			shown++;
		}
	}
	glstore_out_add(o, "total %zu\n", s->count);
	return 0;
}

/* glstore_ctl_id - a client key from an operator's word */
static int
glstore_ctl_id(struct glstore *s, const char *word, char *key, size_t size,
	struct glstore_out *o)
{
	char id[GLSTORE_ID_MAX + 8], why[256];

	if (glstore_client_parse(word, s->v4_prefix, s->v6_prefix, id, sizeof(id), why,
	    sizeof(why)) != 0) {
		glstore_out_add(o, "error: %s\n", why);
		return -1;
	}
	snprintf(key, size, "c:{%s}", id);
	return 0;
}

/* glstore_ctl_allow - "allow ID [DURATION]" */
static int
glstore_ctl_allow(struct glstore *s, char **w, int nw, struct glstore_out *o)
{
	char key[GLSTORE_ID_MAX + 16], until[32];
	int64_t now = glstore_now(s), life = s->allow_lifetime;
	uint64_t ms;
	struct glrec *c;

	if (nw < 2 || nw > 3) {
		glstore_out_add(o, "error: usage: allow ADDR|NET|spf:DOMAIN|org:DOMAIN [DURATION]\n");
		return -1;
	}
	if (nw == 3) {
		if (glstore_duration(w[2], &ms) != 0 || ms < 1000 ||
		    ms > (uint64_t)3650 * GLSTORE_DAY * 1000) {
			glstore_out_add(o, "error: allow: bad duration \"%.40s\" (e.g. 36d, 12h; "
			    "at most 3650d)\n", w[2]);
			return -1;
		}
		life = (int64_t)(ms / 1000);
	}
	if (glstore_ctl_id(s, w[1], key, sizeof(key), o) != 0)
		return -1;
	c = glstore_find(s, key, strlen(key), now);
	if (c == NULL) {
		c = glstore_insert(s, key, strlen(key), now, NULL, false);
		c->a = 0;
	} else
		glstore_touch(s, c);
	c->b = c->x = now + life;
	glstore_time(c->b, until, sizeof(until));
	glstore_out_add(o, "allowed %s until %s\n", key, until);
	return 0;
}

/* glstore_ctl_delete - "delete KEY|ID" */
static int
glstore_ctl_delete(struct glstore *s, char **w, int nw, struct glstore_out *o)
{
	char key[GLSTORE_KEY_MAX];
	struct glrec *r;
	size_t len;

	if (nw != 2) {
		glstore_out_add(o, "error: usage: delete KEY|ADDR|NET|spf:DOMAIN|org:DOMAIN\n");
		return -1;
	}
	len = strlen(w[1]);
	if (strncmp(w[1], "t:", 2) == 0 || strncmp(w[1], "c:", 2) == 0) {
		if (len >= sizeof(key)) {
			glstore_out_add(o, "error: delete: key too long\n");
			return -1;
		}
		memcpy(key, w[1], len + 1);
	} else if (glstore_ctl_id(s, w[1], key, sizeof(key), o) != 0)
		return -1;
	r = glstore_find(s, key, strlen(key), glstore_now(s));
	if (r != NULL)
		glstore_remove(s, r);
	glstore_out_add(o, "deleted %d\n", r != NULL);
	return 0;
}

/* glstore_ctl_stats - "stats" */
static int
glstore_ctl_stats(struct glstore *s, int nw, struct glstore_out *o)
{
	struct glstore_stats st;

	if (nw != 1) {
		glstore_out_add(o, "error: usage: stats\n");
		return -1;
	}
	glstore_stats_locked(s, glstore_now(s), &st);
	glstore_out_add(o, "store embedded\nrecords %" PRIu64 "\nmax %" PRIu64 "\ntriplets %"
	    PRIu64 "\nclients %" PRIu64 "\nallowlisted %" PRIu64 "\ninserted %" PRIu64
	    "\nevicted %" PRIu64 "\nexpired %" PRIu64 "\ndecisions %" PRIu64 "\n",
	    st.records, st.max, st.triplets, st.clients, st.allowlisted, st.inserted,
	    st.evicted, st.expired, st.decisions);
	return 0;
}

/* glstore_control - one control command (see glstore.h) */
int
glstore_control(struct glstore *s, const char *line, char **out)
{
	struct glstore_out o = { NULL, 0, 0 };
	char buf[GLSTORE_KEY_MAX + 64], *w[4], *save = NULL, *tok;
	size_t len = strlen(line);
	int nw = 0, rc;

	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len >= sizeof(buf)) {
		glstore_out_add(&o, "error: command too long\n");
		*out = o.p;
		return -1;
	}
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < ' ' && line[i] != '\t') {
			glstore_out_add(&o, "error: control characters in the command\n");
			*out = o.p;
			return -1;
		}
	memcpy(buf, line, len);
	buf[len] = '\0';
	for (tok = strtok_r(buf, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save)) {
		if (nw == 4) {
			glstore_out_add(&o, "error: too many words\n");
			*out = o.p;
			return -1;
		}
		w[nw++] = tok;
	}
	if (nw == 0) {
		glstore_out_add(&o, "error: empty command (list, allow, delete, stats)\n");
		*out = o.p;
		return -1;
	}
	pthread_mutex_lock(&s->lock);
	if (strcmp(w[0], "list") == 0)
		rc = glstore_ctl_list(s, w, nw, &o);
	else if (strcmp(w[0], "allow") == 0)
		rc = glstore_ctl_allow(s, w, nw, &o);
	else if (strcmp(w[0], "delete") == 0)
		rc = glstore_ctl_delete(s, w, nw, &o);
	else if (strcmp(w[0], "stats") == 0)
		rc = glstore_ctl_stats(s, nw, &o);
	else {
		glstore_out_add(&o, "error: unknown command (list, allow, delete, stats)\n");
		rc = -1;
	}
	pthread_mutex_unlock(&s->lock);
	*out = o.p;
	return rc;
}
