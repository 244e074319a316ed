// sources: filters/glstore.c core/siphash.c filters/greylist_reply.c core/log.c core/xalloc.c
/*
 * fuzz_glstore - the greylist store's file loader, its control commands,
 * the key text helpers, and the script reply interpretation (docs/SECURITY.md
 * F11: reply trees of any type give an error, never a crash)
 *
 * Input: byte 0 picks the mode (low two bits), the rest is the data.
 *   0  a store file for glstore_load_buf(); byte 1 sets the store's size.
 *      Then "list" and "stats" run over whatever was loaded.
 *      Properties: records <= max; a refused file leaves the store empty
 *      and gives a message.
 *   1  control lines (split at '\n') against a store with a few records.
 *      Properties: a reply always, ending in "\n", no line starting with
 *      "."; a failure's reply starts with "error: ".
 *   2  a redisReply tree built from the bytes, into greylist_reply_parse(),
 *      and into greylist_limits_reply_parse() with nl = (byte 0 >> 2) % 8.
 *      Properties: success only with a status of pass/allowlisted/
 *      greylisted; failure always GL_ERROR with a message. The limits'
 *      reply: exceeded bits only below nl; a skipped triplet only on
 *      success; on failure no bit and GL_ERROR with a message.
 *   3  text for glstore_escape() and glstore_client_parse().
 *      Properties: escaped text is printable, has none of " %|{}" except
 *      "%" escapes, and is at most GLSTORE_PART_MAX bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "glstore.h"
#include "greylist.h"
#include "log.h"

#define NOW 1700000000LL

/* check_reply - the shape every control reply has */
static void
check_reply(const char *out, int rc)
{
	size_t len;

	if (out == NULL)
		abort();
	len = strlen(out);
	if (len == 0 || out[len - 1] != '\n')
		abort();
	if (rc != 0 && strncmp(out, "error: ", 7) != 0)
		abort();
	for (const char *p = out; *p; p = strchr(p, '\n') + 1) {
		if (*p == '.')
			abort();
		if (strchr(p, '\n') == NULL)
			abort();
	}
}

/* run_ctl - one control command */
static void
run_ctl(struct glstore *s, const char *line)
{
	char *out = NULL;
	int rc = glstore_control(s, line, &out);

	check_reply(out, rc);
	free(out);
}

/* reply_build - a reply tree from the bytes, at most depth 3 */
static redisReply *
reply_build(const uint8_t **p, const uint8_t *end, int depth)
{
	redisReply *r = calloc(1, sizeof(*r));
	unsigned t;

	if (r == NULL)
		abort();
	if (*p >= end) {
		r->type = REDIS_REPLY_NIL;
		return r;
	}
	t = *(*p)++ % 6;
	switch (t) {
	case 0:
		r->type = REDIS_REPLY_INTEGER;
		for (int i = 0; i < 8 && *p < end; i++)
			r->integer = (long long)(((unsigned long long)r->integer << 8) | *(*p)++);
		break;
	case 1:
	case 2:
	case 3: {
		size_t len = *p < end ? *(*p)++ % 48 : 0;

		if (len > (size_t)(end - *p))
			len = (size_t)(end - *p);
		r->type = t == 1 ? REDIS_REPLY_STRING : t == 2 ? REDIS_REPLY_STATUS :
		    REDIS_REPLY_ERROR;
		r->str = malloc(len + 1);
		if (r->str == NULL)
			abort();
		memcpy(r->str, *p, len);
		r->str[len] = '\0';
		r->len = len;
		*p += len;
		break;
	}
	case 4:
		r->type = REDIS_REPLY_ARRAY;
		r->elements = *p < end ? *(*p)++ % 6 : 0;
		if (depth >= 3)
			r->elements = 0;
		r->element = calloc(r->elements + 1, sizeof(*r->element));
		if (r->element == NULL)
			abort();
		for (size_t i = 0; i < r->elements; i++)
			r->element[i] = reply_build(p, end, depth + 1);
		break;
	default:
		r->type = REDIS_REPLY_NIL;
		break;
	}
	return r;
}

