// nft_flowtable_test.cc - the nft_flowtable provider's logic against fakes
// behind its seams: a small nf_tables kernel behind netlink::Transport (it
// applies batches all-or-nothing, acks every message, points element errors
// at the failing element, answers GET dumps), a conntrack table behind
// netlink::Transport, and a device directory.  Runs anywhere, as any
// user.
#include "providers/nft_flowtable.h"

#include <arpa/inet.h>
#include <endian.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/flowtable.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "netlink/ctnetlink.h"
#include "netlink/nft_socket.h"
#include "providers/nft_layout.h"
#include "providers/usage_store.h"
#include "support/fake_kernel.h"
#include "test_support.h"

namespace ctoffload {
namespace {

using testing::ctx_of;
using testing::tcp4;
using testing::udp6;

// ---------------------------------------------------------------------------
// A fake nf_tables
// ---------------------------------------------------------------------------

struct FakeSet {
  uint32_t key_len = 0;
  std::map<std::string, std::string> elems;  // key bytes -> comment
};
struct FakeFlowtable {
  uint32_t flags = 0;
  std::set<std::string> devices;
};
struct FakeRule {
  uint64_t handle = 0;
  std::string comment;
  std::string set;        // the lookup's set
  std::string flowtable;  // the flow add's flowtable, "" if none
};
struct FakeTable {
  uint64_t handle = 0;
  uint32_t flags = 0;
  std::string comment;
  bool chain = false;
  std::map<std::string, FakeSet> sets;
  std::map<std::string, FakeFlowtable> flowtables;
  std::vector<FakeRule> rules;
};
using FakeRuleset = std::map<std::string, FakeTable>;

std::string udata_comment(const void* data, uint32_t len, uint8_t type) {
  if (data == nullptr) return {};
  const char* bytes = static_cast<const char*>(data);
  const nftnl_udata* a;
  nftnl_udata_for_each_data(bytes, len, a) {
    if (nftnl_udata_type(a) == type) return std::string(static_cast<const char*>(nftnl_udata_get(a)));
  }
  return {};
}

// One element of an element message, with its offset from the message start.
struct WireElem {
  std::string key;
  std::string comment;
  uint32_t offset = 0;
};

std::vector<WireElem> wire_elements(const nlmsghdr* nlh, std::string* set_name) {
  std::vector<WireElem> out;
  const char* base = reinterpret_cast<const char*>(nlh);
  const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  for (auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
       mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a)) {
    if (mnl_attr_get_type(a) == NFTA_SET_ELEM_LIST_SET) *set_name = mnl_attr_get_str(a);
    if (mnl_attr_get_type(a) != NFTA_SET_ELEM_LIST_ELEMENTS) continue;
    const char* nest_end = reinterpret_cast<const char*>(a) + a->nla_len;
    for (auto* e = static_cast<const nlattr*>(mnl_attr_get_payload(a));
         mnl_attr_ok(e, static_cast<int>(nest_end - reinterpret_cast<const char*>(e))); e = mnl_attr_next(e)) {
      WireElem w;
      w.offset = static_cast<uint32_t>(reinterpret_cast<const char*>(e) - base);
      const char* e_end = reinterpret_cast<const char*>(e) + e->nla_len;
      for (auto* f = static_cast<const nlattr*>(mnl_attr_get_payload(e));
           mnl_attr_ok(f, static_cast<int>(e_end - reinterpret_cast<const char*>(f))); f = mnl_attr_next(f)) {
        if (mnl_attr_get_type(f) == NFTA_SET_ELEM_KEY) {
          auto* v = static_cast<const nlattr*>(mnl_attr_get_payload(f));
          w.key.assign(static_cast<const char*>(mnl_attr_get_payload(v)), mnl_attr_get_payload_len(v));
        } else if (mnl_attr_get_type(f) == NFTA_SET_ELEM_USERDATA) {
          w.comment = udata_comment(mnl_attr_get_payload(f), mnl_attr_get_payload_len(f), NFTNL_UDATA_SET_ELEM_COMMENT);
        }
      }
      out.push_back(std::move(w));
    }
  }
  return out;
}

struct Verdict {
  int err = 0;
  std::optional<uint32_t> offset;
};

// The fake nf_tables kernel, on the tests' FakeKernel (the socket, its
// receive queue and ENOBUFS).
class FakeNft final : public testing::FakeKernel {
 public:
  FakeNft() {
    port = 777;
    max_send = 16u << 20;
    rcvbuf = 16u << 20;
    on_request = [this](const testing::Bytes& data, FakeKernel&) {
      auto* first = reinterpret_cast<const nlmsghdr*>(data.data());
      if (first->nlmsg_type == NFNL_MSG_BATCH_BEGIN) {
        batch(data);
      } else {
        get(first);
      }
    };
  }

  // ---- knobs ----
  bool flowtables = true;  // false: NEWFLOWTABLE gives ENOENT (no CONFIG_NF_FLOW_TABLE)
  bool eperm = false;      // every batch refused with EPERM (no CAP_NET_ADMIN)
  // The next batch carrying elements is applied (or aborted) as usual, but
  // its acks are lost: the next receive says ENOBUFS.
  bool lose_next_element_acks = false;
  std::set<std::string> netdevs = {"eth0", "eth1", "eth2", "veth0", "veth1", "swp1", "swp2"};
  std::set<std::string> hw_capable = {"swp1", "swp2"};  // accept `flags offload`

  // ---- state and record ----
  FakeRuleset rs;
  size_t batches = 0;          // batches received
  size_t element_batches = 0;  // batches carrying element messages
  size_t committed = 0;        // batches that committed
  std::vector<uint16_t> get_types;
  size_t element_dumps = 0;  // GETSETELEM with NLM_F_DUMP (a whole set).
  size_t element_gets = 0;   // GETSETELEM of one element.

  FakeTable* table(const std::string& name = "ctoffload") {
    auto it = rs.find(name);
    return it == rs.end() ? nullptr : &it->second;
  }
  FakeSet* set(const std::string& name, const std::string& t = "ctoffload") {
    FakeTable* tb = table(t);
    if (tb == nullptr) return nullptr;
    auto it = tb->sets.find(name);
    return it == tb->sets.end() ? nullptr : &it->second;
  }
  std::set<std::string> devices_of(const std::string& ft) {
    FakeTable* tb = table();
    if (tb == nullptr || !tb->flowtables.count(ft)) return {};
    return tb->flowtables[ft].devices;
  }
  std::vector<std::string> comments(const std::string& set_name) {
    std::vector<std::string> v;
    if (FakeSet* s = set(set_name)) {
      for (const auto& [k, c] : s->elems) v.push_back(c);
    }
    return v;
  }
  // A device goes away: the kernel drops it from every flowtable.
  void unplug(const std::string& dev) {
    netdevs.erase(dev);
    for (auto& [n, t] : rs) {
      for (auto& [f, ft] : t.flowtables) ft.devices.erase(dev);
    }
  }

 private:
  void ack(const nlmsghdr* req, const Verdict& v) {
    testing::Bytes buf(1024);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = NLMSG_ERROR;
    nlh->nlmsg_flags = NLM_F_CAPPED;
    nlh->nlmsg_seq = req->nlmsg_seq;
    nlh->nlmsg_pid = portid();
    auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
    e->error = -v.err;
    e->msg = *req;
    if (v.offset) {
      nlh->nlmsg_flags |= NLM_F_ACK_TLVS;
      mnl_attr_put_u32(nlh, NLMSGERR_ATTR_OFFS, *v.offset);
    }
    buf.resize(nlh->nlmsg_len);
    push(std::move(buf));
  }

  void batch(const testing::Bytes& data) {
    ++batches;
    std::vector<const nlmsghdr*> msgs;
    int len = static_cast<int>(data.size());
    for (auto* m = reinterpret_cast<const nlmsghdr*>(data.data()); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
      msgs.push_back(m);
    }
    if (eperm) {
      ack(msgs.front(), Verdict{EPERM, std::nullopt});
      return;
    }
    const size_t queued = queue.size();
    FakeRuleset work = rs;
    bool failed = false, has_elems = false;
    for (size_t i = 1; i + 1 < msgs.size(); ++i) {
      const uint16_t t = msgs[i]->nlmsg_type & 0xff;
      has_elems = has_elems || t == NFT_MSG_NEWSETELEM || t == NFT_MSG_DELSETELEM;
      const Verdict v = apply(work, msgs[i]);
      failed = failed || v.err != 0;
      ack(msgs[i], v);
    }
    if (has_elems) ++element_batches;
    if (has_elems && lose_next_element_acks) {
      lose_next_element_acks = false;
      queue.resize(queued);
      overrun = true;
    }
    if (!failed) {
      rs = std::move(work);
      ++committed;
    }
  }

