/* ct-offload.h - the C API of ctoffload.
 *
 * This header keeps the contract of the Open vSwitch RFC "ct-offload"
 * provider interface (lib/ct-offload.h), patches 05 to 11 of the series: a
 * registry of provider classes, each notified of the lifecycle of the
 * connections a connection-tracking datapath wants accelerated; batches of
 * operations (patch 06); the per-connection offload state, established once
 * (patch 07); ct_offload_enabled() (patch 09); and a dummy provider for a
 * datapath's unit tests (patch 11, ct-offload-dummy.h).  A C datapath
 * written against the series compiles against this header once its context
 * carries ctoffload's connection (docs/FROM_RFC.md says what differs and
 * how to fill it): the class members come first, in the series' order, and
 * everything ctoffload adds sits after them.
 *
 * ABI: libctoffload.so.1.  Version 1.0 moved 'batch_submit' to the series'
 * place in struct ct_offload_class (after 'init'); a provider or datapath
 * built against 0.x must be rebuilt.
 *
 * Return convention, stated once: every function returning 'int' returns 0
 * on success or a positive errno value (EINVAL, EEXIST, ENOSPC, ...) on
 * failure.  When a call fails, ct_offload_last_error() gives a sentence
 * naming what was wrong, for the calling thread.  Nothing in this library
 * writes to stdout; diagnostics go through the log (ct_offload_log_level()).
 *
 * Threads: every dispatch function may be called from many threads at once;
 * dispatch does not take a global lock.  ct_offload_register() and
 * ct_offload_unregister() may run concurrently with dispatch.
 * ct_offload_unregister() returns only once no dispatch still uses the
 * class, so the provider may be torn down right after it returns.  The
 * events of one connection (add, established, update, del) must not race
 * each other: OVS's conntrack delivers them under the connection's lock,
 * and so should any datapath.  Different connections are independent. */
#ifndef CTOFFLOAD_CT_OFFLOAD_H
#define CTOFFLOAD_CT_OFFLOAD_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Connection model
 * ------------------------------------------------------------------------ */

#define CT_OFFLOAD_IFNAMSIZ 16

/* An IPv4 or IPv6 address in network byte order.  An IPv4 address uses the
 * first four bytes of 'bytes'; the other twelve are zero. */
union ct_offload_addr {
    uint8_t bytes[16];
    uint32_t words[4];
};

/* One direction of a connection, as conntrack names it: the source and
 * destination seen by a packet travelling in that direction.  Ports are in
 * host byte order. */
struct ct_offload_tuple {
    union ct_offload_addr src;
    union ct_offload_addr dst;
    uint16_t src_port;
    uint16_t dst_port;
};

/* A connection.  'orig' is the direction of the packet that created it;
 * 'reply' is the direction answers travel in.  Without NAT, 'reply' is the
 * mirror of 'orig'; under SNAT or DNAT it carries the translated addresses
 * and ports, exactly as `conntrack -L` shows them. */
struct ct_offload_conn {
    uint8_t family;  /* AF_INET or AF_INET6, for both directions. */
    uint8_t proto;   /* IPPROTO_TCP or IPPROTO_UDP. */
    uint16_t zone;   /* Conntrack zone; 0 is the default zone. */
    uint32_t mark;   /* Conntrack mark; informational. */
    struct ct_offload_tuple orig;
    struct ct_offload_tuple reply;
};

/* A network device: its name and ifindex.  Either may be unset (empty name,
 * ifindex 0); a provider that needs the other resolves it. */
struct ct_offload_netdev {
    char name[CT_OFFLOAD_IFNAMSIZ];
    int ifindex;
};

/* Context for offload as part of the callbacks that all connection offload
 * APIs receive: the RFC's struct ct_offload_ctx with ctoffload's own
 * connection and device types. */
struct ct_offload_ctx {
    const struct ct_offload_conn *conn;     /* Connection (never NULL). */
    const struct ct_offload_netdev *netdev_in; /* Input netdev (may be NULL). */
    uint32_t input_port_id;                 /* Datapath port number. */
};

