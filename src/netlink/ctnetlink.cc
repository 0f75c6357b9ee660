// ctnetlink.cc - conntrack entries over ctnetlink, on libnl-3 / libnl-nf-3.
//
// Requests: get and delete are encoded by libnl-nf (an nfnl_ct object and
// nfnl_ct_build_query_request()/nfnl_ct_build_delete_request()); the dump
// request, which libnl-nf cannot filter, is built with libnl's nfnetlink
// message and attribute helpers.
//
// Replies: decoded by a direct one-pass attribute walker straight into a
// reused CtEntry, without allocating; see "Decoding" below for why not
// libnl's decoders (measured about 8x slower on a 100,000-entry dump).
#include "netlink/ctnetlink.h"

#include <arpa/inet.h>
#include <endian.h>
#include <fcntl.h>
#include <linux/netfilter/nf_conntrack_tcp.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netfilter/ct.h>
#include <netlink/netfilter/nfnl.h>
#include <netlink/socket.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "log.h"
#include "netlink/nl_error.h"
#include "netlink/reopen.h"
#include "netlink/request.h"

namespace ctoffload::netlink {
namespace {

std::shared_ptr<spdlog::logger> logger() {
  static const auto l = log::get("ctnetlink");
  return l;
}

constexpr uint16_t ct_msg_type(int subtype) { return static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | subtype); }

// How many times in a row a dump may overflow before dump() gives up.
constexpr int kMaxResyncs = 8;

// Whether a request that failed with 'err' may have left replies queued on
// the socket (lost datagrams, an answer still coming, one too big to read):
// the socket is then replaced so the next request starts clean.
bool may_leave_replies(int err) { return err == ENOBUFS || err == ETIMEDOUT || err == EMSGSIZE; }

// ---- Decoding ----
//
// Entries are decoded by walking their attributes directly, in one pass,
// into the caller's CtEntry.  libnl offers two decoders and both were
// measured on a captured dump of 100,000 entries (user CPU time per full
// decode, best runs, 2-core machine under load):
//   nfnlmsg_ct_parse() (an nfnl_ct object and an nl_addr per address,
//   allocated and freed per entry):                    ~110-180 ms
//   nla_parse() with policies into tables, per nest:   ~110-170 ms
//   this walker:                                        ~13-20 ms
// The decode is then a small part of a dump next to the kernel's own time,
// so the walker is used; libnl still builds every request.

// Where decoding failed: an errno (EBADMSG, EINVAL) and what was wrong.
struct Fault {
  int err = 0;
  const char* where = nullptr;
  const char* what = nullptr;
  explicit operator bool() const { return err != 0; }
};

constexpr Fault kFine{};

// Calls 'visit(type, payload, payload_len)' for each attribute in the
// 'len' bytes at 'p' (type with NLA_F_NESTED and NLA_F_NET_BYTEORDER
// masked off), stopping at the first fault it returns.  An attribute
// shorter than its header or running past the end means the stream was
// cut: EBADMSG.
template <typename Visit>
Fault walk_attrs(const unsigned char* p, size_t len, const char* where, Visit&& visit) {
  while (len >= NLA_HDRLEN) {
    uint16_t alen;
    uint16_t atype;
    std::memcpy(&alen, p, sizeof(alen));
    std::memcpy(&atype, p + sizeof(alen), sizeof(atype));
    if (alen < NLA_HDRLEN || alen > len) return Fault{EBADMSG, where, "an attribute runs past the end"};
    if (Fault f = visit(static_cast<uint16_t>(atype & NLA_TYPE_MASK), p + NLA_HDRLEN, size_t{alen} - NLA_HDRLEN); f) {
      return f;
    }
    const size_t step = NLA_ALIGN(alen);
    if (step >= len) return kFine;  // The last attribute may omit its padding.
    p += step;
    len -= step;
  }
  return len == 0 ? kFine : Fault{EBADMSG, where, "the attributes end in a partial header"};
}

// Values travel in network byte order at 4-byte alignment.
uint16_t get_be16(const unsigned char* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return ntohs(v);
}
uint32_t get_be32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return ntohl(v);
}
uint64_t get_be64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return be64toh(v);
}

