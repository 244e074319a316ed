/*
 * dkim_key - DKIM signing keys: loaded and checked from their files,
 * looked up by the header From domain, made (moatctl dkim-keygen) and
 * turned into the DNS TXT record to publish
 *
 * SYNOPSIS
 *	#include "dkim_key.h"
 *
 *	int dkim_key_load(struct dkim_key *k, const char *path, char *err, size_t errlen,
 *	                  char *warn, size_t warnlen);
 *	int dkim_keys_add(struct dkim_keys *ks, struct dkim_key *k);
 *	void dkim_key_clear(struct dkim_key *k);
 *	int dkim_keys_for(const struct dkim_keys *ks, const char *from_domain,
 *	                  const struct dkim_key **out, int max);
 *	void dkim_keys_free(struct dkim_keys *ks);
 *	int dkim_key_record(const char *pem, size_t len, char *out, size_t size,
 *	                    char *err, size_t errlen);
 *	int dkim_key_generate(enum dkim_key_alg alg, unsigned bits, const char *path,
 *	                      char *err, size_t errlen);
 *	bool dkim_selector_ok(const char *s, size_t len);
 *	const char *dkim_name_alabel(const char *in, size_t len, size_t max, char *out,
 *	                             size_t size);
 *	const char *dkim_key_alg_name(enum dkim_key_alg a);
 *
 * DESCRIPTION
 *	dkim_key_load() reads the private key file of k (PEM, PKCS#8 or
 *	traditional RSA) and checks it: a regular file, readable, not
 *	readable or writable by group or others (keys are for moat alone),
 *	at most 64 KiB, a key of k->alg's type (RSA for rsa-sha256, Ed25519
 *	for ed25519-sha256), an RSA key of at least 1024 bits (RFC 8301).
 *	Errors: -1 with err. An RSA key under 2048 bits loads, with warn
 *	set (warn[0] is 0 otherwise). The file's text is kept in k->pem
 *	(owned, wiped when freed): libopendkim takes the key as text; the
 *	parsed key in k->pkey (moat's own Ed25519 signer uses it).
 *	dkim_key_clear() frees both (a key not added to a table).
 *
 *	dkim_keys_add() takes k over (the caller's struct is copied); -1
 *	when the table has this domain and selector already.
 *	dkim_keys_for() gives the keys that sign mail whose header From
 *	domain is from_domain (lower case): those of that exact domain, or,
 *	when it has none, those of its nearest parent declared with
 *	"subdomains" (then d= is the parent, which aligns with DMARC's
 *	relaxed mode). At most max, in the order they were declared.
 *
 *	dkim_key_record() gives the TXT record for a private key:
 *	"v=DKIM1; k=rsa; p=BASE64(SubjectPublicKeyInfo)" or "v=DKIM1;
 *	k=ed25519; p=BASE64(the 32 raw bytes)" (RFC 8463).
 *	dkim_key_generate() makes a key and writes it (PKCS#8 PEM) to a new
 *	file of mode 0600; an existing file is never overwritten.
 *
 * THREADS
 *	A struct dkim_keys belongs to one policy (immutable once loaded) and
 *	is read by every thread.
 */
#ifndef MOAT_DKIM_KEY_H
#define MOAT_DKIM_KEY_H

#include <stdbool.h>
#include <stddef.h>

enum dkim_key_alg { DKIM_KEY_RSA_SHA256 = 0, DKIM_KEY_ED25519_SHA256 };

#define DKIM_KEYS_PER_DOMAIN	4	/* dkim_keys_for() gives at most this many */
#define DKIM_KEY_FILE_MAX	(64 * 1024)

struct dkim_key {
	struct dkim_key *next;
	char domain[254];		/* d=, lower case, no trailing dot */
	char selector[64];		/* s= */
	enum dkim_key_alg alg;
	bool subdomains;		/* also signs for From domains below domain */
	unsigned bits;			/* RSA modulus size; 256 for Ed25519 */
	char *pem;			/* the key file's text (owned) */
	size_t pemlen;
	struct evp_pkey_st *pkey;	/* the parsed key (OpenSSL's EVP_PKEY), owned */
};

struct dkim_keys {
	struct dkim_key *head, *tail;
	int n;
};

int dkim_key_load(struct dkim_key *k, const char *path, char *err, size_t errlen,
	char *warn, size_t warnlen);
int dkim_keys_add(struct dkim_keys *ks, struct dkim_key *k);
void dkim_key_clear(struct dkim_key *k);
int dkim_keys_for(const struct dkim_keys *ks, const char *from_domain,
	const struct dkim_key **out, int max);
void dkim_keys_free(struct dkim_keys *ks);
int dkim_key_record(const char *pem, size_t len, char *out, size_t size, char *err, size_t errlen);
int dkim_key_generate(enum dkim_key_alg alg, unsigned bits, const char *path,
	char *err, size_t errlen);
bool dkim_selector_ok(const char *s, size_t len);
/* dkim_name_alabel - a selector (max 63) or a signing domain (max 253) as
 * it goes into s= or d= and the DNS name: in A-labels (RFC 5890, RFC 6376
 * 3.5; libidn2, UTS #46) when written with U-labels or xn-- labels, as
 * written otherwise, checked (letters, digits, '-', '_', dots; at most
 * max bytes). Into out (NUL-terminated): NULL, or what is wrong. */
const char *dkim_name_alabel(const char *in, size_t len, size_t max, char *out, size_t size);
const char *dkim_key_alg_name(enum dkim_key_alg a);

#endif
