// GradientReducer: data-parallel gradient reduction overlapped with the backward pass. The flat
// gradient buffer is cut into buckets of about `bucket_elements`, from its end (the parameters
// whose gradients the backward pass finishes first) to its start. A hook on every parameter
// counts the gradients finished in a bucket; a full bucket is handed to the communicator's
// start_allreduce as soon as every earlier bucket has been, so all ranks start the same buckets
// in the same order whatever their routing plans. Parameters that get no gradient in a pass (K/V
// projections no layer read) hold their bucket back until finish().
//
// ZeRO stage 2 (the second constructor): the model has no flat gradient buffer; each parameter's
// gradient is its own tensor. A finished bucket's gradients are packed (zeros for a parameter that
// got none), reduce-scattered into this rank's piece of the reduced gradient (`shard_grads`,
// ShardLayout) and released, so the full gradients never exist at once on a rank: at most the
// buckets the backward pass has not finished yet, plus one packed bucket. With several
// micro-batches per step every micro-batch is reduced this way (each armed, the later ones adding
// into the piece), so accumulation does not bring the whole gradients back; the step's sum is then
// taken over ranks per micro-batch, an order that differs from plain data parallelism's (which sums
// a rank's micro-batches first) in the last bits.
#pragma once

#include <cstdint>
#include <vector>

#include "layers/transformer.h"
#include "distributed/communicator.h"
#include "distributed/shard.h"

namespace kvroute::dist {

class GradientReducer {
 public:
  GradientReducer(layers::Transformer& model, Communicator& comm, int64_t bucket_elements);
  GradientReducer(layers::Transformer& model, Communicator& comm, int64_t bucket_elements, const ShardLayout& layout,
                  Tensor& shard_grads);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Arms the hooks for the next backward pass: the last micro-step of an accumulation, or (stage 2)
  // every micro-step, `accumulate` for all but the first (add into the piece instead of writing it).
  void arm(bool accumulate = false);
  // After the backward pass: starts every bucket not started yet, in order, and waits for all.
  void finish();
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }
  int64_t buckets_started_during_backward() const { return started_early_; }

 private:
  struct Bucket {
    int64_t begin = 0, end = 0;  // element range in the flat gradient buffer
    int parameters = 0;          // parameters in the range
    size_t first = 0;            // index of its first parameter
    int pending = 0;             // of those, not yet finished in this pass
  };
  void on_parameter_done(size_t bucket);
  void start_ready();
  void reduce_scatter(const Bucket& bucket);

  layers::Transformer& model_;
  Communicator& comm_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_parameter_;
  layers::NamedParameters params_;
  std::vector<int64_t> offsets_;
  const ShardLayout* layout_ = nullptr;  // stage 2 only
  Tensor* shard_grads_ = nullptr;
  size_t next_ = 0;  // first bucket not started
  bool armed_ = false;
  bool accumulate_ = false;
  int64_t started_early_ = 0;
};

}  // namespace kvroute::dist
