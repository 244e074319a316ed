/*
 * t.h - the unit test runner's few macros
 *
 * A test file defines test functions and lists them in main() with T_RUN.
 * T_CHECK records a failure with file:line and goes on; the summary line
 * "N passed, N failed" is what CI reads. Exit status 1 on any failure.
 */
#ifndef MOAT_T_H
#define MOAT_T_H

#include <stdio.h>
#include <string.h>

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

#endif
