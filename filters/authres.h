/*
 * authres - one RFC 8601 Authentication-Results field, and telling
 * whether an incoming one claims our authserv-id
 *
 * SYNOPSIS
 *	void authres_init(struct authres *a);
 *	int authres_add(struct authres *a, const char *method, const char *result,
 *	                const char *reason);
 *	int authres_prop(struct authres *a, int i, const char *ptype_property,
 *	                 const void *value, size_t len);
 *	int authres_comment(struct authres *a, int i, const char *text);
 *	size_t authres_render(const struct authres *a, const char *authserv_id,
 *	                      const char *eol, char *out, size_t size);
 *
 *	bool authres_is_ours(const char *value, size_t len, const char *authserv_id);
 *	bool authres_field_is_ours(const char *field, size_t len,
 *	                           const char *authserv_id);
 *
 * DESCRIPTION
 *	A struct authres collects result sets ("spf=pass smtp.mailfrom=..."),
 *	then authres_render() writes the field value: the authserv-id, then
 *	one result set per folded line, each property on its own folded line
 *	too, so that no line comes near 998 octets:
 *
 *	    mx.example.net;<eol>\tspf=pass<eol>\t smtp.mailfrom=a@b.example;<eol>
 *	    \tdkim=pass<eol>\t header.d=b.example<eol>\t header.s=sel ...
 *
 *	The field name is not written: the proxy prepends
 *	"Authentication-Results: " (eol "\r\n"), the milter hands the value to
 *	smfi_insheader (eol "\n"). With no result set at all the value is
 *	"ID; none" (RFC 8601 2.2).
 *
 *	authres_add() returns the result set's index for authres_prop(), or
 *	-1 when AUTHRES_MAX sets are held or method/result is not a plain
 *	keyword (letters, digits, '-', '_', '.'): those come from moat's own
 *	code, never from the peer. reason may be any text (NULL: none); it
 *	is rendered as a quoted-string.
 *
 *	authres_prop() adds "ptype.property=value" to set i. The value is
 *	bytes from the peer (a HELO name, a MAIL FROM address, a d= value):
 *	it is rendered as a bare token when every byte is an RFC 2045 token
 *	character, as a bare local@domain when that is a dot-atom local part
 *	(without '=', '/', '?') at a host name, else as a quoted-string with '"' and '\' escaped.
 *	CR, LF, NUL, other control bytes and bytes >= 0x80 cannot appear in
 *	the field and become '?'. A value longer than AUTHRES_VALUE_MAX bytes
 *	is refused (-1) and the property left out. -1 also when the set
 *	holds AUTHRES_MAX_PROPS properties or ptype_property is not a
 *	keyword.
 *
 *	authres_comment() attaches one comment (moat's own text, e.g.
 *	"p=reject dis=reject"); '(', ')', '\' and control bytes in it are
 *	dropped.
 *
 *	authres_render() returns the number of bytes written to out (a NUL
 *	follows them), or 0 when size is too small (out then holds "").
 *
 *	authres_is_ours() reads an Authentication-Results field *value* the
 *	way RFC 8601 2.2 lays it out: CFWS (comments nest; folding is
 *	allowed), then the authserv-id as a token or quoted-string, then
 *	CFWS and an optional version, then ';' or the end. True when that id
 *	equals authserv_id, ignoring ASCII case (a quoted id is unquoted
 *	first). An id it cannot read is not ours. authres_field_is_ours()
 *	takes a whole header field ("Name" [WSP] ":" value): true only when
 *	the name is Authentication-Results (any case) and the value is ours.
 *	The caller removes every such field (RFC 8601 5).
 *
 * THREADS AND MEMORY
 *	Pure functions over caller memory; any thread. A struct authres
 *	borrows every string and value given to it: they must stay valid
 *	until authres_render() has run.
 */
#ifndef MOAT_AUTHRES_H
#define MOAT_AUTHRES_H

#include <stdbool.h>
#include <stddef.h>

#define AUTHRES_MAX		24	/* result sets per field */
#define AUTHRES_MAX_PROPS	4	/* properties per result set */
#define AUTHRES_VALUE_MAX	512	/* bytes of one property value */

struct authres_prop {
	const char *name;		/* "smtp.mailfrom", "header.d", ... */
	const char *value;
	size_t len;
};

struct authres_set {
	const char *method;
	const char *result;
	const char *reason;		/* NULL: none */
	const char *comment;		/* NULL: none */
	struct authres_prop prop[AUTHRES_MAX_PROPS];
	int nprop;
};

struct authres {
	struct authres_set set[AUTHRES_MAX];
	int n;
};

void authres_init(struct authres *a);
int authres_add(struct authres *a, const char *method, const char *result, const char *reason);
int authres_prop(struct authres *a, int i, const char *ptype_property, const void *value,
	size_t len);
int authres_comment(struct authres *a, int i, const char *text);
size_t authres_render(const struct authres *a, const char *authserv_id, const char *eol,
	char *out, size_t size);

bool authres_is_ours(const char *value, size_t len, const char *authserv_id);
bool authres_field_is_ours(const char *field, size_t len, const char *authserv_id);

#endif
