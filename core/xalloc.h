/*
 * xalloc - allocation for daemon code: succeed or panic
 *
 * Parsers that are fuzzed return errors instead and do not use these.
 */
#ifndef MOAT_XALLOC_H
#define MOAT_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xmemdup(const void *p, size_t n);	/* NUL-terminated copy */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
