// SPDX-License-Identifier: GPL-2.0
/*
 * simnic - a simulated NIC that takes nftables flowtable hardware offload.
 *
 * A test fixture of ctoffload (docs/SIMNIC.md).  It makes veth-like pairs
 * (`ip link add A type simnic peer name B`) whose ports advertise
 * hw-tc-offload and answer ndo_setup_tc(TC_SETUP_FT), so a flowtable with
 * `flags offload` binds to them.  The kernel then hands each offloaded flow
 * direction to the port it arrives on as a FLOW_CLS_REPLACE rule; the port
 * keeps it, and when the pair's other end transmits a packet that matches,
 * the "hardware" (this module) applies the rule's Ethernet and NAT rewrites
 * with incremental checksum updates and delivers the packet straight to the
 * far side of the output port: the router's stack never sees it.  STATS
 * answers with the packets, bytes and last use the rule counted, DESTROY
 * drops the rule.  Counters are in `ethtool -S PORT`, and for every port of
 * every namespace in /proc/simnic (one line each, which a test reads
 * without starting a process per port); fault knobs are module parameters
 * (/sys/module/simnic/parameters/).
 *
 * Locking.  The rule tables are written only under simnic_mutex (the
 * flowtable calls from its offload workqueues, which may sleep and run
 * concurrently); the packet path reads them under RCU and frees rules
 * after a grace period.  A rule holds a reference on its output device;
 * a port that goes away first marks itself dying and purges its own rules
 * and every rule that redirects to it, under the same mutex, so no rule can
 * name it afterwards.
 */
#include <linux/etherdevice.h>
#include <linux/hash.h>
#include <linux/ethtool.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/jhash.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/proc_fs.h>
#include <linux/rculist.h>
#include <linux/seq_file.h>
#include <linux/skbuff.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/version.h>
#include <linux/veth.h>
#include <net/checksum.h>
#include <net/ip.h>
#include <net/flow_offload.h>
#include <net/pkt_cls.h>
#include <net/rtnetlink.h>

#define SIMNIC_KIND "simnic"
#define SIMNIC_HASH_BITS 8
#define SIMNIC_HASH_SIZE (1U << SIMNIC_HASH_BITS)
/* Four Ethernet rewrites, up to eight IPv6 address words and two port
 * words: the flowtable never asks for more. */
#define SIMNIC_MAX_MANGLES 16

/* ---- Fault knobs (runtime-writable module parameters) ---- */

static int refuse;
module_param(refuse, int, 0644);
MODULE_PARM_DESC(refuse, "refuse every FLOW_CLS_REPLACE meant for a port with this errno (95 EOPNOTSUPP, 28 ENOSPC); 0 accepts");

static unsigned int max_rules = 4096;
module_param(max_rules, uint, 0644);
MODULE_PARM_DESC(max_rules, "rule table size per port; a REPLACE beyond it gets ENOSPC (0: unlimited)");

static bool report_lastused = true;
module_param(report_lastused, bool, 0644);
MODULE_PARM_DESC(report_lastused, "report the last use in FLOW_CLS_STATS (N: packets and bytes only)");

static bool forward = true;
module_param(forward, bool, 0644);
MODULE_PARM_DESC(forward, "forward matching packets in 'hardware' (N: accept rules, let the stack see every packet)");

/* ---- Per-port counters, as `ethtool -S` names them ---- */

enum simnic_stat {
	SIMNIC_RULES,			/* rules installed now (not a counter) */
	SIMNIC_REPLACE,			/* REPLACE accepted: a new rule */
	SIMNIC_REPLACE_UPDATE,		/* REPLACE of a cookie it already held */
	SIMNIC_REPLACE_OTHER_PORT,	/* REPLACE for another port's traffic, ignored */
	SIMNIC_DESTROY,			/* DESTROY of a rule it held */
	SIMNIC_STATS,			/* STATS answered for a rule it held */
	SIMNIC_REFUSED_KNOB,		/* REPLACE refused by the 'refuse' knob */
	SIMNIC_REFUSED_FULL,		/* REPLACE refused: max_rules reached */
	SIMNIC_REFUSED_UNSUPPORTED,	/* REPLACE with a match or action it cannot do */
	SIMNIC_PURGED,			/* rules dropped without DESTROY (unbind, port gone) */
	SIMNIC_HW_RX_PACKETS,		/* packets that matched a rule of this port */
	SIMNIC_HW_RX_BYTES,
	SIMNIC_HW_TX_PACKETS,		/* packets the hardware sent out of this port */
	SIMNIC_HW_TX_BYTES,
	SIMNIC_HW_DROPS,		/* matched, but the output could not take it */
	SIMNIC_HW_NOFORWARD,		/* matched while forward=N: given to the stack */
	SIMNIC_NSTATS,
};

static const char simnic_stat_names[SIMNIC_NSTATS][ETH_GSTRING_LEN] = {
	"rules", "replace", "replace_update", "replace_other_port", "destroy",
	"stats", "refused_knob", "refused_full", "refused_unsupported", "purged",
	"hw_rx_packets", "hw_rx_bytes", "hw_tx_packets", "hw_tx_bytes",
	"hw_drops", "hw_noforward",
};

/* ---- Rules ---- */

/* What a rule matches, besides the input port: the packet's addresses,
 * protocol and ports.  IPv4 addresses use the first word. */
struct simnic_key {
	__be32 src[4];
	__be32 dst[4];
	__be16 sport;
	__be16 dport;
	__be16 n_proto;
	u8 ip_proto;
	u8 pad;
};

