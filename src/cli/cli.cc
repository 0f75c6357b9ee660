// cli.cc - ctoffloadctl's commands over the registry.
//
// Every command builds the same registry a datapath would: the configured
// built-in providers, in priority order, through module_init().  Kernel
// state lives in the kernel, so one-shot commands (add in one process, show
// or del in the next) work across processes; the software provider's cache
// lives in this process only, which the output says when it is the one that
// took a connection.
#include "cli/cli.h"

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
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "builtins.h"
#include "cli/json.h"
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
                    [--hw-offload auto|on|off] [-v] COMMAND ...

Pushes connections into the nftables flowtable fast path (or the software
fallback) and reports when each was last used.

commands:
  probe                what this host can do: flowtables, privileges, providers
  add                  offload one connection
  del                  stop offloading one connection
  show                 offloaded connections
  update               refresh and print one connection's last used time
  flush                stop offloading every connection
  batch [FILE|-]       run add/del/update/flush lines in batches
  watch                show, repeated, with last used ticking

global options:
  -j, --json           JSON output
  --table NAME         the kernel provider's nftables table (default ctoffload)
  --providers LIST     providers to enable, in order (default nft_flowtable,software)
  --hw-offload MODE    ask for hardware offload: auto (devices advertising
                       hw-tc-offload), on (every device), off
  -v                   log what happens (-vv for debug) to stderr
  -h, --help           this text; COMMAND --help for a command's

exit status: 0 success, 1 an operation failed, 2 usage error.
)";

