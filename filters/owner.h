/*
 * owner - sender ownership: login maps, and the mailboxes of a header
 * From field (pure; policy/rules.c and proxy/ use it)
 *
 * SYNOPSIS
 *	struct owner_map *owner_map_new(void);
 *	int owner_map_add_word(struct owner_map *m, const char *w, size_t len,
 *	                       char *err, size_t errlen);
 *	int owner_map_load_file(struct owner_map *m, const char *path, char *err, size_t errlen);
 *	bool owner_map_owns(const struct owner_map *m, const char *login, size_t loginlen,
 *	                    const char *local, size_t llen, const char *domain, size_t dlen);
 *	void owner_map_free(struct owner_map *m);
 *	int owner_from_parse(const char *hdrs, size_t len, struct owner_from *out);
 *
 * LOGIN MAPS
 *	"LOGIN:" starts an entry; the words after it, up to the next
 *	"LOGIN:", say what that login may send as:
 *	    user@example.org	that address
 *	    @example.org	any address at exactly that domain
 *	    user@		that local part at any domain
 *	    alice+*@example.org	a pattern: '*' in the local part matches any
 *				run of bytes ("*@example.org" = "@example.org")
 *	    %l  %u  %d		the login, its part before '@', its domain:
 *				"%u@example.org", or "%l" (a login that is an
 *				address owns that address)
 *	    =bob		an alias: whatever login bob owns (4 levels deep)
 *	The login "*" gives its items to every login ("*: %l"). Logins,
 *	local parts and domains compare case-insensitively (ASCII); a
 *	quoted local part ("alice"@x) is compared unquoted, as the SMTP
 *	parser hands it. A login that is in no entry owns nothing (but what
 *	"*" gives). Files hold the same words, '#' comments, any line
 *	breaks; a map is read with the policy file and so reloaded with it.
 *
 * HEADER FROM
 *	owner_from_parse() finds the From field in a header block (up to
 *	the empty line), unfolds it and takes every mailbox: display names,
 *	comments, groups and source routes are dropped, quoted local parts
 *	unquoted, domains lower-cased without a trailing dot. It returns the
 *	count (1 to OWNER_FROM_MAX), or 0 when there is no From field, more
 *	than one, a mailbox it cannot read, or more than OWNER_FROM_MAX
 *	mailboxes: then no login owns it.
 */
#ifndef MOAT_OWNER_H
#define MOAT_OWNER_H

#include <stdbool.h>
#include <stddef.h>

#define OWNER_FROM_MAX 8
#define OWNER_LOGIN_MAX 255

struct owner_map;

struct owner_from {
	unsigned n;
	const char *all[2 * OWNER_FROM_MAX];	/* local, domain of each (into buf) */
	char buf[2048];
};

struct owner_map *owner_map_new(void);
int owner_map_add_word(struct owner_map *m, const char *w, size_t len, char *err, size_t errlen);
int owner_map_load_file(struct owner_map *m, const char *path, char *err, size_t errlen);
bool owner_map_owns(const struct owner_map *m, const char *login, size_t loginlen,
	const char *local, size_t llen, const char *domain, size_t dlen);
void owner_map_free(struct owner_map *m);
int owner_from_parse(const char *hdrs, size_t len, struct owner_from *out);

#endif
