// ShardLayout: how ZeRO (dist.zero 1 and 2) cuts a flat buffer of `total` elements over the ranks.
// Rank r owns [begin(r), end(r)): consecutive pieces of ceil(total / world) elements rounded up to
// 16 (64-byte aligned f32 slices), the last ones shorter or empty. The AdamW moments (stage 1) and
// the reduced gradients (stage 2) of a rank cover its piece only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace kvroute::dist {

struct ShardLayout {
  int64_t total = 0, shard = 0;
  int world = 1, rank = 0;

  ShardLayout() = default;
  ShardLayout(int64_t total_elements, int world_size, int this_rank);

  int64_t begin(int r) const { return std::min(total, static_cast<int64_t>(r) * shard); }
  int64_t end(int r) const { return std::min(total, static_cast<int64_t>(r + 1) * shard); }
  int64_t count(int r) const { return end(r) - begin(r); }
  int64_t begin() const { return begin(rank); }
  int64_t end() const { return end(rank); }
  int64_t count() const { return count(rank); }
  // Every rank's count: the pieces of the whole buffer.
  std::vector<int64_t> counts() const;
  // The elements of [range_begin, range_end) that fall in each rank's piece (a bucket's pieces).
  std::vector<int64_t> counts_in(int64_t range_begin, int64_t range_end) const;
  // The weight-decay segments of the whole buffer, cut to this rank's piece and counted from its start.
  std::vector<ops::DecaySegment> segments(const std::vector<ops::DecaySegment>& whole) const;
};

}  // namespace kvroute::dist