/* Parses "10.0.0.1:80" or "[fd00::1]:80" into 'addr' and 'port' and sets
 * '*family' to AF_INET or AF_INET6.  Port 0 is accepted here; whether it is
 * valid depends on the protocol (ct_offload_conn_validate()). */
int ct_offload_endpoint_parse(const char *text, uint8_t *family,
                              union ct_offload_addr *addr, uint16_t *port);

/* Writes "10.0.0.1:80" or "[fd00::1]:80" into 'buf' (always NUL-terminated
 * when 'size' > 0).  Returns the length the full text needs, like
 * snprintf(); 64 bytes always suffice. */
int ct_offload_endpoint_format(uint8_t family, const union ct_offload_addr *,
                               uint16_t port, char *buf, size_t size);

/* Checks that 'conn' describes something a provider can be handed: a known
 * family and protocol, non-zero ports on TCP and UDP, no unspecified or
 * multicast addresses, IPv4 addresses without stray bytes.  Returns EINVAL
 * or EPROTONOSUPPORT with ct_offload_last_error() naming the field. */
int ct_offload_conn_validate(const struct ct_offload_conn *conn);

/* Sets 'conn->reply' to the mirror of 'conn->orig' (no NAT). */
void ct_offload_conn_mirror_reply(struct ct_offload_conn *conn);

/* ------------------------------------------------------------------------
 * Batches of operations (the series' patch 06)
 * ------------------------------------------------------------------------ */

enum ct_offload_op_type {
    CT_OFFLOAD_OP_ADD,     /* conn_add. */
    CT_OFFLOAD_OP_DEL,     /* conn_del. */
    CT_OFFLOAD_OP_UPD,     /* conn_update: 0, or ENODATA if nobody knows. */
    CT_OFFLOAD_OP_POLICY,  /* can_offload: 0, or EPERM if nobody can. */
    CT_OFFLOAD_OP_FLUSH,   /* flush. */
    CT_OFFLOAD_OP_EST,     /* conn_established: 0, or EALREADY when the
                            * connection is not in state "added". */
};

/* One operation of a batch.  'error' is the operation's own result, set by
 * ct_offload_op_batch_submit().  'last_used' (ctoffload's addition) receives
 * the answer of an UPD operation, in ms since the Unix epoch, 0 if none. */
struct ct_offload_op {
    enum ct_offload_op_type type;
    struct ct_offload_ctx ctx;
    int error;
    long long last_used;
};

struct ct_offload_op_batch {
    struct ct_offload_op *ops;
    size_t n_ops;       /* Operations in 'ops'. */
    size_t allocated;   /* Room in 'ops'. */
};

/* ------------------------------------------------------------------------
 * Provider classes
 * ------------------------------------------------------------------------ */

/* Bits of struct ct_offload_class's 'flags'. */
#define CT_OFFLOAD_CLASS_FALLBACK 0x1u /* conn_add only when no primary
                                        * provider accepted the connection. */

/* How a provider holds a connection, reported by 'conn_query'. */
enum ct_offload_mode {
    CT_OFFLOAD_MODE_NONE = 0, /* Not held. */
    CT_OFFLOAD_MODE_SW = 1,   /* Held in a software fast path. */
    CT_OFFLOAD_MODE_HW = 2,   /* Held in hardware. */
};

/* Which provider holds a connection and how (ct_offload_conn_query()). */
struct ct_offload_conn_status {
    char provider[32];        /* Name of the provider holding it, or "". */
    enum ct_offload_mode mode;
    uint64_t packets;         /* Fast-path packets, both directions. */
    uint64_t bytes;           /* Fast-path bytes, both directions. */
    long long last_used;      /* ms since the Unix epoch, 0 = never/unknown. */
};

/* A conntrack offload provider.
 *
 * Every callback is optional (may be NULL); a NULL 'can_offload' accepts
 * every connection.  Callbacks may be called from many threads at once and
 * must not call ct_offload_unregister() on their own class.  'ctx' and
 * everything it points to is valid only during the call: copy what you keep.
 *
 * The members up to 'flush' are the series', in its order (patch 06 put
 * 'batch_submit' after 'init').  Initialise the class with designated
 * initialisers: what is left out is NULL or 0, which keeps the RFC's
 * behaviour. */
