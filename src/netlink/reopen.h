// reopen.h - the one "reopen the socket once and ask again" policy.
//
// A netlink socket can fail for good under a client: its descriptor closed
// or replaced by someone else's bug (EBADF, ENOTSOCK: socket_gone() in
// transport.h).  Every client that asks the kernel a question it may ask
// twice handles that the same way, here: a new socket, and the question
// once more.  Once only: a socket that fails again right after it was
// opened has a cause a third one will not cure.
//
// Only for requests that are safe to send twice: reads, and deletes whose
// second answer (ENOENT, "no such entry") the caller takes as done.  A
// write whose outcome is unknown (an nf_tables batch whose acks were lost
// with the socket) is settled by reading the kernel back, not here.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "ctoffload/result.h"
#include "netlink/transport.h"

namespace ctoffload::netlink {

// Logs, once per reopen, that the 'socket' socket failed for good ('why')
// and that a new one is opened.
void note_socket_reopen(std::string_view socket, std::string_view why);

// Runs 'attempt' (returning a Status or a Result).  When it fails because
// its socket is gone, reopens the socket with 'reopen' (returning a Status)
// and runs 'attempt' once more, unless 'repeatable' is set and says no (a
// request part of whose answer was already consumed): the first error then
// stands.  Returns what the last attempt returned, or the error of
// 'reopen' with "reopen 'socket' socket" as context when no new socket
// could be opened.  'socket' names the socket in logs and errors
// ("ctnetlink", "nf_tables").
template <typename Attempt, typename Reopen>
auto reopen_once_and_resend(std::string_view socket, Attempt&& attempt, Reopen&& reopen,
                            const std::function<bool()>& repeatable = {}) -> decltype(attempt()) {
  auto first = attempt();
  if (first.ok() || !socket_gone(first.err())) return first;
  note_socket_reopen(socket, first.message());
  if (Status r = std::forward<Reopen>(reopen)(); !r) {
    return std::move(r.with_context("reopen " + std::string(socket) + " socket"));
  }
  if (repeatable && !repeatable()) return first;
  return attempt();
}

}  // namespace ctoffload::netlink
