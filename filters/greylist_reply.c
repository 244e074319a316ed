/*
 * greylist_reply - the pure parts of greylisting (see greylist.h): the Lua
 * script's reply turned into a decision, names, the 451 text
 *
 * Kept apart from greylist.c so that the fuzz harness can link it
 * without an event loop, hiredis or Redis: it only reads the redisReply
 * structure.
 */
#include <stdio.h>
#include <string.h>

#include "greylist.h"
#include "log.h"

#define GL_RETRY_MAX	(400u * 86400u)	/* above any delay we accept */

/* greylist_status_name - for logs and moatctl */
const char *
greylist_status_name(enum gl_status s)
{
	switch (s) {
	case GL_PASS:
		return "pass";
	case GL_ALLOWLISTED:
		return "allowlisted";
	case GL_GREYLISTED:
		return "greylisted";
	case GL_ERROR:
		return "error";
	}
	return "?";
}

/* greylist_reason_name - for logs */
const char *
greylist_reason_name(enum gl_reason r)
{
	switch (r) {
	case GL_R_NEW:
		return "new";
	case GL_R_EARLY:
		return "early";
	case GL_R_RETRIED:
		return "retried";
	case GL_R_KNOWN:
		return "known";
	case GL_R_NOW_ALLOWLISTED:
		return "now-allowlisted";
	case GL_R_ALLOWLISTED:
		return "allowlisted";
	case GL_R_ERROR:
		return "error";
	}
	return "?";
}

/* greylist_reason_fits - a reason the script may give with a status */
static int
greylist_reason_fits(long long status, long long reason)
{
	switch (status) {
	case GL_PASS:
		return reason == GL_R_RETRIED || reason == GL_R_KNOWN ||
		    reason == GL_R_NOW_ALLOWLISTED;
	case GL_ALLOWLISTED:
		return reason == GL_R_ALLOWLISTED;
	case GL_GREYLISTED:
		return reason == GL_R_NEW || reason == GL_R_EARLY;
	}
	return 0;
}

/* greylist_reply_parse - {status, reason, seconds, passes} or an error */
int
greylist_reply_parse(const redisReply *r, struct gl_decision *d, char *why, size_t whysize)
{
	long long v[4];

	memset(d, 0, sizeof(*d));
	d->status = GL_ERROR;
	d->reason = GL_R_ERROR;
	if (r == NULL) {
		snprintf(why, whysize, "no reply");
		return -1;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		char esc[LOG_ESC_SIZE];

		log_escape(esc, sizeof(esc), r->str ? r->str : "", r->str ? r->len : 0);
		snprintf(why, whysize, "redis error: %s", esc);
		return -1;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 || r->element == NULL) {
		snprintf(why, whysize, "malformed reply (type %d)", r->type);
		return -1;
	}
	for (int i = 0; i < 4; i++) {
		if (r->element[i] == NULL || r->element[i]->type != REDIS_REPLY_INTEGER) {
			snprintf(why, whysize, "malformed reply (element %d)", i + 1);
			return -1;
		}
		v[i] = r->element[i]->integer;
	}
	if (!greylist_reason_fits(v[0], v[1]) || v[2] < 0 || v[2] > GL_RETRY_MAX ||
	    v[3] < 0 || v[3] > 0xffffffffLL) {
		snprintf(why, whysize, "reply out of range");
		return -1;
	}
	d->status = (enum gl_status)v[0];
	d->reason = (enum gl_reason)v[1];
	d->retry_in = d->status == GL_GREYLISTED ? (unsigned)v[2] : 0;
	d->passes = (unsigned)v[3];
	return 0;
}

/* greylist_reply_text - the 451 4.7.1 text (see greylist.h) */
int
greylist_reply_text(const struct greylist_verdict *v, char *out, size_t size)
{
	unsigned s = v->retry_in;
	int n;

	if (v->status != GL_GREYLISTED)
		n = snprintf(out, size, "greylisting unavailable, please retry later");
	else if (s == 0)
		n = snprintf(out, size, "greylisted, please retry now");
	else if (s < 120)
		n = snprintf(out, size, "greylisted, please retry in %u seconds", s);
	else if (s < 2 * 3600)
		n = snprintf(out, size, "greylisted, please retry in %u minutes", (s + 59) / 60);
	else
		n = snprintf(out, size, "greylisted, please retry in %u hours", (s + 3599) / 3600);
	return n > 0 && (size_t)n < size ? 0 : -1;
}

/* greylist_outcome - what a verdict means for the recipient (451 or
 * not, and the text), logged; an error is never a 5xx: on_error says
 * accept or try later */
void
greylist_outcome(const struct greylist_verdict *v, int on_error, bool *tempfail, char *text,
	size_t size, uint64_t sid)
{
	char esc[LOG_ESC_SIZE];

	*tempfail = false;
	text[0] = 0;
	switch (v->status) {
	case GL_GREYLISTED:
		*tempfail = true;
		greylist_reply_text(v, text, size);
		break;
	case GL_ERROR:
		if (on_error == GL_ON_ERROR_TEMPFAIL) {
			*tempfail = true;
			snprintf(text, size, "greylisting is unavailable, please try again later");
		}
		break;
	default:
		break;
	}
	log_escape(esc, sizeof(esc), v->key ? v->key : "", v->key ? strlen(v->key) : 0);
	log_msg(LOG_L_INFO, sid, "check greylist=%s reason=%s retry-in=%u passes=%u%s%s%s "
	    "key=\"%s\"", greylist_status_name(v->status), greylist_reason_name(v->reason),
	    v->retry_in, v->passes, v->cached ? " from=memory" : "",
	    v->status == GL_ERROR ? " error=" : "", v->status == GL_ERROR && v->why ? v->why : "",
	    esc);
}

/* greylist_limits_reply_parse - the combined script's answer: nl
 * integers 0/1, then the greylist's four ({-1, 0, 0, 0}: not decided) */
int
greylist_limits_reply_parse(const redisReply *r, int nl, uint32_t *exceeded, bool *skipped,
	struct gl_decision *d, char *why, size_t whysize)
{
	redisReply gr;

	*exceeded = 0;
	*skipped = false;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || nl < 0 || nl > 31 ||
	    r->elements != (size_t)nl + 4 || r->element == NULL) {
		greylist_reply_parse(r != NULL && r->type == REDIS_REPLY_ERROR ? r : NULL, d, why,
		    whysize);
		if (r != NULL && r->type != REDIS_REPLY_ERROR)
			snprintf(why, whysize, "malformed reply to the limits and greylist script");
		return -1;
	}
	for (int i = 0; i < nl; i++) {
		const redisReply *e = r->element[i];

		if (e == NULL || e->type != REDIS_REPLY_INTEGER || (e->integer != 0 &&
		    e->integer != 1)) {
			*exceeded = 0;
			greylist_reply_parse(NULL, d, why, whysize);
			snprintf(why, whysize, "malformed reply to the limits and greylist script");
			return -1;
		}
		if (e->integer == 1)
			*exceeded |= 1u << i;
	}
	if (r->element[nl] != NULL && r->element[nl]->type == REDIS_REPLY_INTEGER &&
	    r->element[nl]->integer == -1) {
		memset(d, 0, sizeof(*d));
		why[0] = '\0';
		*skipped = true;
		return 0;
	}
	gr = *r;
	gr.elements = 4;
	gr.element = r->element + nl;
	greylist_reply_parse(&gr, d, why, whysize);	/* an error here is the greylist's alone */
	return 0;
}
