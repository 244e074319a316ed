/*
 * sasl - the bytes of an AUTH exchange, parsed (see sasl.h)
 */
#include <string.h>
#include <strings.h>

#include "sasl.h"

/* sasl_mech_find - a mechanism moat can relay, or SASL_NONE */
enum sasl_mech
sasl_mech_find(const char *name, size_t len)
{
	if (len == 5 && strncasecmp(name, "PLAIN", 5) == 0)
		return SASL_PLAIN;
	if (len == 5 && strncasecmp(name, "LOGIN", 5) == 0)
		return SASL_LOGIN;
	if (len == 8 && strncasecmp(name, "CRAM-MD5", 8) == 0)
		return SASL_CRAM_MD5;
	if (len > 6 && len <= 20 && strncasecmp(name, "SCRAM-", 6) == 0) {
		for (size_t i = 6; i < len; i++) {
			char c = name[i];
			if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			    c == '-'))
				return SASL_NONE;
		}
		return SASL_SCRAM;
	}
	return SASL_NONE;
}

/* b64_val - one base64 digit, or -1 */
static int
b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* sasl_b64_decode - strict base64 */
int
sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t size)
{
	size_t n = 0;

	if (len == 1 && in[0] == '=')
		return 0;
	if (len == 0 || len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + (size_t)k];
			if (c == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad > 0)
				return -1;	/* data after padding */
			v[k] = b64_val(c);
			if (v[k] < 0)
				return -1;
		}
		if (pad == 1 && in[i + 2] == '=')
			return -1;
		if (n + (size_t)(3 - pad) > size)
			return -1;
		out[n++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[n++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
		if (pad < 1)
			out[n++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
	}
	return (int)n;
}

/* sasl_put - copy a login if it is usable */
static int
sasl_put(const unsigned char *p, size_t len, char *login, size_t size)
{
	if (len == 0 || len > SASL_LOGIN_MAX || len + 1 > size)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (p[i] <= 0x20 || p[i] == 0x7f)
			return -1;
	memcpy(login, p, len);
	login[len] = 0;
	return 1;
}

/* sasl_saslname - a SCRAM saslname from msg[i] to the next ',' (which
 * must come: r= or the rest follows) into login: "=2C" is ',', "=3D" is
 * '=', any other '=' is an error; -1 when bad or too long */
static int
sasl_saslname(const unsigned char *msg, size_t len, size_t i, char *login, size_t size)
{
	char name[SASL_LOGIN_MAX + 1];
	size_t n = 0;

	while (i < len && msg[i] != ',') {
		if (n >= SASL_LOGIN_MAX)
			return -1;
		if (msg[i] == '=' && i + 2 < len && msg[i + 1] == '2' && msg[i + 2] == 'C') {
			name[n++] = ',';
			i += 3;
		} else if (msg[i] == '=' && i + 2 < len && msg[i + 1] == '3' && msg[i + 2] == 'D') {
			name[n++] = '=';
			i += 3;
		} else if (msg[i] == '=') {
			return -1;
		} else {
			name[n++] = (char)msg[i++];
		}
	}
	if (i >= len)
		return -1;
	return sasl_put((const unsigned char *)name, n, login, size);
}

/* sasl_login - see sasl.h */
int
sasl_login(enum sasl_mech m, unsigned step, const unsigned char *msg, size_t len,
	char *login, size_t size)
{
	const unsigned char *a, *b;

	switch (m) {
	case SASL_PLAIN:
		/* authzid NUL authcid NUL passwd, in the one client message */
		if (len == 0)
			return 0;	/* no initial response: it comes next */
		a = memchr(msg, 0, len);
		if (a == NULL)
			return -1;
		b = memchr(a + 1, 0, len - (size_t)(a + 1 - msg));
		if (b == NULL || b == a + 1)
			return -1;	/* no password separator, or no authcid */
		if (a > msg)
			return sasl_put(msg, (size_t)(a - msg), login, size);
		return sasl_put(a + 1, (size_t)(b - a - 1), login, size);
	case SASL_LOGIN:
		/* step 0 (an initial response) or 1: the user name */
		if (step > 1 || (step == 0 && len == 0))
			return 0;
		return sasl_put(msg, len, login, size);
	case SASL_CRAM_MD5:
		if (step != 1)
			return 0;
		a = msg + len;
		while (a > msg && a[-1] != ' ')
			a--;
		if (a == msg)
			return -1;
		return sasl_put(msg, (size_t)(a - 1 - msg), login, size);
	case SASL_SCRAM: {
		/* gs2-header "n,," | "y,," | "p=..,", optional "a=authzid", then
		 * "n=saslname,r=..." */
		size_t i;
		if (step > 1 || len == 0)
			return 0;
		if (msg[0] == 'p')
			return -1;	/* channel binding: not relayable through a proxy */
		if (len < 3 || (msg[0] != 'n' && msg[0] != 'y') || msg[1] != ',')
			return -1;
		i = 2;
		if (i + 2 <= len && msg[i] == 'a' && msg[i + 1] == '=')
			/* an authzid: that is who the upstream acts as */
			return sasl_saslname(msg, len, i + 2, login, size);
		if (i >= len || msg[i] != ',')
			return -1;
		i++;
		if (i + 2 > len || msg[i] != 'n' || msg[i + 1] != '=')
			return -1;
		return sasl_saslname(msg, len, i + 2, login, size);
	}
	case SASL_NONE:
		break;
	}
	return -1;
}
