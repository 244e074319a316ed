/*
 * smtp_data - DATA stream decoder and re-encoder (no I/O, no clock)
 *
 * SYNOPSIS
 *	#include "smtp_data.h"
 *
 *	void data_dec_init(struct data_dec *d, enum data_barelf mode,
 *	                   uint64_t max_size, size_t max_line);
 *	size_t data_dec_feed(struct data_dec *d, const unsigned char *in,
 *	                     size_t len, data_out_fn out, void *arg);
 *
 * DESCRIPTION
 *	The client's bytes after 354 are fed in chunks of any size. The
 *	decoder finds the end of data (only CR LF "." CR LF, where the CR LF
 *	before the dot is a real CR LF, or the start of the data), removes
 *	the client's dot-stuffing, normalises line ends, and hands the
 *	output to out() already re-encoded for the upstream: every line ends
 *	in CR LF, and every line that starts with "." is stuffed again. The
 *	terminator is never emitted: the caller appends ".\r\n" itself.
 *
 *	Dot-unstuffing applies only to lines that began after a real CR LF;
 *	a line that began after a bare LF is content as it stands (so LF "."
 *	LF goes upstream as ".." CR LF, docs/SECURITY.md D1), and so is the
 *	line "." ended by a bare LF (CR LF "." LF also goes up as "..").
 *
 *	data_dec_feed() returns how many bytes of in it consumed; when the
 *	terminator was seen, d->done is set and the return value counts the
 *	terminator's last byte, so in[ret..len) is the client's next command.
 *	Output stops (but counting and the search for the terminator go on)
 *	once the decoded size passes max_size, or once any reject flag is set.
 *	The output is the same for every way of cutting the input into chunks.
 */
#ifndef MOAT_SMTP_DATA_H
#define MOAT_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum data_barelf { DATA_BARELF_NORMALISE = 0, DATA_BARELF_REJECT };

/* Facts about the message, d->flags. */
#define DATA_F_BARE_LF   0x01u	/* a LF not preceded by CR */
#define DATA_F_BARE_CR   0x02u	/* a CR not followed by LF */
#define DATA_F_NUL       0x04u	/* a NUL byte */
#define DATA_F_LONG_LINE 0x08u	/* a line longer than max_line (excl. CRLF) */
#define DATA_F_TOO_BIG   0x10u	/* decoded size above max_size */

typedef void (*data_out_fn)(void *arg, const unsigned char *buf, size_t len);

struct data_dec {
	/* settings */
	enum data_barelf mode;
	uint64_t max_size;
	size_t max_line;
	/* results */
	bool done;		/* terminator seen */
	unsigned flags;		/* DATA_F_* */
	uint64_t size;		/* decoded message size (CRLF line ends, unstuffed) */
	uint64_t raw;		/* bytes consumed, terminator included */
	uint64_t lines;
	/* private state */
	int st;
	size_t line_len;
	bool bol_crlf;		/* current line began after a real CRLF */
};

void data_dec_init(struct data_dec *d, enum data_barelf mode,
	uint64_t max_size, size_t max_line);
size_t data_dec_feed(struct data_dec *d, const unsigned char *in, size_t len,
	data_out_fn out, void *arg);

/* Would this message be rejected by the decoder's facts?  Returns NULL if
 * not, else the reply (code, enhanced code, text) to send after the
 * terminator. Order: NUL, bare CR, bare LF (reject mode), too big, long line. */
struct data_verdict { int code; const char *enh; const char *text; };
const struct data_verdict *data_dec_verdict(const struct data_dec *d);

/* Name of a decoder state (d->st), for trace logs; "?" if unknown. */
const char *data_dec_state_name(int st);

#endif
