/*
 * privs - give up root once the listening sockets are open
 *
 * SYNOPSIS
 *	enum privs_rc privs_drop(const char *user, void (*before)(uid_t, gid_t),
 *	                         char *err, size_t errlen);
 *
 * DESCRIPTION
 *	privs_drop() becomes user (its uid and gid, no supplementary groups)
 *	when the process runs as root, and checks that root cannot be had
 *	back. before(uid, gid), when not NULL, runs first, while root may
 *	still hand files over (e.g. moatd's control socket). PRIVS_NOT_ROOT:
 *	nothing to do; PRIVS_KEPT_ROOT: user is "root" (the caller says so
 *	in its log); PRIVS_ERROR: err says why (no such user, setuid
 *	failed): the caller does not start.
 */
#ifndef MOAT_PRIVS_H
#define MOAT_PRIVS_H

#include <stddef.h>
#include <sys/types.h>

enum privs_rc { PRIVS_DROPPED = 0, PRIVS_NOT_ROOT, PRIVS_KEPT_ROOT, PRIVS_ERROR };

enum privs_rc privs_drop(const char *user, void (*before)(uid_t, gid_t), char *err, size_t errlen);

#endif
