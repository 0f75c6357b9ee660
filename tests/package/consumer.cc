// consumer.cc - a C++ program built against the installed package through
// find_package(ctoffload): its own provider next to the built-ins.
#include <ctoffload/registry.h>
#include <netinet/in.h>

#include <cstdio>

namespace {

class Counting : public ctoffload::Provider {
 public:
  std::string name() const override { return "counting"; }
  int conn_add(const ctoffload::Ctx&) override { return ++adds_, 0; }
  void conn_del(const ctoffload::Ctx&) override {}
  int adds_ = 0;
};

}  // namespace

int main() {
  ctoffload::Registry reg;
  auto counting = std::make_shared<Counting>();
  if (auto s = reg.add(counting); !s) {
    std::fprintf(stderr, "%s\n", s.to_string().c_str());
    return 1;
  }
  auto src = ctoffload::parse_endpoint("[fd00::1]:5000");
  auto dst = ctoffload::parse_endpoint("[fd00::2]:53");
  auto conn = ctoffload::make_conn(IPPROTO_UDP, *src, *dst);
  if (!conn) {
    std::fprintf(stderr, "%s\n", conn.status().to_string().c_str());
    return 1;
  }
  ctoffload::Ctx ctx{&*conn, nullptr, 1};
  if (reg.conn_add(ctx) != 0 || counting->adds_ != 1) return 1;
  std::printf("%s offloaded by counting\n", ctoffload::format_conn(*conn).c_str());
  return 0;
}