struct ct_offload_class {
    const char *name;

    /* Called once by ct_offload_register(); a non-zero return refuses the
     * registration and is returned to the caller. */
    int (*init)(void);

    /* Optional: processes 'batch' in one go (for example one netlink
     * transaction), setting each op's 'error' (and 'last_used' for UPD)
     * exactly as the single callbacks would.  Unlike the RFC's registry,
     * which hands every batch provider the whole batch and then overwrites
     * its results, ctoffload hands it a batch of only the ops meant for it
     * (an ADD this provider may not take, an EST for a connection not in
     * state "added", are left out) and keeps the results it sets.  When
     * NULL, the batch is split into single calls. */
    void (*batch_submit)(struct ct_offload_op_batch *batch);

    /* Start offloading ctx->conn.  Returns 0 or a positive errno. */
    int (*conn_add)(const struct ct_offload_ctx *);
    /* Stop offloading ctx->conn at once.  Unknown connections are ignored. */
    void (*conn_del)(const struct ct_offload_ctx *);
    /* Last time ctx->conn was used in the fast path, in ms since the Unix
     * epoch, or 0 if the connection is unknown or the time is unknown. */
    long long (*conn_update)(const struct ct_offload_ctx *);
    /* The first reply-direction packet was seen; 'ctx' is that packet's
     * context (its netdev_in is the reply direction's input device).  Called
     * once per connection, and only after a conn_add was accepted. */
    void (*conn_established)(const struct ct_offload_ctx *);
    /* Whether this provider can offload ctx->conn. */
    bool (*can_offload)(const struct ct_offload_ctx *);
    /* Stop offloading every connection this provider holds. */
    void (*flush)(void);

    /* ---- ctoffload additions; zero-initialise to keep RFC behaviour ---- */

    /* CT_OFFLOAD_CLASS_* bits. */
    unsigned int flags;

    /* Optional: fills 'status' (mode, counters, last used) and returns true
     * if this provider holds ctx->conn; returns false otherwise. */
    bool (*conn_query)(const struct ct_offload_ctx *ctx,
                       struct ct_offload_conn_status *status);
};

/* Registers 'class'.  EINVAL if 'class' or its name is NULL or the name is
 * empty or longer than 31 bytes; EEXIST (and a warning) if a class of that
 * name is registered; the error of 'init' if it fails, and the class is then
 * not registered.  Dispatch order is registration order. */
int ct_offload_register(const struct ct_offload_class *);

/* Unregisters 'class', found by identity.  An unknown class is a warning and
 * a no-op.  Returns only when no dispatch still uses 'class'.  The offload
 * state of connections (below) is kept: it is the registry's record of what
 * the datapath asked and some provider accepted. */
void ct_offload_unregister(const struct ct_offload_class *);

/* Registers the built-in providers enabled by the "priority" setting, in its
 * order.  Calling it again is harmless (already registered ones are kept).
 * While offload is disabled (ct_offload_enabled() false) it registers
 * nothing. */
void ct_offload_module_init(void);

/* Whether conntrack offload is enabled (the series' patch 09): the
 * "enabled" setting (default true) or, while ct_offload_force_enable(true)
 * is in force, true.  As in the RFC, it is the datapath's switch: a datapath
 * asks it before handing connections over, and at shutdown flushes when it
 * is true (ct_offload_flush(); nothing is flushed behind its back, since the
 * kernel provider's table is meant to outlive a restart and be adopted).
 * The dispatch functions below do not consult it.  Turning "enabled" from
 * true to false with ct_offload_config_set() flushes every provider and
 * forgets every connection's state, so that nothing stays offloaded which a
 * datapath that stopped calling would never delete. */
bool ct_offload_enabled(void);

/* For tests (the RFC's name): while 'force' is true, ct_offload_enabled()
 * returns true whatever the "enabled" setting says; false returns it to the
 * setting.  Forcing changes nothing else (no flush, no registration). */