  Verdict apply(FakeRuleset& w, const nlmsghdr* nlh) {
    const uint16_t type = nlh->nlmsg_type & 0xff;
    const bool excl = (nlh->nlmsg_flags & NLM_F_EXCL) != 0;
    switch (type) {
      case NFT_MSG_NEWTABLE: {
        netlink::TablePtr t = netlink::make_table();
        nftnl_table_nlmsg_parse(nlh, t.get());
        const std::string name = nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME);
        if (w.count(name)) return Verdict{excl ? EEXIST : 0, std::nullopt};
        FakeTable& ft = w[name];
        ft.handle = ++next_handle_;
        if (nftnl_table_is_set(t.get(), NFTNL_TABLE_FLAGS)) ft.flags = nftnl_table_get_u32(t.get(), NFTNL_TABLE_FLAGS);
        uint32_t ulen = 0;
        const void* ud = nftnl_table_get_data(t.get(), NFTNL_TABLE_USERDATA, &ulen);
        ft.comment = udata_comment(ud, ulen, NFTNL_UDATA_TABLE_COMMENT);
        return {};
      }
      case NFT_MSG_DELTABLE: {
        netlink::TablePtr t = netlink::make_table();
        nftnl_table_nlmsg_parse(nlh, t.get());
        return Verdict{w.erase(nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME)) ? 0 : ENOENT, std::nullopt};
      }
      case NFT_MSG_NEWCHAIN: {
        netlink::ChainPtr c = netlink::make_chain();
        nftnl_chain_nlmsg_parse(nlh, c.get());
        auto it = w.find(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE));
        if (it == w.end()) return Verdict{ENOENT, std::nullopt};
        it->second.chain = true;
        return {};
      }
      case NFT_MSG_NEWSET: {
        netlink::SetPtr s = netlink::make_set();
        nftnl_set_nlmsg_parse(nlh, s.get());
        auto it = w.find(nftnl_set_get_str(s.get(), NFTNL_SET_TABLE));
        if (it == w.end()) return Verdict{ENOENT, std::nullopt};
        if (!nftnl_set_is_set(s.get(), NFTNL_SET_ID)) return Verdict{EINVAL, std::nullopt};
        const std::string name = nftnl_set_get_str(s.get(), NFTNL_SET_NAME);
        if (it->second.sets.count(name)) return Verdict{excl ? EEXIST : 0, std::nullopt};
        it->second.sets[name].key_len = nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_LEN);
        return {};
      }
      case NFT_MSG_NEWRULE: {
        netlink::RulePtr r = netlink::make_rule();
        nftnl_rule_nlmsg_parse(nlh, r.get());
        auto it = w.find(nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE));
        if (it == w.end() || !it->second.chain) return Verdict{ENOENT, std::nullopt};
        FakeRule fr;
        fr.handle = ++next_handle_;
        uint32_t ulen = 0;
        const void* ud = nftnl_rule_get_data(r.get(), NFTNL_RULE_USERDATA, &ulen);
        fr.comment = udata_comment(ud, ulen, NFTNL_UDATA_RULE_COMMENT);
        nftnl_expr_iter* iter = nftnl_expr_iter_create(r.get());
        for (nftnl_expr* e = nftnl_expr_iter_next(iter); e != nullptr; e = nftnl_expr_iter_next(iter)) {
          const std::string n = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
          if (n == "lookup") fr.set = nftnl_expr_get_str(e, NFTNL_EXPR_LOOKUP_SET);
          if (n == "flow_offload") fr.flowtable = nftnl_expr_get_str(e, NFTNL_EXPR_FLOW_TABLE_NAME);
        }
        nftnl_expr_iter_destroy(iter);
        if (!it->second.sets.count(fr.set)) return Verdict{ENOENT, std::nullopt};
        if (!fr.flowtable.empty() && !it->second.flowtables.count(fr.flowtable)) return Verdict{ENOENT, std::nullopt};
        it->second.rules.push_back(fr);
        return {};
      }
      case NFT_MSG_NEWFLOWTABLE:
      case NFT_MSG_DELFLOWTABLE: {
        if (!flowtables) return Verdict{ENOENT, std::nullopt};
        netlink::FlowtablePtr f = netlink::make_flowtable();
        nftnl_flowtable_nlmsg_parse(nlh, f.get());
        auto it = w.find(nftnl_flowtable_get_str(f.get(), NFTNL_FLOWTABLE_TABLE));
        if (it == w.end()) return Verdict{ENOENT, std::nullopt};
        const std::string name = nftnl_flowtable_get_str(f.get(), NFTNL_FLOWTABLE_NAME);
        std::vector<std::string> devs;
        if (nftnl_flowtable_is_set(f.get(), NFTNL_FLOWTABLE_DEVICES)) {
          const char* const* d = nftnl_flowtable_get_array(f.get(), NFTNL_FLOWTABLE_DEVICES);
          for (size_t i = 0; d[i] != nullptr; ++i) devs.emplace_back(d[i]);
        }
        auto& fts = it->second.flowtables;
        if (type == NFT_MSG_DELFLOWTABLE) {
          if (!fts.count(name)) return Verdict{ENOENT, std::nullopt};
          if (devs.empty()) {
            fts.erase(name);
          } else {
            for (const auto& d : devs) fts[name].devices.erase(d);
          }
          return {};
        }
        const uint32_t flags = nftnl_flowtable_get_u32(f.get(), NFTNL_FLOWTABLE_FLAGS);
        if (fts.count(name) && ((fts[name].flags ^ flags) & NFT_FLOWTABLE_HW_OFFLOAD)) {
          return Verdict{EOPNOTSUPP, std::nullopt};
        }
        for (const auto& d : devs) {
          if (!netdevs.count(d)) return Verdict{ENOENT, std::nullopt};
          if ((flags & NFT_FLOWTABLE_HW_OFFLOAD) && !hw_capable.count(d)) return Verdict{EOPNOTSUPP, std::nullopt};
          for (const auto& [other, oft] : fts) {
            if (other != name && oft.devices.count(d)) return Verdict{EEXIST, std::nullopt};
          }
        }
        FakeFlowtable& ft = fts[name];
        ft.flags = flags;
        for (const auto& d : devs) ft.devices.insert(d);
        return {};
      }
      case NFT_MSG_NEWSETELEM:
      case NFT_MSG_DELSETELEM: {
        std::string set_name;
        const auto elems = wire_elements(nlh, &set_name);
        netlink::SetPtr s = netlink::make_set();
        nftnl_set_elems_nlmsg_parse(nlh, s.get());
        auto it = w.find(nftnl_set_get_str(s.get(), NFTNL_SET_TABLE));
        if (it == w.end() || !it->second.sets.count(set_name)) return Verdict{ENOENT, std::nullopt};
        FakeSet& fs = it->second.sets[set_name];
        for (const auto& e : elems) {
          if (e.key.size() != fs.key_len) return Verdict{EINVAL, e.offset};
          const bool present = fs.elems.count(e.key) != 0;
          if (type == NFT_MSG_NEWSETELEM) {
            if (present && excl) return Verdict{EEXIST, e.offset};
            if (!present) fs.elems[e.key] = e.comment;
          } else {
            if (!present) return Verdict{ENOENT, e.offset};
            fs.elems.erase(e.key);
          }
        }
        return {};
      }
      default:
        return Verdict{EOPNOTSUPP, std::nullopt};
    }
  }

  // Queues one object message answering request 'req'.
  template <typename Obj, typename Build>
  void reply(const nlmsghdr* req, uint16_t type, Obj* obj, Build build, bool multi) {
    testing::Bytes buf(256 * 1024);
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(reinterpret_cast<char*>(buf.data()), type, NFPROTO_INET,
                                          multi ? NLM_F_MULTI : 0, req->nlmsg_seq);
    nlh->nlmsg_pid = portid();
    build(nlh, obj);
    buf.resize(nlh->nlmsg_len);
    push(std::move(buf));
  }
  static void renumber_elements(nlmsghdr* nlh) {
    char* tail = static_cast<char*>(mnl_nlmsg_get_payload_tail(nlh));
    for (auto* a = static_cast<nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
         mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<char*>(a))); a = mnl_attr_next(a)) {
      if (mnl_attr_get_type(a) != NFTA_SET_ELEM_LIST_ELEMENTS) continue;
      char* end = reinterpret_cast<char*>(a) + a->nla_len;
      for (auto* e = static_cast<nlattr*>(mnl_attr_get_payload(a));
           mnl_attr_ok(e, static_cast<int>(end - reinterpret_cast<char*>(e))); e = mnl_attr_next(e)) {
        e->nla_type = static_cast<uint16_t>((e->nla_type & ~NLA_TYPE_MASK) | NFTA_LIST_ELEM);
      }
    }
  }

  void done(const nlmsghdr* req) {
    testing::Bytes buf(64);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = NLMSG_DONE;
    nlh->nlmsg_flags = NLM_F_MULTI;
    nlh->nlmsg_seq = req->nlmsg_seq;
    auto* v = static_cast<int*>(mnl_nlmsg_put_extra_header(nlh, sizeof(int)));
    *v = 0;
    buf.resize(nlh->nlmsg_len);
    push(std::move(buf));
  }

  void get(const nlmsghdr* req) {
    const uint16_t type = req->nlmsg_type & 0xff;
    get_types.push_back(type);
    if (eperm) {
      ack(req, Verdict{EPERM, std::nullopt});
      return;
    }
    switch (type) {
      case NFT_MSG_GETTABLE: {
        netlink::TablePtr q = netlink::make_table();
        nftnl_table_nlmsg_parse(req, q.get());
        FakeTable* t = table(nftnl_table_get_str(q.get(), NFTNL_TABLE_NAME));
        if (t == nullptr) {
          ack(req, Verdict{ENOENT, std::nullopt});
          return;
        }
        netlink::TablePtr o = netlink::make_table();
        nftnl_table_set_str(o.get(), NFTNL_TABLE_NAME, nftnl_table_get_str(q.get(), NFTNL_TABLE_NAME));
        nftnl_table_set_u32(o.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
        nftnl_table_set_u64(o.get(), NFTNL_TABLE_HANDLE, t->handle);
        nftnl_table_set_u32(o.get(), NFTNL_TABLE_FLAGS, t->flags);
        if (!t->comment.empty()) {
          nftnl_udata_buf* ud = nftnl_udata_buf_alloc(256);
          nftnl_udata_put_strz(ud, NFTNL_UDATA_TABLE_COMMENT, t->comment.c_str());
          nftnl_table_set_data(o.get(), NFTNL_TABLE_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud));
          nftnl_udata_buf_free(ud);
        }
        reply(req, NFT_MSG_NEWTABLE, o.get(), nftnl_table_nlmsg_build_payload, false);
        ack(req, Verdict{});
        return;
      }
      case NFT_MSG_GETCHAIN: {
        netlink::ChainPtr q = netlink::make_chain();
        nftnl_chain_nlmsg_parse(req, q.get());
        const std::string tn = nftnl_chain_get_str(q.get(), NFTNL_CHAIN_TABLE);
        FakeTable* t = table(tn);
        if (t != nullptr && t->chain) {
          netlink::ChainPtr o = netlink::make_chain();
          nftnl_chain_set_str(o.get(), NFTNL_CHAIN_TABLE, tn.c_str());
          nftnl_chain_set_str(o.get(), NFTNL_CHAIN_NAME, "forward");
          nftnl_chain_set_u32(o.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
          reply(req, NFT_MSG_NEWCHAIN, o.get(), nftnl_chain_nlmsg_build_payload, true);
        }
        done(req);
        return;
      }
      case NFT_MSG_GETSET: {
        netlink::SetPtr q = netlink::make_set();
        nftnl_set_nlmsg_parse(req, q.get());
        const std::string tn = nftnl_set_get_str(q.get(), NFTNL_SET_TABLE);
        if (FakeTable* t = table(tn)) {
          for (const auto& [name, fs] : t->sets) {
            netlink::SetPtr o = netlink::make_set();
            nftnl_set_set_str(o.get(), NFTNL_SET_TABLE, tn.c_str());
            nftnl_set_set_str(o.get(), NFTNL_SET_NAME, name.c_str());
            nftnl_set_set_u32(o.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
            nftnl_set_set_u32(o.get(), NFTNL_SET_KEY_LEN, fs.key_len);
            reply(req, NFT_MSG_NEWSET, o.get(), nftnl_set_nlmsg_build_payload, true);
          }
        }
        done(req);
        return;
      }
      case NFT_MSG_GETFLOWTABLE: {
        netlink::FlowtablePtr q = netlink::make_flowtable();
        nftnl_flowtable_nlmsg_parse(req, q.get());
        const std::string tn = nftnl_flowtable_get_str(q.get(), NFTNL_FLOWTABLE_TABLE);
        if (FakeTable* t = table(tn)) {
          for (const auto& [name, ft] : t->flowtables) {
            netlink::FlowtablePtr o = netlink::make_flowtable();
            nftnl_flowtable_set_str(o.get(), NFTNL_FLOWTABLE_TABLE, tn.c_str());
            nftnl_flowtable_set_str(o.get(), NFTNL_FLOWTABLE_NAME, name.c_str());
            nftnl_flowtable_set_u32(o.get(), NFTNL_FLOWTABLE_FAMILY, NFPROTO_INET);
            nftnl_flowtable_set_u32(o.get(), NFTNL_FLOWTABLE_FLAGS, ft.flags);
            nftnl_flowtable_set_u32(o.get(), NFTNL_FLOWTABLE_HOOKNUM, NF_NETDEV_INGRESS);
            nftnl_flowtable_set_s32(o.get(), NFTNL_FLOWTABLE_PRIO, 0);
            std::vector<const char*> names;
            for (const auto& d : ft.devices) names.push_back(d.c_str());
            names.push_back(nullptr);
            if (!ft.devices.empty()) nftnl_flowtable_set_array(o.get(), NFTNL_FLOWTABLE_DEVICES, names.data());
            reply(req, NFT_MSG_NEWFLOWTABLE, o.get(), nftnl_flowtable_nlmsg_build_payload, true);
          }
        }
        done(req);
        return;
      }
      case NFT_MSG_GETRULE: {
        netlink::RulePtr q = netlink::make_rule();
        nftnl_rule_nlmsg_parse(req, q.get());
        const std::string tn = nftnl_rule_get_str(q.get(), NFTNL_RULE_TABLE);
        if (FakeTable* t = table(tn)) {
          for (const auto& fr : t->rules) {
            netlink::RulePtr o = netlink::make_rule();
            nftnl_rule_set_str(o.get(), NFTNL_RULE_TABLE, tn.c_str());
            nftnl_rule_set_str(o.get(), NFTNL_RULE_CHAIN, "forward");
            nftnl_rule_set_u32(o.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
            nftnl_rule_set_u64(o.get(), NFTNL_RULE_HANDLE, fr.handle);
            nftnl_udata_buf* ud = nftnl_udata_buf_alloc(256);
            nftnl_udata_put_strz(ud, NFTNL_UDATA_RULE_COMMENT, fr.comment.c_str());
            nftnl_rule_set_data(o.get(), NFTNL_RULE_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud));
            nftnl_udata_buf_free(ud);
            reply(req, NFT_MSG_NEWRULE, o.get(), nftnl_rule_nlmsg_build_payload, true);
          }
        }
        done(req);
        return;
      }
      case NFT_MSG_GETSETELEM: {
        netlink::SetPtr q = netlink::make_set();
        nftnl_set_elems_nlmsg_parse(req, q.get());
        const std::string tn = nftnl_set_get_str(q.get(), NFTNL_SET_TABLE);
        const std::string sn = nftnl_set_get_str(q.get(), NFTNL_SET_NAME);
        FakeSet* fs = set(sn, tn);
        if (fs == nullptr) {
          ack(req, Verdict{ENOENT, std::nullopt});
          return;
        }
        netlink::SetPtr o = netlink::make_set();
        nftnl_set_set_str(o.get(), NFTNL_SET_TABLE, tn.c_str());
        nftnl_set_set_str(o.get(), NFTNL_SET_NAME, sn.c_str());
        nftnl_set_set_u32(o.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
        const bool dump = (req->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
        ++(dump ? element_dumps : element_gets);
        std::optional<std::string> wanted;  // A GET names the element's key.
        if (!dump) {
          nftnl_set_elems_iter* it = nftnl_set_elems_iter_create(q.get());
          if (nftnl_set_elem* e = it ? nftnl_set_elems_iter_next(it) : nullptr) {
            uint32_t len = 0;
            const auto* k = static_cast<const char*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
            if (k != nullptr) wanted = std::string(k, len);
          }
          if (it) nftnl_set_elems_iter_destroy(it);
          if (!wanted || fs->elems.count(*wanted) == 0) {
            ack(req, Verdict{ENOENT, std::nullopt});
            return;
          }
        }
        for (const auto& [k, c] : fs->elems) {
          if (wanted && k != *wanted) continue;
          nftnl_set_elem* e = nftnl_set_elem_alloc();
          nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, k.data(), static_cast<uint32_t>(k.size()));
          if (!c.empty()) {
            nftnl_udata_buf* ud = nftnl_udata_buf_alloc(256);
            nftnl_udata_put_strz(ud, NFTNL_UDATA_SET_ELEM_COMMENT, c.c_str());
            nftnl_set_elem_set(e, NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud));
            nftnl_udata_buf_free(ud);
          }
          nftnl_set_elem_add(o.get(), e);
        }
        // libnftnl numbers the element nests 1..N when it builds a request;
        // the kernel's dumps (and libnftnl's parser) use NFTA_LIST_ELEM for
        // every one.
        reply(req, NFT_MSG_NEWSETELEM, o.get(), nftnl_set_elems_nlmsg_build_payload, dump);
        renumber_elements(reinterpret_cast<nlmsghdr*>(queue.back().bytes.data()));
        if (dump) {
          done(req);
        } else {
          ack(req, Verdict{0, std::nullopt});  // A GET ends with its ack.
        }
        return;
      }
      default:
        ack(req, Verdict{EOPNOTSUPP, std::nullopt});
    }
  }

  uint64_t next_handle_ = 100;
};

// ---------------------------------------------------------------------------
// A fake conntrack table behind ctnetlink
// ---------------------------------------------------------------------------

struct FakeCtState {
  std::vector<netlink::CtEntry> entries;
  size_t gets = 0, deletes = 0, dumps = 0;
  size_t datagrams = 0;  // Requests sent, counted per datagram.
};

void put_tuple(nlmsghdr* nlh, uint16_t type, uint8_t family, uint8_t proto, const Tuple& t) {
  nlattr* tup = mnl_attr_nest_start(nlh, type);
  nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
  if (family == AF_INET) {
    mnl_attr_put(nlh, CTA_IP_V4_SRC, 4, t.src.bytes);
    mnl_attr_put(nlh, CTA_IP_V4_DST, 4, t.dst.bytes);
  } else {
    mnl_attr_put(nlh, CTA_IP_V6_SRC, 16, t.src.bytes);
    mnl_attr_put(nlh, CTA_IP_V6_DST, 16, t.dst.bytes);
  }
  mnl_attr_nest_end(nlh, ip);
  nlattr* pr = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
  mnl_attr_put_u8(nlh, CTA_PROTO_NUM, proto);
  mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(t.src_port));
  mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(t.dst_port));
  mnl_attr_nest_end(nlh, pr);
  mnl_attr_nest_end(nlh, tup);
}

