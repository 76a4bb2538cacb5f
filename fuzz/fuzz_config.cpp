// Fuzzes kvroute::train::parse_config. The input is YAML text up to the first NUL byte; the rest,
// split at NUL bytes, are command-line overrides ("section.key=value"). A config either parses or
// fails with a kvroute::Error. One that parses must survive its own round trip: to_yaml() is what
// a run and its checkpoints save, and evaluation loads it back (eval/evaluate.cpp), so it has to
// parse again to the same config.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "fuzz/fuzz_input.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t end = input.find('\0');
  const std::string yaml(input.substr(0, end));
  std::vector<std::string> overrides;
  while (end != std::string_view::npos) {
    const size_t next = input.find('\0', end + 1);
    overrides.emplace_back(input.substr(end + 1, next == std::string_view::npos ? next : next - end - 1));
    end = next;
  }
  std::string resolved;
  try {
    const kvroute::train::RunConfig config = kvroute::train::parse_config(yaml, "fuzz.yaml", overrides);
    resolved = config.to_yaml();
    if (!config.init_from_pending) (void)config.model_fingerprint();  // else the model waits for init_from
    (void)config.dist.bucket_elements();
  } catch (const kvroute::Error& e) {
    kvroute::fuzz::rejected(e);
    return 0;
  }
  try {
    const std::string again = kvroute::train::parse_config(resolved, "resolved.yaml").to_yaml();
    if (again != resolved) {
      std::fprintf(stderr, "fuzz_config: to_yaml() does not round-trip:\n--- first\n%s--- second\n%s", resolved.c_str(),
                   again.c_str());
      __builtin_trap();
    }
  } catch (const kvroute::Error& e) {
    std::fprintf(stderr, "fuzz_config: to_yaml() output does not parse: %s\n--- resolved\n%s", e.what(),
                 resolved.c_str());
    __builtin_trap();
  }
  return 0;
}
