// fuzz_support.h - what the fuzz targets share: a check that stops the run,
// the framing of fuzz inputs into datagrams, and a netlink message walker.
//
// Datagram framing (netlink targets that drive a client through a fake
// transport): the input is a sequence of records
//
//   u32 little-endian word W, then the record's bytes
//
// W < 0x40000000: a datagram of W bytes (cut short at the end of the input).
// W = 0x40000000 | n: no bytes follow; the transport's next send() fails
//                 with the errno numbered n by the target.
// W = 0x80000000 | n: no bytes follow; the next receive() fails with the
//                 errno numbered n by the target.
// W = 0xc0000000 | n: no bytes follow; a target whose kernel answers
//                 request by request (nft_txn) starts the answers to the
//                 next request here; others ignore it.
// When the records run out, every receive() says "nothing came" (ETIMEDOUT,
// as the transport's errno table has it).
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

namespace ctoffload::fuzz {

// Stops the run with a message when 'cond' does not hold: libFuzzer saves
// the input as a crash.
#define FUZZ_CHECK(cond, ...)                                                                \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "fuzz check failed at %s:%d: %s\n  ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                     \
      std::fprintf(stderr, "\n");                                                            \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

struct Record {
  enum Kind { kDatagram, kSendError, kReceiveError, kNextRequest } kind = kDatagram;
  std::vector<unsigned char> bytes;  // kDatagram
  uint8_t code = 0;                  // the error's number, for the others
};

inline constexpr uint32_t kSendErrorBit = 0x40000000u;
inline constexpr uint32_t kReceiveErrorBit = 0x80000000u;
inline constexpr uint32_t kNextRequestBits = kSendErrorBit | kReceiveErrorBit;

// Splits 'in' into records (see above).
inline std::vector<Record> split_records(std::span<const uint8_t> in) {
  std::vector<Record> out;
  size_t pos = 0;
  while (in.size() - pos >= 4) {
    uint32_t w =
        uint32_t{in[pos]} | uint32_t{in[pos + 1]} << 8 | uint32_t{in[pos + 2]} << 16 | uint32_t{in[pos + 3]} << 24;
    pos += 4;
    Record r;
    if ((w & kNextRequestBits) == kNextRequestBits) {
      r.kind = Record::kNextRequest;
    } else if (w & kReceiveErrorBit) {
      r.kind = Record::kReceiveError;
      r.code = static_cast<uint8_t>(w & 0xff);
    } else if (w & kSendErrorBit) {
      r.kind = Record::kSendError;
      r.code = static_cast<uint8_t>(w & 0xff);
    } else {
      size_t n = w < in.size() - pos ? w : in.size() - pos;
      r.bytes.assign(in.begin() + static_cast<std::ptrdiff_t>(pos), in.begin() + static_cast<std::ptrdiff_t>(pos + n));
      pos += n;
    }
    out.push_back(std::move(r));
  }
  return out;
}

// Appends a datagram record holding 'bytes' (for the seed generator).
inline void put_datagram(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  const auto n = static_cast<uint32_t>(bytes.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), bytes.begin(), bytes.end());
}

// Appends a record without bytes: 'bit' is kSendErrorBit, kReceiveErrorBit
// or kNextRequestBits.
inline void put_error(std::vector<uint8_t>& out, uint32_t bit, uint8_t code) {
  const uint32_t w = bit | code;
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(w >> (8 * i)));
}

// 'n' rounded up to a multiple of 4, without NLMSG_ALIGN's wrap to 0 for
// lengths near 4 GiB (its mask is a 32-bit unsigned).
inline size_t align4(size_t n) { return (n + 3) & ~size_t{3}; }

// Calls 'visit(nlh, rest)' for each whole netlink message in 'buf', the
// way libnl's nlmsg_ok()/nlmsg_next() walk a datagram (the library's
// ctnetlink and link readers use them): a message needs a header and an
// nlmsg_len from 16 up to the bytes left; the next one starts at the
// aligned end.  'rest' is the number of bytes from 'nlh' to the end of the
// buffer.  The messages are copied to aligned storage first.  Returns the
// number of trailing bytes that did not form a whole message.
//
// (libmnl's mnl_nlmsg_ok() is not used here: it compares (int)nlmsg_len,
// so it accepts lengths of 2 GiB and more and then loops or jumps; see
// docs/RELIABILITY.md.)
template <typename Visit>
size_t for_each_message(std::span<const unsigned char> buf, Visit&& visit) {
  std::vector<uint32_t> aligned(buf.size() / 4 + 1);
  if (!buf.empty()) std::memcpy(aligned.data(), buf.data(), buf.size());
  const auto* base = reinterpret_cast<unsigned char*>(aligned.data());
  size_t off = 0;
  while (off <= buf.size() && buf.size() - off >= NLMSG_HDRLEN) {
    auto* nlh = reinterpret_cast<nlmsghdr*>(const_cast<unsigned char*>(base) + off);
    if (nlh->nlmsg_len < NLMSG_HDRLEN || nlh->nlmsg_len > buf.size() - off) break;
    visit(nlh, buf.size() - off);
    off += align4(nlh->nlmsg_len);
  }
  return off < buf.size() ? buf.size() - off : 0;
}

}  // namespace ctoffload::fuzz
