/* rfc_contract.c - the contract of the Open vSwitch RFC series (patches
 * 06-11 of lib/ct-offload.h) as a C datapath meets it, built against the
 * installed package.  Our own code, written against the series' names: a
 * small "conntrack" of its own that commits connections with a batch of
 * ADDs, reports each first reply with an EST, ages connections with the
 * series' sweep (a batch of UPDs for the expired offloaded connections;
 * op->error 0 keeps one for another interval, anything else cleans it), and
 * flushes at shutdown when offload is enabled.
 *
 *   rfc_contract                        over the dummy provider, in this
 *                                       process (any host, any user)
 *   rfc_contract --kernel OPTIONS       over the kernel provider
 *                                       (ct_offload_module_init(), priority
 *                                       nft_flowtable only) in the current
 *                                       network namespace, on connections
 *                                       that exist in its conntrack table
 *                                       (tests/package/rfc_contract_kernel.sh
 *                                       makes them); root and a kernel with
 *                                       flowtables
 *
 * Kernel options:
 *   --busy PROTO,SRC,DST[,RSRC,RDST]    a connection carrying traffic all
 *                                       along (RSRC,RDST: its reply tuple's
 *                                       source and destination under NAT)
 *   --idle PROTO,SRC,DST[,RSRC,RDST]    a connection silent from now on
 *   --dev NAME --reply-dev NAME         the input device of each direction
 *   --zone N  --interval-ms N (2000)  --sweeps N (3)
 *
 * Prints one "ok - ..." or "not ok - ..." line per check and exits 0 when
 * every check passed, 1 otherwise, 2 on bad usage. */
#define _POSIX_C_SOURCE 200809L
#include <ctoffload/ct-offload-dummy.h>
#include <ctoffload/ct-offload.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

static void check(bool ok, const char *fmt, ...) {
    va_list ap;
    printf("%s - ", ok ? "ok" : "not ok");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (!ok) {
        failures++;
    }
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- The datapath's own connection table ---- */

struct flow {
    const char *name;
    bool busy;
    struct ct_offload_conn conn;
    struct ct_offload_ctx fwd;  /* Context of an original-direction packet. */
    struct ct_offload_ctx rev;  /* Context of the first reply's packet. */
    bool in_table;              /* Still tracked by this "conntrack". */
};

#define N_FLOWS 2
static struct flow flows[N_FLOWS];
static struct ct_offload_netdev dev_fwd, dev_rev;

/* "PROTO,SRC,DST[,RSRC,RDST]", e.g. "tcp,10.0.1.2:40000,10.0.2.2:5201". */
static int parse_conn(const char *spec, uint16_t zone, struct ct_offload_conn *c) {
    char buf[256], *fields[5] = {0}, *save = NULL, *f;
    int n = 0;
    uint8_t fam[4];

    if (strlen(spec) >= sizeof buf) {
        return EINVAL;
    }
    strcpy(buf, spec);
    for (f = strtok_r(buf, ",", &save); f && n < 5; f = strtok_r(NULL, ",", &save)) {
        fields[n++] = f;
    }
    if (n != 3 && n != 5) {
        return EINVAL;
    }
    memset(c, 0, sizeof *c);
    c->proto = !strcmp(fields[0], "tcp") ? IPPROTO_TCP : !strcmp(fields[0], "udp") ? IPPROTO_UDP : 0;
    if (!c->proto || ct_offload_endpoint_parse(fields[1], &fam[0], &c->orig.src, &c->orig.src_port) ||
        ct_offload_endpoint_parse(fields[2], &fam[1], &c->orig.dst, &c->orig.dst_port) || fam[0] != fam[1]) {
        return EINVAL;
    }
    c->family = fam[0];
    c->zone = zone;
    if (n == 5) {
        if (ct_offload_endpoint_parse(fields[3], &fam[2], &c->reply.src, &c->reply.src_port) ||
            ct_offload_endpoint_parse(fields[4], &fam[3], &c->reply.dst, &c->reply.dst_port) ||
            fam[2] != fam[0] || fam[3] != fam[0]) {
            return EINVAL;
        }
    } else {
        ct_offload_conn_mirror_reply(c);
    }
    return ct_offload_conn_validate(c);
}

static void init_flow(struct flow *fl, const char *name, bool busy) {
    fl->name = name;
    fl->busy = busy;
    fl->fwd = (struct ct_offload_ctx){&fl->conn, &dev_fwd, 1};
    fl->rev = (struct ct_offload_ctx){&fl->conn, &dev_rev, 2};
    fl->in_table = true;
}

/* ---- The series' calls, in the datapath's order ---- */

/* Commit (patch 08): one batch of ADDs. */
static void commit_all(void) {
    struct ct_offload_op_batch batch;
    struct ct_offload_op *op;
    int i;

    ct_offload_op_batch_init(&batch);
    for (i = 0; i < N_FLOWS; i++) {
        ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &flows[i].fwd); /* Result ignored, as the RFC's. */
    }
    check(ct_offload_op_batch_len(&batch) == N_FLOWS && ct_offload_op_batch_size(&batch) >= N_FLOWS,
          "batch: len %zu, size %zu", ct_offload_op_batch_len(&batch), ct_offload_op_batch_size(&batch));
    ct_offload_op_batch_submit(&batch);
    CT_OFFLOAD_BATCH_OP_FOR_EACH (i_op, op, &batch) {
        check(op->error == 0, "ADD %s: error %d (%s)", flows[i_op].name, op->error,
              op->error ? ct_offload_last_error() : "none");
    }
    ct_offload_op_batch_destroy(&batch);
    for (i = 0; i < N_FLOWS; i++) {
        check(ct_offload_conn_is_offloaded(&flows[i].fwd) && !ct_offload_conn_is_established(&flows[i].fwd),
              "%s: offloaded, not established yet", flows[i].name);
    }
}

