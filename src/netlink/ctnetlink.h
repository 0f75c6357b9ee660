// ctnetlink.h - a client of the kernel's conntrack table over ctnetlink.
//
// What the kernel provider needs from conntrack: read one entry, delete one
// entry (which ends its flowtable offload at once), and walk the whole table
// in one dump to refresh the counters of many connections.  Sockets and
// requests come from libnl-3 / libnl-nf-3; replies are decoded in one pass
// straight into a reused CtEntry, with no allocation per entry (libnl's
// decoders were measured 8x slower; see ctnetlink.cc).
//
// Return convention: every function returns a Status or Result whose error
// is a positive errno (ENOENT, EPERM, EBADMSG, ...) plus a sentence naming
// what failed, with the kernel's extended-ack text when it sent one.
//
// Threads: a Ctnetlink is one netlink socket; use it from one thread at a
// time (open one per thread that needs one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ctoffload/conn.h"
#include "ctoffload/result.h"
#include "netlink/transport.h"

struct nl_sock;

namespace ctoffload::netlink {

// ------------------------------------------------------------------------
// Conntrack entries
// ------------------------------------------------------------------------

// Bits of CtEntry::status, as the kernel numbers them (enum
// ip_conntrack_status in linux/netfilter/nf_conntrack_common.h).
namespace ct_status {
inline constexpr uint32_t kExpected = 1u << 0;
inline constexpr uint32_t kSeenReply = 1u << 1;
inline constexpr uint32_t kAssured = 1u << 2;
inline constexpr uint32_t kConfirmed = 1u << 3;
inline constexpr uint32_t kSrcNat = 1u << 4;
inline constexpr uint32_t kDstNat = 1u << 5;
inline constexpr uint32_t kSeqAdjust = 1u << 6;
inline constexpr uint32_t kSrcNatDone = 1u << 7;
inline constexpr uint32_t kDstNatDone = 1u << 8;
inline constexpr uint32_t kDying = 1u << 9;
inline constexpr uint32_t kFixedTimeout = 1u << 10;
inline constexpr uint32_t kTemplate = 1u << 11;
inline constexpr uint32_t kUntracked = 1u << 12;
inline constexpr uint32_t kHelper = 1u << 13;
// The connection is in a flowtable (software or hardware fast path).
inline constexpr uint32_t kOffload = 1u << 14;
// The connection's flowtable entry is in hardware.
inline constexpr uint32_t kHwOffload = 1u << 15;
}  // namespace ct_status

// "SEEN_REPLY|ASSURED|CONFIRMED|OFFLOAD" (conntrack's names for the bits;
// unknown bits as "BIT16"); "" for 0.
std::string format_ct_status(uint32_t status);

// Packets and bytes conntrack counted in one direction.
struct CtCounters {
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// One conntrack entry as the kernel reports it.
struct CtEntry {
  // Family, protocol, zone, mark and both tuples.  Addresses are in network
  // byte order, ports in host byte order (ct-offload.h).  Protocols without
  // ports (ICMP, ...) leave the ports 0.  The zone is the entry's CTA_ZONE,
  // or its original tuple's zone when only that is directional, else 0.
  Conn conn{};
  // ct_status bits.
  uint32_t status = 0;
  // Counters per direction.  Empty when the entry has no accounting
  // extension: the kernel attaches one only to connections created while
  // nf_conntrack_acct was 1, so empty means "unknown", never zero traffic.
  std::optional<CtCounters> orig_counters;
  std::optional<CtCounters> reply_counters;
  // Seconds until the entry expires.
  uint32_t timeout = 0;
  // The kernel's id of the entry (stable for its lifetime).
  uint32_t id = 0;
  // TCP state (TCP_CONNTRACK_*: 3 = ESTABLISHED); 0 when not TCP.
  uint8_t tcp_state = 0;

