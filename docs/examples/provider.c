/* provider.c - a provider of your own: it keeps up to 64 connections in a
 * table and says it can take only TCP.  Callbacks may run on many threads
 * at once, hence the lock.  Registered, it gets every connection the
 * datapath hands to ctoffload, before the built-in software fallback. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <ctoffload/ct-offload.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static struct ct_offload_conn table[64];
static size_t n_conns;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* Index of 'c' in the table, or n_conns.  Called with the lock held. */
static size_t find(const struct ct_offload_conn *c) {
    size_t i;
    for (i = 0; i < n_conns; i++) {
        if (table[i].zone == c->zone && table[i].proto == c->proto &&
            memcmp(&table[i].orig, &c->orig, sizeof c->orig) == 0)
            break;
    }
    return i;
}

static int my_add(const struct ct_offload_ctx *ctx) {
    int err = 0;
    pthread_mutex_lock(&lock);
    if (find(ctx->conn) < n_conns)
        err = EEXIST;
    else if (n_conns == sizeof table / sizeof table[0])
        err = ENOSPC;
    else
        table[n_conns++] = *ctx->conn; /* copy: ctx is valid only during the call */
    pthread_mutex_unlock(&lock);
    return err;
}

static void my_del(const struct ct_offload_ctx *ctx) {
    pthread_mutex_lock(&lock);
    size_t i = find(ctx->conn);
    if (i < n_conns)
        table[i] = table[--n_conns];
    pthread_mutex_unlock(&lock);
}

static long long my_update(const struct ct_offload_ctx *ctx) {
    pthread_mutex_lock(&lock);
    long long t = find(ctx->conn) < n_conns ? now_ms() : 0; /* a real one asks its fast path */
    pthread_mutex_unlock(&lock);
    return t;
}

/* Optional (a ctoffload addition): lets ct_offload_conn_query() name us. */
static bool my_query(const struct ct_offload_ctx *ctx, struct ct_offload_conn_status *st) {
    pthread_mutex_lock(&lock);
    bool held = find(ctx->conn) < n_conns;
    pthread_mutex_unlock(&lock);
    if (held) {
        st->mode = CT_OFFLOAD_MODE_SW;
        st->last_used = now_ms();
    }
    return held;
}

static bool my_can_offload(const struct ct_offload_ctx *ctx) { return ctx->conn->proto == IPPROTO_TCP; }

static void my_flush(void) {
    pthread_mutex_lock(&lock);
    n_conns = 0;
    pthread_mutex_unlock(&lock);
}

static const struct ct_offload_class my_provider = {
    .name = "my_provider",
    .conn_add = my_add,
    .conn_del = my_del,
    .conn_update = my_update,
    .can_offload = my_can_offload,
    .flush = my_flush,
    .conn_query = my_query,
};

int main(void) {
    ct_offload_config_set("priority", "software"); /* the built-in fallback only */
    ct_offload_module_init();
    if (ct_offload_register(&my_provider) != 0) {
        fprintf(stderr, "register: %s\n", ct_offload_last_error());
        return 1;
    }

    struct ct_offload_conn tcp = {0}, udp;
    uint8_t family;
    ct_offload_endpoint_parse("192.0.2.1:5000", &family, &tcp.orig.src, &tcp.orig.src_port);
    ct_offload_endpoint_parse("192.0.2.2:443", &family, &tcp.orig.dst, &tcp.orig.dst_port);
    tcp.family = family;
    tcp.proto = IPPROTO_TCP;
    ct_offload_conn_mirror_reply(&tcp);
    udp = tcp;
    udp.proto = IPPROTO_UDP;

    const struct ct_offload_conn *conns[] = {&tcp, &udp};
    for (size_t i = 0; i < 2; i++) {
        struct ct_offload_ctx ctx = {conns[i], NULL, 1};
        struct ct_offload_conn_status st;
        if (ct_offload_conn_add(&ctx) != 0 || ct_offload_conn_query(&ctx, &st) != 0) {
            fprintf(stderr, "offload: %s\n", ct_offload_last_error());
            return 1;
        }
        /* TCP goes to my_provider; UDP, which it refuses, to the fallback. */
        printf("%s: %s\n", conns[i]->proto == IPPROTO_TCP ? "tcp" : "udp", st.provider);
    }
    ct_offload_unregister(&my_provider);
    return 0;
}