void ct_offload_force_enable(bool force);

/* Errors of conn_add.  A provider's conn_add error says one of two things,
 * and the registry acts on which:
 *
 *   "the input is wrong"      EINVAL (the connection is malformed: see
 *                             ct_offload_conn_validate()), ENODEV (ctx's
 *                             netdev_in names no device).  No other provider
 *                             is offered the connection: a fallback taking it
 *                             would report success for what cannot work.
 *   "held already"            EEXIST: that provider holds it; it is
 *                             offloaded, and no fallback takes a copy.
 *   "this provider cannot"    everything else - EOPNOTSUPP, EPROTONOSUPPORT
 *                             (protocol), ENOSPC (full), EPERM/EACCES
 *                             (privileges), ENOTCONN (not ready), ENOENT
 *                             (no flowtables), ENOMEM, or a kernel error:
 *                             the fallback providers are offered it, in
 *                             order.
 *
 * ct_offload_conn_add() returns 0 when a fallback took the connection,
 * otherwise the first error (contract line 4).
 *
 * ct_offload_error_is_input() returns true for the "input is wrong" errors:
 * a caller retrying with another provider, or a provider of its own, can
 * ask it instead of keeping a list. */
bool ct_offload_error_is_input(int err);

/* Dispatch (DESIGN.md section 3, contract lines 4-9).
 *
 * ct_offload_conn_established() reaches the providers only when the
 * connection is in state "added" (below), and moves it to "established":
 * once per connection, never before an accepted add (patch 07).  Otherwise
 * it does nothing; a batch's EST op says EALREADY.
 *
 * ct_offload_conn_update() answers according to the "update_semantics"
 * setting (see ct_offload_config_set()): the first non-zero last-used time
 * of the providers (last_used, the default), or that time only when it
 * advanced since the previous query of the same connection and 0 otherwise
 * (used_since_last_query). */
int ct_offload_conn_add(const struct ct_offload_ctx *);
void ct_offload_conn_del(const struct ct_offload_ctx *);
long long ct_offload_conn_update(const struct ct_offload_ctx *);
void ct_offload_conn_established(const struct ct_offload_ctx *);
bool ct_offload_can_offload(const struct ct_offload_ctx *);
void ct_offload_flush(void);

/* Per-connection offload state (the series' "offload mark", patch 07).
 *
 * The registry keeps, for each connection, one of:
 *   none          never added, refused by every provider, deleted or
 *                 flushed;
 *   added         a conn_add (single or batched) was accepted by at least
 *                 one provider, or a provider said EEXIST (it holds it);
 *   established   conn_established was delivered after that.
 * conn_del and flush return connections to none; a repeated conn_add leaves
 * an established connection established.  A connection is identified as
 * conntrack identifies it - family, protocol, zone and original tuple - so
 * a context built afresh for each call finds the same state.  Each call is
 * O(1); the state lives in a table sharded by connection, so dispatch of
 * different connections does not serialise on it.
 *
 * Where the RFC takes OVS's 'struct conn *', these take the context. */
bool ct_offload_conn_is_offloaded(const struct ct_offload_ctx *);
bool ct_offload_conn_is_established(const struct ct_offload_ctx *);

/* Batches.  Typical use:
 *
 *     struct ct_offload_op_batch batch;
 *     struct ct_offload_op *op;
 *
 *     ct_offload_op_batch_init(&batch);
 *     ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &ctx_a);
 *     ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &ctx_b);
 *     ct_offload_op_batch_submit(&batch);
 *     CT_OFFLOAD_BATCH_OP_FOR_EACH (i, op, &batch) {
 *         ... op->error ...
 *     }
 *     ct_offload_op_batch_destroy(&batch);
 *
 * ct_offload_op_batch_add() copies 'ctx' but not what it points to: the
 * connection and netdev must stay valid until the batch is submitted.  Its
 * return may be ignored, as the RFC's callers do (the RFC's returns void):
 * it is ENOMEM when the batch cannot grow, and the batch is then left as it
 * was (one op fewer, never a torn one), or EINVAL for a null batch or
 * context.
 *
 * ct_offload_op_batch_submit() gives every op exactly the result the single
 * call would give at that point of the sequence: an EST after an ADD of the
 * same connection in the same batch sees that ADD's outcome. */
