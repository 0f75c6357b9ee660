// reopen.cc - the log line of the reopen policy.
#include "netlink/reopen.h"

#include <string>

#include "log.h"

namespace ctoffload::netlink {

void note_socket_reopen(std::string_view socket, std::string_view why) {
  log::get("netlink")->warn("{} socket failed ({}); reopening it and asking once more", socket, why);
}

}  // namespace ctoffload::netlink
