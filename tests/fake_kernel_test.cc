// fake_kernel_test.cc - the tests' fake kernel (support/fake_kernel.h):
// the hooks that see every datagram sent and every datagram read, and the
// one-shot send error, which the nf_tables fuzz harness builds on.
#include "support/fake_kernel.h"

#include <gtest/gtest.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <vector>

namespace ctoffload::testing {
namespace {

Status send_bytes(FakeKernel& k, const Bytes& d) { return k.send(d.data(), d.size()); }

TEST(FakeKernel, OnSendSeesEveryDatagramEvenOnesThatFail) {
  FakeKernel k;
  std::vector<Bytes> seen;
  k.on_send = [&](const Bytes& d, FakeKernel&) { seen.push_back(d); };
  k.eintr_send = true;
  EXPECT_EQ(send_bytes(k, {1}).err(), EINTR);
  k.send_error = Status::error(ECONNREFUSED, "refused");
  EXPECT_EQ(send_bytes(k, {2, 2}).err(), ECONNREFUSED);
  k.send_error = Status();
  EXPECT_TRUE(send_bytes(k, {3}).ok());
  EXPECT_EQ(seen, (std::vector<Bytes>{{1}, {2, 2}, {3}}));
  EXPECT_EQ(k.requests, (std::vector<Bytes>{{3}}));
}

TEST(FakeKernel, FailNextSendFailsOneSendAndNothingArrives) {
  FakeKernel k;
  size_t handled = 0;
  k.on_request = [&](const Bytes&, FakeKernel&) { ++handled; };
  k.fail_next_send = ENOBUFS;
  EXPECT_EQ(send_bytes(k, {1}).err(), ENOBUFS);
  EXPECT_TRUE(k.requests.empty());
  EXPECT_EQ(handled, 0u);
  EXPECT_EQ(k.fail_next_send, 0);
  EXPECT_TRUE(send_bytes(k, {2}).ok());
  EXPECT_EQ(k.requests, (std::vector<Bytes>{{2}}));
  EXPECT_EQ(handled, 1u);
}

TEST(FakeKernel, OnSendCanFailTheSendItSees) {
  FakeKernel k;
  k.on_send = [](const Bytes& d, FakeKernel& kk) {
    if (d.size() > 1) kk.fail_next_send = EPERM;
  };
  EXPECT_EQ(send_bytes(k, {1, 1}).err(), EPERM);
  EXPECT_TRUE(send_bytes(k, {2}).ok());
  EXPECT_EQ(k.requests, (std::vector<Bytes>{{2}}));
}

TEST(FakeKernel, OnReadSeesWhatTheClientReadOnly) {
  FakeKernel k;
  std::vector<Bytes> read;
  k.on_read = [&](const Bytes& d, FakeKernel&) { read.push_back(d); };
  k.push({1, 2, 3, 4, 5});  // Too big for the buffer below: lost.
  k.push_error(EIO);
  k.push({6, 7});
  std::array<std::byte, 4> buf{};
  EXPECT_EQ(k.receive(buf, 0).err(), EMSGSIZE);
  EXPECT_EQ(k.receive(buf, 0).err(), EIO);
  auto r = k.receive(buf, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 2u);
  EXPECT_EQ(k.receive(buf, 0).err(), ETIMEDOUT);
  EXPECT_EQ(read, (std::vector<Bytes>{{6, 7}}));
}

}  // namespace
}  // namespace ctoffload::testing