void put_counters(nlmsghdr* nlh, uint16_t type, const netlink::CtCounters& c) {
  nlattr* n = mnl_attr_nest_start(nlh, type);
  mnl_attr_put_u64(nlh, CTA_COUNTERS_PACKETS, htobe64(c.packets));
  mnl_attr_put_u64(nlh, CTA_COUNTERS_BYTES, htobe64(c.bytes));
  mnl_attr_nest_end(nlh, n);
}

std::vector<unsigned char> encode_entry(const netlink::CtEntry& e, uint32_t seq, bool multi) {
  std::vector<unsigned char> buf(4096);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
  nlh->nlmsg_flags = multi ? NLM_F_MULTI : 0;
  nlh->nlmsg_seq = seq;
  auto* g = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  g->nfgen_family = e.conn.family;
  g->version = NFNETLINK_V0;
  put_tuple(nlh, CTA_TUPLE_ORIG, e.conn.family, e.conn.proto, e.conn.orig);
  put_tuple(nlh, CTA_TUPLE_REPLY, e.conn.family, e.conn.proto, e.conn.reply);
  mnl_attr_put_u32(nlh, CTA_STATUS, htonl(e.status));
  mnl_attr_put_u32(nlh, CTA_TIMEOUT, htonl(100));
  mnl_attr_put_u32(nlh, CTA_ID, htonl(e.id));
  if (e.conn.zone != 0) mnl_attr_put_u16(nlh, CTA_ZONE, htons(e.conn.zone));
  if (e.orig_counters) put_counters(nlh, CTA_COUNTERS_ORIG, *e.orig_counters);
  if (e.reply_counters) put_counters(nlh, CTA_COUNTERS_REPLY, *e.reply_counters);
  buf.resize(nlh->nlmsg_len);
  return buf;
}

