// cli.cc - ctoffloadctl's commands over the registry.
//
// Every command builds the same registry a datapath would, through
// module_init(), but only with providers whose work outlives the command:
// by default the kernel provider alone.  Kernel state lives in the kernel,
// so one-shot commands (add in one process, show or del in the next) agree
// across processes; the software provider's cache lives in this process
// only, so it is used only when --providers names it, and the output says
// so when it is the one that took a connection.  A command whose providers
// could not start fails with the kernel provider's reason rather than
// report success for something that evaporates when it exits.
#include "cli/cli.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "builtins.h"
#include "cli/json.h"
#include "cli/line_reader.h"
#include "ctoffload/registry.h"
#include "errno_text.h"
#include "log.h"
#include "netlink/link.h"
#include "netlink/nl_error.h"
#include "providers/nft_flowtable.h"

namespace ctoffload::cli {
namespace {

// ---- Usage ----

constexpr const char* kUsage = R"(usage: ctoffloadctl [-j|--json] [--table NAME] [--providers LIST]
                    [--hw-offload auto|on|off] [-o KEY=VALUE]... [-v] COMMAND ...

Pushes connections into the nftables flowtable fast path (or the software
fallback) and reports when each was last used.

commands:
  probe                what this host can do: flowtables, privileges, providers
  add                  offload one connection
  del                  stop offloading one connection
  show                 offloaded connections
  update               refresh and print one connection's last used time
  flush                stop offloading every connection
  batch [FILE|-]       run add/del/update/flush lines as they arrive, in batches
  watch                show, repeated, with last used ticking

global options:
  -j, --json           JSON output
  --table NAME         the kernel provider's nftables table (default ctoffload)
  --providers LIST     providers to use, in order (default nft_flowtable).  The
                       software fallback keeps its cache inside this process,
                       so name it (nft_flowtable,software) only where the
                       process lives on, as a long-running batch does
  --hw-offload MODE    ask for hardware offload: auto (devices advertising
                       hw-tc-offload), on (every device), off
  -o, --option KEY=VALUE
                       any configuration key, e.g. -o nft_flowtable.capacity=2000000
                       (the keys: docs/ARCHITECTURE.md, "Configuration")
  -v                   log what happens (-vv for debug) to stderr
  -h, --help           this text; COMMAND --help for a command's

exit status: 0 success, 1 an operation failed, 2 usage error.
)";

constexpr const char* kConnOptions = R"(  --iif DEV            input device of the original direction; add without it
                       uses the device of the route towards --src
  --proto tcp|udp
  --src ADDR:PORT      original source, e.g. 10.0.0.1:40000 or [fd00::1]:40000
  --dst ADDR:PORT      original destination
  --reply-src ADDR:PORT, --reply-dst ADDR:PORT
                       the reply tuple under NAT, as `conntrack -L` shows it;
                       without them the reply is the mirror of the original
  --zone N             conntrack zone (default 0)
)";

std::string command_usage(std::string_view cmd) {
  if (cmd == "probe") {
    return "usage: ctoffloadctl probe [--device DEV]...\n\n"
           "Tells whether this kernel has flowtables and we may use them, which\n"
           "providers are available, and (for each --device) whether the device\n"
           "advertises hardware TC offload.  Installs nothing.\n";
  }
  if (cmd == "add")
    return std::string(
               "usage: ctoffloadctl add [--iif DEV] --proto tcp|udp --src A:P --dst A:P [...]\n\n"
               "Offloads the connection in the kernel's flowtable; exit status 1 and the\n"
               "reason when it is not (a device that does not exist is ENODEV).\n\n") +
           kConnOptions;
  if (cmd == "del") {
    return std::string(
               "usage: ctoffloadctl del [--iif DEV] --proto tcp|udp --src A:P --dst A:P [...]\n\n"
               "Stops the offload at once; the connection goes on on the slow path.\n\n") +
           kConnOptions;
  }
  if (cmd == "update") {
    return std::string(
               "usage: ctoffloadctl update --proto tcp|udp --src A:P --dst A:P [...]\n\n"
               "Refreshes and prints the connection's last used time: ms since the\n"
               "Unix epoch of the first reading - by any process of this table - that\n"
               "saw its counters move; 0 (\"unknown\") when no reading has yet.\n\n") +
           kConnOptions;
  }
  if (cmd == "show") {
    return "usage: ctoffloadctl show [--iif DEV] [--zone N]\n\n"
           "Offloaded connections, one per line (or {\"connections\": [...]} with -j).\n";
  }
  if (cmd == "flush") return "usage: ctoffloadctl flush\n\nStops offloading every connection we hold.\n";
  if (cmd == "batch") {
    return "usage: ctoffloadctl batch [--batch-size N] [--flush-ms MS] [FILE|-]\n\n"
           "Reads one operation per line (add/del/update/flush, with the options of\n"
           "those commands; '#' starts a comment) from FILE (a fifo will do) or\n"
           "standard input, and runs the lines as they arrive: a batch goes out when\n"
           "it holds N lines (default 1024) or when no line came for MS milliseconds\n"
           "(default 5; 0: at once), so one process can be kept open and fed.\n"
           "Prints one result per line that holds an operation, in input order, as\n"
           "soon as its batch has run, then a summary at the end of input:\n"
           "  line N: ok [last-used MS]          line N: error ERRNO: message\n"
           "  X ok, Y failed\n"
           "With -j, JSON Lines: {\"line\":N,\"ok\":true,\"op\":\"add\",\"connection\":...}\n"
           "per result and {\"ok\":X,\"failed\":Y} last.  A bad line is reported with\n"
           "its number and the others still run.  Exit status 1 when a line failed.\n";
  }
  if (cmd == "watch") {
    return "usage: ctoffloadctl watch [--interval MS] [--count N] [--iif DEV] [--zone N]\n\n"
           "Runs show every MS milliseconds (default 1000), N times (default: until\n"
           "interrupted).  Last used is when the kernel's packet counters last moved,\n"
           "so the first line comes one interval after a silent first reading.\n";
  }
  return kUsage;
}