  bool has_counters() const { return orig_counters.has_value() && reply_counters.has_value(); }
};

// Which entries a dump visits.  Every field that is set must match.
//
// What the kernel filters (so that non-matching entries never cross the
// socket) and what is filtered here:
//   family        in the kernel (nfgenmsg family), on every kernel.
//   mark/mask     in the kernel (CTA_MARK + CTA_MARK_MASK), Linux >= 3.x.
//   status/mask   in the kernel (CTA_STATUS + CTA_STATUS_MASK), Linux >= 6.0.
//   zone          in the kernel (CTA_ZONE, with an empty CTA_FILTER nest so
//                 that 5.8-6.5 parse it too) for zones other than 0; the
//                 kernel reads zone 0 as "any zone", so zone 0 is filtered
//                 here only.
// Every condition is also checked here, so older kernels that ignore an
// attribute still give exact results.
struct CtFilter {
  uint8_t family = 0;            // AF_INET, AF_INET6, or 0 for both.
  std::optional<uint16_t> zone;  // Only this zone.
  uint32_t mark = 0;             // (entry mark & mark_mask) == mark;
  uint32_t mark_mask = 0;        // mask 0 matches every mark.
  uint32_t status = 0;           // (entry status & status_mask) == status;
  uint32_t status_mask = 0;      // mask 0 matches every status.
};

// True when 'entry' passes every condition of 'filter'.
bool ct_filter_match(const CtFilter& filter, const CtEntry& entry);

// What one dump did.
struct CtDumpStats {
  size_t entries = 0;   // Entries handed to the visitor (after filtering).
  size_t messages = 0;  // Entries the kernel sent (before userspace filtering).
  size_t resyncs = 0;   // Times the dump was restarted after ENOBUFS.
  size_t skipped = 0;   // Entries of a family other than IPv4/IPv6.
};

// Decodes one ctnetlink entry message (IPCTNL_MSG_CT_NEW or _DELETE: an
// nlmsghdr, an nfgenmsg and CTA_* attributes) of 'len' bytes into '*entry',
// overwriting all of it.  Attributes this code does not know are ignored.
// Returns EBADMSG when the message is truncated (shorter than its headers
// or its nlmsg_len, or attributes running past the end), EINVAL when an
// attribute has the wrong size or a tuple is missing or incomplete, and
// EAFNOSUPPORT for a family other than AF_INET/AF_INET6.  On failure
// '*entry' is unspecified.
Status parse_ct_message(const void* msg, size_t len, CtEntry* entry);

// ------------------------------------------------------------------------
// The client
// ------------------------------------------------------------------------

// Options of the libnl sockets opened here and in link.h.
struct NlSocketOptions {
  // SO_RCVBUF asked for (SO_RCVBUFFORCE when privileged, so rmem_max does
  // not cap it).  A dump is flow-controlled by the kernel, so this only
  // bounds how far the kernel can run ahead of the reader.
  int receive_buffer = 4 << 20;
  // How long one receive may wait for the kernel, in milliseconds; 0 waits
  // forever.
  int receive_timeout_ms = 10000;
};

// A ctnetlink socket: get, delete and dump conntrack entries of the
// network namespace it was opened in.  Move-only; closes its socket on
// destruction; a moved-from client may only be destroyed or assigned to.
class Ctnetlink {
 public:
  // Opens a NETLINK_NETFILTER socket (close-on-exec, extended acks on).
  // Errors: EPROTONOSUPPORT when the kernel has no nfnetlink, EPERM/EACCES
  // when sockets are refused, ENOMEM.
  static Result<Ctnetlink> open(const NlSocketOptions& options = {});

  // A client speaking over 'transport' (tests drive error paths this way).
  static Ctnetlink with_transport(std::unique_ptr<Transport> transport);

  Ctnetlink(Ctnetlink&&) noexcept;
  Ctnetlink& operator=(Ctnetlink&&) noexcept;
  Ctnetlink(const Ctnetlink&) = delete;
  Ctnetlink& operator=(const Ctnetlink&) = delete;
  ~Ctnetlink();

  // The entry whose tuple in either direction is key.orig, in zone
  // key.zone (key.family and key.proto must be set; key.reply and key.mark
  // are not used).  ENOENT when there is none; EINVAL for a key without
  // family or protocol.
  Result<CtEntry> get(const Conn& key);

  // Deletes the entry found as get() finds it.  This ends the connection's
  // flowtable offload at once.  ENOENT when there is none.
  //
  // get() and remove() on a socket closed or replaced under the client
  // (EBADF, ENOTSOCK) open a new one and ask once more: a get changes
  // nothing, and a delete the kernel did carry out the first time answers
  // ENOENT the second.
  Status remove(const Conn& key);

  // Deletes the entries of 'keys', each found as get() finds it, without a
  // round trip per entry: up to kRemoveWindow requests go out in one
  // datagram, and only the last of them asks for an acknowledgement (the
  // kernel answers the others only when they fail, and in order), so a
  // window costs one send and one receive per failure, plus one.  Returns
  // one Status per key, in the order of 'keys': success; ENOENT when there
  // was no such entry (a short message that does not repeat the key, since
  // bulk deletes meet it often and the key is keys[i]); the kernel's error,
  // with the key and the kernel's text; EINVAL for a key without family or
  // protocol, which is never sent.
  //
  // As with remove(), a socket closed or replaced under the client, or one
  // that overflowed (ENOBUFS), is replaced and the window's requests not
  // answered yet go out once more: a delete the kernel carried out the
  // first time answers ENOENT the second.  When that fails again, or the
  // kernel does not answer (ETIMEDOUT), those requests and every key after
  // them carry the error, and nothing more is sent.
  std::vector<Status> remove_many(std::span<const Conn> keys);

