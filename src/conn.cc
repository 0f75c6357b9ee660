// conn.cc - parsing, formatting and validation of the connection model.
#include "ctoffload/conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <charconv>
#include <cstdio>
#include <cstring>

#include "capi_error.h"
#include "conn_check.h"

namespace ctoffload {
namespace {

// 'dir' and 'end' name the address ("original" "source"); the message is
// built only on failure: validate() runs on every conn_add.
Status check_addr(uint8_t family, const Addr& a, const char* dir, const char* end) {
  auto what = [&] { return std::string(dir) + " " + end; };
  if (family == AF_INET && !check::v4_clean(a)) {
    return Status::error(EINVAL, what() + " is an IPv4 address with non-zero bytes after the first four");
  }
  if (check::unspecified(family, a)) {
    return Status::error(EINVAL, what() + " is the unspecified address " + format_address(family, a));
  }
  if (check::multicast_or_broadcast(family, a)) {
    return Status::error(EINVAL, what() + " " + format_address(family, a) +
                                     " is a multicast or broadcast address; connections are unicast");
  }
  return {};
}

Status check_tuple(const Conn& c, const Tuple& t, const char* dir) {
  if (auto s = check_addr(c.family, t.src, dir, "source"); !s) return s;
  if (auto s = check_addr(c.family, t.dst, dir, "destination"); !s) return s;
  if (t.src_port == 0) {
    return Status::error(EINVAL, std::string(dir) + " source port is 0; " + proto_name(c.proto) + " needs a port");
  }
  if (t.dst_port == 0) {
    return Status::error(EINVAL, std::string(dir) + " destination port is 0; " + proto_name(c.proto) + " needs a port");
  }
  return {};
}

Result<uint16_t> parse_port(std::string_view text, std::string_view whole) {
  unsigned value = 0;
  if (text.empty()) return Status::error(EINVAL, "missing port in '" + std::string(whole) + "'");
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value > 65535) {
    return Status::error(EINVAL,
                         "bad port '" + std::string(text) + "' in '" + std::string(whole) + "' (expected 0-65535)");
  }
  return static_cast<uint16_t>(value);
}

}  // namespace

Result<Endpoint> parse_address(std::string_view text) {
  Endpoint ep;
  if (text.empty() || text.size() > INET6_ADDRSTRLEN) {
    return Status::error(EINVAL, "bad address '" + std::string(text) + "'");
  }
  std::string s(text);
  if (inet_pton(AF_INET, s.c_str(), ep.addr.bytes) == 1) {
    ep.family = AF_INET;
    return ep;
  }
  if (inet_pton(AF_INET6, s.c_str(), ep.addr.bytes) == 1) {
    ep.family = AF_INET6;
    return ep;
  }
  return Status::error(EINVAL, "bad address '" + s + "' (expected an IPv4 or IPv6 address)");
}

Result<Endpoint> parse_endpoint(std::string_view text) {
  if (text.empty()) return Status::error(EINVAL, "empty address (expected ADDR:PORT or [ADDR6]:PORT)");
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) {
      return Status::error(EINVAL, "missing ']' in '" + std::string(text) + "'");
    }
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return Status::error(EINVAL, "missing ':PORT' after ']' in '" + std::string(text) + "'");
    }
    auto addr = parse_address(text.substr(1, close - 1));
    if (!addr || addr->family != AF_INET6) {
      return Status::error(EINVAL, "bad IPv6 address in '" + std::string(text) + "'");
    }
    auto port = parse_port(text.substr(close + 2), text);
    if (!port) return port.status();
    addr->port = *port;
    return addr;
  }
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return Status::error(EINVAL, "missing ':PORT' in '" + std::string(text) + "'");
  }
  if (text.find(':') != colon) {
    return Status::error(EINVAL, "IPv6 address needs brackets: write '[ADDR]:PORT', not '" + std::string(text) + "'");
  }
  auto addr = parse_address(text.substr(0, colon));
  if (!addr) return addr.status();
  auto port = parse_port(text.substr(colon + 1), text);
  if (!port) return port.status();
  addr->port = *port;
  return addr;
}

std::string format_address(uint8_t family, const Addr& addr) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (family == AF_INET || family == AF_INET6) inet_ntop(family, addr.bytes, buf, sizeof buf);
  return buf;
}

