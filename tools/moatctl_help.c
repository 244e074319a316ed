/*
 * moatctl_help - what each subcommand of moatctl takes, in one place:
 * "moatctl --help" lists them, "moatctl SUB --help" shows one (stdout,
 * exit 0), and a usage error prints the same text (stderr, exit 2)
 */
#include <stdio.h>
#include <string.h>

#include "moatctl.h"

struct help {
	const char *name;
	const char *summary;
	const char *text;
};

static const struct help helps[] = {
	{ "check", "load a policy file and report its errors",
	  "usage: moatctl check FILE\n"
	  "  Loads the policy file (and its includes) as moatd would; prints every\n"
	  "  error as FILE:LINE:COL, or \"FILE: configuration OK\". Exit 0 OK, 1 errors.\n" },
	{ "explain", "walk a session through the policy, with the trace of every rule",
	  "usage: moatctl explain FILE --ip A [--helo H] [--from S] [--rcpt R ...]\n"
	  "                       [--auth LOGIN] [--message FILE.eml] [--no-network] [--live]\n"
	  "  --ip A            the client's address (required)\n"
	  "  --helo H          the HELO/EHLO name\n"
	  "  --from S          MAIL FROM address (\"\" for <>)\n"
	  "  --rcpt R          a recipient; repeat for more\n"
	  "  --auth LOGIN      the session authenticated as LOGIN\n"
	  "  --message FILE    the message for the data stage (DKIM, DMARC, header rules)\n"
	  "  --no-network      no DNS: every lookup is a temporary error\n"
	  "  --live            ask the greylist read-only (Redis, or the greylist-store file)\n"
	  "  Results given instead of asked (each printed as \"assume ...\"):\n"
	  "  --spf R --spf-helo R --dkim R --dmarc R --dmarc-policy P --from-domain D\n"
	  "  --greylist new|early|passed|allowlisted [--greylist-retry SECONDS]\n"
	  "  --fcrdns pass|fail --client-name N --dnsbl ZONE=ANSWER|ZONE=error|none\n" },
	{ "test", "run policy test scenarios (PASS/FAIL per scenario)",
	  "usage: moatctl test FILE\n"
	  "  FILE names the policy (\"policy PATH\") and its scenarios (\"test NAME\"\n"
	  "  stanzas: ip, helo, from, rcpt, auth, message, assume NAME=VALUE,\n"
	  "  expect STAGE OUTCOME); see moatctl(8). Prints PASS or FAIL with a diff\n"
	  "  per scenario, then \"N passed, N failed\". Exit 0 all passed, 1 a\n"
	  "  failure, 2 the file or the policy cannot be read.\n" },
	{ "status", "health of a running moatd or moat-milter (control socket)",
	  "usage: moatctl status [-f FILE | --socket PATH]\n"
	  "  -f FILE           the policy file whose control-socket to ask\n"
	  "                    (default /etc/moat/moat.conf)\n"
	  "  --socket PATH     the control socket itself (-s PATH)\n"
	  "  Prints up since, the policy file and its load time, upstream and Redis\n"
	  "  reachable, DNSBL zones enabled, sessions active. Exit 0 ok, 1 degraded\n"
	  "  or unreachable, 2 usage.\n" },
	{ "greylist", "inspect and edit greylisting state (Redis or the embedded store)",
	  "usage: moatctl greylist [-f FILE] [--redis ADDR | --sentinel ADDR[,ADDR...] "
	  "--master NAME |\n"
	  "                        --socket PATH] [--prefix P] [--password W] [--db N]\n"
	  "                        [--v4-prefix N] [--v6-prefix N]\n"
	  "                        list [N] | allow ADDR|NET|spf:DOMAIN|org:DOMAIN [DURATION] |\n"
	  "                        delete KEY|ID | stats\n"
	  "  -f FILE           the policy file's redis settings, or its control-socket\n"
	  "  --redis ADDR      a Redis server (HOST:PORT)\n"
	  "  --sentinel ADDRS  Sentinels, with --master NAME\n"
	  "  --socket PATH     the control socket of moatd or moat-milter (embedded store)\n"
	  "  --prefix P --password W --db N --v4-prefix N --v6-prefix N\n"
	  "                    as redis-prefix, redis-password, redis-db,\n"
	  "                    greylist-v4-prefix, greylist-v6-prefix in the policy file\n" },
	{ "ratelimit", "look at and reset the rate limits shared in Redis",
	  "usage: moatctl ratelimit -f FILE list [N] | show KEY | reset KEY\n"
	  "  -f FILE           the policy file: its redis setting and ratelimit declarations\n"
	  "  list [N]          at most N keys (default 1000): key used=U/B rate= burst= empty-in=\n"
	  "  show KEY          one key (NAME|PART|...: net|192.0.2.0/24, sub|alice)\n"
	  "  reset KEY         delete it: the next decision starts with a full burst\n" },
	{ "query", "ask moat's resolver, as moatd would",
	  "usage: moatctl query [--resolver system|recursive|ADDR[@PORT]] [--timeout MS] [--sync]\n"
	  "                     [--type A|AAAA|TXT|MX|PTR|NS|CNAME] NAME ...\n"
	  "  --resolver        system (resolv.conf), recursive, or a forwarder (repeatable)\n"
	  "  --timeout MS      per query (default 5000)\n"
	  "  --sync            the blocking call the work pool uses\n"
	  "  --type T          the record type (default A)\n" },
	{ "spf", "evaluate SPF for a client and sender",
	  "usage: moatctl spf --resolver system|recursive|ADDR[@PORT] --ip IP [--helo NAME]\n"
	  "                   [--from ADDR] [--identity helo|mailfrom] [--timeout MS] [--explain]\n"
	  "       moatctl spf --resolver system|recursive|ADDR[@PORT] --batch [--timeout MS]\n"
	  "                   [--explain]\n"
	  "  --batch           one query per line on stdin: IP HELO FROM\n"
	  "  --explain         fetch and print the explanation (exp=) of a fail\n" },
	{ "dkim", "verify the DKIM signatures of a message",
	  "usage: moatctl dkim [--resolver system|recursive|ADDR[@PORT] | --keys FILE]\n"
	  "                    [--now UNIXTIME] [--min-key-bits N] [--max-sigs N] [--allow-sha1]\n"
	  "                    [--accept-partial] [--chunk N] [--timeout MS] [--authres ID]\n"
	  "                    FILE|-\n"
	  "  --keys FILE       key records from a file instead of DNS\n"
	  "  --authres ID      print the Authentication-Results field with that authserv-id\n"
	  "       moatctl dkim --check-key DOMAIN SELECTOR [--dir D | --key FILE]\n"
	  "                    [--resolver system|recursive|ADDR[@PORT]] [--timeout MS]\n"
	  "  --check-key       compare the published key record with the key file\n"
	  "                    (default D/DOMAIN.SELECTOR.key, D /etc/moat/dkim)\n" },
	{ "dkim-keygen", "write a new DKIM signing key and print its DNS record",
	  "usage: moatctl dkim-keygen DOMAIN SELECTOR [--algorithm rsa-sha256|ed25519-sha256]\n"
	  "                           [--bits N] [--dir D]\n"
	  "  --algorithm A     rsa-sha256 (default) or ed25519-sha256\n"
	  "  --bits N          RSA key size (default 2048)\n"
	  "  --dir D           where the key file goes (default /etc/moat/dkim);\n"
	  "                    an existing file is never overwritten\n" },
	{ "dmarc", "evaluate DMARC for given From, SPF and DKIM results",
	  "usage: moatctl dmarc [--resolver system|recursive|ADDR[@PORT]] [--mode rfc7489|dmarcbis]\n"
	  "                     [--psl FILE] --from-header VALUE [--from-header VALUE ...]\n"
	  "                     [--spf RESULT:DOMAIN] [--dkim RESULT:DOMAIN ...] [--pct-roll N]\n"
	  "                     [--timeout MS] [--authres ID]\n"
	  "  --mode            as the policy file's dmarc setting (default rfc7489)\n"
	  "  --psl FILE        the Public Suffix List (default Debian's)\n" },
};

/* moatctl_help_text - one subcommand's text, or NULL */
const char *
moatctl_help_text(const char *name)
{
	for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++)
		if (strcmp(helps[i].name, name) == 0)
			return helps[i].text;
	return NULL;
}

/* moatctl_usage - a usage error: the subcommand's text on stderr, 2 */
int
moatctl_usage(const char *name)
{
	const char *t = moatctl_help_text(name);

	fputs(t != NULL ? t : "usage: moatctl --help\n", stderr);
	return 2;
}

/* moatctl_help_all - every subcommand, one line each */
void
moatctl_help_all(FILE *out)
{
	fputs("usage: moatctl SUBCOMMAND [OPTIONS] (moatctl SUBCOMMAND --help for its options)\n\n",
	    out);
	for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++)
		fprintf(out, "  %-12s %s\n", helps[i].name, helps[i].summary);
}