// Decodes a CTA_TUPLE_* nest into '*t' and '*proto'; '*zone' is set when
// the tuple carries a directional zone.
Fault parse_tuple(const unsigned char* p, size_t len, uint8_t family, Tuple* t, uint8_t* proto, int* zone,
                  const char* where) {
  *t = Tuple{};
  const size_t alen = family == AF_INET ? 4 : 16;
  const uint16_t src_type = family == AF_INET ? CTA_IP_V4_SRC : CTA_IP_V6_SRC;
  const uint16_t dst_type = family == AF_INET ? CTA_IP_V4_DST : CTA_IP_V6_DST;
  bool have_src = false;
  bool have_dst = false;
  bool have_proto = false;
  Fault f = walk_attrs(p, len, where, [&](uint16_t type, const unsigned char* v, size_t n) -> Fault {
    switch (type) {
      case CTA_TUPLE_IP:
        return walk_attrs(v, n, where, [&](uint16_t ty, const unsigned char* x, size_t m) -> Fault {
          if (ty != src_type && ty != dst_type) return kFine;  // The other family's, or unknown.
          if (m < alen) return Fault{EINVAL, where, "an address is too short for the family"};
          std::memcpy(ty == src_type ? t->src.bytes : t->dst.bytes, x, alen);
          (ty == src_type ? have_src : have_dst) = true;
          return kFine;
        });
      case CTA_TUPLE_PROTO:
        return walk_attrs(v, n, where, [&](uint16_t ty, const unsigned char* x, size_t m) -> Fault {
          switch (ty) {
            case CTA_PROTO_NUM:
              if (m < 1) return Fault{EINVAL, where, "the protocol number is empty"};
              *proto = x[0];
              have_proto = true;
              break;
            // Protocols without ports (ICMP) send other attributes and
            // keep 0 here.
            case CTA_PROTO_SRC_PORT:
            case CTA_PROTO_DST_PORT:
              if (m < 2) return Fault{EINVAL, where, "a port is shorter than 2 bytes"};
              (ty == CTA_PROTO_SRC_PORT ? t->src_port : t->dst_port) = get_be16(x);
              break;
            default:
              break;
          }
          return kFine;
        });
      case CTA_TUPLE_ZONE:
        if (n < 2) return Fault{EINVAL, where, "the zone is shorter than 2 bytes"};
        *zone = get_be16(v);
        return kFine;
      default:
        return kFine;
    }
  });
  if (f) return f;
  if (!have_src || !have_dst) return Fault{EINVAL, where, "an address of the entry's family is missing"};
  if (!have_proto) return Fault{EINVAL, where, "the protocol number is missing"};
  return kFine;
}

Fault parse_counters(const unsigned char* p, size_t len, std::optional<CtCounters>* out, const char* where) {
  CtCounters c;
  bool packets = false;
  bool bytes = false;
  Fault f = walk_attrs(p, len, where, [&](uint16_t ty, const unsigned char* x, size_t m) -> Fault {
    switch (ty) {
      case CTA_COUNTERS_PACKETS:
      case CTA_COUNTERS_BYTES:
        if (m < 8) return Fault{EINVAL, where, "a 64-bit counter is shorter than 8 bytes"};
        (ty == CTA_COUNTERS_PACKETS ? c.packets : c.bytes) = get_be64(x);
        (ty == CTA_COUNTERS_PACKETS ? packets : bytes) = true;
        break;
      case CTA_COUNTERS32_PACKETS:  // Very old kernels.
      case CTA_COUNTERS32_BYTES:
        if (m < 4) return Fault{EINVAL, where, "a 32-bit counter is shorter than 4 bytes"};
        (ty == CTA_COUNTERS32_PACKETS ? c.packets : c.bytes) = get_be32(x);
        (ty == CTA_COUNTERS32_PACKETS ? packets : bytes) = true;
        break;
      default:
        break;
    }
    return kFine;
  });
  if (f) return f;
  if (!packets || !bytes) return Fault{EINVAL, where, "packets or bytes are missing"};
  *out = c;
  return kFine;
}

Fault parse_protoinfo(const unsigned char* p, size_t len, uint8_t* tcp_state) {
  constexpr const char* kWhere = "protocol info";
  return walk_attrs(p, len, kWhere, [&](uint16_t ty, const unsigned char* x, size_t m) -> Fault {
    if (ty != CTA_PROTOINFO_TCP) return kFine;
    return walk_attrs(x, m, kWhere, [&](uint16_t t2, const unsigned char* y, size_t k) -> Fault {
      if (t2 != CTA_PROTOINFO_TCP_STATE) return kFine;
      if (k < 1) return Fault{EINVAL, kWhere, "the TCP state is empty"};
      *tcp_state = y[0];
      return kFine;
    });
  });
}

