/*
 * moatctl - the operator's tool
 *
 * SYNOPSIS
 *	moatctl check FILE
 *
 * DESCRIPTION
 *	check: reads the policy file as moatd would and prints every error
 *	(FILE:LINE:COL: error: ...) or "configuration OK". Exit 0 when the
 *	file is good, 1 when it is not, 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"

/* usage - how to call */
static int
usage(void)
{
	fprintf(stderr, "usage: moatctl check FILE\n");
	return 2;
}

/* cmd_check - load and report */
static int
cmd_check(const char *path)
{
	char *errs = NULL;
	struct conf *c = conf_load(path, &errs);

	if (c == NULL) {
		fputs(errs ? errs : "unknown error\n", stderr);
		free(errs);
		return 1;
	}
	free(errs);
	conf_unref(c);
	printf("%s: configuration OK\n", path);
	return 0;
}

int
main(int argc, char **argv)
{
	log_init("moatctl", false, LOG_L_WARN);
	if (argc == 3 && strcmp(argv[1], "check") == 0)
		return cmd_check(argv[2]);
	return usage();
}
