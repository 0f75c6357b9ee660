// provider.h - the C++ face of a conntrack offload provider.
//
// The same contract as struct ct_offload_class (ct-offload.h): 0 or a
// positive errno, callbacks called from many threads at once, 'ctx' valid
// only during the call.  The registry hands conn_add and can_offload only
// connections validate() (conn.h) accepts: a provider need not check them.
// A C class registered through the C API is not wrapped in a Provider: the
// registry calls its function pointers, and the defaults below mean what a
// NULL member of the class means.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "ctoffload/conn.h"

namespace ctoffload {

using ConnStatus = ::ct_offload_conn_status;
using Op = ::ct_offload_op;

class Provider {
 public:
  virtual ~Provider() = default;

  // The provider's name ("software", "nft_flowtable", ...); unique in a
  // registry, at most 31 bytes.
  virtual std::string name() const = 0;

  // True for a fallback provider: it gets conn_add only when no primary
  // provider accepted the connection.
  virtual bool is_fallback() const { return false; }

  // Called once by Registry::add(); non-zero refuses the registration.
  virtual int init() { return 0; }
  // After init() failed: a sentence saying why ("this kernel has no
  // nftables flowtables"), used in the registry's error; may be empty.
  virtual std::string init_failure() const { return {}; }

  // The RFC's callbacks.  The defaults are what a NULL member of a C class
  // means: can_offload says yes, conn_update knows nothing.  has_conn_add()
  // false means there is no conn_add at all: it is never called and the
  // provider never counts as having accepted a connection;
  // has_conn_established() says whether conn_established is implemented.
  // has_can_offload() false says the provider takes every connection it is
  // offered, so conn_add need not ask can_offload first (a NULL
  // can_offload in a C class); the default is to ask.
  virtual bool has_conn_add() const { return true; }
  virtual int conn_add(const Ctx& ctx) = 0;
  virtual void conn_del(const Ctx& ctx) = 0;
  virtual long long conn_update(const Ctx& /*ctx*/) { return 0; }
  virtual bool has_conn_established() const { return false; }
  virtual void conn_established(const Ctx& /*ctx*/) {}
  virtual bool has_can_offload() const { return true; }
  virtual bool can_offload(const Ctx& /*ctx*/) { return true; }
  virtual void flush() {}

  // Batch: when has_batch() is true, the registry hands the ops meant for
  // this provider to batch_submit() in one call; it must set every op's
  // 'error' (and 'last_used' for UPD) as the single callbacks would.
  virtual bool has_batch() const { return false; }
  virtual void batch_submit(std::span<Op> /*ops*/) {}

  // Fills 'status' and returns true if this provider holds ctx.conn.
  virtual bool conn_query(const Ctx& /*ctx*/, ConnStatus* /*status*/) { return false; }
};

}  // namespace ctoffload