// The original tuple and zone of a get/delete request.
struct CtKey {
  uint8_t family = 0;
  uint8_t proto = 0;
  uint16_t zone = 0;
  Tuple orig{};
};
CtKey decode_request(const nlmsghdr* nlh) {
  CtKey k;
  k.family = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh))->nfgen_family;
  const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  auto walk = [](const nlattr* nest, const std::function<void(const nlattr*)>& f) {
    const char* end = reinterpret_cast<const char*>(nest) + nest->nla_len;
    for (auto* a = static_cast<const nlattr*>(mnl_attr_get_payload(nest));
         mnl_attr_ok(a, static_cast<int>(end - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a)) {
      f(a);
    }
  };
  for (auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
       mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a)) {
    const uint16_t t = mnl_attr_get_type(a);
    if (t == CTA_ZONE) k.zone = ntohs(mnl_attr_get_u16(a));
    if (t != CTA_TUPLE_ORIG) continue;
    walk(a, [&](const nlattr* sub) {
      if (mnl_attr_get_type(sub) == CTA_TUPLE_IP) {
        walk(sub, [&](const nlattr* ip) {
          const uint16_t it = mnl_attr_get_type(ip);
          const size_t n = mnl_attr_get_payload_len(ip);
          if (it == CTA_IP_V4_SRC || it == CTA_IP_V6_SRC) std::memcpy(k.orig.src.bytes, mnl_attr_get_payload(ip), n);
          if (it == CTA_IP_V4_DST || it == CTA_IP_V6_DST) std::memcpy(k.orig.dst.bytes, mnl_attr_get_payload(ip), n);
        });
      } else if (mnl_attr_get_type(sub) == CTA_TUPLE_PROTO) {
        walk(sub, [&](const nlattr* p) {
          if (mnl_attr_get_type(p) == CTA_PROTO_NUM) k.proto = mnl_attr_get_u8(p);
          if (mnl_attr_get_type(p) == CTA_PROTO_SRC_PORT) k.orig.src_port = ntohs(mnl_attr_get_u16(p));
          if (mnl_attr_get_type(p) == CTA_PROTO_DST_PORT) k.orig.dst_port = ntohs(mnl_attr_get_u16(p));
        });
      }
    });
  }
  return k;
}

// A conntrack table behind ctnetlink: the tests' FakeKernel answering
// every message of each datagram in turn, like the kernel.
class FakeCt final : public testing::FakeKernel {
 public:
  explicit FakeCt(FakeCtState* s) : s_(s) {
    on_request = [this](const testing::Bytes& d, FakeKernel&) {
      ++s_->datagrams;
      auto* nlh = reinterpret_cast<const nlmsghdr*>(d.data());
      int rem = static_cast<int>(d.size());
      for (; mnl_nlmsg_ok(nlh, rem); nlh = mnl_nlmsg_next(nlh, &rem)) one(nlh);
    };
  }

 private:
  void one(const nlmsghdr* nlh) {
    const uint8_t type = nlh->nlmsg_type & 0xff;
    if ((nlh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP) {
      ++s_->dumps;
      for (const auto& e : s_->entries) push(encode_entry(e, nlh->nlmsg_seq, true));
      testing::Bytes d(64);
      nlmsghdr* dn = mnl_nlmsg_put_header(d.data());
      dn->nlmsg_type = NLMSG_DONE;
      dn->nlmsg_seq = nlh->nlmsg_seq;
      *static_cast<int*>(mnl_nlmsg_put_extra_header(dn, sizeof(int))) = 0;
      d.resize(dn->nlmsg_len);
      push(std::move(d));
      return;
    }
    const CtKey k = decode_request(nlh);
    auto it = std::find_if(s_->entries.begin(), s_->entries.end(), [&](const netlink::CtEntry& e) {
      return e.conn.family == k.family && e.conn.proto == k.proto && e.conn.zone == k.zone &&
             (same_tuple(e.conn.orig, k.orig) || same_tuple(e.conn.reply, k.orig));
    });
    int err = 0;
    if (it == s_->entries.end()) {
      err = ENOENT;
    } else if (type == IPCTNL_MSG_CT_DELETE) {
      ++s_->deletes;
      s_->entries.erase(it);
    } else {
      ++s_->gets;
      push(encode_entry(*it, nlh->nlmsg_seq, false));
    }
    if (err == 0 && (nlh->nlmsg_flags & NLM_F_ACK) == 0) return;  // Success is acknowledged only when asked.
    testing::Bytes a(256);
    nlmsghdr* an = mnl_nlmsg_put_header(a.data());
    an->nlmsg_type = NLMSG_ERROR;
    an->nlmsg_flags = NLM_F_CAPPED;
    an->nlmsg_seq = nlh->nlmsg_seq;
    auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(an, sizeof(nlmsgerr)));
    e->error = -err;
    e->msg = *nlh;
    a.resize(an->nlmsg_len);
    push(std::move(a));
  }

  FakeCtState* s_;
};

// ---------------------------------------------------------------------------
// Fake devices
// ---------------------------------------------------------------------------

struct FakeDevState {
  std::map<std::string, int> links = {{"eth0", 2},  {"eth1", 3}, {"eth2", 4}, {"veth0", 5},
                                      {"veth1", 6}, {"swp1", 7}, {"swp2", 8}};
  std::set<std::string> hw_tc = {"swp1", "swp2"};
  std::map<std::string, std::string> routes;  // address -> device
  std::vector<netlink::LinkEvent> events;
};

class FakeDevices final : public NftDeviceDirectory {
 public:
  explicit FakeDevices(FakeDevState* s) : s_(s) {}
  Result<int> ifindex(std::string_view name) override {
    auto it = s_->links.find(std::string(name));
    if (it == s_->links.end()) return Status::error(ENODEV, "no device " + std::string(name));
    return it->second;
  }
  Result<std::string> name(int ifindex) override {
    for (const auto& [n, i] : s_->links) {
      if (i == ifindex) return n;
    }
    return Status::error(ENODEV, "no ifindex");
  }
  Result<bool> hw_tc_offload(std::string_view name) override { return s_->hw_tc.count(std::string(name)) != 0; }
  Result<int> route_oif(uint8_t family, const Addr& addr) override {
    auto it = s_->routes.find(format_address(family, addr));
    if (it == s_->routes.end()) return Status::error(ENETUNREACH, "no route");
    return ifindex(it->second);
  }
  void poll_events(const std::function<void(const netlink::LinkEvent&)>& on_event) override {
    auto evs = std::move(s_->events);
    s_->events.clear();
    for (const auto& e : evs) on_event(e);
  }

 private:
  FakeDevState* s_;
};

// ---------------------------------------------------------------------------

class NftFlowtableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    acct_path_ = ::testing::TempDir() + "nft_flowtable_acct_" + std::to_string(getpid());
    usage_dir_ = ::testing::TempDir() + "nft_flowtable_usage_" + std::to_string(getpid()) + "_" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::ofstream(acct_path_) << "0\n";
    dev_.routes["10.2.0.2"] = "eth1";
    dev_.routes["10.1.0.2"] = "eth0";
    dev_.routes["fd00:2::2"] = "eth1";
  }
  void TearDown() override {
    std::remove(acct_path_.c_str());
    std::error_code ec;
    std::filesystem::remove_all(usage_dir_, ec);
  }

  std::shared_ptr<NftFlowtableProvider> make(NftFlowtableOptions o = {}) {
    // Each test has a usage store of its own (the default is /run/ctoffload).
    if (o.usage_dir == NftFlowtableOptions{}.usage_dir) o.usage_dir = usage_dir_;
    NftBackend b;
    // The FakeNft lives in the test; the provider gets a forwarder to it.
    b.nft = std::make_unique<testing::FaultyTransport>(nft_);
    b.ct = std::make_unique<netlink::Ctnetlink>(netlink::Ctnetlink::with_transport(std::make_unique<FakeCt>(&ct_)));
    b.devices = std::make_unique<FakeDevices>(&dev_);
    b.acct_path = acct_path_;
    b.clock = [this] { return clock_; };
    b.conntrack_count = [this]() -> std::optional<size_t> { return ct_count_; };
    auto p = NftFlowtableProvider::create(o, std::move(b));
    EXPECT_TRUE(p.ok()) << p.message();
    return p ? *p : nullptr;
  }
  std::shared_ptr<NftFlowtableProvider> ready(NftFlowtableOptions o = {}) {
    auto p = make(o);
    if (!p) return nullptr;
    const int err = p->init();
    EXPECT_EQ(err, 0) << std::strerror(err);
    return err == 0 ? p : nullptr;
  }

  // A conntrack entry for 'c' with counters.
  void ct_entry(const Conn& c, uint64_t packets, bool counters = true, uint32_t status = 0) {
    netlink::CtEntry e;
    e.conn = c;
    e.status = status;
    e.id = static_cast<uint32_t>(ct_.entries.size() + 1);
    if (counters) {
      e.orig_counters = netlink::CtCounters{packets, packets * 100};
      e.reply_counters = netlink::CtCounters{packets, packets * 100};
    }
    ct_.entries.push_back(e);
  }
  void set_packets(const Conn& c, uint64_t packets) {
    for (auto& e : ct_.entries) {
      if (same_tuple(e.conn.orig, c.orig) && e.conn.zone == c.zone) {
        e.orig_counters = netlink::CtCounters{packets, packets * 100};
        e.reply_counters = netlink::CtCounters{packets, packets * 100};
      }
    }
  }

  void set_status(const Conn& c, uint32_t status) {
    for (auto& e : ct_.entries) {
      if (same_tuple(e.conn.orig, c.orig) && e.conn.zone == c.zone) e.status = status;
    }
  }

  FakeNft nft_;
  FakeCtState ct_;
  FakeDevState dev_;
  long long clock_ = 1'700'000'000'000;
  std::optional<size_t> ct_count_;
  std::string acct_path_;
  std::string usage_dir_;
  const Netdev eth0_ = *make_netdev("eth0");
  const Netdev eth2_ = *make_netdev("eth2");
  const Netdev swp1_ = *make_netdev("swp1");
};

Conn c4(int i) { return tcp4("10.1.0.2", static_cast<uint16_t>(40000 + i), "10.2.0.2", 80); }

// ---------------------------------------------------------------------------