/* First reply (patches 07-08): EST, with the reply packet's context; a
 * second time it is EALREADY, and the single call does nothing. */
static void first_reply_all(void) {
    struct ct_offload_op_batch batch;
    struct ct_offload_op *op;
    int round, i;

    for (round = 0; round < 2; round++) {
        ct_offload_op_batch_init(&batch);
        for (i = 0; i < N_FLOWS; i++) {
            ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_EST, &flows[i].rev);
        }
        ct_offload_op_batch_submit(&batch);
        CT_OFFLOAD_BATCH_OP_FOR_EACH (i_op, op, &batch) {
            int want = round == 0 ? 0 : EALREADY;
            check(op->error == want, "EST %s, %s: error %d, want %d", flows[i_op].name,
                  round == 0 ? "first" : "repeated", op->error, want);
        }
        ct_offload_op_batch_destroy(&batch);
    }
    for (i = 0; i < N_FLOWS; i++) {
        ct_offload_conn_established(&flows[i].rev); /* Once only: nothing happens. */
        check(ct_offload_conn_is_established(&flows[i].fwd), "%s: established", flows[i].name);
    }
}

/* The sweep (patch 08): every expired offloaded connection gets an UPD; 0
 * keeps it one more interval, anything else cleans it (conn_del, and out of
 * the table).  Here every connection counts as expired at every sweep: the
 * fast path hides its packets from conntrack.  Fills kept[] (by flow). */
static void sweep(bool kept[N_FLOWS]) {
    struct ct_offload_op_batch batch;
    struct ct_offload_op *op;
    int which[N_FLOWS], n = 0, i;

    ct_offload_op_batch_init(&batch);
    for (i = 0; i < N_FLOWS; i++) {
        kept[i] = false;
        if (flows[i].in_table && ct_offload_conn_is_offloaded(&flows[i].fwd)) {
            ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_UPD, &flows[i].fwd);
            which[n++] = i;
        }
    }
    ct_offload_op_batch_submit(&batch);
    CT_OFFLOAD_BATCH_OP_FOR_EACH (i_op, op, &batch) {
        struct flow *fl = &flows[which[i_op]];
        if (op->error == 0) {
            kept[which[i_op]] = true;
        } else {
            ct_offload_conn_del(&fl->fwd);
            fl->in_table = false;
        }
    }
    ct_offload_op_batch_destroy(&batch);
}

