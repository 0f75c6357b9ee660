/* ct-offload-dummy.h - a provider for a datapath's unit tests.
 *
 * The role of the RFC series' patch 11 (lib/ct-offload-dummy.h): a provider
 * class that offloads nothing anywhere, remembers which connections it was
 * given, counts every callback, and says whether it holds a connection.  A
 * datapath's C unit tests register it and check that their conntrack calls
 * the offload layer when it should:
 *
 *     ct_offload_force_enable(true);
 *     ct_offload_dummy_register();         (or ct_offload_register(
 *                                           &ct_offload_dummy_class))
 *     ... run the datapath's conntrack ...
 *     assert(ct_offload_dummy_n_added() == 1);
 *     assert(ct_offload_dummy_contains(&conn));
 *     ct_offload_dummy_unregister();
 *     ct_offload_force_enable(false);
 *
 * It holds any number of connections, accepts every one (unless told to
 * refuse, ct_offload_dummy_set_add_error()), and answers conn_update with
 * the connection's last use: the time it was added, moved on by
 * ct_offload_dummy_touch() ("a packet went through the fast path").  So an
 * idle connection keeps answering the same time, as a real provider's does.
 *
 * Connections are matched as the registry matches them: family, protocol,
 * zone and original tuple (OVS's dummy compares 'struct conn' pointers;
 * ctoffload's contexts are often built afresh for each call).
 *
 * Thread-safe: every function may be called from any thread, at the same
 * time as dispatch. */
#ifndef CTOFFLOAD_CT_OFFLOAD_DUMMY_H
#define CTOFFLOAD_CT_OFFLOAD_DUMMY_H 1

#include <stdbool.h>
#include <stdint.h>

#include "ctoffload/ct-offload.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The class, named "dummy".  No 'batch_submit' (batches reach it as single
 * calls), no flags (a primary); 'conn_query' reports it holds a connection
 * in CT_OFFLOAD_MODE_SW with its last use. */
extern const struct ct_offload_class ct_offload_dummy_class;

/* Resets the dummy (ct_offload_dummy_reset()) and registers its class.
 * Returns what ct_offload_register() returns (EEXIST if it is registered). */
int ct_offload_dummy_register(void);

/* Unregisters the class and resets the dummy. */
void ct_offload_dummy_unregister(void);

/* Forgets every connection, zeroes every counter and stops refusing adds.
 * Registration is unchanged. */
void ct_offload_dummy_reset(void);

/* Zeroes every counter; held connections are kept (the RFC's name). */
void ct_offload_dummy_reset_counters(void);

/* How many times each callback was called since the last reset, whatever
 * the outcome. */
struct ct_offload_dummy_counts {
  unsigned int init;
  unsigned int conn_add;         /* Accepted or refused. */
  unsigned int conn_add_refused; /* Of which refused (set_add_error). */
  unsigned int conn_del;
  unsigned int conn_update;
  unsigned int conn_established;
  unsigned int can_offload;
  unsigned int flush;
  unsigned int conn_query;
};

void ct_offload_dummy_get_counts(struct ct_offload_dummy_counts*);

/* The RFC's counters: connections added (accepted), deleted (by conn_del of
 * a held connection, or flushed), updated (conn_update of a held
 * connection), established (conn_established of a held connection). */
unsigned int ct_offload_dummy_n_added(void);
unsigned int ct_offload_dummy_n_deleted(void);
unsigned int ct_offload_dummy_n_updated(void);
unsigned int ct_offload_dummy_n_established(void);

/* Connections held now. */
unsigned int ct_offload_dummy_n_held(void);

/* True if 'conn' was added and not deleted or flushed since. */
bool ct_offload_dummy_contains(const struct ct_offload_conn* conn);

/* True if 'conn' is held and both directions' input devices were seen: the
 * one of its conn_add and the one of its conn_established (the RFC's name;
 * a NULL netdev_in counts as not seen). */
bool ct_offload_dummy_is_bidirectional(const struct ct_offload_conn* conn);

/* A packet of 'conn' went through the fast path now: its last use becomes
 * the current time, and always moves forward (at least 1 ms past the
 * previous use, so that tests need not sleep).  Returns the new last use, or
 * 0 if 'conn' is not held. */
long long ct_offload_dummy_touch(const struct ct_offload_conn* conn);

/* Its last use (what conn_update answers), or 0 if 'conn' is not held. */
long long ct_offload_dummy_last_used(const struct ct_offload_conn* conn);

/* From now on conn_add refuses every connection with 'error' (0: accept
 * again).  ENOSPC, EOPNOTSUPP... let a test drive the datapath's failure
 * paths. */
void ct_offload_dummy_set_add_error(int error);

#ifdef __cplusplus
}
#endif

#endif /* CTOFFLOAD_CT_OFFLOAD_DUMMY_H */