TEST_F(NftFlowtableTest, InitBuildsTheBaselineTableAndTurnsAccountingOn) {
  auto p = ready();
  ASSERT_TRUE(p);
  FakeTable* t = nft_.table();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->comment, "managed by ctoffload; do not edit");
  EXPECT_TRUE(t->chain);
  ASSERT_EQ(t->flowtables.count("ft_sw"), 1u);
  EXPECT_EQ(t->flowtables["ft_sw"].flags, static_cast<uint32_t>(NFT_FLOWTABLE_COUNTER));
  EXPECT_TRUE(t->flowtables["ft_sw"].devices.empty());
  EXPECT_EQ(t->sets.size(), 2u);
  EXPECT_EQ(t->sets["sel4"].key_len, 20u);
  EXPECT_EQ(t->sets["sel6"].key_len, 44u);
  // Two rules per set: original and reply direction.
  ASSERT_EQ(t->rules.size(), 4u);
  EXPECT_EQ(t->rules[0].set, "sel4");
  EXPECT_EQ(t->rules[0].flowtable, "ft_sw");
  EXPECT_EQ(t->rules[1].set, "sel4");
  EXPECT_EQ(nft_.rs.size(), 1u) << "the probe table must be gone";
  std::ifstream acct(acct_path_);
  int v = -1;
  acct >> v;
  EXPECT_EQ(v, 1);
}

TEST_F(NftFlowtableTest, InitOnAKernelWithoutFlowtablesSaysEnoentAndLeavesNothing) {
  nft_.flowtables = false;
  auto p = make();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->init(), ENOENT);
  EXPECT_TRUE(nft_.rs.empty());
  EXPECT_FALSE(p->can_offload(ctx_of(c4(1), &eth0_)));
  EXPECT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), ENOTCONN);
}

TEST_F(NftFlowtableTest, InitWithoutPrivilegesSaysEperm) {
  nft_.eperm = true;
  auto p = make();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->init(), EPERM);
  EXPECT_TRUE(nft_.rs.empty());
}

TEST_F(NftFlowtableTest, InitRefusesATableThatIsNotOurs) {
  nft_.rs["ctoffload"].comment = "someone else's";
  auto p = make();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->init(), EEXIST);
  EXPECT_EQ(nft_.rs["ctoffload"].comment, "someone else's");
  EXPECT_TRUE(nft_.rs["ctoffload"].sets.empty());
}

TEST_F(NftFlowtableTest, CreateRefusesBadOptions) {
  ProviderOptions bad_table(std::map<std::string, std::string>{{"table", "9lives"}});
  EXPECT_EQ(NftFlowtableProvider::create(bad_table).err(), EINVAL);
  ProviderOptions bad_hw(std::map<std::string, std::string>{{"hw_offload", "maybe"}});
  EXPECT_EQ(NftFlowtableProvider::create(bad_hw).err(), EINVAL);
  ProviderOptions bad_cap(std::map<std::string, std::string>{{"capacity", "0"}});
  EXPECT_EQ(NftFlowtableProvider::create(bad_cap).err(), EINVAL);
  ProviderOptions good(std::map<std::string, std::string>{{"table", "ct2"}, {"hw_offload", "off"}, {"capacity", "10"}});
  auto p = NftFlowtableProvider::create(good);
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_EQ((*p)->options().table, "ct2");
  EXPECT_EQ((*p)->options().hw_offload, HwOffload::kOff);
  EXPECT_EQ((*p)->options().capacity, 10u);
}

TEST_F(NftFlowtableTest, ConnAddPutsBothDevicesInTheSoftwareFlowtable) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  EXPECT_EQ(nft_.devices_of("ft_sw"), (std::set<std::string>{"eth0", "eth1"}));
  EXPECT_EQ(nft_.comments("sel4"), std::vector<std::string>{"iif eth0 riif eth1"});
  auto devs = p->devices();
  ASSERT_EQ(devs.size(), 2u);
  for (const auto& d : devs) {
    EXPECT_EQ(d.mode, FtMode::kSw);
    EXPECT_EQ(d.connections, 1u);
    EXPECT_EQ(d.note, "device does not advertise hw-tc-offload");
  }
  ConnStatus st{};
  ASSERT_TRUE(p->conn_query(ctx_of(c4(1), &eth0_), &st));
  EXPECT_STREQ(st.provider, "nft_flowtable");
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_SW);
}

TEST_F(NftFlowtableTest, WithoutAnInputDeviceTheRouteNamesIt) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), nullptr)), 0);
  auto info = p->lookup(c4(1));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->iif, "eth0");
  EXPECT_EQ(info->reply_iif, "eth1");
}

TEST_F(NftFlowtableTest, AutoPutsDevicesAdvertisingHwTcOffloadInTheHardwareFlowtable) {
  dev_.routes["10.2.0.2"] = "swp2";
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &swp1_)), 0);
  FakeTable* t = nft_.table();
  ASSERT_EQ(t->flowtables.count("ft_hw"), 1u);
  EXPECT_EQ(t->flowtables["ft_hw"].flags, static_cast<uint32_t>(NFT_FLOWTABLE_COUNTER | NFT_FLOWTABLE_HW_OFFLOAD));
  EXPECT_EQ(nft_.devices_of("ft_hw"), (std::set<std::string>{"swp1", "swp2"}));
  ASSERT_NE(nft_.set("sel4_hw"), nullptr);
  EXPECT_EQ(nft_.set("sel4_hw")->elems.size(), 1u);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 0u);
  bool rule = false;
  for (const auto& r : t->rules) rule = rule || (r.set == "sel4_hw" && r.flowtable == "ft_hw");
  EXPECT_TRUE(rule);
  // The mode is what the kernel made of the connection: the hardware
  // flowtable was asked for, but only conntrack's HW_OFFLOAD says hw.
  ConnStatus st{};
  ASSERT_TRUE(p->conn_query(ctx_of(c4(1), &swp1_), &st));
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_SW) << "no conntrack entry yet: not in hardware";
  auto info = p->lookup(c4(1));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->flowtable, FtMode::kHw);
  EXPECT_EQ(info->mode, FtMode::kNone);
  ct_entry(c4(1), 5, true, netlink::ct_status::kOffload);
  info = p->lookup(c4(1));
  EXPECT_EQ(info->mode, FtMode::kSw) << "the NIC refused the flow: the software flowtable has it";
  ASSERT_TRUE(p->conn_query(ctx_of(c4(1), &swp1_), &st));
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_SW);
  set_status(c4(1), netlink::ct_status::kOffload | netlink::ct_status::kHwOffload);
  info = p->lookup(c4(1));
  EXPECT_EQ(info->mode, FtMode::kHw);
  ASSERT_TRUE(p->conn_query(ctx_of(c4(1), &swp1_), &st));
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_HW);
}

TEST_F(NftFlowtableTest, HardwareRefusedByTheKernelFallsBackToSoftwareAndSaysWhy) {
  NftFlowtableOptions o;
  o.hw_offload = HwOffload::kOn;
  auto p = ready(o);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  EXPECT_EQ(nft_.devices_of("ft_sw"), (std::set<std::string>{"eth0", "eth1"}));
  EXPECT_TRUE(nft_.devices_of("ft_hw").empty());
  for (const auto& d : p->devices()) {
    EXPECT_EQ(d.mode, FtMode::kSw);
    EXPECT_NE(d.note.find("hardware offload refused"), std::string::npos) << d.note;
    EXPECT_NE(d.note.find("EOPNOTSUPP"), std::string::npos) << d.note;
  }
  ConnStatus st{};
  ASSERT_TRUE(p->conn_query(ctx_of(c4(1), &eth0_), &st));
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_SW);
}

TEST_F(NftFlowtableTest, OffNeverAsksForHardware) {
  NftFlowtableOptions o;
  o.hw_offload = HwOffload::kOff;
  dev_.routes["10.2.0.2"] = "swp2";
  auto p = ready(o);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &swp1_)), 0);
  EXPECT_EQ(nft_.devices_of("ft_sw"), (std::set<std::string>{"swp1", "swp2"}));
  EXPECT_EQ(nft_.table()->flowtables.count("ft_hw"), 0u);
}

TEST_F(NftFlowtableTest, AConnectionMixingHardwareAndSoftwareDevicesUsesSoftware) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &swp1_)), 0);  // reply via eth1: software
  EXPECT_EQ(nft_.devices_of("ft_hw"), std::set<std::string>{"swp1"});
  EXPECT_EQ(nft_.devices_of("ft_sw"), std::set<std::string>{"eth1"});
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 1u);
  EXPECT_EQ(p->lookup(c4(1))->flowtable, FtMode::kSw);
}

TEST_F(NftFlowtableTest, InvalidConnectionsAreRefusedWithoutTouchingTheKernel) {
  auto p = ready();
  ASSERT_TRUE(p);
  const FakeRuleset before = nft_.rs;
  const size_t batches = nft_.batches;
  Conn zero_port = c4(1);
  zero_port.orig.dst_port = 0;
  EXPECT_EQ(p->conn_add(ctx_of(zero_port, &eth0_)), EINVAL);
  Conn sctp = c4(2);
  sctp.proto = IPPROTO_SCTP;
  EXPECT_EQ(p->conn_add(ctx_of(sctp, &eth0_)), EPROTONOSUPPORT);
  EXPECT_FALSE(p->can_offload(ctx_of(sctp, &eth0_)));
  const Netdev ghost = *make_netdev("ghost0");
  EXPECT_EQ(p->conn_add(ctx_of(c4(3), &ghost)), ENODEV);
  const Netdev by_index = *make_netdev("", 99);
  EXPECT_EQ(p->conn_add(ctx_of(c4(4), &by_index)), ENODEV);
  EXPECT_EQ(nft_.batches, batches);
  EXPECT_EQ(nft_.devices_of("ft_sw"), before.at("ctoffload").flowtables.at("ft_sw").devices);
  EXPECT_EQ(p->size(), 0u);
  EXPECT_TRUE(p->devices().empty() || p->devices()[0].connections == 0);
}

TEST_F(NftFlowtableTest, CapacityIsEnforcedWithEnospcAndNothingEvicted) {
  NftFlowtableOptions o;
  o.capacity = 2;
  auto p = ready(o);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(c4(2), &eth0_)), 0);
  EXPECT_FALSE(p->can_offload(ctx_of(c4(3), &eth0_)));
  EXPECT_EQ(p->conn_add(ctx_of(c4(3), &eth0_)), ENOSPC);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 2u);
  p->conn_del(ctx_of(c4(1), &eth0_));
  EXPECT_EQ(p->conn_add(ctx_of(c4(3), &eth0_)), 0);
}

