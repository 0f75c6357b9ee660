// settle.h - the one policy for a commit whose verdict may be lost:
// commit, see that the outcome is unknown, read the kernel back, resend.
//
// NftTxn::commit() gives each op the kernel's verdict, or "outcome unknown"
// when the verdict was lost and the kernel may have applied the op
// (nft_txn.h).  Every site that commits settles its ops the same way:
//   * Rounds: a site sends at most Settle::rounds() transactions for the
//     same ops, the first send included.  Each site's count is a named
//     constant next to it, with the reason for it.
//   * A lost verdict is never guessed: the site reads the kernel back, and
//     the op is applied when the kernel has what it made (or lacks what it
//     deleted).  An op that does the same sent twice as sent once
//     (idempotent) may be resent without a read back.
//   * An op not applied - by the read back, or refused in a way the site
//     repairs (a restored table, the software flowtable for a device the
//     hardware one refused) - is sent again in the next round, if any.
//   * When the rounds run out, or the read back failed, the op fails with
//     the lost verdict's error (ENOBUFS, ETIMEDOUT, ...): never a success
//     that may be false.
// The sites say how to build their transaction and how to read back, in a
// loop over Settle's rounds; Settle::Round says what becomes of each op.
#pragma once

#include <cstdint>

namespace ctoffload::netlink {

// What reading the kernel back said about an op whose verdict was lost.
enum class ReadBack : uint8_t {
  kFailed,      // The kernel could not be read.
  kApplied,     // The op's effect is there.
  kNotApplied,  // It is not.
  kIdempotent,  // Not read: sending the op again is safe whatever happened.
};

// What becomes of an op after a round.
enum class Fate : uint8_t {
  kApplied,  // Done.
  kResend,   // Sent again in the next round.
  kFailed,   // Fails: with the kernel's error, or the lost verdict's.
};

class Settle {
 public:
  // One send of a site's transaction.
  struct Round {
    int index = 0;   // 0 for the first send.
    int rounds = 1;  // Settle::rounds().
    bool first() const { return index == 0; }
    // A round remains after this one.
    bool more() const { return index + 1 < rounds; }
    // An op the site would send again (not applied, or refused in a way it
    // can repair): resent while a round remains.
    Fate again() const { return more() ? Fate::kResend : Fate::kFailed; }
    // An op whose verdict was lost, once the kernel was read back.
    Fate lost(ReadBack seen) const {
      switch (seen) {
        case ReadBack::kApplied:
          return Fate::kApplied;
        case ReadBack::kNotApplied:
        case ReadBack::kIdempotent:
          return again();
        case ReadBack::kFailed:
          break;
      }
      return Fate::kFailed;
    }
  };

  // 'rounds': sends at most, the first included (at least 1).
  explicit constexpr Settle(int rounds) : rounds_(rounds < 1 ? 1 : rounds) {}
  constexpr int rounds() const { return rounds_; }

  // The rounds, for a plain loop at the site:
  //   for (const Settle::Round& round : kSiteSettle) {
  //     build a transaction of what is pending, commit, settle each op;
  //     break when nothing is left to resend;
  //   }
  // A loop rather than a callback, so that the site's code stays in its
  // function (and under its locks, for clang's analysis).
  class Iterator {
   public:
    constexpr explicit Iterator(Round r) : r_(r) {}
    constexpr const Round& operator*() const { return r_; }
    constexpr Iterator& operator++() {
      ++r_.index;
      return *this;
    }
    constexpr bool operator!=(const Iterator& o) const { return r_.index != o.r_.index; }

   private:
    Round r_;
  };
  constexpr Iterator begin() const { return Iterator(Round{0, rounds_}); }
  constexpr Iterator end() const { return Iterator(Round{rounds_, rounds_}); }

 private:
  int rounds_;
};

}  // namespace ctoffload::netlink