struct simnic_mangle {
	enum flow_action_mangle_base htype;
	u32 offset;
	u32 mask;	/* bits kept */
	u32 val;	/* bits set */
};

struct simnic_rule {
	struct hlist_node key_node;	/* in port->by_key */
	struct hlist_node cookie_node;	/* in port->by_cookie */
	struct rcu_head rcu;
	unsigned long cookie;
	struct simnic_key key;
	__be16 tcp_flags_key;
	__be16 tcp_flags_mask;
	unsigned int n_mangles;
	struct simnic_mangle mangles[SIMNIC_MAX_MANGLES];
	struct net_device *out;		/* a simnic port; reference held */
	atomic64_t packets;
	atomic64_t bytes;
	unsigned long lastused;		/* jiffies of the last hit, 0: none */
	u64 reported_packets;		/* what STATS already handed over */
	u64 reported_bytes;
};

struct simnic_port {
	struct net_device __rcu *peer;
	struct net_device *dev;
	struct list_head node;		/* simnic_ports, under simnic_mutex */
	bool dying;			/* under simnic_mutex */
	bool bound;			/* a flowtable is bound; under simnic_mutex */
	unsigned int n_rules;		/* under simnic_mutex */
	struct hlist_head by_key[SIMNIC_HASH_SIZE];
	struct hlist_head by_cookie[SIMNIC_HASH_SIZE];
	atomic64_t stat[SIMNIC_NSTATS];
	/* What the stack sent and received (ip -s link). */
	atomic64_t tx_packets, tx_bytes, tx_dropped;
	atomic64_t rx_packets, rx_bytes, rx_dropped;
};

static DEFINE_MUTEX(simnic_mutex);
static LIST_HEAD(simnic_ports);
static LIST_HEAD(simnic_block_cb_list);
static const struct net_device_ops simnic_netdev_ops;

static void simnic_count(struct simnic_port *port, enum simnic_stat s, u64 n)
{
	atomic64_add(n, &port->stat[s]);
}

static u32 simnic_key_hash(const struct simnic_key *k)
{
	return jhash2((const u32 *)k, sizeof(*k) / sizeof(u32), 0) & (SIMNIC_HASH_SIZE - 1);
}

static u32 simnic_cookie_hash(unsigned long cookie)
{
	return hash_long(cookie, SIMNIC_HASH_BITS);
}

static bool simnic_is_port(const struct net_device *dev)
{
	return dev->netdev_ops == &simnic_netdev_ops;
}

static void simnic_rule_free_rcu(struct rcu_head *head)
{
	struct simnic_rule *r = container_of(head, struct simnic_rule, rcu);

	dev_put(r->out);
	kfree(r);
}

/* Unlinks 'r' from 'port' and frees it after a grace period (packet-path
 * readers may still hold it).  Called with simnic_mutex held. */
static void simnic_rule_remove(struct simnic_port *port, struct simnic_rule *r)
{
	lockdep_assert_held(&simnic_mutex);
	hlist_del_rcu(&r->key_node);
	hlist_del_rcu(&r->cookie_node);
	WRITE_ONCE(port->n_rules, port->n_rules - 1);
	atomic64_set(&port->stat[SIMNIC_RULES], port->n_rules);
	call_rcu(&r->rcu, simnic_rule_free_rcu);
}

/* Drops every rule of 'port', and with 'out' set every rule of any port
 * that redirects to 'out'.  Called with simnic_mutex held. */
static void simnic_purge(struct simnic_port *port, struct net_device *out)
{
	struct simnic_port *p;
	struct simnic_rule *r;
	struct hlist_node *tmp;
	unsigned int b;

	lockdep_assert_held(&simnic_mutex);
	list_for_each_entry(p, &simnic_ports, node) {
		for (b = 0; b < SIMNIC_HASH_SIZE; b++) {
			hlist_for_each_entry_safe(r, tmp, &p->by_cookie[b], cookie_node) {
				if (p == port || (out && r->out == out)) {
					simnic_rule_remove(p, r);
					simnic_count(p, SIMNIC_PURGED, 1);
				}
			}
		}
	}
}

static struct simnic_rule *simnic_find_cookie(struct simnic_port *port, unsigned long cookie)
{
	struct simnic_rule *r;

	hlist_for_each_entry(r, &port->by_cookie[simnic_cookie_hash(cookie)], cookie_node)
		if (r->cookie == cookie)
			return r;
	return NULL;
}

/* The flow dissector keys this NIC understands; a rule using any other
 * (VLAN, tunnel, ...) is refused rather than half-matched.  used_keys is
 * 32 bits wide in 6.1 and 64 in 6.12: widening it is right for both. */
#define SIMNIC_KNOWN_KEYS (BIT_ULL(FLOW_DISSECTOR_KEY_META) | BIT_ULL(FLOW_DISSECTOR_KEY_CONTROL) | \
			   BIT_ULL(FLOW_DISSECTOR_KEY_BASIC) | BIT_ULL(FLOW_DISSECTOR_KEY_IPV4_ADDRS) | \
			   BIT_ULL(FLOW_DISSECTOR_KEY_IPV6_ADDRS) | BIT_ULL(FLOW_DISSECTOR_KEY_PORTS) | \
			   BIT_ULL(FLOW_DISSECTOR_KEY_TCP))

/* Fills 'r' from the match and actions of 'rule'.  Returns 0 or
 * -EOPNOTSUPP with a reason in 'why'. */