/* reply_free - the tree's memory */
static void
reply_free(redisReply *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
		reply_free(r->element[i]);
	free(r->element);
	free(r->str);
	free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	int mode;
	unsigned char head;

	if (!init) {
		log_init("fuzz_glstore", false, LOG_L_FATAL);
		init = 1;
	}
	if (size < 1)
		return 0;
	head = data[0];
	mode = head & 3;
	data++;
	size--;

	if (mode == 0) {
		size_t max = 16 + (size ? data[0] : 0) * 4;
		struct glstore *s = glstore_open(NULL, max, NOW, NULL, 0);
		struct glstore_stats st;
		char err[256] = "";
		int rc;

		if (size)
			data++, size--;
		rc = glstore_load_buf(s, (const char *)data, size, NOW, err, sizeof(err));
		glstore_stats(s, &st);
		if (st.records > max)
			abort();
		if (rc != 0 && (st.records != 0 || err[0] == '\0'))
			abort();
		run_ctl(s, "list 1000");
		run_ctl(s, "stats");
		glstore_close(s);
	} else if (mode == 1) {
		struct glstore *s = glstore_open(NULL, 64, NOW, NULL, 0);
		struct glstore_params p = { 10, 100, 1000, 5000, 2 };
		struct gl_decision d;
		char *buf = malloc(size + 1);
		char *line, *save = NULL;

		if (buf == NULL)
			abort();
		glstore_decide(s, "c:{192.0.2.0/24}", "t:{192.0.2.0/24}|a|b", NOW, &p, &d);
		glstore_decide(s, "c:{192.0.2.0/24}", "t:{192.0.2.0/24}|a|b", NOW + 10, &p, &d);
		glstore_decide(s, "c:{org:example.com}", "t:{org:example.com}||x", NOW, &p, &d);
		memcpy(buf, data, size);
		buf[size] = '\0';
		for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			run_ctl(s, line);
		free(buf);
		glstore_close(s);
	} else if (mode == 2) {
		const uint8_t *p = data;
		redisReply *r = reply_build(&p, data + size, 0);
		struct gl_decision d;
		char why[GREYLIST_WHY_MAX];
		int rc = greylist_reply_parse(r, &d, why, sizeof(why));

		if (rc == 0 && d.status != GL_PASS && d.status != GL_ALLOWLISTED &&
		    d.status != GL_GREYLISTED)
			abort();
		if (rc != 0 && (d.status != GL_ERROR || why[0] == '\0'))
			abort();
		if (rc != 0 && (strchr(why, '\n') || strchr(why, '\r')))
			abort();
		{
			int nl = (head >> 2) % 8;
			uint32_t ex;
			bool skipped;

			rc = greylist_limits_reply_parse(r, nl, &ex, &skipped, &d, why, sizeof(why));
			if ((ex >> nl) != 0 || (rc != 0 && (ex != 0 || skipped ||
			    d.status != GL_ERROR || why[0] == '\0')))
				abort();
			if (rc == 0 && !skipped && d.status == GL_ERROR && why[0] == '\0')
				abort();
		}
		reply_free(r);
	} else {
		char *in = malloc(size + 1), out[GLSTORE_PART_MAX + 1], id[GLSTORE_ID_MAX];
		char why[256];
		size_t n;

		if (in == NULL)
			abort();
		memcpy(in, data, size);
		in[size] = '\0';
		n = glstore_escape(out, sizeof(out), in, size & 1);
		if (n > GLSTORE_PART_MAX || strlen(out) != n)
			abort();
		for (size_t i = 0; i < n; i++)
			if (out[i] < '!' || out[i] > '~' || strchr("|{}", out[i]))
				abort();
		if (glstore_client_parse(in, 24, 64, id, sizeof(id), why, sizeof(why)) == 0) {
			for (const char *q = id; *q; q++)
				if (*q < '!' || *q > '~' || strchr("|{}", *q))
					abort();
		}
		free(in);
	}
	return 0;
}
