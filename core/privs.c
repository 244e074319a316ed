/*
 * privs - give up root once the listening sockets are open (privs.h)
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "privs.h"

/* privs_drop - become user, for good */
enum privs_rc
privs_drop(const char *user, void (*before)(uid_t, gid_t), char *err, size_t errlen)
{
	struct passwd *pw;

	if (geteuid() != 0)
		return PRIVS_NOT_ROOT;
	if (user == NULL || strcmp(user, "root") == 0)
		return PRIVS_KEPT_ROOT;
	pw = getpwnam(user);
	if (pw == NULL) {
		snprintf(err, errlen, "user %s: no such user", user);
		return PRIVS_ERROR;
	}
	if (before != NULL)
		before(pw->pw_uid, pw->pw_gid);
	if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
		snprintf(err, errlen, "cannot become user %s: %s", user, strerror(errno));
		return PRIVS_ERROR;
	}
	if (setuid(0) == 0) {
		snprintf(err, errlen, "could regain root after becoming user %s", user);
		return PRIVS_ERROR;
	}
	return PRIVS_DROPPED;
}
