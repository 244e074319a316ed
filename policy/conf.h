/*
 * conf - the settings of the moat policy file
 *
 * SYNOPSIS
 *	struct conf *conf_load(const char *path, char **errors);
 *	struct conf *conf_load_buffer(const char *name, const char *buf, size_t len,
 *	                              char **errors);
struct conf *conf_load_buffer(const char *name, const char *buf, size_t len, char **errors);
 *	struct conf *conf_ref(struct conf *c);
 *	void conf_unref(struct conf *c);
 *	const char *conf_identity_name(enum conf_identity id);
 *
 * DESCRIPTION
 *	conf_load() reads and checks the whole file. On success it returns a
 *	configuration with one reference and sets *errors to NULL (or to
 *	the warnings, owned by the caller). On failure it returns NULL and
 *	*errors holds every error, one per line, "FILE:LINE:COL: error: ...",
 *	owned by the caller. A configuration is immutable once loaded and is
 *	shared between threads: sessions hold a reference for their whole
 *	life, so a reload never changes the rules under a session in flight.
 *	References are atomic.
 */
#ifndef MOAT_CONF_H
#define MOAT_CONF_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "dns.h"
#include "greylist.h"

enum conf_identity { CONF_ID_XCLIENT = 0, CONF_ID_PROXY_V1, CONF_ID_PROXY_V2, CONF_ID_NONE };
enum conf_barelf { CONF_BARELF_NORMALISE = 0, CONF_BARELF_REJECT };
enum conf_logdest { CONF_LOG_STDERR = 0, CONF_LOG_SYSLOG };
enum conf_dmarc { CONF_DMARC_OFF = 0, CONF_DMARC_7489, CONF_DMARC_BIS };
enum conf_preply { CONF_PREPLY_SMTP = 0, CONF_PREPLY_ACTIONS };
enum conf_ups_tls { CONF_UTLS_NONE = 0, CONF_UTLS_OPPORTUNISTIC, CONF_UTLS_REQUIRED };
enum conf_ups_connect { CONF_UCONN_MAIL = 0, CONF_UCONN_HELO };

/* listener options: listen ADDR:PORT [submission] [implicit-tls] [no-starttls] */
#define CONF_LISTEN_SUBMISSION   0x01u	/* AUTH offered (a submission port) */
#define CONF_LISTEN_IMPLICIT_TLS 0x02u	/* TLS from the first byte (RFC 8314) */
#define CONF_LISTEN_NO_STARTTLS  0x04u	/* STARTTLS not offered here */
#define CONF_LISTEN_POLICY       0x08u	/* Postfix policy delegation, not SMTP (proxy/pdel.c) */
#define CONF_LISTEN_PROXYPROTO   0x10u	/* a PROXY protocol header first (proxy/ppin.c) */

struct tls_conf;
struct list;
struct rl_set;

#define CONF_LISTEN_MAX 16

struct conf_addr {
	struct sockaddr_storage sa;
	socklen_t salen;
	char text[80];		/* as written, for logs */
};

struct conf {
	int refs;		/* atomic */
	char *path;

	char *hostname;
	struct conf_addr listen[CONF_LISTEN_MAX];
	unsigned listen_flags[CONF_LISTEN_MAX];	/* CONF_LISTEN_* */
	int nlisten;
	uint64_t workers;

	struct conf_addr upstream;
	int identity;		/* enum conf_identity */
	int upstream_connect;	/* enum conf_ups_connect: when a session takes its upstream */
	uint64_t upstream_connect_ms;
	uint64_t upstream_timeout_ms;

	uint64_t max_sessions;
	uint64_t max_per_client;
	uint64_t client_v6_prefix;
	uint64_t max_message_size;
	uint64_t max_recipients;
	uint64_t max_errors;
	uint64_t max_junk;
	uint64_t max_line_length;
	uint64_t command_deadline_ms;
	uint64_t session_deadline_ms;
	uint64_t data_min_rate;
	uint64_t drain_ms;
	uint64_t max_pending;
	uint64_t listen_backlog;	/* 0: min(1024, net.core.somaxconn) */
	uint64_t upstream_keepalive_ms;	/* NOOP an idle upstream after this; 0: never */