TEST_F(NftFlowtableTest, AKernelRefusalLeavesNoDeviceOrRecordBehind) {
  auto p = ready();
  ASSERT_TRUE(p);
  // The element is already in the kernel (someone else's): EEXIST.
  uint8_t key[44];
  const size_t n = nft::build_key(c4(1), key);
  nft_.set("sel4")->elems[std::string(reinterpret_cast<char*>(key), n)] = "";
  EXPECT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), EEXIST);
  EXPECT_TRUE(nft_.devices_of("ft_sw").empty()) << "devices added for the connection must leave again";
  EXPECT_EQ(p->size(), 0u);
  EXPECT_FALSE(p->lookup(c4(1)).has_value());
}

TEST_F(NftFlowtableTest, ABatchIsOneElementTransactionWithAResultPerOp) {
  NftFlowtableOptions o;
  o.capacity = 6;
  auto p = ready(o);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(0), &eth0_)), 0);  // devices in place
  uint8_t key[44];
  const size_t n = nft::build_key(c4(3), key);
  nft_.set("sel4")->elems[std::string(reinterpret_cast<char*>(key), n)] = "";  // kernel-side duplicate

  std::vector<Conn> conns = {c4(1), c4(2), c4(3), c4(4), c4(5), c4(6), c4(7)};
  conns[1].orig.src_port = 0;  // invalid
  std::vector<Op> ops(conns.size() + 1);
  for (size_t i = 0; i < conns.size(); ++i) {
    ops[i].type = CT_OFFLOAD_OP_ADD;
    ops[i].ctx = ctx_of(conns[i], &eth0_);
  }
  ops.back().type = CT_OFFLOAD_OP_ADD;  // c4(1) again: held by the time it runs
  ops.back().ctx = ctx_of(conns[0], &eth0_);
  const size_t before = nft_.element_batches;
  p->batch_submit(ops);
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[1].error, EINVAL);
  EXPECT_EQ(ops[2].error, EEXIST);  // refused by the kernel, only this one
  EXPECT_EQ(ops[3].error, 0);
  EXPECT_EQ(ops[4].error, 0);
  EXPECT_EQ(ops[5].error, 0);
  EXPECT_EQ(ops[6].error, ENOSPC);  // capacity 6: c4(0) + five more counted
  EXPECT_EQ(ops[7].error, EEXIST);
  EXPECT_EQ(p->size(), 5u);
  // One transaction for the elements, one more for the resubmission after
  // the kernel's EEXIST, one for the second segment (the repeated connection
  // is not sent at all).
  EXPECT_EQ(nft_.element_batches - before, 2u);
}

TEST_F(NftFlowtableTest, AddDeleteAddOfOneConnectionInABatchKeepsOrder) {
  auto p = ready();
  ASSERT_TRUE(p);
  std::vector<Op> ops(3);
  const Conn c = c4(1);
  ops[0].type = CT_OFFLOAD_OP_ADD;
  ops[1].type = CT_OFFLOAD_OP_DEL;
  ops[2].type = CT_OFFLOAD_OP_ADD;
  for (auto& op : ops) op.ctx = ctx_of(c, &eth0_);
  p->batch_submit(ops);
  for (const auto& op : ops) EXPECT_EQ(op.error, 0);
  EXPECT_EQ(p->size(), 1u);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 1u);
}

TEST_F(NftFlowtableTest, LostAcksOfCommittedAddsAreSettledByReadingTheKernelBack) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(0), &eth0_)), 0);
  nft_.lose_next_element_acks = true;
  std::vector<Conn> conns = {c4(1), c4(2), c4(3)};
  std::vector<Op> ops(conns.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    ops[i].type = CT_OFFLOAD_OP_ADD;
    ops[i].ctx = ctx_of(conns[i], &eth0_);
  }
  const size_t gets = nft_.get_types.size();
  p->batch_submit(ops);
  EXPECT_FALSE(nft_.lose_next_element_acks);
  for (const auto& op : ops) EXPECT_EQ(op.error, 0) << std::strerror(op.error);
  EXPECT_EQ(p->size(), 4u);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 4u);
  EXPECT_GT(nft_.get_types.size(), gets) << "the outcome was read back, not guessed";
  // Nothing was sent twice: a second add of one of them is a duplicate.
  EXPECT_EQ(p->conn_add(ctx_of(c4(2), &eth0_)), EEXIST);
}

TEST_F(NftFlowtableTest, LostAcksOfCommittedDeletesAreSettledByReadingTheKernelBack) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(c4(2), &eth0_)), 0);
  nft_.lose_next_element_acks = true;
  p->conn_del(ctx_of(c4(1), &eth0_));
  EXPECT_FALSE(nft_.lose_next_element_acks);
  EXPECT_EQ(p->size(), 1u);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 1u);
  EXPECT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
}

TEST_F(NftFlowtableTest, LostAcksOfAnAbortedBatchGiveEachAddItsTrueResult) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(0), &eth0_)), 0);
  // Somebody else's element for connection 2 (no comment): the kernel
  // aborts the batch, and the acks saying so are lost.
  uint8_t key[64];
  const size_t n = nft::build_key(c4(2), key);
  nft_.set("sel4")->elems[std::string(reinterpret_cast<const char*>(key), n)] = "";
  nft_.lose_next_element_acks = true;
  std::vector<Conn> conns = {c4(1), c4(2), c4(3)};
  std::vector<Op> ops(conns.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    ops[i].type = CT_OFFLOAD_OP_ADD;
    ops[i].ctx = ctx_of(conns[i], &eth0_);
  }
  p->batch_submit(ops);
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[1].error, EEXIST);
  EXPECT_EQ(ops[2].error, 0);
  EXPECT_EQ(p->size(), 3u);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 4u);
  EXPECT_FALSE(p->lookup(c4(2)));
}

TEST_F(NftFlowtableTest, AKernelRefusedDeleteKeepsTheConnectionAndSaysSo) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  ct_entry(c4(1), 5);
  nft_.eperm = true;
  Op del{};
  del.type = CT_OFFLOAD_OP_DEL;
  const Conn c = c4(1);
  del.ctx = ctx_of(c, &eth0_);
  p->batch_submit(std::span<Op>(&del, 1));
  p->flush();
  nft_.eperm = false;
  EXPECT_EQ(del.error, EPERM);
  EXPECT_EQ(p->size(), 1u) << "neither the delete nor the flush happened";
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 1u);
  EXPECT_EQ(ct_.deletes, 0u) << "the conntrack entry stays with the element";
  p->conn_del(ctx_of(c4(1), &eth0_));
  EXPECT_EQ(p->size(), 0u);
  EXPECT_TRUE(nft_.set("sel4")->elems.empty());
}

TEST_F(NftFlowtableTest, ADeleteThatMeetsADeletedTableRestoresTheRest) {
  NftFlowtableOptions o;
  o.verify_ms = 3'600'000;  // only the delete's ENOENT can tell
  auto p = ready(o);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(c4(2), &eth0_)), 0);
  nft_.rs.erase("ctoffload");
  p->conn_del(ctx_of(c4(1), &eth0_));
  EXPECT_EQ(p->size(), 1u);
  ASSERT_NE(nft_.table(), nullptr) << "the table comes back at once";
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 1u);
}

TEST_F(NftFlowtableTest, ConnDelRemovesTheElementAndTheConntrackEntry) {
  auto p = ready();
  ASSERT_TRUE(p);
  ct_entry(c4(1), 10);
  ct_entry(c4(2), 10);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  p->conn_del(ctx_of(c4(1), &eth0_));
  EXPECT_TRUE(nft_.set("sel4")->elems.empty());
  EXPECT_EQ(ct_.deletes, 1u);
  ASSERT_EQ(ct_.entries.size(), 1u);
  EXPECT_TRUE(same_conn(ct_.entries[0].conn, c4(2))) << "only our connection's entry goes";
  // Unknown connections are ignored: nothing of theirs is deleted.
  p->conn_del(ctx_of(c4(2), &eth0_));
  EXPECT_EQ(ct_.entries.size(), 1u);
}

TEST_F(NftFlowtableTest, ABatchOfDeletesEndsItsConntrackEntriesAWindowPerDatagram) {
  auto p = ready();
  ASSERT_TRUE(p);
  constexpr int kN = 600;  // Three windows of conntrack deletes.
  std::vector<Op> ops(kN);
  std::vector<Conn> conns;
  for (int i = 0; i < kN; ++i) conns.push_back(c4(i));
  for (int i = 0; i < kN; ++i) {
    if (i % 2 == 0) ct_entry(conns[static_cast<size_t>(i)], 1);  // The odd ones have none left.
    ops[static_cast<size_t>(i)].type = CT_OFFLOAD_OP_ADD;
    ops[static_cast<size_t>(i)].ctx = ctx_of(conns[static_cast<size_t>(i)], &eth0_);
  }
  const Conn foreign = tcp4("10.7.0.1", 1, "10.7.0.2", 2);
  ct_entry(foreign, 1);
  p->batch_submit(ops);
  for (const Op& op : ops) ASSERT_EQ(op.error, 0);
  ASSERT_EQ(p->size(), static_cast<size_t>(kN));

  for (Op& op : ops) op.type = CT_OFFLOAD_OP_DEL;
  const size_t before = ct_.datagrams;
  p->batch_submit(ops);
  for (const Op& op : ops) EXPECT_EQ(op.error, 0);
  EXPECT_EQ(p->size(), 0u);
  EXPECT_TRUE(nft_.set("sel4")->elems.empty());
  EXPECT_EQ(ct_.deletes, static_cast<size_t>(kN / 2));
  ASSERT_EQ(ct_.entries.size(), 1u);
  EXPECT_TRUE(same_conn(ct_.entries[0].conn, foreign)) << "only our connections' entries go";
  const size_t windows = (kN + netlink::Ctnetlink::kRemoveWindow - 1) / netlink::Ctnetlink::kRemoveWindow;
  EXPECT_EQ(ct_.datagrams - before, windows) << "one datagram per window, not one per connection";
}

