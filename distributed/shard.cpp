#include "distributed/shard.h"

#include "core/error.h"

namespace kvroute::dist {

ShardLayout::ShardLayout(int64_t total_elements, int world_size, int this_rank)
    : total(total_elements), world(world_size), rank(this_rank) {
  KV_CHECK(total >= 0 && world >= 1 && rank >= 0 && rank < world, "shard layout: {} elements, rank {} of {}", total,
           rank, world);
  const int64_t per_rank = (total + world - 1) / world;
  shard = (per_rank + 15) / 16 * 16;
}

std::vector<int64_t> ShardLayout::counts() const {
  std::vector<int64_t> out;
  for (int r = 0; r < world; ++r) out.push_back(count(r));
  return out;
}

std::vector<int64_t> ShardLayout::counts_in(int64_t range_begin, int64_t range_end) const {
  std::vector<int64_t> out;
  for (int r = 0; r < world; ++r) {
    out.push_back(std::max<int64_t>(0, std::min(range_end, end(r)) - std::max(range_begin, begin(r))));
  }
  return out;
}

std::vector<ops::DecaySegment> ShardLayout::segments(const std::vector<ops::DecaySegment>& whole) const {
  std::vector<ops::DecaySegment> out;
  for (const ops::DecaySegment& s : whole) {
    const int64_t b = std::max(s.offset, begin()), e = std::min(s.offset + s.numel, end());
    if (e > b) out.push_back({b - begin(), e - b, s.decay});
  }
  return out;
}

}  // namespace kvroute::dist