// ---- Small helpers ----

struct UsageError {
  std::string message;
};

std::string errno_label(int err) { return netlink::errno_name(err); }

std::string error_line(int err, const std::string& what) {
  return what + ": " + errno_text(err) + " (" + errno_label(err) + ")";
}

// Reads "--name value" or "--name=value" from args[i]; advances i.
std::optional<std::string> take_value(const std::vector<std::string>& args, size_t& i, std::string_view name) {
  const std::string& a = args[i];
  if (a == name) {
    if (i + 1 >= args.size()) throw UsageError{"option " + std::string(name) + " needs a value"};
    return args[++i];
  }
  if (a.size() > name.size() && a.compare(0, name.size(), name) == 0 && a[name.size()] == '=') {
    return a.substr(name.size() + 1);
  }
  return std::nullopt;
}

bool has_help(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "-h" || a == "--help") return true;
  }
  return false;
}

Result<uint16_t> parse_zone(const std::string& text) {
  auto v = parse_uint(text, 0, 65535);
  if (!v) return Status::error(EINVAL, "bad --zone '" + text + "' (expected 0-65535)");
  return static_cast<uint16_t>(*v);
}

// ---- Globals and the registry ----

struct Globals {
  bool json = false;
  int verbose = 0;
  std::optional<std::string> table;
  std::optional<std::string> providers;
  std::optional<std::string> hw_offload;
  // -o KEY=VALUE, in order (configuration keys, docs/ARCHITECTURE.md).
  std::vector<std::pair<std::string, std::string>> options;
};

// The providers a command uses when --providers is not given: the kernel's
// table is the one record every process sees, so what one command did is
// what the next one finds.
constexpr const char* kDefaultProviders = NftFlowtableProvider::kName;

// What a command needs of the registry.
struct Profile {
  // Providers when --providers is not given; null: every built-in, for
  // probe, which reports on all of them.
  const char* providers = kDefaultProviders;
  // The kernel provider reads each connection of an existing table when an
  // operation first names it instead of all of them at start, so that a
  // one-shot add, del or update costs the same with a million connections
  // in the table as with none.
  bool lazy_adoption = false;
};

// The registry is set up on first use, after the command has parsed its
// arguments: a usage error is reported as one even where the providers
// could not start (no CAP_NET_ADMIN, no flowtables).
Status setup(const Globals& g, const Profile& p, Registry& reg, Status& init_status) {
  // The CLI reports failures itself; the library's own log lines show with
  // -v (or CTOFFLOAD_LOG), not by default.
  if (g.verbose) {
    (void)log::set_level(g.verbose > 1 ? "debug" : "info");
  } else if (!std::getenv("CTOFFLOAD_LOG")) {  // NOLINT(concurrency-mt-unsafe): one thread, nothing sets it
    (void)log::set_level("error");
  }
  Config& cfg = reg.config();
  if (g.providers || p.providers) {
    if (auto st = cfg.set("priority", g.providers ? *g.providers : p.providers); !st) return st;
  }
  if (g.table) {
    if (auto st = cfg.set("nft_flowtable.table", *g.table); !st) return st;
  }
  if (g.hw_offload) {
    if (auto st = cfg.set("nft_flowtable.hw_offload", *g.hw_offload); !st) return st;
  }
  if (p.lazy_adoption) {
    if (auto st = cfg.set("nft_flowtable.adopt", "lazy"); !st) return st;
  }
  // Last, so that an explicit -o wins over the command's own choices.
  for (const auto& [key, value] : g.options) {
    if (auto st = cfg.set(key, value); !st)
      return st.with_context(std::string("-o ").append(key).append("=").append(value));
  }
  init_status = reg.module_init();
  return {};
}

class Session {
 public:
  Session(const Globals& g, const Profile& p) : g_(g), profile_(p) {}
  Registry& reg() {
    if (!ready_) {
      ready_ = true;
      if (auto st = setup(g_, profile_, reg_, init_status_); !st) throw UsageError{st.message()};
    }
    return reg_;
  }
  // What module_init() said (unavailable providers).
  const Status& init_status() {
    (void)reg();
    return init_status_;
  }

 private:
  const Globals& g_;
  const Profile& profile_;
  Registry reg_;  // Our own: each run() starts from the configuration it is given.
  Status init_status_;
  bool ready_ = false;
};

std::shared_ptr<NftFlowtableProvider> kernel_provider(Session& s) {
  return std::dynamic_pointer_cast<NftFlowtableProvider>(s.reg().find(NftFlowtableProvider::kName));
}

// Why the kernel provider did not start: its errno and a sentence.  The
// registry's status carries the errno; probe() says in words what is
// missing (flowtables, CAP_NET_ADMIN), so it is asked, on this failure
// path only.
Status kernel_unavailable(Session& s) {
  const Status& init = s.init_status();
  const NftProbe p = NftFlowtableProvider::probe();
  const int code = p.err ? p.err : init.err() ? init.err() : ENOENT;
  std::string why = p.err ? p.reason : init.message();
  if (why.find(errno_label(code)) == std::string::npos) why += " (" + errno_label(code) + ")";
  return Status::error(
      code, "the kernel provider (" + std::string(NftFlowtableProvider::kName) + ") is not available: " + why);
}

// Whether the kernel provider is among those this command uses.
bool kernel_enabled(Session& s) {
  const auto enabled = s.reg().config().priority();
  return std::find(enabled.begin(), enabled.end(), NftFlowtableProvider::kName) != enabled.end();
}

// Why the kernel provider, asked for, did not start ("" when it did or was
// not asked for): the context of what happened instead.
std::string kernel_absence(Session& s) {
  if (kernel_provider(s) || !kernel_enabled(s)) return {};
  return kernel_unavailable(s).message();
}