static int simnic_rule_parse(struct simnic_rule *r, struct flow_rule *rule, const char **why)
{
	u64 used = (u64)rule->match.dissector->used_keys;
	struct flow_action_entry *act;
	struct flow_match_basic basic;
	struct flow_match_ports ports;
	int i;

	if (used & ~SIMNIC_KNOWN_KEYS) {
		*why = "match key not supported";
		return -EOPNOTSUPP;
	}
	if (!flow_rule_match_key(rule, FLOW_DISSECTOR_KEY_BASIC) ||
	    !flow_rule_match_key(rule, FLOW_DISSECTOR_KEY_PORTS)) {
		*why = "no protocol or ports in the match";
		return -EOPNOTSUPP;
	}
	flow_rule_match_basic(rule, &basic);
	r->key.n_proto = basic.key->n_proto;
	r->key.ip_proto = basic.key->ip_proto;
	if (r->key.ip_proto != IPPROTO_TCP && r->key.ip_proto != IPPROTO_UDP) {
		*why = "protocol neither TCP nor UDP";
		return -EOPNOTSUPP;
	}
	if (r->key.n_proto == htons(ETH_P_IP) && flow_rule_match_key(rule, FLOW_DISSECTOR_KEY_IPV4_ADDRS)) {
		struct flow_match_ipv4_addrs a;

		flow_rule_match_ipv4_addrs(rule, &a);
		r->key.src[0] = a.key->src;
		r->key.dst[0] = a.key->dst;
	} else if (r->key.n_proto == htons(ETH_P_IPV6) && flow_rule_match_key(rule, FLOW_DISSECTOR_KEY_IPV6_ADDRS)) {
		struct flow_match_ipv6_addrs a;

		flow_rule_match_ipv6_addrs(rule, &a);
		memcpy(r->key.src, &a.key->src, sizeof(r->key.src));
		memcpy(r->key.dst, &a.key->dst, sizeof(r->key.dst));
	} else {
		*why = "no IPv4 or IPv6 addresses in the match";
		return -EOPNOTSUPP;
	}
	flow_rule_match_ports(rule, &ports);
	r->key.sport = ports.key->src;
	r->key.dport = ports.key->dst;
	if (flow_rule_match_key(rule, FLOW_DISSECTOR_KEY_TCP)) {
		struct flow_match_tcp tcp;

		flow_rule_match_tcp(rule, &tcp);
		r->tcp_flags_mask = tcp.mask->flags;
		r->tcp_flags_key = tcp.key->flags & tcp.mask->flags;
	}

	flow_action_for_each(i, act, &rule->action) {
		switch (act->id) {
		case FLOW_ACTION_MANGLE:
			if (r->n_mangles == SIMNIC_MAX_MANGLES) {
				*why = "too many rewrites";
				return -EOPNOTSUPP;
			}
			switch (act->mangle.htype) {
			case FLOW_ACT_MANGLE_HDR_TYPE_ETH:
				if (act->mangle.offset > ETH_HLEN - 4)
					goto bad_offset;
				break;
			case FLOW_ACT_MANGLE_HDR_TYPE_IP4:
				if (act->mangle.offset != offsetof(struct iphdr, saddr) &&
				    act->mangle.offset != offsetof(struct iphdr, daddr))
					goto bad_offset;
				break;
			case FLOW_ACT_MANGLE_HDR_TYPE_IP6:
				if (act->mangle.offset < offsetof(struct ipv6hdr, saddr) ||
				    act->mangle.offset > sizeof(struct ipv6hdr) - 4 || act->mangle.offset % 4)
					goto bad_offset;
				break;
			case FLOW_ACT_MANGLE_HDR_TYPE_TCP:
			case FLOW_ACT_MANGLE_HDR_TYPE_UDP:
				/* The port word only: anything else would need
				 * checksum rules this NIC does not have. */
				if (act->mangle.offset != 0)
					goto bad_offset;
				break;
			default:
				goto bad_offset;
			}
			r->mangles[r->n_mangles].htype = act->mangle.htype;
			r->mangles[r->n_mangles].offset = act->mangle.offset;
			r->mangles[r->n_mangles].mask = act->mangle.mask;
			r->mangles[r->n_mangles].val = act->mangle.val;
			r->n_mangles++;
			break;
		case FLOW_ACTION_CSUM:
			/* Every rewrite fixes the checksums it touches. */
			break;
		case FLOW_ACTION_REDIRECT:
			if (r->out) {
				*why = "more than one redirect";
				return -EOPNOTSUPP;
			}
			if (!act->dev || !simnic_is_port(act->dev)) {
				*why = "redirect to a device that is not a simnic port";
				return -EOPNOTSUPP;
			}
			r->out = act->dev;
			break;
		default:
			*why = "action not supported";
			return -EOPNOTSUPP;
		}
	}
	if (!r->out) {
		*why = "no redirect";
		return -EOPNOTSUPP;
	}
	return 0;

bad_offset:
	*why = "rewrite of a header field not supported";
	return -EOPNOTSUPP;
}

