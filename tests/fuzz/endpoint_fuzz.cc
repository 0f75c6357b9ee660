// endpoint_fuzz.cc - fuzzes the address parsers of the connection model.
//
// Feeds: the input as text to parse_endpoint() ("10.0.0.1:80",
// "[fd00::1]:80"), parse_address() and parse_proto() (include/ctoffload/
// conn.h), and, up to its first NUL, to the C API's
// ct_offload_endpoint_parse().
//
// Checks, beyond not crashing:
//   * an accepted endpoint has a family of AF_INET or AF_INET6, and an IPv4
//     address has zero bytes after its first four;
//   * round trip: format_endpoint() of it parses back to the same family,
//     address and port, and formatting that again gives the same text
//     (formatting is canonical);
//   * the same for parse_address()/format_address() and for
//     parse_proto()/proto_name();
//   * the C API accepts exactly what parse_endpoint() accepts and returns
//     the same value; ct_offload_endpoint_format() returns the full length
//     whatever the buffer size, writes at most 'size' bytes, always ends
//     with a NUL, and its text is format_endpoint()'s;
//   * when the input is two endpoints separated by a space, make_conn()
//     either refuses them or builds a connection that validate() and
//     ct_offload_conn_validate() accept.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <string>
#include <string_view>

#include "ctoffload/conn.h"
#include "ctoffload/ct-offload.h"
#include "fuzz_support.h"

namespace {

using namespace ctoffload;

bool same_addr(const Addr& a, const Addr& b) { return std::memcmp(a.bytes, b.bytes, sizeof a.bytes) == 0; }

void check_endpoint_value(const Endpoint& ep, std::string_view text) {
  FUZZ_CHECK(ep.family == AF_INET || ep.family == AF_INET6, "family %d for '%.*s'", ep.family,
             static_cast<int>(text.size()), text.data());
  if (ep.family == AF_INET) {
    FUZZ_CHECK(ep.addr.words[1] == 0 && ep.addr.words[2] == 0 && ep.addr.words[3] == 0,
               "IPv4 address with non-zero bytes after the first four");
  }
}

void check_endpoint(std::string_view text) {
  auto ep = parse_endpoint(text);
  if (!ep) {
    FUZZ_CHECK(ep.err() == EINVAL, "parse_endpoint failed with errno %d, not EINVAL", ep.err());
    return;
  }
  check_endpoint_value(*ep, text);
  const std::string formatted = format_endpoint(*ep);
  auto again = parse_endpoint(formatted);
  FUZZ_CHECK(again.ok(), "'%s' (formatted from '%.*s') does not parse: %s", formatted.c_str(),
             static_cast<int>(text.size()), text.data(), again.message().c_str());
  FUZZ_CHECK(again->family == ep->family && same_addr(again->addr, ep->addr) && again->port == ep->port,
             "'%s' parses to another value than '%.*s'", formatted.c_str(), static_cast<int>(text.size()), text.data());
  FUZZ_CHECK(format_endpoint(*again) == formatted, "formatting is not canonical for '%s'", formatted.c_str());
}

void check_address(std::string_view text) {
  auto a = parse_address(text);
  if (!a) return;
  check_endpoint_value(*a, text);
  FUZZ_CHECK(a->port == 0, "parse_address set a port");
  const std::string formatted = format_address(a->family, a->addr);
  auto again = parse_address(formatted);
  FUZZ_CHECK(again.ok() && again->family == a->family && same_addr(again->addr, a->addr),
             "address '%s' does not round trip", formatted.c_str());
}

void check_proto(std::string_view text) {
  auto p = parse_proto(text);
  if (!p) {
    FUZZ_CHECK(p.err() == EPROTONOSUPPORT, "parse_proto failed with errno %d", p.err());
    return;
  }
  FUZZ_CHECK(*p == IPPROTO_TCP || *p == IPPROTO_UDP, "parse_proto gave %d", *p);
  auto again = parse_proto(proto_name(*p));
  FUZZ_CHECK(again.ok() && *again == *p, "protocol %d does not round trip", *p);
}

void check_c_api(std::string_view text) {
  const std::string c_text(text.substr(0, text.find('\0')));
  uint8_t family = 0xee;
  ct_offload_addr addr;
  std::memset(&addr, 0xee, sizeof addr);
  uint16_t port = 0xeeee;
  const int rc = ct_offload_endpoint_parse(c_text.c_str(), &family, &addr, &port);
  auto ep = parse_endpoint(c_text);
  FUZZ_CHECK((rc == 0) == ep.ok(), "C API said %d, C++ API %s for '%s'", rc, ep.ok() ? "ok" : "error", c_text.c_str());
  if (rc != 0) {
    FUZZ_CHECK(rc == ep.err(), "C API errno %d, C++ errno %d", rc, ep.err());
    FUZZ_CHECK(ct_offload_last_error() != nullptr && *ct_offload_last_error() != '\0',
               "C API failed without a message");
    return;
  }
  FUZZ_CHECK(family == ep->family && same_addr(addr, ep->addr) && port == ep->port,
             "C API value differs from C++ for '%s'", c_text.c_str());

  const std::string want = format_endpoint(*ep);
  // Sizes around the text's length, and none at all.
  char buf[64 + 8];
  for (size_t size : {size_t{0}, size_t{1}, want.size(), want.size() + 1, sizeof buf - 8}) {
    if (size > sizeof buf - 8) continue;
    std::memset(buf, 'X', sizeof buf);
    const int n = ct_offload_endpoint_format(family, &addr, port, size == 0 ? nullptr : buf, size);
    FUZZ_CHECK(n == static_cast<int>(want.size()), "format returned %d for a text of %zu", n, want.size());
    for (size_t i = size; i < sizeof buf; ++i) FUZZ_CHECK(buf[i] == 'X', "format wrote past 'size' %zu", size);
    if (size == 0) continue;
    const size_t len = std::strlen(buf);
    FUZZ_CHECK(len < size, "format left no NUL within 'size'");
    FUZZ_CHECK(want.compare(0, len, buf) == 0 && (len == want.size() || len == size - 1), "format wrote '%s' for '%s'",
               buf, want.c_str());
  }
}

void check_pair(std::string_view text) {
  const size_t space = text.find(' ');
  if (space == std::string_view::npos) return;
  auto src = parse_endpoint(text.substr(0, space));
  auto dst = parse_endpoint(text.substr(space + 1));
  if (!src || !dst) return;
  for (uint8_t proto : {uint8_t{IPPROTO_TCP}, uint8_t{IPPROTO_UDP}}) {
    auto conn = make_conn(proto, *src, *dst);
    if (!conn) {
      FUZZ_CHECK(conn.err() == EINVAL, "make_conn errno %d", conn.err());
      continue;
    }
    FUZZ_CHECK(validate(*conn).ok(), "make_conn built a connection validate() refuses: %s",
               validate(*conn).message().c_str());
    FUZZ_CHECK(ct_offload_conn_validate(&*conn) == 0, "the C API refuses what make_conn built");
    FUZZ_CHECK(!is_natted(*conn), "a mirrored connection counts as NATed");
    Conn copy = *conn;
    ct_offload_conn_mirror_reply(&copy);
    FUZZ_CHECK(same_conn(copy, *conn), "mirroring a mirrored reply changed it");
    FUZZ_CHECK(hash_tuple(conn->family, proto, 0, conn->orig) == hash_tuple(copy.family, proto, 0, copy.orig),
               "hash differs for equal tuples");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return -1;  // Longer text teaches nothing new.
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_endpoint(text);
  check_address(text);
  check_proto(text);
  check_c_api(text);
  check_pair(text);
  return 0;
}