TEST_F(NftFlowtableTest, LastUsedFollowsCountersFromOneCachedDump) {
  NftFlowtableOptions o;
  o.refresh_ms = 200;
  auto p = ready(o);
  ASSERT_TRUE(p);
  constexpr int kN = 50;
  for (int i = 0; i < kN; ++i) {
    ct_entry(c4(i), 5);
    ASSERT_EQ(p->conn_add(ctx_of(c4(i), &eth0_)), 0);
  }
  const size_t dumps0 = ct_.dumps;
  for (int i = 0; i < kN; ++i) EXPECT_EQ(p->conn_update(ctx_of(c4(i), &eth0_)), 0) << "baseline only";
  EXPECT_EQ(ct_.dumps - dumps0, 1u) << "asking for every connection must cost one dump";
  EXPECT_EQ(ct_.gets, 0u);

  set_packets(c4(7), 9);
  clock_ += 100;
  EXPECT_EQ(p->conn_update(ctx_of(c4(7), &eth0_)), 0) << "still cached";
  clock_ += 150;
  EXPECT_EQ(p->conn_update(ctx_of(c4(7), &eth0_)), clock_);
  EXPECT_EQ(p->conn_update(ctx_of(c4(8), &eth0_)), 0) << "idle since the baseline";
  EXPECT_EQ(ct_.dumps - dumps0, 2u);
  const long long used = clock_;
  clock_ += 1000;
  EXPECT_EQ(p->conn_update(ctx_of(c4(7), &eth0_)), used) << "idle: stays";
  set_packets(c4(7), 12);
  clock_ += 1000;
  EXPECT_EQ(p->conn_update(ctx_of(c4(7), &eth0_)), clock_);
}

// A process whose capacity is below what the table holds does not trim the
// table: a full adoption refuses to start, a lazy one works on what it is
// asked about and says its listing is incomplete.
TEST_F(NftFlowtableTest, AdoptionBeyondCapacityRemovesNothing) {
  {
    auto big = ready();
    ASSERT_TRUE(big);
    for (int i = 0; i < 4; ++i) ASSERT_EQ(big->conn_add(ctx_of(c4(i), &eth0_)), 0);
  }
  ASSERT_EQ(nft_.set("sel4")->elems.size(), 4u);
  NftFlowtableOptions small;
  small.capacity = 2;
  small.adopt = AdoptMode::kFull;
  auto full = make(small);
  ASSERT_TRUE(full);
  EXPECT_EQ(full->init(), ENOSPC);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 4u) << "nothing may be removed";
  small.adopt = AdoptMode::kLazy;
  auto lazy = ready(small);
  ASSERT_TRUE(lazy);
  EXPECT_TRUE(lazy->lookup(c4(3)).has_value());
  EXPECT_EQ(lazy->entries().size(), 2u);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 4u) << "nothing may be removed";
}

// A one-shot command is a new process: it learns last used from the
// readings earlier processes of the table left in the usage store.
TEST_F(NftFlowtableTest, LastUsedCarriesOverToTheNextProcessOfTheTable) {
  NftFlowtableOptions o;
  o.refresh_ms = 0;
  ct_entry(c4(1), 5);
  ct_entry(c4(2), 5);
  {
    auto first = ready(o);
    ASSERT_TRUE(first);
    ASSERT_EQ(first->conn_add(ctx_of(c4(1), &eth0_)), 0);
    ASSERT_EQ(first->conn_add(ctx_of(c4(2), &eth0_)), 0);
    EXPECT_EQ(first->conn_update(ctx_of(c4(1), &eth0_)), 0) << "the first reading ever is unknown";
  }
  // Traffic between the two processes.
  set_packets(c4(1), 9);
  clock_ += 5000;
  auto second = ready(o);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->conn_update(ctx_of(c4(1), &eth0_)), clock_) << "moved since the first process read it";
  EXPECT_EQ(second->conn_update(ctx_of(c4(2), &eth0_)), 0) << "read once (by the first), never seen moving";
  const long long used = clock_;
  clock_ += 5000;
  auto third = ready(o);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->conn_update(ctx_of(c4(1), &eth0_)), used) << "idle since: the time stays";
  auto all = third->entries();
  ASSERT_EQ(all.size(), 2u);
  for (const auto& e : all) EXPECT_EQ(e.last_used_ms, same_conn(e.conn, c4(1)) ? used : 0) << format_conn(e.conn);
  // Deleted, the connection's history goes with it.
  third->conn_del(ctx_of(c4(1), &eth0_));
  ct_entry(c4(1), 9);
  ASSERT_EQ(third->conn_add(ctx_of(c4(1), &eth0_)), 0);
  EXPECT_EQ(third->conn_update(ctx_of(c4(1), &eth0_)), 0) << "a new connection's first reading";
}

// Readings of connections that left the table some other way than our
// conn_del are dropped by the next process that reads the whole table.
TEST_F(NftFlowtableTest, FullAdoptionDropsReadingsOfConnectionsNoLongerHeld) {
  NftFlowtableOptions o;
  o.refresh_ms = 0;
  ct_entry(c4(1), 5);
  {
    auto first = ready(o);
    ASSERT_TRUE(first);
    ASSERT_EQ(first->conn_add(ctx_of(c4(1), &eth0_)), 0);
    EXPECT_EQ(first->conn_update(ctx_of(c4(1), &eth0_)), 0);
  }
  UsageStoreOptions uo;
  uo.dir = usage_dir_;
  uo.table = o.table;
  auto store = UsageStore::open(uo);
  ASSERT_TRUE(store.ok()) << store.message();
  {
    auto session = store->lock();
    ASSERT_TRUE(session.ok());
    (void)session->observe(c4(2), 7, 3, clock_);  // A connection this table does not hold.
    EXPECT_EQ(session->size(), 2u);
  }
  o.adopt = AdoptMode::kFull;
  auto second = ready(o);  // Full adoption.
  ASSERT_TRUE(second);
  auto session = store->lock();
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->size(), 1u);
  EXPECT_EQ(session->peek(c4(2)), 0);
}

TEST_F(NftFlowtableTest, WithoutAUsageStoreLastUsedStaysInTheProcess) {
  NftFlowtableOptions o;
  o.refresh_ms = 0;
  o.usage_dir = "";
  ct_entry(c4(1), 5);
  {
    auto first = ready(o);
    ASSERT_TRUE(first);
    ASSERT_EQ(first->conn_add(ctx_of(c4(1), &eth0_)), 0);
    EXPECT_EQ(first->conn_update(ctx_of(c4(1), &eth0_)), 0);
  }
  set_packets(c4(1), 9);
  clock_ += 5000;
  auto second = ready(o);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->conn_update(ctx_of(c4(1), &eth0_)), 0) << "no shared readings: this is a first reading";
  EXPECT_FALSE(std::filesystem::exists(usage_dir_));
}

TEST_F(NftFlowtableTest, ConnectionsWithoutCountersReportUnknown) {
  auto p = ready();
  ASSERT_TRUE(p);
  ct_entry(c4(1), 0, /*counters=*/false);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  clock_ += 1000;
  EXPECT_EQ(p->conn_update(ctx_of(c4(1), &eth0_)), 0);
  clock_ += 1000;
  EXPECT_EQ(p->conn_update(ctx_of(c4(1), &eth0_)), 0);
  auto info = p->lookup(c4(1));
  ASSERT_TRUE(info.has_value());
  EXPECT_TRUE(info->in_conntrack);
  EXPECT_FALSE(info->has_counters);
  EXPECT_EQ(info->last_used_ms, 0);
}

TEST_F(NftFlowtableTest, FewConnectionsAmongManyAreReadWithGets) {
  auto p = ready();
  ASSERT_TRUE(p);
  ct_count_ = 100000;
  ct_entry(c4(1), 3);
  ct_entry(c4(2), 3);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(c4(2), &eth0_)), 0);
  const size_t dumps = ct_.dumps, gets = ct_.gets;
  clock_ += 1000;
  (void)p->conn_update(ctx_of(c4(1), &eth0_));
  EXPECT_EQ(ct_.dumps, dumps);
  EXPECT_EQ(ct_.gets - gets, 2u);
}

TEST_F(NftFlowtableTest, EntriesReportConntrackStateForTheCli) {
  auto p = ready();
  ASSERT_TRUE(p);
  ct_entry(c4(1), 7, true, netlink::ct_status::kOffload | netlink::ct_status::kAssured);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(udp6("fd00:1::2", 5, "fd00:2::2", 53, 4), &eth0_)), 0);
  auto all = p->entries();
  ASSERT_EQ(all.size(), 2u);
  for (const auto& e : all) {
    if (e.conn.family == AF_INET) {
      EXPECT_TRUE(e.offloaded);
      EXPECT_FALSE(e.hw_offloaded);
      EXPECT_EQ(e.packets, 14u);
      EXPECT_EQ(e.bytes, 1400u);
      EXPECT_EQ(e.iif, "eth0");
      EXPECT_EQ(e.reply_iif, "eth1");
    } else {
      EXPECT_FALSE(e.in_conntrack);
      EXPECT_EQ(e.conn.zone, 4);
    }
  }
}

TEST_F(NftFlowtableTest, ADeletedTableIsRestoredWithEveryConnection) {
  NftFlowtableOptions o;
  o.verify_ms = 0;
  auto p = ready(o);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(udp6("fd00:1::2", 5, "fd00:2::2", 53, 4), &eth0_)), 0);
  nft_.rs.clear();  // nft flush ruleset
  (void)p->conn_update(ctx_of(c4(1), &eth0_));
  FakeTable* t = nft_.table();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->comment, "managed by ctoffload; do not edit");
  EXPECT_EQ(nft_.devices_of("ft_sw"), (std::set<std::string>{"eth0", "eth1"}));
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 1u);
  ASSERT_NE(nft_.set("sel6_z4"), nullptr);
  EXPECT_EQ(nft_.set("sel6_z4")->elems.size(), 1u);
  EXPECT_EQ(t->rules.size(), 6u);  // Two per set.
}

TEST_F(NftFlowtableTest, AReaderAloneRestoresADeletedTable) {
  // `ctoffloadctl watch` only reads; it must still notice the flush.
  NftFlowtableOptions o;
  o.verify_ms = 0;
  auto p = ready(o);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  nft_.rs.clear();
  EXPECT_EQ(p->entries().size(), 1u);
  ASSERT_NE(nft_.table(), nullptr) << "entries() did not restore the flushed table";
  ASSERT_NE(nft_.set("sel4"), nullptr);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 1u);
}