static int simnic_replace(struct simnic_port *port, struct flow_cls_offload *f)
{
	struct flow_rule *rule = flow_cls_offload_flow_rule(f);
	struct flow_match_meta meta;
	struct simnic_rule *r, *old;
	struct simnic_port *out;
	const char *why = NULL;
	int knob, err;

	/* Every bound port is offered every flow: keep only those whose
	 * packets arrive here. */
	if (!flow_rule_match_key(rule, FLOW_DISSECTOR_KEY_META)) {
		simnic_count(port, SIMNIC_REFUSED_UNSUPPORTED, 1);
		return -EOPNOTSUPP;
	}
	flow_rule_match_meta(rule, &meta);
	if (meta.key->ingress_ifindex != port->dev->ifindex) {
		simnic_count(port, SIMNIC_REPLACE_OTHER_PORT, 1);
		return -EOPNOTSUPP;
	}
	knob = READ_ONCE(refuse);
	if (knob > 0 && knob < MAX_ERRNO) {
		simnic_count(port, SIMNIC_REFUSED_KNOB, 1);
		return -knob;
	}

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	r->cookie = f->cookie;
	err = simnic_rule_parse(r, rule, &why);
	if (err) {
		simnic_count(port, SIMNIC_REFUSED_UNSUPPORTED, 1);
		NL_SET_ERR_MSG_MOD(f->common.extack, "rule not supported");
		netdev_dbg(port->dev, "REPLACE refused: %s\n", why);
		kfree(r);
		return err;
	}

	mutex_lock(&simnic_mutex);
	out = netdev_priv(r->out);
	if (port->dying || out->dying) {
		err = -ENODEV;
		goto unlock_free;
	}
	/* The kernel may still call a block it is unbinding (it drops the
	 * callback after ndo_setup_tc returns): nothing is added after the
	 * purge of UNBIND. */
	if (!port->bound) {
		err = -ENOENT;
		goto unlock_free;
	}
	old = simnic_find_cookie(port, r->cookie);
	if (!old && READ_ONCE(max_rules) && port->n_rules >= READ_ONCE(max_rules)) {
		simnic_count(port, SIMNIC_REFUSED_FULL, 1);
		err = -ENOSPC;
		goto unlock_free;
	}
	dev_hold(r->out);
	if (old) {
		/* The kernel asks again for a flow it already gave (its
		 * software path refreshes it): keep the counts. */
		atomic64_set(&r->packets, atomic64_read(&old->packets));
		atomic64_set(&r->bytes, atomic64_read(&old->bytes));
		r->lastused = READ_ONCE(old->lastused);
		r->reported_packets = old->reported_packets;
		r->reported_bytes = old->reported_bytes;
		simnic_rule_remove(port, old);
		simnic_count(port, SIMNIC_REPLACE_UPDATE, 1);
	} else {
		simnic_count(port, SIMNIC_REPLACE, 1);
	}
	hlist_add_head_rcu(&r->cookie_node, &port->by_cookie[simnic_cookie_hash(r->cookie)]);
	hlist_add_head_rcu(&r->key_node, &port->by_key[simnic_key_hash(&r->key)]);
	WRITE_ONCE(port->n_rules, port->n_rules + 1);
	atomic64_set(&port->stat[SIMNIC_RULES], port->n_rules);
	mutex_unlock(&simnic_mutex);
	return 0;

unlock_free:
	mutex_unlock(&simnic_mutex);
	kfree(r);
	return err;
}

static int simnic_destroy(struct simnic_port *port, struct flow_cls_offload *f)
{
	struct simnic_rule *r;
	int err = -ENOENT;

	mutex_lock(&simnic_mutex);
	r = simnic_find_cookie(port, f->cookie);
	if (r) {
		simnic_rule_remove(port, r);
		simnic_count(port, SIMNIC_DESTROY, 1);
		err = 0;
	}
	mutex_unlock(&simnic_mutex);
	return err;
}

/* Reports what the rule counted since the last STATS (the flowtable adds
 * these to conntrack's counters as deltas) and when it was last hit. */
static int simnic_stats(struct simnic_port *port, struct flow_cls_offload *f)
{
	struct simnic_rule *r;
	u64 packets, bytes;
	unsigned long lastused;

	mutex_lock(&simnic_mutex);
	r = simnic_find_cookie(port, f->cookie);
	if (!r) {
		mutex_unlock(&simnic_mutex);
		return -ENOENT;
	}
	packets = atomic64_read(&r->packets);
	bytes = atomic64_read(&r->bytes);
	lastused = READ_ONCE(r->lastused);
	flow_stats_update(&f->stats, bytes - r->reported_bytes, packets - r->reported_packets, 0,
			  READ_ONCE(report_lastused) ? lastused : 0, FLOW_ACTION_HW_STATS_DELAYED);
	r->reported_packets = packets;
	r->reported_bytes = bytes;
	simnic_count(port, SIMNIC_STATS, 1);
	mutex_unlock(&simnic_mutex);
	return 0;
}

static int simnic_block_cb(enum tc_setup_type type, void *type_data, void *cb_priv)
{
	struct flow_cls_offload *f = type_data;
	struct simnic_port *port = cb_priv;

	if (type != TC_SETUP_CLSFLOWER)
		return -EOPNOTSUPP;
	switch (f->command) {
	case FLOW_CLS_REPLACE:
		return simnic_replace(port, f);
	case FLOW_CLS_DESTROY:
		return simnic_destroy(port, f);
	case FLOW_CLS_STATS:
		return simnic_stats(port, f);
	default:
		return -EOPNOTSUPP;
	}
}