/* Shutdown (patch 09): flush when offload is enabled. */
static void shutdown_all(void) {
    int i;

    if (ct_offload_enabled()) {
        ct_offload_flush();
    }
    for (i = 0; i < N_FLOWS; i++) {
        struct ct_offload_conn_status st;
        check(!ct_offload_conn_is_offloaded(&flows[i].fwd) && ct_offload_conn_query(&flows[i].fwd, &st) == ENOENT,
              "%s: nothing offloaded after the flush at shutdown", flows[i].name);
    }
}

/* ---- Over the dummy ---- */

static int run_dummy(void) {
    bool kept[N_FLOWS];
    int i;

    strcpy(dev_fwd.name, "lan0");
    strcpy(dev_rev.name, "wan0");
    if (parse_conn("tcp,10.0.1.2:40000,10.0.2.2:5201", 0, &flows[0].conn) ||
        parse_conn("udp,10.0.1.2:40001,192.0.2.10:53,10.0.2.2:53,10.0.1.2:40001", 3, &flows[1].conn)) {
        fprintf(stderr, "parse: %s\n", ct_offload_last_error());
        return 2;
    }
    init_flow(&flows[0], "busy (tcp)", true);
    init_flow(&flows[1], "idle (udp, DNAT, zone 3)", false);

    /* Patch 09: the datapath's switch; tests force it. */
    check(ct_offload_config_set("enabled", "false") == 0 && !ct_offload_enabled(), "enabled=false: disabled");
    ct_offload_force_enable(true);
    check(ct_offload_enabled(), "ct_offload_force_enable(true): enabled");
    /* Patch 11: the dummy, registered by the test. */
    check(ct_offload_dummy_register() == 0, "the dummy registers");
    check(ct_offload_config_set("update_semantics", "used_since_last_query") == 0, "update_semantics set");

    commit_all();
    check(ct_offload_dummy_n_added() == N_FLOWS, "dummy: %u added", ct_offload_dummy_n_added());
    first_reply_all();
    check(ct_offload_dummy_n_established() == N_FLOWS, "dummy: established reached it %u times, once each",
          ct_offload_dummy_n_established());
    for (i = 0; i < N_FLOWS; i++) {
        check(ct_offload_dummy_contains(&flows[i].conn) && ct_offload_dummy_is_bidirectional(&flows[i].conn),
              "dummy: holds %s, both directions' devices seen", flows[i].name);
    }

    sweep(kept);
    check(kept[0] && kept[1], "sweep 1: both kept (used since they were added)");
    ct_offload_dummy_touch(&flows[0].conn); /* The busy one's packets. */
    sweep(kept);
    check(kept[0] && !kept[1], "sweep 2: the busy one kept, the idle one cleaned");
    check(!ct_offload_dummy_contains(&flows[1].conn) && !ct_offload_conn_is_offloaded(&flows[1].fwd),
          "the idle one is gone from the dummy and from the registry");
    ct_offload_dummy_touch(&flows[0].conn);
    sweep(kept);
    check(kept[0], "sweep 3: the busy one kept");

    /* The RFC's own semantics, for comparison: an idle connection whose
     * provider answers a last-used time is kept at every sweep. */
    check(ct_offload_config_set("update_semantics", "last_used") == 0, "update_semantics=last_used");
    flows[1].in_table = true;
    check(ct_offload_conn_add(&flows[1].fwd) == 0, "idle one added again");
    sweep(kept);
    sweep(kept);
    check(kept[1], "last_used: the idle one is still kept at the second sweep (the RFC's behaviour)");

    shutdown_all();
    check(ct_offload_dummy_n_held() == 0, "dummy: holds nothing");
    ct_offload_dummy_unregister();
    ct_offload_force_enable(false);
    ct_offload_config_set("enabled", "true");
    return failures ? 1 : 0;
}

/* ---- Over the kernel provider ---- */