  // Requests per datagram in remove_many(): 256 deletes are under 40 KiB,
  // and the kernel's answers to them, should all fail, well under the
  // socket's receive buffer.
  static constexpr size_t kRemoveWindow = 256;

  // Visits every entry passing 'filter' in one dump (see CtFilter for what
  // the kernel filters).  The entry handed to 'visit' is reused: copy what
  // you keep.  'visit' must not use this client.
  //
  // If the socket overflows (ENOBUFS), or was closed or replaced under the
  // client (EBADF, ENOTSOCK), the dump is restarted on a fresh socket: 'on_resync' (when set) is called first, so the
  // caller can drop what it collected, then every entry is visited again; stats.resyncs counts the restarts.  Nothing
  // is lost; it fails with ENOBUFS only when 8 restarts in a row overflow.  Other errors: the kernel's (EPERM, ...),
  // EBADMSG/EINVAL for a malformed entry (the rest of the dump is read and
  // dropped so the socket stays usable).
  Result<CtDumpStats> dump(const CtFilter& filter, const std::function<void(const CtEntry&)>& visit,
                           const std::function<void()>& on_resync = {});

 private:
  // 'timeout_ms' is how long one receive waits (negative: forever).
  Ctnetlink(std::unique_ptr<Transport> transport, int timeout_ms);

  // Sends 'request' (seq is filled in) and reads replies until the kernel's
  // ACK, error or NLMSG_DONE, handing entry messages to 'on_entry'.
  Status transact(void* request, const std::function<Status(const void*, size_t)>& on_entry);
  Result<CtEntry> lookup(const Conn& key, int msg_type);
  // One remove_many() window: request i, for keys[index[i]], is bytes
  // at[i] to at[i + 1] of 'requests'; results go into 'out'.  Returns
  // the error that ends remove_many(), after putting it in 'out' for the
  // requests left without an answer.
  Status remove_window(std::span<const Conn> keys, const std::vector<unsigned char>& requests,
                       const std::vector<size_t>& at, const std::vector<size_t>& index, std::vector<Status>& out);

  std::unique_ptr<Transport> transport_;
  std::unique_ptr<std::byte[]> buf_;  // Receive buffer, reused.
  int timeout_ms_ = 0;
  uint32_t seq_ = 0;
};

// ------------------------------------------------------------------------
// Conntrack accounting
// ------------------------------------------------------------------------

// Where the caller's network namespace keeps the accounting switch.
inline constexpr std::string_view kConntrackAcctPath = "/proc/sys/net/netfilter/nf_conntrack_acct";

// Turns conntrack accounting on (or off) for the caller's network
// namespace by writing 'path'.  Only connections created afterwards get
// counters.  ENOENT when the file does not exist (conntrack is not loaded
// in this kernel or namespace), EPERM/EACCES without the privilege
// (CAP_NET_ADMIN over the namespace's owner), each with a sentence saying so.
Status set_conntrack_accounting(bool on = true, std::string_view path = kConntrackAcctPath);

// Whether conntrack accounting is on, read from 'path'.  ENOENT as above;
// EINVAL when the file holds something other than a number.
Result<bool> conntrack_accounting(std::string_view path = kConntrackAcctPath);

// ------------------------------------------------------------------------
// Machinery: the seam between the clients and the kernel
// ------------------------------------------------------------------------

// A libnl socket, freed (and closed) on destruction.
struct NlSockFree {
  void operator()(nl_sock* sk) const;
};
using NlSockPtr = std::unique_ptr<nl_sock, NlSockFree>;

// Opens a libnl socket of netlink 'protocol' (NETLINK_NETFILTER,
// NETLINK_ROUTE): connected, close-on-exec, with extended acks where the
// kernel has them, the receive buffer and timeout of 'options', and libnl's
// automatic ACK requests off.  Errors: the errno of socket()/bind()
// (EPROTONOSUPPORT, EMFILE, ENOMEM, ...).
Result<NlSockPtr> open_libnl_socket(int protocol, const NlSocketOptions& options);

// The real transport: open_libnl_socket() behind the Transport seam
// (transport.h), with its errno table.
Result<std::unique_ptr<Transport>> open_netlink_transport(int protocol, const NlSocketOptions& options);

// Size of the receive buffer the clients use: the kernel writes dump
// datagrams of at most 32 KiB.
inline constexpr size_t kNetlinkReceiveBuffer = size_t{64} * 1024;

}  // namespace ctoffload::netlink