constexpr const char* kConnOptions = R"(  --iif DEV            input device of the original direction
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
    return std::string("usage: ctoffloadctl add --iif DEV --proto tcp|udp --src A:P --dst A:P [...]\n\n") +
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
               "Refreshes and prints the connection's last used time (ms since the\n"
               "Unix epoch; 0 = never seen used, or unknown).\n\n") +
           kConnOptions;
  }
  if (cmd == "show") {
    return "usage: ctoffloadctl show [--iif DEV] [--zone N]\n\n"
           "Offloaded connections, one per line (or {\"connections\": [...]} with -j).\n";
  }
  if (cmd == "flush") return "usage: ctoffloadctl flush\n\nStops offloading every connection we hold.\n";
  if (cmd == "batch") {
    return "usage: ctoffloadctl batch [--batch-size N] [FILE|-]\n\n"
           "Reads one operation per line (add/del/update/flush, with the options of\n"
           "those commands; '#' starts a comment) and runs them through the registry\n"
           "in batches of N (default 1024).  Prints one result line per operation;\n"
           "a bad line is reported with its line number and the others still run.\n";
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

std::string mode_name(ct_offload_mode m) {
  switch (m) {
    case CT_OFFLOAD_MODE_HW:
      return "hw";
    case CT_OFFLOAD_MODE_SW:
      return "sw";
    default:
      return "none";
  }
}

// ---- Globals and the registry ----

struct Globals {
  bool json = false;
  int verbose = 0;
  std::optional<std::string> table;
  std::optional<std::string> providers;
  std::optional<std::string> hw_offload;
};

// The registry is set up on first use, after the command has parsed its
// arguments: a usage error is reported as one even where the providers
// could not start (no CAP_NET_ADMIN, no flowtables).
Status setup(const Globals& g, Registry& reg, Status& init_status) {
  // The CLI reports failures itself; the library's own log lines show with
  // -v (or CTOFFLOAD_LOG), not by default.
  if (g.verbose) {
    (void)log::set_level(g.verbose > 1 ? "debug" : "info");
  } else if (!std::getenv("CTOFFLOAD_LOG")) {  // NOLINT(concurrency-mt-unsafe): one thread, nothing sets it
    (void)log::set_level("error");
  }
  Config& cfg = reg.config();
  if (g.providers) {
    if (auto st = cfg.set("priority", *g.providers); !st) return st;
  }
  if (g.table) {
    if (auto st = cfg.set("nft_flowtable.table", *g.table); !st) return st;
  }
  if (g.hw_offload) {
    if (auto st = cfg.set("nft_flowtable.hw_offload", *g.hw_offload); !st) return st;
  }
  init_status = reg.module_init();
  return {};
}

class Session {
 public:
  explicit Session(const Globals& g) : g_(g) {}
  Registry& reg() {
    if (!ready_) {
      ready_ = true;
      if (auto st = setup(g_, reg_, init_status_); !st) throw UsageError{st.message()};
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
  Registry reg_;  // Our own: each run() starts from the configuration it is given.
  Status init_status_;
  bool ready_ = false;
};

std::shared_ptr<NftFlowtableProvider> kernel_provider(Session& s) {
  return std::dynamic_pointer_cast<NftFlowtableProvider>(s.reg().find(NftFlowtableProvider::kName));
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
  if (op.type == CT_OFFLOAD_OP_ADD && !iif) return Status::error(EINVAL, "add needs --iif DEV");
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
      .field("mode", std::string(ft_mode_name(c.mode)))
      .field("offloaded", c.offloaded)
      .field("hw_offloaded", c.hw_offloaded)
      .field("in_conntrack", c.in_conntrack)
      .field("counters", c.has_counters)
      .field("packets", c.packets)
      .field("bytes", c.bytes)
      .field("last_used_ms", static_cast<int64_t>(c.last_used_ms))
      .end_object();
}

std::string conn_line(const NftConnInfo& c) {
  std::ostringstream o;
  o << format_conn(c.conn) << " iif " << (c.iif.empty() ? "?" : c.iif);
  if (!c.reply_iif.empty()) o << " reply-iif " << c.reply_iif;
  o << " mode " << ft_mode_name(c.mode) << " offloaded " << (c.offloaded ? "yes" : "no");
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
  auto enabled = s.reg().config().priority();
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
          << (!r.enabled     ? "disabled"
              : r.registered ? "available"
                             : "unavailable")
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

int cmd_single(const Globals& g, Session& s, const std::vector<std::string>& args, std::ostream& out,
               std::ostream& err) {
  auto op = parse_op_impl(args);
  if (!op) throw UsageError{op.message()};
  Ctx ctx = ctx_for(*op);
  const std::string what = format_conn(op->conn);
  JsonWriter j;
  j.begin_object().field("op", args[0]).field("connection", what);
  int rc = kExitOk;
  if (op->type == CT_OFFLOAD_OP_ADD) {
    int e = s.reg().conn_add(ctx);
    auto st = s.reg().conn_status(ctx);
    if (e != 0 || !st) {
      int code = e ? e : ENOENT;
      std::string msg = error_line(code, "add " + what + " on " + op->dev.name);
      if (!s.init_status().ok()) msg += "; " + s.init_status().message();
      j.field("ok", false).field("errno", errno_label(code)).field("error", msg);
      if (!g.json) err << "ctoffloadctl: " << msg << "\n";
      rc = kExitFailed;
    } else {
      j.field("ok", true).field("provider", std::string(st->provider)).field("mode", mode_name(st->mode));
      if (!g.json) {
        out << "added " << what << " on " << op->dev.name << ": " << st->provider << " (" << mode_name(st->mode)
            << ")\n";
        if (std::string(st->provider) == "software") {
          err << "note: the software provider took it; its cache lives in this process only"
              << (s.init_status().ok() ? "" : " (" + s.init_status().message() + ")") << "\n";
        }
      }
    }
  } else if (op->type == CT_OFFLOAD_OP_DEL) {
    auto before = s.reg().conn_status(ctx);
    s.reg().conn_del(ctx);
    if (!before) {
      std::string msg = error_line(ENOENT, "del " + what) + " - no provider held it";
      j.field("ok", false).field("errno", errno_label(ENOENT)).field("error", msg);
      if (!g.json) err << "ctoffloadctl: " << msg << "\n";
      rc = kExitFailed;
    } else {
      j.field("ok", true).field("provider", std::string(before->provider));
      if (!g.json) out << "deleted " << what << " from " << before->provider << "\n";
    }
  } else {  // UPD
    auto st = s.reg().conn_status(ctx);
    long long t = s.reg().conn_update(ctx);
    if (!st) {
      std::string msg = error_line(ENOENT, "update " + what) + " - no provider holds it";
      j.field("ok", false).field("errno", errno_label(ENOENT)).field("error", msg);
      if (!g.json) err << "ctoffloadctl: " << msg << "\n";
      rc = kExitFailed;
    } else {
      j.field("ok", true)
          .field("provider", std::string(st->provider))
          .field("last_used_ms", static_cast<int64_t>(t))
          .field("packets", st->packets)
          .field("bytes", st->bytes);
      if (!g.json) {
        out << what << " last-used " << t << " (" << format_time_ms(t) << ") packets " << st->packets << " bytes "
            << st->bytes << "\n";
      }
    }
  }
  j.end_object();
  if (g.json) out << j.str() << "\n";
  return rc;
}

int show_once(const Globals& g, Session& s, const ShowFilter& f, std::ostream& out, std::ostream& err) {
  auto kp = kernel_provider(s);
  if (!kp) {
    std::string msg = "the kernel provider is not available, nothing is offloaded in the kernel";
    if (!s.init_status().ok()) msg += ": " + s.init_status().message();
    if (g.json) {
      JsonWriter j;
      j.begin_object().key("connections").begin_array().end_array().field("error", msg).end_object();
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

int cmd_flush(const Globals& g, Session& s, const std::vector<std::string>& args, std::ostream& out, std::ostream&) {
  if (args.size() > 1) throw UsageError{"flush takes no options, got '" + args[1] + "'"};
  s.reg().flush();
  if (g.json) {
    out << "{\"op\":\"flush\",\"ok\":true}\n";
  } else {
    out << "flushed\n";
  }
  return kExitOk;
}

int cmd_batch(const Globals& g, Session& s, const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err) {
  std::string file = "-";
  uint64_t batch_size = 1024;
  bool have_file = false;
  for (size_t i = 1; i < args.size(); ++i) {
    if (auto v = take_value(args, i, "--batch-size")) {
      auto n = parse_uint(*v, 1, 1u << 20);
      if (!n) throw UsageError{"--batch-size: " + n.message()};
      batch_size = *n;
    } else if (!have_file && (args[i] == "-" || args[i].rfind("--", 0) != 0)) {
      file = args[i];
      have_file = true;
    } else {
      throw UsageError{"unknown argument '" + args[i] + "' for batch"};
    }
  }
  std::ifstream fin;
  std::istream* in = &std::cin;
  if (file != "-") {
    fin.open(file);
    if (!fin) {
      err << "ctoffloadctl: " << error_line(errno ? errno : ENOENT, "cannot open batch file '" + file + "'") << "\n";
      return kExitFailed;
    }
    in = &fin;
  }

  // Parse everything first: contexts point into 'specs', which must not move.
  struct Line {
    size_t number;
    Status parse;
    size_t spec = 0;  // Index into specs when parse is ok.
  };
  std::vector<Line> lines;
  std::deque<OpSpec> specs;
  constexpr size_t kMaxLine = 4096;
  std::string text;
  for (size_t number = 1; std::getline(*in, text); ++number) {
    if (text.size() > kMaxLine) {
      lines.push_back({number, Status::error(EINVAL, "line longer than " + std::to_string(kMaxLine) + " bytes"), 0});
      continue;
    }
    auto words = split_words(text);
    if (words.empty()) continue;
    auto op = parse_op_impl(words);
    if (!op) {
      lines.push_back({number, op.status(), 0});
      continue;
    }
    specs.push_back(*op);
    lines.push_back({number, {}, specs.size() - 1});
  }

  std::vector<Op> ops;
  ops.reserve(specs.size());
  for (const auto& sp : specs) ops.push_back(Op{sp.type, ctx_for(sp), 0, 0});
  const bool progress = isatty(STDERR_FILENO) && ops.size() > batch_size;
  for (size_t done = 0; done < ops.size(); done += batch_size) {
    size_t n = std::min<size_t>(batch_size, ops.size() - done);
    s.reg().submit(std::span<Op>(ops.data() + done, n));
    if (progress) err << "\rbatch: " << done + n << "/" << ops.size() << std::flush;
  }
  if (progress) err << "\n";

  size_t failed = 0, ok = 0;
  JsonWriter j;
  j.begin_object().key("results").begin_array();
  for (const auto& l : lines) {
    std::string verdict;
    bool good = l.parse.ok();
    int code = good ? 0 : l.parse.err();
    std::string msg = good ? "" : l.parse.message();
    const Op* op = good ? &ops[l.spec] : nullptr;
    if (op && op->error != 0) {
      good = false;
      code = op->error;
      msg = error_line(op->error, format_conn(*op->ctx.conn));
    }
    good ? ++ok : ++failed;
    if (g.json) {
      j.begin_object().field("line", static_cast<uint64_t>(l.number)).field("ok", good);
      if (op)
        j.field("op", std::string(op->type == CT_OFFLOAD_OP_ADD   ? "add"
                                  : op->type == CT_OFFLOAD_OP_DEL ? "del"
                                  : op->type == CT_OFFLOAD_OP_UPD ? "update"
                                                                  : "flush"));
      if (!good) j.field("errno", errno_label(code)).field("error", msg);
      if (op && op->type == CT_OFFLOAD_OP_UPD) j.field("last_used_ms", static_cast<int64_t>(op->last_used));
      j.end_object();
    } else if (good) {
      out << "line " << l.number << ": ok";
      if (op && op->type == CT_OFFLOAD_OP_UPD) out << " last-used " << op->last_used;
      out << "\n";
    } else {
      out << "line " << l.number << ": error " << errno_label(code) << ": " << msg << "\n";
    }
  }
  j.end_array().field("ok", static_cast<uint64_t>(ok)).field("failed", static_cast<uint64_t>(failed)).end_object();
  if (g.json) {
    out << j.str() << "\n";
  } else {
    out << ok << " ok, " << failed << " failed\n";
  }
  return failed ? kExitFailed : kExitOk;
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
  if (ms <= 0) return "never";
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
    static const std::map<std::string, int (*)(const Globals&, Session&, const std::vector<std::string>&, std::ostream&,
                                               std::ostream&)>
        commands = {{"probe", cmd_probe}, {"add", cmd_single},  {"del", cmd_single},  {"update", cmd_single},
                    {"show", cmd_show},   {"flush", cmd_flush}, {"batch", cmd_batch}, {"watch", cmd_watch}};
    auto it = commands.find(cmd);
    if (it == commands.end()) throw UsageError{"unknown command '" + cmd + "'"};
    if (has_help(cmd_args)) {
      out << command_usage(cmd);
      return kExitOk;
    }
    Session s(g);
    return it->second(g, s, cmd_args, out, err);
  } catch (const UsageError& e) {
    err << "ctoffloadctl: " << e.message << "\n"
        << "try 'ctoffloadctl --help'" << (i < args.size() ? " or 'ctoffloadctl " + args[i] + " --help'" : "") << "\n";
    return kExitUsage;
  }
}

}  // namespace ctoffload::cli