static int simnic_setup_tc(struct net_device *dev, enum tc_setup_type type, void *type_data)
{
	struct simnic_port *port = netdev_priv(dev);
	struct flow_block_offload *bo = type_data;
	int err;

	if (type != TC_SETUP_FT)
		return -EOPNOTSUPP;
	if (bo->command == FLOW_BLOCK_BIND && !(dev->features & NETIF_F_HW_TC))
		return -EOPNOTSUPP;
	/* The driver list is shared by every port; BIND and UNBIND come from
	 * nf_tables transactions of any namespace. */
	mutex_lock(&simnic_mutex);
	err = flow_block_cb_setup_simple(bo, &simnic_block_cb_list, simnic_block_cb, port, port, true);
	/* Once unbound the kernel will not DESTROY what it gave this port
	 * (a deleted flowtable tears its flows down after unbinding), so the
	 * rules go now; a real driver flushes its tables the same way. */
	if (!err && bo->command == FLOW_BLOCK_BIND)
		port->bound = true;
	if (!err && bo->command == FLOW_BLOCK_UNBIND) {
		port->bound = false;
		simnic_purge(port, NULL);
	}
	mutex_unlock(&simnic_mutex);
	return err;
}

/* ---- The packet path ---- */

/* Where the headers of a parsed packet are, from skb->data (the Ethernet
 * header at transmit time). */
struct simnic_pkt {
	struct simnic_key key;
	unsigned int l3;
	unsigned int l4;
	unsigned int l4_len;	/* header bytes the rewrites may touch */
	__be16 tcp_flags;
};

static bool simnic_parse(struct sk_buff *skb, struct simnic_pkt *p)
{
	const struct ethhdr *eth;

	memset(p, 0, sizeof(*p));
	if (!pskb_may_pull(skb, ETH_HLEN))
		return false;
	eth = (const struct ethhdr *)skb->data;
	p->l3 = ETH_HLEN;
	p->key.n_proto = eth->h_proto;
	if (eth->h_proto == htons(ETH_P_IP)) {
		const struct iphdr *iph;

		if (!pskb_may_pull(skb, p->l3 + sizeof(*iph)))
			return false;
		iph = (const struct iphdr *)(skb->data + p->l3);
		/* Like the kernel's own flowtable: no options, no fragments. */
		if (iph->ihl != 5 || ip_is_fragment(iph))
			return false;
		p->key.ip_proto = iph->protocol;
		p->key.src[0] = iph->saddr;
		p->key.dst[0] = iph->daddr;
		p->l4 = p->l3 + sizeof(*iph);
	} else if (eth->h_proto == htons(ETH_P_IPV6)) {
		const struct ipv6hdr *ip6h;

		if (!pskb_may_pull(skb, p->l3 + sizeof(*ip6h)))
			return false;
		ip6h = (const struct ipv6hdr *)(skb->data + p->l3);
		p->key.ip_proto = ip6h->nexthdr;
		memcpy(p->key.src, &ip6h->saddr, sizeof(p->key.src));
		memcpy(p->key.dst, &ip6h->daddr, sizeof(p->key.dst));
		p->l4 = p->l3 + sizeof(*ip6h);
	} else {
		return false;
	}
	if (p->key.ip_proto == IPPROTO_TCP) {
		const struct tcphdr *th;

		p->l4_len = sizeof(struct tcphdr);
		if (!pskb_may_pull(skb, p->l4 + p->l4_len))
			return false;
		th = (const struct tcphdr *)(skb->data + p->l4);
		p->key.sport = th->source;
		p->key.dport = th->dest;
		/* The 16 bits the flow dissector calls the TCP flags. */
		memcpy(&p->tcp_flags, (const u8 *)th + 12, sizeof(p->tcp_flags));
	} else if (p->key.ip_proto == IPPROTO_UDP) {
		const struct udphdr *uh;

		p->l4_len = sizeof(struct udphdr);
		if (!pskb_may_pull(skb, p->l4 + p->l4_len))
			return false;
		uh = (const struct udphdr *)(skb->data + p->l4);
		p->key.sport = uh->source;
		p->key.dport = uh->dest;
	} else {
		return false;
	}
	return true;
}

static struct simnic_rule *simnic_lookup(struct simnic_port *port, const struct simnic_pkt *p)
{
	struct simnic_rule *r;

	hlist_for_each_entry_rcu(r, &port->by_key[simnic_key_hash(&p->key)], key_node) {
		if (memcmp(&r->key, &p->key, sizeof(p->key)))
			continue;
		/* FIN and RST miss: the kernel's software path tears down. */
		if ((p->tcp_flags & r->tcp_flags_mask) != r->tcp_flags_key)
			continue;
		return r;
	}
	return NULL;
}

/* The L4 checksum after the 32-bit word 'from' became 'to', in the
 * pseudo-header (addresses) or in the L4 header itself (ports). */
static void simnic_l4_csum(struct sk_buff *skb, const struct simnic_pkt *p, __be32 from, __be32 to,
			   bool pseudohdr)
{
	if (p->key.ip_proto == IPPROTO_TCP) {
		struct tcphdr *th = (struct tcphdr *)(skb->data + p->l4);

		inet_proto_csum_replace4(&th->check, skb, from, to, pseudohdr);
	} else {
		struct udphdr *uh = (struct udphdr *)(skb->data + p->l4);

		/* IPv4 UDP may go without a checksum; keep it that way. */
		if (!uh->check && skb->ip_summed != CHECKSUM_PARTIAL)
			return;
		inet_proto_csum_replace4(&uh->check, skb, from, to, pseudohdr);
		if (!uh->check)
			uh->check = CSUM_MANGLED_0;
	}
}

