/*
 * t.h - the unit test runner's few macros
 *
 * A test file defines test functions and lists them in main() with T_RUN.
 * T_CHECK records a failure with file:line and goes on; the summary line
 * "N passed, N failed" is what CI reads. Exit status 1 on any failure.
 */
#ifndef MOAT_T_H
#define MOAT_T_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static int t_pass, t_fail, t_cur_failed;
static const char *t_cur;

#define T_CHECK(cond) do { \
	if (!(cond)) { \
		t_cur_failed = 1; \
		fprintf(stderr, "FAIL %s: %s:%d: %s\n", t_cur, __FILE__, __LINE__, #cond); \
	} \
} while (0)

#define T_CHECKF(cond, ...) do { \
	if (!(cond)) { \
		t_cur_failed = 1; \
		fprintf(stderr, "FAIL %s: %s:%d: %s: ", t_cur, __FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
	} \
} while (0)

#define T_RUN(fn) do { \
	t_cur = #fn; t_cur_failed = 0; \
	fn(); \
	if (t_cur_failed) t_fail++; else t_pass++; \
} while (0)

#define T_DONE(name) ( \
	printf("%s: %d passed, %d failed\n", (name), t_pass, t_fail), \
	t_fail ? 1 : 0)

/* t_sockaddr - a client address from its text (IPv4 or IPv6) */
static inline const struct sockaddr *
t_sockaddr(const char *ip, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &s4->sin_addr);
	}
	return (const struct sockaddr *)ss;
}

/* t_first_line - the first line of s (empty when s is NULL), cut to fit
 * size bytes with its NUL */
static inline const char *
t_first_line(const char *s, char *out, size_t size)
{
	size_t n = s != NULL ? strcspn(s, "\n") : 0;

	if (n >= size)
		n = size - 1;
	if (n > 0)
		memcpy(out, s, n);
	out[n] = 0;
	return out;
}

/* t_wire_name - a domain name in DNS wire form; its length */
static inline int
t_wire_name(const char *n, char *out)
{
	int o = 0;

	while (*n != '\0') {
		const char *dot = strchr(n, '.');
		int l = dot ? (int)(dot - n) : (int)strlen(n);

		out[o++] = (char)l;
		memcpy(out + o, n, (size_t)l);
		o += l;
		n += l + (dot ? 1 : 0);
	}
	out[o++] = 0;
	return o;
}

#endif
