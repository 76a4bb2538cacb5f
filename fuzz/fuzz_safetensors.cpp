// Fuzzes kvroute::safetensors::load: any byte string is either a File or a kvroute::Error. A crash,
// a sanitizer report, another exception type, an allocation over -rss_limit_mb or a hang is a bug.
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/safetensors.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kvroute::fuzz::MemFile file;
  const std::string& path = file.write(data, size);
  try {
    const kvroute::safetensors::File loaded = kvroute::safetensors::load(path);
    // Every tensor the loader accepted must be readable in full and found by name.
    uint8_t sum = 0;
    for (const auto& [name, tensor] : loaded.tensors) {
      const auto* bytes = static_cast<const uint8_t*>(tensor.raw_data());
      for (size_t i = 0; i < tensor.nbytes(); ++i) sum = static_cast<uint8_t>(sum + bytes[i]);
      (void)loaded.get(name);
    }
    volatile uint8_t sink = sum;
    (void)sink;
  } catch (const kvroute::Error& e) {
    kvroute::fuzz::rejected(e);  // the expected outcome for most inputs
  }
  return 0;
}