// Decodes the attributes of one entry (after its nfgenmsg).
Fault parse_entry_attrs(const unsigned char* p, size_t len, CtEntry* entry) {
  Conn& c = entry->conn;
  int zone = -1;
  int orig_zone = -1;
  int reply_zone = -1;
  uint8_t reply_proto = 0;
  bool have_orig = false;
  bool have_reply = false;
  constexpr const char* kWhere = "entry";
  auto need = [](size_t n, size_t want, const char* what) -> Fault {
    return n < want ? Fault{EINVAL, kWhere, what} : kFine;
  };
  Fault f = walk_attrs(p, len, kWhere, [&](uint16_t type, const unsigned char* v, size_t n) -> Fault {
    switch (type) {
      case CTA_TUPLE_ORIG:
        have_orig = true;
        return parse_tuple(v, n, c.family, &c.orig, &c.proto, &orig_zone, "original tuple");
      case CTA_TUPLE_REPLY:
        have_reply = true;
        return parse_tuple(v, n, c.family, &c.reply, &reply_proto, &reply_zone, "reply tuple");
      case CTA_STATUS:
        if (Fault g = need(n, 4, "CTA_STATUS is shorter than 4 bytes"); g) return g;
        entry->status = get_be32(v);
        return kFine;
      case CTA_TIMEOUT:
        if (Fault g = need(n, 4, "CTA_TIMEOUT is shorter than 4 bytes"); g) return g;
        entry->timeout = get_be32(v);
        return kFine;
      case CTA_MARK:
        if (Fault g = need(n, 4, "CTA_MARK is shorter than 4 bytes"); g) return g;
        c.mark = get_be32(v);
        return kFine;
      case CTA_ID:
        if (Fault g = need(n, 4, "CTA_ID is shorter than 4 bytes"); g) return g;
        entry->id = get_be32(v);
        return kFine;
      case CTA_ZONE:
        if (Fault g = need(n, 2, "CTA_ZONE is shorter than 2 bytes"); g) return g;
        zone = get_be16(v);
        return kFine;
      case CTA_COUNTERS_ORIG:
        return parse_counters(v, n, &entry->orig_counters, "original counters");
      case CTA_COUNTERS_REPLY:
        return parse_counters(v, n, &entry->reply_counters, "reply counters");
      case CTA_PROTOINFO:
        return parse_protoinfo(v, n, &entry->tcp_state);
      default:
        return kFine;  // Forward compatibility: unknown attributes are ignored.
    }
  });
  if (f) return f;
  if (!have_orig || !have_reply) return Fault{EINVAL, kWhere, "the original or reply tuple is missing"};
  // The kernel sends CTA_ZONE when the zone covers both directions, and
  // CTA_TUPLE_ZONE inside a tuple when it is set for that direction only.
  if (zone < 0) zone = orig_zone >= 0 ? orig_zone : reply_zone;
  c.zone = static_cast<uint16_t>(zone >= 0 ? zone : 0);
  if (c.proto != IPPROTO_TCP) entry->tcp_state = 0;
  return kFine;
}

const char* const kStatusNames[] = {
    "EXPECTED",     "SEEN_REPLY", "ASSURED",       "CONFIRMED", "SRC_NAT",   "DST_NAT", "SEQ_ADJUST", "SRC_NAT_DONE",
    "DST_NAT_DONE", "DYING",      "FIXED_TIMEOUT", "TEMPLATE",  "UNTRACKED", "HELPER",  "OFFLOAD",    "HW_OFFLOAD",
};

// ---- libnl object helpers ----

struct NlMsgFree {
  void operator()(nl_msg* m) const { nlmsg_free(m); }
};
using NlMsgPtr = std::unique_ptr<nl_msg, NlMsgFree>;

struct CtPut {
  void operator()(nfnl_ct* c) const { nfnl_ct_put(c); }
};
struct AddrPut {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};

Status libnl_status(int nlerr, std::string_view what) {
  int err = nlerr == -NLE_NOMEM ? ENOMEM : (nlerr == -NLE_MSGSIZE ? EMSGSIZE : EINVAL);
  return Status::error(err, std::string(what) + ": " + nl_geterror(nlerr));
}

// Builds a get or delete request for 'key' with libnl-nf's encoder.
Result<NlMsgPtr> build_lookup_request(const Conn& key, int msg_type) {
  if (key.family != AF_INET && key.family != AF_INET6) {
    return Status::error(EINVAL, "conntrack lookup: the key's family is neither AF_INET nor AF_INET6");
  }
  if (key.proto == 0) return Status::error(EINVAL, "conntrack lookup: the key has no protocol");
  std::unique_ptr<nfnl_ct, CtPut> ct(nfnl_ct_alloc());
  if (!ct) return Status::error(ENOMEM, "conntrack lookup: out of memory");
  const size_t alen = key.family == AF_INET ? 4 : 16;
  std::unique_ptr<nl_addr, AddrPut> src(nl_addr_build(key.family, key.orig.src.bytes, alen));
  std::unique_ptr<nl_addr, AddrPut> dst(nl_addr_build(key.family, key.orig.dst.bytes, alen));
  if (!src || !dst) return Status::error(ENOMEM, "conntrack lookup: out of memory");
  nfnl_ct_set_family(ct.get(), key.family);
  nfnl_ct_set_proto(ct.get(), key.proto);
  // nfnl_ct_set_src/dst take their own reference to the address.
  int err = nfnl_ct_set_src(ct.get(), 0, src.get());
  if (err == 0) err = nfnl_ct_set_dst(ct.get(), 0, dst.get());
  if (err < 0) return libnl_status(err, "conntrack lookup");
  if (key.proto == IPPROTO_TCP || key.proto == IPPROTO_UDP || key.proto == IPPROTO_UDPLITE ||
      key.proto == IPPROTO_SCTP || key.proto == IPPROTO_DCCP) {
    nfnl_ct_set_src_port(ct.get(), 0, key.orig.src_port);
    nfnl_ct_set_dst_port(ct.get(), 0, key.orig.dst_port);
  }
  nfnl_ct_set_zone(ct.get(), key.zone);

  nl_msg* raw = nullptr;
  err = msg_type == IPCTNL_MSG_CT_DELETE ? nfnl_ct_build_delete_request(ct.get(), NLM_F_ACK, &raw)
                                         : nfnl_ct_build_query_request(ct.get(), NLM_F_ACK, &raw);
  if (err < 0) return libnl_status(err, "conntrack lookup");
  return NlMsgPtr(raw);
}