// Ok when a provider started.  Otherwise the error every command that
// dispatches reports instead of doing nothing and calling it success.
Status providers_started(const Globals& g, Session& s) {
  if (!s.reg().providers().empty()) return {};
  Status st = kernel_unavailable(s);
  if (g.providers) return st;
  return Status::error(st.err(), st.message() +
                                     "; nothing was done (the software fallback is used only when --providers "
                                     "names it: its cache ends with this process)");
}

// ---- Argument parsing of one operation ----

Result<OpSpec> parse_op_impl(const std::vector<std::string>& words) {
  if (words.empty()) return Status::error(EINVAL, "empty operation");
  OpSpec op;
  const std::string& cmd = words[0];
  if (cmd == "add") {
    op.type = CT_OFFLOAD_OP_ADD;
  } else if (cmd == "del") {
    op.type = CT_OFFLOAD_OP_DEL;
  } else if (cmd == "update") {
    op.type = CT_OFFLOAD_OP_UPD;
  } else if (cmd == "flush") {
    op.type = CT_OFFLOAD_OP_FLUSH;
    if (words.size() > 1) return Status::error(EINVAL, "flush takes no options, got '" + words[1] + "'");
    return op;
  } else {
    return Status::error(EINVAL, "unknown operation '" + cmd + "' (expected add, del, update or flush)");
  }
  std::optional<std::string> iif, proto, src, dst, rsrc, rdst, zone;
  for (size_t i = 1; i < words.size(); ++i) {
    std::optional<std::string> v;
    try {
      if ((v = take_value(words, i, "--iif"))) {
        iif = v;
      } else if ((v = take_value(words, i, "--proto"))) {
        proto = v;
      } else if ((v = take_value(words, i, "--src"))) {
        src = v;
      } else if ((v = take_value(words, i, "--dst"))) {
        dst = v;
      } else if ((v = take_value(words, i, "--reply-src"))) {
        rsrc = v;
      } else if ((v = take_value(words, i, "--reply-dst"))) {
        rdst = v;
      } else if ((v = take_value(words, i, "--zone"))) {
        zone = v;
      } else {
        return Status::error(EINVAL, "unknown option '" + words[i] + "' for " + cmd);
      }
    } catch (const UsageError& e) {
      return Status::error(EINVAL, e.message);
    }
  }
  if (!proto) return Status::error(EINVAL, cmd + " needs --proto tcp|udp");
  if (!src) return Status::error(EINVAL, cmd + " needs --src ADDR:PORT");
  if (!dst) return Status::error(EINVAL, cmd + " needs --dst ADDR:PORT");
  if (rsrc.has_value() != rdst.has_value()) {
    return Status::error(EINVAL, "--reply-src and --reply-dst go together");
  }
  auto p = parse_proto(*proto);
  if (!p) return p.status();
  auto s = parse_endpoint(*src);
  if (!s) return s.status().with_context("--src");
  auto d = parse_endpoint(*dst);
  if (!d) return d.status().with_context("--dst");
  std::optional<Endpoint> rs, rd;
  if (rsrc) {
    auto r1 = parse_endpoint(*rsrc);
    if (!r1) return r1.status().with_context("--reply-src");
    auto r2 = parse_endpoint(*rdst);
    if (!r2) return r2.status().with_context("--reply-dst");
    rs = *r1;
    rd = *r2;
  }
  uint16_t z = 0;
  if (zone) {
    auto zz = parse_zone(*zone);
    if (!zz) return zz.status();
    z = *zz;
  }
  auto conn = make_conn(*p, *s, *d, rs, rd, z);
  if (!conn) return conn.status();
  op.conn = *conn;
  if (iif) {
    auto dev = make_netdev(*iif);
    if (!dev) return dev.status().with_context("--iif");
    if (iif->empty()) return Status::error(EINVAL, "--iif needs a device name");
    op.dev = *dev;
    op.has_dev = true;
  }
  return op;
}

// ---- Output of connections ----

struct ShowFilter {
  std::optional<std::string> iif;
  std::optional<uint16_t> zone;
};

void write_conn_json(JsonWriter& j, const NftConnInfo& c) {
  const Conn& k = c.conn;
  j.begin_object()
      .field("zone", static_cast<uint64_t>(k.zone))
      .field("proto", proto_name(k.proto))
      .field("family", std::string(k.family == AF_INET ? "ipv4" : "ipv6"))
      .field("src", format_endpoint(k.family, k.orig.src, k.orig.src_port))
      .field("dst", format_endpoint(k.family, k.orig.dst, k.orig.dst_port))
      .field("reply_src", format_endpoint(k.family, k.reply.src, k.reply.src_port))
      .field("reply_dst", format_endpoint(k.family, k.reply.dst, k.reply.dst_port))
      .field("iif", c.iif)
      .field("reply_iif", c.reply_iif)
      .field("provider", NftFlowtableProvider::kName)
      // What the kernel made of it (hw, sw, none yet), and what was asked.
      .field("mode", std::string(ft_mode_name(c.mode)))
      .field("flowtable", c.flowtable == FtMode::kHw ? std::string("ft_hw") : std::string("ft_sw"))
      .field("offloaded", c.offloaded)
      .field("hw_offloaded", c.hw_offloaded)
      .field("in_conntrack", c.in_conntrack)
      .field("counters", c.has_counters)
      .field("packets", c.packets)
      .field("bytes", c.bytes)
      .field("last_used_ms", static_cast<int64_t>(c.last_used_ms))
      // 0 above is not a time: no reading by any process has seen the
      // counters move yet (or the entry has none).
      .field("last_used_known", c.last_used_ms > 0)
      .end_object();
}

