/* moatctl spf: placeholder until the subcommand is built (see moatctl.h) */
#include <stdio.h>

#include "moatctl.h"

int
moatctl_spf(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "moatctl: %s: not available in this build\n", argv[1]);
	return 2;
}