// Builds the dump request for 'filter'; with 'kernel_filter' false, only
// the family is left to the kernel.
Result<NlMsgPtr> build_dump_request(const CtFilter& filter, bool kernel_filter) {
  NlMsgPtr msg(nfnlmsg_alloc_simple(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET, NLM_F_DUMP, filter.family, 0));
  if (!msg) return Status::error(ENOMEM, "conntrack dump: out of memory");
  if (!kernel_filter) return msg;
  int err = 0;
  if (filter.mark_mask != 0) {
    err = nla_put_u32(msg.get(), CTA_MARK, htonl(filter.mark & filter.mark_mask));
    if (err == 0) err = nla_put_u32(msg.get(), CTA_MARK_MASK, htonl(filter.mark_mask));
  }
  if (err == 0 && filter.status_mask != 0) {
    err = nla_put_u32(msg.get(), CTA_STATUS, htonl(filter.status & filter.status_mask));
    if (err == 0) err = nla_put_u32(msg.get(), CTA_STATUS_MASK, htonl(filter.status_mask));
  }
  if (err == 0 && filter.zone.has_value() && *filter.zone != 0) {
    err = nla_put_u16(msg.get(), CTA_ZONE, htons(*filter.zone));
    // Linux 5.8-6.5 read CTA_ZONE of a dump only inside a CTA_FILTER
    // request; zero flags ask for no tuple matching.  Later kernels read
    // CTA_ZONE on its own and accept the nest all the same.
    nlattr* nest = err == 0 ? nla_nest_start(msg.get(), CTA_FILTER) : nullptr;
    if (err == 0 && nest == nullptr) err = -NLE_NOMEM;
    if (err == 0) err = nla_put_u32(msg.get(), CTA_FILTER_ORIG_FLAGS, 0);
    if (err == 0) err = nla_put_u32(msg.get(), CTA_FILTER_REPLY_FLAGS, 0);
    if (err == 0) err = nla_nest_end(msg.get(), nest);
  }
  if (err < 0) return libnl_status(err, "conntrack dump request");
  return msg;
}

bool has_kernel_filter(const CtFilter& f) {
  return f.mark_mask != 0 || f.status_mask != 0 || (f.zone.has_value() && *f.zone != 0);
}

std::string describe_key(const Conn& key) { return format_conn(key); }

}  // namespace

// ---- Sockets and the real transport ----

void NlSockFree::operator()(nl_sock* sk) const { nl_socket_free(sk); }

Result<NlSockPtr> open_libnl_socket(int protocol, const NlSocketOptions& options) {
  NlSockPtr sk(nl_socket_alloc());
  if (!sk) return Status::error(ENOMEM, "netlink socket: out of memory");
  // Replies are matched to requests by our own sequence numbers; libnl's
  // automatic ACK requests are not used.
  nl_socket_disable_auto_ack(sk.get());
  int err = nl_connect(sk.get(), protocol);
  if (err < 0) {
    // libnl folds errno into its own codes; the errno of the failed
    // socket()/bind() is still in errno.
    int e = errno != 0 ? errno : EPROTONOSUPPORT;
    return errno_status(e, std::string("open netlink socket (protocol ") + std::to_string(protocol) + ")");
  }
  const int fd = nl_socket_get_fd(sk.get());
  // libnl opens with SOCK_CLOEXEC where the C library has it; make sure.
  (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
  int one = 1;
  if (setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)) != 0) {
    logger()->debug("netlink socket: no extended acks ({}); kernel errors come without an explanation",
                    errno_name(errno));
  }
  if (options.receive_buffer > 0) {
    // Privileged callers are not capped by net.core.rmem_max.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &options.receive_buffer, sizeof(options.receive_buffer)) != 0) {
      (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options.receive_buffer, sizeof(options.receive_buffer));
    }
  }
  if (options.receive_timeout_ms > 0) {
    timeval tv{};
    tv.tv_sec = options.receive_timeout_ms / 1000;
    tv.tv_usec = static_cast<suseconds_t>(options.receive_timeout_ms % 1000) * 1000;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  return sk;
}

namespace {

// A libnl socket behind the Transport seam (transport.h), reporting with
// its errno table.  The socket keeps blocking semantics for libnl's own
// users; receives here do not block (MSG_DONTWAIT) and wait with poll(), so
// the timeout is the caller's, per receive.
class LibnlTransport final : public Transport {
 public:
  LibnlTransport(NlSockPtr sk, int protocol, NlSocketOptions options)
      : sk_(std::move(sk)), protocol_(protocol), options_(options) {}