std::string conn_line(const NftConnInfo& c) {
  std::ostringstream o;
  o << format_conn(c.conn) << " iif " << (c.iif.empty() ? "?" : c.iif);
  if (!c.reply_iif.empty()) o << " reply-iif " << c.reply_iif;
  o << " flowtable " << (c.flowtable == FtMode::kHw ? "ft_hw" : "ft_sw") << " mode " << ft_mode_name(c.mode)
    << " offloaded " << (c.offloaded ? "yes" : "no");
  if (c.has_counters) {
    o << " packets " << c.packets << " bytes " << c.bytes;
  } else {
    o << " counters unknown";
  }
  o << " last-used " << format_time_ms(c.last_used_ms);
  return o.str();
}

std::vector<NftConnInfo> filtered(std::vector<NftConnInfo> all, const ShowFilter& f) {
  std::vector<NftConnInfo> out;
  for (auto& c : all) {
    if (f.iif && c.iif != *f.iif && c.reply_iif != *f.iif) continue;
    if (f.zone && c.conn.zone != *f.zone) continue;
    out.push_back(std::move(c));
  }
  return out;
}

// ---- Commands ----

int cmd_probe(const Globals& g, Session& s, const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err) {
  std::vector<std::string> devices;
  for (size_t i = 1; i < args.size(); ++i) {
    if (auto v = take_value(args, i, "--device")) {
      devices.push_back(*v);
    } else {
      throw UsageError{"unknown option '" + args[i] + "' for probe"};
    }
  }
  NftProbe probe = NftFlowtableProvider::probe();

  struct ProviderRow {
    std::string name;
    bool fallback;
    bool enabled;
    bool registered;
  };
  std::vector<ProviderRow> rows;
  // Every built-in is started to tell whether it is available; 'enabled'
  // says whether the other commands use it (kDefaultProviders unless
  // --providers names others).
  Config used;
  (void)used.set("priority", g.providers ? *g.providers : kDefaultProviders);
  (void)s.reg();  // Refuses a bad --providers as a usage error first.
  const auto enabled = used.priority();
  for (const auto& b : builtins()) {
    bool en = std::find(enabled.begin(), enabled.end(), b.name) != enabled.end();
    rows.push_back({b.name, b.fallback, en, s.reg().find(b.name) != nullptr});
  }

  struct DeviceRow {
    std::string name;
    Status status;
    netlink::FeatureState hw;
    int ifindex = 0;
  };
  std::vector<DeviceRow> devs;
  if (!devices.empty()) {
    auto link = netlink::LinkClient::open();
    for (const auto& d : devices) {
      DeviceRow row{d, {}, {}, 0};
      if (!link) {
        row.status = link.status();
      } else if (auto idx = link->ifindex(d); !idx) {
        row.status = idx.status();
      } else {
        row.ifindex = *idx;
        auto hw = link->hw_tc_offload(d);
        if (hw) {
          row.hw = *hw;
        } else {
          row.status = hw.status();
        }
      }
      devs.push_back(std::move(row));
    }
  }

  if (g.json) {
    JsonWriter j;
    j.begin_object()
        .field("flowtable", probe.flowtable)
        .field("reason", probe.reason)
        .field("privileges", probe.privileges)
        .field("errno", probe.err ? errno_label(probe.err) : std::string())
        .key("providers")
        .begin_array();
    for (const auto& r : rows) {
      j.begin_object()
          .field("name", r.name)
          .field("fallback", r.fallback)
          .field("enabled", r.enabled)
          .field("available", r.registered)
          .end_object();
    }
    j.end_array().key("devices").begin_array();
    for (const auto& d : devs) {
      j.begin_object().field("name", d.name).field("ifindex", static_cast<int64_t>(d.ifindex));
      if (d.status.ok()) {
        j.field("hw_tc_offload", d.hw.active).field("hw_tc_offload_available", d.hw.available);
      } else {
        j.field("error", d.status.to_string());
      }
      j.end_object();
    }
    j.end_array().end_object();
    out << j.str() << "\n";
  } else {
    out << "flowtables: " << (probe.flowtable ? "yes" : "no") << " - " << probe.reason << "\n";
    out << "privileges: " << (probe.privileges ? "CAP_NET_ADMIN (nf_tables accepts our transactions)" : "insufficient")
        << "\n";
    out << "providers (dispatch order):\n";
    for (const auto& r : rows) {
      out << "  " << r.name << (r.fallback ? " (fallback)" : "") << ": "
          << (r.enabled ? (r.registered ? "available" : "unavailable")
                        : (r.registered ? "available, not used unless --providers names it" : "disabled"))
          << "\n";
    }
    if (!s.init_status().ok()) out << "  why: " << s.init_status().message() << "\n";
    for (const auto& d : devs) {
      out << "device " << d.name << ": ";
      if (!d.status.ok()) {
        out << d.status.to_string() << "\n";
      } else {
        out << "ifindex " << d.ifindex << ", hw-tc-offload " << (d.hw.active ? "on" : "off")
            << (d.hw.available ? "" : " (not supported by the driver)") << "\n";
      }
    }
  }
  (void)err;
  return kExitOk;
}

Ctx ctx_for(const OpSpec& op) {
  Ctx ctx{};
  ctx.conn = &op.conn;
  ctx.netdev_in = op.has_dev ? &op.dev : nullptr;
  ctx.input_port_id = 0;
  return ctx;
}

const char* op_name(ct_offload_op_type type) {
  switch (type) {
    case CT_OFFLOAD_OP_ADD:
      return "add";
    case CT_OFFLOAD_OP_DEL:
      return "del";
    case CT_OFFLOAD_OP_UPD:
      return "update";
    case CT_OFFLOAD_OP_FLUSH:
      return "flush";
    default:
      return "?";
  }
}

// "add tcp 10.0.0.1:1 -> 10.0.0.2:80 zone 0 on veth0": what 'op' asked for.
std::string op_text(const OpSpec& op) {
  std::string t = op_name(op.type);
  if (op.type == CT_OFFLOAD_OP_FLUSH) return t;
  t += " " + format_conn(op.conn);
  if (op.has_dev) t += " on " + std::string(op.dev.name);
  return t;
}

