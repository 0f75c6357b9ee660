/* c_provider.c - a provider and a caller written in C, compiled as C.
 *
 * It proves the ABI of ct-offload.h: an RFC-style class with static
 * callbacks registered through the C header, and a datapath-style caller
 * that builds connections and batches with C alone. */
#include "c_provider.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

static struct c_provider_counts counts;
static int refuse_port; /* conn_add fails with ENOSPC for this dst port. */

static int c_init(void) {
    counts.inits++;
    return 0;
}

static int c_conn_add(const struct ct_offload_ctx *ctx) {
    counts.adds++;
    counts.last_input_port = ctx->input_port_id;
    if (ctx->netdev_in) {
        memcpy(counts.last_netdev, ctx->netdev_in->name, sizeof counts.last_netdev);
        counts.last_netdev[sizeof counts.last_netdev - 1] = '\0';
    }
    return ctx->conn->orig.dst_port == refuse_port ? ENOSPC : 0;
}

static void c_conn_del(const struct ct_offload_ctx *ctx) {
    (void) ctx;
    counts.dels++;
}

static long long c_conn_update(const struct ct_offload_ctx *ctx) {
    counts.updates++;
    return ctx->conn->zone == 7 ? 1700000000777LL : 0;
}

static void c_conn_established(const struct ct_offload_ctx *ctx) {
    (void) ctx;
    counts.established++;
}

static bool c_can_offload(const struct ct_offload_ctx *ctx) {
    return ctx->conn->proto == IPPROTO_TCP;
}

static void c_flush(void) { counts.flushes++; }

/* Designated initialisers in the series' member order (batch_submit after
 * init, left NULL here); ctoffload's additions stay zero, which must mean
 * "behave as the RFC". */
static const struct ct_offload_class c_class = {
    .name = "c-provider",
    .init = c_init,
    .batch_submit = NULL,
    .conn_add = c_conn_add,
    .conn_del = c_conn_del,
    .conn_update = c_conn_update,
    .conn_established = c_conn_established,
    .can_offload = c_can_offload,
    .flush = c_flush,
};

const struct ct_offload_class *c_provider_class(void) { return &c_class; }

struct c_provider_counts c_provider_get_counts(void) { return counts; }

void c_provider_reset(int refuse_dst_port) {
    memset(&counts, 0, sizeof counts);
    refuse_port = refuse_dst_port;
}

/* Builds a TCP/IPv4 connection from text with the C API alone. */
static int make_conn(struct ct_offload_conn *conn, const char *src, const char *dst, uint16_t zone) {
    uint8_t fam_src = 0, fam_dst = 0;
    int err;

    memset(conn, 0, sizeof *conn);
    err = ct_offload_endpoint_parse(src, &fam_src, &conn->orig.src, &conn->orig.src_port);
    if (err) {
        return err;
    }
    err = ct_offload_endpoint_parse(dst, &fam_dst, &conn->orig.dst, &conn->orig.dst_port);
    if (err) {
        return err;
    }
    if (fam_src != fam_dst) {
        return EINVAL;
    }
    conn->family = fam_src;
    conn->proto = IPPROTO_TCP;
    conn->zone = zone;
    ct_offload_conn_mirror_reply(conn);
    return ct_offload_conn_validate(conn);
}

int c_caller_run(int results[4]) {
    struct ct_offload_conn a, b;
    struct ct_offload_netdev dev = {"veth-c", 9};
    struct ct_offload_ctx ctx_a = {&a, &dev, 3};
    struct ct_offload_ctx ctx_b = {&b, &dev, 4};
    struct ct_offload_op_batch batch;
    size_t i;
    int err;

    if ((err = make_conn(&a, "10.1.0.1:1000", "10.1.0.2:80", 7)) != 0 ||
        (err = make_conn(&b, "10.1.0.1:1001", "10.1.0.2:81", 0)) != 0) {
        return err;
    }
    ct_offload_op_batch_init(&batch);
    if ((err = ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &ctx_a)) != 0 ||
        (err = ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &ctx_b)) != 0 ||
        (err = ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_UPD, &ctx_a)) != 0 ||
        (err = ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_UPD, &ctx_b)) != 0) {
        ct_offload_op_batch_destroy(&batch);
        return err;
    }
    ct_offload_op_batch_submit(&batch);
    for (i = 0; i < batch.n_ops && i < 4; i++) {
        results[i] = batch.ops[i].error;
    }
    ct_offload_op_batch_destroy(&batch);
    return batch.ops == NULL && batch.n_ops == 0 ? 0 : EFAULT;
}

int c_series_run(int errors[5], size_t *len, size_t *size, bool *established) {
    struct ct_offload_conn a;
    struct ct_offload_netdev dev = {"veth-s", 11};
    struct ct_offload_ctx ctx = {&a, &dev, 5};
    struct ct_offload_op_batch batch;
    struct ct_offload_op *op;
    int err;

    if ((err = make_conn(&a, "10.2.0.1:1000", "10.2.0.2:80", 7)) != 0) {
        return err;
    }
    /* The series' idiom: batch_add's result ignored, results read with
     * CT_OFFLOAD_BATCH_OP_FOR_EACH. */
    ct_offload_op_batch_init(&batch);
    ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_EST, &ctx);
    ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &ctx);
    ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_EST, &ctx);
    ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_EST, &ctx);
    ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_UPD, &ctx);
    ct_offload_op_batch_submit(&batch);
    CT_OFFLOAD_BATCH_OP_FOR_EACH (i, op, &batch) {
        if (i < 5) {
            errors[i] = op->error;
        }
    }
    *len = ct_offload_op_batch_len(&batch);
    *size = ct_offload_op_batch_size(&batch);
    *established = ct_offload_conn_is_established(&ctx);
    ct_offload_conn_del(&ctx);
    ct_offload_op_batch_destroy(&batch);
    return ct_offload_conn_is_offloaded(&ctx) ? EFAULT : 0;
}