  using Transport::send;
  Status send(std::span<const iovec> iov) override {
    if (!sk_) return Status::error(EBADF, "send netlink request: no socket (reopening it failed)");
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    msghdr msg{};
    msg.msg_name = &kernel;
    msg.msg_namelen = sizeof(kernel);
    msg.msg_iov = const_cast<iovec*>(iov.data());  // sendmsg does not write through it.
    msg.msg_iovlen = iov.size();
    for (;;) {
      if (::sendmsg(nl_socket_get_fd(sk_.get()), &msg, 0) >= 0) return Status();
      if (errno != EINTR) return errno_status(errno, "send netlink request");
    }
  }

  Result<size_t> receive(std::span<std::byte> buf, int timeout_ms) override {
    if (!sk_) return Status::error(EBADF, "receive netlink reply: no socket (reopening it failed)");
    const int fd = nl_socket_get_fd(sk_.get());
    const int waited = timeout_ms;
    for (;;) {
      // MSG_TRUNC makes recv() report the datagram's real size.
      ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT | MSG_TRUNC);
      if (n >= 0) {
        if (static_cast<size_t>(n) > buf.size()) {
          return Status::error(EMSGSIZE, "receive netlink reply: a " + std::to_string(n) +
                                             "-byte datagram did not fit the receive buffer");
        }
        return static_cast<size_t>(n);
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return errno_status(errno, "receive netlink reply");
      if (timeout_ms == 0) {
        return Status::error(ETIMEDOUT,
                             "receive netlink reply: the kernel did not answer in " + std::to_string(waited) + " ms");
      }
      pollfd pfd{fd, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, timeout_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) return errno_status(errno, "poll netlink socket");
      if (ready == 0) {
        return Status::error(ETIMEDOUT,
                             "receive netlink reply: the kernel did not answer in " + std::to_string(waited) + " ms");
      }
      timeout_ms = 0;  // Readable now: the next recv either succeeds or says why.
    }
  }

  uint32_t portid() const override { return sk_ ? nl_socket_get_local_port(sk_.get()) : 0; }

  size_t max_send_bytes() const override {
    // netlink_sendmsg() refuses a datagram longer than sk_sndbuf - 32.
    const size_t sndbuf = int_option(SO_SNDBUF);
    return sndbuf > 32 ? sndbuf - 32 : 0;
  }

  size_t receive_buffer_bytes() const override { return int_option(SO_RCVBUF); }

  Status reopen() override {
    // The old socket is closed first.  Opened first, the new one could get
    // the number of a descriptor that was closed under us, and closing the
    // old one would then close the new one.
    sk_.reset();
    auto fresh = open_libnl_socket(protocol_, options_);
    if (!fresh) return fresh.status();
    sk_ = std::move(*fresh);
    return Status();
  }

 private:
  size_t int_option(int name) const {
    if (!sk_) return 0;
    int value = 0;
    socklen_t len = sizeof(value);
    if (getsockopt(nl_socket_get_fd(sk_.get()), SOL_SOCKET, name, &value, &len) != 0 || value < 0) return 0;
    return static_cast<size_t>(value);
  }

  NlSockPtr sk_;
  int protocol_;
  NlSocketOptions options_;
};

}  // namespace

// ------------------------------------------------------------------------

std::string format_ct_status(uint32_t status) {
  std::string out;
  for (uint32_t bit = 0; bit < 32; ++bit) {
    if ((status & (1u << bit)) == 0) continue;
    if (!out.empty()) out += '|';
    if (bit < std::size(kStatusNames)) {
      out += kStatusNames[bit];
    } else {
      out += "BIT" + std::to_string(bit);
    }
  }
  return out;
}

bool ct_filter_match(const CtFilter& filter, const CtEntry& entry) {
  if (filter.family != 0 && entry.conn.family != filter.family) return false;
  if (filter.zone.has_value() && entry.conn.zone != *filter.zone) return false;
  if ((entry.conn.mark & filter.mark_mask) != (filter.mark & filter.mark_mask)) return false;
  if ((entry.status & filter.status_mask) != (filter.status & filter.status_mask)) return false;
  return true;
}

Status parse_ct_message(const void* msg, size_t len, CtEntry* entry) {
  const auto* nlh = static_cast<const nlmsghdr*>(msg);
  constexpr size_t kHeaders = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
  if (msg == nullptr || len < NLMSG_HDRLEN || nlh->nlmsg_len < kHeaders || nlh->nlmsg_len > len) {
    return Status::error(EBADMSG, "ctnetlink message: truncated (shorter than its headers or its nlmsg_len)");
  }
  const auto* bytes = static_cast<const unsigned char*>(msg);
  const auto* nfg = reinterpret_cast<const nfgenmsg*>(bytes + NLMSG_HDRLEN);
  if (nfg->nfgen_family != AF_INET && nfg->nfgen_family != AF_INET6) {
    return Status::error(EAFNOSUPPORT,
                         "ctnetlink message: family " + std::to_string(nfg->nfgen_family) + " is not IPv4 or IPv6");
  }
  *entry = CtEntry{};
  entry->conn.family = nfg->nfgen_family;
  if (Fault f = parse_entry_attrs(bytes + kHeaders, nlh->nlmsg_len - kHeaders, entry); f) {
    return Status::error(f.err, std::string("ctnetlink message: ") + f.where + ": " + f.what);
  }
  return Status();
}

