/*
 * dkim_sign_bench - the CPU one DKIM signature costs: moat's own signer
 * (filters/dkim_sign.c) over a message like smtp-source's, and the
 * private-key operation alone, each repeated N times (bench/features
 * runs it beside the signing cells: the floor of what signing costs)
 *
 *	build/dkim-sign-bench [-n N] [-l BODY_BYTES] rsa-sha256|ed25519-sha256:KEYFILE ...
 *
 * For each key, one JSON line on stdout:
 *   {"alg": ..., "bits": ..., "n": N, "size": BYTES,
 *    "full_us": CPU per message through dkims_msg_new/feed/finish/free,
 *    "sigop_us": CPU per private-key operation alone (RSA: EVP_PKEY_sign
 *                of a SHA-256 digest, PKCS#1 v1.5, context made once;
 *                Ed25519: EVP_DigestSign of the 32-byte hash, RFC 8463)}
 * CPU time is the process's (CLOCK_PROCESS_CPUTIME_ID); one thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "dkim_key.h"
#include "dkim_sign.h"

static double
cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* message - header fields as smtp-source writes them, then body bytes in
 * lines of 78 characters and CRLF */
static char *
message(size_t body, size_t *len)
{
	static const char hdr[] = "From: <sender@bench.test>\r\nTo: <rcpt@bench.test>\r\n"
	    "Date: Sun, 6 Dec 2026 12:00:00 +0000 (UTC)\r\n"
	    "Message-Id: <20261206120000.1@bench.test>\r\nSubject: moat bench\r\n\r\n";
	size_t n = sizeof(hdr) - 1;
	char *m = malloc(n + body + 82);

	if (m == NULL)
		exit(1);
	memcpy(m, hdr, n);
	while (body > 0) {
		size_t l = body > 80 ? 78 : (body > 2 ? body - 2 : 1);

		memset(m + n, 'x', l);
		n += l;
		m[n++] = '\r';
		m[n++] = '\n';
		body = body > l + 2 ? body - l - 2 : 0;
	}
	*len = n;
	return m;
}

static int
sigop(EVP_PKEY *pk, enum dkim_key_alg alg, int n, double *us)
{
	unsigned char dg[32], sig[1024];
	size_t sl;
	double t0;
	EVP_PKEY_CTX *pc = NULL;

	memset(dg, 0x5a, sizeof(dg));
	if (alg == DKIM_KEY_RSA_SHA256) {
		pc = EVP_PKEY_CTX_new(pk, NULL);
		if (pc == NULL || EVP_PKEY_sign_init(pc) != 1 ||
		    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) != 1 ||
		    EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) != 1)
			return -1;
	}
	t0 = cpu_us();
	for (int i = 0; i < n; i++) {
		sl = sizeof(sig);
		if (alg == DKIM_KEY_RSA_SHA256) {
			if (EVP_PKEY_sign(pc, sig, &sl, dg, sizeof(dg)) != 1)
				return -1;
		} else {
			EVP_MD_CTX *c = EVP_MD_CTX_new();
			int ok = c != NULL && EVP_DigestSignInit(c, NULL, NULL, NULL, pk) == 1 &&
			    EVP_DigestSign(c, sig, &sl, dg, sizeof(dg)) == 1;

			EVP_MD_CTX_free(c);
			if (!ok)
				return -1;
		}
	}
	*us = (cpu_us() - t0) / n;
	EVP_PKEY_CTX_free(pc);
	return 0;
}

int
main(int argc, char **argv)
{
	int n = 200, i;
	size_t body = 4096, mlen;
	char *msg, err[300], warn[300];
	struct dkims *s;

	for (i = 1; i + 1 < argc && argv[i][0] == '-'; i += 2) {
		if (strcmp(argv[i], "-n") == 0)
			n = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "-l") == 0)
			body = (size_t)strtoul(argv[i + 1], NULL, 10);
		else
			break;
	}
	if (i >= argc || n < 1) {
		fprintf(stderr, "usage: dkim-sign-bench [-n N] [-l BODY_BYTES] "
		    "rsa-sha256|ed25519-sha256:KEYFILE ...\n");
		return 2;
	}
	msg = message(body, &mlen);
	s = dkims_new(0, err, sizeof(err));
	for (; i < argc; i++) {
		struct dkim_keys *ks = calloc(1, sizeof(*ks));
		struct dkim_key k;
		const char *colon = strchr(argv[i], ':');
		double t0, full = 0, op = 0;

		memset(&k, 0, sizeof(k));
		if (colon == NULL) {
			fprintf(stderr, "%s: ALG:KEYFILE\n", argv[i]);
			return 2;
		}
		k.alg = strncmp(argv[i], "ed25519", 7) == 0 ? DKIM_KEY_ED25519_SHA256 :
		    DKIM_KEY_RSA_SHA256;
		snprintf(k.domain, sizeof(k.domain), "bench.test");
		snprintf(k.selector, sizeof(k.selector), "s%d", i);
		if (dkim_key_load(&k, colon + 1, err, sizeof(err), warn, sizeof(warn)) != 0 ||
		    ks == NULL || dkim_keys_add(ks, &k) != 0) {
			fprintf(stderr, "%s: %s\n", argv[i], err);
			return 1;
		}
		t0 = cpu_us();
		for (int r = 0; r < n; r++) {
			struct dkims_msg *m = dkims_msg_new(s, ks, 0);
			char info[300], *f;
			size_t fl;

			/* in pieces, as DATA arrives */
			for (size_t o = 0; o < mlen; o += 4096)
				dkims_msg_feed(m, msg + o, mlen - o < 4096 ? mlen - o : 4096);
			f = dkims_msg_finish(m, &fl, info, sizeof(info));
			if (f == NULL) {
				fprintf(stderr, "%s: not signed: %s\n", argv[i], info);
				return 1;
			}
			free(f);
			dkims_msg_free(m);
		}
		full = (cpu_us() - t0) / n;
		if (sigop(ks->head->pkey, ks->head->alg, n, &op) != 0) {
			fprintf(stderr, "%s: OpenSSL could not sign\n", argv[i]);
			return 1;
		}
		printf("{\"alg\": \"%s\", \"bits\": %u, \"n\": %d, \"size\": %zu, "
		    "\"full_us\": %.1f, \"sigop_us\": %.1f}\n", dkim_key_alg_name(ks->head->alg),
		    ks->head->bits, n, mlen, full, op);
		fflush(stdout);
		dkim_keys_free(ks);
	}
	dkims_free(s);
	free(msg);
	return 0;
}
