// Fuzzes the llm.c token shard reader (kvroute::data::Shard): a file is either a validated shard
// whose every token can be read, or a kvroute::Error. Anything else is a bug.
#include <cstdint>
#include <utility>
#include <vector>

#include "core/error.h"
#include "data/shard.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kvroute::fuzz::MemFile file;
  const std::string& path = file.write(data, size);
  try {
    kvroute::data::Shard shard(path);
    if (shard.token_width() != 2 && shard.token_width() != 4) __builtin_trap();
    if (shard.size() < 0) __builtin_trap();
    // The header promised size() tokens: read them all, one by one and in bulk (a token count that
    // disagrees with the mapping faults here).
    std::vector<int32_t> tokens(static_cast<size_t>(shard.size()));
    if (!tokens.empty()) shard.read(0, shard.size(), tokens.data());
    for (int64_t i = 0; i < shard.size(); ++i)
      if (shard.at(i) != tokens[static_cast<size_t>(i)]) __builtin_trap();
    const kvroute::data::Shard moved(std::move(shard));  // the mapping changes owner once
    if (moved.size() != static_cast<int64_t>(tokens.size())) __builtin_trap();
  } catch (const kvroute::Error& e) {
    kvroute::fuzz::rejected(e);
  }
  return 0;
}
