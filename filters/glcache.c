/*
 * glcache - a short local memory of greylist passes (see glcache.h)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "glcache.h"
#include "siphash.h"
#include "xalloc.h"

struct glslot {
	uint64_t hash;
	int64_t until;			/* exclusive; 0: empty */
	unsigned passes;
	char *key;
};

struct glcache {
	struct glslot *slot;
	unsigned mask;
	uint64_t k0, k1;
};

/* glcache_new - an empty memory of slots entries (rounded up) */
struct glcache *
glcache_new(unsigned slots)
{
	struct glcache *c = xcalloc(1, sizeof(*c));
	unsigned n = 64;

	while (n < slots && n < (1u << 24))
		n <<= 1;
	c->slot = xcalloc(n, sizeof(*c->slot));
	c->mask = n - 1;
	siphash_key(&c->k0, &c->k1);
	return c;
}

/* gc_find - the slot of key, and its hash */
static struct glslot *
gc_find(const struct glcache *c, const char *key, uint64_t *hash)
{
	*hash = siphash24(c->k0, c->k1, key, strlen(key));
	return &c->slot[*hash & c->mask];
}

/* gc_empty - a slot gives its key back */
static void
gc_empty(struct glslot *s)
{
	free(s->key);
	memset(s, 0, sizeof(*s));
}

/* glcache_put - remember key until the second until */
void
glcache_put(struct glcache *c, const char *key, int64_t until, unsigned passes)
{
	uint64_t h;
	struct glslot *s = gc_find(c, key, &h);

	if (s->key == NULL || s->hash != h || strcmp(s->key, key) != 0) {
		gc_empty(s);
		s->key = xstrdup(key);
		s->hash = h;
	}
	s->until = until;
	s->passes = passes;
}

/* glcache_get - is key remembered at now? */
bool
glcache_get(struct glcache *c, const char *key, int64_t now, unsigned *passes)
{
	uint64_t h;
	struct glslot *s = gc_find(c, key, &h);

	if (s->key == NULL || s->hash != h || strcmp(s->key, key) != 0)
		return false;
	if (now >= s->until) {
		gc_empty(s);
		return false;
	}
	if (passes != NULL)
		*passes = s->passes;
	return true;
}

/* glcache_clear - drop everything */
void
glcache_clear(struct glcache *c)
{
	for (unsigned i = 0; i <= c->mask; i++)
		if (c->slot[i].key != NULL)
			gc_empty(&c->slot[i]);
}

/* glcache_count - live entries at now */
unsigned
glcache_count(const struct glcache *c, int64_t now)
{
	unsigned n = 0;

	for (unsigned i = 0; i <= c->mask; i++)
		n += c->slot[i].key != NULL && now < c->slot[i].until;
	return n;
}

/* glcache_free - free the memory */
void
glcache_free(struct glcache *c)
{
	if (c == NULL)
		return;
	glcache_clear(c);
	free(c->slot);
	free(c);
}