// ------------------------------------------------------------------------

Ctnetlink::Ctnetlink(std::unique_ptr<Transport> transport, int timeout_ms)
    : transport_(std::move(transport)), buf_(new std::byte[kNetlinkReceiveBuffer]), timeout_ms_(timeout_ms) {}
Ctnetlink::Ctnetlink(Ctnetlink&&) noexcept = default;
Ctnetlink& Ctnetlink::operator=(Ctnetlink&&) noexcept = default;
Ctnetlink::~Ctnetlink() = default;

Result<std::unique_ptr<Transport>> open_netlink_transport(int protocol, const NlSocketOptions& options) {
  auto sk = open_libnl_socket(protocol, options);
  if (!sk) return sk.status();
  return std::unique_ptr<Transport>(std::make_unique<LibnlTransport>(std::move(*sk), protocol, options));
}

Result<Ctnetlink> Ctnetlink::open(const NlSocketOptions& options) {
  auto t = open_netlink_transport(NETLINK_NETFILTER, options);
  if (!t) return t.status().with_context("open ctnetlink socket");
  return Ctnetlink(std::move(*t), options.receive_timeout_ms > 0 ? options.receive_timeout_ms : -1);
}

Ctnetlink Ctnetlink::with_transport(std::unique_ptr<Transport> transport) {
  return Ctnetlink(std::move(transport), NlSocketOptions{}.receive_timeout_ms);
}

Status Ctnetlink::transact(void* request, const std::function<Status(const void*, size_t)>& on_entry) {
  auto* req = static_cast<nlmsghdr*>(request);
  req->nlmsg_seq = ++seq_;
  RequestIo io{{buf_.get(), kNetlinkReceiveBuffer}, timeout_ms_, "ctnetlink"};
  // A conntrack table is dumped as it moves (`conntrack -L` takes it so):
  // an interrupted dump is not an error.
  bool interrupted = false;
  io.interrupted = &interrupted;
  return request_run(*transport_, req, io, [&](const nlmsghdr* m) { return on_entry(m, m->nlmsg_len); });
}

Result<CtEntry> Ctnetlink::lookup(const Conn& key, int msg_type) {
  auto req = build_lookup_request(key, msg_type);
  if (!req) return req.status();
  CtEntry found;
  bool have = false;
  const auto on_entry = [&](const void* m, size_t len) -> Status {
    const auto* nlh = static_cast<const nlmsghdr*>(m);
    if (nlh->nlmsg_type != ct_msg_type(IPCTNL_MSG_CT_NEW)) return Status();
    Status p = parse_ct_message(m, len, &found);
    if (p) have = true;
    return p;
  };
  // Both are safe to repeat on a new socket: a get changes nothing, and a
  // delete that did happen the first time answers ENOENT, which callers
  // take as gone.
  Status s = reopen_once_and_resend(
      "ctnetlink",
      [&] {
        have = false;
        return transact(nlmsg_hdr(req->get()), on_entry);
      },
      [&] { return transport_->reopen(); });
  if (!s) {
    // After a lost or unanswered datagram the socket may still hold parts
    // of this reply; a fresh socket keeps the next request clean.
    if (may_leave_replies(s.err())) (void)transport_->reopen();
    const char* verb = msg_type == IPCTNL_MSG_CT_DELETE ? "delete conntrack entry " : "get conntrack entry ";
    return s.with_context(verb + describe_key(key));
  }
  if (msg_type == IPCTNL_MSG_CT_GET && !have) {
    return Status::error(EBADMSG,
                         "get conntrack entry " + describe_key(key) + ": the kernel acknowledged without an entry");
  }
  return found;
}

Result<CtEntry> Ctnetlink::get(const Conn& key) { return lookup(key, IPCTNL_MSG_CT_GET); }

Status Ctnetlink::remove(const Conn& key) { return lookup(key, IPCTNL_MSG_CT_DELETE).status(); }

