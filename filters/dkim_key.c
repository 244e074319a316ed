/*
 * dkim_key - DKIM signing keys (see dkim_key.h)
 *
 * The key file is opened once, fstat()ed on the open descriptor (so the
 * checks and the read see the same file) and read whole; OpenSSL parses
 * it from memory. Nothing here logs: errors and warnings go back to the
 * policy parser, which puts them at the statement's file:line:col.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "dkim_key.h"
#include "dnsbl.h"
#include "idn.h"
#include "rfile.h"
#include "xalloc.h"

const char *
dkim_key_alg_name(enum dkim_key_alg a)
{
	return a == DKIM_KEY_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256";
}

/* dkim_selector_ok - dot-separated labels of letters, digits, '-', '_' */
bool
dkim_selector_ok(const char *s, size_t len)
{
	return dnsbl_domain_ok(s, len, 63);
}

/* dkim_name_alabel - see dkim_key.h */
const char *
dkim_name_alabel(const char *in, size_t len, size_t max, char *out, size_t size)
{
	int r;

	if (size == 0)
		return "no room";
	out[0] = 0;
	if (idn_needs(in, len)) {
		r = idn_alabel(in, len, out, size);
		if (r == IDN_TOOLONG)
			return "too long";
		if (r <= 0)
			return "not a valid internationalised domain name (IDNA2008, UTS #46)";
		len = (size_t)r;
	} else {
		if (len >= size || memchr(in, 0, len) != NULL)
			return "too long";
		memcpy(out, in, len);
		out[len] = 0;
	}
	if (!dnsbl_domain_ok(out, len, max)) {
		out[0] = 0;
		return len > max ? "too long" : "letters, digits, '-', '_' and dots only";
	}
	return NULL;
}

/* read_key_file - the file's text, after the checks on its descriptor */
static char *
read_key_file(const char *path, size_t *len, char *err, size_t errlen)
{
	struct rfile rf;

	switch (rfile_read(&rf, path, O_NOCTTY | O_NONBLOCK, 077, DKIM_KEY_FILE_MAX)) {
	case RFILE_OK:
		if (rf.len > 0) {
			*len = rf.len;
			return rf.buf;
		}
		snprintf(err, errlen, "key file %s: empty", path);
		break;
	case RFILE_OPEN:
		snprintf(err, errlen, "key file %s: %s", path, strerror(rf.err));
		break;
	case RFILE_NOT_REGULAR:
		snprintf(err, errlen, "key file %s: not a regular file", path);
		break;
	case RFILE_MODE:
		snprintf(err, errlen, "key file %s: mode %04o lets group or others in "
		    "(chmod 600: the key must be readable by moat only)", path,
		    (unsigned)(rf.sb.st_mode & 07777));
		break;
	case RFILE_SIZE:
		snprintf(err, errlen, "key file %s: larger than 64 KiB", path);
		break;
	case RFILE_READ:
		snprintf(err, errlen, "key file %s: %s", path, rf.err != 0 ? strerror(rf.err) :
		    "shorter than its size");
		OPENSSL_cleanse(rf.buf, rf.len);
		break;
	}
	free(rf.buf);
	return NULL;
}

/* parse_key - a private key from PEM text, or NULL */
static EVP_PKEY *
parse_key(const char *pem, size_t len)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pk;

	if (b == NULL)
		return NULL;
	pk = PEM_read_bio_PrivateKey(b, NULL, NULL, (void *)"");
	BIO_free(b);
	return pk;
}

/* dkim_key_load - read and check k's private key file */
int
dkim_key_load(struct dkim_key *k, const char *path, char *err, size_t errlen,
	char *warn, size_t warnlen)
{
	size_t len = 0;
	char *pem;
	EVP_PKEY *pk;
	int type;

	warn[0] = 0;
	pem = read_key_file(path, &len, err, errlen);
	if (pem == NULL)
		return -1;
	if (memchr(pem, 0, len) != NULL || (pk = parse_key(pem, len)) == NULL) {
		snprintf(err, errlen, "key file %s: not a PEM private key (unencrypted)", path);
		goto fail;
	}
	type = EVP_PKEY_get_base_id(pk);
	if (k->alg == DKIM_KEY_RSA_SHA256 && type != EVP_PKEY_RSA) {
		snprintf(err, errlen, "key file %s: not an RSA key, as rsa-sha256 needs", path);
		EVP_PKEY_free(pk);
		goto fail;
	}
	if (k->alg == DKIM_KEY_ED25519_SHA256 && type != EVP_PKEY_ED25519) {
		snprintf(err, errlen, "key file %s: not an Ed25519 key, as ed25519-sha256 needs",
		    path);
		EVP_PKEY_free(pk);
		goto fail;
	}
	k->bits = (unsigned)EVP_PKEY_get_bits(pk);
	if (k->alg == DKIM_KEY_RSA_SHA256 && k->bits < 1024) {
		snprintf(err, errlen, "key file %s: RSA key of %u bits; at least 1024 (RFC 8301), "
		    "2048 advised", path, k->bits);
		EVP_PKEY_free(pk);
		goto fail;
	}
	if (k->alg == DKIM_KEY_RSA_SHA256 && k->bits < 2048)
		snprintf(warn, warnlen, "key file %s: RSA key of %u bits; 2048 or more advised "
		    "(some receivers ignore shorter keys)", path, k->bits);
	k->pem = pem;
	k->pemlen = len;
	k->pkey = pk;
	return 0;
fail:
	OPENSSL_cleanse(pem, len);
	free(pem);
	return -1;
}

