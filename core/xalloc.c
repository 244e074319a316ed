/*
 * xalloc - allocation for daemon code: succeed or panic (see xalloc.h)
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "xalloc.h"

/* xmalloc - malloc or panic */
void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		panic("out of memory allocating %zu bytes", n);
	return p;
}

/* xcalloc - calloc or panic */
void *
xcalloc(size_t nmemb, size_t n)
{
	void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);

	if (p == NULL)
		panic("out of memory allocating %zu x %zu bytes", nmemb, n);
	return p;
}

/* xrealloc - realloc or panic */
void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		panic("out of memory reallocating %zu bytes", n);
	return q;
}

/* xstrdup - strdup or panic */
char *
xstrdup(const char *s)
{
	return xmemdup(s, strlen(s));
}

/* xmemdup - copy n bytes and terminate */
char *
xmemdup(const void *p, size_t n)
{
	char *q = xmalloc(n + 1);

	memcpy(q, p, n);
	q[n] = 0;
	return q;
}

/* xasprintf - a formatted, allocated string */
char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		fatal("out of memory");
	return s;
}