// Errors of the route lookup that picks the input device of an add
// without --iif (NftDeviceDirectory::route_oif).
bool route_error(int err) { return err == ENETUNREACH || err == EHOSTUNREACH || err == EADDRNOTAVAIL || err == ENODEV; }

// The message of 'op' failing with 'err': what was asked, then why, naming
// the device or the route when one of them is the cause.  The provider's
// own sentence stays in its log (-v); this one says enough to act on.
std::string op_failure(const OpSpec& op, int err) {
  const std::string what = op_text(op);
  if (op.type == CT_OFFLOAD_OP_ADD) {
    if (err == ENODEV && op.has_dev) {
      return error_line(err, what + ": input device '" + std::string(op.dev.name) + "'") +
             " - no such device in this network namespace";
    }
    if (!op.has_dev && route_error(err)) {
      return error_line(err, what + ": no --iif, and the route towards " +
                                 format_address(op.conn.family, op.conn.orig.src) + " names no input device");
    }
    if (err == EEXIST) return error_line(err, what) + " - already offloaded";
  }
  if (err == ENOENT && (op.type == CT_OFFLOAD_OP_DEL || op.type == CT_OFFLOAD_OP_UPD)) {
    return error_line(err, what) + " - no provider holds it";
  }
  if (err == ENODATA && op.type == CT_OFFLOAD_OP_UPD) {
    // Last used is when the counters last moved: it takes two readings.
    return error_line(err, what) + " - no last used known yet";
  }
  return error_line(err, what);
}

// The end of a failed single command: the JSON answer on 'out' with -j,
// the message on 'err' otherwise.
int single_failed(const Globals& g, JsonWriter& j, const Status& st, std::ostream& out, std::ostream& err) {
  j.field("ok", false).field("errno", errno_label(st.err())).field("error", st.message()).end_object();
  if (g.json) {
    out << j.str() << "\n";
  } else {
    err << "ctoffloadctl: " << st.message() << "\n";
  }
  return kExitFailed;
}

int single_add(const Globals& g, Session& s, const OpSpec& op, JsonWriter& j, std::ostream& out, std::ostream& err) {
  const Ctx ctx = ctx_for(op);
  const int e = s.reg().conn_add(ctx);
  auto st = s.reg().conn_query(ctx);
  if (e != 0 || !st) {
    // No error and nobody holds it: no provider's can_offload said yes.
    const int code = e ? e : EOPNOTSUPP;
    std::string msg = e ? op_failure(op, code) : op_failure(op, code) + " - no provider would take it";
    if (auto why = kernel_absence(s); !why.empty()) msg += "; " + why;
    return single_failed(g, j, Status::error(code, msg), out, err);
  }
  const std::string provider = st->provider;
  // Without --iif the kernel provider chose the device; say which.
  std::string iif = op.has_dev ? op.dev.name : "";
  if (iif.empty() && provider == NftFlowtableProvider::kName) {
    if (auto info = kernel_provider(s)->lookup(op.conn)) iif = info->iif;
  }
  j.field("ok", true).field("provider", provider).field("mode", std::string(ft_mode_name(st->mode)));
  if (!iif.empty()) j.field("iif", iif);
  j.end_object();
  if (g.json) {
    out << j.str() << "\n";
  } else {
    out << "added " << format_conn(op.conn);
    if (!iif.empty()) out << " on " << iif << (op.has_dev ? "" : " (the route's)");
    out << ": " << provider << " (" << ft_mode_name(st->mode) << ")\n";
  }
  if (provider != NftFlowtableProvider::kName) {
    const std::string why = kernel_absence(s);
    err << "note: the " << provider << " provider took it; its cache lives in this process only"
        << (why.empty() ? "" : " (" + why + ")") << "\n";
  }
  return kExitOk;
}

int single_del(const Globals& g, Session& s, const OpSpec& op, JsonWriter& j, std::ostream& out, std::ostream& err) {
  const Ctx ctx = ctx_for(op);
  auto before = s.reg().conn_query(ctx);
  s.reg().conn_del(ctx);
  if (!before) return single_failed(g, j, Status::error(ENOENT, op_failure(op, ENOENT)), out, err);
  j.field("ok", true).field("provider", std::string(before->provider)).end_object();
  if (g.json) {
    out << j.str() << "\n";
  } else {
    out << "deleted " << format_conn(op.conn) << " from " << before->provider << "\n";
  }
  return kExitOk;
}

int single_update(const Globals& g, Session& s, const OpSpec& op, JsonWriter& j, std::ostream& out, std::ostream& err) {
  const Ctx ctx = ctx_for(op);
  auto st = s.reg().conn_query(ctx);
  const long long t = s.reg().conn_update(ctx);
  if (!st) return single_failed(g, j, Status::error(ENOENT, op_failure(op, ENOENT)), out, err);
  j.field("ok", true)
      .field("provider", std::string(st->provider))
      .field("last_used_ms", static_cast<int64_t>(t))
      .field("last_used_known", t > 0)
      .field("packets", st->packets)
      .field("bytes", st->bytes)
      .end_object();
  if (g.json) {
    out << j.str() << "\n";
  } else {
    out << format_conn(op.conn) << " last-used " << t << " (" << format_time_ms(t) << ") packets " << st->packets
        << " bytes " << st->bytes << "\n";
  }
  return kExitOk;
}

// add, del and update of one connection.
int cmd_single(const Globals& g, Session& s, const std::vector<std::string>& args, std::ostream& out,
               std::ostream& err) {
  auto op = parse_op_impl(args);
  if (!op) throw UsageError{op.message()};
  JsonWriter j;
  j.begin_object().field("op", args[0]).field("connection", format_conn(op->conn));
  if (Status st = providers_started(g, s); !st) {
    return single_failed(g, j, Status::error(st.err(), op_text(*op) + ": " + st.message()), out, err);
  }
  switch (op->type) {
    case CT_OFFLOAD_OP_ADD:
      return single_add(g, s, *op, j, out, err);
    case CT_OFFLOAD_OP_DEL:
      return single_del(g, s, *op, j, out, err);
    default:
      return single_update(g, s, *op, j, out, err);
  }
}