std::vector<Status> Ctnetlink::remove_many(std::span<const Conn> keys) {
  std::vector<Status> out(keys.size());
  std::vector<unsigned char> requests;
  std::vector<size_t> at, index;
  size_t next = 0;
  while (next < keys.size()) {
    requests.clear();
    at.assign(1, 0);
    index.clear();
    while (next < keys.size() && index.size() < kRemoveWindow) {
      const size_t k = next++;
      auto req = build_lookup_request(keys[k], IPCTNL_MSG_CT_DELETE);
      if (!req) {
        out[k] = req.status().with_context("delete conntrack entry " + describe_key(keys[k]));
        continue;
      }
      const nlmsghdr* nlh = nlmsg_hdr(req->get());
      requests.resize(at.back() + NLMSG_ALIGN(nlh->nlmsg_len));  // Padding zeroed.
      std::memcpy(requests.data() + at.back(), nlh, nlh->nlmsg_len);
      at.push_back(requests.size());
      index.push_back(k);
    }
    if (index.empty()) continue;
    if (Status s = remove_window(keys, requests, at, index, out); !s) {
      for (size_t k = next; k < keys.size(); ++k) {
        out[k] = s.with_context("delete conntrack entry " + describe_key(keys[k]) +
                                ": not sent after an earlier one failed");
      }
      break;
    }
  }
  return out;
}

Status Ctnetlink::remove_window(std::span<const Conn> keys, const std::vector<unsigned char>& requests,
                                const std::vector<size_t>& at, const std::vector<size_t>& index,
                                std::vector<Status>& out) {
  const auto context = [&](size_t i) { return "delete conntrack entry " + describe_key(keys[index[i]]); };
  std::vector<uint8_t> answered(index.size(), 0);
  // Request i's result, made by 'result()' unless it has one already (an
  // error's text names the key: not formatted for requests already settled).
  const auto settle = [&](size_t i, const auto& result) {
    if (answered[i] != 0) return;
    answered[i] = 1;
    out[index[i]] = result();
  };
  std::vector<size_t> open;  // Requests of this window not answered yet.
  std::vector<unsigned char> dgram;
  for (int attempt = 0;; ++attempt) {
    // The open requests, numbered from 'first'; only the last asks for an
    // acknowledgement, which comes after any error the others get.
    open.clear();
    for (size_t i = 0; i < index.size(); ++i) {
      if (answered[i] == 0) open.push_back(i);
    }
    dgram.clear();
    const uint32_t first = seq_ + 1;
    for (size_t j = 0; j < open.size(); ++j) {
      const size_t off = dgram.size();
      dgram.insert(dgram.end(), requests.begin() + static_cast<ptrdiff_t>(at[open[j]]),
                   requests.begin() + static_cast<ptrdiff_t>(at[open[j] + 1]));
      auto* nlh = reinterpret_cast<nlmsghdr*>(dgram.data() + off);
      nlh->nlmsg_seq = ++seq_;
      nlh->nlmsg_pid = 0;
      nlh->nlmsg_flags = static_cast<uint16_t>((nlh->nlmsg_flags & ~NLM_F_ACK) | NLM_F_REQUEST |
                                               (j + 1 == open.size() ? NLM_F_ACK : 0));
    }
    Status s = transport_->send(dgram.data(), dgram.size());
    bool done = false;
    while (s && !done) {
      auto got = transport_->receive({buf_.get(), kNetlinkReceiveBuffer}, timeout_ms_);
      if (!got) {
        s = got.status();
        break;
      }
      int rem = static_cast<int>(*got);
      for (auto* nlh = reinterpret_cast<nlmsghdr*>(buf_.get()); nlmsg_ok(nlh, rem); nlh = nlmsg_next(nlh, &rem)) {
        if (nlh->nlmsg_type != NLMSG_ERROR) continue;
        const uint32_t j = nlh->nlmsg_seq - first;  // Wraps for another request's: skipped.
        if (j >= open.size()) continue;
        auto ack = parse_kernel_ack(nlh, nlh->nlmsg_len);
        if (!ack) {
          s = ack.status();
          break;
        }
        // The kernel's answer to request i.
        const auto answer = [&](size_t i) {
          if (ack->err == 0) return Status();
          // ENOENT is the common answer in bulk (the entry is gone already),
          // and the key is the caller's keys[index[i]]: no need to spell it
          // out, which costs more than the kernel's whole answer.
          if (ack->err == ENOENT && ack->extack_msg.empty()) {
            return Status::error(ENOENT, "delete conntrack entry: no such entry");
          }
          return kernel_status(*ack, "ctnetlink").with_context(context(i));
        };
        settle(open[j], [&] { return answer(open[j]); });
        if (j + 1 == open.size()) {
          done = true;
        } else if (j == 0 && ack->err == EPERM) {
          // A sender without CAP_NET_ADMIN has its whole datagram refused:
          // the first request is answered EPERM and the rest are dropped.
          for (size_t i : open) settle(i, [&] { return answer(i); });
          done = true;
        }
      }
    }
    if (s) {
      // The last request's answer came after every error: the rest were
      // carried out.
      for (size_t i : open) settle(i, [] { return Status(); });
      return Status();
    }
    if (attempt == 0 && (socket_gone(s.err()) || s.err() == ENOBUFS)) {
      logger()->warn("ctnetlink socket failed during {} deletes ({}); reopening it and asking again", open.size(),
                     s.message());
      Status r = transport_->reopen();
      if (r) continue;
      s = r.with_context("reopen ctnetlink socket");
    } else if (may_leave_replies(s.err())) {
      (void)transport_->reopen();  // It may still hold answers of this window.
    }
    for (size_t i : open) settle(i, [&] { return s.with_context(context(i)); });
    return s;
  }
}

