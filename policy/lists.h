/*
 * lists - named lists for the policy language: networks, domains,
 * addresses and words
 *
 * SYNOPSIS
 *	struct list *list_new(enum list_kind kind);
 *	struct list *list_new_alloc(enum list_kind kind, const struct list_alloc *a);
 *	int list_add(struct list *l, const char *item, size_t len, char *err, size_t errlen);
 *	int list_load_file(struct list *l, const char *path, char *err, size_t errlen);
 *	bool list_match_addr(const struct list *l, const struct sockaddr *sa);
 *	bool list_match_ip_text(const struct list *l, const char *ip, size_t len);
 *	bool list_match_domain(const struct list *l, const char *d, size_t len);
 *	bool list_match_address(const struct list *l, const char *local, size_t llen,
 *	    const char *domain, size_t dlen);
 *	bool list_match_word(const struct list *l, const char *w, size_t len);
 *	size_t list_count(const struct list *l);
 *	enum list_kind list_kind(const struct list *l);
 *	const char *list_kind_name(enum list_kind kind);
 *	void list_free(struct list *l);
 *
 * ENTRIES (what list_add accepts; each kind has its own syntax)
 *	LIST_NET	"192.0.2.0/24", "2001:db8::/32", or a bare address
 *			(= /32 or /128). Host bits set beyond the prefix
 *			("192.0.2.1/24") are an ERROR, not masked: it is
 *			almost always a typo, and the message suggests the
 *			network that was probably meant. An IPv6 entry inside
 *			::ffff:0:0/96 with a prefix of at least 96 is stored as
 *			the IPv4 network it maps.
 *	LIST_DOMAIN	"example.org"   matches example.org and all subdomains;
 *			".example.org"  matches only subdomains (a.example.org);
 *			"=example.org"  matches exactly example.org.
 *			The same name may be added in several forms; the
 *			rules add up. Names are ASCII letters, digits, '-' and
 *			'_' in dot-separated labels of 1..63 bytes, at most 255
 *			bytes in all; one trailing dot is allowed and dropped.
 *			An IDN may be written in U-labels (UTF-8) or A-labels
 *			(xn--...): both are kept in A-labels (libidn2, UTS #46
 *			non-transitional; an invalid IDN is refused), and a
 *			query with 8-bit bytes is looked up in A-labels, so
 *			either form matches both. "*.x.org" is refused with a
 *			hint to write ".x.org".
 *	LIST_ADDRESS	"user@example.org" that address; "@example.org" any
 *			address at exactly that domain (not its subdomains);
 *			"user@" that local part at any domain. Local parts are
 *			compared case-insensitively (ASCII), like domains: in
 *			practice no site distinguishes User@ from user@, and a
 *			case-sensitive block list is trivially evaded. A local
 *			part is 1..64 printable ASCII bytes without '@', blanks
 *			or quotes (quoted local parts are not supported).
 *	LIST_WORD	a case-insensitive (ASCII) word of 1..255 bytes,
 *			printable ASCII or 8-bit, no blanks. A trailing '*'
 *			makes it a prefix glob ("mx*" matches mx, mx1.example);
 *			"*" alone matches every word. '*' elsewhere is refused.
 *	No kind accepts an empty item, control bytes (including NUL) or an
 *	item longer than its limit. On error list_add returns -1, leaves
 *	the list as it was (as far as matching goes), and writes a message
 *	of the form "bad domain \"x..y\": empty label; expected ..." into
 *	err (truncated to errlen; the item is quoted with escapes).
 *
 * FILES
 *	list_load_file reads one entry per line. Leading and trailing blanks
 *	are dropped; '#' at the start of a line or after a blank starts a
 *	comment; blank and comment-only lines are ignored; CRLF is accepted.
 *	A word containing '#' can only be added through list_add. Caps:
 *	LIST_FILE_MAX bytes per file, LIST_LINE_MAX bytes per line.
 *	Every bad line is counted; the message names the first one as
 *	"PATH:LINE: ..." and adds "(and N more bad lines)". On -1 the list
 *	holds the good lines; the caller is expected to discard it.
 *
 * MATCHING
 *	Matchers never allocate, never modify the list, and may be called
 *	from any number of threads at once (as long as nobody adds). Calling
 *	a matcher of the wrong kind, or with NULL, returns false. An empty
 *	list matches nothing. Costs: networks O(prefix length) on a binary
 *	trie; domains O(labels) hash lookups (each suffix at a dot);
 *	addresses three hash lookups; words one lookup plus one per distinct
 *	glob length.
 *	list_match_addr: AF_INET and AF_INET6; an IPv4-mapped IPv6 address
 *	(::ffff:a.b.c.d) is matched as the IPv4 address only, so "::/0"
 *	does not match IPv4 clients on a dual-stack socket.
 *	list_match_domain: the name is taken as given (it is not validated),
 *	folded to lower case, and one trailing dot is ignored.
 *	list_match_address: local and domain as separate bytes+length (the
 *	domain part as the SMTP parser stores it, without brackets for
 *	names); one trailing dot of the domain is ignored. Either part may
 *	be empty; the null sender (both empty) matches nothing.
 *
 * MEMORY
 *	The list owns everything it stores; items are copied. Allocation
 *	failure in list_add / list_load_file is returned as an error ("out
 *	of memory"). list_new_alloc takes an allocator (realloc-like and
 *	free-like, plus a context) so a fuzzer can cap memory; list_new
 *	uses malloc. list_free(NULL) is a no-op.
 */