int show_once(const Globals& g, Session& s, const ShowFilter& f, std::ostream& out, std::ostream& err) {
  auto kp = kernel_provider(s);
  if (!kp) {
    // show lists the kernel's connections only: another process's software
    // cache is out of reach, and this one's is empty.
    const Status st = kernel_enabled(s) ? kernel_unavailable(s)
                                        : Status::error(ENOENT,
                                                        "the kernel provider is not among --providers, and only the "
                                                        "kernel's connections outlive a process");
    const std::string msg = "nothing to show: " + st.message();
    if (g.json) {
      JsonWriter j;
      j.begin_object()
          .key("connections")
          .begin_array()
          .end_array()
          .field("errno", errno_label(st.err()))
          .field("error", msg)
          .end_object();
      out << j.str() << "\n";
    } else {
      err << "ctoffloadctl: " << msg << "\n";
    }
    return kExitFailed;
  }
  auto conns = filtered(kp->entries(), f);
  if (g.json) {
    JsonWriter j;
    j.begin_object().key("connections").begin_array();
    for (const auto& c : conns) write_conn_json(j, c);
    j.end_array().key("devices").begin_array();
    for (const auto& d : kp->devices()) {
      j.begin_object()
          .field("name", d.name)
          .field("ifindex", static_cast<int64_t>(d.ifindex))
          .field("mode", std::string(ft_mode_name(d.mode)))
          .field("present", d.present)
          .field("connections", static_cast<uint64_t>(d.connections))
          .field("note", d.note)
          .end_object();
    }
    j.end_array().end_object();
    out << j.str() << "\n";
  } else {
    for (const auto& c : conns) out << conn_line(c) << "\n";
    if (conns.empty()) out << "no offloaded connections\n";
  }
  return kExitOk;
}

int cmd_show(const Globals& g, Session& s, const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  ShowFilter f;
  for (size_t i = 1; i < args.size(); ++i) {
    if (auto v = take_value(args, i, "--iif")) {
      f.iif = v;
    } else if (auto z = take_value(args, i, "--zone")) {
      auto zz = parse_zone(*z);
      if (!zz) throw UsageError{zz.message()};
      f.zone = *zz;
    } else {
      throw UsageError{"unknown option '" + args[i] + "' for show"};
    }
  }
  return show_once(g, s, f, out, err);
}

std::atomic<bool> g_interrupted{false};