	int bare_lf;		/* enum conf_barelf */
	int policy_monitor;	/* policy-mode monitor: every rule dry (rules.h) */
	char *spool_dir;
	uint64_t spool_memory;

	char *user;
	int log_dest;		/* enum conf_logdest */
	int log_level;		/* enum log_level */

	struct dns_conf resolver;	/* resolver system|recursive|forward A@P ... */
	uint64_t dns_timeout_ms;
	uint64_t dns_max_queries;
	uint64_t check_threads;		/* the work pool's bound (SPF, DKIM, DMARC) */
	uint64_t dns_negative_ttl_ms;
	uint64_t greet_delay_ms;	/* 0: greet at once */
	uint64_t dnsbl_probe_ms;
	uint64_t glstore_save_ms;	/* greylist-store-save-interval */
	struct dnsbl_set *dnsbl;	/* dnsbl/dnswl zones (dnsbl.h), NULL if none */
	struct greylist_conf greylist;	/* redis, redis-*, greylist-* (greylist.h) */
	bool greylist_seen;		/* a greylist setting was given */
	char *authserv_id;		/* Authentication-Results: ours (default hostname) */
	int spf;			/* yes/no */
	uint64_t spf_timeout_ms;
	int dkim;			/* yes/no */
	uint64_t dkim_min_key_bits;
	uint64_t dkim_max_signatures;
	int dkim_allow_sha1;
	struct dkim_keys *dkim_keys;	/* dkim-key statements (dkim_key.h), or NULL */
	uint64_t dkim_sign_expiry_ms;	/* x= this long after t=; 0: no x= */
	int dmarc;			/* enum conf_dmarc */
	char *psl_path;			/* public-suffix-list */
	char *control_socket;		/* moatctl's way in, or NULL */
	int policy_reply;		/* enum conf_preply: refusals on policy listeners */
	struct conf_addr metrics_listen;	/* GET /metrics; salen 0: none */
	int startup_checks;		/* bool: engine_startup_checks() at start */
	time_t loaded_at;		/* when conf_load() read the file */
	struct list *pp_from;		/* proxy-protocol-from: who may send a header */
	uint64_t pp_timeout_ms;		/* proxy-protocol-timeout */
	struct rl_set *ratelimits;	/* ratelimit declarations (ratelimit.h), or NULL */
	int ratelimit_on_error;		/* enum rl_on_error */
	uint64_t ratelimit_node_share;	/* percent of a burst each loop reserves (0: exact) */

	char *tls_cert, *tls_key, *tls_chain;	/* PEM files, or NULL: no TLS */
	char *tls_ciphers;		/* OpenSSL cipher list (TLS 1.2), or NULL */
	char *tls_client_ca;		/* ask for client certificates, verify with it */
	int tls_min_version;		/* 0x0303 TLS 1.2, 0x0304 TLS 1.3 */
	uint64_t tls_handshake_ms;
	int auth_require_tls;		/* bool: AUTH only inside TLS */
	uint64_t auth_max_failures;	/* per client address, within the window */
	uint64_t auth_failure_window_ms;
	uint64_t auth_failure_delay_ms;	/* before a failed AUTH's reply */
	int upstream_tls;		/* enum conf_ups_tls */
	char *upstream_tls_ca;		/* verify the upstream's certificate with it */
	struct tls_conf *tls;		/* TLS contexts (proxy/tls.c), or NULL */
	void (*tls_free)(struct tls_conf *);

	struct rules *rules;	/* lists and rules (rules.h) */
	char **files;		/* included files' names (rules point at them) */
	size_t nfiles;
};

struct conf *conf_load(const char *path, char **errors);
struct conf *conf_load_buffer(const char *name, const char *buf, size_t len, char **errors);
struct conf *conf_ref(struct conf *c);
void conf_unref(struct conf *c);
const char *conf_identity_name(int id);

/* Parse "ADDR:PORT", "[V6]:PORT", "*:PORT" (all v4). 0 or -1. A listen
 * address may also be "unix:/PATH" (conf_parse_listen). */
int conf_parse_hostport(const char *s, size_t len, struct conf_addr *out, const char **why);

#endif