static int run_kernel(int argc, char **argv) {
    const char *busy = NULL, *idle = NULL, *dev = NULL, *rdev = NULL;
    long interval_ms = 2000, sweeps = 3, zone = 0;
    bool kept[N_FLOWS], idle_gone = false, busy_always = true;
    char names[128];
    long s;
    int i;

    for (i = 2; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "%s needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--busy")) {
            busy = v;
        } else if (!strcmp(argv[i], "--idle")) {
            idle = v;
        } else if (!strcmp(argv[i], "--dev")) {
            dev = v;
        } else if (!strcmp(argv[i], "--reply-dev")) {
            rdev = v;
        } else if (!strcmp(argv[i], "--zone")) {
            zone = strtol(v, NULL, 10);
        } else if (!strcmp(argv[i], "--interval-ms")) {
            interval_ms = strtol(v, NULL, 10);
        } else if (!strcmp(argv[i], "--sweeps")) {
            sweeps = strtol(v, NULL, 10);
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
        i++;
    }
    if (!busy || !idle || !dev || !rdev || strlen(dev) >= CT_OFFLOAD_IFNAMSIZ ||
        strlen(rdev) >= CT_OFFLOAD_IFNAMSIZ || zone < 0 || zone > 65535 || interval_ms <= 0 || sweeps < 2) {
        fprintf(stderr, "usage: rfc_contract --kernel --busy SPEC --idle SPEC --dev NAME --reply-dev NAME "
                        "[--zone N] [--interval-ms N] [--sweeps N>=2]\n");
        return 2;
    }
    strcpy(dev_fwd.name, dev);
    strcpy(dev_rev.name, rdev);
    if (parse_conn(busy, (uint16_t)zone, &flows[0].conn) || parse_conn(idle, (uint16_t)zone, &flows[1].conn)) {
        fprintf(stderr, "bad connection: %s\n", ct_offload_last_error());
        return 2;
    }
    init_flow(&flows[0], "busy", true);
    init_flow(&flows[1], "idle", false);

    check(ct_offload_enabled(), "enabled by default");
    check(ct_offload_config_set("priority", "nft_flowtable") == 0, "priority=nft_flowtable (no software fallback)");
    check(ct_offload_config_set("update_semantics", "used_since_last_query") == 0, "update_semantics set");
    ct_offload_module_init();
    if (ct_offload_providers(names, sizeof names) != 0) {
        names[0] = '\0';
    }
    check(!strcmp(names, "nft_flowtable"), "the kernel provider is registered (%s)",
          !strcmp(names, "nft_flowtable") ? "nft_flowtable" : ct_offload_last_error());
    if (failures) {
        return 1;
    }

    commit_all();
    first_reply_all();
    for (i = 0; i < N_FLOWS; i++) {
        struct ct_offload_conn_status st;
        check(ct_offload_conn_query(&flows[i].fwd, &st) == 0 && !strcmp(st.provider, "nft_flowtable"),
              "%s: held by nft_flowtable", flows[i].name);
    }

    /* The kernel provider's first reading of a connection has nothing to
     * compare with and says "unknown": read once before the sweeps. */
    for (i = 0; i < N_FLOWS; i++) {
        (void)ct_offload_conn_update(&flows[i].fwd);
    }
    for (s = 1; s <= sweeps; s++) {
        sleep_ms(interval_ms);
        sweep(kept);
        printf("# sweep %ld: busy %s, idle %s\n", s, kept[0] ? "kept" : "cleaned",
               flows[1].in_table ? "kept" : "cleaned");
        busy_always = busy_always && kept[0];
        idle_gone = idle_gone || !flows[1].in_table;
    }
    check(busy_always, "the busy connection was kept at every sweep");
    check(idle_gone, "the idle connection was cleaned within %ld sweeps", sweeps);

    shutdown_all();
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--kernel")) {
        return run_kernel(argc, argv);
    }
    if (argc > 1) {
        fprintf(stderr, "usage: rfc_contract [--kernel OPTIONS]\n");
        return 2;
    }
    return run_dummy();
}
