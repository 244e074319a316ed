/*
 * moatctl.h - subcommands of moatctl that live in their own files
 * (tools/moatctl_*.c). Each takes moatctl's argc/argv as given (argv[1]
 * is the subcommand) and returns the process's exit status.
 */
#ifndef MOAT_MOATCTL_H
#define MOAT_MOATCTL_H

int moatctl_spf(int argc, char **argv);	/* tools/moatctl_spf.c */
int moatctl_auth(int argc, char **argv);	/* tools/moatctl_auth.c: dkim, dmarc */
int moatctl_greylist(int argc, char **argv);	/* tools/moatctl_greylist.c */
int moatctl_ratelimit(int argc, char **argv);	/* tools/moatctl_ratelimit.c */
int moatctl_query(int argc, char **argv);	/* tools/moatctl_dns.c */
int moatctl_dkim_keygen(int argc, char **argv);	/* tools/moatctl_dkimkey.c */
int moatctl_dkim_check_key(int argc, char **argv);	/* tools/moatctl_dkimkey.c */
#include <stdio.h>

const char *moatctl_help_text(const char *name);	/* tools/moatctl_help.c */
int moatctl_usage(const char *name);
void moatctl_help_all(FILE *out);
struct dns_conf;
int moatctl_resolver_word(const char *v, struct dns_conf *dc);	/* tools/moatctl_dns.c */
int moatctl_socket(const char *path, const char *cmd);	/* tools/moatctl_greylist.c */
struct conf;
int moatctl_test(int argc, char **argv);	/* tools/moatctl_test.c */
/* tools/moatctl.c: explain on a loaded policy (argv as "moatctl explain FILE ...") */
int moatctl_explain_conf(struct conf *c, int argc, char **argv);

#endif