std::string format_endpoint(uint8_t family, const Addr& addr, uint16_t port) {
  if (family == AF_INET6) return "[" + format_address(family, addr) + "]:" + std::to_string(port);
  return format_address(family, addr) + ":" + std::to_string(port);
}

std::string format_endpoint(const Endpoint& ep) { return format_endpoint(ep.family, ep.addr, ep.port); }

Result<uint8_t> parse_proto(std::string_view text) {
  if (text == "tcp" || text == "6") return static_cast<uint8_t>(IPPROTO_TCP);
  if (text == "udp" || text == "17") return static_cast<uint8_t>(IPPROTO_UDP);
  return Status::error(EPROTONOSUPPORT, "unsupported protocol '" + std::string(text) + "' (expected tcp or udp)");
}

std::string proto_name(uint8_t proto) {
  if (proto == IPPROTO_TCP) return "tcp";
  if (proto == IPPROTO_UDP) return "udp";
  return std::to_string(proto);
}

Tuple mirror(const Tuple& t) {
  Tuple m{};
  m.src = t.dst;
  m.dst = t.src;
  m.src_port = t.dst_port;
  m.dst_port = t.src_port;
  return m;
}

bool same_tuple(const Tuple& a, const Tuple& b) {
  return std::memcmp(a.src.bytes, b.src.bytes, 16) == 0 && std::memcmp(a.dst.bytes, b.dst.bytes, 16) == 0 &&
         a.src_port == b.src_port && a.dst_port == b.dst_port;
}

bool same_conn(const Conn& a, const Conn& b) {
  return a.family == b.family && a.proto == b.proto && a.zone == b.zone && same_tuple(a.orig, b.orig) &&
         same_tuple(a.reply, b.reply);
}

bool is_natted(const Conn& c) { return !same_tuple(c.reply, mirror(c.orig)); }

Status validate(const Conn& c) {
  // The common case first, with no Status to build and destroy per check
  // (conn_check.h; the registry inlines the same test on its hot paths).
  // The checks below repeat it, saying what failed.
  if (check::conn_valid(c)) return {};
  if (c.family != AF_INET && c.family != AF_INET6) {
    return Status::error(EINVAL, "address family " + std::to_string(c.family) + " is neither IPv4 nor IPv6");
  }
  if (c.proto != IPPROTO_TCP && c.proto != IPPROTO_UDP) {
    return Status::error(EPROTONOSUPPORT,
                         "protocol " + std::to_string(c.proto) + " is not supported (tcp and udp only)");
  }
  if (auto s = check_tuple(c, c.orig, "original"); !s) return s;
  if (auto s = check_tuple(c, c.reply, "reply"); !s) return s;
  return {};
}

Result<Conn> make_conn(uint8_t proto, const Endpoint& src, const Endpoint& dst,
                       const std::optional<Endpoint>& reply_src, const std::optional<Endpoint>& reply_dst,
                       uint16_t zone, uint32_t mark) {
  if (reply_src.has_value() != reply_dst.has_value()) {
    return Status::error(EINVAL, "reply source and reply destination must be given together");
  }
  if (src.family != dst.family) {
    return Status::error(
        EINVAL, "mixed address families: source " + format_endpoint(src) + ", destination " + format_endpoint(dst));
  }
  Conn c{};
  c.family = src.family;
  c.proto = proto;
  c.zone = zone;
  c.mark = mark;
  c.orig.src = src.addr;
  c.orig.dst = dst.addr;
  c.orig.src_port = src.port;
  c.orig.dst_port = dst.port;
  if (reply_src) {
    if (reply_src->family != src.family || reply_dst->family != src.family) {
      return Status::error(EINVAL, "mixed address families: reply tuple " + format_endpoint(*reply_src) + " -> " +
                                       format_endpoint(*reply_dst) + " for an original tuple " + format_endpoint(src) +
                                       " -> " + format_endpoint(dst));
    }
    c.reply.src = reply_src->addr;
    c.reply.dst = reply_dst->addr;
    c.reply.src_port = reply_src->port;
    c.reply.dst_port = reply_dst->port;
  } else {
    c.reply = mirror(c.orig);
  }
  if (auto s = validate(c); !s) return s;
  return c;
}