void ct_offload_op_batch_init(struct ct_offload_op_batch *);
int ct_offload_op_batch_add(struct ct_offload_op_batch *,
                            enum ct_offload_op_type,
                            const struct ct_offload_ctx *);
void ct_offload_op_batch_submit(struct ct_offload_op_batch *);
void ct_offload_op_batch_destroy(struct ct_offload_op_batch *);

/* Operations in 'batch', and room for them, as the series spells them. */
static inline size_t
ct_offload_op_batch_len(const struct ct_offload_op_batch *batch)
{
    return batch->n_ops;
}

static inline size_t
ct_offload_op_batch_size(const struct ct_offload_op_batch *batch)
{
    return batch->allocated;
}

/* Iterates over the ops of 'BATCH' in order: 'IDX' (declared by the macro,
 * a size_t) is the op's index and 'OP' (a 'struct ct_offload_op *' declared
 * by the caller) points at it. */
/* NOLINTBEGIN(bugprone-macro-parentheses): IDX is a name the macro declares. */
#define CT_OFFLOAD_BATCH_OP_FOR_EACH(IDX, OP, BATCH)                        \
    for (size_t IDX = 0; IDX < ct_offload_op_batch_len(BATCH); IDX++)      \
        if (((OP) = &(BATCH)->ops[IDX]), true)
/* NOLINTEND(bugprone-macro-parentheses) */

/* ------------------------------------------------------------------------
 * Status and configuration (ctoffload additions)
 * ------------------------------------------------------------------------ */

/* Fills 'status' from the first provider (in dispatch order) that holds
 * ctx->conn.  Returns 0, or ENOENT if no provider holds it (status is then
 * zeroed). */
int ct_offload_conn_query(const struct ct_offload_ctx *,
                          struct ct_offload_conn_status *status);

/* Sets one configuration key.  Keys:
 *   "enabled"                  "true" (default) or "false": what
 *                              ct_offload_enabled() answers (see there).
 *   "update_semantics"         what conn_update and UPD answer:
 *                              "last_used" (default): the providers' last
 *                                used time, the same answer for as long as
 *                                the connection stays idle;
 *                              "used_since_last_query": that time only when
 *                                it advanced since the previous query of
 *                                the same connection, else 0 (UPD: ENODATA).
 *                              Under the RFC's conntrack, whose sweep keeps
 *                              an expired offloaded connection while its UPD
 *                              answers 0, the second is what ages idle
 *                              connections out (docs/FROM_RFC.md).
 *   "priority"                 built-in providers to enable, in dispatch
 *                              order, e.g. "nft_flowtable,software".
 *   "<provider>.<option>"      a built-in provider's option, e.g.
 *                              "software.capacity" = "65536",
 *                              "nft_flowtable.table" = "ctoffload",
 *                              "nft_flowtable.hw_offload" = "on".
 * "enabled" and "update_semantics" apply at once; the others at
 * ct_offload_module_init(), and a provider option cannot be changed while
 * that provider is registered (EBUSY).  EINVAL names an unknown key or a bad
 * value. */
int ct_offload_config_set(const char *key, const char *value);

/* Copies the current value of 'key' into 'buf'.  ENOENT for unknown keys,
 * ERANGE if 'size' is too small. */
int ct_offload_config_get(const char *key, char *buf, size_t size);

/* Names of the registered providers in dispatch order, comma-separated, in
 * 'buf'.  ERANGE if 'size' is too small. */
int ct_offload_providers(char *buf, size_t size);

/* A sentence describing the calling thread's last failure, or "". */
const char *ct_offload_last_error(void);

/* Sets the level of every ctoffload logger: "trace", "debug", "info",
 * "warn", "error", "critical" or "off".  EINVAL for anything else. */
int ct_offload_log_level(const char *level);

#ifdef __cplusplus
}
#endif

#endif /* CTOFFLOAD_CT_OFFLOAD_H */