int cmd_watch(const Globals& g, Session& s, const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err) {
  ShowFilter f;
  uint64_t interval = 1000, count = 0;
  for (size_t i = 1; i < args.size(); ++i) {
    if (auto v = take_value(args, i, "--interval")) {
      auto n = parse_uint(*v, 10, 3600000);
      if (!n) throw UsageError{"--interval: " + n.message()};
      interval = *n;
    } else if (auto c = take_value(args, i, "--count")) {
      auto n = parse_uint(*c, 1, UINT32_MAX);
      if (!n) throw UsageError{"--count: " + n.message()};
      count = *n;
    } else if (auto d = take_value(args, i, "--iif")) {
      f.iif = d;
    } else if (auto z = take_value(args, i, "--zone")) {
      auto zz = parse_zone(*z);
      if (!zz) throw UsageError{zz.message()};
      f.zone = *zz;
    } else {
      throw UsageError{"unknown option '" + args[i] + "' for watch"};
    }
  }
  g_interrupted = false;
  auto prev = std::signal(SIGINT, [](int) { g_interrupted = true; });
  auto pause = [&] {
    for (uint64_t waited = 0; waited < interval && !g_interrupted; waited += 10) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  // Last used is when the kernel's counters last moved, so it takes two
  // readings to know: a silent first one, one interval before the first
  // line, so that line already says when traffic last flowed.
  if (auto kp = kernel_provider(s)) {
    (void)kp->entries();
    pause();
  }
  int rc = kExitOk;
  for (uint64_t n = 0; (count == 0 || n < count) && !g_interrupted; ++n) {
    if (!g.json) out << "--- " << format_time_ms(static_cast<long long>(std::time(nullptr)) * 1000) << "\n";
    rc = show_once(g, s, f, out, err);
    out.flush();
    if (rc != kExitOk) break;
    if (count != 0 && n + 1 == count) break;
    pause();
  }
  (void)std::signal(SIGINT, prev);
  return rc;
}

int cmd_flush(const Globals& g, Session& s, const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err) {
  if (args.size() > 1) throw UsageError{"flush takes no options, got '" + args[1] + "'"};
  if (Status st = providers_started(g, s); !st) {
    JsonWriter j;
    j.begin_object().field("op", "flush");
    return single_failed(g, j, Status::error(st.err(), "flush: " + st.message()), out, err);
  }
  s.reg().flush();
  if (g.json) {
    out << "{\"op\":\"flush\",\"ok\":true}\n";
  } else {
    out << "flushed\n";
  }
  return kExitOk;
}

// ---- batch ----

// One result line of a batch: a line that failed to parse, or an op.
struct BatchEntry {
  size_t number = 0;
  Status parse;     // Failed: the line's result.  Ok: 'spec' is its op.
  size_t spec = 0;  // Index into BatchRun's specs.
};

// Lines read but not yet answered, and their answers.  Lines are answered
// in input order, a batch at a time, each batch's output flushed at once
// so that a process feeding the batch line by line sees its answers
// without waiting for more input.
class BatchRun {
 public:
  BatchRun(const Globals& g, Session& s, std::ostream& out) : g_(g), s_(s), out_(out) {}

  // Takes one input line; blank and comment lines give no result.
  void add(const InputLine& line) {
    if (line.too_long) {
      entries_.push_back(
          {line.number, Status::error(EINVAL, "line longer than " + std::to_string(kMaxLine) + " bytes")});
      return;
    }
    auto words = split_words(line.text);
    if (words.empty()) return;
    auto op = parse_op_impl(words);
    if (!op) {
      entries_.push_back({line.number, op.status()});
      return;
    }
    specs_.push_back(*op);
    entries_.push_back({line.number, {}, specs_.size() - 1});
  }

  // Lines waiting for an answer.
  size_t pending() const { return entries_.size(); }

  // Runs the pending ops as one batch and writes every pending line's
  // result.  False when the output cannot be written (its reader is gone).
  bool run() {
    if (entries_.empty()) return true;
    std::vector<Op> ops;
    ops.reserve(specs_.size());
    for (const auto& sp : specs_) ops.push_back(Op{sp.type, ctx_for(sp), 0, 0});
    if (!ops.empty()) s_.reg().submit(ops);
    std::string text;
    for (const auto& e : entries_) text += result_line(e, e.parse.ok() ? &ops[e.spec] : nullptr);
    entries_.clear();
    specs_.clear();  // After the results: the ops' contexts point into it.
    out_ << text;
    out_.flush();
    return static_cast<bool>(out_);
  }

  // The last line: how many results were ok and how many failed.
  bool summary() {
    if (g_.json) {
      JsonWriter j;
      j.begin_object().field("ok", ok_).field("failed", failed_).end_object();
      out_ << j.str() << "\n";
    } else {
      out_ << ok_ << " ok, " << failed_ << " failed\n";
    }
    out_.flush();
    return static_cast<bool>(out_);
  }

  uint64_t failed() const { return failed_; }

  static constexpr size_t kMaxLine = 4096;

 private:
  // "line N: ok ..." or "line N: error ERRNO: message", or its JSON object.
  std::string result_line(const BatchEntry& e, const Op* op) {
    const OpSpec* spec = op ? &specs_[e.spec] : nullptr;
    const int code = op ? op->error : e.parse.err();
    const std::string msg = op ? (code ? op_failure(*spec, code) : "") : e.parse.message();
    code ? ++failed_ : ++ok_;
    const bool upd = op && op->type == CT_OFFLOAD_OP_UPD;
    if (g_.json) {
      JsonWriter j;
      j.begin_object().field("line", static_cast<uint64_t>(e.number)).field("ok", code == 0);
      if (spec) {
        j.field("op", op_name(spec->type));
        if (spec->type != CT_OFFLOAD_OP_FLUSH) j.field("connection", format_conn(spec->conn));
      }
      if (code) j.field("errno", errno_label(code)).field("error", msg);
      if (upd) j.field("last_used_ms", static_cast<int64_t>(op->last_used));
      j.end_object();
      return j.str() + "\n";
    }
    std::string line = "line " + std::to_string(e.number) + ": ";
    if (code) return line + "error " + errno_label(code) + ": " + msg + "\n";
    line += "ok";
    if (upd) line += " last-used " + std::to_string(op->last_used);
    return line + "\n";
  }

  const Globals& g_;
  Session& s_;
  std::ostream& out_;
  std::vector<BatchEntry> entries_;
  // Ops of the pending lines; a deque, so that adding one does not move
  // the others.
  std::deque<OpSpec> specs_;
  uint64_t ok_ = 0, failed_ = 0;
};

// While alive, a write to a pipe nobody reads fails with EPIPE instead of
// killing the process with SIGPIPE, so that batch ends with status 1
// (quietly: there is nobody to tell) when its reader goes away.
class SigpipeIgnored {
 public:
  SigpipeIgnored() {
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    saved_ = sigaction(SIGPIPE, &ign, &old_) == 0;
  }
  ~SigpipeIgnored() {
    if (saved_) (void)sigaction(SIGPIPE, &old_, nullptr);
  }
  SigpipeIgnored(const SigpipeIgnored&) = delete;
  SigpipeIgnored& operator=(const SigpipeIgnored&) = delete;

 private:
  struct sigaction old_ {};
  bool saved_ = false;
};

// The batch input: standard input for "-", else 'path' opened for reading
// (a fifo blocks here until a writer opens it).  The descriptor and
// whether we must close it.
Result<std::pair<int, bool>> open_input(const std::string& path) {
  if (path == "-") return std::pair{STDIN_FILENO, false};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return netlink::errno_status(errno, "cannot open batch file '" + path + "'");
  return std::pair{fd, true};
}

// Reads lines from 'fd' and answers them through 'b' as they come: a batch
// goes out when it holds 'batch_size' lines or when no line came for
// 'flush_ms' (at once for 0).  Returns ok at the end of input, EPIPE when
// the output went away, or the read error.
Status stream_batch(int fd, BatchRun& b, uint64_t batch_size, uint64_t flush_ms) {
  using Clock = std::chrono::steady_clock;
  const auto gone = [] { return Status::error(EPIPE, "the batch output is closed"); };
  LineReader reader(fd, BatchRun::kMaxLine);
  std::vector<InputLine> lines;
  Clock::time_point deadline{};
  for (;;) {
    int wait = -1;
    if (b.pending()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        if (!b.run()) return gone();
        continue;
      }
      wait = static_cast<int>(left);
    }
    lines.clear();
    auto ev = reader.read(wait, lines);
    if (!ev) return ev.status();
    for (const auto& l : lines) {
      b.add(l);
      if (b.pending() >= batch_size && !b.run()) return gone();
    }
    if (!lines.empty()) deadline = Clock::now() + std::chrono::milliseconds(flush_ms);
    if (*ev == LineReader::Event::kEnd) return {};
  }
}