std::string format_conn(const Conn& c) {
  std::string s = proto_name(c.proto) + " " + format_endpoint(c.family, c.orig.src, c.orig.src_port) + " -> " +
                  format_endpoint(c.family, c.orig.dst, c.orig.dst_port) + " zone " + std::to_string(c.zone);
  if (is_natted(c)) {
    s += " reply " + format_endpoint(c.family, c.reply.src, c.reply.src_port) + " -> " +
         format_endpoint(c.family, c.reply.dst, c.reply.dst_port);
  }
  return s;
}

Result<Netdev> make_netdev(std::string_view name, int ifindex) {
  Netdev d{};
  if (name.size() >= sizeof d.name) {
    return Status::error(EINVAL, "device name '" + std::string(name) + "' is longer than " +
                                     std::to_string(sizeof d.name - 1) + " bytes");
  }
  if (ifindex < 0) return Status::error(EINVAL, "negative ifindex " + std::to_string(ifindex));
  // What the kernel accepts as a device name (dev_valid_name): no NUL,
  // control or space characters, no '/' or ':', not "." or "..".
  for (size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x21 || c == 0x7f || c == '/' || c == ':') {
      char what[8];
      (void)std::snprintf(what, sizeof what, "0x%02x", c);
      return Status::error(EINVAL, "device name has a character no device name can have (" + std::string(what) +
                                       " at byte " + std::to_string(i) + ")");
    }
  }
  if (name == "." || name == "..") return Status::error(EINVAL, "device name '" + std::string(name) + "' is not valid");
  std::memcpy(d.name, name.data(), name.size());
  d.ifindex = ifindex;
  return d;
}

uint64_t hash_tuple(uint8_t family, uint8_t proto, uint16_t zone, const Tuple& t) {
  // A multiply-xorshift mix over the tuple's words: cheap, and good enough
  // for open addressing with a power-of-two table.
  constexpr uint64_t kMul = 0x9e3779b97f4a7c15ull;
  uint64_t h = (uint64_t{family} << 40) ^ (uint64_t{proto} << 32) ^ (uint64_t{zone} << 16) ^ 0x5bd1e995u;
  auto mix = [&](uint64_t v) {
    h ^= v;
    h *= kMul;
    h ^= h >> 29;
  };
  mix((uint64_t{t.src.words[0]} << 32) | t.dst.words[0]);
  if (family == AF_INET6) {
    mix((uint64_t{t.src.words[1]} << 32) | t.src.words[2]);
    mix((uint64_t{t.src.words[3]} << 32) | t.dst.words[1]);
    mix((uint64_t{t.dst.words[2]} << 32) | t.dst.words[3]);
  }
  mix((uint64_t{t.src_port} << 16) | t.dst_port);
  h ^= h >> 32;
  return h;
}

}  // namespace ctoffload

// ---- C API of the model ----

using ctoffload::capi::fail;

extern "C" int ct_offload_endpoint_parse(const char* text, uint8_t* family, union ct_offload_addr* addr,
                                         uint16_t* port) {
  if (!text || !family || !addr || !port) return fail(EINVAL, "ct_offload_endpoint_parse: null argument");
  auto ep = ctoffload::parse_endpoint(text);
  if (!ep) return fail(ep.status());
  *family = ep->family;
  *addr = ep->addr;
  *port = ep->port;
  return 0;
}

extern "C" int ct_offload_endpoint_format(uint8_t family, const union ct_offload_addr* addr, uint16_t port, char* buf,
                                          size_t size) {
  std::string s = addr ? ctoffload::format_endpoint(family, *addr, port) : std::string("?");
  if (buf && size > 0) {
    size_t n = s.size() < size - 1 ? s.size() : size - 1;
    std::memcpy(buf, s.data(), n);
    buf[n] = '\0';
  }
  return static_cast<int>(s.size());
}

extern "C" int ct_offload_conn_validate(const struct ct_offload_conn* conn) {
  if (!conn) return fail(EINVAL, "ct_offload_conn_validate: null connection");
  return fail(ctoffload::validate(*conn));
}

extern "C" void ct_offload_conn_mirror_reply(struct ct_offload_conn* conn) {
  if (conn) conn->reply = ctoffload::mirror(conn->orig);
}
