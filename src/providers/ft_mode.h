// ft_mode.h - how a connection or a device is offloaded: one type for the
// kernel provider, its table layout, its `show` and the C API.
//
// FtMode names the flowtable something is in (kSw: `ft_sw`, the software
// flowtable; kHw: `ft_hw`, the one with `flags offload`) or kNone.  A
// device's mode is the flowtable it joined; a selection set's, the
// flowtable its rule `flow add`s to; a connection's, what the kernel made
// of it (conntrack's OFFLOAD / HW_OFFLOAD).  Its values are the C API's
// enum ct_offload_mode, so crossing to C is a cast (to_c).
//
// Not the same concept: HwOffload (nft_flowtable.h), the configuration's
// policy for asking devices for hardware offload (auto, on, off).
#pragma once

#include <cstdint>
#include <string_view>

#include "ctoffload/ct-offload.h"

namespace ctoffload {

enum class FtMode : uint8_t {
  kNone = CT_OFFLOAD_MODE_NONE,
  kSw = CT_OFFLOAD_MODE_SW,
  kHw = CT_OFFLOAD_MODE_HW,
};

constexpr ct_offload_mode to_c(FtMode m) { return static_cast<ct_offload_mode>(m); }

// "none", "sw", "hw": what `show` and `show -j` print.
constexpr std::string_view ft_mode_name(FtMode m) {
  switch (m) {
    case FtMode::kNone:
      return "none";
    case FtMode::kSw:
      return "sw";
    case FtMode::kHw:
      return "hw";
  }
  return "?";
}

// The C API's mode as a name ("none" for a value it does not define).
constexpr std::string_view ft_mode_name(ct_offload_mode m) {
  return m == CT_OFFLOAD_MODE_SW || m == CT_OFFLOAD_MODE_HW ? ft_mode_name(static_cast<FtMode>(m)) : "none";
}

}  // namespace ctoffload