int cmd_batch(const Globals& g, Session& s, const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err) {
  std::string file = "-";
  uint64_t batch_size = 1024, flush_ms = 5;
  bool have_file = false;
  for (size_t i = 1; i < args.size(); ++i) {
    if (auto v = take_value(args, i, "--batch-size")) {
      auto n = parse_uint(*v, 1, 1u << 20);
      if (!n) throw UsageError{"--batch-size: " + n.message()};
      batch_size = *n;
    } else if (auto f = take_value(args, i, "--flush-ms")) {
      auto n = parse_uint(*f, 0, 60000);
      if (!n) throw UsageError{"--flush-ms: " + n.message()};
      flush_ms = *n;
    } else if (!have_file && (args[i] == "-" || args[i].rfind("--", 0) != 0)) {
      file = args[i];
      have_file = true;
    } else {
      throw UsageError{"unknown argument '" + args[i] + "' for batch"};
    }
  }
  auto in = open_input(file);
  if (!in) {
    err << "ctoffloadctl: " << in.message() << "\n";
    return kExitFailed;
  }
  const auto [fd, owned] = *in;
  struct Closer {
    int fd;
    bool owned;
    ~Closer() {
      if (owned) (void)::close(fd);
    }
  } closer{fd, owned};

  if (Status st = providers_started(g, s); !st) {
    err << "ctoffloadctl: batch: " << st.message() << "\n";
    return kExitFailed;
  }
  const SigpipeIgnored sigpipe;
  BatchRun b(g, s, out);
  Status st = stream_batch(fd, b, batch_size, flush_ms);
  if (st.err() == EPIPE) return kExitFailed;
  // A read error still answers the lines before it, and the summary.
  if (!b.run() || !b.summary()) return kExitFailed;
  if (!st) {
    err << "ctoffloadctl: " << st.message() << "\n";
    return kExitFailed;
  }
  return b.failed() ? kExitFailed : kExitOk;
}

}  // namespace

// ---- Public functions ----

Result<OpSpec> parse_op(const std::vector<std::string>& words) { return parse_op_impl(words); }

std::vector<std::string> split_words(std::string_view line) {
  if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
  // The C locale's white space, without a libc call per character (a batch
  // file of 100,000 lines spent a tenth of its time in isspace()).
  const auto space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  std::vector<std::string> words;
  words.reserve(8);
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && space(line[i])) ++i;
    size_t start = i;
    while (i < line.size() && !space(line[i])) ++i;
    if (i > start) words.emplace_back(line.substr(start, i - start));
  }
  return words;
}

std::string format_time_ms(long long ms) {
  if (ms <= 0) return "unknown";
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  (void)std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  (void)std::snprintf(out, sizeof out, "%s.%03lldZ", buf, ms % 1000);
  return out;
}

// One global option at args[i] (advancing i past its value): true when it
// was one.  They are taken before the command and after it alike.
bool take_global(const std::vector<std::string>& args, size_t& i, Globals& g) {
  const std::string& a = args[i];
  std::optional<std::string> v;
  if (a == "-j" || a == "--json") {
    g.json = true;
  } else if (a == "-v") {
    g.verbose += 1;
  } else if (a == "-vv") {
    g.verbose += 2;
  } else if ((v = take_value(args, i, "--table"))) {
    g.table = v;
  } else if ((v = take_value(args, i, "--providers"))) {
    g.providers = v;
  } else if ((v = take_value(args, i, "--hw-offload"))) {
    g.hw_offload = v;
  } else if ((v = take_value(args, i, "-o")) || (v = take_value(args, i, "--option"))) {
    const size_t eq = v->find('=');
    if (eq == std::string::npos || eq == 0) throw UsageError{"-o needs KEY=VALUE, got '" + *v + "'"};
    g.options.emplace_back(v->substr(0, eq), v->substr(eq + 1));
  } else {
    return false;
  }
  return true;
}

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Globals g;
  size_t i = 0;
  try {
    for (; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a.empty() || a[0] != '-') break;
      if (a == "-h" || a == "--help") {
        out << kUsage;
        return kExitOk;
      }
      if (!take_global(args, i, g)) throw UsageError{"unknown option '" + a + "'"};
    }
    if (i == args.size()) throw UsageError{"missing command"};
    // The command's own arguments, with global options given after it
    // (`ctoffloadctl probe -j`) taken out.
    std::vector<std::string> cmd_args{args[i]};
    for (size_t k = i + 1; k < args.size(); ++k) {
      if (!take_global(args, k, g)) cmd_args.push_back(args[k]);
    }
    const std::string& cmd = cmd_args[0];
    using Handler = int (*)(const Globals&, Session&, const std::vector<std::string>&, std::ostream&, std::ostream&);
    struct Command {
      Handler handler;
      Profile profile;
    };
    // Adoption is lazy (the provider's default, set here explicitly for
    // the one-shot commands): probe names no connection and reports on
    // every built-in; add, del and update name one each; flush reads
    // nothing; show and watch read the whole table when they list it.  A
    // batch uses the configured default (-o nft_flowtable.adopt=full makes
    // it read everything first, for exact capacity from its first op).
    constexpr Profile kLazy{.lazy_adoption = true};
    static const std::map<std::string, Command> commands = {
        {"probe", {cmd_probe, {.providers = nullptr, .lazy_adoption = true}}},
        {"add", {cmd_single, kLazy}},
        {"del", {cmd_single, kLazy}},
        {"update", {cmd_single, kLazy}},
        {"show", {cmd_show, kLazy}},
        {"flush", {cmd_flush, kLazy}},
        {"batch", {cmd_batch, {}}},
        {"watch", {cmd_watch, kLazy}},
    };
    auto it = commands.find(cmd);
    if (it == commands.end()) throw UsageError{"unknown command '" + cmd + "'"};
    if (has_help(cmd_args)) {
      out << command_usage(cmd);
      return kExitOk;
    }
    Session s(g, it->second.profile);
    return it->second.handler(g, s, cmd_args, out, err);
  } catch (const UsageError& e) {
    err << "ctoffloadctl: " << e.message << "\n"
        << "try 'ctoffloadctl --help'" << (i < args.size() ? " or 'ctoffloadctl " + args[i] + " --help'" : "") << "\n";
    return kExitUsage;
  }
}

}  // namespace ctoffload::cli
