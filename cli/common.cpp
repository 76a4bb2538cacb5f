#include "cli/common.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "core/device_runtime.h"
#include "core/error.h"
#include "core/io.h"
#include "core/text.h"
#include "train/execution.h"

namespace kvroute::cli {

namespace {

// Comma-separated items, empty ones kept ("1," is two items, the second empty).
std::vector<std::string> split_items(const std::string& text) {
  std::vector<std::string> out(1);
  for (char c : text) {
    if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

}  // namespace

CLI::Validator bounded(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        const char* begin = text.c_str();
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(begin, &end);
        const bool decimal = text.find_first_not_of("0123456789+-.eE") == std::string::npos;  // no 0x10, no inf
        if (text.empty() || !decimal || end != begin + text.size() || !std::isfinite(v))
          return fmt::format("'{}' is not a finite decimal number", excerpt(text));
        if (v < lo || v > hi) return fmt::format("{} is out of range [{}, {}]", excerpt(text), lo, hi);
        return "";
      },
      fmt::format("NUMBER in [{}, {}]", lo, hi));
}

std::vector<int> parse_layer_list(const std::string& flag, const std::string& text) {
  std::vector<int> out;
  for (const std::string& part : split_items(text)) {
    int v = -1;
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    KV_CHECK(!part.empty() && ec == std::errc() && end == part.data() + part.size() && v >= 0 && v < 4096,
             "{} {}: '{}' is not a layer index", flag, text, part);
    out.push_back(v);
  }
  return out;
}

CLI::Validator layer_list() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        std::vector<int> seen;
        for (const std::string& part : split_items(text)) {
          int v = -1;
          const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
          if (part.empty() || ec != std::errc() || end != part.data() + part.size() || v < 0 || v >= 4096)
            return fmt::format("'{}' in '{}' is not a layer index", excerpt(part), excerpt(text));
          if (std::find(seen.begin(), seen.end(), v) != seen.end())
            return fmt::format("layer {} appears twice in '{}'", v, excerpt(text));
          seen.push_back(v);
        }
        return "";
      },
      "LAYERS (e.g. 0,3,7)");
}

CLI::Validator number_list(double lo, double hi, bool integers) {
  const CLI::Validator one = bounded(lo, hi);
  return CLI::Validator(
      [one, integers](std::string& text) -> std::string {
        for (std::string part : split_items(text)) {
          if (part.empty()) return fmt::format("'{}' has an empty item", excerpt(text));
          const std::string why = one(part);
          if (!why.empty()) return why;
          const double v = std::strtod(part.c_str(), nullptr);
          if (integers && v != std::floor(v)) return fmt::format("'{}' is not a whole number", excerpt(part));
        }
        return "";
      },
      fmt::format("{} in [{}, {}], comma-separated", integers ? "INTEGERS" : "NUMBERS", lo, hi));
}

std::vector<double> split_numbers(const std::vector<std::string>& texts) {
  std::vector<double> out;
  for (const std::string& text : texts)
    for (const std::string& part : split_items(text)) out.push_back(std::strtod(part.c_str(), nullptr));
  return out;
}

CLI::Validator byte_size() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          (void)parse_byte_size("size", text);
        } catch (const Error&) {
          return fmt::format("'{}' is not a size such as 5GB, 512MiB or 1e9", excerpt(text));
        }
        return "";
      },
      "SIZE (e.g. 5GB, 512MiB)");
}

CLI::Validator non_empty() {
  return CLI::Validator([](std::string& text) -> std::string { return text.empty() ? "must not be empty" : ""; },
                        "NON-EMPTY");
}

CLI::Validator existing_path() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        std::error_code ec;
        if (text.empty()) return "must not be empty";
        return std::filesystem::exists(text, ec) ? "" : fmt::format("{}: no such file or directory", excerpt(text));
      },
      "PATH");
}

void usage_error(const std::string& flag, const std::string& why) { throw CLI::ValidationError(flag, why); }

void add_threads_option(CLI::App* cmd, int& threads) {
  cmd->add_option("--threads", threads, "worker threads (0: all cores)")->check(bounded(0, 1024));
}

void add_threads_override(std::vector<std::string>& overrides, int threads) {
  if (threads > 0) overrides.push_back(fmt::format("train.threads={}", threads));
}

void check_distinct_overrides(const std::vector<std::string>& overrides) {
  // The same key twice on one command line is a mistake (a YAML file refuses duplicate keys too);
  // which one was meant cannot be guessed, so neither is taken.
  std::map<std::string, std::string> seen;
  for (const std::string& o : overrides) {
    const std::string key = o.substr(0, o.find('='));
    const auto [it, fresh] = seen.emplace(key, o);
    KV_CHECK(fresh, "override '{}': {} is already set by '{}' on this command line", excerpt(o, 200), excerpt(key, 100),
             excerpt(it->second, 200));
  }
}

namespace {

// A flag whose value is one of an enum's names: the config's names, so flags and YAML agree.
template <class E>
void add_enum_option(CLI::App* cmd, const std::string& flag, E& target, std::vector<E> values, const char* (*name)(E),
                     const std::string& help) {
  std::vector<std::string> names;
  for (E e : values) names.push_back(name(e));
  cmd->add_option_function<std::string>(
         flag,
         [&target, values, name](const std::string& v) {
           for (E e : values)
             if (v == name(e)) target = e;
         },
         help)
      ->check(CLI::IsMember(names));
}

}  // namespace

void add_placement_options(CLI::App* cmd, Placement& p) {
  add_enum_option(cmd, "--device", p.device, {Device::Kind::CPU, Device::Kind::CUDA}, train::device_kind_name,
                  "cpu | cuda (one GPU per rank under mpirun)");
  add_enum_option(cmd, "--precision", p.precision, {train::Precision::FP32, train::Precision::BF16},
                  train::precision_name, "fp32 | bf16 (on the CPU: bf16 GEMM operands, f32 accumulation)");
}

void place_model(layers::Transformer& model, const Placement& p, int local_rank, ops::AttentionKernel attention) {
  const train::Execution execution = train::execution(p.device, p.precision, attention);
  if (!execution.notice.empty() && local_rank == 0) std::fprintf(stderr, "kvroute: notice: %s\n", execution.notice.c_str());
  // The model stays f32 on the CPU; bf16 rounds the GEMM operands (oneDNN), where the CPU can.
  if (p.device == Device::Kind::CUDA) {
    model.to(device_runtime::select_cuda_device(local_rank, "--device cuda"), execution.compute_dtype);
  }
  model.set_execution(execution.ops);
}

int on_all_ranks(dist::Communicator& comm, const std::function<int()>& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    print_error(error_text(e), comm.rank(), comm.world_size());
    if (comm.world_size() > 1) comm.abort(1);
    return 1;
  }
}

void write_file(const std::string& path, const std::string& text) { io::write_file_atomic(path, text); }

}  // namespace kvroute::cli
