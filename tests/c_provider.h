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

#ifdef __cplusplus
}
#endif

#endif