#ifndef MOAT_LISTS_H
#define MOAT_LISTS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define LIST_FILE_MAX	(64u * 1024 * 1024)	/* bytes per list file */
#define LIST_LINE_MAX	1024			/* bytes per list file line */
#define LIST_DOMAIN_MAX	255			/* as SMTP_DOMAIN_MAX */
#define LIST_LOCAL_MAX	64			/* as SMTP_LOCAL_MAX */
#define LIST_WORD_MAX	255

enum list_kind { LIST_NET, LIST_DOMAIN, LIST_ADDRESS, LIST_WORD };

struct list_alloc {
	/* like realloc(p, n) with n > 0; NULL on failure */
	void *(*realloc_fn)(void *ctx, void *p, size_t n);
	/* like free(p); p may be NULL */
	void (*free_fn)(void *ctx, void *p);
	void *ctx;
};

struct list;

/* list_new - an empty list of one kind; NULL when out of memory */
struct list *list_new(enum list_kind kind);
/* list_new_alloc - the same with an allocator (copied; NULL = malloc) */
struct list *list_new_alloc(enum list_kind kind, const struct list_alloc *a);
/* list_add - parse and add one entry; 0, or -1 with a message in err */
int list_add(struct list *l, const char *item, size_t len, char *err, size_t errlen);
/* list_load_file - add every entry of a list file; 0, or -1 with "PATH:LINE: ..." */
int list_load_file(struct list *l, const char *path, char *err, size_t errlen);
/* list_match_addr - LIST_NET: is the address inside one of the networks? */
bool list_match_addr(const struct list *l, const struct sockaddr *sa);
/* list_match_ip_text - LIST_NET: the same for an address in text form */
bool list_match_ip_text(const struct list *l, const char *ip, size_t len);
/* list_match_domain - LIST_DOMAIN: does the name match an entry? */
bool list_match_domain(const struct list *l, const char *d, size_t len);
/* list_match_address - LIST_ADDRESS: does local@domain match an entry? */
bool list_match_address(const struct list *l, const char *local, size_t llen,
    const char *domain, size_t dlen);
/* list_match_word - LIST_WORD: does the word match an entry or glob? */
bool list_match_word(const struct list *l, const char *w, size_t len);
/* list_match_helo - LIST_WORD, for a HELO name: list_match_word, and a
 * name in U-labels or xn-- labels also in its A-label form (libidn2, UTS
 * #46), against the entries' A-label forms (kept at load for every exact
 * entry that is a valid IDN): an entry and a name written either way
 * match. A prefix entry ("name*") is compared as written. */
bool list_match_helo(const struct list *l, const char *w, size_t len);
/* list_word_bad_idn - LIST_WORD: the first exact entry that has 8-bit
 * bytes or an xn-- label but is no valid IDN (*w, *len), for a list read
 * as HELO names; false when there is none */
bool list_word_bad_idn(const struct list *l, const char **w, size_t *len);
/* list_count - entries added that were not already there (duplicates uncounted) */
size_t list_count(const struct list *l);
/* list_kind - the kind the list was made with */
enum list_kind list_kind(const struct list *l);
/* list_kind_name - "net", "domain", "address" or "word" */
const char *list_kind_name(enum list_kind kind);
/* list_word_find - LIST_WORD: the first entry (in no set order) for
 * which ok() says false, in w and len (not terminated) and glob (a
 * prefix entry, without its trailing star); false when ok() takes them all */
bool list_word_find(const struct list *l, bool (*ok)(const void *arg, const char *w, size_t len, bool glob),
    const void *arg, const char **w, size_t *len, bool *glob);
/* list_free - release the list; NULL is a no-op */
void list_free(struct list *l);

#endif
