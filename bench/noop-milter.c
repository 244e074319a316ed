/*
 * noop-milter - a libmilter filter that checks nothing: the floor of the
 * milter benchmark (bench/milter)
 *
 * SYNOPSIS
 *	noop-milter unix:/path | inet:PORT@127.0.0.1
 * DESCRIPTION
 *	It negotiates what moat-milter negotiates (headers, the end of headers
 *	and body chunks without replies, no DATA or unknown-command events),
 *	receives the whole message, adds one Authentication-Results field at
 *	the end and says continue. Whatever Postfix + this filter costs over
 *	Postfix alone is the price of the milter protocol itself (Postfix's
 *	side and libmilter's thread per connection), which every libmilter
 *	filter pays before it checks anything; moat-milter's own cost is what
 *	it adds on top. Built by bench/milter; never installed.
 */
#include <stdlib.h>

#include <libmilter/mfapi.h>

static sfsistat
nm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
	unsigned long f3, unsigned long *pf0, unsigned long *pf1, unsigned long *pf2,
	unsigned long *pf3)
{
	(void)ctx;
	(void)f2;
	(void)f3;
	*pf0 = SMFIF_ADDHDRS & f0;
	*pf1 = (SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY) & f1;
	*pf2 = 0;
	*pf3 = 0;
	return SMFIS_CONTINUE;
}

static sfsistat
nm_header(SMFICTX *ctx, char *name, char *value)
{
	(void)ctx;
	(void)name;
	(void)value;
	return SMFIS_NOREPLY;
}

static sfsistat
nm_eoh(SMFICTX *ctx)
{
	(void)ctx;
	return SMFIS_NOREPLY;
}

static sfsistat
nm_body(SMFICTX *ctx, unsigned char *buf, size_t len)
{
	(void)ctx;
	(void)buf;
	(void)len;
	return SMFIS_NOREPLY;
}

static sfsistat
nm_eom(SMFICTX *ctx)
{
	char name[] = "Authentication-Results";
	char value[] = " mx.moat.test; spf=pass; dkim=pass; dmarc=pass";

	smfi_insheader(ctx, 0, name, value);
	return SMFIS_CONTINUE;
}

static char nm_name[] = "noop-milter";

static struct smfiDesc nm_desc = {
	.xxfi_name = nm_name,
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = SMFIF_ADDHDRS,
	.xxfi_header = nm_header,
	.xxfi_eoh = nm_eoh,
	.xxfi_body = nm_body,
	.xxfi_eom = nm_eom,
	.xxfi_negotiate = nm_negotiate,
};

int
main(int argc, char **argv)
{
	if (argc != 2 || smfi_setconn(argv[1]) != MI_SUCCESS ||
	    smfi_register(nm_desc) != MI_SUCCESS)
		return 2;
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