Result<CtDumpStats> Ctnetlink::dump(const CtFilter& filter, const std::function<void(const CtEntry&)>& visit,
                                    const std::function<void()>& on_resync) {
  CtDumpStats stats;
  CtEntry entry;
  bool kernel_filter = has_kernel_filter(filter);
  const auto on_entry = [&](const void* m, size_t len) -> Status {
    const auto* nlh = static_cast<const nlmsghdr*>(m);
    if (nlh->nlmsg_type != ct_msg_type(IPCTNL_MSG_CT_NEW)) return Status();
    ++stats.messages;
    Status s = parse_ct_message(m, len, &entry);
    if (!s) {
      if (s.err() == EAFNOSUPPORT) {
        ++stats.skipped;
        return Status();
      }
      return s;
    }
    if (!ct_filter_match(filter, entry)) return Status();
    ++stats.entries;
    visit(entry);
    return Status();
  };

  for (;;) {
    auto req = build_dump_request(filter, kernel_filter);
    if (!req) return req.status();
    Status s = transact(nlmsg_hdr(req->get()), on_entry);
    if (s) return stats;
    if (s.err() == ENOBUFS || socket_gone(s.err())) {
      // The socket overflowed and replies were lost, or it was closed under
      // us: start over on a fresh socket (the old one may still have the
      // kernel's dump running).
      if (stats.resyncs >= static_cast<size_t>(kMaxResyncs)) {
        return s.with_context("conntrack dump: restarted " + std::to_string(kMaxResyncs) + " times, failed again");
      }
      ++stats.resyncs;
      if (s.err() == ENOBUFS) {
        logger()->info("conntrack dump overflowed the socket (ENOBUFS); restarting it (resync {})", stats.resyncs);
      } else {
        logger()->warn("conntrack dump: the socket failed ({}); restarting it on a new one", s.message());
      }
      if (Status r = transport_->reopen(); !r) return r.with_context("conntrack dump resync");
      if (on_resync) on_resync();
      stats.entries = 0;
      stats.messages = 0;
      stats.skipped = 0;
      continue;
    }
    if (kernel_filter && (s.err() == EINVAL || s.err() == EOPNOTSUPP) && stats.messages == 0) {
      // A kernel that refuses the filter attributes still dumps without
      // them; the filter is applied here either way.
      logger()->info("conntrack dump: the kernel refused the dump filter ({}); filtering in userspace", s.message());
      kernel_filter = false;
      continue;
    }
    if (may_leave_replies(s.err())) (void)transport_->reopen();  // ENOBUFS was restarted above.
    return s.with_context("conntrack dump");
  }
}

// ------------------------------------------------------------------------

namespace {

// A Status for a failed access to the accounting switch that says what the
// errno means there.
Status acct_error(int err, std::string_view path, std::string_view action) {
  std::string what = std::string(action) + ": " + std::string(path);
  switch (err) {
    case ENOENT:
      return Status::error(ENOENT, what +
                                       ": no such file: conntrack is not available in this kernel or network "
                                       "namespace (is nf_conntrack loaded?)");
    case EPERM:
    case EACCES: {
      Status s = errno_status(err, what);
      return Status::error(err, s.message() + ": changing it needs CAP_NET_ADMIN over this network namespace");
    }
    case EROFS:
      return Status::error(EROFS, what + ": /proc/sys is mounted read-only here");
    default:
      return errno_status(err, what);
  }
}

}  // namespace

Status set_conntrack_accounting(bool on, std::string_view path) {
  const std::string p(path);
  const char* action = on ? "turn conntrack accounting on" : "turn conntrack accounting off";
  int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return acct_error(errno, path, action);
  const char* value = on ? "1\n" : "0\n";
  ssize_t n;
  do {
    n = ::write(fd, value, 2);
  } while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : 0;
  // A sysctl write is applied by write(); close() reports nothing new, but
  // its error is kept if write() had none.
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) return acct_error(err, path, action);
  if (n != 2) return Status::error(EIO, std::string(action) + ": short write to " + p);
  return Status();
}

Result<bool> conntrack_accounting(std::string_view path) {
  const std::string p(path);
  constexpr std::string_view kAction = "read conntrack accounting";
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return acct_error(errno, path, kAction);
  char buf[32] = {};
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof(buf) - 1);
  } while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : 0;
  ::close(fd);
  if (err != 0) return acct_error(err, path, kAction);
  char* end = nullptr;
  long v = std::strtol(buf, &end, 10);
  if (end == buf || (*end != '\0' && *end != '\n')) {
    return Status::error(EINVAL, std::string(kAction) + ": " + p + " does not hold a number");
  }
  return v != 0;
}

}  // namespace ctoffload::netlink