static void simnic_rewrite(struct sk_buff *skb, const struct simnic_pkt *p, const struct simnic_rule *r)
{
	unsigned int i;

	for (i = 0; i < r->n_mangles; i++) {
		const struct simnic_mangle *m = &r->mangles[i];
		unsigned int at;
		__be32 from, to;
		u32 word;

		switch (m->htype) {
		case FLOW_ACT_MANGLE_HDR_TYPE_ETH:
			at = m->offset;
			break;
		case FLOW_ACT_MANGLE_HDR_TYPE_IP4:
		case FLOW_ACT_MANGLE_HDR_TYPE_IP6:
			at = p->l3 + m->offset;
			break;
		default:
			at = p->l4 + m->offset;
			break;
		}
		/* The word in memory order, as the kernel built mask and value. */
		memcpy(&word, skb->data + at, sizeof(word));
		from = (__force __be32)word;
		word = (word & m->mask) | m->val;
		to = (__force __be32)word;
		if (from == to)
			continue;
		memcpy(skb->data + at, &word, sizeof(word));
		switch (m->htype) {
		case FLOW_ACT_MANGLE_HDR_TYPE_IP4: {
			struct iphdr *iph = (struct iphdr *)(skb->data + p->l3);

			csum_replace4(&iph->check, from, to);
			simnic_l4_csum(skb, p, from, to, true);
			break;
		}
		case FLOW_ACT_MANGLE_HDR_TYPE_IP6:
			simnic_l4_csum(skb, p, from, to, true);
			break;
		case FLOW_ACT_MANGLE_HDR_TYPE_TCP:
		case FLOW_ACT_MANGLE_HDR_TYPE_UDP:
			simnic_l4_csum(skb, p, from, to, false);
			break;
		default:
			break;
		}
	}
}

/* The "hardware": a packet the pair delivers to 'in' (a router-side port)
 * that matches one of its rules is rewritten and handed to the far end of
 * the rule's output port.  Returns true when the packet was consumed. */
static bool simnic_hw_forward(struct simnic_port *in, struct sk_buff *skb)
{
	struct net_device *out_dev, *far;
	struct simnic_port *out;
	struct simnic_rule *r;
	struct simnic_pkt p;
	unsigned int len;

	if (!READ_ONCE(in->n_rules) || !simnic_parse(skb, &p))
		return false;
	r = simnic_lookup(in, &p);
	if (!r)
		return false;
	if (!READ_ONCE(forward)) {
		simnic_count(in, SIMNIC_HW_NOFORWARD, 1);
		return false;
	}
	out_dev = r->out;
	out = netdev_priv(out_dev);
	far = rcu_dereference(out->peer);
	len = skb->len - ETH_HLEN;
	/* A NIC whose egress port is down drops; it does not hand the
	 * packet back to the host. */
	if (!far || !netif_running(out_dev) || !netif_carrier_ok(out_dev) ||
	    skb_ensure_writable(skb, p.l4 + p.l4_len)) {
		simnic_count(in, SIMNIC_HW_DROPS, 1);
		kfree_skb(skb);
		return true;
	}
	simnic_rewrite(skb, &p, r);
	/* One packet per skb and L3 bytes: what the kernel's software
	 * flowtable would have counted for the same skb. */
	atomic64_inc(&r->packets);
	atomic64_add(len, &r->bytes);
	if (READ_ONCE(r->lastused) != jiffies)
		WRITE_ONCE(r->lastused, jiffies);
	simnic_count(in, SIMNIC_HW_RX_PACKETS, 1);
	simnic_count(in, SIMNIC_HW_RX_BYTES, len);
	if (dev_forward_skb(far, skb) == NET_RX_SUCCESS) {
		simnic_count(out, SIMNIC_HW_TX_PACKETS, 1);
		simnic_count(out, SIMNIC_HW_TX_BYTES, len);
	} else {
		simnic_count(out, SIMNIC_HW_DROPS, 1);
	}
	return true;
}

static netdev_tx_t simnic_xmit(struct sk_buff *skb, struct net_device *dev)
{
	struct simnic_port *port = netdev_priv(dev), *pp;
	struct net_device *peer;
	unsigned int len = skb->len;

	rcu_read_lock();
	peer = rcu_dereference(port->peer);
	if (unlikely(!peer)) {
		atomic64_inc(&port->tx_dropped);
		kfree_skb(skb);
		goto out;
	}
	atomic64_inc(&port->tx_packets);
	atomic64_add(len, &port->tx_bytes);
	pp = netdev_priv(peer);
	if (simnic_hw_forward(pp, skb))
		goto out;
	if (dev_forward_skb(peer, skb) == NET_RX_SUCCESS) {
		atomic64_inc(&pp->rx_packets);
		atomic64_add(len, &pp->rx_bytes);
	} else {
		atomic64_inc(&pp->rx_dropped);
	}
out:
	rcu_read_unlock();
	return NETDEV_TX_OK;
}

/* ---- netdev and ethtool operations ---- */

static int simnic_init(struct net_device *dev)
{
	struct simnic_port *port = netdev_priv(dev);

	port->dev = dev;
	mutex_lock(&simnic_mutex);
	list_add(&port->node, &simnic_ports);
	mutex_unlock(&simnic_mutex);
	return 0;
}

static void simnic_uninit(struct net_device *dev)
{
	struct simnic_port *port = netdev_priv(dev);

	/* Dying first, under the mutex: no REPLACE can add a rule that
	 * names this port once its rules are purged. */
	mutex_lock(&simnic_mutex);
	port->dying = true;
	simnic_purge(port, dev);
	list_del(&port->node);
	mutex_unlock(&simnic_mutex);
}

static int simnic_open(struct net_device *dev)
{
	struct simnic_port *port = netdev_priv(dev);
	struct net_device *peer = rtnl_dereference(port->peer);

	if (!peer)
		return -ENOTCONN;
	if (peer->flags & IFF_UP) {
		netif_carrier_on(dev);
		netif_carrier_on(peer);
	}
	return 0;
}

