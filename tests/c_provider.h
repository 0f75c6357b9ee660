/* c_provider.h - the C provider and C caller of c_provider.c. */
#ifndef CTOFFLOAD_TESTS_C_PROVIDER_H
#define CTOFFLOAD_TESTS_C_PROVIDER_H 1

#include "ctoffload/ct-offload.h"

#ifdef __cplusplus
extern "C" {
#endif

struct c_provider_counts {
    int inits, adds, dels, updates, established, flushes;
    uint32_t last_input_port;
    char last_netdev[CT_OFFLOAD_IFNAMSIZ];
};

const struct ct_offload_class *c_provider_class(void);
struct c_provider_counts c_provider_get_counts(void);
/* Zeroes the counters; conn_add then fails with ENOSPC for 'refuse_dst_port'. */
void c_provider_reset(int refuse_dst_port);

/* A C datapath's batch: ADD a (zone 7, port 80), ADD b (port 81), UPD a,
 * UPD b.  Fills 'results' with the four op errors; returns 0 or an errno. */
int c_caller_run(int results[4]);

/* The series' batch idiom in C (patches 06-07): EST, ADD, EST, EST, UPD of
 * one connection (zone 7, port 80), results read with
 * CT_OFFLOAD_BATCH_OP_FOR_EACH into 'errors'; '*len' and '*size' from
 * ct_offload_op_batch_len()/_size(); '*established' from
 * ct_offload_conn_is_established().  Deletes the connection after;
 * returns 0, EFAULT if it still looks offloaded, or an errno. */
int c_series_run(int errors[5], size_t *len, size_t *size, bool *established);

#ifdef __cplusplus
}
#endif

#endif
