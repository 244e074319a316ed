/* moatctl greylist: placeholder until the subcommand is built (see moatctl.h) */
#include <stdio.h>

#include "moatctl.h"

int
moatctl_greylist(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "moatctl: %s: not available in this build\n", argv[1]);
	return 2;
}