static int simnic_close(struct net_device *dev)
{
	struct simnic_port *port = netdev_priv(dev);
	struct net_device *peer = rtnl_dereference(port->peer);

	netif_carrier_off(dev);
	if (peer)
		netif_carrier_off(peer);
	return 0;
}

static void simnic_get_stats64(struct net_device *dev, struct rtnl_link_stats64 *s)
{
	struct simnic_port *port = netdev_priv(dev);

	s->tx_packets = atomic64_read(&port->tx_packets);
	s->tx_bytes = atomic64_read(&port->tx_bytes);
	s->tx_dropped = atomic64_read(&port->tx_dropped);
	s->rx_packets = atomic64_read(&port->rx_packets);
	s->rx_bytes = atomic64_read(&port->rx_bytes);
	s->rx_dropped = atomic64_read(&port->rx_dropped);
}

static int simnic_get_iflink(const struct net_device *dev)
{
	struct simnic_port *port = netdev_priv(dev);
	struct net_device *peer;
	int iflink;

	rcu_read_lock();
	peer = rcu_dereference(port->peer);
	iflink = peer ? peer->ifindex : 0;
	rcu_read_unlock();
	return iflink;
}

static const struct net_device_ops simnic_netdev_ops = {
	.ndo_init = simnic_init,
	.ndo_uninit = simnic_uninit,
	.ndo_open = simnic_open,
	.ndo_stop = simnic_close,
	.ndo_start_xmit = simnic_xmit,
	.ndo_get_stats64 = simnic_get_stats64,
	.ndo_set_mac_address = eth_mac_addr,
	.ndo_setup_tc = simnic_setup_tc,
	.ndo_get_iflink = simnic_get_iflink,
};

static void simnic_get_drvinfo(struct net_device *dev, struct ethtool_drvinfo *info)
{
	strscpy(info->driver, SIMNIC_KIND, sizeof(info->driver));
	strscpy(info->version, "1", sizeof(info->version));
}

static int simnic_get_sset_count(struct net_device *dev, int sset)
{
	return sset == ETH_SS_STATS ? SIMNIC_NSTATS : -EOPNOTSUPP;
}

static void simnic_get_strings(struct net_device *dev, u32 sset, u8 *buf)
{
	if (sset == ETH_SS_STATS)
		memcpy(buf, simnic_stat_names, sizeof(simnic_stat_names));
}

static void simnic_get_ethtool_stats(struct net_device *dev, struct ethtool_stats *stats, u64 *data)
{
	struct simnic_port *port = netdev_priv(dev);
	int i;

	for (i = 0; i < SIMNIC_NSTATS; i++)
		data[i] = atomic64_read(&port->stat[i]);
}

/* /proc/simnic: one line per port, "netns=INUM dev=NAME ifindex=N" and then
 * every ethtool counter and the stack's rx/tx packets as name=value. */
static int simnic_proc_show(struct seq_file *m, void *v)
{
	struct simnic_port *port;
	int i;

	mutex_lock(&simnic_mutex);
	list_for_each_entry(port, &simnic_ports, node) {
		seq_printf(m, "netns=%u dev=%s ifindex=%d", dev_net(port->dev)->ns.inum, port->dev->name,
			   port->dev->ifindex);
		for (i = 0; i < SIMNIC_NSTATS; i++)
			seq_printf(m, " %s=%lld", simnic_stat_names[i], (long long)atomic64_read(&port->stat[i]));
		seq_printf(m, " stack_rx_packets=%lld stack_tx_packets=%lld\n",
			   (long long)atomic64_read(&port->rx_packets), (long long)atomic64_read(&port->tx_packets));
	}
	mutex_unlock(&simnic_mutex);
	return 0;
}

static const struct ethtool_ops simnic_ethtool_ops = {
	.get_drvinfo = simnic_get_drvinfo,
	.get_link = ethtool_op_get_link,
	.get_sset_count = simnic_get_sset_count,
	.get_strings = simnic_get_strings,
	.get_ethtool_stats = simnic_get_ethtool_stats,
};

#define SIMNIC_FEATURES (NETIF_F_SG | NETIF_F_FRAGLIST | NETIF_F_HW_CSUM | NETIF_F_RXCSUM | \
			 NETIF_F_HIGHDMA | NETIF_F_GSO_SOFTWARE)

