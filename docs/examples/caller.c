/* caller.c - a datapath's side: offload one TCP connection, ask who holds
 * it and when it was last used, then stop offloading it. */
#include <ctoffload/ct-offload.h>
#include <netinet/in.h>
#include <stdio.h>

int main(void) {
    struct ct_offload_conn conn = {0};
    uint8_t family;
    if (ct_offload_endpoint_parse("10.0.0.1:40000", &family, &conn.orig.src, &conn.orig.src_port) ||
        ct_offload_endpoint_parse("10.0.0.2:80", &family, &conn.orig.dst, &conn.orig.dst_port)) {
        fprintf(stderr, "%s\n", ct_offload_last_error());
        return 1;
    }
    conn.family = family;
    conn.proto = IPPROTO_TCP;
    ct_offload_conn_mirror_reply(&conn); /* no NAT: the reply is the mirror */

    struct ct_offload_netdev dev = {"lo", 0};
    struct ct_offload_ctx ctx = {&conn, &dev, 1};

    ct_offload_module_init(); /* the built-in providers: kernel, then software */
    if (ct_offload_conn_add(&ctx) != 0) {
        fprintf(stderr, "conn_add: %s\n", ct_offload_last_error());
        return 1;
    }
    struct ct_offload_conn_status st;
    if (ct_offload_conn_query(&ctx, &st) == 0)
        printf("offloaded by %s (%s)\n", st.provider, st.mode == CT_OFFLOAD_MODE_HW ? "hw" : "sw");
    printf("last used: %lld ms since the epoch (0: not yet)\n", ct_offload_conn_update(&ctx));
    ct_offload_conn_del(&ctx);
    return 0;
}
