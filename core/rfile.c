/*
 * rfile - a small regular file read whole (see rfile.h)
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "rfile.h"
#include "xalloc.h"

/* rfile_read - open, check on the descriptor, read whole */
enum rfile_fail
rfile_read(struct rfile *rf, const char *path, int oflags, mode_t deny, off_t max)
{
	enum rfile_fail fail = RFILE_OK;
	int fd = open(path, O_RDONLY | O_CLOEXEC | oflags);

	memset(rf, 0, sizeof(*rf));
	if (fd < 0) {
		rf->err = errno;
		return RFILE_OPEN;
	}
	if (fstat(fd, &rf->sb) != 0 || !S_ISREG(rf->sb.st_mode))
		fail = RFILE_NOT_REGULAR;
	else if ((rf->sb.st_mode & deny) != 0)
		fail = RFILE_MODE;
	else if (rf->sb.st_size > max)
		fail = RFILE_SIZE;
	if (fail != RFILE_OK) {
		close(fd);
		return fail;
	}
	rf->buf = xmalloc((size_t)rf->sb.st_size + 1);
	while (rf->len < (size_t)rf->sb.st_size) {
		ssize_t n = read(fd, rf->buf + rf->len, (size_t)rf->sb.st_size - rf->len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rf->err = n < 0 ? errno : 0;
			fail = RFILE_READ;
			break;
		}
		rf->len += (size_t)n;
	}
	close(fd);
	rf->buf[rf->len] = 0;
	return fail;
}