/* dkim_keys_add - k into the table (copied); -1 for a second domain+selector */
int
dkim_keys_add(struct dkim_keys *ks, struct dkim_key *k)
{
	struct dkim_key *n;

	for (n = ks->head; n; n = n->next)
		if (strcmp(n->domain, k->domain) == 0 && strcmp(n->selector, k->selector) == 0)
			return -1;
	n = xmalloc(sizeof(*n));
	*n = *k;
	n->next = NULL;
	if (ks->tail)
		ks->tail->next = n;
	else
		ks->head = n;
	ks->tail = n;
	ks->n++;
	return 0;
}

/* dkim_keys_for - the keys for a From domain (exact, else a parent's) */
int
dkim_keys_for(const struct dkim_keys *ks, const char *from_domain,
	const struct dkim_key **out, int max)
{
	const char *d = from_domain;
	bool exact = true;
	int n = 0;

	if (ks == NULL || from_domain == NULL)
		return 0;
	while (d != NULL && *d) {
		for (const struct dkim_key *k = ks->head; k && n < max; k = k->next)
			if ((exact || k->subdomains) && strcmp(k->domain, d) == 0)
				out[n++] = k;
		if (n > 0)
			return n;
		d = strchr(d, '.');
		if (d != NULL)
			d++;
		exact = false;
	}
	return 0;
}

/* dkim_key_clear - the key's text and parsed key, freed */
void
dkim_key_clear(struct dkim_key *k)
{
	if (k->pem != NULL) {
		OPENSSL_cleanse(k->pem, k->pemlen);
		free(k->pem);
	}
	EVP_PKEY_free(k->pkey);
	k->pem = NULL;
	k->pkey = NULL;
}

void
dkim_keys_free(struct dkim_keys *ks)
{
	struct dkim_key *k, *next;

	if (ks == NULL)
		return;
	for (k = ks->head; k; k = next) {
		next = k->next;
		dkim_key_clear(k);
		free(k);
	}
	free(ks);
}

/* dkim_key_record - the TXT record that publishes the key's public half */
int
dkim_key_record(const char *pem, size_t len, char *out, size_t size, char *err, size_t errlen)
{
	EVP_PKEY *pk = parse_key(pem, len);
	unsigned char *der = NULL, raw[32];
	size_t rawlen = sizeof(raw);
	int dlen, type, rc = -1;
	const char *kw;
	char *b64 = NULL;

	if (pk == NULL) {
		snprintf(err, errlen, "not a PEM private key");
		return -1;
	}
	type = EVP_PKEY_get_base_id(pk);
	if (type == EVP_PKEY_RSA) {
		kw = "rsa";
		dlen = i2d_PUBKEY(pk, &der);
	} else if (type == EVP_PKEY_ED25519 &&
	    EVP_PKEY_get_raw_public_key(pk, raw, &rawlen) == 1 && rawlen == 32) {
		kw = "ed25519";
		der = OPENSSL_malloc(32);
		if (der != NULL)
			memcpy(der, raw, 32);
		dlen = der != NULL ? 32 : -1;
	} else {
		snprintf(err, errlen, "neither an RSA nor an Ed25519 key");
		goto out;
	}
	if (dlen <= 0) {
		snprintf(err, errlen, "cannot encode the public key");
		goto out;
	}
	b64 = xmalloc(4 * ((size_t)dlen / 3 + 1) + 1);
	EVP_EncodeBlock((unsigned char *)b64, der, dlen);
	if ((size_t)snprintf(out, size, "v=DKIM1; k=%s; p=%s", kw, b64) >= size) {
		snprintf(err, errlen, "record longer than %zu bytes", size);
		goto out;
	}
	rc = 0;
out:
	free(b64);
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	return rc;
}

/* dkim_key_generate - a new key in a new file of mode 0600 */
int
dkim_key_generate(enum dkim_key_alg alg, unsigned bits, const char *path, char *err, size_t errlen)
{
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *ctx;
	FILE *f;
	int fd, ok;

	ctx = EVP_PKEY_CTX_new_id(alg == DKIM_KEY_RSA_SHA256 ? EVP_PKEY_RSA : EVP_PKEY_ED25519,
	    NULL);
	if (ctx == NULL || EVP_PKEY_keygen_init(ctx) <= 0 ||
	    (alg == DKIM_KEY_RSA_SHA256 && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits) <= 0) ||
	    EVP_PKEY_keygen(ctx, &pk) <= 0) {
		snprintf(err, errlen, "OpenSSL could not make the key");
		EVP_PKEY_CTX_free(ctx);
		return -1;
	}
	EVP_PKEY_CTX_free(ctx);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		EVP_PKEY_free(pk);
		return -1;
	}
	(void)fchmod(fd, 0600);	/* whatever the umask */
	f = fdopen(fd, "w");
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		EVP_PKEY_free(pk);
		return -1;
	}
	ok = PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1;
	ok = (fclose(f) == 0) && ok;
	EVP_PKEY_free(pk);
	if (!ok) {
		snprintf(err, errlen, "%s: could not write the key", path);
		unlink(path);
		return -1;
	}
	return 0;
}
