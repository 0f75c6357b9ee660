/* consumer.c - a C program built against the installed package through
 * pkg-config: registers the built-ins and offloads one connection. */
#include <ctoffload/ct-offload.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    struct ct_offload_conn conn;
    struct ct_offload_ctx ctx = {&conn, NULL, 1};
    struct ct_offload_conn_status st;
    uint8_t fam_src, fam_dst;

    memset(&conn, 0, sizeof conn);
    if (ct_offload_endpoint_parse("10.0.0.1:1234", &fam_src, &conn.orig.src, &conn.orig.src_port) ||
        ct_offload_endpoint_parse("10.0.0.2:80", &fam_dst, &conn.orig.dst, &conn.orig.dst_port)) {
        fprintf(stderr, "parse: %s\n", ct_offload_last_error());
        return 1;
    }
    conn.family = fam_src;
    conn.proto = IPPROTO_TCP;
    ct_offload_conn_mirror_reply(&conn);

    ct_offload_config_set("priority", "software");
    ct_offload_module_init();
    if (ct_offload_conn_add(&ctx) != 0 || ct_offload_conn_query(&ctx, &st) != 0) {
        fprintf(stderr, "offload: %s\n", ct_offload_last_error());
        return 1;
    }
    printf("offloaded by %s\n", st.provider);
    return 0;
}