TEST_F(NftFlowtableTest, AnAddThatMeetsAMissingSetRestoresAndSucceeds) {
  NftFlowtableOptions o;
  o.verify_ms = 1'000'000;  // no periodic check: the kernel's ENOENT must do
  auto p = ready(o);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  nft_.table()->sets.erase("sel4");
  nft_.table()->rules.erase(nft_.table()->rules.begin());
  EXPECT_EQ(p->conn_add(ctx_of(c4(2), &eth0_)), 0);
  ASSERT_NE(nft_.set("sel4"), nullptr);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 2u);
}

// The default adoption reads nothing of a table at init: one GET per
// connection an operation names, and the whole table only for a listing.
TEST_F(NftFlowtableTest, LazyAdoptionReadsOnlyTheConnectionsNamed) {
  {
    auto p = ready();
    ASSERT_TRUE(p);
    for (int i = 0; i < 50; ++i) ASSERT_EQ(p->conn_add(ctx_of(c4(i), &eth0_)), 0);
  }
  nft_.element_dumps = nft_.element_gets = 0;
  auto q = ready();
  ASSERT_TRUE(q);
  EXPECT_EQ(nft_.element_dumps, 0u) << "init read no set";
  EXPECT_EQ(q->size(), 0u);
  auto info = q->lookup(c4(7));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->iif, "eth0");
  EXPECT_EQ(nft_.element_dumps, 0u);
  EXPECT_EQ(nft_.element_gets, 1u) << "one GET in the one set it could be in (no ft_hw here)";
  EXPECT_EQ(q->conn_add(ctx_of(c4(8), &eth0_)), EEXIST) << "held already: found by its GET";
  q->conn_del(ctx_of(c4(9), &eth0_));
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 49u);
  EXPECT_EQ(nft_.element_dumps, 0u);
  EXPECT_EQ(q->entries().size(), 49u) << "a listing reads the whole table";
  EXPECT_EQ(nft_.element_dumps, 2u) << "one dump per set (sel4, sel6)";
}

// Adding to a lazily adopted table costs no lookup: the kernel's EEXIST
// (NLM_F_EXCL) says what is there already, and only that is read.
TEST_F(NftFlowtableTest, LazyProcessAddsWithoutLookingUpAndAdoptsWhatTheKernelHas) {
  {
    auto p = ready();
    ASSERT_TRUE(p);
    for (int i = 0; i < 50; ++i) ASSERT_EQ(p->conn_add(ctx_of(c4(i), &eth0_)), 0);
  }
  nft_.element_dumps = nft_.element_gets = 0;
  auto q = ready();
  ASSERT_TRUE(q);
  for (int i = 50; i < 70; ++i) EXPECT_EQ(q->conn_add(ctx_of(c4(i), &eth0_)), 0) << i;
  EXPECT_EQ(nft_.element_gets, 0u) << "new connections: the kernel says they are new";
  EXPECT_EQ(q->size(), 20u);
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 70u);
  // One the table held already: EEXIST from the kernel, then adopted with
  // one GET, so that this process can delete it.
  EXPECT_EQ(q->conn_add(ctx_of(c4(3), &eth0_)), EEXIST);
  EXPECT_EQ(nft_.element_gets, 1u);
  EXPECT_EQ(q->size(), 21u);
  ASSERT_TRUE(q->lookup(c4(3)).has_value());
  EXPECT_EQ(nft_.element_gets, 1u) << "known now";
  q->conn_del(ctx_of(c4(3), &eth0_));
  EXPECT_EQ(nft_.set("sel4")->elems.size(), 69u);
  EXPECT_EQ(nft_.element_dumps, 0u);
}

TEST_F(NftFlowtableTest, ANewProcessAdoptsConnectionsDevicesAndNat) {
  auto nat = make_conn(IPPROTO_TCP, *parse_endpoint("10.1.0.2:40002"), *parse_endpoint("10.1.0.1:8080"),
                       *parse_endpoint("10.2.0.2:80"), *parse_endpoint("10.1.0.2:40002"));
  ASSERT_TRUE(nat.ok());
  {
    auto p = ready();
    ASSERT_TRUE(p);
    ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
    ASSERT_EQ(p->conn_add(ctx_of(*nat, &eth0_)), 0);
    ASSERT_EQ(p->conn_add(ctx_of(udp6("fd00:1::2", 5, "fd00:2::2", 53, 4), &eth0_)), 0);
  }
  const FakeRuleset before = nft_.rs;
  const size_t committed = nft_.committed;
  NftFlowtableOptions full;
  full.adopt = AdoptMode::kFull;
  auto q = ready(full);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->size(), 3u);
  auto info = q->lookup(*nat);
  ASSERT_TRUE(info.has_value());
  EXPECT_TRUE(same_conn(info->conn, *nat));
  EXPECT_EQ(info->iif, "eth0");
  EXPECT_EQ(info->reply_iif, "eth1");
  EXPECT_EQ(nft_.committed - committed, 1u) << "only the probe's transaction: an intact table is left alone";
  EXPECT_EQ(nft_.devices_of("ft_sw"), before.at("ctoffload").flowtables.at("ft_sw").devices);
  for (const auto& d : q->devices()) EXPECT_EQ(d.connections, 3u) << d.name;
  EXPECT_EQ(q->conn_add(ctx_of(c4(1), &eth0_)), EEXIST);
}

TEST_F(NftFlowtableTest, ConnEstablishedMovesTheReplyDevice) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);  // route guesses eth1
  p->conn_established(ctx_of(c4(1), &eth2_));
  EXPECT_EQ(p->lookup(c4(1))->reply_iif, "eth2");
  EXPECT_EQ(nft_.comments("sel4"), std::vector<std::string>{"iif eth0 riif eth2"});
  EXPECT_TRUE(nft_.devices_of("ft_sw").count("eth2"));
  for (const auto& d : p->devices()) EXPECT_EQ(d.connections, d.name == "eth1" ? 0u : 1u) << d.name;
}

TEST_F(NftFlowtableTest, ADeviceThatComesBackRejoinsItsFlowtable) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  // eth1 is unplugged: the kernel drops it; then it comes back, new ifindex.
  nft_.unplug("eth1");
  dev_.links.erase("eth1");
  dev_.events.push_back(netlink::LinkEvent{netlink::LinkEventType::kRemoved, 3, "eth1", 0});
  bool absent = false;
  for (const auto& d : p->devices()) absent = absent || (d.name == "eth1" && !d.present && d.mode == FtMode::kNone);
  EXPECT_TRUE(absent);
  nft_.netdevs.insert("eth1");
  dev_.links["eth1"] = 30;
  dev_.events.push_back(netlink::LinkEvent{netlink::LinkEventType::kAdded, 30, "eth1", 0});
  ASSERT_EQ(p->conn_add(ctx_of(c4(2), &eth0_)), 0);
  EXPECT_EQ(nft_.devices_of("ft_sw"), (std::set<std::string>{"eth0", "eth1"}));
  for (const auto& d : p->devices()) {
    EXPECT_TRUE(d.present) << d.name;
    EXPECT_EQ(d.mode, FtMode::kSw) << d.name;
  }
}

TEST_F(NftFlowtableTest, StaleLinkEventsDoNotUndoNewerState) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  // An old "added" event about an ifindex eth1 no longer has.
  dev_.events.push_back(netlink::LinkEvent{netlink::LinkEventType::kChanged, 99, "eth1", 0});
  for (const auto& d : p->devices()) EXPECT_EQ(d.mode, FtMode::kSw) << d.name;
}

TEST_F(NftFlowtableTest, FlushLeavesTheBaselineOnly) {
  auto p = ready();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(udp6("fd00:1::2", 5, "fd00:2::2", 53, 4), &eth0_)), 0);
  const uint64_t old_handle = nft_.table()->handle;
  p->flush();
  FakeTable* t = nft_.table();
  ASSERT_NE(t, nullptr);
  EXPECT_NE(t->handle, old_handle) << "the table was recreated";
  EXPECT_TRUE(t->flowtables["ft_sw"].devices.empty());
  EXPECT_EQ(t->sets.size(), 2u);
  EXPECT_TRUE(t->sets["sel4"].elems.empty());
  EXPECT_EQ(p->size(), 0u);
  EXPECT_TRUE(p->devices().empty());
  EXPECT_EQ(p->conn_add(ctx_of(c4(1), &eth0_)), 0);
}

TEST_F(NftFlowtableTest, HwOffloadOptionTakesAutoOnOffAndBooleans) {
  EXPECT_EQ(*parse_hw_offload("auto"), HwOffload::kAuto);
  EXPECT_EQ(*parse_hw_offload("on"), HwOffload::kOn);
  EXPECT_EQ(*parse_hw_offload("off"), HwOffload::kOff);
  EXPECT_EQ(*parse_hw_offload("true"), HwOffload::kOn);
  EXPECT_EQ(*parse_hw_offload("no"), HwOffload::kOff);
  EXPECT_EQ(parse_hw_offload("maybe").err(), EINVAL);
  EXPECT_EQ(parse_hw_offload("").err(), EINVAL);
}

// Many threads at once: every callback is serialized inside the provider
// (the fakes behind it are not thread-safe, so a race would show under
// ThreadSanitizer), and can_offload never waits for a batch.
TEST_F(NftFlowtableTest, ConcurrencyThreadsAddDeleteQueryAndAskAtOnce) {
  auto p = ready();
  ASSERT_TRUE(p);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const Conn c = tcp4("10.1.0.2", static_cast<uint16_t>(1000 + t * kPerThread + i), "10.2.0.2", 80);
        const Ctx ctx = ctx_of(c, &eth0_);
        if (!p->can_offload(ctx)) failures.fetch_add(1);
        if (p->conn_add(ctx) != 0) failures.fetch_add(1);
        (void)p->conn_update(ctx);
        ConnStatus st{};
        if (!p->conn_query(ctx, &st)) failures.fetch_add(1);
        if (i % 2 == 0) p->conn_del(ctx);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(p->size(), static_cast<size_t>(kThreads * kPerThread / 2));
  EXPECT_EQ(nft_.set("sel4")->elems.size(), static_cast<size_t>(kThreads * kPerThread / 2));
}

TEST_F(NftFlowtableTest, BookkeepingStaysWithin128BytesPerConnection) {
  EXPECT_LE(NftFlowtableProvider::bytes_per_connection(), 128u);
}

}  // namespace
}  // namespace ctoffload