static void simnic_setup(struct net_device *dev)
{
	ether_setup(dev);
	dev->priv_flags &= ~IFF_TX_SKB_SHARING;
	dev->priv_flags |= IFF_LIVE_ADDR_CHANGE | IFF_NO_QUEUE;
	dev->netdev_ops = &simnic_netdev_ops;
	dev->ethtool_ops = &simnic_ethtool_ops;
	dev->features |= SIMNIC_FEATURES | NETIF_F_HW_TC;
	dev->hw_features = SIMNIC_FEATURES | NETIF_F_HW_TC;
	dev->vlan_features = SIMNIC_FEATURES;
	/* Transmit needs no lock of the core's: it only hands the packet on. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
	dev->lltx = true;
#else
	dev->features |= NETIF_F_LLTX;
#endif
	dev->needs_free_netdev = true;
	dev->min_mtu = ETH_MIN_MTU;
	dev->max_mtu = ETH_MAX_MTU;
}

/* ---- rtnl_link_ops: `ip link add A type simnic peer name B` ---- */

/* The peer is described the way veth's is (VETH_INFO_PEER: an ifinfomsg
 * and the peer's own attributes), so iproute2's veth parser builds it. */
static const struct nla_policy simnic_policy[VETH_INFO_MAX + 1] = {
	[VETH_INFO_PEER] = { .len = sizeof(struct ifinfomsg) },
};

static int simnic_validate(struct nlattr *tb[], struct nlattr *data[], struct netlink_ext_ack *extack)
{
	if (tb[IFLA_ADDRESS]) {
		if (nla_len(tb[IFLA_ADDRESS]) != ETH_ALEN)
			return -EINVAL;
		if (!is_valid_ether_addr(nla_data(tb[IFLA_ADDRESS])))
			return -EADDRNOTAVAIL;
	}
	return 0;
}

static struct rtnl_link_ops simnic_link_ops;

static int simnic_newlink(struct net *src_net, struct net_device *dev, struct nlattr *tb[],
			  struct nlattr *data[], struct netlink_ext_ack *extack)
{
	struct nlattr *peer_tb[IFLA_MAX + 1], **tbp = tb;
	unsigned char name_assign_type = NET_NAME_ENUM;
	struct ifinfomsg *ifmp = NULL;
	struct simnic_port *port;
	struct net_device *peer;
	char ifname[IFNAMSIZ];
	struct net *net;
	int err;

	if (data && data[VETH_INFO_PEER]) {
		struct nlattr *nla_peer = data[VETH_INFO_PEER];

		ifmp = nla_data(nla_peer);
		err = rtnl_nla_parse_ifinfomsg(peer_tb, nla_peer, extack);
		if (err < 0)
			return err;
		err = simnic_validate(peer_tb, NULL, extack);
		if (err < 0)
			return err;
		tbp = peer_tb;
	}
	if (ifmp && tbp[IFLA_IFNAME]) {
		nla_strscpy(ifname, tbp[IFLA_IFNAME], IFNAMSIZ);
		name_assign_type = NET_NAME_USER;
	} else {
		snprintf(ifname, IFNAMSIZ, SIMNIC_KIND "%%d");
	}

	net = rtnl_link_get_net(src_net, tbp);
	if (IS_ERR(net))
		return PTR_ERR(net);
	peer = rtnl_create_link(net, ifname, name_assign_type, &simnic_link_ops, tbp, extack);
	if (IS_ERR(peer)) {
		put_net(net);
		return PTR_ERR(peer);
	}
	if (!ifmp || !tbp[IFLA_ADDRESS])
		eth_hw_addr_random(peer);
	if (ifmp && dev->ifindex)
		peer->ifindex = ifmp->ifi_index;
	err = register_netdevice(peer);
	put_net(net);
	if (err < 0) {
		free_netdev(peer);
		return err;
	}
	netif_carrier_off(peer);
	err = rtnl_configure_link(peer, ifmp, 0, NULL);
	if (err < 0)
		goto err_peer;

	if (!tb[IFLA_ADDRESS])
		eth_hw_addr_random(dev);
	if (tb[IFLA_IFNAME])
		nla_strscpy(dev->name, tb[IFLA_IFNAME], IFNAMSIZ);
	else
		snprintf(dev->name, IFNAMSIZ, SIMNIC_KIND "%%d");
	err = register_netdevice(dev);
	if (err < 0)
		goto err_peer;
	netif_carrier_off(dev);

	port = netdev_priv(dev);
	rcu_assign_pointer(port->peer, peer);
	port = netdev_priv(peer);
	rcu_assign_pointer(port->peer, dev);
	return 0;

err_peer:
	unregister_netdevice(peer);
	return err;
}

static void simnic_dellink(struct net_device *dev, struct list_head *head)
{
	struct simnic_port *port = netdev_priv(dev);
	struct net_device *peer = rtnl_dereference(port->peer);

	RCU_INIT_POINTER(port->peer, NULL);
	unregister_netdevice_queue(dev, head);
	if (peer) {
		port = netdev_priv(peer);
		RCU_INIT_POINTER(port->peer, NULL);
		unregister_netdevice_queue(peer, head);
	}
}

static struct net *simnic_get_link_net(const struct net_device *dev)
{
	struct simnic_port *port = netdev_priv(dev);
	struct net_device *peer = rtnl_dereference(port->peer);

	return peer ? dev_net(peer) : dev_net(dev);
}

static struct rtnl_link_ops simnic_link_ops = {
	.kind = SIMNIC_KIND,
	.priv_size = sizeof(struct simnic_port),
	.setup = simnic_setup,
	.validate = simnic_validate,
	.newlink = simnic_newlink,
	.dellink = simnic_dellink,
	.policy = simnic_policy,
	.maxtype = VETH_INFO_MAX,
	.get_link_net = simnic_get_link_net,
};

static int __init simnic_module_init(void)
{
	int err;

	if (!proc_create_single("simnic", 0444, NULL, simnic_proc_show))
		return -ENOMEM;
	err = rtnl_link_register(&simnic_link_ops);
	if (err)
		remove_proc_entry("simnic", NULL);
	return err;
}

static void __exit simnic_module_exit(void)
{
	/* Deletes every port (the flowtables unbind from them on the way),
	 * which purges every rule; then waits for the rules' RCU frees,
	 * which run this module's code. */
	rtnl_link_unregister(&simnic_link_ops);
	remove_proc_entry("simnic", NULL);
	rcu_barrier();
}

module_init(simnic_module_init);
module_exit(simnic_module_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Simulated NIC with nftables flowtable hardware offload (ctoffload test fixture)");
MODULE_ALIAS_RTNL_LINK(SIMNIC_KIND);
